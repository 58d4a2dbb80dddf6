//! Emit allow-list patterns: `fraud.*` matches exactly one segment, `fraud.>` one or more
//! trailing segments (the same dot-separated grammar the bus uses for subscriptions).

use std::fmt;

/// An emit pattern: the bus's own topic pattern (`*` one segment, a final `>` the rest), so a
/// deployment's allow-list and the router can never disagree on what a pattern means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern(sluice_core::Pattern);

/// Whether `topic` is a concrete topic the bus accepts (no wildcards, no empty segments).
pub fn is_valid_topic(topic: &str) -> bool {
    sluice_core::pattern::validate_topic(topic).is_ok()
}

impl TopicPattern {
    pub fn parse(pattern: &str) -> Result<TopicPattern, String> {
        sluice_core::Pattern::parse(pattern)
            .map(TopicPattern)
            .map_err(|e| format!("emit pattern {pattern:?}: {}", e.message()))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.0.matches(topic)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
