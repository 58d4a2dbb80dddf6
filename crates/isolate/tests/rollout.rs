//! Rollout of `isolation: process` deployments on a real bus: each version runs in helpers of
//! its own; a candidate's helper killed mid-canary is replaced by its supervisor and its events
//! redelivered there; stopping reaps the helpers of every version.

mod common;

use std::sync::Arc;

use common::*;
use sluice_core::{Bus, BusOptions};
use sluice_sandbox::{Deployments, RolloutSpec, Traffic};

/// `EMITTER` with other bytes (another hash), emitting on `out.y`.
fn second_version() -> Vec<u8> {
    wat::parse_str(EMITTER.replace("out.x", "out.y")).unwrap()
}

fn reaped(pid: i32) -> bool {
    // Not our child any more (reaped), and no zombie left.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == -1 }
}

#[test]
fn a_candidate_helper_killed_mid_canary_is_replaced_and_stop_reaps_every_version() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut big = bus.subscribe_options();
    big.capacity = 100_000;
    let out = bus.subscribe("out.*", big).unwrap();
    let dep = deployments.deploy("iso", &wat::parse_str(EMITTER).unwrap(), &process_spec(2)).unwrap();
    let first = dep.info().pids.clone();
    let rollout = RolloutSpec { traffic: Traffic { percent: 50.0, ..Default::default() }, ..Default::default() };
    let hash = dep.rollout(&second_version(), &rollout, Some("test")).unwrap();
    let candidate = dep.info().rollout.versions.iter().find(|v| v.hash == hash).unwrap().pids.clone();
    assert_eq!(candidate.len(), 2);
    assert!(candidate.iter().all(|p| !first.contains(p)), "the candidate runs in helpers of its own");
    publish(&bus, 0, 5_000);
    unsafe { libc::kill(candidate[0], libc::SIGKILL) };
    publish(&bus, 5_000, 5_000);
    wait_for("10 000 outcomes", || dep.info().outcomes.ack == 10_000);
    let info = dep.info();
    let v2 = info.rollout.versions.iter().find(|v| v.hash == hash).unwrap();
    assert!(v2.handled > 1_000 && v2.handled < 9_000, "about half the events: {}", v2.handled);
    // The supervisor replaced the killed helper on its dispatcher; the candidate stayed.
    wait_for("a replacement helper", || {
        let pids = dep.info().rollout.versions.iter().find(|v| v.hash == hash).unwrap().pids.clone();
        pids.len() == 2 && !pids.contains(&candidate[0])
    });
    assert_eq!(dep.info().rollout.candidate.as_ref().map(|c| c.hash.as_str()), Some(hash.as_str()));
    assert_eq!(info.subscriptions[0].queue.failed, 0);
    assert_eq!(out.queue().len(), 10_000, "one emit per event: nothing lost, nothing doubled");
    let all: Vec<i32> = dep.info().rollout.versions.iter().flat_map(|v| v.pids.clone()).chain([candidate[0]]).collect();
    assert_eq!(all.len(), 5);
    deployments.stop_all();
    for pid in all {
        assert!(reaped(pid), "helper {pid} left behind");
    }
}

#[test]
fn a_candidate_its_helper_refuses_changes_nothing() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("iso", &wat::parse_str(EMITTER).unwrap(), &process_spec(2)).unwrap();
    let pids = dep.info().pids.clone();
    // Each dispatcher's own helper, right after deploy (they report in any order).
    assert!(pids.len() == 2 && pids[0] != pids[1], "{pids:?}");
    let err = dep.rollout(&wat::parse_str("(module)").unwrap(), &RolloutSpec::default(), None).unwrap_err();
    assert_eq!(err.code, "ERR_COMPILE", "{err}");
    let info = dep.info();
    assert_eq!(info.rollout.versions.len(), 1);
    assert!(info.rollout.candidate.is_none());
    assert_eq!(info.pids, pids);
    assert_eq!(info.rollout.history.len(), 1);
    deployments.stop_all();
}
