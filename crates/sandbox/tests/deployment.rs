//! Deployments on a real bus: events routed to a WASM handler run on worker threads, emits are
//! published back into the bus, failures are counted, undeploy stops consumption.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::{Bus, BusOptions, Context, EventInit};
use sluice_sandbox::{DeploySpec, Deployments, Limits, SandboxOptions};

/// Acks every event and emits `{"ok":true}` on `out.x`.
const EMITTER: &str = r#"(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "out.x{\"ok\":true}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32)
    (drop (call $emit (i32.const 0) (i32.const 5) (i32.const 5) (i32.const 11)))
    (i32.const 0)))"#;

fn spec(topics: &[&str], emits: &[&str], concurrency: usize) -> DeploySpec {
    DeploySpec {
        topics: topics.iter().map(|s| s.to_string()).collect(),
        capacity: None,
        overflow: None,
        delivery: Default::default(),
        sandbox: SandboxOptions {
            limits: Limits { timeout_ms: 50, ..Limits::default() },
            emits: emits.iter().map(|s| s.to_string()).collect(),
            config: Vec::new(),
            concurrency,
        },
        isolation: Default::default(),
        labels: Default::default(),
    }
}

fn publish(bus: &Bus, topic: &str, ctx: Option<&Context>) {
    let init = EventInit { topic: topic.into(), data: b"{}".to_vec(), ..Default::default() };
    match bus.publish(init, ctx).unwrap() {
        sluice_core::Delivery::Done { .. } => {}
        sluice_core::Delivery::Pending(p) => p.wait().unwrap(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn handles_on_workers_and_publishes_emits_under_the_parent_context() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let out = bus.subscribe("out.*", bus.subscribe_options()).unwrap();
    let bytes = wat::parse_str(EMITTER).unwrap();
    let dep = deployments.deploy("emitter", &bytes, &spec(&["in.*"], &["out.*"], 2)).unwrap();
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    for _ in 0..200 {
        publish(&bus, "in.a", Some(&ctx));
    }
    wait_for("200 emits", || out.queue().len() == 200);
    let mut got = Vec::new();
    out.take(1000, &mut got);
    assert!(got.iter().all(|e| &*e.data == br#"{"ok":true}"# && e.deadline == ctx.deadline()));
    assert!(got.iter().all(|e| e.ctx.as_ref().map(|c| c.id()) == Some(ctx.id())), "children carry the parent's Context");
    let info = dep.info();
    assert_eq!((info.outcomes.ack, info.emits_published, info.instances.live), (200, 200, 2));
    // Same bytes under the same name: the running deployment, not a second one.
    let again = deployments.deploy("emitter", &bytes, &spec(&["in.*"], &["out.*"], 2)).unwrap();
    assert!(Arc::ptr_eq(&dep, &again));
    assert!(deployments.undeploy("emitter"));
    publish(&bus, "in.a", None);
    assert_eq!(bus.stats().unrouted, 1, "an undeployed handler no longer subscribes");
    assert!(!dep.info().running);
}

#[test]
fn refused_emits_and_failures_are_counted_and_other_events_keep_flowing() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let emitter = deployments.deploy("e", &wat::parse_str(EMITTER).unwrap(), &spec(&["a"], &["other.*"], 1)).unwrap();
    let looping = deployments.deploy("l", &common::wasm("loop"), &spec(&["b"], &[], 1)).unwrap();
    publish(&bus, "b", None);
    publish(&bus, "a", None);
    publish(&bus, "a", None);
    wait_for("two refused emits", || emitter.info().emits_refused == 2);
    wait_for("a timeout", || looping.info().outcomes.errors.get("ERR_TIMEOUT") == Some(&1));
    let l = looping.info();
    assert_eq!(l.subscriptions[0].queue.failed, 1);
    assert_eq!(l.instances.discarded, 1);
    assert_eq!(emitter.info().outcomes.ack, 2);
    deployments.stop_all();
}

#[test]
fn expired_events_never_reach_the_guest() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    // Park the worker on a slow first event so the second one expires in the queue.
    let dep = deployments.deploy("slow", &common::wasm("loop"), &spec(&["s"], &[], 1)).unwrap();
    publish(&bus, "s", None);
    let short = Context::background().with_timeout(Duration::from_millis(5));
    publish(&bus, "s", Some(&short));
    wait_for("the expiry", || dep.info().subscriptions[0].queue.expired == 1);
    wait_for("the first event to time out", || dep.info().outcomes.errors.get("ERR_TIMEOUT") == Some(&1));
    assert_eq!(dep.info().latency_us.count, 1, "the guest ran once");
    deployments.stop_all();
}

#[test]
fn bad_deployments_are_refused_without_side_effects() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let trivial = common::wasm("trivial");
    assert_eq!(deployments.deploy("", &trivial, &spec(&["a"], &[], 1)).unwrap_err().code, "ERR_INVALID_ARG");
    assert_eq!(deployments.deploy("x", &trivial, &spec(&[], &[], 1)).unwrap_err().code, "ERR_INVALID_ARG");
    assert_eq!(deployments.deploy("x", &trivial, &spec(&["a..b"], &[], 1)).unwrap_err().code, "ERR_INVALID_ARG");
    assert_eq!(deployments.deploy("x", b"junk", &spec(&["a"], &[], 1)).unwrap_err().code, "ERR_COMPILE");
    assert_eq!(deployments.deploy("x", &trivial, &spec(&["a"], &["b..c"], 1)).unwrap_err().code, "ERR_INVALID_CONFIG");
    assert!(bus.subscriptions().is_empty(), "a refused deploy leaves no subscription behind");
    assert!(deployments.names().is_empty());
    let other = common::wasm("trap");
    deployments.deploy("x", &trivial, &spec(&["a"], &[], 1)).unwrap();
    assert_eq!(deployments.deploy("x", &other, &spec(&["a"], &[], 1)).unwrap_err().code, "ERR_EXISTS");
    bus.close();
    assert_eq!(deployments.deploy("y", &trivial, &spec(&["a"], &[], 1)).unwrap_err().code, "ERR_CLOSED");
    deployments.stop_all();
}

#[test]
fn dropping_the_registry_stops_its_workers() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("t", &common::wasm("trivial"), &spec(&["a"], &[], 2)).unwrap();
    drop(deployments);
    assert!(!dep.info().running, "workers were told to stop");
    publish(&bus, "a", None);
    assert_eq!(bus.stats().unrouted, 1, "and the subscriptions are gone");
}

