//! Real threads: concurrent producers and consumers on `block` subscriptions, with the consumer
//! wake protocol (`arm()` + waker) and blocked publishers parking and being woken by `take`.

mod common;

use common::*;
use proptest::prelude::*;
use sluice_core::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

type Consumer = thread::JoinHandle<Vec<(u64, u64)>>;

struct Consumed {
    /// Per consumer, the tags in the order that consumer took them.
    per_consumer: Vec<Vec<(u64, u64)>>,
    wakes: u64,
}

/// Starts `n` consumers on `sub`. Each takes in batches, arms the queue before sleeping and parks
/// without a timeout, so a lost wake-up shows as a stall (caught by the caller's watchdog).
/// Returns once every consumer has armed the queue at least once, so the first push must wake.
fn spawn_consumers(
    sub: &Arc<Subscription>,
    n: usize,
    stop: &Arc<AtomicBool>,
    received: &Arc<AtomicU64>,
) -> (Vec<Consumer>, Arc<AtomicU64>) {
    let armed_once = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for _ in 0..n {
        let (sub, stop, received, armed_once, start) =
            (sub.clone(), stop.clone(), received.clone(), armed_once.clone(), start.clone());
        handles.push(thread::spawn(move || {
            start.wait(); // the waker is installed before anyone arms
            let mut got = Vec::new();
            let mut buf = Vec::new();
            let mut first_arm = true;
            loop {
                buf.clear();
                let n = sub.take(7, &mut buf);
                got.extend(buf.iter().map(|e| tag(e)));
                received.fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 {
                    continue;
                }
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let raced = sub.queue().arm();
                if first_arm {
                    first_arm = false;
                    armed_once.fetch_add(1, Ordering::SeqCst);
                }
                if raced {
                    continue;
                }
                thread::park();
            }
            got
        }));
    }
    let threads: Vec<thread::Thread> = handles.iter().map(|h| h.thread().clone()).collect();
    let wakes = Arc::new(AtomicU64::new(0));
    let w = wakes.clone();
    sub.queue()
        .set_waker(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
            threads.iter().for_each(|t| t.unpark());
        }))
        .unwrap();
    start.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while armed_once.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "consumers never armed");
        thread::yield_now();
    }
    (handles, wakes)
}

fn check_consumed(what: &str, c: &Consumed, producers: u64, per: u64) {
    let mut seen = HashSet::new();
    for (ci, list) in c.per_consumer.iter().enumerate() {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &(p, s) in list {
            assert!(seen.insert((p, s)), "{what}: event {p}:{s} delivered twice");
            if let Some(prev) = last.insert(p, s) {
                assert!(prev < s, "{what}: consumer {ci} saw publisher {p}'s {s} after {prev}");
            }
        }
    }
    for p in 0..producers {
        for s in 0..per {
            assert!(seen.contains(&(p, s)), "{what}: event {p}:{s} lost");
        }
    }
    assert_eq!(seen.len() as u64, producers * per, "{what}: unexpected extra events");
    assert!(c.wakes >= 1, "{what}: the consumers armed before the first push but were never woken");
}

/// `producers` threads publish `per` events each to `orders.created`; two `block` subscriptions
/// (exact with `cap_exact`, wildcard `orders.*` with `cap_wild`) each have `consumers` threads.
fn run_mpmc(producers: u64, consumers: usize, per: u64, cap_exact: usize, cap_wild: usize) {
    let bus = Arc::new(bus(cap_exact, Overflow::Block));
    let exact = bus.subscribe("orders.created", bus.subscribe_options()).unwrap();
    let wild = bus.subscribe("orders.*", opts(cap_wild, Overflow::Block)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (h_exact, w_exact) = spawn_consumers(&exact, consumers, &stop, &received);
    let (h_wild, w_wild) = spawn_consumers(&wild, consumers, &stop, &received);

    let root = Context::background().with_cancel();
    let producers_done = Arc::new(AtomicU64::new(0));
    let mut ph = Vec::new();
    for p in 0..producers {
        let (bus, root, done) = (bus.clone(), root.clone(), producers_done.clone());
        ph.push(thread::spawn(move || {
            // Half the publishers wait under a live Context (cancel registration path).
            let ctx = (p % 2 == 1).then(|| root.with_cancel());
            for s in 0..per {
                publish_wait(&bus, init("orders.created", p, s), ctx.as_ref()).unwrap();
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let expected = 2 * producers * per;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Relaxed) < expected {
        assert!(
            Instant::now() < deadline,
            "stalled: {} of {expected} received, {} of {producers} producers done; exact {:?} wild {:?}",
            received.load(Ordering::Relaxed),
            producers_done.load(Ordering::SeqCst),
            exact.stats().queue,
            wild.stats().queue
        );
        thread::sleep(Duration::from_millis(1));
    }
    for h in ph {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    let collect = |hs: Vec<Consumer>| {
        for h in &hs {
            h.thread().unpark();
        }
        hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    };
    let c_exact = Consumed { per_consumer: collect(h_exact), wakes: w_exact.load(Ordering::Relaxed) };
    let c_wild = Consumed { per_consumer: collect(h_wild), wakes: w_wild.load(Ordering::Relaxed) };
    check_consumed("exact", &c_exact, producers, per);
    check_consumed("wildcard", &c_wild, producers, per);
    for sub in [&exact, &wild] {
        let s = sub.stats().queue;
        assert_balanced(&s);
        assert_eq!((s.published, s.delivered, s.depth), (producers * per, producers * per, 0), "{s:?}");
        assert_eq!(s.dropped(), 0, "{s:?}");
        assert_eq!(s.blocked_publishers, 0);
    }
    let bs = bus.stats();
    assert_eq!((bs.published, bs.unrouted), (producers * per, 0));
}

#[test]
fn four_producers_two_consumers_tiny_queues() {
    // Capacity 1 and 2: almost every publish blocks, so the park/unpark path runs constantly.
    run_mpmc(4, 2, 2000, 2, 1);
}

#[test]
fn two_producers_one_consumer() {
    run_mpmc(2, 1, 5000, 8, 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn no_loss_no_duplicates_per_publisher_order(
        producers in 2u64..=4,
        consumers in 1usize..=2,
        per in 20u64..250,
        cap_exact in 1usize..12,
        cap_wild in 1usize..6,
    ) {
        run_mpmc(producers, consumers, per, cap_exact, cap_wild);
    }
}
