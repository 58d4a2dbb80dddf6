//! Shadow traffic: the current version handles the event for real; a copy goes to the candidate
//! on a thread of its own, whose emits and outcome are compared with the current version's and
//! then thrown away. The copy queue is bounded and never blocks a worker: a copy that does not
//! fit is counted as skipped.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde::Serialize;

use crate::envelope::{encode_envelope, Envelope};
use crate::host::Emit;
use crate::pool::{HandleResult, Outcome};

use super::version::Version;
use super::watch::{Verdict, Watch};

/// Copies waiting for the shadow thread.
const QUEUE: usize = 1024;

/// Outcome without the message: what "same outcome" compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ack,
    Retry,
    Reject,
    Error(&'static str),
}

fn kind(o: &Outcome) -> Kind {
    match o {
        Outcome::Ack => Kind::Ack,
        Outcome::Retry => Kind::Retry,
        Outcome::Reject => Kind::Reject,
        Outcome::Error(e) => Kind::Error(e.code()),
    }
}

/// Order-sensitive digest of the emits (topic and bytes).
fn digest(emits: &[Emit]) -> u64 {
    let mut h = DefaultHasher::new();
    emits.len().hash(&mut h);
    for e in emits {
        e.topic.hash(&mut h);
        e.data.hash(&mut h);
    }
    h.finish()
}

/// What the current version did with an event, for comparing its shadow copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expected {
    outcome: Kind,
    emits: u64,
}

impl Expected {
    pub fn of(outcome: &Outcome, emits: &[Emit]) -> Expected {
        Expected { outcome: kind(outcome), emits: digest(emits) }
    }
}

struct Copy {
    envelope: Vec<u8>,
    expected: Expected,
}

/// How the candidate compared, as `info().shadow`.
#[derive(Debug, Default)]
pub(crate) struct ShadowStats {
    pub copied: AtomicU64,
    pub compared: AtomicU64,
    /// Copies not run: the queue was full, or the shadow ended first.
    pub skipped: AtomicU64,
    pub outcome_differs: AtomicU64,
    pub emits_differ: AtomicU64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowInfo {
    pub hash: String,
    pub active: bool,
    pub copied: u64,
    pub compared: u64,
    pub skipped: u64,
    /// Copies whose outcome (ack / retry / reject / error code) differed from the current's.
    pub outcome_differs: u64,
    /// Copies whose emits (topics, bytes, order) differed from the current's.
    pub emits_differ: u64,
}

/// The routing table's handle on a running shadow.
pub(crate) struct ShadowLink {
    /// The shadow thread's queue; `None` for process-isolated candidates, whose copies the
    /// dispatchers send to the candidate's helpers themselves (`detached`).
    tx: Option<SyncSender<Copy>>,
    pub stats: Arc<ShadowStats>,
    pub active: Arc<AtomicBool>,
}

impl ShadowLink {
    pub fn detached(stats: Arc<ShadowStats>) -> ShadowLink {
        ShadowLink { tx: None, stats, active: Arc::new(AtomicBool::new(true)) }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Counts a copy handed to a candidate's helper.
    pub fn copied(&self) {
        self.stats.copied.fetch_add(1, Relaxed);
    }

    /// Counts a copy that was not run (the helper was full, or the shadow ended first).
    pub fn skipped(&self) {
        self.stats.skipped.fetch_add(1, Relaxed);
    }

    /// Compares the candidate's result for a copy with what the current version did.
    pub fn compare(&self, expected: Expected, outcome: &Outcome, emits: &[Emit]) {
        compare(&self.stats, expected, outcome, emits);
    }

    /// Queues a copy of an event the current version just handled.
    pub fn offer(&self, envelope: &Envelope<'_>, current: &HandleResult) {
        if !self.active.load(Relaxed) {
            return;
        }
        let Ok(bytes) = encode_envelope(envelope) else {
            self.stats.skipped.fetch_add(1, Relaxed);
            return;
        };
        let copy = Copy { envelope: bytes, expected: Expected::of(&current.outcome, &current.emits) };
        self.stats.copied.fetch_add(1, Relaxed);
        let Some(tx) = &self.tx else { return self.skipped() };
        match tx.try_send(copy) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.skipped(),
        }
    }
}

impl Drop for ShadowLink {
    fn drop(&mut self) {
        self.active.store(false, Relaxed);
    }
}

/// What the shadow thread calls when its watch crosses a threshold.
pub(crate) type Trip = Box<dyn Fn(&Arc<Watch>, Verdict) + Send>;

/// Starts the shadow thread for `candidate`. It ends when the link is dropped (the routing
/// table no longer holds it) or deactivated, and `trip` is called at most once if the watch
/// crosses a threshold.
pub(crate) fn start(
    name: &str,
    candidate: Arc<Version>,
    stats: Arc<ShadowStats>,
    watch: Option<Arc<Watch>>,
    trip: Trip,
) -> std::io::Result<(ShadowLink, JoinHandle<()>)> {
    let (tx, rx) = sync_channel::<Copy>(QUEUE);
    let active = Arc::new(AtomicBool::new(true));
    let thread_stats = stats.clone();
    let thread_active = active.clone();
    let handle = thread::Builder::new()
        .name(format!("sluice-shadow-{name}"))
        .stack_size(4 << 20)
        .spawn(move || {
            super::release::on_event_path();
            run(rx, &candidate, &thread_stats, &thread_active, watch.as_ref(), &*trip)
        })?;
    Ok((ShadowLink { tx: Some(tx), stats, active }, handle))
}

fn run(
    rx: Receiver<Copy>,
    candidate: &Version,
    stats: &ShadowStats,
    active: &AtomicBool,
    watch: Option<&Arc<Watch>>,
    trip: &dyn Fn(&Arc<Watch>, Verdict),
) {
    while let Ok(copy) = rx.recv() {
        if !active.load(Relaxed) {
            stats.skipped.fetch_add(1, Relaxed);
            continue;
        }
        // The event's own deadline belonged to the real delivery; the copy gets the
        // deployment's timeout.
        let r = candidate.run_encoded(&copy.envelope, None);
        compare(stats, copy.expected, &r.outcome, &r.emits);
        if let Some(w) = watch {
            if let Some(verdict) = w.record(r.elapsed, r.outcome.error_kind().is_some()) {
                trip(w, verdict);
            }
        }
    }
}

fn compare(stats: &ShadowStats, expected: Expected, outcome: &Outcome, emits: &[Emit]) {
    stats.compared.fetch_add(1, Relaxed);
    if kind(outcome) != expected.outcome {
        stats.outcome_differs.fetch_add(1, Relaxed);
    }
    if digest(emits) != expected.emits {
        stats.emits_differ.fetch_add(1, Relaxed);
    }
}

impl ShadowStats {
    pub fn info(&self, hash: &str, active: bool) -> ShadowInfo {
        ShadowInfo {
            hash: hash.to_owned(),
            active,
            copied: self.copied.load(Relaxed),
            compared: self.compared.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            outcome_differs: self.outcome_differs.load(Relaxed),
            emits_differ: self.emits_differ.load(Relaxed),
        }
    }
}
