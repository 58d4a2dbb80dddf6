//! The bus's durable store: one `sluice_journal::Journal` per bus (`new Bus({ journal })`),
//! behind at-least-once subscriptions and the `spill` overflow policy. See `docs/journal.md`
//! ("How the bus uses it") for the design and the guarantees of each fsync policy.

pub mod backlog;
pub mod dead_letters;
mod publish;
pub use publish::Published;
pub mod notify;
pub mod record;

use crate::delivery::{Disposition, SettleHook};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::subscription::Subscription;
use notify::{DurableWait, Notifier};
use serde::Serialize;
use sluice_journal::{FsyncPolicy, Journal, JournalOptions, Seq};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Journal consumers of non-durable `spill` subscriptions are named with this prefix. They live
/// as long as their subscription; leftovers of a previous process are removed at open.
pub const SPILL_PREFIX: &str = "~spill.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every publish resolves after an fsync covering its record, started as soon as the record
    /// is written (group commit on a background thread).
    Always,
    /// Publishes resolve after the next group fsync, at most `interval_ms` after the first
    /// unsynced record (sooner after 4096 records).
    Batch { interval_ms: u64 },
    /// Publishes resolve once the record is in the kernel (`pwrite`): survives a process crash,
    /// not an OS crash or power loss.
    Never,
}

