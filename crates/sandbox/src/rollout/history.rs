//! The audit trail of a deployment's versions: who changed what, when, and why. Bounded: the
//! oldest entries go first, and how many went is counted.

use std::collections::VecDeque;

use serde::Serialize;

use super::clock::unix_ms;

/// Entries kept per deployment.
pub const HISTORY_LIMIT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The first version started.
    Deploy,
    /// A candidate was compiled and routed (or its rule changed by rolling out the same bytes).
    Rollout,
    /// The candidate's share of traffic changed (`setTraffic`).
    Traffic,
    /// The candidate became current.
    Promote,
    /// Routing went back: the candidate was dropped, or an earlier version restored.
    Rollback,
    /// The candidate crossed an automatic-rollback threshold.
    AutoRollback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollout => "rollout",
            Action::Traffic => "traffic",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::AutoRollback => "auto-rollback",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub action: Action,
    /// The version the action is about (the candidate, the one promoted, the one restored).
    pub hash: String,
    /// The version current before the action.
    pub previous: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The candidate's share after the action, for rollout and traffic steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

impl HistoryEntry {
    pub fn new(action: Action, hash: &str, previous: &str, actor: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            at: unix_ms(),
            action,
            hash: hash.to_owned(),
            previous: previous.to_owned(),
            actor: actor.map(str::to_owned),
            reason: None,
            percent: None,
            shadow: false,
        }
    }
}

#[derive(Default)]
pub(crate) struct History {
    entries: VecDeque<HistoryEntry>,
    pub dropped: u64,
}

impl History {
    pub fn push(&mut self, entry: HistoryEntry) {
        if self.entries.len() == HISTORY_LIMIT {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<HistoryEntry> {
        self.entries.iter().cloned().collect()
    }
}
