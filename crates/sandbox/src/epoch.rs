//! One ticker thread per engine that advances the epoch while any guest call is running.
//!
//! Guests are stopped by epoch interruption: each store gets a deadline in ticks and a
//! callback that compares the real clock with the event's deadline. The ticker parks while no
//! call is active, so an idle process does not wake every millisecond.
//!
//! Calls are counted per thread stripe, not in one shared counter: every guest call enters and
//! leaves, and two workers adding to one cache line per event slowed each other down. A call
//! that finds the ticker parked (`parked`, a flag the ticker writes only around its naps)
//! wakes it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::stripe::{self, Padded, STRIPES};

/// Ticks without an active call before the ticker parks.
const IDLE_TICKS_BEFORE_PARK: u32 = 50;

struct Shared {
    /// Calls in progress, per thread stripe. A call may end on another stripe than it began
    /// on only if it moves threads, which guest calls do not; the sum is what counts.
    active: [Padded<AtomicUsize>; STRIPES],
    /// Set by the ticker before it looks a last time and parks.
    parked: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn busy(&self) -> bool {
        self.active.iter().any(|a| a.load(Ordering::SeqCst) > 0)
    }
}

pub(crate) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    tick: Duration,
}

/// Keeps the ticker running while alive; one per guest call.
pub(crate) struct ActiveCall<'a> {
    active: &'a AtomicUsize,
}

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Release);
    }
}

impl Ticker {
    pub fn start(engine: wasmtime::Engine, tick: Duration) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared {
            active: Default::default(),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let (started, has_started) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                let _ = started.send(());
                // Keep ticking for a while after the last call so a steady stream of short
                // calls does not pay a futex wake-up per event; park after a quiet spell.
                let mut idle_ticks = 0u32;
                while !s.stop.load(Ordering::Acquire) {
                    if !s.busy() {
                        idle_ticks = idle_ticks.saturating_add(1);
                        if idle_ticks > IDLE_TICKS_BEFORE_PARK {
                            // Announce the nap, then look once more: a call that began before
                            // the announcement is seen here, one that began after sees the
                            // flag and unparks us (both sides SeqCst).
                            s.parked.store(true, Ordering::SeqCst);
                            if !s.busy() && !s.stop.load(Ordering::SeqCst) {
                                // The timeout only bounds a missed wake-up.
                                thread::park_timeout(Duration::from_millis(100));
                            }
                            s.parked.store(false, Ordering::SeqCst);
                            continue;
                        }
                    } else {
                        idle_ticks = 0;
                    }
                    thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        // Return only once the thread runs its own code: its start-up syscalls (glibc's rseq
        // and robust-list registration, std's thread name and signal stack) are behind it. The
        // isolation helper installs a seccomp filter for every thread right after creating an
        // engine; a ticker still starting then would be killed (SIGSYS on `rseq`, seen under load).
        let _ = has_started.recv();
        Ok(Ticker {
            shared,
            thread: Some(thread),
            tick,
        })
    }

    pub fn tick(&self) -> Duration {
        self.tick
    }

    pub fn enter(&self) -> ActiveCall<'_> {
        let active = &self.shared.active[stripe::index()].0;
        // SeqCst pairs with the ticker's store of `parked` (see the loop): one of the two sees
        // the other.
        active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst) {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
        ActiveCall { active }
    }

    /// Ticks to wait before the epoch callback should look at the clock again: rounded up so
    /// the callback never fires early by more than one tick, and at least one.
    pub fn ticks_until(&self, deadline: Instant, now: Instant) -> u64 {
        let left = deadline.saturating_duration_since(now);
        let tick = self.tick.as_nanos().max(1);
        (left.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
