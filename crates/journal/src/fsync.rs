//! Fsync policies and group commit.
//!
//! Durability is tracked with two watermarks that move together: `lsn` counts every record this
//! process wrote (appends, acks, registrations), `seq` is the last event sequence number among
//! them. One fsync makes everything written before it durable, so whoever syncs (the "leader")
//! captures both watermarks, fsyncs once outside the state lock, and then publishes them: every
//! appender waiting at or below them, from any thread, is released by that single fsync.

use crate::error::JournalError;
use crate::event::Seq;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// When appended records are fsynced (`fdatasync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append` returns only once its record is fsynced. Concurrent appenders share fsyncs
    /// (group commit). Survives power loss; costs one fsync latency per append.
    Always,
    /// A background thread writes and fsyncs at least every `interval`, or as soon as
    /// `max_records` records are waiting. `append` returns at once; `wait_durable` /
    /// `append_durable` block until the covering fsync. Loses at most what was not yet fsynced.
    Batch { interval: Duration, max_records: usize },
    /// Every record is handed to the kernel (`write`) before `append` returns, so it survives the
    /// process crashing, but is fsynced only when a segment is sealed, on `sync()` and on
    /// `close()`. An OS crash or power loss can lose any of it.
    Never,
}

impl FsyncPolicy {
    /// `batch` with a 2 ms interval and 4096 records: bounded latency, one fsync per burst.
    pub fn batch() -> FsyncPolicy {
        FsyncPolicy::Batch { interval: Duration::from_millis(2), max_records: 4096 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Lsn(u64),
    Seq(Seq),
    /// Every event from the first to the last sequence number (a batch): settled once the last
    /// is durable, failed if a lost write covered any of them.
    Range(Seq, Seq),
}

pub struct DState {
    pub durable_lsn: u64,
    pub durable_seq: Seq,
    /// A leader is fsyncing: others wait for its result instead of queueing their own fsync.
    pub syncing: bool,
    /// Set by a failed fsync: after one, Linux may have dropped the dirty pages, so nothing
    /// written since the last good fsync can be vouched for. Every later call fails.
    pub poisoned: Option<JournalError>,
    /// Event ranges lost to a failed write (rolled back); waiters on them get the error.
    pub lost: Vec<(Seq, Seq, JournalError)>,
}

pub struct Durability {
    pub m: Mutex<DState>,
    pub cv: Condvar,
}

impl Durability {
    pub fn new(durable_seq: Seq) -> Self {
        Durability {
            m: Mutex::new(DState { durable_lsn: 0, durable_seq, syncing: false, poisoned: None, lost: Vec::new() }),
            cv: Condvar::new(),
        }
    }

    /// `Some(result)` once `t` is settled: durable, lost, or never-again (poisoned).
    pub fn settled(d: &DState, t: Target) -> Option<Result<(), JournalError>> {
        if let Some(e) = &d.poisoned {
            return Some(Err(e.clone()));
        }
        match t {
            Target::Lsn(l) if d.durable_lsn >= l => Some(Ok(())),
            Target::Seq(s) => Self::settled(d, Target::Range(s, s)),
            Target::Range(first, last) => {
                if let Some((_, _, e)) = d.lost.iter().find(|(a, b, _)| *a <= last && first <= *b) {
                    return Some(Err(e.clone()));
                }
                (d.durable_seq >= last).then_some(Ok(()))
            }
            _ => None,
        }
    }

    /// Raises the watermarks (never lowers them: leaders may finish out of order with a roll).
    pub fn advance(&self, lsn: u64, seq: Seq) {
        let mut d = self.m.lock().unwrap();
        d.durable_lsn = d.durable_lsn.max(lsn);
        d.durable_seq = d.durable_seq.max(seq);
        self.cv.notify_all();
    }
}
