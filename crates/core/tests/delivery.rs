//! Delivery guarantees through the core's settle API: retries with backoff, dead letters,
//! per-key ordering, dedupe, replay, and the counting invariant.

mod common;

use common::*;
use proptest::prelude::*;
use sluice_core::delivery::{Backoff, Dedupe, Guarantee, KeyOrdering, KeyPath, RetryPolicy};
use sluice_core::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn retrying(max_attempts: u32, backoff: Backoff, initial_ms: u64, dead_letter: Option<&str>) -> DeliveryOptions {
    DeliveryOptions {
        guarantee: Guarantee::AtLeastOnce,
        retry: RetryPolicy { max_attempts, backoff, initial_ms, max_ms: 10_000, jitter: 0.0 },
        dead_letter: dead_letter.map(str::to_owned),
        ..Default::default()
    }
}

fn sub_with(bus: &Bus, pattern: &str, delivery: DeliveryOptions) -> Arc<Subscription> {
    bus.subscribe(pattern, SubscribeOptions { delivery, ..bus.subscribe_options() }).unwrap()
}

fn publish(bus: &Bus, topic: &str, id: &str, data: &str) {
    let init = EventInit { topic: topic.into(), id: Some(id.into()), data: data.as_bytes().to_vec(), ..Default::default() };
    assert!(bus.try_publish(init, None).unwrap());
}

fn id_of(ev: &Event) -> String {
    match &ev.id {
        EventId::Given(s) => s.to_string(),
        EventId::Seq(n) => n.to_string(),
    }
}

/// Runs a handler over the subscription until nothing is queued or in flight (or `limit`),
/// recording (id, attempt, when) of every delivery.
fn drive(
    bus: &Bus,
    sub: &Arc<Subscription>,
    limit: Duration,
    mut handler: impl FnMut(&Delivered) -> Outcome,
) -> Vec<(String, u32, Instant)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut batch = Vec::new();
    loop {
        batch.clear();
        if sub.take_deliveries(16, &mut batch) == 0 {
            if sub.in_flight() == 0 && sub.queue().is_empty() {
                return seen;
            }
            assert!(start.elapsed() < limit, "did not finish within {limit:?}: {:?}", sub.stats());
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for d in batch.drain(..) {
            seen.push((id_of(&d.event), d.attempt, Instant::now()));
            let verdict = handler(&d);
            sub.settle(bus, d.tag, verdict);
        }
    }
}

fn assert_books_balance(sub: &Subscription) {
    let s = sub.stats();
    let d = &s.delivery;
    assert_eq!(
        s.queue.delivered,
        d.acked + d.dead_lettered + d.discarded + d.duplicates_suppressed + d.in_flight,
        "delivered = acked + deadLettered + discarded + duplicatesSuppressed + inFlight: {s:?}"
    );
    assert_eq!(s.queue.published, s.queue.delivered + s.queue.expired + s.queue.dropped_oldest + s.queue.dropped_closed + s.queue.depth);
}

#[test]
fn poison_event_is_delivered_max_attempts_times_then_dead_lettered() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "order.created", retrying(3, Backoff::Fixed, 5, Some("order.dead")));
    let dlq = bus.subscribe("order.dead", bus.subscribe_options()).unwrap();
    publish(&bus, "order.created", "poison", r#"{"n":1}"#);
    publish(&bus, "order.created", "ok", r#"{"n":2}"#);
    let seen = drive(&bus, &sub, Duration::from_secs(5), |d| {
        if id_of(&d.event) == "poison" {
            Outcome::Fail(format!("boom on attempt {}", d.attempt))
        } else {
            Outcome::Ack
        }
    });
    let poison: Vec<u32> = seen.iter().filter(|s| s.0 == "poison").map(|s| s.1).collect();
    assert_eq!(poison, vec![1, 2, 3], "delivered exactly maxAttempts times, attempt numbers carried");
    let mut dead = Vec::new();
    assert_eq!(dlq.take(10, &mut dead), 1);
    let env: serde_json::Value = serde_json::from_slice(&dead[0].data).unwrap();
    assert_eq!(env["reason"], "boom on attempt 3");
    assert_eq!(env["attempts"], 3);
    assert_eq!(env["event"]["id"], "poison");
    assert_eq!(env["event"]["type"], "order.created");
    assert_eq!(env["event"]["data"]["n"], 1);
    assert!(env["event"]["time"].as_u64().unwrap() > 0);
    let d = sub.stats().delivery;
    assert_eq!((d.acked, d.retried, d.dead_lettered, d.discarded), (1, 2, 1, 0));
    assert_eq!(sub.stats().queue.failed, 3, "each failed attempt is counted");
    assert_books_balance(&sub);
}

#[test]
fn without_a_dead_letter_topic_a_given_up_event_is_counted_discarded() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "t", retrying(2, Backoff::Fixed, 1, None));
    publish(&bus, "t", "x", "1");
    let seen = drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Retry("later".into()));
    assert_eq!(seen.len(), 2);
    let s = sub.stats();
    assert_eq!((s.delivery.discarded, s.delivery.dead_lettered, s.queue.failed), (1, 0, 0), "Retry is not a failure");
    assert_books_balance(&sub);
}

