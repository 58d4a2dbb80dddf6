//! Route reads under subscribe/unsubscribe churn: the core's lock-free copy-on-write snapshot
//! (`Router::for_each_match`, ArcSwap) against an `RwLock<HashMap>` + wildcard `Vec` baseline with
//! the same read path. One reader thread resolves `order.created` (3 exact + 3 matching wildcard
//! subscriptions, plus non-matching ones) while another thread adds and removes subscriptions as
//! fast as it can (and, separately, paced at about one change per 100 µs). A second table drops
//! the wildcards to show the cost of reaching the table without pattern matching.
//! Plain `fn main()`; run with `cargo bench -p sluice-core --bench route_churn`.

use sluice_core::router::Router;
use sluice_core::{Bus, BusOptions, Subscription};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

const TOPIC: &str = "order.created";
const RUN: Duration = Duration::from_millis(1000);

/// The baseline: the same tables as the core's router, behind one RwLock, mutated in place.
#[derive(Default)]
struct LockedRoutes {
    inner: RwLock<Tables>,
}

#[derive(Default)]
struct Tables {
    exact: HashMap<Box<str>, Vec<Arc<Subscription>>>,
    wildcard: Vec<Arc<Subscription>>,
}

impl LockedRoutes {
    fn add(&self, sub: Arc<Subscription>) {
        let mut t = self.inner.write().unwrap();
        if sub.pattern().is_exact() {
            t.exact.entry(sub.pattern().as_str().into()).or_default().push(sub);
        } else {
            t.wildcard.push(sub);
        }
    }
    fn remove(&self, id: u64) {
        let mut t = self.inner.write().unwrap();
        if let Some(i) = t.wildcard.iter().position(|s| s.id() == id) {
            t.wildcard.remove(i);
            return;
        }
        let mut empty = None;
        for (k, v) in t.exact.iter_mut() {
            if let Some(i) = v.iter().position(|s| s.id() == id) {
                v.remove(i);
                if v.is_empty() {
                    empty = Some(k.clone());
                }
                break;
            }
        }
        if let Some(k) = empty {
            t.exact.remove(&k);
        }
    }
    #[inline]
    fn for_each_match(&self, topic: &str, mut f: impl FnMut(&Arc<Subscription>)) {
        let t = self.inner.read().unwrap();
        if let Some(subs) = t.exact.get(topic) {
            subs.iter().for_each(&mut f);
        }
        for s in &t.wildcard {
            if s.pattern().matches(topic) {
                f(s);
            }
        }
    }
}

trait Routes: Sync {
    fn add(&self, sub: Arc<Subscription>);
    fn remove(&self, id: u64);
    fn read(&self, topic: &str) -> u64;
}

impl Routes for Router {
    fn add(&self, sub: Arc<Subscription>) {
        Router::add(self, sub)
    }
    fn remove(&self, id: u64) {
        Router::remove(self, id);
    }
    #[inline]
    fn read(&self, topic: &str) -> u64 {
        let mut n = 0;
        self.for_each_match(topic, |s| n += s.id() & 1 | 1);
        n
    }
}

impl Routes for LockedRoutes {
    fn add(&self, sub: Arc<Subscription>) {
        LockedRoutes::add(self, sub)
    }
    fn remove(&self, id: u64) {
        LockedRoutes::remove(self, id)
    }
    #[inline]
    fn read(&self, topic: &str) -> u64 {
        let mut n = 0;
        self.for_each_match(topic, |s| n += s.id() & 1 | 1);
        n
    }
}

const STABLE: &[&str] = &[
    "order.created", "order.created", "order.created", // 3 exact on the read topic
    "order.shipped", "user.created", "payment.settled",  // exact elsewhere
    "order.*", "order.>", "*.created",                    // 3 matching wildcards
    "user.*", "payment.>", "*.shipped",                   // 3 non-matching wildcards
];
const CHURN: &[&str] = &["order.created", "order.*", "inventory.updated", "inventory.*", "order.created.eu", "*.created"];
/// The same without wildcards: isolates the cost of reaching the table from wildcard matching.
const STABLE_EXACT: &[&str] = &["order.created", "order.created", "order.created", "order.shipped", "user.created", "payment.settled"];
const CHURN_EXACT: &[&str] = &["order.created", "inventory.updated", "order.created.eu", "user.created"];

