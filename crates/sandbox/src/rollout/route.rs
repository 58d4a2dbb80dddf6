//! The routing table workers read per event: the current version and, during a rollout, a
//! candidate with the rule that picks its events. Tables are immutable and swapped whole
//! (`ArcSwap`), so every event sees one table and goes to exactly one version.

use std::sync::Arc;

use crate::topic::TopicPattern;

use super::shadow::ShadowLink;
use super::version::Version;
use super::watch::Watch;

/// Traffic split resolution: percent is kept in basis points (0.01 %).
pub(crate) const FULL: u32 = 10_000;

/// Which events a candidate gets.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// Share of matching events, in basis points, chosen by the hash of the event id.
    pub basis_points: u32,
    /// Topics or patterns; empty means every topic.
    pub event_types: Vec<TopicPattern>,
    /// Whether the deployment's labels satisfy the rollout's label selector. A rollout sent to
    /// a fleet reaches only the deployments it selects; the others keep the current version.
    pub labels_match: bool,
}

impl Rule {
    pub fn takes(&self, id: &str, topic: &str) -> bool {
        if !self.labels_match || self.basis_points == 0 {
            return false;
        }
        if !self.event_types.is_empty() && !self.event_types.iter().any(|p| p.matches(topic)) {
            return false;
        }
        self.basis_points >= FULL || bucket(id) < self.basis_points
    }
}

/// Stable bucket in `0..FULL` for an event id: FNV-1a, then a 64-bit finalizer so that ids
/// differing only in a trailing counter spread evenly. The same id always lands in the same
/// bucket (a retried event sees the same version), and raising the percent only adds buckets,
/// so events already on the candidate stay there from step to step.
pub(crate) fn bucket(id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(FULL)) as u32
}

/// How the candidate is fed.
pub(crate) enum Mode {
    /// Its events are really handled by it: outcome and emits count.
    Live,
    /// It gets a copy of its events after the current version handled them; its emits and
    /// outcome are only compared.
    Shadow(Arc<ShadowLink>),
}

pub(crate) struct Candidate {
    pub version: Arc<Version>,
    pub rule: Rule,
    pub mode: Mode,
    pub watch: Option<Arc<Watch>>,
}

pub(crate) struct Table {
    pub current: Arc<Version>,
    pub candidate: Option<Candidate>,
}

/// Where one event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Current,
    Candidate,
    /// Current handles it; the candidate gets a copy.
    Shadow,
}

impl Table {
    pub fn route(&self, id: &str, topic: &str) -> Route {
        match &self.candidate {
            Some(c) if c.rule.takes(id, topic) => match c.mode {
                Mode::Live => Route::Candidate,
                Mode::Shadow(_) => Route::Shadow,
            },
            _ => Route::Current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket("evt-42"), bucket("evt-42"));
        let n = 100_000;
        let under_5pct = (0..n).filter(|i| bucket(&format!("p1-{i}")) < 500).count();
        let share = under_5pct as f64 / n as f64;
        assert!((0.045..0.055).contains(&share), "5 % of sequential ids, got {share}");
    }

    #[test]
    fn raising_the_percent_keeps_the_events_already_on_the_candidate() {
        let rule = |bp| Rule { basis_points: bp, event_types: vec![], labels_match: true };
        let (five, twenty) = (rule(500), rule(2000));
        for i in 0..10_000 {
            let id = format!("x-{i}");
            assert!(!five.takes(&id, "t") || twenty.takes(&id, "t"));
        }
    }

    #[test]
    fn event_types_and_labels_gate_the_candidate() {
        let typed = Rule {
            basis_points: FULL,
            event_types: vec![TopicPattern::parse("order.*").unwrap()],
            labels_match: true,
        };
        assert!(typed.takes("a", "order.created"));
        assert!(!typed.takes("a", "payment.created"));
        let elsewhere = Rule { labels_match: false, ..typed };
        assert!(!elsewhere.takes("a", "order.created"));
    }
}
