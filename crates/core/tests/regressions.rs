//! Bugs found while testing the core, each pinned by a test that fails without its fix.

mod common;

use common::*;
use sluice_core::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// A publisher that passed the `closed` check just before `unsubscribe` drained the queue used to
/// push its event into the closed queue afterwards: the event stayed there forever, counted as
/// `depth` of a dead subscription instead of `dropped_closed`.
#[test]
fn event_racing_unsubscribe_is_counted_dropped_closed() {
    for policy in [Overflow::DropNewest, Overflow::DropOldest, Overflow::Block] {
        let bus = Arc::new(bus(256, policy));
        let stop = Arc::new(AtomicBool::new(false));
        let iterations = Arc::new(AtomicU64::new(0));
        let (b, st, it) = (bus.clone(), stop.clone(), iterations.clone());
        // One publisher hammers the topic while subscriptions come and go under it.
        let publisher = thread::spawn(move || {
            let ev = b.make_event(init("race.t", 0, 0), None).unwrap();
            while !st.load(Ordering::Relaxed) {
                b.try_publish_event(ev.clone()).unwrap();
                it.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut stuck = 0;
        for round in 0..2000u64 {
            let sub = bus.subscribe("race.t", bus.subscribe_options()).unwrap();
            for _ in 0..(round % 13) * 20 {
                std::hint::spin_loop();
            }
            assert!(bus.unsubscribe(sub.id()));
            // Wait until any offer that may still hold the old route snapshot has finished.
            let seen = iterations.load(Ordering::SeqCst);
            while iterations.load(Ordering::SeqCst) < seen + 2 {
                std::hint::spin_loop();
            }
            let s = sub.stats().queue;
            assert_balanced(&s);
            if s.depth != 0 {
                stuck += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        publisher.join().unwrap();
        assert_eq!(stuck, 0, "{policy:?}: events left queued in a closed subscription in {stuck} of 2000 rounds");
    }
}
