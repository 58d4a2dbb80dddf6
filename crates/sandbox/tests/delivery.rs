//! WASM handler outcomes go through the core's settle API: status 1 retries with backoff,
//! status 2 dead-letters at once, a trap is a failure that is retried, and after maxAttempts
//! the event is dead-lettered with its attempt count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::delivery::{Backoff, Guarantee, RetryPolicy};
use sluice_core::{Bus, BusOptions, DeliveryOptions, EventInit};
use sluice_sandbox::{DeploySpec, Deployments, Limits, SandboxOptions};

/// Data `0` acks, `1` asks for a retry, `2` rejects, `3` traps (see the fixture).
const STATUS_BY_DATA: &str = include_str!("fixtures/status_by_data.wat");

fn spec(delivery: DeliveryOptions) -> DeploySpec {
    DeploySpec {
        topics: vec!["in".into()],
        capacity: None,
        overflow: None,
        delivery,
        sandbox: SandboxOptions {
            limits: Limits { timeout_ms: 200, ..Limits::default() },
            emits: Vec::new(),
            config: Vec::new(),
            concurrency: 1,
        },
        isolation: Default::default(),
        labels: Default::default(),
    }
}

fn at_least_once(max_attempts: u32) -> DeliveryOptions {
    DeliveryOptions {
        guarantee: Guarantee::AtLeastOnce,
        retry: RetryPolicy { max_attempts, backoff: Backoff::Fixed, initial_ms: 20, max_ms: 20, jitter: 0.0 },
        dead_letter: Some("in.dead".into()),
        ..Default::default()
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn publish_status(bus: &Bus, status: u32, id: &str) {
    let init = EventInit { topic: "in".into(), id: Some(id.into()), data: status.to_string().into_bytes(), ..Default::default() };
    assert!(bus.try_publish(init, None).unwrap());
}

#[test]
fn retry_status_is_retried_then_dead_lettered_after_max_attempts() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let dead = bus.subscribe("in.dead", bus.subscribe_options()).unwrap();
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("d", &wat::parse_str(STATUS_BY_DATA).unwrap(), &spec(at_least_once(3))).unwrap();
    publish_status(&bus, 1, "poison");
    publish_status(&bus, 0, "fine");
    wait_for("a dead letter", || dead.queue().len() == 1);
    let mut got = Vec::new();
    dead.take(1, &mut got);
    let env: serde_json::Value = serde_json::from_slice(&got[0].data).unwrap();
    assert_eq!(env["attempts"], 3);
    assert_eq!(env["event"]["id"], "poison");
    assert_eq!(env["reason"], "handler returned 1 (retry)");
    let info = dep.info();
    assert_eq!((info.outcomes.retry, info.outcomes.ack), (3, 1), "delivered exactly maxAttempts times");
    let s = &info.subscriptions[0];
    assert_eq!((s.delivery.retried, s.delivery.dead_lettered, s.delivery.acked), (2, 1, 1));
}

#[test]
fn reject_dead_letters_at_once_and_a_trap_is_retried_as_a_failure() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let dead = bus.subscribe("in.dead", bus.subscribe_options()).unwrap();
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("d", &wat::parse_str(STATUS_BY_DATA).unwrap(), &spec(at_least_once(2))).unwrap();
    publish_status(&bus, 2, "rejected");
    publish_status(&bus, 3, "trapping");
    wait_for("two dead letters", || dead.queue().len() == 2);
    let mut got = Vec::new();
    dead.take(2, &mut got);
    let envs: Vec<serde_json::Value> = got.iter().map(|e| serde_json::from_slice(&e.data).unwrap()).collect();
    let by_id = |id: &str| envs.iter().find(|e| e["event"]["id"] == id).unwrap().clone();
    assert_eq!(by_id("rejected")["attempts"], 1);
    assert_eq!(by_id("trapping")["attempts"], 2);
    assert!(by_id("trapping")["reason"].as_str().unwrap().starts_with("ERR_TRAP"), "{}", by_id("trapping")["reason"]);
    let info = dep.info();
    assert_eq!((info.outcomes.reject, info.outcomes.errors.get("ERR_TRAP").copied()), (1, Some(2)));
    assert_eq!(info.subscriptions[0].queue.failed, 2, "each trapped attempt is a failure");
}