#[test]
fn reject_dead_letters_at_once() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "t", retrying(5, Backoff::Fixed, 1, Some("t.dead")));
    publish(&bus, "t", "x", "1");
    let seen = drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Reject("bad".into()));
    assert_eq!(seen.len(), 1);
    assert_eq!(sub.stats().delivery.dead_lettered, 1);
    assert_eq!(bus.stats().dead_letters.retained, 1, "kept for replay even with no subscriber on t.dead");
}

#[test]
fn a_retrying_event_does_not_block_the_others() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "t", retrying(2, Backoff::Fixed, 300, None));
    publish(&bus, "t", "slow", "0");
    for i in 0..5 {
        publish(&bus, "t", &format!("e{i}"), "1");
    }
    let start = Instant::now();
    let seen = drive(&bus, &sub, Duration::from_secs(5), |d| {
        if id_of(&d.event) == "slow" && d.attempt == 1 {
            Outcome::Fail("not yet".into())
        } else {
            Outcome::Ack
        }
    });
    let order: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(order, vec!["slow", "e0", "e1", "e2", "e3", "e4", "slow"]);
    let others_done = seen[5].2.duration_since(start);
    assert!(others_done < Duration::from_millis(300), "the others ran during the backoff ({others_done:?})");
}

#[test]
fn backoff_delays_are_lower_bounds() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "t", retrying(4, Backoff::Exponential, 20, None));
    publish(&bus, "t", "x", "1");
    let seen = drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Fail("no".into()));
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].2.duration_since(w[0].2)).collect();
    assert_eq!(gaps.len(), 3);
    for (gap, min) in gaps.iter().zip([20, 40, 80]) {
        assert!(*gap >= Duration::from_millis(min), "gap {gap:?} is below the {min} ms backoff");
    }
}

