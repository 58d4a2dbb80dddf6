//! Every overflow policy at the capacity boundary, against a reference model; blocked publishers
//! (unblock, deadline, cancel, close); expiry of events whose publisher Context ended.

mod common;

use common::*;
use proptest::prelude::*;
use sluice_core::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum Op {
    /// `Bus::publish`; `expiring` attaches a cancelable Context that `CancelExpiring` ends.
    Publish { expiring: bool },
    TryPublish { expiring: bool },
    Take(usize),
    /// Cancels every Context handed out by `expiring` publishes so far.
    CancelExpiring,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(|expiring| Op::Publish { expiring }),
        3 => any::<bool>().prop_map(|expiring| Op::TryPublish { expiring }),
        3 => (0usize..6).prop_map(Op::Take),
        1 => Just(Op::CancelExpiring),
    ]
}

fn policy() -> impl Strategy<Value = Overflow> {
    prop_oneof![Just(Overflow::Block), Just(Overflow::DropNewest), Just(Overflow::DropOldest), Just(Overflow::Error)]
}

/// The model: a VecDeque of (seq, expiring-context index) and the counters we expect.
#[derive(Default)]
struct Model {
    q: VecDeque<(u64, Option<usize>)>,
    canceled_upto: usize,
    s: QueueStats,
}

impl Model {
    fn expired(&self, ctx: Option<usize>) -> bool {
        ctx.is_some_and(|i| i < self.canceled_upto)
    }
}

fn run_model(capacity: usize, policy: Overflow, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let bus = bus(capacity, policy);
    let sub = bus.subscribe("m.t", bus.subscribe_options()).unwrap();
    let root = Context::background();
    let mut ctxs: Vec<Context> = Vec::new();
    let mut m = Model::default();
    m.s.capacity = capacity as u64;
    let mut offered = 0u64;
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Publish { expiring } | Op::TryPublish { expiring } => {
                let is_try = matches!(op, Op::TryPublish { .. });
                seq += 1;
                offered += 1;
                let ctx_idx = expiring.then(|| {
                    ctxs.push(root.with_cancel());
                    ctxs.len() - 1
                });
                let full = m.q.len() == capacity;
                // What the model says happens.
                let mut accepted = true;
                if !full {
                    m.q.push_back((seq, ctx_idx));
                    m.s.published += 1;
                } else {
                    match policy {
                        Overflow::DropNewest => {
                            m.s.dropped_newest += 1;
                            accepted = false;
                        }
                        Overflow::DropOldest => {
                            let (_, old_ctx) = m.q.pop_front().unwrap();
                            // A displaced event is counted dropped_oldest even if it was expired.
                            let _ = old_ctx;
                            m.s.dropped_oldest += 1;
                            m.q.push_back((seq, ctx_idx));
                            m.s.published += 1;
                        }
                        Overflow::Error => {
                            m.s.dropped_full += 1;
                            accepted = false;
                        }
                        Overflow::Block if is_try => {
                            m.s.dropped_full += 1;
                            accepted = false;
                        }
                        Overflow::Block => {
                            // The publisher waits; its Context ends; the event is dropped (canceled).
                            m.s.dropped_canceled += 1;
                            accepted = false;
                        }
                        Overflow::Spill => unreachable!(),
                    }
                }
                // What the bus does.
                let init = init("m.t", 0, seq);
                if is_try {
                    let ctx = ctx_idx.map(|i| &ctxs[i]);
                    prop_assert_eq!(bus.try_publish(init, ctx).unwrap(), accepted, "try_publish #{} full={}", seq, full);
                } else if full && policy == Overflow::Block {
                    // Give this publish its own Context so we can end the wait.
                    let waiter = ctx_idx.map_or_else(|| root.with_cancel(), |i| ctxs[i].with_cancel());
                    match bus.publish(init, Some(&waiter)).unwrap() {
                        Delivery::Pending(p) => {
                            prop_assert_eq!(sub.stats().queue.depth, capacity as u64);
                            waiter.cancel(Some("test"));
                            prop_assert_eq!(p.wait().unwrap_err().kind(), ErrorKind::Canceled);
                        }
                        Delivery::Done { .. } => prop_assert!(false, "block on a full queue must be Pending"),
                    }
                } else {
                    let ctx = ctx_idx.map(|i| &ctxs[i]);
                    match (bus.publish(init, ctx), policy, full) {
                        (Err(e), Overflow::Error, true) => prop_assert_eq!(e.code(), "ERR_QUEUE_FULL"),
                        (Ok(Delivery::Done { accepted: a }), _, _) => prop_assert_eq!(a, accepted),
                        (other, _, _) => prop_assert!(false, "publish #{} full={} gave {:?}", seq, full, other.map(|_| ())),
                    }
                }
            }
            Op::Take(n) => {
                let mut want = Vec::new();
                while want.len() < n {
                    let Some((s, c)) = m.q.pop_front() else { break };
                    if m.expired(c) {
                        m.s.expired += 1;
                    } else {
                        want.push(s);
                    }
                }
                m.s.delivered += want.len() as u64;
                let mut out = Vec::new();
                let got = sub.take(n, &mut out);
                prop_assert_eq!(got, out.len());
                let got: Vec<u64> = out.iter().map(|e| tag(e).1).collect();
                prop_assert_eq!(got, want);
            }
            Op::CancelExpiring => {
                for c in &ctxs {
                    c.cancel(None);
                }
                m.canceled_upto = ctxs.len();
            }
        }
        m.s.depth = m.q.len() as u64;
        let actual = sub.stats().queue;
        prop_assert_eq!(&actual, &m.s);
        assert_balanced(&actual);
        prop_assert_eq!(offered, actual.published + actual.dropped_newest + actual.dropped_full + actual.dropped_canceled);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn policies_match_the_reference_model(
        capacity in 1usize..16,
        policy in policy(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        run_model(capacity, policy, ops)?;
    }
}

