//! The journal: appends, acks, consumer registry, retention, and the group-commit syncer.
//!
//! One mutex guards the in-memory state (index, cursors, write buffer); records are encoded into
//! a buffer under it and handed to the kernel with one `pwrite` per flush. fsync never runs under
//! that mutex (except when sealing a segment), so appenders keep going while a leader fsyncs.

use crate::cursor::Consumers;
use crate::error::{JournalError, Result};
use crate::event::{AppendRecord, EventRecord, Seq};
use crate::read::Unacked;
use crate::fault::Faults;
use crate::format::{self, Checkpoint, Kind};
use crate::fsync::{Durability, FsyncPolicy, Target};
use crate::recovery::{self, RecoveryStats};
use crate::segment::{self, Entry, Segment};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Called after each group-commit fsync with the highest durable sequence number, outside any
/// journal lock and before the waiters it covers are released. Lets the bus resolve many waiting
/// publishes per fsync without a blocked thread per publish. Segment seals also make events
/// durable without calling it; `durable_seq()` is the authority.
pub type DurableHook = Arc<dyn Fn(Seq) + Send + Sync>;

#[derive(Clone)]
pub struct JournalOptions {
    pub fsync: FsyncPolicy,
    /// A segment is sealed and a new one started once it would grow past this. A single record
    /// larger than this still gets a segment of its own.
    pub segment_bytes: u64,
    pub on_durable: Option<DurableHook>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { fsync: FsyncPolicy::batch(), segment_bytes: 64 << 20, on_durable: None }
    }
}

impl std::fmt::Debug for JournalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalOptions")
            .field("fsync", &self.fsync)
            .field("segment_bytes", &self.segment_bytes)
            .field("on_durable", &self.on_durable.is_some())
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: String,
    /// Events addressed to this consumer and not acknowledged.
    pub pending: u64,
    /// Low-water mark: every event at or below it is acknowledged (or was not addressed to it).
    pub committed: Seq,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalStats {
    pub segments: usize,
    pub bytes: u64,
    /// The highest sequence number assigned so far (0: none).
    pub last_seq: Seq,
    pub durable_seq: Seq,
    pub appended: u64,
    pub acked: u64,
    pub fsyncs: u64,
    pub segments_deleted: u64,
    /// Retention deletes that failed (the segment stays; retried on the next ack).
    pub retention_errors: u64,
}

/// Who an appended event is for.
#[derive(Clone, Copy, Debug)]
pub enum To<'a> {
    /// Every consumer registered at the time of the append.
    All,
    /// These consumers only (spill: the one subscription whose queue was full).
    Only(&'a [&'a str]),
}

const FLUSH_AT: usize = 256 << 10;

pub(crate) struct State {
    pub(crate) segments: VecDeque<Segment>,
    pub(crate) consumers: Consumers,
    next_seq: Seq,
    /// Encoded records of the active segment not yet handed to the kernel.
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Bytes of the active segment in the file (the buffer goes after them).
    written: u64,
    /// Records encoded so far in this process; `written_*`: the part handed to the kernel.
    lsn: u64,
    written_lsn: u64,
    written_seq: Seq,
    /// Records encoded since the syncer last captured the watermarks (batch wake-ups).
    unsynced: usize,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments.back().expect("a journal always has an active segment")
    }
    fn find(&self, seq: Seq) -> Option<Entry> {
        self.segments.iter().find(|s| s.last_seq().is_some_and(|l| l >= seq)).and_then(|s| s.find(seq))
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a journal always has an active segment")
    }
}

#[derive(Default)]
struct Kick {
    dirty: bool,
    full: bool,
    closed: bool,
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    acked: AtomicU64,
    fsyncs: AtomicU64,
    segments_deleted: AtomicU64,
    retention_errors: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    opts: JournalOptions,
    state: Mutex<State>,
    dur: Durability,
    kick: Mutex<Kick>,
    kick_cv: Condvar,
    closed: AtomicBool,
    poisoned: AtomicBool,
    counters: Counters,
    recovery: RecoveryStats,
    faults: Faults,
    /// Holds the flock for as long as the journal lives.
    _lock: File,
}

