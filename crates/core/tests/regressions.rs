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

/// A `PendingPublish` dropped without `wait()` used to lose its event with no counter moving:
/// neither published nor dropped. It is now counted as `dropped_canceled`.
#[test]
fn abandoned_pending_publish_is_counted() {
    let bus = bus(1, Overflow::Block);
    let a = bus.subscribe("p.t", bus.subscribe_options()).unwrap();
    let b = bus.subscribe("p.*", bus.subscribe_options()).unwrap();
    publish_wait(&bus, init("p.t", 0, 0), None).unwrap();
    b.take(1, &mut Vec::new()); // b has room, a is full
    match bus.publish(init("p.t", 0, 1), None).unwrap() {
        Delivery::Pending(p) => drop(p),
        Delivery::Done { .. } => panic!("expected Pending"),
    }
    let sa = a.stats().queue;
    assert_eq!((sa.published, sa.dropped_canceled), (1, 1), "{sa:?}");
    let sb = b.stats().queue;
    assert_eq!((sb.published, sb.dropped_canceled), (2, 0), "only the waiting subscription counts it: {sb:?}");
    // A pending publish that was waited for is not counted twice.
    a.take(1, &mut Vec::new());
    b.take(1, &mut Vec::new());
    publish_wait(&bus, init("p.t", 0, 2), None).unwrap();
    match bus.publish(init("p.t", 0, 3), None).unwrap() {
        Delivery::Pending(p) => {
            a.take(1, &mut Vec::new());
            b.take(1, &mut Vec::new());
            p.wait().unwrap();
        }
        Delivery::Done { .. } => panic!("expected Pending"),
    }
    assert_eq!(a.stats().queue.dropped_canceled, 1);
    assert_eq!(a.stats().queue.published, 3);
}

/// A capacity beyond MAX_CAPACITY used to reach ArrayQueue::new, which panics ("capacity
/// overflow") or aborts the process on allocation failure. It is now ERR_INVALID_ARG.
#[test]
fn capacity_beyond_the_maximum_is_refused() {
    use sluice_core::overflow::MAX_CAPACITY;
    for cap in [MAX_CAPACITY + 1, usize::MAX] {
        let e = Bus::new(BusOptions { capacity: cap, ..Default::default() }).err().expect("bus accepted a huge capacity");
        assert_eq!(e.code(), "ERR_INVALID_ARG");
        let bus = bus(4, Overflow::Block);
        let e = bus.subscribe("c.t", opts(cap, Overflow::DropNewest)).err().expect("subscribe accepted a huge capacity");
        assert_eq!(e.code(), "ERR_INVALID_ARG");
    }
    assert!(bus(MAX_CAPACITY, Overflow::Block).subscribe("c.t", opts(1, Overflow::Block)).is_ok());
}
