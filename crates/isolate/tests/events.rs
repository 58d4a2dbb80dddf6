//! Events run in the locked-down helper and come back with the same outcomes the in-process
//! sandbox gives: ack with emits, traps, timeouts, memory limits. Each of these exercises a
//! syscall path (signal handling, the epoch ticker thread, mmap/mprotect) under seccomp.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_sandbox::{ErrorKind, Outcome};

#[test]
fn ack_with_emit_comes_back_from_the_helper() {
    let mut h = spawn(EMITTER).unwrap();
    for i in 0..100 {
        let r = h.handle(&envelope(&format!("e{i}"), b"{}"), None).unwrap();
        assert_eq!(r.outcome, Outcome::Ack);
        assert_eq!(r.emits.len(), 1);
        assert_eq!(r.emits[0].topic, "out.x");
        assert_eq!(r.emits[0].data, br#"{"ok":true}"#);
    }
}

#[test]
fn traps_are_errors_and_the_helper_lives_on() {
    for (wat, kind) in [(TRAPPER, ErrorKind::Trap), (OOB, ErrorKind::Trap)] {
        let mut h = spawn(wat).unwrap();
        for _ in 0..3 {
            let r = h.handle(&envelope("e", b"{}"), None).unwrap();
            assert_eq!(r.outcome.error_kind(), Some(kind), "{:?}", r.outcome);
        }
        assert_eq!(h.wait(Some(Duration::ZERO)), None, "helper died");
    }
}

#[test]
fn endless_guest_times_out_inside_the_helper() {
    let mut h = spawn(SPINNER).unwrap();
    let started = Instant::now();
    let r = h.handle(&envelope("e", b"{}"), None).unwrap();
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Timeout), "{:?}", r.outcome);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The replacement instance works too.
    let r = h.handle(&envelope("e", b"{}"), Some(Instant::now() + Duration::from_millis(5))).unwrap();
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Timeout));
}

#[test]
fn memory_growth_stops_at_the_limit_inside_the_helper() {
    let mut h = spawn(GROWER).unwrap();
    // 1 MiB limit = 16 pages; the guest starts with 1 and grows 16 per event.
    let r = h.handle(&envelope("e", b"{}"), None).unwrap();
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::MemoryLimit), "{:?}", r.outcome);
    let r = h.handle(&envelope("e", b"{}"), None).unwrap();
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::MemoryLimit), "{:?}", r.outcome);
}

#[test]
fn a_module_refused_inside_the_helper_reports_the_sandbox_code() {
    let err = spawn(r#"(module (memory (export "memory") 1))"#).err().unwrap();
    assert_eq!(err.code(), "ERR_COMPILE", "{err}");
}

#[test]
fn a_pipelined_stream_through_the_rings_completes_every_event_once() {
    let mut h = spawn(EMITTER).unwrap();
    let env = envelope("e", br#"{"n":1}"#);
    let total = 20_000u64;
    let (mut sent, mut seen) = (0u64, vec![false; total as usize + 1]);
    let mut out = Vec::new();
    let mut done = 0;
    while done < total {
        while sent < total {
            match h.submit(&env, None).unwrap() {
                Some(seq) => {
                    sent += 1;
                    assert_eq!(seq, sent);
                }
                None => break,
            }
        }
        out.clear();
        h.poll(&mut out, Duration::from_millis(100)).unwrap();
        for (seq, r) in &out {
            assert_eq!(r.outcome, Outcome::Ack);
            assert!(!std::mem::replace(&mut seen[*seq as usize], true), "event {seq} completed twice");
            done += 1;
        }
    }
    assert_eq!(h.in_flight(), 0);
    assert!(seen[1..].iter().all(|s| *s));
}

#[test]
fn envelopes_and_outcomes_bigger_than_a_ring_record_travel_over_the_socket() {
    let mut h = spawn(BIG_EMITTER).unwrap();
    let big = vec![b'x'; 600 << 10];
    for data in [&b"{}"[..], &big[..], &b"{}"[..]] {
        let r = h.handle(&envelope("e", data), None).unwrap();
        assert_eq!(r.outcome, Outcome::Ack);
        assert_eq!(r.emits.len(), 1);
        assert_eq!(r.emits[0].data.len(), 300_000);
    }
}
