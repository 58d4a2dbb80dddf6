//! One subscription's delivery state: events taken from its queue and not yet settled, keyed by
//! delivery tag; retries that came due; events held behind their key; the dedupe window; and the
//! settle counters.
//!
//! Counting (per subscription, tracked or not):
//! `delivered = acked + deadLettered + discarded + duplicatesSuppressed + inFlight`, where
//! `delivered` counts each event once however many times it is retried, and `inFlight` counts
//! events taken from the queue and not settled yet (running, waiting for a retry, or held
//! behind an earlier event of the same key).

use super::options::{DeliveryOptions, Guarantee, KeyOrdering, KeyPath};
use crate::event::{Event, EventId};
use crate::json;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// An event handed to a consumer. `tag` names it when settling (0: the subscription settles by
/// counting only, see `Subscription::take_deliveries`); `attempt` is 1 on first delivery.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub tag: u64,
    pub attempt: u32,
    pub event: Arc<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// With the consumer.
    Running,
    /// Waiting in the bus's retry timer.
    Scheduled,
    /// Due again (a retry whose time came, or an event released by its key): next to deliver.
    Ready,
    /// Behind an earlier event of the same key.
    Held,
}

struct Entry {
    event: Arc<Event>,
    attempt: u32,
    key: Option<Box<[u8]>>,
    stage: Stage,
}

/// What a settle decided, for the caller to carry out without the state lock.
pub(crate) enum Decision {
    /// Tag unknown: settled already, or abandoned when the subscription closed.
    Unknown,
    Acked(Arc<Event>),
    Retry { event: Arc<Event>, attempt: u32 },
    GiveUp { event: Arc<Event>, attempts: u32 },
}

#[derive(Default)]
pub(crate) struct Counters {
    pub acked: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub discarded: AtomicU64,
    pub duplicates: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStats {
    pub delivery_guarantee: Guarantee,
    pub acked: u64,
    /// Redeliveries scheduled (each retry of each event).
    pub retried: u64,
    pub dead_lettered: u64,
    /// Given up without a dead-letter topic, or the bus refused the envelope.
    pub discarded: u64,
    pub duplicates_suppressed: u64,
    /// Taken from the queue, not settled yet (running, waiting to retry, or held by key).
    pub in_flight: u64,
    /// Of `inFlight`: waiting for a retry (scheduled or due).
    pub retrying: u64,
    /// Of `inFlight`: held behind an earlier event of the same key.
    pub held: u64,
}

struct Dedupe {
    window: Option<std::time::Duration>,
    size: usize,
    seen: HashMap<EventId, Instant>,
    order: VecDeque<(EventId, Instant)>,
}

impl Dedupe {
    /// `true` if `id` was seen within the window; otherwise remembers it.
    fn seen_before(&mut self, id: &EventId, now: Instant) -> bool {
        if let Some(w) = self.window {
            while self.order.front().is_some_and(|(_, t)| now.duration_since(*t) >= w) {
                let (old, t) = self.order.pop_front().expect("peeked");
                if self.seen.get(&old) == Some(&t) {
                    self.seen.remove(&old);
                }
            }
        }
        if self.seen.contains_key(id) {
            return true;
        }
        if self.seen.len() >= self.size {
            while let Some((old, t)) = self.order.pop_front() {
                if self.seen.get(&old) == Some(&t) {
                    self.seen.remove(&old);
                    break;
                }
            }
        }
        self.seen.insert(id.clone(), now);
        self.order.push_back((id.clone(), now));
        false
    }

