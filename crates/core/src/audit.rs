//! The audit gate: holds the settle of handler runs that happen off the JS thread (WASM
//! workers) until an audit observer has durably written their record.
//!
//! Audit observers are strongly consistent (docs/observers.md): an event is not acknowledged
//! before its audit record is on disk. A JS handler's run is held on the JS side; a WASM run
//! ends on a worker thread, so its verdict waits here instead of going to `Subscription::settle`
//! at once. JS takes the held runs in batches (`take`), writes them, and `release`s them once
//! durable; only then is the verdict settled — acked, retried, dead-lettered, and for a durable
//! subscription released in the journal. A process that dies with runs still held delivers
//! them again (durable subscriptions), and never acknowledged anything it did not audit.
//!
//! While no audit observer is attached the gate is off and costs the worker one relaxed load.
//! It is bounded: a worker whose run finds it full waits for room (the deployment slows down, as
//! a JS subscription does with its slots taken), except while its deployment stops.

use crate::bus::Bus;
use crate::codec::render_id;
use crate::delivery::Outcome;
use crate::event::Event;
use crate::json::write_string;
use crate::observe::unix_now_us;
use crate::subscription::{Origin, Subscription};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Held runs at most, waiting or being written, per bus.
pub const DEFAULT_CAPACITY: usize = 4096;
/// A worker waiting for room looks at its stop flag this often.
const ROOM_POLL: Duration = Duration::from_millis(20);

/// One handler run whose verdict waits for its audit record.
pub struct Held {
    pub sub: Arc<Subscription>,
    pub tag: u64,
    pub verdict: Outcome,
    pub event: Arc<Event>,
    /// Unix µs when the handler finished.
    pub at_us: u64,
    pub duration_us: u64,
    /// The handler's owner (deployment name).
    pub name: Arc<str>,
    /// The module version that ran (its hash).
    pub module: Arc<str>,
    /// `ack`, `retry`, `reject` or an error code, as observers see it.
    pub outcome: &'static str,
}

impl Held {
    pub fn new(sub: &Arc<Subscription>, tag: u64, verdict: Outcome, event: &Arc<Event>) -> Held {
        Held {
            sub: sub.clone(),
            tag,
            verdict,
            event: event.clone(),
            at_us: unix_now_us(),
            duration_us: 0,
            name: "".into(),
            module: "".into(),
            outcome: "ack",
        }
    }
}

type Waker = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct State {
    next_ticket: u64,
    waiting: VecDeque<(u64, Held)>,
    /// Handed to JS, not yet durable.
    taken: HashMap<u64, Held>,
}

pub struct AuditGate {
    on: AtomicBool,
    state: Mutex<State>,
    room: Condvar,
    capacity: usize,
    waker: OnceLock<Waker>,
    armed: AtomicBool,
}

impl Default for AuditGate {
    fn default() -> Self {
        AuditGate::new(DEFAULT_CAPACITY)
    }
}

impl AuditGate {
    pub fn new(capacity: usize) -> AuditGate {
        AuditGate {
            on: AtomicBool::new(false),
            state: Mutex::new(State { next_ticket: 1, ..Default::default() }),
            room: Condvar::new(),
            capacity: capacity.max(1),
            waker: OnceLock::new(),
            armed: AtomicBool::new(false),
        }
    }

    /// Whether an audit observer is attached: the whole cost of the gate when none is.
    #[inline(always)]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Switches the gate. Switching it off settles the runs no audit observer took yet: nobody
    /// is left to audit them. Runs already taken are settled when their writer releases them.
    pub fn set_on(&self, bus: &Bus, on: bool) {
        let left: Vec<Held> = {
            let mut st = self.state.lock().unwrap();
            self.on.store(on, Ordering::Relaxed);
            if on {
                return;
            }
            st.waiting.drain(..).map(|(_, h)| h).collect()
        };
        self.room.notify_all();
        for h in left {
            h.sub.settle(bus, h.tag, h.verdict);
        }
    }