struct Result {
    ns_per_read: f64,
    churn_ops: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Churn {
    None,
    /// One add+remove round of every churn subscription per millisecond (~12 k changes/s).
    Paced,
    /// Add and remove in a tight loop.
    Flat,
}

fn measure(routes: &dyn Routes, churn_subs: &[Arc<Subscription>], churn: Churn, min_matches: u64) -> Result {
    let stop = AtomicBool::new(false);
    let churn_ops = AtomicU64::new(0);
    thread::scope(|s| {
        if churn != Churn::None {
            s.spawn(|| {
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for sub in churn_subs {
                        routes.add(sub.clone());
                    }
                    for sub in churn_subs {
                        routes.remove(sub.id());
                    }
                    ops += 2 * churn_subs.len() as u64;
                    if churn == Churn::Paced {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                churn_ops.store(ops, Ordering::Relaxed);
            });
        }
        // Warm up, then measure in chunks so the clock is read rarely.
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(200) {
            for _ in 0..1000 {
                black_box(routes.read(black_box(TOPIC)));
            }
        }
        let mut reads = 0u64;
        let mut matched = 0u64;
        let t0 = Instant::now();
        while t0.elapsed() < RUN {
            for _ in 0..1000 {
                matched += black_box(routes.read(black_box(TOPIC)));
            }
            reads += 1000;
        }
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        assert!(matched >= reads * min_matches, "every read must see the stable matches");
        Result { ns_per_read: elapsed.as_nanos() as f64 / reads as f64, churn_ops: 0 }
    })
    .with_churn(churn_ops.load(Ordering::Relaxed))
}

impl Result {
    fn with_churn(mut self, ops: u64) -> Self {
        self.churn_ops = ops;
        self
    }
}

fn table(stable_pats: &[&str], churn_pats: &[&str], min_matches: u64) {
    let bus = Bus::new(BusOptions { capacity: 1, ..Default::default() }).unwrap();
    let sub = |p: &str| bus.subscribe(p, bus.subscribe_options()).unwrap();
    let stable: Vec<_> = stable_pats.iter().map(|p| sub(p)).collect();
    let churn_subs: Vec<_> = churn_pats.iter().map(|p| sub(p)).collect();
    let snapshot = Router::default();
    let locked = LockedRoutes::default();
    for s in &stable {
        Routes::add(&snapshot, s.clone());
        Routes::add(&locked, s.clone());
    }
    println!(
        "route read of '{TOPIC}': {} stable subscriptions ({min_matches} match: {}); the churn thread adds+removes {} more",
        stable_pats.len(),
        if stable_pats.iter().any(|p| p.contains(['*', '>'])) { "exact + wildcard" } else { "exact only" },
        churn_pats.len()
    );
    println!("{:<40} {:>9} {:>11} {:>14}", "case", "ns/read", "M reads/s", "changes/s");
    let mut rows = Vec::new();
    for (churn, tag) in [(Churn::None, ""), (Churn::Paced, ", paced churn"), (Churn::Flat, ", flat-out churn")] {
        for (name, routes) in [("arc-swap snapshot (core)", &snapshot as &dyn Routes), ("RwLock<HashMap>+Vec", &locked)] {
            let r = measure(routes, &churn_subs, churn, min_matches);
            let label = format!("{name}{tag}");
            let rate = if churn == Churn::None { "-".into() } else { format!("{:.0}", r.churn_ops as f64 / RUN.as_secs_f64()) };
            println!("{:<40} {:>9.1} {:>11.2} {:>14}", label, r.ns_per_read, 1e3 / r.ns_per_read, rate);
            rows.push(r.ns_per_read);
        }
    }
    for (i, what) in ["no churn", "paced churn", "flat-out churn"].iter().enumerate() {
        println!("  RwLock / snapshot ns per read, {what:<15} {:.2}x", rows[2 * i + 1] / rows[2 * i]);
    }
    println!();
}

fn main() {
    table(STABLE, CHURN, 6);
    table(STABLE_EXACT, CHURN_EXACT, 3);
}
