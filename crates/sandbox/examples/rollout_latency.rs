//! Publish → handler latency on a deployment's worker, steady state vs while its version is
//! swapped (issue 4: "no p99 spike above 1 ms during a swap").
//!
//!   cargo run --release -p sluice-sandbox --example rollout_latency
//!
//! Knobs (env): ROLLOUT_LAT_RATE events/s (default 5000, well below what one worker handles),
//! ROLLOUT_LAT_WINDOW_MS (200), ROLLOUT_LAT_PAIRS (20), ROLLOUT_LAT_SWAP_EVERY_MS (10),
//! ROLLOUT_LAT_CONCURRENCY (1).
//!
//! A publisher thread publishes at a fixed rate; each event carries its publish time (Unix µs).
//! The worker's own clock stamps the bus's lifecycle records: `handlerStart` (the worker took the
//! event, before a version is picked) and `handlerEnd` (its version's guest returned), so the
//! figures are publish → handler on the worker, with no trip back to a subscriber. Time is cut
//! into windows that alternate steady / swapping (ABBA, so neither kind always comes first); in
//! a swapping window a control thread does `rollout(other hash, 100 %)` + `promote()` every
//! `SWAP_EVERY_MS`. Events are classed by the window they were published in, so machine noise
//! lands on both kinds alike. Reported per kind: p50 / p99 / p99.9 / max, the spike (swapping p99
//! − steady p99) pooled over all windows, and the median over pairs of the per-pair p99 spike.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sluice_core::observe::{unix_now_us, Interest, Kind, Record};
use sluice_core::{Bus, BusOptions, EventInit, Overflow};
use sluice_sandbox::{DeploySpec, Deployments, Limits, RolloutSpec, SandboxOptions, Traffic};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Acks every event; `tag` only changes the bytes (and so the hash).
fn handler(tag: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (i32.const 0))
  (func $tag (result i32) (i32.const {tag})))"#
    ))
    .expect("wat")
}

