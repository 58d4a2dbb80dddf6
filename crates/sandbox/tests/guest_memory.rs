//! Every pointer/length a guest hands the host is checked. Each test below targets one check
//! and asserts *which* fault was reported, so removing that check makes the test fail (either
//! a different fault, an accepted call, or a host panic on slicing).

mod common;
use common::*;
use sluice_sandbox::{ErrorKind, HandleResult, Limits, Outcome};

fn fault(r: &HandleResult) -> String {
    match &r.outcome {
        Outcome::Error(e) if e.kind() == ErrorKind::GuestMemory => {
            assert_eq!(e.code(), "ERR_GUEST_MEMORY");
            e.message().to_string()
        }
        other => panic!("expected ERR_GUEST_MEMORY, got {other:?}"),
    }
}

fn run_op(op: i32, a: i32, b: i32, c: i32, d: i32) -> HandleResult {
    let sb = deploy("probe", opts(&["fraud.>"]));
    let mut p = Probe::new(0);
    p.op(op, a, b, c, d);
    let r = p.run(&sb);
    if r.outcome.error_kind() == Some(ErrorKind::GuestMemory) {
        assert_eq!(
            sb.info().instances.discarded,
            1,
            "a faulting instance is discarded"
        );
    }
    r
}

#[test]
fn emit_negative_topic_pointer() {
    let m = fault(&run_op(EMIT, -1, 5, PAYLOAD_AT, 0));
    assert!(m.contains("negative guest pointer -1"), "{m}");
}

#[test]
fn emit_negative_data_length() {
    let m = fault(&run_op(EMIT, PAYLOAD_AT, 0, PAYLOAD_AT, -8));
    assert!(m.contains("negative guest length -8"), "{m}");
}

#[test]
fn emit_data_range_overflowing_i32() {
    // ptr + len wraps in i32 arithmetic; checked_add must catch it.
    let m = fault(&run_op(EMIT, PAYLOAD_AT, 0, i32::MAX - 4, 16));
    assert!(m.contains("overflows"), "{m}");
}

#[test]
fn emit_topic_past_end_of_memory() {
    let m = fault(&run_op(EMIT, PROBE_MEMORY - 4, 8, PAYLOAD_AT, 0));
    assert!(m.contains("out of bounds"), "{m}");
    assert!(m.contains("memory size 65536"), "{m}");
}

#[test]
fn emit_pointer_beyond_memory_with_zero_length() {
    let m = fault(&run_op(EMIT, PAYLOAD_AT, 0, PROBE_MEMORY + 1, 0));
    assert!(m.contains("out of bounds"), "{m}");
}

#[test]
fn emit_range_ending_exactly_at_memory_end_is_fine() {
    // The guest's last byte is addressable: the check must be `end > size`, not `>=`.
    let sb = deploy("probe", opts(&["fraud.>"]));
    let mut p = Probe::new(0);
    let (tp, tl) = p.put(b"fraud.edge");
    p.op(EMIT, tp, tl, PROBE_MEMORY - 16, 16);
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack);
    assert_eq!(r.emits[0].data.len(), 16);
}

#[test]
fn log_pointer_checks() {
    assert!(fault(&run_op(LOG, 2, -100, 4, 0)).contains("negative guest pointer"));
    assert!(fault(&run_op(LOG, 2, PAYLOAD_AT, -1, 0)).contains("negative guest length"));
    assert!(fault(&run_op(LOG, 2, i32::MAX, 1, 0)).contains("overflows"));
    assert!(fault(&run_op(LOG, 2, PROBE_MEMORY - 1, 2, 0)).contains("out of bounds"));
}

#[test]
fn config_read_pointer_checks() {
    assert!(fault(&run_op(CONFIG_READ, -4, 4, 0, 0)).contains("negative guest pointer"));
    assert!(fault(&run_op(CONFIG_READ, 512, -4, 0, 0)).contains("negative guest length"));
    assert!(fault(&run_op(CONFIG_READ, 0x7fff_fff0, 0x100, 0, 0)).contains("overflows"));
    // The declared buffer must fit even when the config is shorter than it.
    assert!(fault(&run_op(CONFIG_READ, PROBE_MEMORY - 2, 4, 0, 0)).contains("out of bounds"));
}

#[test]
fn log_length_is_capped_before_copying() {
    let mut o = opts(&[]);
    o.limits = Limits {
        max_log_bytes: 10,
        ..o.limits
    };
    let sb = deploy("probe", o);
    let mut p = Probe::new(0);
    p.log(3, "0123456789abcdef").log(4, "short");
    let r = p.run(&sb);
    let own: Vec<_> = r
        .logs
        .iter()
        .filter(|l| l.level != sluice_sandbox::LogLevel::Debug)
        .collect();
    assert_eq!(own[0].message, "0123456789");
    assert!(own[0].truncated);
    assert_eq!(own[0].level, sluice_sandbox::LogLevel::Warn);
    assert_eq!(own[1].message, "short");
    assert!(!own[1].truncated);
}

#[test]
fn log_count_is_capped_and_counted() {
    let mut o = opts(&[]);
    // Each probe op also logs its result, so 4 ops make 8 log calls.
    o.limits = Limits {
        max_logs: 5,
        ..o.limits
    };
    let sb = deploy("probe", o);
    let mut p = Probe::new(0);
    for _ in 0..4 {
        p.log(2, "hello");
    }
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack);
    assert_eq!(r.logs.len(), 5);
    assert_eq!(r.dropped_logs, 3);
    assert_eq!(sb.info().logs_dropped, 3);
}

#[test]
fn alloc_returning_a_bad_buffer_is_a_guest_memory_error() {
    let sb = deploy("bad_alloc", opts(&[]));
    let r = handle(&sb, b"some event data");
    let m = fault(&r);
    assert!(m.contains("sluice_alloc returned a bad buffer"), "{m}");
    assert_eq!(sb.info().instances.discarded, 1);
}

#[test]
fn guest_out_of_bounds_load_is_a_trap_not_a_host_fault() {
    let r = run_op(LOAD, PROBE_MEMORY, 0, 0, 0);
    assert_eq!(
        r.outcome.error_kind(),
        Some(ErrorKind::Trap),
        "{:?}",
        r.outcome
    );
}
