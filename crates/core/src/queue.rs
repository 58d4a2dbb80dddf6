//! A subscription's bounded queue: crossbeam's lock-free `ArrayQueue` plus the overflow policy,
//! the counters, a coalesced consumer wake-up and a parking place for blocked publishers.
//!
//! Why `ArrayQueue`: it is a well-tested bounded MPMC ring (Vyukov's design) with `force_push`,
//! which gives `drop-oldest` atomically; an own ring would have to beat it in `benches/` first.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::observe::{reason, unix_now_us, Kind, Recorder};
use crate::overflow::Overflow;
use crossbeam_queue::ArrayQueue;
use serde::Serialize;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

/// Counters written by publishers. Kept apart from the consumer's so the two sides do not share
/// a cache line on every event.
#[derive(Default)]
#[repr(align(128))]
struct ProducerCounters {
    published: AtomicU64,
    dropped_newest: AtomicU64,
    dropped_oldest: AtomicU64,
    dropped_full: AtomicU64,
    dropped_canceled: AtomicU64,
    /// Unix µs when a publisher last found this `block` queue full with nobody placing since;
    /// 0 when a publish went straight in. Gives "publishers blocked for how long".
    full_since_us: AtomicU64,
}

#[derive(Default)]
#[repr(align(128))]
struct ConsumerCounters {
    delivered: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
    dropped_closed: AtomicU64,
}

/// A consistent-enough copy of a queue's counters. Invariant once the queue is quiet:
/// `published = delivered + expired + dropped_oldest + dropped_closed + depth`, and every event
/// offered is either published or counted in `dropped_newest`/`dropped_full`/`dropped_canceled`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub capacity: u64,
    pub depth: u64,
    pub published: u64,
    pub delivered: u64,
    pub dropped_newest: u64,
    pub dropped_oldest: u64,
    /// Refused because full: `error` policy, or a `tryPublish` that would have had to wait.
    pub dropped_full: u64,
    /// A blocked publisher's Context ended before space freed up.
    pub dropped_canceled: u64,
    /// Still queued when the subscription closed.
    pub dropped_closed: u64,
    pub expired: u64,
    pub failed: u64,
    pub blocked_publishers: u64,
    /// How long publishers have found this `block` queue full without a publish going straight
    /// in (ms); 0 when nobody is blocked.
    pub blocked_for_ms: u64,
}

impl QueueStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_newest + self.dropped_oldest + self.dropped_full + self.dropped_canceled + self.dropped_closed
    }
}

/// What a non-blocking offer did.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Enqueued,
    /// Enqueued after dropping the oldest event (`drop-oldest`).
    EnqueuedDisplacing,
    /// Dropped under `drop-newest`.
    DroppedNewest,
    /// Refused: full under `error`.
    Full,
    /// Full under `block`: the caller decides whether to wait (`push_blocking`) or give up.
    WouldBlock,
    Closed,
}

type Waker = Box<dyn Fn() + Send + Sync>;

pub struct Queue {
    ring: ArrayQueue<Arc<Event>>,
    policy: Overflow,
    closed: AtomicBool,
    producer: ProducerCounters,
    consumer: ConsumerCounters,
    /// Consumer wake-up, called at most once per `arm()`: one wake carries a whole batch.
    waker: OnceLock<Waker>,
    armed: AtomicBool,
    blocked: AtomicUsize,
    parked: Mutex<Vec<Thread>>,
    /// Asynchronous publishers waiting for space: called once when a consumer takes or the
    /// queue closes. Lets a JS publisher wait without holding a thread.
    space_waiters: Mutex<Vec<SpaceWaiter>>,
    space_waiting: AtomicUsize,
    /// Where this queue reports lifecycle records (set once by the bus when it subscribes).
    probe: OnceLock<Probe>,
}

/// A queue's link to its bus's recorder: records carry the subscription id.
struct Probe {
    recorder: Arc<Recorder>,
    sub: u64,
}

type SpaceWaiter = Box<dyn FnOnce() + Send>;

