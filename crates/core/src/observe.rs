//! The lifecycle recorder: what observers see of the engine.
//!
//! Every place in the engine where an event changes state (published, dropped, expired,
//! delivered, a handler started or ended, retried, dead-lettered, a sandbox trap or limit, a
//! rollout step) asks the bus's [`Recorder`] whether anyone watches that kind — one relaxed
//! atomic load — and, only if so, counts it and may push a [`Record`] onto a bounded lock-free
//! ring. The JS side drains the ring in batches (one N-API call carries many records); nothing
//! calls into JS per event. A full ring drops the record and counts it per kind in `lost`, so a
//! loss is observable, never silent.
//!
//! Three masks say what to do per kind (see `docs/observers.md`):
//! - `counted`: only the per-kind counter moves;
//! - `every`: a record for every occurrence (metrics observers);
//! - `sampled`: a record only for sampled events (tracing). An event is sampled when its
//!   W3C `traceparent` has the sampled flag, or, without one, when its sequence number (or
//!   id hash) falls on `1 / sample_every` — so all records of one event are kept or skipped
//!   together, and a trace is never half-recorded.

use crate::codec::render_id;
use crate::event::{Event, EventId};
use crate::json::write_string;
use crate::subscription::Origin;
use crossbeam_queue::ArrayQueue;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lifecycle kinds. The discriminant is the bit index in the masks and the number the JS
/// side receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Published = 0,
    Dropped = 1,
    Expired = 2,
    Delivered = 3,
    HandlerStart = 4,
    HandlerEnd = 5,
    Retried = 6,
    DeadLettered = 7,
    SandboxTrap = 8,
    SandboxLimit = 9,
    RolloutStep = 10,
}

pub const KINDS: usize = 11;

impl Kind {
    pub const ALL: [Kind; KINDS] = [
        Kind::Published,
        Kind::Dropped,
        Kind::Expired,
        Kind::Delivered,
        Kind::HandlerStart,
        Kind::HandlerEnd,
        Kind::Retried,
        Kind::DeadLettered,
        Kind::SandboxTrap,
        Kind::SandboxLimit,
        Kind::RolloutStep,
    ];

    /// The name observers use (`published`, `handlerEnd`, …).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Published => "published",
            Kind::Dropped => "dropped",
            Kind::Expired => "expired",
            Kind::Delivered => "delivered",
            Kind::HandlerStart => "handlerStart",
            Kind::HandlerEnd => "handlerEnd",
            Kind::Retried => "retried",
            Kind::DeadLettered => "deadLettered",
            Kind::SandboxTrap => "sandboxTrap",
            Kind::SandboxLimit => "sandboxLimit",
            Kind::RolloutStep => "rolloutStep",
        }
    }

    pub fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Every kind's bit.
    pub const MASK_ALL: u32 = (1 << KINDS) - 1;
}

/// Drop reasons recorded by the queues (the `reason` of a `Dropped` record).
pub mod reason {
    /// `drop-newest`: the new event was dropped.
    pub const NEWEST: &str = "drop-newest";
    /// `drop-oldest`: this (older) event made room for a new one.
    pub const OLDEST: &str = "drop-oldest";
    /// Refused because full (`error` policy, or a non-waiting publish under `block`).
    pub const FULL: &str = "full";
    /// A blocked publisher's Context ended, or its wait was abandoned.
    pub const CANCELED: &str = "canceled";
    /// Still queued, or offered, when the subscription closed.
    pub const CLOSED: &str = "closed";
    /// Taken by a consumer that closed before handing it to a handler. Such an event was
    /// recorded as `delivered` first: `stats.delivered = Σ delivered − Σ dropped(returned)`.
    pub const RETURNED: &str = "returned";
    /// On a `published` record: no subscription matched.
    pub const UNROUTED: &str = "unrouted";
}

