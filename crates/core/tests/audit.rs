//! The audit gate: verdicts of worker-thread handler runs wait until their audit records are
//! released as durable; off, it settles at once; full, it holds the worker back.


use sluice_core::audit::{AuditGate, Held};
use sluice_core::delivery::{Guarantee, RetryPolicy};
use sluice_core::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn tracked(bus: &Bus) -> Arc<Subscription> {
    let delivery = DeliveryOptions {
        guarantee: Guarantee::AtLeastOnce,
        retry: RetryPolicy { max_attempts: 1, ..Default::default() },
        ..Default::default()
    };
    bus.subscribe("a", SubscribeOptions { delivery, ..bus.subscribe_options() }).unwrap()
}

fn take(bus: &Bus, sub: &Arc<Subscription>, n: usize) -> Vec<Delivered> {
    for i in 0..n {
        let init = EventInit { topic: "a".into(), id: Some(format!("e{i}")), data: b"1".to_vec(), ..Default::default() };
        assert!(bus.try_publish(init, None).unwrap());
    }
    let mut got = Vec::new();
    assert_eq!(sub.take_deliveries(n, &mut got), n);
    got
}

fn held(sub: &Arc<Subscription>, d: &Delivered) -> Held {
    let mut h = Held::new(sub, d.tag, Outcome::Ack, &d.event);
    h.name = "dep".into();
    h.module = "sha256:x".into();
    h
}

#[test]
fn held_verdicts_settle_only_when_released() {
    let bus = Bus::new(BusOptions::default()).unwrap();
    let sub = tracked(&bus);
    let gate = bus.audit_gate();
    gate.set_on(&bus, true);
    for d in take(&bus, &sub, 3) {
        gate.hold(&bus, held(&sub, &d), || false);
    }
    assert_eq!(sub.stats().delivery.acked, 0);
    assert_eq!(sub.in_flight(), 3);
    assert_eq!(gate.pending(), (3, 0));
    let mut out = Vec::new();
    assert_eq!(gate.take(bus.origin(), 2, &mut out), 2);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][3], "e0");
    assert_eq!(rows[0][4], "a");
    assert_eq!(rows[0][7], "dep");
    assert_eq!(rows[0][8], "sha256:x");
    assert_eq!(rows[0][9], "ack");
    assert_eq!(gate.pending(), (1, 2));
    // Released (durable): settled. A ticket is settled once; unknown tickets are ignored.
    let t0 = rows[0][0].as_u64().unwrap();
    assert_eq!(gate.release(&bus, &[t0, t0, 999]), 1);
    assert_eq!(sub.stats().delivery.acked, 1);
    assert_eq!(sub.in_flight(), 2);
    // Switched off: what nobody took settles now; what a writer holds waits for its release.
    gate.set_on(&bus, false);
    assert_eq!(sub.stats().delivery.acked, 2);
    assert_eq!(gate.pending(), (0, 1));
    assert_eq!(gate.release(&bus, &[rows[1][0].as_u64().unwrap()]), 1);
    assert_eq!(sub.stats().delivery.acked, 3);
    // Off: a hold is a plain settle.
    let d = take(&bus, &sub, 1).pop().unwrap();
    gate.hold(&bus, held(&sub, &d), || false);
    assert_eq!(sub.stats().delivery.acked, 4);
}

#[test]
fn a_full_gate_holds_the_worker_until_room_or_stop() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let sub = tracked(&bus);
    let gate = Arc::new(AuditGate::new(2));
    gate.set_on(&bus, true);
    let ds = take(&bus, &sub, 4);
    gate.hold(&bus, held(&sub, &ds[0]), || false);
    gate.hold(&bus, held(&sub, &ds[1]), || false);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (bus, gate, stop, h3, h4) = (bus.clone(), gate.clone(), stop.clone(), held(&sub, &ds[2]), held(&sub, &ds[3]));
        std::thread::spawn(move || {
            gate.hold(&bus, h3, || stop.load(Ordering::Relaxed));
            gate.hold(&bus, h4, || stop.load(Ordering::Relaxed));
        })
    };
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(gate.pending(), (2, 0), "the worker waits for room");
    let mut out = Vec::new();
    gate.take(bus.origin(), 1, &mut out);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    gate.release(&bus, &[rows[0][0].as_u64().unwrap()]);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(gate.pending(), (2, 0), "one slot freed, one more run held, the last waits");
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert_eq!(gate.pending(), (3, 0), "a stopping worker goes past the bound");
    assert_eq!(sub.stats().delivery.acked, 1);
}
