//! Test guests and helpers shared by the isolate tests. Every test starts a real helper
//! process (the `sluice-helper` binary Cargo built for this test run).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::{Bus, Delivery, EventInit};
use sluice_isolate::{Helper, HelperOptions, IsolateError, ProcessIsolation};
use sluice_sandbox::{encode_envelope, DeploySpec, Envelope, Isolation, Limits, SandboxOptions};

/// Acks every event and emits `{"ok":true}` on `out.x`.
pub const EMITTER: &str = r#"(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "out.x{\"ok\":true}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32)
    (drop (call $emit (i32.const 0) (i32.const 5) (i32.const 5) (i32.const 11)))
    (i32.const 0)))"#;

/// Counts to 2 million (a millisecond or two), then acks and emits `{"ok":true}` on `out.x`:
/// events pile up in the request ring behind it.
pub const SLOW_EMITTER: &str = r#"(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "out.x{\"ok\":true}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32)
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 2000000))))
    (drop (call $emit (i32.const 0) (i32.const 5) (i32.const 5) (i32.const 11)))
    (i32.const 0)))"#;

/// Acks and emits 300 000 bytes on `out.big`: an outcome too large for the completion ring.
pub const BIG_EMITTER: &str = r#"(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 16)
  (data (i32.const 0) "out.big")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 320000))
  (func (export "sluice_handle") (param i32 i32) (result i32)
    (drop (call $emit (i32.const 0) (i32.const 7) (i32.const 0) (i32.const 300000)))
    (i32.const 0)))"#;

/// Traps on every event (a wasm trap is a SIGILL/SIGSEGV handled inside the helper).
pub const TRAPPER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) unreachable))"#;

/// Reads far out of bounds (a SIGSEGV inside the helper's pooled memory).
pub const OOB: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (i32.load (i32.const 0x7fff0000))))"#;

/// Spins until the epoch ticker (a thread of the locked-down helper) interrupts it.
pub const SPINNER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"#;

/// Grows its memory by one page per event, until the limit.
pub const GROWER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32)
    (if (i32.lt_s (memory.grow (i32.const 16)) (i32.const 0)) (then unreachable))
    (i32.const 0)))"#;

pub fn helper_path() -> &'static str {
    env!("CARGO_BIN_EXE_sluice-helper")
}

pub fn options() -> SandboxOptions {
    SandboxOptions {
        limits: Limits { timeout_ms: 50, memory_bytes: 1 << 20, ..Limits::default() },
        emits: vec!["out.>".into()],
        config: Vec::new(),
        concurrency: 1,
    }
}

pub fn spawn(wat: &str) -> Result<Helper, IsolateError> {
    Helper::spawn(&HelperOptions::new(helper_path()), &wat::parse_str(wat).unwrap(), &options())
}

pub fn envelope(id: &str, data: &[u8]) -> Vec<u8> {
    encode_envelope(&Envelope {
        id,
        event_type: "order.created",
        source: "test",
        time_unix_nanos: 1,
        subject: None,
        traceparent: None,
        deadline_unix_nanos: None,
        data,
    })
    .unwrap()
}

/// A deployment on `in.*` whose `concurrency` helpers are started by this test run's helper
/// binary (never downgraded), with room for 100 000 queued events.
pub fn process_spec(concurrency: usize) -> DeploySpec {
    let factory = ProcessIsolation { helper: Some(helper_path().into()), degrade: false };
    let mut sandbox = options();
    sandbox.concurrency = concurrency;
    DeploySpec {
        topics: vec!["in.*".into()],
        capacity: Some(100_000),
        sandbox,
        isolation: Isolation::Process { factory: Arc::new(factory), fallback: false },
        ..Default::default()
    }
}

/// Publishes `n` events `{}` on `in.a` with ids `e{from}`…, waiting while a queue is full.
pub fn publish(bus: &Bus, from: usize, n: usize) {
    for i in from..from + n {
        let init = EventInit { topic: "in.a".into(), id: Some(format!("e{i}")), data: b"{}".to_vec(), ..Default::default() };
        if let Delivery::Pending(p) = bus.publish(init, None).unwrap() {
            p.wait().unwrap();
        }
    }
}

/// Polls `cond` every 2 ms for up to 30 s.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