fn fill(policy: Overflow, capacity: usize, n: u64) -> (Bus, Arc<Subscription>) {
    let bus = bus(capacity, policy);
    let sub = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    for s in 0..n {
        let _ = bus.try_publish(init("b.t", 0, s), None).unwrap();
    }
    (bus, sub)
}

#[test]
fn drop_newest_keeps_the_first_and_drop_oldest_the_last() {
    let (_b, sub) = fill(Overflow::DropNewest, 4, 10);
    assert_eq!(drain(&sub).iter().map(|t| t.1).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(sub.stats().queue.dropped_newest, 6);
    let (_b, sub) = fill(Overflow::DropOldest, 4, 10);
    assert_eq!(drain(&sub).iter().map(|t| t.1).collect::<Vec<_>>(), vec![6, 7, 8, 9]);
    assert_eq!(sub.stats().queue.dropped_oldest, 6);
}

#[test]
fn error_and_block_refuse_at_the_boundary() {
    let (bus, sub) = fill(Overflow::Error, 3, 3);
    let e = match bus.publish(init("b.t", 0, 3), None) {
        Err(e) => e,
        Ok(_) => panic!("a full error-policy subscription accepted a publish"),
    };
    assert_eq!(e.code(), "ERR_QUEUE_FULL");
    assert!(!bus.try_publish(init("b.t", 0, 4), None).unwrap());
    assert_eq!(sub.stats().queue.dropped_full, 2);
    assert_eq!(drain(&sub).len(), 3);

    let (bus, sub) = fill(Overflow::Block, 3, 3);
    assert!(!bus.try_publish(init("b.t", 0, 3), None).unwrap(), "try_publish never waits");
    assert_eq!(sub.stats().queue.dropped_full, 1);
    assert!(matches!(bus.publish(init("b.t", 0, 4), None).unwrap(), Delivery::Pending(_)));
    // One below the boundary is never Pending.
    sub.take(1, &mut Vec::new());
    assert!(matches!(bus.publish(init("b.t", 0, 5), None).unwrap(), Delivery::Done { accepted: true }));
}

/// A `block` subscription of capacity 1 holding one event, and a publish of a second that waits.
fn blocked(ctx: Option<Context>) -> (Arc<Bus>, Arc<Subscription>, PendingPublish) {
    let bus = Arc::new(bus(1, Overflow::Block));
    let sub = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    publish_wait(&bus, init("b.t", 0, 0), None).unwrap();
    match bus.publish(init("b.t", 0, 1), ctx.as_ref()).unwrap() {
        Delivery::Pending(p) => (bus, sub, p),
        Delivery::Done { .. } => panic!("expected Pending"),
    }
}

#[test]
fn blocked_publisher_unblocks_when_a_consumer_takes() {
    // A parked publisher also wakes every 100 ms on its own, so a single fast wake proves little:
    // over several rounds, the median wake-up after `take` must be far below that poll.
    let mut wakeups = Vec::new();
    for _ in 0..5 {
        let (_bus, sub, pending) = blocked(None);
        let waiter = thread::spawn(move || {
            let r = pending.wait();
            (r, Instant::now())
        });
        let t0 = Instant::now();
        while sub.stats().queue.blocked_publishers == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "publisher never parked");
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "publisher returned while the queue was still full");
        let t1 = Instant::now();
        assert_eq!(drain(&sub), vec![(0, 0)]);
        let (r, done) = waiter.join().unwrap();
        r.unwrap();
        wakeups.push(done - t1);
        assert_eq!(drain(&sub), vec![(0, 1)]);
        let s = sub.stats().queue;
        assert_eq!((s.published, s.delivered, s.blocked_publishers), (2, 2, 0));
    }
    wakeups.sort();
    assert!(wakeups[2] < Duration::from_millis(25), "woken by the poll, not by take: {wakeups:?}");
}