/// One lifecycle record. Build with [`Record::new`] and the setters; unset fields stay empty.
#[derive(Clone, Debug)]
pub struct Record {
    pub kind: Kind,
    /// Unix time in microseconds.
    pub at_us: u64,
    /// Subscription id, 0 for none.
    pub sub: u64,
    /// The event concerned (id, topic and traceparent are read from it when drained).
    pub event: Option<Arc<Event>>,
    /// How many occurrences this record stands for (bulk drops); at least 1.
    pub count: u32,
    /// Drop reason, handler outcome or error code, rollout step.
    pub reason: &'static str,
    /// Handler duration, time blocked, …; 0 when not applicable.
    pub duration_us: u64,
    /// Deployment name (or another owner name).
    pub name: Option<Arc<str>>,
    /// Free text: a deployment version, a rollout's details as JSON, an error message.
    pub detail: Option<Box<str>>,
}

pub fn unix_now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Record {
    pub fn new(kind: Kind) -> Record {
        Record {
            kind,
            at_us: unix_now_us(),
            sub: 0,
            event: None,
            count: 1,
            reason: "",
            duration_us: 0,
            name: None,
            detail: None,
        }
    }
    pub fn sub(mut self, id: u64) -> Self {
        self.sub = id;
        self
    }
    pub fn event(mut self, ev: &Arc<Event>) -> Self {
        self.event = Some(ev.clone());
        self
    }
    pub fn count(mut self, n: u64) -> Self {
        self.count = n.min(u32::MAX as u64) as u32;
        self
    }
    pub fn reason(mut self, r: &'static str) -> Self {
        self.reason = r;
        self
    }
    pub fn duration_us(mut self, us: u64) -> Self {
        self.duration_us = us;
        self
    }
    pub fn name(mut self, n: &Arc<str>) -> Self {
        self.name = Some(n.clone());
        self
    }
    pub fn detail(mut self, d: impl Into<Box<str>>) -> Self {
        self.detail = Some(d.into());
        self
    }
    /// Sets the time explicitly (a record made after the fact).
    pub fn at_us(mut self, at: u64) -> Self {
        self.at_us = at;
        self
    }
}

/// What to record, per kind. Set by the binding from the union of the registered observers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub counted: u32,
    pub every: u32,
    pub sampled: u32,
    /// 1 in `sample_every` events without a traceparent is sampled (1 = all).
    pub sample_every: u64,
}

pub const DEFAULT_RING: usize = 1 << 16;

type Waker = Box<dyn Fn() + Send + Sync>;

pub struct Recorder {
    /// `counted | every | sampled`: the one load every call site pays.
    active: AtomicU32,
    every: AtomicU32,
    sampled: AtomicU32,
    sample_every: AtomicU64,
    counts: [AtomicU64; KINDS],
    lost: [AtomicU64; KINDS],
    ring: ArrayQueue<Record>,
    /// The drainer's wake-up: called once per `arm()` when the ring passes a quarter full.
    waker: OnceLock<Waker>,
    armed: AtomicBool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new(DEFAULT_RING)
    }
}

impl Recorder {
    pub fn new(ring: usize) -> Recorder {
        Recorder {
            active: AtomicU32::new(0),
            every: AtomicU32::new(0),
            sampled: AtomicU32::new(0),
            sample_every: AtomicU64::new(1),
            counts: Default::default(),
            lost: Default::default(),
            ring: ArrayQueue::new(ring.max(16)),
            waker: OnceLock::new(),
            armed: AtomicBool::new(false),
        }
    }

    /// Whether anyone watches `kind`. This is the whole cost of an unobserved call site.
    #[inline(always)]
    pub fn on(&self, kind: Kind) -> bool {
        self.active.load(Ordering::Relaxed) & kind.bit() != 0
    }

    /// Sets what is counted and recorded. An all-zero interest switches the recorder off.
    pub fn set_interest(&self, i: Interest) {
        self.every.store(i.every & Kind::MASK_ALL, Ordering::Relaxed);
        self.sampled.store(i.sampled & Kind::MASK_ALL, Ordering::Relaxed);
        self.sample_every.store(i.sample_every.max(1), Ordering::Relaxed);
        self.active.store((i.counted | i.every | i.sampled) & Kind::MASK_ALL, Ordering::Release);
    }