    /// A worker's run is done: hold its verdict for audit, or settle it now if the gate is off.
    /// Waits while the gate is full, unless `give_up()` says the worker is stopping.
    pub fn hold(&self, bus: &Bus, held: Held, give_up: impl Fn() -> bool) {
        let mut st = self.state.lock().unwrap();
        if !self.on.load(Ordering::Relaxed) {
            drop(st);
            held.sub.settle(bus, held.tag, held.verdict);
            return;
        }
        while st.waiting.len() + st.taken.len() >= self.capacity && self.on.load(Ordering::Relaxed) && !give_up() {
            st = self.room.wait_timeout(st, ROOM_POLL).unwrap().0;
        }
        if !self.on.load(Ordering::Relaxed) {
            drop(st);
            held.sub.settle(bus, held.tag, held.verdict);
            return;
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push_back((ticket, held));
        drop(st);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            if let Some(w) = self.waker.get() {
                w();
            }
        }
    }

    /// Hands up to `max` waiting runs to the audit writer (oldest first) and encodes them for
    /// JS into `out` as one JSON array (see [`encode_held`]). Returns how many.
    pub fn take(&self, origin: &Origin, max: usize, out: &mut Vec<u8>) -> usize {
        let mut st = self.state.lock().unwrap();
        let n = st.waiting.len().min(max);
        let batch: Vec<(u64, Held)> = st.waiting.drain(..n).collect();
        encode_held(origin, &batch, out);
        st.taken.extend(batch);
        n
    }

    /// The audit records of these tickets are durable: settle their runs. Unknown tickets are
    /// ignored (a run is settled once). Returns how many were settled.
    pub fn release(&self, bus: &Bus, tickets: &[u64]) -> usize {
        let done: Vec<Held> = {
            let mut st = self.state.lock().unwrap();
            tickets.iter().filter_map(|t| st.taken.remove(t)).collect()
        };
        self.room.notify_all();
        let n = done.len();
        for h in done {
            h.sub.settle(bus, h.tag, h.verdict);
        }
        n
    }

    /// Runs held: waiting for the writer, and being written.
    pub fn pending(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.waiting.len(), st.taken.len())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Installs the writer's wake-up (once). Called on the worker's thread: cheap, never blocks.
    pub fn set_waker(&self, w: Waker) -> bool {
        self.waker.set(w).is_ok()
    }

    /// The writer is going idle: wake it at the next held run.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
        // A run held between the writer's last take and this arm would wait for the next one.
        if !self.state.lock().unwrap().waiting.is_empty() && self.armed.swap(false, Ordering::AcqRel) {
            if let Some(w) = self.waker.get() {
                w();
            }
        }
    }
}

/// `[[ticket, atUs, sub, id, type, source, subscriptionName, name, module, outcome, durationUs,
/// traceparent], …]`: arrays, not objects, like the recorder's batches.
pub fn encode_held(origin: &Origin, batch: &[(u64, Held)], out: &mut Vec<u8>) {
    let opt = |out: &mut Vec<u8>, s: Option<&str>| match s {
        Some(s) => write_string(out, s),
        None => out.extend_from_slice(b"null"),
    };
    out.push(b'[');
    for (i, (ticket, h)) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "[{ticket},{},{},", h.at_us, h.sub.id());
        render_id(origin, &h.event.id, out);
        out.push(b',');
        write_string(out, &h.event.topic);
        out.push(b',');
        write_string(out, &h.sub.origin().source);
        out.push(b',');
        opt(out, h.sub.name());
        out.push(b',');
        write_string(out, &h.name);
        out.push(b',');
        write_string(out, &h.module);
        out.push(b',');
        write_string(out, h.outcome);
        let _ = write!(out, ",{},", h.duration_us);
        opt(out, h.event.traceparent.as_deref());
        out.push(b']');
    }
    out.push(b']');
}
