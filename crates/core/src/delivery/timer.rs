//! The bus's retry timer: one binary heap of (due time, subscription, delivery tag) and one
//! thread, started on the first retry, that sleeps on a condvar until the earliest entry is due
//! and then hands the event back to its subscription (which wakes its consumer).
//!
//! Why a thread and not the consumers' take path: a consumer with nothing queued is asleep (a JS
//! pump is armed, a WASM worker is parked) and nothing else would wake it when a retry comes due.
//! One thread per bus, not one per event: scheduling is O(log n) under a short lock, and a bus
//! that never retries never starts it.

use crate::subscription::Subscription;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

struct Entry {
    due: Instant,
    seq: u64,
    sub: Weak<Subscription>,
    tag: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest entry must be on top; `seq` keeps
    /// entries due at the same instant in scheduling order.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.due.cmp(&self.due).then(other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Entry>,
    seq: u64,
    started: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    heap: Mutex<Heap>,
    cv: Condvar,
}

#[derive(Default)]
pub(crate) struct RetryTimer {
    shared: Arc<Shared>,
}

impl RetryTimer {
    /// Asks for `sub.retry_due(tag)` at `due`.
    pub fn schedule(&self, due: Instant, sub: Weak<Subscription>, tag: u64) {
        let mut h = self.shared.heap.lock().unwrap();
        if h.stop {
            return;
        }
        h.seq += 1;
        let seq = h.seq;
        let earliest = h.entries.peek().is_none_or(|top| due < top.due);
        h.entries.push(Entry { due, seq, sub, tag });
        if !h.started {
            h.started = true;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new().name("sluice-retry-timer".into()).spawn(move || run(&shared));
            if spawned.is_err() {
                // Without a thread nothing would ever fire: fail loudly rather than strand events.
                panic!("sluice: cannot start the retry timer thread");
            }
        } else if earliest {
            self.shared.cv.notify_one();
        }
    }
}

impl Drop for RetryTimer {
    fn drop(&mut self) {
        self.shared.heap.lock().unwrap().stop = true;
        self.shared.cv.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut due = Vec::new();
    let mut h = shared.heap.lock().unwrap();
    loop {
        if h.stop {
            return;
        }
        let now = Instant::now();
        while h.entries.peek().is_some_and(|top| top.due <= now) {
            due.push(h.entries.pop().expect("peeked"));
        }
        if !due.is_empty() {
            // Fire without the heap lock: a consumer woken here may settle and schedule again.
            drop(h);
            for e in due.drain(..) {
                if let Some(sub) = e.sub.upgrade() {
                    sub.retry_due(e.tag);
                }
            }
            h = shared.heap.lock().unwrap();
            continue;
        }
        h = match h.entries.peek().map(|top| top.due) {
            Some(at) => shared.cv.wait_timeout(h, at.saturating_duration_since(now)).unwrap().0,
            None => shared.cv.wait(h).unwrap(),
        };
    }
}