impl Queue {
    pub fn new(capacity: usize, policy: Overflow) -> Result<Queue> {
        if capacity == 0 || capacity > crate::overflow::MAX_CAPACITY {
            // Unchecked, a huge capacity makes ArrayQueue::new abort the process on allocation.
            return Err(Error::invalid(format!(
                "capacity must be from 1 to {}, got {capacity}",
                crate::overflow::MAX_CAPACITY
            )));
        }
        Ok(Queue {
            ring: ArrayQueue::new(capacity),
            policy,
            closed: AtomicBool::new(false),
            producer: ProducerCounters::default(),
            consumer: ConsumerCounters::default(),
            waker: OnceLock::new(),
            armed: AtomicBool::new(false),
            blocked: AtomicUsize::new(0),
            parked: Mutex::new(Vec::new()),
            space_waiters: Mutex::new(Vec::new()),
            space_waiting: AtomicUsize::new(0),
            probe: OnceLock::new(),
        })
    }

    /// Reports this queue's drops, expiries and deliveries to `recorder` as subscription `sub`.
    pub fn set_recorder(&self, recorder: Arc<Recorder>, sub: u64) {
        let _ = self.probe.set(Probe { recorder, sub });
    }

    /// Records `n` occurrences of `kind` if anyone watches it (one relaxed load otherwise).
    #[inline(always)]
    fn note(&self, kind: Kind, why: &'static str, ev: Option<&Arc<Event>>, n: u64) {
        if let Some(p) = self.probe.get() {
            p.recorder.note_for(kind, ev, n, |r| r.sub(p.sub).reason(why));
        }
    }