#[test]
fn per_key_order_holds_across_retries_while_other_keys_flow() {
    let bus = bus(64, Overflow::Block);
    let mut opts = retrying(3, Backoff::Fixed, 30, None);
    opts.ordering = KeyOrdering::PerKey { path: KeyPath::parse("data.k").unwrap() };
    let sub = sub_with(&bus, "t", opts);
    publish(&bus, "t", "a1", r#"{"k":"a"}"#);
    publish(&bus, "t", "a2", r#"{"k":"a"}"#);
    publish(&bus, "t", "b1", r#"{"k":"b"}"#);
    publish(&bus, "t", "a3", r#"{"k":"a"}"#);
    publish(&bus, "t", "b2", r#"{"k":"b"}"#);
    let seen = drive(&bus, &sub, Duration::from_secs(5), |d| {
        if id_of(&d.event) == "a1" && d.attempt < 3 {
            Outcome::Fail("a1 fails twice".into())
        } else {
            Outcome::Ack
        }
    });
    let order: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(order, vec!["a1", "b1", "b2", "a1", "a1", "a2", "a3"]);
    let s = sub.stats();
    assert_eq!((s.delivery.acked, s.delivery.held, s.delivery.in_flight), (5, 0, 0));
    assert_books_balance(&sub);
}

/// Several consumers taking from one per-key subscription at once (a deployment's workers):
/// an event popped from the queue by one consumer must not be overtaken, in its key's order,
/// by a later event that another consumer popped after it but admitted first.
#[test]
fn per_key_order_holds_with_concurrent_consumers() {
    const KEYS: usize = 4;
    const N: usize = 200_000;
    let bus = bus(1 << 17, Overflow::Block);
    let mut opts = DeliveryOptions { guarantee: Guarantee::AtLeastOnce, ..Default::default() };
    opts.ordering = KeyOrdering::PerKey { path: KeyPath::parse("data.k").unwrap() };
    let sub = sub_with(&bus, "t", opts);
    let handled = Mutex::new(Vec::<(usize, usize)>::with_capacity(N));
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 0..N {
                publish(&bus, "t", &n.to_string(), &format!(r#"{{"k":"{}"}}"#, n % KEYS));
                if n % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        for _ in 0..4 {
            s.spawn(|| {
                let mut batch = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while handled.lock().unwrap().len() < N && Instant::now() < deadline {
                    batch.clear();
                    if sub.take_deliveries(2, &mut batch) == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    for d in batch.drain(..) {
                        let n: usize = id_of(&d.event).parse().unwrap();
                        // Recorded while the event holds its key: the next one of the key
                        // cannot be handed out before this settle.
                        handled.lock().unwrap().push((n % KEYS, n));
                        sub.settle(&bus, d.tag, Outcome::Ack);
                    }
                }
            });
        }
    });
    let handled = handled.into_inner().unwrap();
    assert_eq!(handled.len(), N);
    let mut last = [None::<usize>; KEYS];
    let mut inversions = 0;
    for (k, n) in handled {
        if last[k].is_some_and(|l| n < l) {
            inversions += 1;
        }
        last[k] = Some(n);
    }
    assert_eq!(inversions, 0, "events handled out of their key's order");
}

#[test]
fn dedupe_suppresses_ids_seen_in_the_window() {
    let bus = bus(64, Overflow::Block);
    let opts = DeliveryOptions { dedupe: Some(Dedupe { window: None, size: 2 }), ..Default::default() };
    let sub = sub_with(&bus, "t", opts);
    for id in ["a", "b", "a", "c", "a"] {
        publish(&bus, "t", id, "1");
    }
    // Window of 2: "a" is suppressed once; after "b","c" it has been forgotten.
    let seen = drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Ack);
    let order: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(order, vec!["a", "b", "c", "a"]);
    assert_eq!(sub.stats().delivery.duplicates_suppressed, 1);
    assert_books_balance(&sub);
}

#[test]
fn dedupe_window_by_time_forgets_old_ids() {
    let bus = bus(64, Overflow::Block);
    let opts = DeliveryOptions {
        dedupe: Some(Dedupe { window: Some(Duration::from_millis(30)), size: 100 }),
        ..Default::default()
    };
    let sub = sub_with(&bus, "t", opts);
    publish(&bus, "t", "a", "1");
    publish(&bus, "t", "a", "1");
    drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Ack);
    std::thread::sleep(Duration::from_millis(40));
    publish(&bus, "t", "a", "1");
    let seen = drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Ack);
    assert_eq!(seen.len(), 1, "after the window the id is new again");
    assert_eq!(sub.stats().delivery.duplicates_suppressed, 1);
}

#[test]
fn replay_publishes_dead_letters_again_and_removes_them() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "t", retrying(1, Backoff::Fixed, 1, Some("t.dead")));
    publish(&bus, "t", "x", r#"{"v":1}"#);
    publish(&bus, "t", "y", r#"{"v":2}"#);
    drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Fail("down".into()));
    assert_eq!(bus.stats().dead_letters.retained, 2);
    let only_y = FilterChain::parse(r#"{"field":"v","op":"eq","value":2}"#).unwrap();
    let (n, pending) = bus.replay("t.dead", Some(&only_y), 10, None).unwrap();
    assert!(pending.is_none());
    assert_eq!(n, 1);
    let seen = drive(&bus, &sub, Duration::from_secs(5), |_| Outcome::Ack);
    assert_eq!(seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), vec!["y"], "same id, same data");
    let s = bus.stats().dead_letters;
    assert_eq!((s.retained, s.replayed), (1, 1));
    assert_eq!(bus.replay("t.dead", None, 10, None).unwrap().0, 1);
    assert_eq!(bus.replay("t.dead", None, 10, None).unwrap().0, 0, "a dead letter is replayed once");
}

#[test]
fn closing_abandons_what_is_in_flight_and_counts_it() {
    let bus = bus(64, Overflow::Block);
    let sub = sub_with(&bus, "t", retrying(5, Backoff::Fixed, 10_000, None));
    publish(&bus, "t", "x", "1");
    publish(&bus, "t", "y", "1");
    let mut got = Vec::new();
    assert_eq!(sub.take_deliveries(10, &mut got), 2);
    sub.settle(&bus, got[0].tag, Outcome::Fail("later".into()));
    assert_eq!(sub.stats().delivery.retrying, 1);
    assert!(bus.unsubscribe(sub.id()));
    sub.settle(&bus, got[1].tag, Outcome::Ack); // after close: ignored
    let s = sub.stats();
    assert_eq!((s.queue.dropped_closed, s.delivery.in_flight, s.delivery.acked), (2, 0, 0));
    assert_books_balance(&sub);
}

#[test]
fn settle_hook_sees_every_decision() {
    #[derive(Default)]
    struct Log(Mutex<Vec<(String, Disposition)>>);
    impl SettleHook for Log {
        fn settled(&self, _sub: &Subscription, ev: &Event, d: &Disposition) {
            self.0.lock().unwrap().push((id_of(ev), d.clone()));
        }
    }
    let bus = bus(64, Overflow::Block);
    let log = Arc::new(Log::default());
    bus.set_settle_hook(log.clone()).unwrap();
    let sub = sub_with(&bus, "t", retrying(2, Backoff::Fixed, 1, Some("dead")));
    publish(&bus, "t", "ok", "1");
    publish(&bus, "t", "bad", "1");
    drive(&bus, &sub, Duration::from_secs(5), |d| if id_of(&d.event) == "ok" { Outcome::Ack } else { Outcome::Fail("x".into()) });
    let log = log.0.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            ("ok".into(), Disposition::Acked),
            ("bad".into(), Disposition::Retrying { attempt: 2 }),
            ("bad".into(), Disposition::DeadLettered { attempts: 2 }),
        ]
    );
}

