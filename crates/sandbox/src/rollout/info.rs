//! What `Deployment.info()` says about versions, the rollout in progress, shadow comparisons,
//! the last rollback and the audit trail.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::deployment::{LatencyInfo, OutcomesInfo};
use crate::stats::{Counters, LatencySnapshot, OutcomeCounts};

use super::history::HistoryEntry;
use super::shadow::ShadowInfo;

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutInfo {
    /// The deployment's labels (given at deploy), matched by a rollout's label selector.
    pub labels: BTreeMap<String, String>,
    /// Every version this deployment has run, first seen first.
    pub versions: Vec<VersionInfo>,
    /// The rollout in progress, if any.
    pub candidate: Option<CandidateInfo>,
    /// Comparison counts of the current or most recent shadow rollout.
    pub shadow: Option<ShadowInfo>,
    pub last_rollback: Option<RollbackInfo>,
    /// Audit trail, oldest first, at most `HISTORY_LIMIT` entries.
    pub history: Vec<HistoryEntry>,
    /// Entries that fell off the front of `history`.
    pub history_dropped: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub hash: String,
    /// `current`, `candidate` (live traffic), `shadow` (copies only) or `retired`.
    pub role: &'static str,
    /// Events in this version's hands right now.
    pub in_flight: usize,
    /// No activation of this version holds instances any more.
    pub released: bool,
    /// Helper process ids of its live activation (process-isolated deployments; else empty).
    pub pids: Vec<i32>,
    /// Times its instances were created (a rollback to a released version activates it again).
    pub activations: u64,
    /// Times its instances were released after the last in-flight event finished.
    pub releases: u64,
    /// When its instances were last released, ms since the Unix epoch.
    pub released_at: Option<u64>,
    pub instances: VersionInstances,
    /// Events it finished, whatever the outcome (shadow copies included).
    pub handled: u64,
    pub outcomes: OutcomesInfo,
    pub latency_us: LatencyInfo,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInstances {
    pub live: usize,
    pub idle: usize,
    pub created: u64,
    pub discarded: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateInfo {
    pub hash: String,
    pub percent: f64,
    pub event_types: Vec<String>,
    /// The rollout's label selector.
    pub labels: BTreeMap<String, String>,
    /// Whether this deployment's labels satisfy it (if not, the candidate gets no traffic).
    pub labels_match: bool,
    pub shadow: bool,
    pub auto_rollback: Option<AutoRollbackInfo>,
    /// When the candidate was first rolled out, ms since the Unix epoch.
    pub since: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoRollbackInfo {
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub window_ms: u64,
    pub min_events: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackInfo {
    pub at: u64,
    /// The version taken out of service.
    pub hash: String,
    /// The version current after the rollback.
    pub restored: String,
    /// Taken by the automatic thresholds rather than a `rollback()` call.
    pub automatic: bool,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// For automatic rollbacks: what the window held when the threshold was crossed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

pub(crate) fn outcomes_info(o: &OutcomeCounts) -> OutcomesInfo {
    OutcomesInfo {
        ack: o.ack,
        retry: o.retry,
        reject: o.reject,
        errors: o.errors.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.code(), *n)).collect(),
    }
}

pub(crate) fn latency_info(s: &LatencySnapshot) -> LatencyInfo {
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    LatencyInfo { count: s.count, p50: us(s.p50), p90: us(s.p90), p99: us(s.p99), max: us(s.max) }
}

/// Events finished, whatever the outcome.
pub(crate) fn handled(c: &Counters) -> u64 {
    let o = c.outcomes();
    o.ack + o.retry + o.reject + o.errors.iter().map(|(_, n)| n).sum::<u64>()
}
