//! Per-thread stripes for counters that several worker threads bump per event. A locked add to
//! one shared cache line from two cores moves that line back and forth on every event: with
//! two workers on one deployment that made two threads slower than one in some runs. Each
//! thread adds to its own stripe; readers sum the stripes.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Stripes per counter set. Threads beyond this share stripes (still correct, just contended).
pub(crate) const STRIPES: usize = 8;

/// This thread's stripe: threads are numbered in the order they first ask, so the workers of
/// one deployment, started one after another, land on different stripes.
pub(crate) fn index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

/// Keeps each stripe on its own cache line (two lines: adjacent-line prefetch pairs them).
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A count of things in progress, raised and lowered on the calling thread's stripe. Raised on
/// one thread and lowered on another, single stripes wrap; their wrapping sum is still exact.
#[derive(Default)]
pub(crate) struct Gauge([Padded<AtomicUsize>; STRIPES]);

impl Gauge {
    pub fn raise(&self) {
        self.0[index()].0.fetch_add(1, Relaxed);
    }

    pub fn lower(&self) {
        self.0[index()].0.fetch_sub(1, Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.iter().fold(0usize, |sum, s| sum.wrapping_add(s.0.load(Relaxed)))
    }
}
