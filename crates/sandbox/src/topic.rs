//! Emit allow-list patterns: `fraud.*` matches exactly one segment, `fraud.>` one or more
//! trailing segments (the same dot-separated grammar the bus uses for subscriptions).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `>`: one or more segments; only valid last.
    Rest,
}

/// One parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    source: String,
    segments: Vec<Segment>,
}

fn literal_ok(segment: &str) -> bool {
    !segment.is_empty()
        && !segment
            .chars()
            .any(|c| c == '*' || c == '>' || c == '.' || c.is_whitespace() || c.is_control())
}

/// True when `topic` is a concrete topic: non-empty dot-separated segments, no wildcards,
/// no whitespace or control characters.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.split('.').all(literal_ok)
}

impl TopicPattern {
    pub fn parse(pattern: &str) -> Result<TopicPattern, String> {
        if pattern.is_empty() {
            return Err("empty emit pattern".into());
        }
        let parts: Vec<&str> = pattern.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "*" => Segment::One,
                ">" if i + 1 == parts.len() => Segment::Rest,
                ">" => {
                    return Err(format!(
                        "emit pattern {pattern:?}: '>' must be the last segment"
                    ))
                }
                lit if literal_ok(lit) => Segment::Literal(lit.to_string()),
                _ => {
                    return Err(format!(
                        "emit pattern {pattern:?}: invalid segment {part:?}"
                    ))
                }
            };
            segments.push(seg);
        }
        Ok(TopicPattern {
            source: pattern.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The topics a deployment may emit. Empty means the deployment may emit nothing.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    patterns: Vec<TopicPattern>,
}

impl AllowList {
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<AllowList, String> {
        let patterns = patterns
            .iter()
            .map(|p| TopicPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { patterns })
    }

    pub fn allows(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_exactly_one_segment() {
        let p = TopicPattern::parse("fraud.*").unwrap();
        assert!(p.matches("fraud.flagged"));
        assert!(!p.matches("fraud"));
        assert!(!p.matches("fraud.flagged.high"));
        assert!(!p.matches("fraudx.flagged"));
    }

    #[test]
    fn rest_matches_one_or_more_segments() {
        let p = TopicPattern::parse("fraud.>").unwrap();
        assert!(p.matches("fraud.flagged"));
        assert!(p.matches("fraud.flagged.high"));
        assert!(!p.matches("fraud"));
        assert!(!p.matches("order.created"));
    }

    #[test]
    fn literal_pattern_matches_only_itself() {
        let p = TopicPattern::parse("audit.log").unwrap();
        assert!(p.matches("audit.log"));
        assert!(!p.matches("audit.logs"));
        assert!(!p.matches("audit"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a..b", "a.>.b", "a.b*", "a b", ".a", "a."] {
            assert!(
                TopicPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn topic_validation() {
        assert!(is_valid_topic("fraud.flagged"));
        assert!(!is_valid_topic("fraud.*"));
        assert!(!is_valid_topic("fraud.>"));
        assert!(!is_valid_topic("fraud..x"));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic("a\nb"));
    }
}
