//! A subscription's link to the journal. Its in-memory queue is a window onto the journal:
//! while the queue has room, events go straight into it; once it is full, events stay in (or,
//! for a non-durable `spill` subscription, are written to) the journal, and the consumer's
//! `take` refills the queue from there in sequence order before live events flow again.
//!
//! - durable (`at-least-once` with a name): every event routed to it is appended for its
//!   journal consumer before it is offered; the consumer acknowledges after its handler
//!   succeeded. After a restart, subscribing under the same name starts in backlog mode, so
//!   every unacknowledged event is delivered first.
//! - `spill` only: nothing is written while the queue has room; spilled events are
//!   acknowledged as soon as they are back in the queue (the subscription is at-most-once).

use super::record::{from_stored, Record};
use super::notify::Waiter;
use super::Durable;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::queue::Queue;
use sluice_journal::{Seq, To};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A spill subscription's journal counters, shared with the notifier that learns about write
/// failures after the publish.
#[derive(Default)]
pub struct SpillCounters {
    /// Spill writes that failed: the publisher got the error; the event is counted dropped.
    pub errors: AtomicU64,
    /// Events in the journal not yet back in the queue.
    pending: AtomicU64,
}

impl SpillCounters {
    pub(crate) fn lost(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
    }
}

pub struct SubJournal {
    store: Arc<Durable>,
    /// The journal consumer: the subscription's name, or `~spill.<id>`.
    name: String,
    durable: bool,
    state: Mutex<State>,
    /// Mirrors `State::backlog` for a lock-free check on every `take`.
    backlogged: AtomicBool,
    pub(crate) spilled: AtomicU64,
    pub(crate) spill: Arc<SpillCounters>,
    /// A journal read failed while refilling (reported once per failure, the backlog stays).
    pub(crate) read_errors: AtomicU64,
    /// Acknowledgements the journal refused (the events stay pending: redelivered later).
    pub(crate) ack_errors: AtomicU64,
    /// Acknowledgements of one settle batch, written as one journal record at its end
    /// (`flush_acks`) instead of one record per event.
    acks: Mutex<Vec<Seq>>,
    /// Failed-attempt counts of retrying events, written with the acknowledgements.
    attempts: Mutex<Vec<(Seq, u32)>>,
    /// Failed attempts of pending events recorded by an earlier subscriber of this name (read
    /// at attach), taken as the events are delivered again.
    failed_before: Mutex<std::collections::HashMap<Seq, u32>>,
    /// Whether `failed_before` has entries: the common case checks no lock.
    has_failed_before: AtomicBool,
}

/// Buffered acknowledgements are written at the latest at this many (a settle batch larger
/// than this writes several records).
const ACK_BATCH: usize = 4096;

struct State {
    backlog: bool,
    /// The last journal sequence number placed in the queue from the journal; events at or
    /// below it are already there (a publisher that appended before a refill read its event
    /// must not place it a second time).
    cursor: Seq,
}

