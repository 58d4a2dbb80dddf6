//! `isolation: process` deployments on a real bus: events leave the subscription queues, run in
//! locked-down helpers, emits come back into the bus; info reports the level and the pids;
//! a killed helper is replaced and its events redelivered; undeploy reaps the helpers.

mod common;

use std::fs;
use std::sync::Arc;

use common::*;
use sluice_core::{Bus, BusOptions};
use sluice_isolate::ProcessIsolation;
use sluice_sandbox::{Deployments, Isolation};

#[test]
fn a_process_isolated_deployment_runs_events_in_locked_down_helpers() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let out = bus.subscribe("out.*", bus.subscribe_options()).unwrap();
    let dep = deployments.deploy("iso", &wat::parse_str(EMITTER).unwrap(), &process_spec(2)).unwrap();
    let info = dep.info();
    assert_eq!((info.isolation, info.sandbox_level), ("process", "wasm+ns+seccomp"));
    assert_eq!(info.pids.len(), 2);
    for pid in &info.pids {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("Seccomp:\t2"), "{status}");
        assert_ne!(fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(), fs::read_link("/proc/self/ns/net").unwrap());
    }
    publish(&bus, 0, 1000);
    wait_for("1000 emits", || out.queue().len() == 1000);
    let mut got = Vec::new();
    out.take(2000, &mut got);
    assert!(got.iter().all(|e| &*e.data == br#"{"ok":true}"#));
    let info = dep.info();
    assert_eq!((info.outcomes.ack, info.emits_published), (1000, 1000));
    let pids = info.pids.clone();
    assert!(deployments.undeploy("iso"));
    for pid in pids {
        // Reaped: no longer our child, no zombie.
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) }, -1);
    }
}

#[test]
fn a_killed_helper_is_replaced_and_its_events_redelivered() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut big = bus.subscribe_options();
    big.capacity = 100_000;
    let out = bus.subscribe("out.*", big).unwrap();
    let dep = deployments.deploy("iso", &wat::parse_str(EMITTER).unwrap(), &process_spec(1)).unwrap();
    let first = dep.info().pids[0];
    publish(&bus, 0, 20_000);
    unsafe { libc::kill(first, libc::SIGKILL) };
    publish(&bus, 20_000, 20_000);
    wait_for("40 000 outcomes", || dep.info().outcomes.ack == 40_000);
    wait_for("a new helper in info", || dep.info().pids.first().is_some_and(|p| *p != first));
    let info = dep.info();
    assert_eq!(info.helpers[0].deaths, 1);
    assert_eq!(info.helpers[0].helpers_started, 2);
    assert_eq!(info.subscriptions[0].queue.failed, 0);
    assert_eq!(out.queue().len(), 40_000, "one emit per event: nothing lost, nothing doubled");
    deployments.stop_all();
}

#[test]
fn a_helper_killed_while_idle_is_replaced_without_waiting_for_an_event() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("iso", &wat::parse_str(EMITTER).unwrap(), &process_spec(1)).unwrap();
    publish(&bus, 0, 10);
    wait_for("10 outcomes", || dep.info().outcomes.ack == 10);
    let first = dep.info().pids[0];
    unsafe { libc::kill(first, libc::SIGKILL) };
    // Nothing more is published: the idle dispatcher notices the death itself.
    wait_for("a replacement while idle", || dep.info().pids.first().is_some_and(|p| *p != first));
    let info = dep.info();
    assert_eq!((info.helpers[0].deaths, info.helpers[0].helpers_started), (1, 2));
    assert_eq!(unsafe { libc::waitpid(first, std::ptr::null_mut(), libc::WNOHANG) }, -1, "the dead helper was reaped");
    publish(&bus, 10, 10);
    wait_for("20 outcomes", || dep.info().outcomes.ack == 20);
    assert_eq!(dep.info().helpers[0].gave_up, 0);
    deployments.stop_all();
}

#[test]
fn stopping_publishes_emits_of_finished_handlers_and_counts_the_events_never_started() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let out = bus.subscribe("out.*", bus.subscribe_options()).unwrap();
    let dep = deployments.deploy("iso", &wat::parse_str(SLOW_EMITTER).unwrap(), &process_spec(1)).unwrap();
    let pid = dep.info().pids[0];
    publish(&bus, 0, 300);
    wait_for("a few outcomes", || dep.info().outcomes.ack >= 5);
    assert!(deployments.undeploy("iso"));
    let info = dep.info();
    let queue = &info.subscriptions[0].queue;
    let ack = info.outcomes.ack;
    assert!(ack < 300, "stopped while events were still waiting in the helper's ring ({ack} acked)");
    // Every handler that finished (including the one running at stop) has its emit published.
    assert_eq!(info.emits_published, ack);
    assert_eq!(out.queue().len() as u64, ack);
    // The rest never ran: counted, none lost silently.
    assert!(queue.failed > 0, "{queue:?}");
    assert_eq!(ack + queue.failed + queue.dropped(), 300, "{queue:?}");
    // The helper exited on its own (asked to stop), it was not killed, and it is reaped.
    assert_eq!(info.helpers[0].deaths, 0);
    assert_eq!(info.helpers[0].last_exit.as_deref(), Some("exited with status 0"), "{:?}", info.helpers[0]);
    assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) }, -1);
}

#[test]
fn process_isolation_without_a_helper_binary_is_refused_not_downgraded() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut s = process_spec(1);
    let missing = ProcessIsolation { helper: Some("/nonexistent/sluice-helper".into()), degrade: false };
    s.isolation = Isolation::Process { factory: Arc::new(missing.clone()), fallback: false };
    let err = deployments.deploy("iso", &wat::parse_str(EMITTER).unwrap(), &s).unwrap_err();
    assert_eq!(err.code, "ERR_ISOLATION_UNAVAILABLE", "{err}");
    publish(&bus, 0, 1);
    assert_eq!(bus.stats().unrouted, 1, "nothing subscribed");
    // A module refused inside the helper keeps the sandbox's code.
    let err = deployments.deploy("bad", &wat::parse_str("(module)").unwrap(), &process_spec(1)).unwrap_err();
    assert_eq!(err.code, "ERR_COMPILE", "{err}");
}