    pub fn policy(&self) -> Overflow {
        self.policy
    }
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }
    pub fn len(&self) -> usize {
        self.ring.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Installs the consumer's wake-up. It runs on the publisher's thread, so it must be cheap
    /// and must not block (e.g. queue a call onto the JS thread, unpark a worker).
    pub fn set_waker(&self, waker: Waker) -> Result<()> {
        self.waker.set(waker).map_err(|_| Error::invalid("this subscription already has a consumer"))
    }

    /// The consumer is about to sleep: wake it on the next push. Returns `true` if events arrived
    /// meanwhile, in which case the consumer should keep draining instead of sleeping.
    pub fn arm(&self) -> bool {
        self.armed.store(true, Ordering::SeqCst);
        !self.ring.is_empty() && self.armed.swap(false, Ordering::AcqRel)
    }

    /// Wakes an armed consumer for work that is not in the ring (a retry came due).
    pub(crate) fn wake(&self) {
        self.wake_consumer();
    }

    /// Arms without looking at the ring: the consumer cannot take more now (too many in
    /// flight) and waits for a settle or a retry to wake it.
    pub(crate) fn arm_idle(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Takes back an `arm()`: `true` if no wake-up was spent on it yet.
    pub(crate) fn disarm(&self) -> bool {
        self.armed.swap(false, Ordering::AcqRel)
    }

    fn wake_consumer(&self) {
        // Pairs with the SeqCst store in arm(): either the consumer sees our event or we see
        // its armed flag.
        fence(Ordering::SeqCst);
        self.wake_if_armed();
    }

    /// `wake_consumer` for a caller that has already issued the SeqCst fence after its push.
    fn wake_if_armed(&self) {
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            if let Some(w) = self.waker.get() {
                w();
            }
        }
    }

    /// Offers an event without waiting, applying the policy.
    pub fn offer(&self, ev: Arc<Event>) -> (Offer, Option<Arc<Event>>) {
        if self.is_closed() {
            self.producer.published.fetch_add(1, Ordering::Relaxed);
            self.consumer.dropped_closed.fetch_add(1, Ordering::Relaxed);
            self.note(Kind::Dropped, reason::CLOSED, Some(&ev), 1);
            return (Offer::Closed, None);
        }
        let outcome = match self.policy {
            Overflow::DropOldest => match self.ring.force_push(ev) {
                None => Offer::Enqueued,
                Some(old) => {
                    self.producer.dropped_oldest.fetch_add(1, Ordering::Relaxed);
                    self.note(Kind::Dropped, reason::OLDEST, Some(&old), 1);
                    Offer::EnqueuedDisplacing
                }
            },
            _ => match self.ring.push(ev) {
                Ok(()) => {
                    if self.policy == Overflow::Block && self.producer.full_since_us.load(Ordering::Relaxed) != 0 {
                        self.producer.full_since_us.store(0, Ordering::Relaxed);
                    }
                    Offer::Enqueued
                }
                Err(ev) => {
                    return match self.policy {
                        Overflow::DropNewest => {
                            self.producer.dropped_newest.fetch_add(1, Ordering::Relaxed);
                            self.note(Kind::Dropped, reason::NEWEST, Some(&ev), 1);
                            (Offer::DroppedNewest, None)
                        }
                        Overflow::Error => {
                            self.producer.dropped_full.fetch_add(1, Ordering::Relaxed);
                            self.note(Kind::Dropped, reason::FULL, Some(&ev), 1);
                            (Offer::Full, None)
                        }
                        _ => {
                            if self.producer.full_since_us.load(Ordering::Relaxed) == 0 {
                                self.producer.full_since_us.store(unix_now_us(), Ordering::Relaxed);
                            }
                            (Offer::WouldBlock, Some(ev))
                        }
                    };
                }
            },
        };
        if self.pushed() {
            return (Offer::Closed, None);
        }
        (outcome, None)
    }

    /// Called after a successful push: counts it, then drains if `close()` raced it (returns
    /// `true`) or wakes an armed consumer. One SeqCst fence serves both protocols (an mfence
    /// is a noticeable share of a publish):
    /// - a push that raced `close()` can land after `close()` drained the ring; it would then
    ///   sit in a dead queue forever, counted as depth instead of `dropped_closed`. `close()`
    ///   sets the flag before draining and we push before checking it (both sides SeqCst), so
    ///   either `close()` sees our event or we see the flag and drain;
    /// - `arm()` stores its flag (SeqCst) before looking at the ring, so either the consumer
    ///   sees our event or we see it armed and wake it.
    fn pushed(&self) -> bool {
        self.producer.published.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            self.drain_closed();
            return true;
        }
        self.wake_if_armed();
        false
    }

    /// Drops what is left in the ring of a closed queue, counted as `dropped_closed`.
    fn drain_closed(&self) {
        let mut n = 0;
        while let Some(ev) = self.ring.pop() {
            n += 1;
            self.note(Kind::Dropped, reason::CLOSED, Some(&ev), 1);
        }
        if n > 0 {
            self.consumer.dropped_closed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts an event that a non-waiting publisher could not place under `block`.
    pub fn count_would_block(&self) {
        self.producer.dropped_full.fetch_add(1, Ordering::Relaxed);
        self.note(Kind::Dropped, reason::FULL, None, 1);
    }

    /// Like `count_would_block`, naming the event for observers.
    pub fn count_would_block_event(&self, ev: &Arc<Event>) {
        self.producer.dropped_full.fetch_add(1, Ordering::Relaxed);
        self.note(Kind::Dropped, reason::FULL, Some(ev), 1);
    }

    /// Counts an event whose publisher gave up waiting for space (Context ended, or the pending
    /// publish was abandoned).
    pub fn count_canceled(&self) {
        self.producer.dropped_canceled.fetch_add(1, Ordering::Relaxed);
        self.note(Kind::Dropped, reason::CANCELED, None, 1);
    }

    /// Counts an event offered to a queue that closed in the meantime.
    pub fn count_closed(&self) {
        self.consumer.dropped_closed.fetch_add(1, Ordering::Relaxed);
        self.note(Kind::Dropped, reason::CLOSED, None, 1);
    }

    /// Counts events dropped at close that were never in the ring (a spill backlog).
    pub fn count_closed_n(&self, n: u64) {
        if n > 0 {
            self.producer.published.fetch_add(n, Ordering::Relaxed);
            self.consumer.dropped_closed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Events `close()` counted as dropped that are in fact kept elsewhere (the journal of a
    /// durable subscription): they leave the books as if never queued.
    pub fn uncount_closed(&self, n: u64) {
        if n > 0 {
            self.consumer.dropped_closed.fetch_sub(n, Ordering::Relaxed);
            self.producer.published.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Waits for space (the `block` policy), bounded by `ctx`. Spins briefly, then parks; a
    /// consumer's `take` or the Context's cancellation unparks it.
    pub fn push_blocking(&self, mut ev: Arc<Event>, ctx: Option<&Context>) -> Result<()> {
        let me = thread::current();
        let _cancel_reg = ctx.map(|c| {
            let t = me.clone();
            c.on_cancel(Arc::new(move || t.unpark()))
        });
        let mut spins = 0u32;
        loop {
            if self.is_closed() {
                self.consumer.dropped_closed.fetch_add(1, Ordering::Relaxed);
                self.note(Kind::Dropped, reason::CLOSED, Some(&ev), 1);
                self.producer.published.fetch_add(1, Ordering::Relaxed);
                return Err(Error::closed("subscription"));
            }
            match self.ring.push(ev) {
                Ok(()) => {
                    if self.pushed() {
                        return Err(Error::closed("subscription"));
                    }
                    return Ok(());
                }
                Err(back) => ev = back,
            }
            if let Some(c) = ctx {
                if let Some(e) = c.error() {
                    self.producer.dropped_canceled.fetch_add(1, Ordering::Relaxed);
                    self.note(Kind::Dropped, reason::CANCELED, Some(&ev), 1);
                    return Err(e);
                }
            }
            if spins < 64 {
                spins += 1;
                if spins < 48 {
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
                continue;
            }
            self.blocked.fetch_add(1, Ordering::SeqCst);
            self.parked.lock().unwrap().push(me.clone());
            // Re-check after registering: a take() between our push attempt and registration
            // would otherwise be a lost wake-up.
            if self.ring.is_full() && !self.is_closed() {
                let nap = ctx
                    .and_then(|c| c.deadline())
                    .map(|d| d.remaining().min(Duration::from_millis(100)))
                    .unwrap_or(Duration::from_millis(100));
                thread::park_timeout(nap);
            }
            self.parked.lock().unwrap().retain(|t| t.id() != me.id());
            self.blocked.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn wake_blocked(&self) {
        fence(Ordering::SeqCst);
        if self.blocked.load(Ordering::Relaxed) > 0 {
            for t in self.parked.lock().unwrap().iter() {
                t.unpark();
            }
        }
        if self.space_waiting.load(Ordering::Relaxed) > 0 {
            self.call_space_waiters();
        }
    }

    fn call_space_waiters(&self) {
        let waiters = {
            let mut w = self.space_waiters.lock().unwrap();
            self.space_waiting.store(0, Ordering::SeqCst);
            std::mem::take(&mut *w)
        };
        for f in waiters {
            f();
        }
    }

    /// Calls `f` once when this queue has room again (a consumer took events) or closes. If it
    /// has room already, `f` runs at once — the registration and the re-check are ordered like
    /// `arm()`, so no wake-up is lost.
    pub fn on_space(&self, f: SpaceWaiter) {
        {
            let mut w = self.space_waiters.lock().unwrap();
            w.push(f);
            self.space_waiting.store(w.len(), Ordering::SeqCst);
        }
        if !self.ring.is_full() || self.is_closed() {
            self.call_space_waiters();
        }
    }

    /// One non-blocking attempt for a publisher waiting under `block`: `Ok(true)` once placed,
    /// `Ok(false)` while full, `ERR_CLOSED` if the queue closed (the event is counted there).
    pub fn try_place(&self, ev: &Arc<Event>) -> Result<bool> {
        if self.is_closed() {
            self.producer.published.fetch_add(1, Ordering::Relaxed);
            self.consumer.dropped_closed.fetch_add(1, Ordering::Relaxed);
            self.note(Kind::Dropped, reason::CLOSED, Some(ev), 1);
            return Err(Error::closed("subscription"));
        }
        match self.ring.push(ev.clone()) {
            Ok(()) => {
                if self.pushed() {
                    return Err(Error::closed("subscription"));
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Moves up to `max` live events into `out`. Events whose Context ended or whose deadline
    /// passed are counted as expired and skipped. Returns how many were delivered.
    pub fn take(&self, max: usize, out: &mut Vec<Arc<Event>>) -> usize {
        self.take_inner(max, out, None)
    }

    /// `take`, also handing back the expired events it skipped (a durable subscription must
    /// release them in its journal).
    pub fn take_keeping_expired(&self, max: usize, out: &mut Vec<Arc<Event>>, gone: &mut Vec<Arc<Event>>) -> usize {
        self.take_inner(max, out, Some(gone))
    }

    /// Counts an event that expired before it was queued (read back from a journal after its
    /// deadline): published and expired at once, so the books still balance.
    pub fn count_expired_unqueued(&self, ev: &Arc<Event>) {
        self.producer.published.fetch_add(1, Ordering::Relaxed);
        self.consumer.expired.fetch_add(1, Ordering::Relaxed);
        self.note(Kind::Expired, "", Some(ev), 1);
    }

    fn take_inner(&self, max: usize, out: &mut Vec<Arc<Event>>, mut gone: Option<&mut Vec<Arc<Event>>>) -> usize {
        let mut delivered = 0;
        let mut expired = 0;
        while delivered < max {
            let Some(ev) = self.ring.pop() else { break };
            if ev.expired() {
                expired += 1;
                self.note(Kind::Expired, "", Some(&ev), 1);
                if let Some(g) = gone.as_deref_mut() {
                    g.push(ev);
                }
                continue;
            }
            self.note(Kind::Delivered, "", Some(&ev), 1);
            out.push(ev);
            delivered += 1;
        }
        if expired > 0 {
            self.consumer.expired.fetch_add(expired, Ordering::Relaxed);
        }
        if delivered > 0 || expired > 0 {
            self.consumer.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
            self.wake_blocked();
        }
        delivered
    }

    /// A consumer took `n` events but will never hand them to a handler (it closed mid-batch):
    /// they move from `delivered` to `dropped_closed`, so the books still balance.
    pub fn return_undelivered(&self, n: u64) {
        self.consumer.delivered.fetch_sub(n, Ordering::Relaxed);
        self.consumer.dropped_closed.fetch_add(n, Ordering::Relaxed);
        self.note(Kind::Dropped, reason::RETURNED, None, n);
    }

    /// A consumer took an event whose Context ended before it could start it: it moves from
    /// `delivered` to `expired`.
    pub fn return_expired(&self, n: u64) {
        self.consumer.delivered.fetch_sub(n, Ordering::Relaxed);
        self.consumer.expired.fetch_add(n, Ordering::Relaxed);
        self.note(Kind::Expired, reason::RETURNED, None, n);
    }

    pub fn count_failed(&self, n: u64) {
        self.consumer.failed.fetch_add(n, Ordering::Relaxed);
    }

    /// Closes the queue: later offers are refused, blocked publishers get `ERR_CLOSED`, and what
    /// is still queued is counted as `dropped_closed`.
    pub fn close(&self) -> u64 {
        // SeqCst: pairs with the fence in pushed() (see there).
        if self.closed.swap(true, Ordering::SeqCst) {
            return 0;
        }
        let mut n = 0;
        while let Some(ev) = self.ring.pop() {
            n += 1;
            self.note(Kind::Dropped, reason::CLOSED, Some(&ev), 1);
        }
        self.consumer.dropped_closed.fetch_add(n, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        for t in self.parked.lock().unwrap().iter() {
            t.unpark();
        }
        self.call_space_waiters();
        // Wake the consumer so it notices the close.
        self.armed.store(false, Ordering::SeqCst);
        if let Some(w) = self.waker.get() {
            w();
        }
        n
    }

    pub fn stats(&self) -> QueueStats {
        let p = &self.producer;
        let c = &self.consumer;
        let blocked = (self.blocked.load(Ordering::Relaxed) + self.space_waiting.load(Ordering::Relaxed)) as u64;
        let since = p.full_since_us.load(Ordering::Relaxed);
        let blocked_for_ms = if blocked > 0 && since != 0 { unix_now_us().saturating_sub(since) / 1000 } else { 0 };
        QueueStats {
            capacity: self.capacity() as u64,
            depth: self.len() as u64,
            published: p.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_newest: p.dropped_newest.load(Ordering::Relaxed),
            dropped_oldest: p.dropped_oldest.load(Ordering::Relaxed),
            dropped_full: p.dropped_full.load(Ordering::Relaxed),
            dropped_canceled: p.dropped_canceled.load(Ordering::Relaxed),
            dropped_closed: c.dropped_closed.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            // Threads parked in push_blocking plus asynchronous (JS) publishers waiting for space.
            blocked_publishers: blocked,
            blocked_for_ms,
        }
    }
}