#[test]
fn blocked_publisher_times_out_with_deadline_exceeded() {
    // The deadline starts after the queue is full, so a slow (loaded) setup cannot spend it before
    // the publish; the upper bound only proves it ended by the deadline, not by some later poll.
    let bus = Arc::new(bus(1, Overflow::Block));
    let sub = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    publish_wait(&bus, init("b.t", 0, 0), None).unwrap();
    let timeout = Duration::from_millis(150);
    let t0 = Instant::now();
    let ctx = Context::background().with_timeout(timeout);
    let pending = match bus.publish(init("b.t", 0, 1), Some(&ctx)).unwrap() {
        Delivery::Pending(p) => p,
        Delivery::Done { .. } => panic!("expected Pending"),
    };
    let err = pending.wait().unwrap_err();
    assert_eq!(err.code(), "ERR_DEADLINE_EXCEEDED");
    let took = t0.elapsed();
    assert!(took >= timeout - Duration::from_millis(5) && took < Duration::from_secs(5), "{took:?}");
    let s = sub.stats().queue;
    assert_eq!((s.published, s.dropped_canceled, s.depth), (1, 1, 1));
    assert_eq!(drain(&sub), vec![(0, 0)], "the timed-out event never entered the queue");
}

#[test]
fn blocked_publisher_canceled_from_another_thread_returns_promptly() {
    // A parked publisher also polls every 100 ms, so besides the < 100 ms bound, the median over
    // several rounds must be far below the poll: the cancel itself must wake it.
    let mut latencies = Vec::new();
    for cancel_parent in [false, true, false, true, false, true] {
        let parent = Context::background().with_cancel();
        let ctx = parent.with_timeout(Duration::from_secs(30));
        let (_bus, sub, pending) = blocked(Some(ctx.clone()));
        let waiter = thread::spawn(move || {
            let r = pending.wait();
            (r, Instant::now())
        });
        while sub.stats().queue.blocked_publishers == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        if cancel_parent { parent.cancel(Some("shutdown")) } else { ctx.cancel(Some("user")) }
        let (r, t1) = waiter.join().unwrap();
        let err = r.unwrap_err();
        assert_eq!(err.code(), "ERR_CANCELED");
        assert!(err.message().contains(if cancel_parent { "shutdown" } else { "user" }), "{err}");
        assert!(t1 - t0 < Duration::from_millis(100), "cancel took {:?}", t1 - t0);
        assert_eq!(sub.stats().queue.dropped_canceled, 1);
        latencies.push(t1 - t0);
    }
    latencies.sort();
    assert!(latencies[3] < Duration::from_millis(25), "woken by the poll, not by cancel: {latencies:?}");
}