impl Fsync {
    pub fn parse(s: &str, batch_interval_ms: Option<u64>) -> Result<Fsync> {
        let interval_ms = batch_interval_ms.unwrap_or(2);
        if !(1..=60_000).contains(&interval_ms) {
            return Err(Error::invalid(format!("journal.batchIntervalMs must be from 1 to 60000, got {interval_ms}")));
        }
        match s {
            "always" => Ok(Fsync::Always),
            "batch" => Ok(Fsync::Batch { interval_ms }),
            "never" => Ok(Fsync::Never),
            other => Err(Error::invalid(format!("unknown journal fsync policy '{other}' (expected always, batch, never)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Batch { .. } => "batch",
            Fsync::Never => "never",
        }
    }

    fn policy(self) -> FsyncPolicy {
        match self {
            // The journal's own `Always` fsyncs inside `append`, which would block the publishing
            // (JS) thread for a whole fsync per event. A syncer woken by every first unsynced
            // record gives publishers the same guarantee without blocking them.
            Fsync::Always => FsyncPolicy::Batch { interval: Duration::from_millis(1), max_records: 1 },
            Fsync::Batch { interval_ms } => {
                FsyncPolicy::Batch { interval: Duration::from_millis(interval_ms), max_records: 4096 }
            }
            Fsync::Never => FsyncPolicy::Never,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// Segment size; the journal's default (64 MiB) when `None`.
    pub segment_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveredStats {
    pub events: u64,
    pub unacknowledged: u64,
    /// Bytes of a torn last record cut off at open (0 after a clean shutdown).
    pub truncated_bytes: u64,
    pub duration_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DurableStats {
    pub dir: String,
    pub fsync: &'static str,
    pub closed: bool,
    pub segments: u64,
    pub bytes: u64,
    pub appended: u64,
    pub acknowledged: u64,
    /// Events durable subscriptions have not acknowledged (persisted; delivered again after a
    /// restart to a subscription of the same name).
    pub unacknowledged: u64,
    /// Journal writes of `tryPublish` calls (and WASM handlers' emits) that failed after the
    /// call had returned.
    pub lost_after_return: u64,
    pub recovered: RecoveredStats,
}

/// The settle hook of a bus with a journal: a durable subscription's event is acknowledged in
/// the journal once the delivery layer is finished with it (acked, dead-lettered, discarded,
/// duplicate, expired). `Abandoned` (the subscription closed first) and `Retrying` keep it
/// pending, so a restart delivers it again; `Retrying` also records the failed attempts, so the
/// restart continues the count.
pub(crate) struct JournalRelease;

impl SettleHook for JournalRelease {
    fn settled(&self, sub: &Subscription, event: &Event, d: &Disposition) {
        let seq = event.journal_seq.load(Ordering::Relaxed);
        let Some(j) = sub.journal().filter(|j| j.is_durable()) else { return };
        match d {
            _ if seq == 0 => {}
            Disposition::Abandoned => {}
            // Persisted so that a restart continues the count: `attempt` is the next one.
            Disposition::Retrying { attempt } => j.buffer_attempts(seq, attempt - 1),
            _ => j.buffer_ack(seq),
        }
    }

    fn acked(&self, sub: &Subscription, events: &[Arc<Event>]) {
        if let Some(j) = sub.journal().filter(|j| j.is_durable()) {
            j.buffer_acks(events.iter().map(|e| e.journal_seq.load(Ordering::Relaxed)).filter(|s| *s != 0));
        }
    }

    fn flush(&self, sub: &Subscription) {
        if let Some(j) = sub.journal().filter(|j| j.is_durable()) {
            j.flush_acks();
        }
    }
}

pub struct Durable {
    pub(crate) journal: Arc<Journal>,
    fsync: Fsync,
    notifier: Notifier,
    /// Held while a publish appends and offers to journal-backed subscriptions, so journal order
    /// is the order those subscriptions see.
    pub(crate) publish_lock: Mutex<()>,
    /// Names of live durable subscriptions: one subscriber per name.
    live_names: Mutex<HashSet<String>>,
    closed: std::sync::atomic::AtomicBool,
    final_stats: Mutex<Option<DurableStats>>,
}

impl Durable {
    pub fn open(cfg: &JournalConfig) -> Result<Durable> {
        let mut opts = JournalOptions { fsync: cfg.fsync.policy(), ..Default::default() };
        if let Some(b) = cfg.segment_bytes {
            opts.segment_bytes = b;
        }
        let journal = Arc::new(Journal::open(&cfg.dir, opts)?);
        for c in journal.consumers() {
            if c.name.starts_with(SPILL_PREFIX) {
                // A spill subscription of a process that is gone: it was at-most-once.
                journal.unregister_consumer(&c.name)?;
            }
        }
        let notifier = Notifier::start(journal.clone())?;
        Ok(Durable {
            journal,
            fsync: cfg.fsync,
            notifier,
            publish_lock: Mutex::new(()),
            live_names: Mutex::new(HashSet::new()),
            closed: Default::default(),
            final_stats: Mutex::new(None),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// What a publisher waits for after appending `first..=last`; `None` when nothing is left
    /// to wait for (`never`: the append already reached the kernel).
    pub(crate) fn wait_for(&self, first: Seq, last: Seq) -> Option<Arc<DurableWait>> {
        match self.fsync {
            Fsync::Never => None,
            _ => Some(self.notifier.watch(first, last)),
        }
    }

    pub(crate) fn notify(&self, seq: Seq, w: notify::Waiter) {
        self.notifier.push(seq, w);
    }

    pub(crate) fn count_if_lost(&self, seq: Seq) {
        if self.fsync != Fsync::Never {
            self.notifier.count_if_lost(seq);
        }
    }

    pub(crate) fn claim_name(&self, name: &str) -> Result<()> {
        if !self.live_names.lock().unwrap().insert(name.to_string()) {
            return Err(Error::invalid(format!("a durable subscription named '{name}' is already live on this bus")));
        }
        Ok(())
    }

    pub(crate) fn release_name(&self, name: &str) {
        self.live_names.lock().unwrap().remove(name);
    }

    /// What durable subscriptions have not acknowledged (internal consumers — spill queues,
    /// dead letters kept for replay — are not subscriptions).
    fn unacknowledged(&self) -> u64 {
        self.journal.consumers().iter().filter(|c| !c.name.starts_with('~')).map(|c| c.pending).sum()
    }

    pub fn stats(&self) -> DurableStats {
        if let Some(s) = self.final_stats.lock().unwrap().clone() {
            return s;
        }
        let j = self.journal.stats();
        let r = self.journal.recovery();
        DurableStats {
            dir: self.journal.dir().display().to_string(),
            fsync: self.fsync.as_str(),
            closed: false,
            segments: j.segments as u64,
            bytes: j.bytes,
            appended: j.appended,
            acknowledged: j.acked,
            unacknowledged: self.unacknowledged(),
            lost_after_return: self.notifier.lost_after_return.load(Ordering::Relaxed),
            recovered: RecoveredStats {
                events: r.events,
                unacknowledged: r.unacked_events,
                truncated_bytes: r.truncated.as_ref().map_or(0, |t| t.discarded_bytes),
                duration_ms: r.duration.as_secs_f64() * 1000.0,
            },
        }
    }

    /// Flushes and fsyncs everything, settles waiting publishers and closes the journal (the
    /// directory lock is released). Returns how many events stay unacknowledged on disk.
    pub fn close(&self) -> Result<u64> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(self.final_stats.lock().unwrap().as_ref().map_or(0, |s| s.unacknowledged));
        }
        let synced = self.journal.sync();
        self.notifier.stop();
        let mut stats = self.stats();
        stats.closed = true;
        let left = stats.unacknowledged;
        let closed = self.journal.close();
        *self.final_stats.lock().unwrap() = Some(stats);
        synced?;
        closed?;
        Ok(left)
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