/// A durable, append-only local journal. `Send + Sync`: share it with `Arc` and call from any
/// thread.
pub struct Journal {
    pub(crate) inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, recovering its state. Fails with
    /// `ERR_JOURNAL_READONLY` / `ERR_JOURNAL_FULL` / `ERR_JOURNAL_IO` when the directory cannot be
    /// written, `ERR_JOURNAL_CORRUPT` on damage a crash cannot explain, `ERR_JOURNAL_LOCKED` when
    /// another journal has it open.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions) -> Result<Journal> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_bytes < 4096 {
            return Err(JournalError::invalid("segment_bytes must be at least 4096"));
        }
        if let FsyncPolicy::Batch { interval, max_records } = opts.fsync {
            if interval.is_zero() || max_records == 0 {
                return Err(JournalError::invalid("batch fsync needs a non-zero interval and max_records"));
            }
        }
        fs::create_dir_all(&dir).map_err(|e| JournalError::io("create directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let rec = recovery::recover(&dir)?;
        let mut segments = rec.segments;
        if segments.is_empty() {
            let file = segment::create(&dir, 1, &[])?;
            segments.push_back(Segment {
                id: 1,
                path: segment::segment_path(&dir, 1),
                file: Arc::new(file),
                len: format::FILE_HEADER_LEN as u64,
                base: format::FILE_HEADER_LEN as u64,
                entries: Vec::new(),
            });
        }
        let active = segments.back().unwrap();
        // What recovery read may have been in the page cache only (a process crash under
        // `never`): make it durable now, so `durable_seq` starts out true.
        active.file.sync_data().map_err(|e| JournalError::io("fsync", &active.path, e))?;
        let written = active.len;
        let last = rec.next_seq - 1;
        let state = State {
            segments,
            consumers: rec.consumers,
            next_seq: rec.next_seq,
            buf: Vec::with_capacity(FLUSH_AT),
            scratch: Vec::new(),
            written,
            lsn: 0,
            written_lsn: 0,
            written_seq: last,
            unsynced: 0,
        };
        let inner = Arc::new(Inner {
            dir,
            state: Mutex::new(state),
            dur: Durability::new(last),
            kick: Mutex::new(Kick::default()),
            kick_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            counters: Counters::default(),
            recovery: rec.stats,
            faults: Faults::default(),
            _lock: lock,
            opts,
        });
        let flusher = match inner.opts.fsync {
            FsyncPolicy::Batch { interval, .. } => {
                let i = inner.clone();
                let h = std::thread::Builder::new()
                    .name("sluice-journal-sync".into())
                    .spawn(move || i.flusher(interval))
                    .map_err(|e| JournalError::io("spawn syncer", Path::new("-"), e))?;
                Some(h)
            }
            _ => None,
        };
        Ok(Journal { inner, flusher: Mutex::new(flusher) })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &JournalOptions {
        &self.inner.opts
    }

    /// What `open` found: counts, the torn tail it cut off, segments it removed, time taken.
    pub fn recovery(&self) -> &RecoveryStats {
        &self.inner.recovery
    }

    /// Registers a durable consumer. Events appended from now on with `To::All` are addressed to
    /// it. Returns `false` if it already existed (its cursor is kept). Durable on return.
    pub fn register_consumer(&self, name: &str) -> Result<bool> {
        let i = &self.inner;
        i.check_open()?;
        if name.is_empty() || name.len() > u16::MAX as usize {
            return Err(JournalError::invalid("consumer name must be 1..=65535 bytes"));
        }
        let lsn = {
            let mut st = i.lock();
            if st.consumers.id(name).is_some() {
                return Ok(false);
            }
            let id = st.consumers.next_id;
            st.scratch.clear();
            format::frame(&mut st.scratch, Kind::Register, |o| format::encode_register(o, id, name));
            i.stage(&mut st, &[], 1)?;
            st.consumers.insert(id, name.to_string());
            i.flush(&mut st)?;
            st.lsn
        };
        i.sync_until(Target::Lsn(lsn))?;
        Ok(true)
    }

    /// Removes a consumer and its cursor; what only it was holding becomes eligible for
    /// retention. Returns `false` if it did not exist. Durable on return.
    pub fn unregister_consumer(&self, name: &str) -> Result<bool> {
        let i = &self.inner;
        i.check_open()?;
        let lsn = {
            let mut st = i.lock();
            let Some(id) = st.consumers.id(name) else { return Ok(false) };
            st.scratch.clear();
            format::frame(&mut st.scratch, Kind::Unregister, |o| format::encode_unregister(o, id));
            i.stage(&mut st, &[], 1)?;
            st.consumers.remove(id);
            i.flush(&mut st)?;
            i.retain(&mut st);
            st.lsn
        };
        i.sync_until(Target::Lsn(lsn))?;
        Ok(true)
    }

    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        let st = self.inner.lock();
        let last = st.next_seq - 1;
        st.consumers
            .iter()
            .map(|(_, c)| ConsumerInfo {
                name: c.name.clone(),
                pending: c.pending.len() as u64,
                committed: c.pending.first().map_or(last, |s| s - 1),
            })
            .collect()
    }

    /// Appends an event for every registered consumer. Under `Always` it is durable on return;
    /// under `Batch`, call `wait_durable(seq)`; under `Never`, it is in the kernel's hands.
    pub fn append(&self, event: &EventRecord) -> Result<Seq> {
        self.append_to(event, To::All)
    }

    pub fn append_to(&self, event: &impl AppendRecord, to: To<'_>) -> Result<Seq> {
        let (_, last) = self.append_batch(std::slice::from_ref(event), to)?;
        Ok(last)
    }

    /// Appends several events with one write (and, under `Always`, one fsync). Returns the first
    /// and last sequence numbers, which are consecutive. All or nothing: on error none is stored.
    pub fn append_batch(&self, events: &[impl AppendRecord], to: To<'_>) -> Result<(Seq, Seq)> {
        let i = &self.inner;
        i.check_open()?;
        if events.is_empty() {
            return Err(JournalError::invalid("append_batch needs at least one event"));
        }
        for e in events {
            format::validate_event(e).map_err(JournalError::invalid)?;
        }
        let (first, last) = {
            let mut st = i.lock();
            let ids = match to {
                To::All => None,
                To::Only(names) => {
                    let mut ids = Vec::with_capacity(names.len());
                    for n in names {
                        let id = st
                            .consumers
                            .id(n)
                            .ok_or_else(|| JournalError::UnknownConsumer { name: n.to_string() })?;
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    Some(ids)
                }
            };
            // The whole batch is encoded first and staged into one segment, so it is stored or
            // failed as a unit (no segment roll can fail half-way through it).
            let first = st.next_seq;
            let mut placed = Vec::with_capacity(events.len());
            let mut scratch = std::mem::take(&mut st.scratch);
            scratch.clear();
            for (k, e) in events.iter().enumerate() {
                let seq = first + k as u64;
                let off = scratch.len() as u64;
                let mut id_ok = true;
                let len = format::frame(&mut scratch, Kind::Append, |o| id_ok = format::encode_append(o, seq, e, ids.as_deref()));
                if !id_ok {
                    st.scratch = scratch;
                    return Err(JournalError::invalid(format!("event id is longer than {} bytes", u16::MAX)));
                }
                placed.push((seq, off, len as u32));
            }
            st.scratch = scratch;
            i.stage(&mut st, &placed, events.len() as u64)?;
            let last = first + events.len() as u64 - 1;
            st.consumers.deliver_range(first, last, ids.as_deref()).expect("recipients resolved above");
            st.next_seq = last + 1;
            match i.opts.fsync {
                FsyncPolicy::Batch { max_records, .. } => {
                    if st.buf.len() >= FLUSH_AT {
                        i.flush(&mut st)?;
                    }
                    let before = st.unsynced;
                    st.unsynced += events.len();
                    if before == 0 || (before < max_records && st.unsynced >= max_records) {
                        i.wake_flusher(st.unsynced >= max_records);
                    }
                }
                _ => i.flush(&mut st)?,
            }
            (first, last)
        };
        i.counters.appended.fetch_add(events.len() as u64, Ordering::Relaxed);
        if i.opts.fsync == FsyncPolicy::Always {
            i.sync_until(Target::Seq(last))?;
        }
        Ok((first, last))
    }

    /// Blocks until `seq` (and everything before it) is fsynced. Under `Batch` this waits for the
    /// syncer's next round (at most `interval` plus one fsync); under `Never` it fsyncs now.
    pub fn wait_durable(&self, seq: Seq) -> Result<()> {
        self.wait_durable_range(seq, seq)
    }

    /// `wait_durable` for events `first..=last` (a batch, or everything a publish wrote): `Ok`
    /// once the last is fsynced, the write's error if any of them was lost.
    pub fn wait_durable_range(&self, first: Seq, last: Seq) -> Result<()> {
        let i = &self.inner;
        i.check_open()?;
        if last >= i.lock().next_seq || first > last {
            return Err(JournalError::invalid(format!("sequence {first}..={last} has not been appended")));
        }
        let seq = Target::Range(first, last);
        match i.opts.fsync {
            FsyncPolicy::Batch { .. } => {
                let mut d = i.dur.m.lock().unwrap();
                loop {
                    if let Some(r) = Durability::settled(&d, seq) {
                        return r;
                    }
                    if i.closed.load(Ordering::Acquire) {
                        // The syncer is gone; close() fsyncs, or this waiter does it itself.
                        drop(d);
                        return i.sync_until(seq);
                    }
                    d = i.dur.cv.wait(d).unwrap();
                }
            }
            _ => i.sync_until(seq),
        }
    }

    /// `append` + `wait_durable`: returns once the event survives power loss (any policy).
    pub fn append_durable(&self, event: &EventRecord) -> Result<Seq> {
        let seq = self.append(event)?;
        self.wait_durable(seq)?;
        Ok(seq)
    }

    /// Fsyncs everything written so far, now, whatever the policy.
    pub fn sync(&self) -> Result<()> {
        let i = &self.inner;
        i.check_open()?;
        let lsn = i.lock().lsn;
        i.sync_until(Target::Lsn(lsn))
    }

    /// Without waiting: `Some(Ok)` once `first..=last` is fsynced, `Some(Err)` if a failed write
    /// lost any of them (or a failed fsync poisoned the journal), `None` while it is pending.
    /// Still answers after `close()` (which fsyncs everything first).
    pub fn durable_result(&self, first: Seq, last: Seq) -> Option<Result<()>> {
        Durability::settled(&self.inner.dur.m.lock().unwrap(), Target::Range(first, last))
    }

    /// The highest sequence number known to be fsynced.
    pub fn durable_seq(&self) -> Seq {
        self.inner.dur.m.lock().unwrap().durable_seq
    }

    /// The highest sequence number assigned (0: none yet).
    pub fn last_seq(&self) -> Seq {
        self.inner.lock().next_seq - 1
    }

    /// Acknowledges one event for `consumer`. Returns whether it was pending (acking twice, or an
    /// event not addressed to the consumer, is a no-op and writes nothing).
    pub fn ack(&self, consumer: &str, seq: Seq) -> Result<bool> {
        Ok(self.ack_many(consumer, &[seq])? == 1)
    }

    /// Acknowledges several events in one record; any order. Returns how many were pending.
    /// Durable on return under `Always`; otherwise it follows the fsync policy (a lost ack means
    /// a redelivery, never a loss).
    pub fn ack_many(&self, consumer: &str, seqs: &[Seq]) -> Result<usize> {
        let i = &self.inner;
        i.check_open()?;
        let (lsn, n) = {
            let mut st = i.lock();
            let id = st
                .consumers
                .id(consumer)
                .ok_or_else(|| JournalError::UnknownConsumer { name: consumer.to_string() })?;
            let c = st.consumers.get(id).unwrap();
            let mut hits: Vec<Seq> = seqs.iter().copied().filter(|s| c.pending.contains(s)).collect();
            hits.sort_unstable();
            hits.dedup();
            if hits.is_empty() {
                return Ok(0);
            }
            // Released first, record second: segments the ack frees are deleted before its
            // record is written, so a full disk can still be drained by acknowledging. Safe:
            // deleted events were acked by every consumer; if this record is then lost, the
            // only effect is redelivery of the rest.
            let c = st.consumers.get_mut(id).unwrap();
            for s in &hits {
                c.pending.remove(s);
            }
            i.retain(&mut st);
            st.scratch.clear();
            format::frame(&mut st.scratch, Kind::Ack, |o| format::encode_ack(o, id, &hits));
            if let Err(e) = i.stage(&mut st, &[], 1) {
                // Nothing written: the events stay pending (those still stored).
                let keep: Vec<Seq> = hits.iter().copied().filter(|s| st.find(*s).is_some()).collect();
                let c = st.consumers.get_mut(id).unwrap();
                c.pending.extend(keep);
                return Err(e);
            }
            let c = st.consumers.get_mut(id).unwrap();
            if !c.attempts.is_empty() {
                for s in &hits {
                    c.attempts.remove(s);
                }
            }
            i.write_bookkeeping(&mut st)?;
            i.counters.acked.fetch_add(hits.len() as u64, Ordering::Relaxed);
            (st.lsn, hits.len())
        };
        if i.opts.fsync == FsyncPolicy::Always {
            i.sync_until(Target::Lsn(lsn))?;
        }
        Ok(n)
    }

    /// Records how many delivery attempts of pending events have failed so far (`(seq, failed)`;
    /// a later count replaces an earlier one), so a restarted consumer continues the count
    /// instead of starting again at 1. One record; follows the fsync policy like an ack (a lost
    /// count means an extra attempt, never a lost event). Returns how many were pending.
    pub fn record_attempts(&self, consumer: &str, failed: &[(Seq, u32)]) -> Result<usize> {
        let i = &self.inner;
        i.check_open()?;
        let lsn = {
            let mut st = i.lock();
            let id = st
                .consumers
                .id(consumer)
                .ok_or_else(|| JournalError::UnknownConsumer { name: consumer.to_string() })?;
            let c = st.consumers.get(id).unwrap();
            let hits: Vec<(Seq, u32)> = failed.iter().copied().filter(|(s, _)| c.pending.contains(s)).collect();
            if hits.is_empty() {
                return Ok(0);
            }
            st.scratch.clear();
            format::frame(&mut st.scratch, Kind::Attempts, |o| format::encode_attempts(o, id, &hits));
            i.stage(&mut st, &[], 1)?;
            let c = st.consumers.get_mut(id).unwrap();
            c.attempts.extend(hits.iter().copied());
            i.write_bookkeeping(&mut st)?;
            (st.lsn, hits.len())
        };
        if i.opts.fsync == FsyncPolicy::Always {
            i.sync_until(Target::Lsn(lsn.0))?;
        }
        Ok(lsn.1)
    }

    /// Failed delivery attempts recorded for `consumer`'s pending events (`record_attempts`),
    /// in sequence order; events without any are left out.
    pub fn attempts(&self, consumer: &str) -> Result<Vec<(Seq, u32)>> {
        let st = self.inner.lock();
        let id = st.consumers.id(consumer).ok_or_else(|| JournalError::UnknownConsumer { name: consumer.to_string() })?;
        let mut v: Vec<(Seq, u32)> = st.consumers.get(id).unwrap().attempts.iter().map(|(s, n)| (*s, *n)).collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Events addressed to `consumer` and not acknowledged, in sequence order. The iterator reads
    /// in batches and sees acks and appends made while it runs.
    pub fn unacked(&self, consumer: &str) -> Result<Unacked<'_>> {
        self.unacked_after(consumer, 0)
    }

    /// Like `unacked`, starting after `after` (resume where a previous pass stopped).
    pub fn unacked_after(&self, consumer: &str, after: Seq) -> Result<Unacked<'_>> {
        self.inner.check_open()?;
        let id = self
            .inner
            .lock()
            .consumers
            .id(consumer)
            .ok_or_else(|| JournalError::UnknownConsumer { name: consumer.to_string() })?;
        Ok(Unacked::new(self, id, after))
    }

    /// How many events `consumer` has not acknowledged.
    pub fn pending(&self, consumer: &str) -> Result<u64> {
        let st = self.inner.lock();
        let id = st.consumers.id(consumer).ok_or_else(|| JournalError::UnknownConsumer { name: consumer.to_string() })?;
        Ok(st.consumers.get(id).unwrap().pending.len() as u64)
    }

    pub fn stats(&self) -> JournalStats {
        let i = &self.inner;
        let (segments, bytes, last_seq) = {
            let st = i.lock();
            (st.segments.len(), st.segments.iter().map(|s| s.len).sum(), st.next_seq - 1)
        };
        let c = &i.counters;
        JournalStats {
            segments,
            bytes,
            last_seq,
            durable_seq: self.durable_seq(),
            appended: c.appended.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            retention_errors: c.retention_errors.load(Ordering::Relaxed),
        }
    }

    /// Writes and fsyncs what is pending, stops the syncer, and refuses further calls with
    /// `ERR_JOURNAL_CLOSED`. Idempotent; `Drop` does it too (ignoring errors).
    pub fn close(&self) -> Result<()> {
        let i = &self.inner;
        if i.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let mut k = i.kick.lock().unwrap();
            k.closed = true;
            i.kick_cv.notify_all();
        }
        if let Some(h) = self.flusher.lock().unwrap().take() {
            let _ = h.join();
        }
        let lsn = i.lock().lsn;
        let r = i.sync_until(Target::Lsn(lsn));
        // Wake batch waiters: they re-check and see either durability or the close.
        i.dur.cv.notify_all();
        // Release the directory now, not when the last handle drops: a closed journal writes
        // nothing more, and the same process may open the directory again at once.
        // SAFETY: flock on a descriptor we own; no memory is involved.
        unsafe { libc::flock(i._lock.as_raw_fd(), libc::LOCK_UN) };
        r
    }

    /// Makes later writes (and optionally fsyncs) fail; see `fault::Fault`.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, fault: Option<crate::fault::Fault>) {
        self.inner.faults.set(fault);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state we cannot trust: propagate it.
        self.state.lock().expect("journal state poisoned by a panic")
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(JournalError::Closed { reason: "journal closed".into() });
        }
        if self.poisoned.load(Ordering::Acquire) {
            if let Some(e) = &self.dur.m.lock().unwrap().poisoned {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    fn poison(&self, e: JournalError) -> JournalError {
        let mut d = self.dur.m.lock().unwrap();
        if d.poisoned.is_none() {
            // Every later call reports the original failure (and its code).
            d.poisoned = Some(e.clone());
        }
        self.poisoned.store(true, Ordering::Release);
        self.dur.cv.notify_all();
        e
    }

    /// After an ack or attempts record is staged: `batch` leaves it to the group commit (waking
    /// the flusher for the first unsynced record), the other policies write it now. `always`
    /// callers then fsync up to it themselves, outside the lock.
    fn write_bookkeeping(&self, st: &mut State) -> Result<()> {
        match self.opts.fsync {
            FsyncPolicy::Batch { .. } => {
                if st.buf.len() >= FLUSH_AT {
                    self.flush(st)?;
                }
                st.unsynced += 1;
                if st.unsynced == 1 {
                    self.wake_flusher(false);
                }
                Ok(())
            }
            _ => self.flush(st),
        }
    }

    fn wake_flusher(&self, full: bool) {
        let mut k = self.kick.lock().unwrap();
        k.dirty = true;
        k.full |= full;
        self.kick_cv.notify_one();
    }

    /// Moves the records encoded in `scratch` into the active segment's write buffer, sealing
    /// the segment first if they would overflow it. `events`: (seq, offset in scratch, length)
    /// of each event record among them, for the index; `records`: how many records in all.
    fn stage(&self, st: &mut State, events: &[(Seq, u64, u32)], records: u64) -> Result<()> {
        let len = st.scratch.len() as u64;
        let a = st.active();
        if a.len > a.base && a.len + len > self.opts.segment_bytes {
            self.roll(st)?;
        }
        let start = st.active().len;
        let scratch = std::mem::take(&mut st.scratch);
        st.buf.extend_from_slice(&scratch);
        st.scratch = scratch;
        let a = st.active_mut();
        a.len += len;
        for &(seq, off, l) in events {
            a.entries.push(Entry { seq, offset: start + off, len: l });
        }
        st.lsn += records;
        Ok(())
    }

    /// Seals the active segment (flush + fsync) and starts the next one with a checkpoint.
    fn roll(&self, st: &mut State) -> Result<()> {
        self.flush(st)?;
        let a = st.active();
        let (path, file) = (a.path.clone(), a.file.clone());
        if let Err(e) = self.faults.sync_data(&file) {
            return Err(self.poison(JournalError::io("fsync", &path, e)));
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.dur.advance(st.written_lsn, st.written_seq);
        let id = a.id + 1;
        let mut cp = Vec::new();
        let checkpoint = Checkpoint {
            // Events staged after this roll get sequence numbers from here on.
            next_seq: st.next_seq,
            next_consumer_id: st.consumers.next_id,
            consumers: st.consumers.snapshot(),
        };
        format::frame(&mut cp, Kind::Checkpoint, |o| format::encode_checkpoint(o, &checkpoint));
        let file = segment::create(&self.dir, id, &cp)?;
        let len = (format::FILE_HEADER_LEN + cp.len()) as u64;
        st.segments.push_back(Segment {
            id,
            path: segment::segment_path(&self.dir, id),
            file: Arc::new(file),
            len,
            base: len,
            entries: Vec::new(),
        });
        st.written = len;
        Ok(())
    }

    /// Hands the write buffer to the kernel. On failure the partial write is cut off and the
    /// in-memory state is rebuilt from disk, so memory never claims what the disk does not hold.
    pub(crate) fn flush(&self, st: &mut State) -> Result<()> {
        if st.buf.is_empty() {
            return Ok(());
        }
        let a = st.active();
        let (file, path) = (a.file.clone(), a.path.clone());
        match self.faults.write_all_at(&file, &st.buf, st.written) {
            Ok(()) => {
                st.written += st.buf.len() as u64;
                st.written_lsn = st.lsn;
                st.written_seq = st.next_seq - 1;
                st.buf.clear();
                if st.buf.capacity() > 4 * FLUSH_AT {
                    st.buf.shrink_to(FLUSH_AT);
                }
                Ok(())
            }
            Err(e) => {
                let err = JournalError::io("write", &path, e);
                self.rollback(st, &file, &path, err.clone())?;
                Err(err)
            }
        }
    }

    fn rollback(&self, st: &mut State, file: &File, path: &Path, err: JournalError) -> Result<()> {
        if let Err(e) = file.set_len(st.written) {
            return Err(self.poison(JournalError::io("truncate after failed write", path, e)));
        }
        let issued = st.next_seq - 1;
        let rec = match recovery::recover(&self.dir) {
            Ok(r) => r,
            Err(e) => return Err(self.poison(e)),
        };
        let kept = rec.next_seq - 1;
        st.segments = rec.segments;
        st.consumers = rec.consumers;
        // Sequence numbers handed out and lost are never reused: a waiter on one must not be
        // released by a different event's fsync.
        st.next_seq = rec.next_seq.max(issued + 1);
        st.buf.clear();
        st.written = st.active().len;
        st.written_lsn = st.lsn;
        st.written_seq = kept;
        st.unsynced = 0;
        if issued > kept {
            let mut d = self.dur.m.lock().unwrap();
            d.lost.push((kept + 1, issued, err));
            self.dur.cv.notify_all();
        }
        Ok(())
    }

    /// Deletes the oldest segments while no consumer needs any event in them. Oldest-first only:
    /// the acks that released a segment live in later ones, and the checkpoint opening the new
    /// oldest segment carries the registry.
    fn retain(&self, st: &mut State) {
        let min = st.consumers.min_pending();
        while st.segments.len() > 1 {
            let front = &st.segments[0];
            let free = match (front.last_seq(), min) {
                (None, _) | (Some(_), None) => true,
                (Some(last), Some(m)) => last < m,
            };
            if !free {
                break;
            }
            if fs::remove_file(&front.path).is_err() {
                self.counters.retention_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            st.segments.pop_front();
            self.counters.segments_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Group commit: returns once `t` is durable. If nobody is fsyncing, this thread becomes the
    /// leader and fsyncs for everyone; otherwise it waits for the leader and re-checks.
    fn sync_until(&self, t: Target) -> Result<()> {
        let mut d = self.dur.m.lock().unwrap();
        loop {
            if let Some(r) = Durability::settled(&d, t) {
                return r;
            }
            if d.syncing {
                d = self.dur.cv.wait(d).unwrap();
                continue;
            }
            d.syncing = true;
            drop(d);
            let r = self.sync_once();
            d = self.dur.m.lock().unwrap();
            d.syncing = false;
            self.dur.cv.notify_all();
            if let Err(e) = r {
                if let Some(r) = Durability::settled(&d, t) {
                    return r;
                }
                return Err(e);
            }
        }
    }

    fn sync_once(&self) -> Result<()> {
        let (file, path, lsn, seq) = {
            let mut st = self.lock();
            self.flush(&mut st)?;
            st.unsynced = 0;
            let a = st.active();
            (a.file.clone(), a.path.clone(), st.written_lsn, st.written_seq)
        };
        if let Err(e) = self.faults.sync_data(&file) {
            return Err(self.poison(JournalError::io("fsync", &path, e)));
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        // The hook runs before waiters are released, so it has seen every seq they see durable.
        if let Some(hook) = &self.opts.on_durable {
            hook(seq);
        }
        self.dur.advance(lsn, seq);
        Ok(())
    }

    /// The `Batch` syncer: sleeps until something is written, lets a batch gather for
    /// `interval` (or until `max_records`), then fsyncs once for all of it.
    fn flusher(self: Arc<Self>, interval: std::time::Duration) {
        loop {
            {
                let mut k = self.kick.lock().unwrap();
                while !k.dirty && !k.closed {
                    k = self.kick_cv.wait(k).unwrap();
                }
                if k.closed {
                    return;
                }
                if !k.full {
                    let deadline = std::time::Instant::now() + interval;
                    while !k.full && !k.closed {
                        let now = std::time::Instant::now();
                        if now >= deadline {
                            break;
                        }
                        k = self.kick_cv.wait_timeout(k, deadline - now).unwrap().0;
                    }
                }
                k.dirty = false;
                k.full = false;
            }
            let lsn = self.lock().lsn;
            // Errors reach waiters through the poison / lost ranges; the syncer keeps serving.
            let _ = self.sync_until(Target::Lsn(lsn));
            if self.poisoned.load(Ordering::Acquire) {
                return;
            }
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| JournalError::io("open lock file", &path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(JournalError::Locked { path: dir.to_path_buf() });
        }
        return Err(JournalError::io("lock", &path, e));
    }
    Ok(f)
}
