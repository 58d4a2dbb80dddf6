//! The supervisor restarts dead helpers and redelivers what was in flight (at-least-once),
//! gives up on an event that keeps killing helpers, and loses nothing under random kill -9.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sluice_isolate::{Completion, HelperOptions, Supervisor, SupervisorOptions};
use sluice_sandbox::{ErrorKind, Outcome, SandboxOptions};

fn supervisor<T>(wat: &str, sandbox: SandboxOptions) -> Supervisor<T> {
    let mut opts = SupervisorOptions::new(HelperOptions::new(helper_path()));
    opts.restart_attempts = 5;
    Supervisor::start(opts, wat::parse_str(wat).unwrap().into(), sandbox).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[test]
fn random_kill_9_during_100k_events_loses_none() {
    let mut sup: Supervisor<u32> = supervisor(EMITTER, options());
    let switch = sup.kill_switch();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let killer = std::thread::spawn(move || {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (Instant::now().elapsed().as_nanos() as u64);
        let mut kills = 0;
        while !stop.load(Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::thread::sleep(Duration::from_millis(10 + x % 40));
            kills += switch.kill() as u32;
        }
        kills
    });
    let total = 100_000u32;
    let env = envelope("e", br#"{"n":1}"#);
    let mut completions = vec![0u8; total as usize];
    let (mut next, mut finished, mut gave_up) = (0u32, 0u32, 0u32);
    let mut out = Vec::new();
    let started = Instant::now();
    while finished < total {
        while next < total {
            match sup.submit(next, env.clone(), None) {
                Ok(()) => next += 1,
                Err(_) => break,
            }
        }
        out.clear();
        sup.poll(&mut out, Duration::from_millis(50));
        for c in out.drain(..) {
            let item = match c {
                Completion::Done { item, result, .. } => {
                    assert_eq!(result.outcome, Outcome::Ack);
                    item
                }
                Completion::GaveUp { item, .. } => {
                    gave_up += 1;
                    item
                }
            };
            completions[item as usize] += 1;
            finished += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "stream stalled at {finished}");
    }
    done.store(true, Ordering::Relaxed);
    let kills = killer.join().unwrap();
    let lost = completions.iter().filter(|c| **c == 0).count();
    let twice = completions.iter().filter(|c| **c > 1).count();
    let stats = sup.stats().clone();
    let mut lat: Vec<Duration> = stats.redelivery_latency.iter().copied().collect();
    lat.sort();
    eprintln!(
        "kill -9 stream: {total} events in {:?}, kills sent {kills}, deaths {}, helpers started {}, lost {lost}, \
         redelivered (possible duplicates) {}, gave up {gave_up}, redelivery latency p50 {:?} p99 {:?} max {:?}",
        started.elapsed(),
        stats.deaths,
        stats.helpers_started,
        stats.redelivered,
        lat.first().map(|_| percentile(&lat, 0.5)).unwrap_or_default(),
        lat.first().map(|_| percentile(&lat, 0.99)).unwrap_or_default(),
        lat.last().copied().unwrap_or_default(),
    );
    assert_eq!(lost, 0, "events lost");
    assert_eq!(twice, 0, "an event was reported twice");
    assert!(stats.deaths > 0 && kills > 0, "the helper was never killed: the test proved nothing");
    assert_eq!(stats.helpers_started, stats.deaths + 1);
    assert_eq!(sup.in_flight(), 0);
}

#[test]
fn an_event_that_keeps_killing_helpers_is_given_up_after_max_kills() {
    let mut sandbox = options();
    sandbox.limits.timeout_ms = 2_000;
    let mut sup: Supervisor<&str> = supervisor(SPINNER, sandbox);
    let env = envelope("e", b"{}");
    sup.submit("poison", env.clone(), None).unwrap();
    sup.submit("behind", env, Some(Instant::now() + Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let mut pids = vec![sup.pid().unwrap()];
    for _ in 0..3 {
        // Let the helper start on the first event, then kill it mid-event.
        sup.poll(&mut out, Duration::from_millis(50));
        assert!(sup.kill_switch().kill());
        while sup.pid() == Some(*pids.last().unwrap()) {
            sup.poll(&mut out, Duration::from_millis(10));
        }
        pids.push(sup.pid().unwrap());
    }
    let gave_up: Vec<_> = out.iter().filter_map(|c| match c { Completion::GaveUp { item, kills, .. } => Some((*item, *kills)), _ => None }).collect();
    assert_eq!(gave_up, vec![("poison", 3)]);
    assert_eq!(sup.stats().gave_up, 1);
    assert_eq!(sup.stats().deaths, 3);
    // The event behind it was never charged and finishes on the fourth helper.
    while sup.in_flight() > 0 {
        sup.poll(&mut out, Duration::from_millis(100));
    }
    match out.last().unwrap() {
        Completion::Done { item: "behind", result, attempts: 4 } => {
            assert_eq!(result.outcome.error_kind(), Some(ErrorKind::Timeout))
        }
        other => panic!("{other:?}"),
    }
    let mut unique = pids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "a new helper each time: {pids:?}");
}