    /// A dead-lettered event is forgotten, so replaying it is not taken for a duplicate.
    fn forget(&mut self, id: &EventId) {
        self.seen.remove(id);
    }
}

/// Hashes a delivery tag with one multiply (Fibonacci hashing). Tags are consecutive numbers
/// this process hands out, not input an attacker chooses, so SipHash's flood resistance buys
/// nothing here and costs more than the rest of a settle.
#[derive(Default, Clone, Copy)]
struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type TagMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<TagHasher>>;

#[derive(Default)]
struct Inner {
    next_tag: u64,
    entries: TagMap<Entry>,
    ready: VecDeque<u64>,
    /// Keys with an event in flight → tags waiting behind it, in arrival order.
    keys: HashMap<Box<[u8]>, VecDeque<u64>>,
    held: usize,
    retrying: usize,
    dedupe: Option<Dedupe>,
    closed: bool,
}

pub(crate) struct DeliveryState {
    pub opts: DeliveryOptions,
    tracked: bool,
    inner: std::sync::Mutex<Inner>,
    /// Mirrors `inner.ready.len()` so `arm()` can check it lock-free (SeqCst, see `arm`).
    ready_len: AtomicUsize,
    pub counters: Counters,
}

impl DeliveryState {
    pub fn new(opts: DeliveryOptions) -> Self {
        let dedupe = opts.dedupe.as_ref().map(|d| Dedupe {
            window: d.window,
            size: d.size,
            seen: HashMap::new(),
            order: VecDeque::new(),
        });
        DeliveryState {
            tracked: opts.tracked(),
            opts,
            inner: std::sync::Mutex::new(Inner { next_tag: 1, dedupe, ..Default::default() }),
            ready_len: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }

    pub fn tracked(&self) -> bool {
        self.tracked
    }

    /// Whether events of one key are handed out one at a time (`ordering: 'per-key'`).
    pub fn per_key(&self) -> bool {
        matches!(self.opts.ordering, KeyOrdering::PerKey { .. })
    }

    pub fn has_ready(&self) -> bool {
        self.ready_len.load(Ordering::SeqCst) > 0
    }

    fn sync_ready(&self, inner: &Inner) {
        self.ready_len.store(inner.ready.len(), Ordering::SeqCst);
    }

    /// Room for more events from the queue: a tracked subscription holds at most `limit` events
    /// outside its queue, so a failing handler cannot pile up retries without bound — its queue
    /// fills instead and the overflow policy applies.
    pub fn room(&self, limit: usize) -> usize {
        let inner = self.inner.lock().unwrap();
        limit.saturating_sub(inner.entries.len())
    }

    /// Hands out due events (retries and released keys) first, up to `max`.
    pub fn take_ready(&self, max: usize, out: &mut Vec<Delivered>, expired: &mut Vec<Arc<Event>>) {
        let mut inner = self.inner.lock().unwrap();
        while out.len() < max {
            let Some(tag) = inner.ready.pop_front() else { break };
            let Some(e) = inner.entries.get_mut(&tag) else { continue };
            if e.event.expired() {
                let e = inner.entries.remove(&tag).expect("present");
                if e.attempt > 1 {
                    inner.retrying -= 1;
                }
                release_key(&mut inner, e.key.as_deref());
                expired.push(e.event);
                continue;
            }
            e.stage = Stage::Running;
            let d = Delivered { tag, attempt: e.attempt, event: e.event.clone() };
            if e.attempt > 1 {
                inner.retrying -= 1;
            }
            out.push(d);
        }
        self.sync_ready(&inner);
    }

    /// Admits events just taken from the queue: drops duplicates, holds events whose key is busy,
    /// and tags the rest into `out`. `failed_before` is how many attempts of an event already
    /// failed in an earlier process (persisted by a journal; 0 for new events): its first
    /// delivery here is attempt `failed_before + 1`. Returns the duplicates (for the settle hook).
    pub fn admit(
        &self,
        events: Vec<Arc<Event>>,
        out: &mut Vec<Delivered>,
        failed_before: impl Fn(&Event) -> u32,
    ) -> Vec<Arc<Event>> {
        let mut dups = Vec::new();
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        for ev in events {
            if let Some(d) = inner.dedupe.as_mut() {
                if d.seen_before(&ev.id, now) {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    dups.push(ev);
                    continue;
                }
            }
            let tag = inner.next_tag;
            inner.next_tag += 1;
            let key = match &self.opts.ordering {
                KeyOrdering::None => None,
                KeyOrdering::PerKey { path } => key_of(&ev, path),
            };
            let mut stage = Stage::Running;
            if let Some(k) = &key {
                match inner.keys.get_mut(k) {
                    Some(waiting) => {
                        waiting.push_back(tag);
                        stage = Stage::Held;
                    }
                    None => {
                        inner.keys.insert(k.clone(), VecDeque::new());
                    }
                }
            }
            let attempt = failed_before(&ev).saturating_add(1);
            if stage == Stage::Held {
                inner.held += 1;
            } else {
                out.push(Delivered { tag, attempt, event: ev.clone() });
            }
            inner.entries.insert(tag, Entry { event: ev, attempt, key, stage });
        }
        dups
    }

    /// Decides what a handler's verdict means for `tag`. `retry` is whether the verdict asks for
    /// another attempt (Retry/Fail) rather than being final (Ack/Reject).
    pub fn decide(&self, tag: u64, ack: bool, retry: bool) -> Decision {
        let mut inner = self.inner.lock().unwrap();
        let closed = inner.closed;
        let Some(e) = inner.entries.get_mut(&tag) else { return Decision::Unknown };
        if e.stage != Stage::Running {
            // Settled twice (a consumer bug): the first verdict stands.
            return Decision::Unknown;
        }
        if ack {
            let e = inner.entries.remove(&tag).expect("present");
            self.finish(&mut inner, e.key.as_deref());
            return Decision::Acked(e.event);
        }
        let can_retry = retry
            && !closed
            && self.opts.guarantee == Guarantee::AtLeastOnce
            && e.attempt < self.opts.retry.max_attempts;
        if can_retry {
            e.attempt += 1;
            e.stage = Stage::Scheduled;
            let d = Decision::Retry { event: e.event.clone(), attempt: e.attempt };
            inner.retrying += 1;
            return d;
        }
        let e = inner.entries.remove(&tag).expect("present");
        self.finish(&mut inner, e.key.as_deref());
        if let Some(d) = inner.dedupe.as_mut() {
            d.forget(&e.event.id);
        }
        Decision::GiveUp { event: e.event, attempts: e.attempt }
    }

    /// `decide(tag, true, _)` for several tags under one lock: pushes the events acked (tags
    /// not running are ignored, as there) to `out`.
    pub fn ack_many(&self, tags: &[u64], out: &mut Vec<Arc<Event>>) {
        let mut inner = self.inner.lock().unwrap();
        for tag in tags {
            if inner.entries.get(tag).is_some_and(|e| e.stage == Stage::Running) {
                let e = inner.entries.remove(tag).expect("present");
                release_key(&mut inner, e.key.as_deref());
                out.push(e.event);
            }
        }
        self.sync_ready(&inner);
    }

    fn finish(&self, inner: &mut Inner, key: Option<&[u8]>) {
        release_key(inner, key);
        self.sync_ready(inner);
    }

    /// The consumer found the event's Context over before starting it: it leaves as expired.
    pub fn expire(&self, tag: u64) -> Option<Arc<Event>> {
        let mut inner = self.inner.lock().unwrap();
        if inner.entries.get(&tag).is_none_or(|e| e.stage != Stage::Running) {
            return None;
        }
        let e = inner.entries.remove(&tag).expect("present");
        self.finish(&mut inner, e.key.as_deref());
        Some(e.event)
    }

    /// The retry timer fired for `tag`: it is next in line. Returns whether it is still wanted.
    pub fn due(&self, tag: u64) -> bool {
        let mut inner = self.inner.lock().unwrap();
        match inner.entries.get_mut(&tag) {
            Some(e) if e.stage == Stage::Scheduled => {
                e.stage = Stage::Ready;
                inner.ready.push_back(tag);
                self.sync_ready(&inner);
                true
            }
            _ => false,
        }
    }

    /// The subscription closed: everything not with the consumer is abandoned at once; what the
    /// consumer holds is abandoned when it settles. Returns the abandoned events.
    pub fn close(&self) -> Vec<Arc<Event>> {
        let mut inner = self.inner.lock().unwrap();
        inner.closed = true;
        let tags: Vec<u64> = inner.entries.keys().copied().collect();
        let mut out = Vec::new();
        for tag in tags {
            // Running entries are abandoned too: a consumer that closed will not settle them,
            // and one that still does finds the tag gone (its verdict is ignored).
            if let Some(e) = inner.entries.remove(&tag) {
                out.push(e.event);
            }
        }
        inner.ready.clear();
        inner.keys.clear();
        inner.held = 0;
        inner.retrying = 0;
        self.sync_ready(&inner);
        out
    }

    pub fn stats(&self) -> DeliveryStats {
        let (in_flight, retrying, held) = {
            let i = self.inner.lock().unwrap();
            (i.entries.len() as u64, i.retrying as u64, i.held as u64)
        };
        let c = &self.counters;
        DeliveryStats {
            delivery_guarantee: self.opts.guarantee,
            acked: c.acked.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            discarded: c.discarded.load(Ordering::Relaxed),
            duplicates_suppressed: c.duplicates.load(Ordering::Relaxed),
            in_flight,
            retrying,
            held,
        }
    }
}

/// The key's current event is done: the next one waiting behind it becomes ready.
fn release_key(inner: &mut Inner, key: Option<&[u8]>) {
    let Some(k) = key else { return };
    let next = match inner.keys.get_mut(k) {
        Some(waiting) => waiting.pop_front(),
        None => return,
    };
    match next {
        Some(tag) => {
            inner.held -= 1;
            if let Some(e) = inner.entries.get_mut(&tag) {
                e.stage = Stage::Ready;
            }
            inner.ready.push_back(tag);
        }
        None => {
            inner.keys.remove(k);
        }
    }
}

/// The ordering key of an event; `None` (the event is not ordered) when the path is absent.
fn key_of(ev: &Event, path: &KeyPath) -> Option<Box<[u8]>> {
    match path {
        KeyPath::Subject => ev.subject.as_deref().map(|s| s.as_bytes().into()),
        KeyPath::Type => Some(ev.topic.as_bytes().into()),
        KeyPath::Id => Some(match &ev.id {
            EventId::Seq(n) => n.to_le_bytes().into(),
            EventId::Given(s) => s.as_bytes().into(),
        }),
        KeyPath::Data(p) => {
            if ev.encoding != crate::event::Encoding::Json {
                return None;
            }
            json::lookup(&ev.data, p).map(Into::into)
        }
    }
}