    pub fn interest(&self) -> Interest {
        let every = self.every.load(Ordering::Relaxed);
        let sampled = self.sampled.load(Ordering::Relaxed);
        Interest {
            counted: self.active.load(Ordering::Relaxed) & !(every | sampled),
            every,
            sampled,
            sample_every: self.sample_every.load(Ordering::Relaxed),
        }
    }

    /// Counts the record and keeps it if its kind is recorded (for sampled kinds, if its event
    /// is sampled). Call only after `on(kind)`; a record of an unwatched kind is ignored.
    pub fn record(&self, rec: Record) {
        let bit = rec.kind.bit();
        if self.active.load(Ordering::Relaxed) & bit == 0 {
            return;
        }
        let k = rec.kind as usize;
        self.counts[k].fetch_add(rec.count as u64, Ordering::Relaxed);
        let keep = self.every.load(Ordering::Relaxed) & bit != 0
            || (self.sampled.load(Ordering::Relaxed) & bit != 0 && self.is_sampled(rec.event.as_deref()));
        if !keep {
            return;
        }
        self.push(rec);
    }

    fn push(&self, rec: Record) {
        let k = rec.kind as usize;
        let n = rec.count as u64;
        if self.ring.push(rec).is_err() {
            self.lost[k].fetch_add(n, Ordering::Relaxed);
        }
        if self.armed.load(Ordering::Relaxed)
            && self.ring.len() >= self.ring.capacity() / 4
            && self.armed.swap(false, Ordering::AcqRel)
        {
            if let Some(w) = self.waker.get() {
                w();
            }
        }
    }

    /// Counts one `kind` and, if it is recorded, builds its record with `make`. Nothing is built
    /// (no clock read) for a kind that is only counted.
    #[inline(always)]
    pub fn note(&self, kind: Kind, make: impl FnOnce(Record) -> Record) {
        if self.on(kind) {
            self.note_slow(kind, None, 1, make);
        }
    }

    /// `note` for `n` occurrences concerning `ev`: the sampling decision is taken from `ev`
    /// before anything is built, so an unsampled event costs a counter add only.
    #[inline(always)]
    pub fn note_for(&self, kind: Kind, ev: Option<&Arc<Event>>, n: u64, make: impl FnOnce(Record) -> Record) {
        if self.on(kind) {
            self.note_slow(kind, ev, n, make);
        }
    }

    /// Whether a `kind` occurrence concerning `ev` would be recorded (not just counted): lets a
    /// call site skip work such as reading a clock when nobody will see the record.
    pub fn keeps(&self, kind: Kind, ev: Option<&Arc<Event>>) -> bool {
        let bit = kind.bit();
        self.on(kind)
            && (self.every.load(Ordering::Relaxed) & bit != 0
                || (self.sampled.load(Ordering::Relaxed) & bit != 0 && (ev.is_none() || self.is_sampled(ev.map(|e| &**e)))))
    }

    #[inline(never)]
    fn note_slow(&self, kind: Kind, ev: Option<&Arc<Event>>, n: u64, make: impl FnOnce(Record) -> Record) {
        let bit = kind.bit();
        self.counts[kind as usize].fetch_add(n, Ordering::Relaxed);
        let keep = self.every.load(Ordering::Relaxed) & bit != 0
            || (self.sampled.load(Ordering::Relaxed) & bit != 0 && (ev.is_none() || self.is_sampled(ev.map(|e| &**e))));
        if keep {
            let mut r = make(Record::new(kind)).count(n);
            if r.event.is_none() {
                r.event = ev.cloned();
            }
            self.push(r);
        }
    }

