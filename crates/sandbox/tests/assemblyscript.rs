//! The AssemblyScript SDK examples, end to end through the sandbox. `npm test` builds them
//! first (`npm run build:guests`); a bare `cargo test` after a fresh clone fails here with the
//! path of the missing build.

mod common;
use common::*;
use sluice_sandbox::{Envelope, ErrorKind, Limits, LogLevel, Outcome, Sandbox, SandboxOptions};

fn as_wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../guest/assemblyscript/build/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run npm run build first)"))
}

fn as_deploy(name: &str, emits: &[&str], config: &str) -> Result<Sandbox, sluice_sandbox::SandboxError> {
    let module = registry().compile(&as_wasm(name))?;
    Sandbox::new(
        module,
        SandboxOptions {
            config: config.as_bytes().to_vec(),
            limits: Limits { memory_bytes: 1 << 20, timeout_ms: 5_000, ..Limits::default() },
            ..opts(emits)
        },
    )
}

fn order<'a>(id: &'a str, data: &'a [u8]) -> Envelope<'a> {
    Envelope { id, event_type: "order.created", source: "/orders", ..event(data) }
}

#[test]
fn fraud_handler_flags_large_orders_only() {
    let sb = as_deploy("fraud", &["fraud.*"], "1000").unwrap();

    let r = sb.handle(&order("o-1", br#"{"id":"o-1","amount":1200}"#), None);
    assert_eq!(r.outcome, Outcome::Ack, "{:?}", r.logs);
    assert_eq!(r.emits.len(), 1);
    assert_eq!(r.emits[0].topic, "fraud.flagged");
    let body = String::from_utf8(r.emits[0].data.clone()).unwrap();
    assert!(body.starts_with(r#"{"order":"o-1","amount":1200"#), "{body}");

    let r = sb.handle(&order("o-2", br#"{"id":"o-2","amount":10}"#), None);
    assert_eq!(r.outcome, Outcome::Ack);
    assert!(r.emits.is_empty());

    let r = sb.handle(&order("o-3", br#"{"id":"o-3"}"#), None);
    assert_eq!(r.outcome, Outcome::Reject);
    assert_eq!(r.logs[0].level, LogLevel::Warn);
    assert!(r.logs[0].message.contains("o-3"), "{:?}", r.logs);

    let other = Envelope { event_type: "order.shipped", ..order("o-4", b"{}") };
    assert_eq!(sb.handle(&other, None).outcome, Outcome::Reject);
}

#[test]
fn fraud_handler_threshold_comes_from_config() {
    let sb = as_deploy("fraud", &["fraud.*"], "5").unwrap();
    let r = sb.handle(&order("o-1", br#"{"amount":10}"#), None);
    assert_eq!(r.emits.len(), 1);

    let err = as_deploy("fraud", &["fraud.*"], "not a number").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Instantiate, "{err}");
}

#[test]
fn fraud_handler_without_emit_permission_retries() {
    let sb = as_deploy("fraud", &["audit.>"], "").unwrap();
    let r = sb.handle(&order("o-1", br#"{"amount":5000}"#), None);
    assert_eq!(r.outcome, Outcome::Retry);
    assert_eq!(r.refused_emits, 1);
    assert!(r.logs.iter().any(|l| l.message.contains("emit refused: -1")), "{:?}", r.logs);
}

#[test]
fn echo_handler_runs_many_events_without_leaking_memory() {
    // 1 MiB of memory and 20k events of 1 KiB: only works if the SDK reuses its inbox and the
    // AssemblyScript GC collects per-event garbage.
    let sb = as_deploy("echo", &["echo.*"], "").unwrap();
    let payload = vec![b'x'; 1024];
    for i in 0..20_000 {
        let r = sb.handle(&order("e", &payload), None);
        assert_eq!(r.outcome, Outcome::Ack, "event {i}: {:?} {:?}", r.outcome, r.logs);
        assert_eq!(r.emits[0].topic, "echo.created");
        assert_eq!(r.emits[0].data.len(), 1024);
    }
    assert_eq!(sb.info().instances.created, 1);
}
