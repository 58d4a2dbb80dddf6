//! Hostile guests are stopped within their limits with a typed reason, and the deployment
//! keeps serving afterwards.

mod common;
use common::*;
use sluice_sandbox::{
    EngineConfig, ErrorKind, HandleResult, Limits, ModuleRegistry, Outcome, Sandbox, SandboxEngine,
};
use std::time::{Duration, Instant};

fn expect(r: &HandleResult, kind: ErrorKind, code: &str) {
    match &r.outcome {
        Outcome::Error(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.code(), code);
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

fn with_limits(limits: Limits) -> sluice_sandbox::SandboxOptions {
    sluice_sandbox::SandboxOptions {
        limits,
        ..opts(&[])
    }
}

#[test]
fn infinite_loop_is_stopped_by_the_timeout() {
    let sb = deploy(
        "loop",
        with_limits(Limits {
            timeout_ms: 30,
            ..Limits::default()
        }),
    );
    let r = handle(&sb, b"");
    expect(&r, ErrorKind::Timeout, "ERR_TIMEOUT");
    assert!(r.elapsed >= Duration::from_millis(30), "{:?}", r.elapsed);
    // Generous upper bound: the machine is shared, but a missing interrupt would hang forever.
    assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    assert_eq!(sb.info().instances.discarded, 1);
}

/// The epoch ticker naps (100 ms) after ~50 idle ticks and the first call after that must wake
/// it: a call that did not would run on until the nap ends instead of stopping after its 10 ms.
/// An engine of its own, so no other test's calls keep the ticker awake.
#[test]
fn a_call_after_the_ticker_napped_is_still_stopped_on_time() {
    let engine = SandboxEngine::new(EngineConfig { max_instances: 2, ..EngineConfig::default() }).unwrap();
    let module = ModuleRegistry::new(engine).compile(&wasm("loop")).unwrap();
    let sb = Sandbox::new(module, with_limits(Limits { timeout_ms: 10, ..Limits::default() })).unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        // The previous call (or deploy's instantiation) kept the ticker up; 75 ms later it has
        // idled its ~50 ticks and is some 20 ms into a nap.
        std::thread::sleep(Duration::from_millis(75));
        let r = handle(&sb, b"");
        expect(&r, ErrorKind::Timeout, "ERR_TIMEOUT");
        worst = worst.max(r.elapsed);
    }
    // Without the wake-up each call would wait out the rest of the nap (~80 ms).
    assert!(worst < Duration::from_millis(60), "slowest stop {worst:?}");
}

#[test]
fn infinite_loop_is_stopped_at_the_event_deadline_when_it_is_earlier() {
    let sb = deploy(
        "loop",
        with_limits(Limits {
            timeout_ms: 10_000,
            ..Limits::default()
        }),
    );
    let started = Instant::now();
    let r = sb.handle(&event(b""), Some(started + Duration::from_millis(40)));
    expect(&r, ErrorKind::Timeout, "ERR_TIMEOUT");
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn probe_loop_times_out_and_the_next_event_succeeds() {
    let sb = deploy(
        "probe",
        with_limits(Limits {
            timeout_ms: 25,
            ..Limits::default()
        }),
    );
    let mut p = Probe::new(0);
    p.op(LOOP, 0, 0, 0, 0);
    expect(&p.run(&sb), ErrorKind::Timeout, "ERR_TIMEOUT");
    assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
    let info = sb.info();
    assert_eq!(info.instances.created, 2);
    assert_eq!(info.outcomes.error_count(ErrorKind::Timeout), 1);
}

#[test]
fn memory_growth_is_stopped_at_the_limit() {
    let sb = deploy(
        "grow",
        with_limits(Limits {
            memory_bytes: 1 << 20,
            timeout_ms: 5_000,
            ..Limits::default()
        }),
    );
    let r = handle(&sb, b"");
    expect(&r, ErrorKind::MemoryLimit, "ERR_MEMORY_LIMIT");
    match &r.outcome {
        Outcome::Error(e) => assert!(e.message().contains("limit is 1048576"), "{e}"),
        _ => unreachable!(),
    }
    // Stopped at the limit, not by the 5 s timeout.
    assert!(r.elapsed < Duration::from_secs(1), "{:?}", r.elapsed);
}

#[test]
fn growth_within_the_limit_is_allowed() {
    let sb = deploy(
        "probe",
        with_limits(Limits {
            memory_bytes: 4 << 16,
            timeout_ms: 5_000,
            ..Limits::default()
        }),
    );
    let mut p = Probe::new(0);
    p.op(GROW, 3, 0, 0, 0);
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack);
    assert_eq!(
        reports(&r),
        vec![1],
        "memory.grow returns the old size in pages"
    );
    let mut p = Probe::new(0);
    p.op(GROW, 1, 0, 0, 0);
    expect(&p.run(&sb), ErrorKind::MemoryLimit, "ERR_MEMORY_LIMIT");
}

#[test]
fn initial_memory_over_the_limit_fails_at_deploy() {
    let err = try_deploy(
        "big_memory",
        with_limits(Limits {
            memory_bytes: 16 << 20,
            ..Limits::default()
        }),
    )
    .unwrap_err();
    assert_eq!(err.code(), "ERR_MEMORY_LIMIT", "{err}");
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let sb = deploy("recurse", opts(&[]));
    let r = handle(&sb, b"");
    expect(&r, ErrorKind::StackOverflow, "ERR_STACK_OVERFLOW");
    // The host thread survived and the deployment still works after replacement.
    let r = handle(&sb, b"");
    expect(&r, ErrorKind::StackOverflow, "ERR_STACK_OVERFLOW");
    assert_eq!(sb.info().instances.discarded, 2);

    let probe = deploy("probe", opts(&[]));
    let mut p = Probe::new(0);
    p.op(RECURSE, 0, 0, 0, 0);
    expect(
        &p.run(&probe),
        ErrorKind::StackOverflow,
        "ERR_STACK_OVERFLOW",
    );
    assert_eq!(Probe::new(0).run(&probe).outcome, Outcome::Ack);
}

#[test]
fn fuel_budget_stops_a_loop_deterministically() {
    let sb = deploy(
        "loop",
        with_limits(Limits {
            fuel: Some(100_000),
            timeout_ms: 10_000,
            ..Limits::default()
        }),
    );
    let r = handle(&sb, b"");
    expect(&r, ErrorKind::OutOfFuel, "ERR_FUEL_EXHAUSTED");
    assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
}

#[test]
fn fuel_is_per_event() {
    // Enough fuel for one small probe event, not for unbounded work: each event gets a
    // fresh budget, so many events in a row all succeed.
    let sb = deploy(
        "probe",
        with_limits(Limits {
            fuel: Some(20_000),
            timeout_ms: 5_000,
            ..Limits::default()
        }),
    );
    for _ in 0..20 {
        assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
    }
}

#[test]
fn fuel_on_an_engine_without_metering_is_a_config_error() {
    let engine = SandboxEngine::new(EngineConfig {
        fuel: false,
        max_instances: 4,
        ..EngineConfig::default()
    })
    .unwrap();
    let module = ModuleRegistry::new(engine).compile(&wasm("probe")).unwrap();
    let err = Sandbox::new(
        module.clone(),
        with_limits(Limits {
            fuel: Some(10),
            ..Limits::default()
        }),
    )
    .unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_CONFIG");
    // Without fuel the same engine runs the probe.
    let sb = Sandbox::new(module, opts(&[])).unwrap();
    assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
}

#[test]
fn limits_above_engine_ceilings_are_refused() {
    let e = try_deploy(
        "probe",
        with_limits(Limits {
            memory_bytes: 1 << 40,
            ..Limits::default()
        }),
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    let e = try_deploy(
        "probe",
        with_limits(Limits {
            timeout_ms: 0,
            ..Limits::default()
        }),
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    // A huge timeout would overflow `Instant + Duration` inside `handle`.
    let e = try_deploy(
        "probe",
        with_limits(Limits {
            timeout_ms: u64::MAX,
            ..Limits::default()
        }),
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    let e = try_deploy(
        "probe",
        sluice_sandbox::SandboxOptions {
            concurrency: 0,
            ..opts(&[])
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    let e = try_deploy("probe", opts(&["fraud.>.x"])).unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    assert!(e.message().contains("fraud.>.x"), "{e}");
    let e = try_deploy(
        "probe",
        sluice_sandbox::SandboxOptions {
            config: vec![0; (1 << 20) + 1],
            ..opts(&[])
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
}