    /// Whether an event's records are kept under sampling: the traceparent's sampled flag when
    /// it has one (parent-based), else 1 in `sample_every` by sequence or id hash.
    pub fn is_sampled(&self, ev: Option<&Event>) -> bool {
        let every = self.sample_every.load(Ordering::Relaxed);
        let Some(ev) = ev else { return true };
        if let Some(flag) = ev.traceparent.as_deref().and_then(traceparent_sampled) {
            return flag;
        }
        if every <= 1 {
            return true;
        }
        let n = match &ev.id {
            EventId::Seq(n) => *n,
            EventId::Given(s) => BuildHasherDefault::<DefaultHasher>::default().hash_one(s),
        };
        n % every == 0
    }

    /// Installs the drainer's wake-up (once). It runs on whichever thread records, so it must
    /// be cheap and must not block.
    pub fn set_waker(&self, w: Waker) -> bool {
        self.waker.set(w).is_ok()
    }

    /// The drainer is going idle: wake it when the ring passes a quarter full.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Moves up to `max` records into `out`, oldest first.
    pub fn drain(&self, max: usize, out: &mut Vec<Record>) -> usize {
        let mut n = 0;
        while n < max {
            let Some(r) = self.ring.pop() else { break };
            out.push(r);
            n += 1;
        }
        n
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Occurrences counted per kind (index = `Kind as usize`) while the kind was watched.
    pub fn counts(&self) -> [u64; KINDS] {
        std::array::from_fn(|k| self.counts[k].load(Ordering::Relaxed))
    }

    /// Occurrences whose record did not fit in the ring, per kind.
    pub fn lost(&self) -> [u64; KINDS] {
        std::array::from_fn(|k| self.lost[k].load(Ordering::Relaxed))
    }
}

/// The sampled flag of a W3C traceparent (`00-<trace>-<span>-<flags>`), if it parses.
pub fn traceparent_sampled(tp: &str) -> Option<bool> {
    let b = tp.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let flags = u8::from_str_radix(tp.get(53..55)?, 16).ok()?;
    Some(flags & 1 == 1)
}

/// Encodes a drained batch for JS as one JSON text:
/// `{"counts":[…KINDS],"lost":[…KINDS],"records":[[kind,atUs,sub,id,type,traceparent,count,
/// reason,durationUs,name,detail,eventTimeMs],…]}` — arrays, not objects, to keep the text and the
/// parse small. `eventTimeMs` is the event's publish time (0 without an event): with `atUs` it
/// gives the time an event waited in its queue.
pub fn encode_records(origin: &Origin, counts: &[u64; KINDS], lost: &[u64; KINDS], records: &[Record], out: &mut Vec<u8>) {
    let list = |out: &mut Vec<u8>, xs: &[u64; KINDS]| {
        out.push(b'[');
        for (i, x) in xs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{x}");
        }
        out.push(b']');
    };
    let opt = |out: &mut Vec<u8>, s: Option<&str>| match s {
        Some(s) => write_string(out, s),
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"counts\":");
    list(out, counts);
    out.extend_from_slice(b",\"lost\":");
    list(out, lost);
    out.extend_from_slice(b",\"records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "[{},{},{},", r.kind as u8, r.at_us, r.sub);
        match &r.event {
            Some(ev) => {
                render_id(origin, &ev.id, out);
                out.push(b',');
                write_string(out, &ev.topic);
                out.push(b',');
                opt(out, ev.traceparent.as_deref());
            }
            None => out.extend_from_slice(b"null,null,null"),
        }
        let _ = write!(out, ",{},", r.count);
        opt(out, (!r.reason.is_empty()).then_some(r.reason));
        let _ = write!(out, ",{},", r.duration_us);
        opt(out, r.name.as_deref());
        out.push(b',');
        opt(out, r.detail.as_deref());
        let _ = write!(out, ",{}]", r.event.as_ref().map_or(0, |e| e.time_ms));
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Encoding;

    fn ev(seq: u64, tp: Option<&str>) -> Arc<Event> {
        Arc::new(Event {
            id: EventId::Seq(seq),
            topic: "a.b".into(),
            topic_id: None,
            time_ms: 1,
            subject: None,
            traceparent: tp.map(Into::into),
            deadline: None,
            ctx: None,
            encoding: Encoding::Json,
            data: Box::new([]),
            journal_seq: Default::default(),
        })
    }

    #[test]
    fn off_by_default_and_ignores_unwatched_kinds() {
        let r = Recorder::new(16);
        assert!(!r.on(Kind::Published));
        r.record(Record::new(Kind::Published));
        assert_eq!(r.counts()[0], 0);
        assert!(r.is_empty());
    }

    #[test]
    fn counted_kinds_do_not_fill_the_ring() {
        let r = Recorder::new(16);
        r.set_interest(Interest { counted: Kind::Published.bit(), ..Default::default() });
        for _ in 0..100 {
            r.note(Kind::Published, |x| x);
        }
        assert_eq!(r.counts()[Kind::Published as usize], 100);
        assert!(r.is_empty());
    }

    #[test]
    fn overflow_is_counted_as_lost() {
        let r = Recorder::new(16);
        r.set_interest(Interest { every: Kind::Dropped.bit(), ..Default::default() });
        for _ in 0..20 {
            r.note_for(Kind::Dropped, None, 2, |x| x.reason(reason::NEWEST));
        }
        assert_eq!(r.counts()[Kind::Dropped as usize], 40);
        assert_eq!(r.lost()[Kind::Dropped as usize], 8);
        let mut out = Vec::new();
        assert_eq!(r.drain(100, &mut out), 16);
    }

    #[test]
    fn sampling_follows_traceparent_then_sequence() {
        let r = Recorder::new(64);
        r.set_interest(Interest { sampled: Kind::Delivered.bit(), sample_every: 4, ..Default::default() });
        let on = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let off = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert!(r.is_sampled(Some(&ev(1, Some(on)))));
        assert!(!r.is_sampled(Some(&ev(4, Some(off)))));
        let kept = (1..=40).filter(|&s| r.is_sampled(Some(&ev(s, None)))).count();
        assert_eq!(kept, 10);
    }

    #[test]
    fn waker_fires_once_per_arm_past_a_quarter() {
        use std::sync::atomic::AtomicUsize;
        let r = Recorder::new(16);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        r.set_waker(Box::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        r.set_interest(Interest { every: Kind::MASK_ALL, ..Default::default() });
        r.arm();
        for _ in 0..10 {
            r.note(Kind::Published, |x| x);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn encodes_valid_json() {
        let r = Recorder::new(16);
        r.set_interest(Interest { every: Kind::MASK_ALL, ..Default::default() });
        let name: Arc<str> = "fraud".into();
        r.note(Kind::HandlerEnd, |x| x.sub(3).event(&ev(7, Some("t\"p"))).reason("ack").duration_us(12).name(&name));
        r.note(Kind::RolloutStep, |x| x.reason("promote").detail("{\"percent\":5}"));
        let mut recs = Vec::new();
        r.drain(10, &mut recs);
        let mut out = Vec::new();
        let origin = Origin { id_prefix: "p".into(), source: "s".into() };
        encode_records(&origin, &r.counts(), &r.lost(), &recs, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["counts"][Kind::HandlerEnd as usize], 1);
        let rec = &v["records"][0];
        assert_eq!(rec[0], Kind::HandlerEnd as u8);
        assert_eq!(rec[2], 3);
        assert_eq!(rec[3], "p-7");
        assert_eq!(rec[4], "a.b");
        assert_eq!(rec[5], "t\"p");
        assert_eq!(rec[7], "ack");
        assert_eq!(rec[8], 12);
        assert_eq!(rec[9], "fraud");
        assert_eq!(v["records"][1][3], serde_json::Value::Null);
        assert_eq!(v["records"][1][10], "{\"percent\":5}");
        assert_eq!(rec[11], 1);
        assert_eq!(v["records"][1][11], 0);
    }
}