/// Traps when the event's data (the envelope's last bytes) ends in `t`, acks otherwise.
const TRAPS_ON_T: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param $p i32) (param $n i32) (result i32)
    (if (i32.eq (i32.load8_u (i32.sub (i32.add (local.get $p) (local.get $n)) (i32.const 1))) (i32.const 116))
      (then unreachable))
    (i32.const 0)))"#;

/// A worker keeps one instance across the events of a batch: an instance that trapped is
/// discarded and replaced mid-batch (never kept), and every kept instance is back in the pool
/// once the workers run out of events (none is held while a worker waits, none leaks).
#[test]
fn workers_keep_an_instance_per_batch_and_give_it_back() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("k", &wat::parse_str(TRAPS_ON_T).unwrap(), &spec(&["k"], &[], 2)).unwrap();
    for i in 0..2000 {
        let data = if i % 100 == 7 { b"t".to_vec() } else { b"{}".to_vec() };
        let init = EventInit { topic: "k".into(), data, encoding: Some(sluice_core::Encoding::Binary), ..Default::default() };
        match bus.publish(init, None).unwrap() {
            sluice_core::Delivery::Done { .. } => {}
            sluice_core::Delivery::Pending(p) => p.wait().unwrap(),
        }
    }
    wait_for("2000 outcomes", || dep.info().latency_us.count == 2000);
    let info = dep.info();
    assert_eq!(info.outcomes.ack, 1980);
    assert_eq!(info.outcomes.errors.get("ERR_TRAP"), Some(&20));
    assert_eq!(info.instances.discarded, 20, "each trapped instance discarded, none kept");
    wait_for("the workers to give their instances back", || {
        let i = dep.info().instances;
        i.idle == i.live
    });
    let i = dep.info().instances;
    assert!(i.live >= 1 && i.live <= 2, "{i:?}");
    assert_eq!(i.created, 20 + i.live as u64, "{i:?}");
    deployments.stop_all();
}

/// Events of one batch run back to back, and one may start where the previous one ended (a
/// clock read less) — but not after the previous one's emit waited on a full `block` queue:
/// that wait belongs to neither event's handler time nor to the next event's timeout budget.
#[test]
fn an_emit_that_waited_is_not_counted_in_the_next_events_time() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    // Where the emits go: room for one, `block`, never consumed. Every emit after the first
    // waits the handler's whole budget (200 ms) and is then given up (counted).
    let mut full = bus.subscribe_options();
    full.capacity = 1;
    full.overflow = sluice_core::Overflow::Block;
    let _out = bus.subscribe("out.*", full).unwrap();
    let mut waits = spec(&["in.*"], &["out.*"], 1);
    waits.sandbox.limits.timeout_ms = 200;
    let dep = deployments.deploy("w", &wat::parse_str(EMITTER).unwrap(), &waits).unwrap();
    for _ in 0..4 {
        publish(&bus, "in.a", None);
    }
    wait_for("4 outcomes and their emits", || {
        let i = dep.info();
        i.latency_us.count == 4 && i.emits_published + i.emits_failed == 4
    });
    let info = dep.info();
    assert_eq!(info.outcomes.ack, 4, "no event ran out of time: {:?}", info.outcomes.errors);
    assert_eq!((info.emits_published, info.emits_failed), (1, 3));
    // A call of this guest takes microseconds; one timed from before a 200 ms emit wait would
    // show that wait (100 ms leaves room for a descheduled test machine).
    assert!(info.latency_us.max < 100_000.0, "µs: {:?}", info.latency_us);
    deployments.stop_all();
}
