//! What a durable subscription gets back after a restart besides the events themselves: their
//! retry counts (an event that failed k times is redelivered as attempt k + 1 and dead-lettered
//! after maxAttempts in all) and their deadlines (an event whose deadline passed while the
//! process was down is expired, not delivered, and released from the journal). Real journal
//! files, reopened.

use sluice_core::delivery::{Backoff, RetryPolicy};
use sluice_core::*;
use std::sync::Arc;
use std::time::Duration;

fn journal_bus(dir: &std::path::Path) -> Bus {
    Bus::new(BusOptions {
        capacity: 4,
        journal: Some(JournalConfig { dir: dir.to_path_buf(), fsync: Fsync::Batch { interval_ms: 1 }, segment_bytes: None }),
        ..Default::default()
    })
    .unwrap()
}

fn durable(bus: &Bus, name: &str, delivery: DeliveryOptions) -> Arc<Subscription> {
    let delivery = DeliveryOptions { guarantee: sluice_core::delivery::Guarantee::AtLeastOnce, ..delivery };
    let opts = SubscribeOptions { capacity: 4, name: Some(name.into()), delivery, ..bus.subscribe_options() };
    bus.subscribe("n.>", opts).unwrap()
}

fn publish(bus: &Bus, i: u32, ctx: Option<&Context>) {
    let init = EventInit { topic: "n.x".into(), data: i.to_string().into_bytes(), ..Default::default() };
    match bus.publish(init, ctx).unwrap() {
        Delivery::Done { .. } => {}
        Delivery::Pending(p) => p.wait().unwrap(),
    }
}

fn num(e: &Event) -> u32 {
    std::str::from_utf8(&e.data).unwrap().parse().unwrap()
}

fn drain(bus: &Bus, sub: &Arc<Subscription>) -> Vec<u32> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    while sub.take_deliveries(16, &mut batch) > 0 {
        out.extend(batch.iter().map(|d| num(&d.event)));
        sub.settle_all(bus, batch.drain(..).map(|d| (d.tag, Outcome::Ack)));
    }
    out
}

#[test]
fn an_event_whose_deadline_passed_while_the_process_was_down_is_expired_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = journal_bus(dir.path());
        let _sub = durable(&bus, "d", DeliveryOptions::default());
        // Ten events, the even ones with a deadline 150 ms away; nobody takes any.
        let short = Context::background().with_timeout(Duration::from_millis(150));
        for i in 0..10 {
            publish(&bus, i, (i % 2 == 0).then_some(&short));
        }
        bus.shutdown();
        assert_eq!(bus.close_journal().unwrap(), 10);
    }
    std::thread::sleep(Duration::from_millis(250)); // "the process is down"
    let bus = journal_bus(dir.path());
    let sub = durable(&bus, "d", DeliveryOptions::default());
    assert_eq!(drain(&bus, &sub), vec![1, 3, 5, 7, 9], "expired events are not delivered");
    let s = sub.stats();
    assert_eq!(s.queue.expired, 5, "{s:?}");
    assert_eq!(s.queue.published, s.queue.delivered + s.queue.expired + s.queue.depth, "books balance: {s:?}");
    // Expired is final: released in the journal, so the next restart does not see them again.
    assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0);
    bus.shutdown();
    assert_eq!(bus.close_journal().unwrap(), 0);
}

#[test]
fn a_durable_event_that_expires_in_the_queue_is_released_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path());
    let sub = durable(&bus, "q", DeliveryOptions::default());
    let short = Context::background().with_timeout(Duration::from_millis(30));
    publish(&bus, 0, Some(&short));
    publish(&bus, 1, None);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(drain(&bus, &sub), vec![1]);
    assert_eq!(sub.stats().queue.expired, 1);
    assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0, "an expired event is not redelivered after a restart");
}

fn retrying(max_attempts: u32) -> DeliveryOptions {
    DeliveryOptions {
        retry: RetryPolicy { max_attempts, backoff: Backoff::Fixed, initial_ms: 1, max_ms: 1, jitter: 0.0 },
        dead_letter: Some("dead".into()),
        ..Default::default()
    }
}

/// Takes deliveries until `n` have been handled, failing those `fail` picks; returns
/// (data, attempt) of each in order.
fn handle(bus: &Bus, sub: &Arc<Subscription>, n: usize, fail: impl Fn(u32, u32) -> bool) -> Vec<(u32, u32)> {
    let start = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut batch = Vec::new();
    while seen.len() < n {
        assert!(start.elapsed() < Duration::from_secs(5), "stuck after {seen:?}: {:?}", sub.stats());
        if sub.take_deliveries(16, &mut batch) == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut verdicts = Vec::new();
        for d in batch.drain(..) {
            let (i, a) = (num(&d.event), d.attempt);
            seen.push((i, a));
            verdicts.push((d.tag, if fail(i, a) { Outcome::Fail(format!("failed {i} on attempt {a}")) } else { Outcome::Ack }));
        }
        sub.settle_all(bus, verdicts);
    }
    seen
}

#[test]
fn retry_counts_survive_a_restart_and_dead_lettering_counts_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = journal_bus(dir.path());
        let sub = durable(&bus, "r", retrying(4));
        publish(&bus, 0, None);
        publish(&bus, 1, None);
        // Event 1 is fine; event 0 fails twice, then "the process dies" while it waits for its
        // third attempt. (One event retrying at a time: the order of deliveries is fixed.)
        assert_eq!(handle(&bus, &sub, 2, |i, _| i == 0), vec![(0, 1), (1, 1)]);
        assert_eq!(handle(&bus, &sub, 1, |_, _| true), vec![(0, 2)]);
        bus.shutdown();
        assert_eq!(bus.close_journal().unwrap(), 1, "only event 0 is left");
    }
    {
        let bus = journal_bus(dir.path());
        let dlq = bus.subscribe("dead", bus.subscribe_options()).unwrap();
        let sub = durable(&bus, "r", retrying(4));
        // Redelivered as attempt 3 (2 failed before the restart), fails again, attempt 4 is the
        // last one allowed: dead-lettered with 4 attempts in all.
        assert_eq!(handle(&bus, &sub, 2, |_, _| true), vec![(0, 3), (0, 4)]);
        let mut dead = Vec::new();
        assert_eq!(dlq.take(10, &mut dead), 1);
        let env: serde_json::Value = serde_json::from_slice(&dead[0].data).unwrap();
        assert_eq!(env["attempts"], 4);
        assert_eq!(env["reason"], "failed 0 on attempt 4");
        assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0);
    }
}

#[test]
fn a_retry_count_left_by_a_crash_mid_backoff_carries_over() {
    // The subscription closes while the event waits for its retry (Abandoned: stays pending),
    // twice in a row, each time after one more failure.
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=2u32 {
        let bus = journal_bus(dir.path());
        let sub = durable(&bus, "m", retrying(3));
        if round == 1 {
            publish(&bus, 7, None);
        }
        assert_eq!(handle(&bus, &sub, 1, |_, _| true), vec![(7, round)]);
        bus.shutdown();
        assert_eq!(bus.close_journal().unwrap(), 1);
    }
    let bus = journal_bus(dir.path());
    let dlq = bus.subscribe("dead", bus.subscribe_options()).unwrap();
    let sub = durable(&bus, "m", retrying(3));
    assert_eq!(handle(&bus, &sub, 1, |_, _| true), vec![(7, 3)]);
    let mut dead = Vec::new();
    assert_eq!(dlq.take(10, &mut dead), 1, "the third attempt in all was the last");
    assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0);
}
