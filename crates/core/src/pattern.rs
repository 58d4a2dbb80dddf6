//! Topic names and subscription patterns. Topics are dot-separated segments; a pattern segment
//! `*` matches exactly one segment and a final `>` matches one or more remaining segments
//! (NATS semantics, which users of such buses already know).

use crate::error::{Error, Result};

pub const MAX_TOPIC_LEN: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    segments: Vec<Segment>,
}

fn check_segment(seg: &str, whole: &str, what: &str) -> Result<()> {
    if seg.is_empty() {
        return Err(Error::invalid(format!("{what} '{whole}' has an empty segment")));
    }
    if let Some(c) = seg.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!("{what} '{whole}' contains the character {c:?}")));
    }
    Ok(())
}

fn check_len(s: &str, what: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(Error::invalid(format!("{what} is longer than {MAX_TOPIC_LEN} bytes")));
    }
    Ok(())
}

/// Validates a concrete topic (what is published): no wildcards.
pub fn validate_topic(topic: &str) -> Result<()> {
    check_len(topic, "topic")?;
    for seg in topic.split('.') {
        check_segment(seg, topic, "topic")?;
        if seg.contains('*') || seg.contains('>') {
            return Err(Error::invalid(format!("topic '{topic}' contains a wildcard; publish to a concrete topic")));
        }
    }
    Ok(())
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self> {
        check_len(text, "pattern")?;
        let parts: Vec<&str> = text.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, seg) in parts.iter().enumerate() {
            check_segment(seg, text, "pattern")?;
            segments.push(match *seg {
                "*" => Segment::One,
                ">" if i + 1 == parts.len() => Segment::Rest,
                ">" => return Err(Error::invalid(format!("pattern '{text}': '>' must be the last segment"))),
                s if s.contains('*') || s.contains('>') => {
                    return Err(Error::invalid(format!(
                        "pattern '{text}': wildcards must be whole segments ('*' or a final '>')"
                    )))
                }
                s => Segment::Literal(s.into()),
            });
        }
        Ok(Pattern { text: text.into(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// An exact pattern (no wildcard) is routed by hash lookup instead of matching.
    pub fn is_exact(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Matches a topic already split into segments (the router splits each published topic
    /// once, not once per wildcard subscription).
    pub fn matches_segments(&self, parts: &[&str]) -> bool {
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Rest => return i < parts.len(),
                Segment::One => {
                    if i >= parts.len() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&&**l) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == parts.len()
    }

    /// `topic.split('.')` walked by hand: a byte loop over a short topic costs a fraction of
    /// `str::split`'s generic searcher, and a `type` filter runs this for every event.
    pub fn matches(&self, topic: &str) -> bool {
        let mut rest = Some(topic.as_bytes());
        let mut next = move || -> Option<&[u8]> {
            let r = rest?;
            match r.iter().position(|&b| b == b'.') {
                Some(dot) => {
                    rest = Some(&r[dot + 1..]);
                    Some(&r[..dot])
                }
                None => {
                    rest = None;
                    Some(r)
                }
            }
        };
        for seg in &self.segments {
            match seg {
                Segment::Rest => return next().is_some(),
                Segment::One => {
                    if next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if next() != Some(l.as_bytes()) {
                        return false;
                    }
                }
            }
        }
        next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_segment_and_rest_wildcards() {
        let p = Pattern::parse("order.*").unwrap();
        assert!(p.matches("order.created"));
        assert!(!p.matches("order"));
        assert!(!p.matches("order.created.eu"));
        let r = Pattern::parse("order.>").unwrap();
        assert!(r.matches("order.created"));
        assert!(r.matches("order.created.eu"));
        assert!(!r.matches("order"));
        assert!(!r.matches("orders.created"));
        let m = Pattern::parse("*.created").unwrap();
        assert!(m.matches("order.created") && !m.matches("order.shipped"));
        assert!(Pattern::parse(">").unwrap().matches("a.b.c"));
        assert!(Pattern::parse("order.created").unwrap().is_exact());
    }

    #[test]
    fn segment_matching_agrees_with_string_matching() {
        let topics = ["a", "a.b", "a.b.c", "x.b", "a.x.c", "a.b.c.d"];
        for p in ["a", "a.*", "*.b", "a.>", ">", "*.*.c", "a.b.c", "*", "a.*.>"] {
            let pat = Pattern::parse(p).unwrap();
            for t in topics {
                let parts: Vec<&str> = t.split('.').collect();
                assert_eq!(pat.matches(t), pat.matches_segments(&parts), "{p} vs {t}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        // Matching a topic string agrees with matching its `split('.')` segments, on any
        // topic (empty segments included) and any valid pattern.
        #[test]
        fn string_matching_agrees_with_split(
            topic in proptest::collection::vec(proptest::sample::select(&["a", "b", "ab", ""][..]), 1..5),
            pattern in proptest::collection::vec(proptest::sample::select(&["a", "b", "ab", "*"][..]), 0..4),
            rest in proptest::prelude::any::<bool>(),
        ) {
            let mut pattern = pattern;
            if rest || pattern.is_empty() {
                pattern.push(">");
            }
            let (topic, pattern) = (topic.join("."), pattern.join("."));
            let pat = Pattern::parse(&pattern).unwrap();
            let parts: Vec<&str> = topic.split('.').collect();
            proptest::prop_assert_eq!(pat.matches(&topic), pat.matches_segments(&parts), "{} vs {}", pattern, topic);
        }
    }

    #[test]
    fn malformed_patterns_and_topics_are_refused() {
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a.b*", "a b", "a.>x", &"x".repeat(300)] {
            let e = Pattern::parse(bad).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_ARG", "{bad}");
        }
        for bad in ["", "a.*", "a.>", "a..b", "a\nb"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
        assert!(validate_topic("order.created").is_ok());
    }
}
