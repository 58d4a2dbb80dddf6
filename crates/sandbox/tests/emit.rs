//! Guest emits: allow-list, refusal codes, caps, and discarding on failure.

mod common;
use common::*;
use sluice_sandbox::{ErrorKind, Limits, Outcome};

// Mirrors abi::emit_code (duplicated on purpose: the numbers are the guest contract).
const OK: i64 = 0;
const NOT_ALLOWED: i64 = -1;
const TOO_LARGE: i64 = -2;
const BAD_TOPIC: i64 = -3;
const QUOTA: i64 = -4;

#[test]
fn allowed_emits_are_returned_in_order_on_ack() {
    let sb = deploy("probe", opts(&["fraud.*", "audit.>"]));
    let mut p = Probe::new(0);
    p.emit("fraud.flagged", b"{\"score\":0.9}")
        .emit("audit.order.seen", b"")
        .emit("fraud.cleared", b"x");
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack);
    assert_eq!(reports(&r), vec![OK, OK, OK]);
    let topics: Vec<_> = r.emits.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["fraud.flagged", "audit.order.seen", "fraud.cleared"]
    );
    assert_eq!(r.emits[0].data, b"{\"score\":0.9}");
    assert_eq!(sb.info().emits_accepted, 3);
}

#[test]
fn topics_outside_the_allow_list_are_refused_and_counted() {
    let sb = deploy("probe", opts(&["fraud.*"]));
    let mut p = Probe::new(0);
    p.emit("order.created", b"no")
        .emit("fraud.flagged.high", b"two segments")
        .emit("fraud", b"zero segments")
        .emit("fraud.flagged", b"yes");
    let r = p.run(&sb);
    assert_eq!(r.outcome, Outcome::Ack);
    assert_eq!(reports(&r), vec![NOT_ALLOWED, NOT_ALLOWED, NOT_ALLOWED, OK]);
    assert_eq!(r.emits.len(), 1);
    assert_eq!(r.refused_emits, 3);
    let info = sb.info();
    assert_eq!(info.emits_refused, 3);
    assert_eq!(info.emits_accepted, 1);
}

#[test]
fn no_patterns_means_no_emits() {
    let sb = deploy("probe", opts(&[]));
    let mut p = Probe::new(0);
    p.emit("fraud.flagged", b"");
    let r = p.run(&sb);
    assert_eq!(reports(&r), vec![NOT_ALLOWED]);
    assert!(r.emits.is_empty());
}

#[test]
fn malformed_topics_are_refused() {
    let sb = deploy("probe", opts(&["fraud.>"]));
    let mut p = Probe::new(0);
    p.emit("fraud.*", b"")
        .emit("fraud..x", b"")
        .emit("fraud.a b", b"");
    let (tp, _) = p.put(&[b'f', b'r', b'a', b'u', b'd', b'.', 0xff]);
    p.op(EMIT, tp, 7, tp, 0);
    assert_eq!(reports(&p.run(&sb)), vec![BAD_TOPIC; 4]);
}

#[test]
fn data_over_the_cap_is_refused_without_copying() {
    let mut o = opts(&["fraud.*"]);
    o.limits = Limits {
        max_emit_bytes: 8,
        ..o.limits
    };
    let sb = deploy("probe", o);
    let mut p = Probe::new(0);
    p.emit("fraud.a", b"12345678").emit("fraud.b", b"123456789");
    let r = p.run(&sb);
    assert_eq!(reports(&r), vec![OK, TOO_LARGE]);
    assert_eq!(r.emits.len(), 1);
}

#[test]
fn topic_over_the_cap_is_refused() {
    let mut o = opts(&["fraud.*"]);
    o.limits = Limits {
        max_topic_bytes: 8,
        ..o.limits
    };
    let sb = deploy("probe", o);
    let mut p = Probe::new(0);
    p.emit("fraud.ab", b"").emit("fraud.abc", b"");
    assert_eq!(reports(&p.run(&sb)), vec![OK, TOO_LARGE]);
}

#[test]
fn emit_count_and_byte_quotas_are_enforced_per_event() {
    let mut o = opts(&["fraud.*"]);
    o.limits = Limits {
        max_emits: 2,
        max_emit_total_bytes: 10,
        ..o.limits
    };
    let sb = deploy("probe", o);

    let mut p = Probe::new(0);
    p.emit("fraud.a", b"")
        .emit("fraud.b", b"")
        .emit("fraud.c", b"");
    assert_eq!(reports(&p.run(&sb)), vec![OK, OK, QUOTA]);

    let mut p = Probe::new(0);
    p.emit("fraud.a", b"123456").emit("fraud.b", b"12345");
    assert_eq!(reports(&p.run(&sb)), vec![OK, QUOTA]);

    // Quotas are per event: the next event starts from zero.
    let mut p = Probe::new(0);
    p.emit("fraud.a", b"1234567890").emit("fraud.b", b"");
    assert_eq!(reports(&p.run(&sb)), vec![OK, OK]);
}

#[test]
fn emits_before_a_trap_are_discarded() {
    let sb = deploy("probe", opts(&["fraud.*"]));
    let mut p = Probe::new(0);
    p.emit("fraud.flagged", b"lost").op(UNREACHABLE, 0, 0, 0, 0);
    let r = p.run(&sb);
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Trap));
    assert_eq!(reports(&r), vec![OK], "emit was accepted before the trap");
    assert!(r.emits.is_empty());
    let info = sb.info();
    assert_eq!(info.emits_accepted, 0);
    assert_eq!(info.emits_discarded, 1);
}

#[test]
fn emits_of_retry_and_reject_are_discarded() {
    let sb = deploy("probe", opts(&["fraud.*"]));
    for status in [1, 2] {
        let mut p = Probe::new(status);
        p.emit("fraud.flagged", b"x");
        let r = p.run(&sb);
        assert_eq!(reports(&r), vec![OK]);
        assert!(r.emits.is_empty(), "status {status}");
    }
    assert_eq!(sb.info().emits_discarded, 2);
}

#[test]
fn emits_do_not_leak_into_the_next_event() {
    let sb = deploy("probe", opts(&["fraud.*"]));
    let mut p = Probe::new(1);
    p.emit("fraud.flagged", b"x");
    assert!(p.run(&sb).emits.is_empty());
    assert!(Probe::new(0).run(&sb).emits.is_empty());
}
