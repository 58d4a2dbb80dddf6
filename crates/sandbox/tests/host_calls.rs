//! deadline_ms, config_len/config_read and memory growth seen from inside the guest.

mod common;
use common::*;
use sluice_sandbox::{Limits, Outcome};
use std::time::{Duration, Instant};

#[test]
fn deadline_ms_reports_the_earlier_of_timeout_and_event_deadline() {
    let mut o = opts(&[]);
    o.limits = Limits {
        timeout_ms: 2_000,
        ..o.limits
    };
    let sb = deploy("probe", o);
    let mut p = Probe::new(0);
    p.op(DEADLINE_MS, 0, 0, 0, 0);

    let r = p.run(&sb);
    let left = reports(&r)[0];
    assert!((1_000..=2_000).contains(&left), "timeout bound: {left}");

    let r = p.run_until(&sb, Some(Instant::now() + Duration::from_millis(300)));
    let left = reports(&r)[0];
    assert!((1..=300).contains(&left), "event deadline bound: {left}");
}

#[test]
fn config_is_readable_by_the_guest() {
    let mut o = opts(&[]);
    o.config = b"\x2a\x00\x00\x00threshold=0.8".to_vec();
    let sb = deploy("probe", o);
    let mut p = Probe::new(0);
    p.op(CONFIG_LEN, 0, 0, 0, 0)
        .op(CONFIG_READ, 512, 64, 0, 0) // buffer larger than config: copies all 17 bytes
        .op(LOAD, 512, 0, 0, 0)
        .op(CONFIG_READ, 600, 2, 0, 0) // smaller buffer: copies 2
        .op(LOAD, 600, 0, 0, 0);
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack);
    let v = reports(&r);
    assert_eq!(v[0], 17);
    assert_eq!(v[1], 17);
    assert_eq!(v[2], 42);
    assert_eq!(v[3], 2);
    assert_eq!(v[4] & 0xffff, 42, "only two bytes copied");
}

#[test]
fn empty_config_reads_zero_bytes() {
    let sb = deploy("probe", opts(&[]));
    let mut p = Probe::new(0);
    p.op(CONFIG_LEN, 0, 0, 0, 0).op(CONFIG_READ, 512, 16, 0, 0);
    assert_eq!(reports(&p.run(&sb)), vec![0, 0]);
}

#[test]
fn bounds_follow_memory_growth() {
    // After memory.grow the host must see the new size (checked per call, not cached).
    let sb = deploy("probe", opts(&["fraud.>"]));
    let mut p = Probe::new(0);
    let (tp, tl) = p.put(b"fraud.grown");
    p.op(GROW, 1, 0, 0, 0)
        .op(EMIT, tp, tl, PROBE_MEMORY + 100, 8);
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack, "{:?}", r.outcome);
    assert_eq!(reports(&r), vec![1, 0]);
    assert_eq!(r.emits[0].data, vec![0u8; 8]);
}
