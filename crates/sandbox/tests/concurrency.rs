//! `handle` from several threads at once, and the pool bound.

mod common;
use common::*;
use sluice_sandbox::{ErrorKind, Limits, Outcome, SandboxOptions};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[test]
fn concurrent_handle_from_four_threads() {
    let sb = Arc::new(deploy(
        "probe",
        SandboxOptions {
            concurrency: 2,
            ..opts(&["fraud.*"])
        },
    ));
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (sb, barrier) = (sb.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..200 {
                    let mut p = Probe::new(0);
                    let payload = format!("{t}:{i}");
                    p.emit("fraud.flagged", payload.as_bytes());
                    let r = p.run(&sb);
                    assert_eq!(r.outcome, Outcome::Ack);
                    // Each result carries its own emit, never another thread's.
                    assert_eq!(r.emits.len(), 1);
                    assert_eq!(r.emits[0].data, payload.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let info = sb.info();
    // Counted in per-thread stripes; every one of them is summed.
    assert_eq!(info.outcomes.ack, 800);
    assert_eq!(info.emits_accepted, 800);
    assert_eq!(info.latency.count, 800);
    assert!(
        info.instances.created <= 2,
        "never more than concurrency: {:?}",
        info.instances
    );
    assert_eq!(info.instances.live, info.instances.idle);
}

/// Four threads on one instance: every call but one at a time waits in `checkout`, and is
/// woken by a `checkin` on another thread (the idle pool is lock-free; a wake-up lost between a
/// waiter's last look and its wait would leave it asleep until the handler's timeout, and the
/// call would fail with ERR_TIMEOUT instead of being acked).
#[test]
fn waiters_on_a_one_instance_pool_are_all_woken() {
    let sb = Arc::new(deploy("trivial", SandboxOptions { concurrency: 1, ..opts(&[]) }));
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (sb, barrier) = (sb.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..5000).filter(|_| handle(&sb, b"{}").outcome == Outcome::Ack).count()
            })
        })
        .collect();
    let acked: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(acked, 20_000, "{:?}", sb.info().outcomes);
    assert_eq!(sb.info().instances.live, 1);
}

#[test]
fn failures_on_one_thread_do_not_stop_the_others() {
    let sb = Arc::new(deploy(
        "probe",
        SandboxOptions {
            concurrency: 2,
            ..opts(&[])
        },
    ));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let sb = sb.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let mut p = Probe::new(0);
                    if t == 0 {
                        p.op(UNREACHABLE, 0, 0, 0, 0);
                    }
                    let r = p.run(&sb);
                    if t == 0 {
                        assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Trap));
                    } else {
                        assert_eq!(r.outcome, Outcome::Ack);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let info = sb.info();
    assert_eq!(info.outcomes.ack, 100);
    assert_eq!(info.outcomes.error_count(ErrorKind::Trap), 50);
    assert_eq!(info.instances.discarded, 50);
    assert!(info.instances.live <= 2);
}

#[test]
fn waiting_for_a_busy_instance_is_bounded_by_the_deadline() {
    let sb = Arc::new(deploy(
        "probe",
        SandboxOptions {
            limits: Limits {
                timeout_ms: 400,
                ..Limits::default()
            },
            ..opts(&[])
        },
    ));
    let busy = {
        let sb = sb.clone();
        std::thread::spawn(move || {
            let mut p = Probe::new(0);
            p.op(LOOP, 0, 0, 0, 0);
            p.run(&sb)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let r = Probe::new(0).run_until(&sb, Some(started + Duration::from_millis(60)));
    assert_eq!(
        r.outcome.error_kind(),
        Some(ErrorKind::Timeout),
        "{:?}",
        r.outcome
    );
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "gave up at its own deadline"
    );
    assert_eq!(
        busy.join().unwrap().outcome.error_kind(),
        Some(ErrorKind::Timeout)
    );
    // Once the looping instance is replaced, events flow again.
    assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
}

#[test]
fn prewarm_fills_the_pool_up_to_concurrency() {
    let sb = deploy(
        "probe",
        SandboxOptions {
            concurrency: 3,
            ..opts(&[])
        },
    );
    assert_eq!(sb.info().instances.live, 1, "deploy creates one instance");
    assert_eq!(sb.prewarm().unwrap(), 2);
    assert_eq!(sb.prewarm().unwrap(), 0);
    let info = sb.info();
    assert_eq!(
        (
            info.instances.live,
            info.instances.idle,
            info.instances.created
        ),
        (3, 3, 3)
    );
    assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
    assert_eq!(sb.info().instances.created, 3);
}