#[test]
fn blocked_publisher_gets_closed_when_unsubscribed() {
    // Directly on the queue, the waiting push fails with ERR_CLOSED.
    let bus = Arc::new(bus(1, Overflow::Block));
    let sub = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    publish_wait(&bus, init("b.t", 0, 0), None).unwrap();
    let ev = bus.make_event(init("b.t", 0, 1), None).unwrap();
    let s2 = sub.clone();
    let waiter = thread::spawn(move || s2.queue().push_blocking(ev, None));
    while sub.stats().queue.blocked_publishers == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    assert!(bus.unsubscribe(sub.id()));
    assert_eq!(waiter.join().unwrap().unwrap_err().code(), "ERR_CLOSED");
    assert!(t0.elapsed() < Duration::from_millis(95), "woken by the poll, not by close: {:?}", t0.elapsed());
    let s = sub.stats().queue;
    assert_eq!((s.published, s.dropped_closed, s.depth), (2, 2, 0), "{s:?}");

    // Through Bus::publish, the wait ends too; the event is counted dropped_closed.
    let (bus, sub, pending) = blocked(None);
    let waiter = thread::spawn(move || pending.wait());
    while sub.stats().queue.blocked_publishers == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(bus.unsubscribe(sub.id()));
    let _ = waiter.join().unwrap();
    let s = sub.stats().queue;
    assert_eq!((s.published, s.dropped_closed, s.depth), (2, 2, 0), "{s:?}");
}

#[test]
fn events_whose_context_ended_are_expired_not_delivered() {
    let bus = bus(16, Overflow::Block);
    let sub = bus.subscribe("e.t", bus.subscribe_options()).unwrap();
    let parent = Context::background().with_cancel();
    let canceled = parent.with_value("k", "v");
    let short = Context::background().with_timeout(Duration::from_millis(30));
    let long = Context::background().with_timeout(Duration::from_secs(30));
    let deadline_only = Context::background().with_deadline(Deadline::after(Duration::from_millis(30)));
    let plan: [(Option<&Context>, bool); 6] =
        [(None, true), (Some(&canceled), false), (Some(&long), true), (Some(&short), false), (Some(&deadline_only), false), (Some(&parent), false)];
    for (i, (ctx, _)) in plan.iter().enumerate() {
        publish_wait(&bus, init("e.t", 0, i as u64), *ctx).unwrap();
    }
    parent.cancel(None);
    thread::sleep(Duration::from_millis(40));
    let want: Vec<u64> = plan.iter().enumerate().filter(|(_, p)| p.1).map(|(i, _)| i as u64).collect();
    let got: Vec<u64> = drain(&sub).into_iter().map(|t| t.1).collect();
    assert_eq!(got, want);
    let s = sub.stats().queue;
    assert_eq!((s.published, s.delivered, s.expired, s.depth), (6, 2, 4, 0), "{s:?}");
    assert_balanced(&s);
    // The deadline travels with the event.
    publish_wait(&bus, init("e.t", 0, 9), Some(&long)).unwrap();
    let mut out = Vec::new();
    sub.take(1, &mut out);
    assert_eq!(out[0].deadline, long.deadline());
}

#[test]
fn publishing_under_an_ended_context_fails_up_front() {
    let bus = bus(4, Overflow::Block);
    let sub = bus.subscribe("e.t", bus.subscribe_options()).unwrap();
    let c = Context::background().with_cancel();
    c.cancel(None);
    assert_eq!(bus.publish(init("e.t", 0, 0), Some(&c)).err().unwrap().code(), "ERR_CANCELED");
    let d = Context::background().with_timeout(Duration::from_millis(1));
    thread::sleep(Duration::from_millis(5));
    assert_eq!(bus.try_publish(init("e.t", 0, 1), Some(&d)).unwrap_err().code(), "ERR_DEADLINE_EXCEEDED");
    assert_eq!(sub.stats().queue.published, 0);
}