/// Window `k` is steady or swapping: ABBA pairs.
fn swapping(k: u64) -> bool {
    let pair = k / 2;
    (k % 2 == 1) ^ (pair % 2 == 1)
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn line(name: &str, xs: &mut [u64]) -> (u64, u64) {
    xs.sort_unstable();
    let (p50, p99, p999) = (pct(xs, 0.5), pct(xs, 0.99), pct(xs, 0.999));
    println!(
        "  {name:<44} n {:>6}  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  max {:>6} µs",
        xs.len(),
        p50,
        p99,
        p999,
        xs.last().copied().unwrap_or(0)
    );
    (p50, p99)
}

fn main() {
    let rate = knob("ROLLOUT_LAT_RATE", 5000);
    let window = Duration::from_millis(knob("ROLLOUT_LAT_WINDOW_MS", 200));
    let pairs = knob("ROLLOUT_LAT_PAIRS", 20);
    let swap_every = Duration::from_millis(knob("ROLLOUT_LAT_SWAP_EVERY_MS", 10));
    let concurrency = knob("ROLLOUT_LAT_CONCURRENCY", 1) as usize;
    let windows = pairs * 2;

    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    bus.recorder().set_interest(Interest {
        every: Kind::HandlerStart.bit() | Kind::HandlerEnd.bit(),
        ..Default::default()
    });
    let deployments = Deployments::new(bus.clone());
    let (a, b) = (handler(1), handler(2));
    let spec = DeploySpec {
        topics: vec!["lat.in".into()],
        capacity: Some(1 << 16),
        overflow: Some(Overflow::DropNewest),
        sandbox: SandboxOptions { limits: Limits { timeout_ms: 1000, ..Limits::default() }, concurrency, ..Default::default() },
        ..Default::default()
    };
    let dep = deployments.deploy("lat", &a, &spec).unwrap();
    let step = RolloutSpec { traffic: Traffic { percent: 100.0, ..Traffic::default() }, auto_rollback: None, ..Default::default() };
    // Both versions compiled and seen once before the clock starts.
    dep.rollout(&b, &step, None).unwrap();
    dep.promote(None).unwrap();
    dep.rollback(None, None, None).unwrap();

    let t0 = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (bus, done, published) = (bus.clone(), done.clone(), published.clone());
        thread::spawn(move || {
            let end = window * windows as u32;
            let mut sent = 0u64;
            loop {
                let elapsed = t0.elapsed();
                if elapsed >= end {
                    break;
                }
                let due = (elapsed.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
                while sent < due {
                    let k = (t0.elapsed().as_nanos() / window.as_nanos()) as u64;
                    let mut data = k.to_le_bytes().to_vec();
                    data.extend_from_slice(&unix_now_us().to_le_bytes());
                    let init = EventInit { topic: "lat.in".into(), data, ..Default::default() };
                    if bus.try_publish(init, None).unwrap() {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                }
                thread::sleep(Duration::from_micros(100));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let swapper = {
        let (dep, done) = (dep.clone(), done.clone());
        thread::spawn(move || {
            let (hashes, mut swaps, mut took) = ([a, b], 0usize, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let k = (t0.elapsed().as_nanos() / window.as_nanos()) as u64;
                if swapping(k) && k < windows {
                    let started = Instant::now();
                    dep.rollout(&hashes[(swaps + 1) % 2], &step, None).unwrap();
                    dep.promote(None).unwrap();
                    took.push(started.elapsed().as_micros() as u64);
                    swaps += 1;
                }
                thread::sleep(swap_every);
            }
            (swaps, took)
        })
    };

    // Collect the worker's records while the run goes on (the ring is bounded).
    let mut start: [Vec<Vec<u64>>; 2] = [vec![Vec::new(); windows as usize], vec![Vec::new(); windows as usize]];
    let mut recs: Vec<Record> = Vec::new();
    let mut ends = 0u64;
    // Returns how many handlers ended among the records drained.
    let mut collect = |recs: &mut Vec<Record>| -> u64 {
        let mut ended = 0;
        recs.clear();
        bus.recorder().drain(usize::MAX, recs);
        for r in recs.iter() {
            let Some(ev) = &r.event else { continue };
            let k = u64::from_le_bytes(ev.data[0..8].try_into().unwrap());
            let sent = u64::from_le_bytes(ev.data[8..16].try_into().unwrap());
            let which = usize::from(r.kind == Kind::HandlerEnd);
            ended += which as u64;
            if (k as usize) < windows as usize {
                start[which][k as usize].push(r.at_us.saturating_sub(sent));
            }
        }
        ended
    };
    while !done.load(Ordering::SeqCst) {
        ends += collect(&mut recs);
        thread::sleep(Duration::from_millis(2));
    }
    publisher.join().unwrap();
    let (swaps, mut took) = swapper.join().unwrap();
    let settle = Instant::now();
    while ends < published.load(Ordering::Relaxed) && settle.elapsed() < Duration::from_secs(10) {
        ends += collect(&mut recs);
        thread::sleep(Duration::from_millis(2));
    }
    let lost: u64 = bus.recorder().lost().iter().sum();
    let info = dep.info();
    deployments.stop_all();

    println!(
        "rollout latency — {rate} events/s, {pairs} pairs of {} ms windows (steady / swapping, ABBA), swap every {} ms, concurrency {concurrency}",
        window.as_millis(),
        swap_every.as_millis()
    );
    println!(
        "  published {}, handled {} (records lost {lost}); {swaps} swaps (rollout 100 % + promote), control side p50 {} µs p99 {} µs",
        published.load(Ordering::Relaxed),
        info.outcomes.ack,
        {
            took.sort_unstable();
            pct(&took, 0.5)
        },
        pct(&took, 0.99)
    );
    for (which, what) in [(0, "publish → handler start (worker)"), (1, "publish → handler end (worker)")] {
        let by_kind = |swap: bool| -> Vec<u64> {
            (0..windows).filter(|k| swapping(*k) == swap).flat_map(|k| start[which][k as usize].iter().copied()).collect()
        };
        let (_, steady) = line(&format!("{what}, steady"), &mut by_kind(false));
        let (_, swap) = line(&format!("{what}, swapping"), &mut by_kind(true));
        let mut spikes: Vec<i64> = (0..pairs)
            .map(|p| {
                let p99 = |k: u64| {
                    let mut v = start[which][k as usize].clone();
                    v.sort_unstable();
                    pct(&v, 0.99) as i64
                };
                let (x, y) = (2 * p, 2 * p + 1);
                if swapping(x) { p99(x) - p99(y) } else { p99(y) - p99(x) }
            })
            .collect();
        spikes.sort_unstable();
        println!(
            "  {:<44} pooled {:+} µs; per pair median {:+} µs (min {:+}, max {:+})",
            format!("{what}, spike (swap p99 − steady p99)"),
            swap as i64 - steady as i64,
            spikes[spikes.len() / 2],
            spikes[0],
            spikes[spikes.len() - 1]
        );
    }
}
