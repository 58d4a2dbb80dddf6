//! A deployment reports its handler runs to the bus's lifecycle recorder: start and end with
//! outcome, duration, deployment name and module hash; traps and limits as their own kinds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::observe::{Interest, Kind, Record};
use sluice_core::{Bus, BusOptions, EventInit};
use sluice_sandbox::{DeploySpec, Deployments, Limits, SandboxOptions};

const ACK: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (i32.const 0)))"#;

const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"#;

const TRAP: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) unreachable))"#;

fn spec(topic: &str) -> DeploySpec {
    DeploySpec {
        topics: vec![topic.into()],
        capacity: None,
        overflow: None,
        delivery: Default::default(),
        sandbox: SandboxOptions {
            limits: Limits { timeout_ms: 20, ..Limits::default() },
            emits: Vec::new(),
            config: Vec::new(),
            concurrency: 1,
        },
        isolation: Default::default(),
        labels: Default::default(),
    }
}

fn drain_until(bus: &Bus, want: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    loop {
        bus.recorder().drain(usize::MAX, &mut all);
        if want(&all) {
            return all;
        }
        assert!(Instant::now() < end, "timed out; records so far: {:?}", all.iter().map(|r| r.kind).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn handler_runs_traps_and_limits_are_recorded() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    bus.recorder().set_interest(Interest { every: Kind::MASK_ALL, ..Default::default() });
    let deps = Deployments::new(bus.clone());
    let ok = deps.deploy("ok", &wat::parse_str(ACK).unwrap(), &spec("a.ok")).unwrap();
    deps.deploy("spin", &wat::parse_str(SPIN).unwrap(), &spec("a.spin")).unwrap();
    deps.deploy("trap", &wat::parse_str(TRAP).unwrap(), &spec("a.trap")).unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for t in ["a.ok", "a.spin", "a.trap"] {
        let init = EventInit { topic: t.into(), traceparent: Some(tp.into()), data: b"{}".to_vec(), ..Default::default() };
        bus.try_publish(init, None).unwrap();
    }
    let recs = drain_until(&bus, |r| r.iter().filter(|r| r.kind == Kind::HandlerEnd).count() == 3);
    let ends: Vec<&Record> = recs.iter().filter(|r| r.kind == Kind::HandlerEnd).collect();
    let by = |name: &str| *ends.iter().find(|r| r.name.as_deref() == Some(name)).unwrap();
    assert_eq!(by("ok").reason, "ack");
    assert_eq!(by("ok").detail.as_deref(), Some(ok.hash().as_str()));
    assert_eq!(by("spin").reason, "ERR_TIMEOUT");
    assert!(by("spin").duration_us >= 15_000, "the spinning handler ran until its 20 ms budget");
    assert_eq!(by("trap").reason, "ERR_TRAP");
    assert_eq!(by("ok").event.as_ref().unwrap().traceparent.as_deref(), Some(tp));
    let starts = recs.iter().filter(|r| r.kind == Kind::HandlerStart).count();
    assert_eq!(starts, 3);
    let limit: Vec<_> = recs.iter().filter(|r| r.kind == Kind::SandboxLimit).collect();
    let trap: Vec<_> = recs.iter().filter(|r| r.kind == Kind::SandboxTrap).collect();
    assert_eq!((limit.len(), trap.len()), (1, 1));
    assert_eq!(limit[0].name.as_deref(), Some("spin"));
    assert_eq!(trap[0].name.as_deref(), Some("trap"));
    deps.stop_all();
}