impl SubJournal {
    /// Registers the journal consumer. A durable one that has unacknowledged events starts in
    /// backlog mode: they are delivered before any live event.
    pub(crate) fn attach(store: Arc<Durable>, name: String, durable: bool) -> Result<SubJournal> {
        let j = store.journal();
        j.register_consumer(&name)?;
        let backlog = durable && j.pending(&name)? > 0;
        let failed_before: std::collections::HashMap<Seq, u32> =
            if backlog { j.attempts(&name)?.into_iter().collect() } else { Default::default() };
        Ok(SubJournal {
            store,
            name,
            durable,
            state: Mutex::new(State { backlog, cursor: 0 }),
            backlogged: AtomicBool::new(backlog),
            spilled: AtomicU64::new(0),
            spill: Arc::default(),
            read_errors: AtomicU64::new(0),
            ack_errors: AtomicU64::new(0),
            acks: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            has_failed_before: AtomicBool::new(!failed_before.is_empty()),
            failed_before: Mutex::new(failed_before),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn is_durable(&self) -> bool {
        self.durable
    }
    pub fn store(&self) -> &Arc<Durable> {
        &self.store
    }

    /// Offers a routed event (the caller holds the store's publish lock). For a durable
    /// subscription the event was already appended for it (`ev.journal_seq`). Returns the
    /// sequence number of a spill write the publisher must wait for.
    pub(crate) fn offer(&self, q: &Queue, ev: &Arc<Event>, rec: &Record<'_>) -> Result<Option<Seq>> {
        let mut st = self.state.lock().unwrap();
        if self.durable {
            let seq = ev.journal_seq.load(Ordering::Relaxed);
            if seq <= st.cursor {
                return Ok(None);
            }
            if !st.backlog {
                match q.try_place(ev) {
                    Ok(true) | Err(_) => return Ok(None),
                    Ok(false) => {
                        st.backlog = true;
                        st.cursor = seq - 1;
                        self.backlogged.store(true, Ordering::Release);
                    }
                }
            }
            self.spilled.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if !st.backlog {
            match q.try_place(ev) {
                Ok(true) | Err(_) => return Ok(None),
                Ok(false) => {}
            }
        }
        let names = [self.name.as_str()];
        let seq = match self.store.journal().append_to(rec, To::Only(&names)) {
            Ok(s) => s,
            Err(e) => {
                self.spill.errors.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        if !st.backlog {
            st.backlog = true;
            st.cursor = seq - 1;
            self.backlogged.store(true, Ordering::Release);
        }
        self.spilled.fetch_add(1, Ordering::Relaxed);
        self.spill.pending.fetch_add(1, Ordering::Relaxed);
        if self.store.fsync() != super::Fsync::Never {
            // The write reaches the disk later; if it fails then, the subscription counts it.
            self.store.notify(seq, Waiter::Spill(self.spill.clone()));
        }
        Ok(Some(seq))
    }

    /// Moves journal events back into the queue while it has room, in sequence order; leaves
    /// backlog mode once the journal has nothing more for this subscription.
    pub(crate) fn refill(&self, q: &Queue) {
        if !self.backlogged.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if !st.backlog || q.is_closed() {
            return;
        }
        if let Err(e) = self.refill_locked(&mut st, q) {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("sluice: reading subscription '{}' back from the journal failed: {e}", self.name);
        }
    }

    fn refill_locked(&self, st: &mut State, q: &Queue) -> Result<()> {
        let room = q.capacity().saturating_sub(q.len());
        if room == 0 {
            return Ok(());
        }
        let journal = self.store.journal();
        let mut it = journal.unacked_after(&self.name, st.cursor)?;
        let mut placed = Vec::new();
        let mut expired = Vec::new();
        let mut exhausted = true;
        let mut queued = 0;
        loop {
            if queued == room {
                exhausted = it.next().is_none();
                break;
            }
            let Some(stored) = it.next() else { break };
            let stored = stored?;
            let seq = stored.seq;
            let ev = from_stored(stored, if self.durable { seq } else { 0 });
            if ev.expired() {
                // Its deadline passed while it waited in the journal (the process may have been
                // down): counted expired here and released, never delivered.
                q.count_expired_unqueued(&ev);
                st.cursor = seq;
                if self.durable {
                    expired.push(seq);
                } else {
                    placed.push(seq);
                }
                continue;
            }
            match q.try_place(&ev) {
                Ok(true) => {
                    st.cursor = seq;
                    placed.push(seq);
                    queued += 1;
                }
                Ok(false) => {
                    exhausted = false;
                    break;
                }
                Err(_) => return Ok(()),
            }
        }
        drop(it);
        if !expired.is_empty() {
            journal.ack_many(&self.name, &expired)?;
        }
        if !self.durable && !placed.is_empty() {
            self.spill.pending.fetch_sub(placed.len() as u64, Ordering::Relaxed);
            // Back in memory: the journal's part for an at-most-once subscription is done.
            journal.ack_many(&self.name, &placed)?;
        }
        if exhausted {
            st.backlog = false;
            self.backlogged.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// The handler of a durable subscription finished these events.
    pub fn ack(&self, seqs: &[Seq]) -> Result<usize> {
        if !self.durable || seqs.is_empty() {
            return Ok(0);
        }
        Ok(self.store.journal().ack_many(&self.name, seqs)?)
    }

    /// Records an acknowledgement to write with the rest of its settle batch.
    pub(crate) fn buffer_ack(&self, seq: Seq) {
        let full = {
            let mut acks = self.acks.lock().unwrap();
            acks.push(seq);
            acks.len() >= ACK_BATCH
        };
        if full {
            self.flush_acks();
        }
    }

    /// `buffer_ack` for several events, under one lock.
    pub(crate) fn buffer_acks(&self, seqs: impl Iterator<Item = Seq>) {
        let full = {
            let mut acks = self.acks.lock().unwrap();
            acks.extend(seqs);
            acks.len() >= ACK_BATCH
        };
        if full {
            self.flush_acks();
        }
    }

    /// Records the failed attempts of a retrying event, written with the next flush.
    pub(crate) fn buffer_attempts(&self, seq: Seq, failed: u32) {
        self.attempts.lock().unwrap().push((seq, failed));
    }

    /// How many attempts of `ev` failed under an earlier subscriber of this name (0 if none
    /// were recorded); each count is handed out once.
    pub(crate) fn failed_before(&self, ev: &Event) -> u32 {
        if !self.has_failed_before.load(Ordering::Relaxed) {
            return 0;
        }
        let mut m = self.failed_before.lock().unwrap();
        let n = m.remove(&ev.journal_seq.load(Ordering::Relaxed)).unwrap_or(0);
        if m.is_empty() {
            self.has_failed_before.store(false, Ordering::Relaxed);
        }
        n
    }

    /// Writes the buffered attempt counts and acknowledgements, one journal record each. A
    /// refusal is not a loss: the events stay pending and come back after a restart (counted
    /// in `ack_errors`; a lost count means an extra attempt).
    pub(crate) fn flush_acks(&self) {
        let attempts = std::mem::take(&mut *self.attempts.lock().unwrap());
        if !attempts.is_empty() {
            if let Err(e) = self.store.journal().record_attempts(&self.name, &attempts) {
                if e.code() != "ERR_JOURNAL_CLOSED" {
                    self.ack_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let seqs = std::mem::take(&mut *self.acks.lock().unwrap());
        if seqs.is_empty() {
            return;
        }
        if let Err(e) = self.ack(&seqs) {
            if e.code() != "ERR_JOURNAL_CLOSED" {
                self.ack_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The subscription is going away. A durable consumer stays registered (its unacknowledged
    /// events wait for the next subscriber of that name); a spill consumer is removed, and the
    /// events it still held are returned as a count (they were at-most-once: dropped, counted).
    pub(crate) fn detach(&self) -> u64 {
        if self.durable {
            self.store.release_name(&self.name);
            return 0;
        }
        let left = self.spill.pending.swap(0, Ordering::Relaxed);
        if let Err(e) = self.store.journal().unregister_consumer(&self.name) {
            if e.code() != "ERR_JOURNAL_CLOSED" {
                eprintln!("sluice: removing spill consumer '{}' failed: {}", self.name, Error::from(e));
            }
        }
        left
    }
}
