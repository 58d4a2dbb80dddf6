//! The recorder sees every lifecycle event of the core exactly once: the records drained add up
//! to the bus's own counters, per kind and per drop reason, also with publishers on several
//! threads, and a full ring is counted as lost instead of vanishing.

mod common;
use common::*;
use sluice_core::observe::{reason, Interest, Kind, Record, Recorder};
use sluice_core::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn watch_all(bus: &Bus) {
    bus.recorder().set_interest(Interest { every: Kind::MASK_ALL, ..Default::default() });
}

/// (kind, reason) → summed counts.
fn tally(rec: &Recorder) -> HashMap<(Kind, &'static str), u64> {
    let mut out = Vec::new();
    rec.drain(usize::MAX, &mut out);
    let mut m = HashMap::new();
    for r in out {
        *m.entry((r.kind, r.reason)).or_insert(0) += r.count as u64;
    }
    m
}

fn sum(m: &HashMap<(Kind, &'static str), u64>, k: Kind) -> u64 {
    m.iter().filter(|((kk, _), _)| *kk == k).map(|(_, n)| n).sum()
}

#[test]
fn records_add_up_to_stats_exactly() {
    let bus = Arc::new(bus(8, Overflow::Block));
    watch_all(&bus);
    let newest = bus.subscribe("a.*", opts(4, Overflow::DropNewest)).unwrap();
    let oldest = bus.subscribe("a.>", opts(4, Overflow::DropOldest)).unwrap();
    let err = bus.subscribe("a.b", opts(4, Overflow::Error)).unwrap();
    let block = bus.subscribe("a.b", opts(4, Overflow::Block)).unwrap();
    let threads: Vec<_> = (0..3)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for s in 0..500 {
                    let _ = bus.try_publish(init("a.b", p, s), None);
                    let _ = bus.try_publish(init("x.y", p, s), None);
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    for _ in 0..200 {
        for s in [&newest, &oldest, &err, &block] {
            s.take(3, &mut got);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    for t in threads {
        t.join().unwrap();
    }
    // One subscription is closed with events still queued; one returns part of a batch.
    for s in 0..3 {
        bus.try_publish(init("a.c", 9, s), None).unwrap();
    }
    got.clear();
    oldest.take(2, &mut got);
    oldest.queue().return_undelivered(1);
    bus.unsubscribe(newest.id());
    let stats = bus.stats();
    let m = tally(bus.recorder());
    assert_eq!(sum(&m, Kind::Published), stats.published);
    assert_eq!(m[&(Kind::Published, reason::UNROUTED)], stats.unrouted);
    assert_eq!(sum(&m, Kind::Delivered) - m.get(&(Kind::Dropped, reason::RETURNED)).copied().unwrap_or(0), stats.totals.delivered);
    assert_eq!(sum(&m, Kind::Dropped), stats.totals.dropped);
    assert_eq!(sum(&m, Kind::Expired), stats.totals.expired);
    let by = |r| m.get(&(Kind::Dropped, r)).copied().unwrap_or(0);
    let subs: Vec<_> = [&oldest, &err, &block].iter().map(|s| s.stats()).collect();
    assert_eq!(by(reason::OLDEST), subs.iter().map(|s| s.queue.dropped_oldest).sum::<u64>());
    assert_eq!(by(reason::FULL), subs.iter().map(|s| s.queue.dropped_full).sum::<u64>());
    assert!(by(reason::NEWEST) > 0, "the drop-newest subscription overflowed");
    assert!(by(reason::CLOSED) > 0, "unsubscribing with events queued drops them");
    assert_eq!(bus.recorder().lost(), [0; observe::KINDS]);
    assert_eq!(bus.recorder().counts()[Kind::Published as usize], stats.published);
}

#[test]
fn records_carry_event_subscription_and_traceparent() {
    let bus = bus(8, Overflow::Block);
    watch_all(&bus);
    let sub = bus.subscribe("t.x", opts(8, Overflow::Block)).unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    bus.try_publish(EventInit { topic: "t.x".into(), traceparent: Some(tp.into()), data: b"1".to_vec(), ..Default::default() }, None)
        .unwrap();
    let mut got = Vec::new();
    sub.take(8, &mut got);
    let mut recs: Vec<Record> = Vec::new();
    bus.recorder().drain(10, &mut recs);
    assert_eq!(recs.iter().map(|r| r.kind).collect::<Vec<_>>(), [Kind::Published, Kind::Delivered]);
    assert_eq!(recs[1].sub, sub.id());
    assert_eq!(recs[1].event.as_ref().unwrap().traceparent.as_deref(), Some(tp));
    assert!(recs[0].at_us <= recs[1].at_us);
}

#[test]
fn nothing_is_recorded_or_counted_while_unwatched() {
    let bus = bus(8, Overflow::DropNewest);
    let _s = bus.subscribe("a.b", opts(1, Overflow::DropNewest)).unwrap();
    for i in 0..10 {
        bus.try_publish(init("a.b", 0, i), None).unwrap();
    }
    assert!(bus.recorder().is_empty());
    assert_eq!(bus.recorder().counts(), [0; observe::KINDS]);
}

#[test]
fn a_full_ring_counts_what_it_lost() {
    let bus = bus(8, Overflow::DropNewest);
    watch_all(&bus);
    let cap = bus.recorder().capacity() as u64;
    for i in 0..cap + 10 {
        bus.try_publish(init("nobody.here", 0, i), None).unwrap();
    }
    assert_eq!(bus.recorder().len() as u64, cap);
    assert_eq!(bus.recorder().lost()[Kind::Published as usize], 10);
    assert_eq!(bus.recorder().counts()[Kind::Published as usize], cap + 10);
}

#[test]
fn stats_say_how_long_publishers_have_been_blocked() {
    let bus = Arc::new(bus(1, Overflow::Block));
    let sub = bus.subscribe("q.x", opts(1, Overflow::Block)).unwrap();
    bus.try_publish(init("q.x", 0, 0), None).unwrap();
    let b = bus.clone();
    let t = std::thread::spawn(move || match b.publish(init("q.x", 0, 1), None).unwrap() {
        Delivery::Pending(p) => p.wait().unwrap(),
        Delivery::Done { .. } => panic!("the queue was full"),
    });
    while sub.stats().queue.blocked_publishers == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(60));
    let s = sub.stats().queue;
    assert!(s.blocked_for_ms >= 50, "blocked for {} ms", s.blocked_for_ms);
    let mut got = Vec::new();
    sub.take(1, &mut got);
    t.join().unwrap();
    assert_eq!(sub.stats().queue.blocked_for_ms, 0);
}

#[test]
fn retries_and_dead_letters_are_recorded_with_their_reason() {
    use sluice_core::delivery::{Backoff, Guarantee, RetryPolicy};
    let bus = bus(16, Overflow::Block);
    watch_all(&bus);
    let delivery = DeliveryOptions {
        guarantee: Guarantee::AtLeastOnce,
        retry: RetryPolicy { max_attempts: 3, backoff: Backoff::Fixed, initial_ms: 1, max_ms: 10, jitter: 0.0 },
        dead_letter: Some("dead.orders".into()),
        ..Default::default()
    };
    let sub = bus.subscribe("orders.x", SubscribeOptions { delivery, ..bus.subscribe_options() }).unwrap();
    bus.try_publish(init("orders.x", 1, 1), None).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut batch = Vec::new();
    while sub.stats().delivery.dead_lettered == 0 {
        assert!(std::time::Instant::now() < end, "never dead-lettered");
        batch.clear();
        sub.take_deliveries(4, &mut batch);
        for d in batch.drain(..) {
            sub.settle(&bus, d.tag, Outcome::Fail("boom".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut recs = Vec::new();
    bus.recorder().drain(usize::MAX, &mut recs);
    let retried: Vec<_> = recs.iter().filter(|r| r.kind == Kind::Retried).collect();
    let dead: Vec<_> = recs.iter().filter(|r| r.kind == Kind::DeadLettered).collect();
    assert_eq!(retried.len() as u64, sub.stats().delivery.retried);
    assert_eq!(retried.len(), 2);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].sub, sub.id());
    assert_eq!(dead[0].reason, "dead-letter");
    let detail: serde_json::Value = serde_json::from_str(dead[0].detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["topic"], "dead.orders");
    assert_eq!(detail["reason"], "boom");
    assert_eq!(detail["attempts"], 3);
    assert!(retried.iter().all(|r| r.event.is_some() && r.duration_us >= 1000));
    // The dead-letter envelope itself is published like any event (unrouted here).
    assert!(recs.iter().any(|r| r.kind == Kind::Published && r.event.as_ref().unwrap().topic.as_ref() == "dead.orders"));
}