#[test]
fn untracked_subscriptions_count_acks_on_take_and_failures_as_discarded() {
    let bus = bus(64, Overflow::Block);
    let sub = bus.subscribe("t", bus.subscribe_options()).unwrap();
    for i in 0..3 {
        publish(&bus, "t", &i.to_string(), "1");
    }
    let seen = drive(&bus, &sub, Duration::from_secs(5), |d| if id_of(&d.event) == "1" { Outcome::Fail("x".into()) } else { Outcome::Ack });
    assert_eq!(seen.len(), 3);
    let s = sub.stats();
    assert_eq!((s.delivery.acked, s.delivery.discarded, s.queue.failed), (2, 1, 1));
    assert_books_balance(&sub);
}

#[test]
fn a_tracked_subscription_holds_at_most_capacity_in_flight() {
    let bus = bus(4, Overflow::DropNewest);
    let sub = sub_with(&bus, "t", retrying(3, Backoff::Fixed, 10_000, None));
    for i in 0..4 {
        publish(&bus, "t", &i.to_string(), "1");
    }
    let mut got = Vec::new();
    assert_eq!(sub.take_deliveries(10, &mut got), 4);
    for d in &got {
        sub.settle(&bus, d.tag, Outcome::Fail("later".into()));
    }
    for i in 4..8 {
        publish(&bus, "t", &i.to_string(), "1");
    }
    let mut more = Vec::new();
    assert_eq!(sub.take_deliveries(10, &mut more), 0, "four retrying: no room for more");
    assert!(!sub.arm(), "nothing the consumer may take now");
    assert_eq!(sub.queue().len(), 4, "the backlog stays in the bounded queue");
    assert_books_balance(&sub);
}

