//! A bus with a journal: durable (at-least-once, named) subscriptions and the `spill` policy,
//! on real files in a temporary directory.

mod common;

use sluice_core::*;
use std::sync::Arc;

fn journal_bus(dir: &std::path::Path, fsync: Fsync) -> Bus {
    Bus::new(BusOptions {
        capacity: 4,
        journal: Some(JournalConfig { dir: dir.to_path_buf(), fsync, segment_bytes: Some(64 << 10) }),
        ..Default::default()
    })
    .unwrap()
}

fn at_least_once() -> DeliveryOptions {
    DeliveryOptions { guarantee: sluice_core::delivery::Guarantee::AtLeastOnce, ..Default::default() }
}

fn durable(bus: &Bus, name: &str, capacity: usize) -> Arc<Subscription> {
    let opts = SubscribeOptions { capacity, name: Some(name.into()), delivery: at_least_once(), ..bus.subscribe_options() };
    bus.subscribe("n.>", opts).unwrap()
}

fn publish(bus: &Bus, i: u32) {
    let init = EventInit { topic: "n.x".into(), data: i.to_string().into_bytes(), ..Default::default() };
    match bus.publish(init, None).unwrap() {
        Delivery::Done { .. } => {}
        Delivery::Pending(p) => p.wait().unwrap(),
    }
}

fn num(e: &Event) -> u32 {
    std::str::from_utf8(&e.data).unwrap().parse().unwrap()
}

/// Takes deliveries one at a time (refilling from the journal); settles with Ack those `ack`
/// picks and leaves the others in flight. Returns the data in delivery order.
fn drain(bus: &Bus, sub: &Arc<Subscription>, ack: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    while sub.take_deliveries(1, &mut batch) > 0 {
        for d in batch.drain(..) {
            let n = num(&d.event);
            out.push(n);
            if ack(n) {
                sub.settle(bus, d.tag, Outcome::Ack);
            }
        }
    }
    out
}

#[test]
fn unacknowledged_events_survive_a_restart_in_order_and_acked_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    for fsync in [Fsync::Always, Fsync::Batch { interval_ms: 2 }, Fsync::Never] {
        let dir = dir.path().join(fsync.as_str());
        {
            let bus = journal_bus(&dir, fsync);
            let sub = durable(&bus, "billing", 4);
            for i in 0..8 {
                publish(&bus, i);
            }
            // Capacity 4: four events stayed in the journal and flow back in order.
            assert_eq!(sub.stats().spilled, 4);
            // Odd events are never settled: still in flight when the bus goes away.
            assert_eq!(drain(&bus, &sub, |n| n % 2 == 0), (0..8).collect::<Vec<_>>());
            assert_eq!(bus.stats().journal.unwrap().unacknowledged, 4);
            bus.shutdown();
            assert_eq!(sub.stats().queue.dropped_closed, 0, "persisted, not dropped");
            assert_eq!(bus.close_journal().unwrap(), 4);
        }
        let bus = journal_bus(&dir, fsync);
        assert_eq!(bus.stats().journal.unwrap().recovered.unacknowledged, 4);
        let sub = durable(&bus, "billing", 2);
        publish(&bus, 10);
        assert_eq!(drain(&bus, &sub, |_| true), vec![1, 3, 5, 7, 10], "{fsync:?}: backlog first, then live");
        assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0);
    }
}

#[test]
fn a_durable_subscription_needs_a_name_and_one_live_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path(), Fsync::Never);
    let opts = SubscribeOptions { delivery: at_least_once(), ..bus.subscribe_options() };
    assert_eq!(bus.subscribe("a", opts.clone()).err().unwrap().code(), "ERR_INVALID_ARG");
    let named = SubscribeOptions { name: Some("x".into()), ..opts };
    let first = bus.subscribe("a", named.clone()).unwrap();
    assert_eq!(bus.subscribe("a", named.clone()).err().unwrap().code(), "ERR_INVALID_ARG");
    bus.unsubscribe(first.id());
    bus.subscribe("a", named).unwrap();
    // Another bus on the same directory is refused by the journal's lock.
    let other = Bus::new(BusOptions {
        journal: Some(JournalConfig { dir: dir.path().into(), fsync: Fsync::Never, segment_bytes: None }),
        ..Default::default()
    });
    assert_eq!(other.err().unwrap().code(), "ERR_JOURNAL_LOCKED");
}

#[test]
fn spill_keeps_order_and_counts_and_needs_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path(), Fsync::Batch { interval_ms: 1 });
    let sub = bus.subscribe("n.>", common::opts(3, Overflow::Spill)).unwrap();
    let mut got = Vec::new();
    for i in 0..50 {
        publish(&bus, i);
        if i % 7 == 0 {
            let mut b = Vec::new();
            sub.take(2, &mut b);
            got.extend(b.iter().map(|e| num(e)));
        }
    }
    got.extend(drain(&bus, &sub, |_| true));
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    let s = sub.stats();
    assert!(s.spilled > 30, "{s:?}");
    assert_eq!(s.queue.published, 50);
    assert_eq!(s.queue.delivered, 50);
    assert_eq!(s.queue.dropped(), 0);
    // Spilled events of an at-most-once subscription are acknowledged once back in memory.
    assert_eq!(bus.durable().unwrap().journal().consumers().iter().map(|c| c.pending).sum::<u64>(), 0);
}

#[test]
fn a_spill_backlog_left_at_close_is_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path(), Fsync::Never);
    let sub = bus.subscribe("n.>", common::opts(2, Overflow::Spill)).unwrap();
    for i in 0..5 {
        publish(&bus, i);
    }
    assert_eq!(bus.shutdown(), 5);
    let s = sub.stats();
    assert_eq!(s.queue.dropped_closed, 5);
    assert_eq!(s.queue.published, 5);
    assert_eq!(bus.stats().totals.dropped, 5);
}