#[test]
fn invalid_settings_are_refused_with_a_stable_code() {
    let bus = bus(8, Overflow::Block);
    let mut opts = retrying(3, Backoff::Fixed, 1, None);
    opts.guarantee = Guarantee::AtMostOnce;
    let err = bus.subscribe("t", SubscribeOptions { delivery: opts, ..bus.subscribe_options() }).err().unwrap();
    assert_eq!(err.code(), "ERR_INVALID_ARG");
    let mut opts = retrying(0, Backoff::Fixed, 1, None);
    assert!(bus.subscribe("t", SubscribeOptions { delivery: opts.clone(), ..bus.subscribe_options() }).is_err());
    opts.retry.max_attempts = 2;
    opts.dead_letter = Some("a.*".into());
    assert!(bus.subscribe("t", SubscribeOptions { delivery: opts, ..bus.subscribe_options() }).is_err());
}

/// A reference model of one event's fate: each delivery consumes the next scripted verdict.
#[derive(Clone, Debug)]
enum V {
    Ack,
    Retry,
    Reject,
    Fail,
}

fn model(script: &[V], max_attempts: u32) -> (u32, &'static str) {
    for (i, v) in script.iter().enumerate() {
        let attempt = i as u32 + 1;
        match v {
            V::Ack => return (attempt, "acked"),
            V::Reject => return (attempt, "dead"),
            V::Retry | V::Fail if attempt >= max_attempts => return (attempt, "dead"),
            _ => {}
        }
    }
    unreachable!("scripts are long enough")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random verdict scripts, keys and attempt limits against the model: each event is
    /// delivered as many times as the model says and ends where it says; per-key, events
    /// finish in publish order; the counters balance.
    #[test]
    fn settle_matches_the_reference_model(
        max_attempts in 1u32..4,
        events in prop::collection::vec(
            (0u8..3, prop::collection::vec(prop_oneof![Just(V::Ack), Just(V::Retry), Just(V::Reject), Just(V::Fail)], 4)),
            1..12,
        ),
    ) {
        let bus = bus(64, Overflow::Block);
        let mut opts = retrying(max_attempts, Backoff::Fixed, 0, Some("dead"));
        opts.ordering = KeyOrdering::PerKey { path: KeyPath::parse("data.k").unwrap() };
        let sub = sub_with(&bus, "t", opts);
        for (i, (k, _)) in events.iter().enumerate() {
            publish(&bus, "t", &i.to_string(), &format!(r#"{{"k":{k}}}"#));
        }
        let mut deliveries: HashMap<usize, u32> = HashMap::new();
        let mut finished: Vec<usize> = Vec::new();
        drive(&bus, &sub, Duration::from_secs(10), |d| {
            let i: usize = id_of(&d.event).parse().unwrap();
            let n = deliveries.entry(i).or_default();
            *n += 1;
            assert_eq!(*n, d.attempt);
            let v = match &events[i].1[(d.attempt - 1) as usize] {
                V::Ack => Outcome::Ack,
                V::Retry => Outcome::Retry("r".into()),
                V::Reject => Outcome::Reject("no".into()),
                V::Fail => Outcome::Fail("f".into()),
            };
            let (attempts, _) = model(&events[i].1, max_attempts);
            if d.attempt == attempts {
                finished.push(i);
            }
            v
        });
        let mut acked = 0;
        let mut dead = 0;
        for (i, (_, script)) in events.iter().enumerate() {
            let (attempts, end) = model(script, max_attempts);
            prop_assert_eq!(deliveries.get(&i).copied(), Some(attempts), "event {}", i);
            if end == "acked" { acked += 1 } else { dead += 1 }
        }
        for k in 0..3u8 {
            let order: Vec<usize> = finished.iter().copied().filter(|i| events[*i].0 == k).collect();
            let mut sorted = order.clone();
            sorted.sort();
            prop_assert_eq!(order, sorted, "key {} finished out of order", k);
        }
        let s = sub.stats();
        prop_assert_eq!((s.delivery.acked, s.delivery.dead_lettered), (acked, dead));
        assert_books_balance(&sub);
    }
}
