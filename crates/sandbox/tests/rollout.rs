//! Rollout of deployment versions by hash on a real bus: canary routing, atomic switches under
//! load, shadow traffic, automatic rollback, rollback to older hashes, release of instances.
//! The handlers count for the test: each emits the event's data on a topic naming its version.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sluice_core::observe::{Interest, Kind, Record};
use sluice_core::{Bus, BusOptions, Delivery, Event, EventInit, Overflow, Subscription};
use sluice_sandbox::rollout::Action;
use sluice_sandbox::{module_hash, AutoRollback, DeploySpec, Deployment, Deployments, Limits, RolloutSpec, SandboxOptions, Traffic};

/// Acks every event after emitting its data on `topic`; `extra` changes the bytes, not the
/// behaviour. `spin` busy-loops that many iterations first.
fn counter_with(topic: &str, extra: &str, spin: u32) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{topic}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param $p i32) (param $len i32) (result i32)
    (local $off i32) (local $i i32)
    (block $done (loop $spin
      (br_if $done (i32.ge_u (local.get $i) (i32.const {spin})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $spin)))
    ;; data offset = header_len + id + type + source + subject + traceparent lengths
    (local.set $off (i32.add (local.get $p) (i32.load16_u offset=6 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=32 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=36 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=40 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=44 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=48 (local.get $p))))
    (drop (call $emit (i32.const 0) (i32.const {len}) (local.get $off) (i32.load offset=52 (local.get $p))))
    (i32.const 0))
  {extra})"#,
        len = topic.len()
    );
    wat::parse_str(&wat).unwrap()
}

fn counter(topic: &str) -> Vec<u8> {
    counter_with(topic, "", 0)
}

fn spec(concurrency: usize, labels: &[(&str, &str)]) -> DeploySpec {
    DeploySpec {
        topics: vec!["in.*".into()],
        capacity: Some(1 << 16),
        overflow: Some(Overflow::Block),
        sandbox: SandboxOptions {
            limits: Limits { timeout_ms: 5_000, ..Limits::default() },
            emits: vec!["count.*".into()],
            config: Vec::new(),
            concurrency,
        },
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..DeploySpec::default()
    }
}

fn traffic(percent: f64) -> RolloutSpec {
    RolloutSpec { traffic: Traffic { percent, ..Traffic::default() }, auto_rollback: None, ..RolloutSpec::default() }
}

fn publish(bus: &Bus, topic: &str, id: Option<String>, data: String) {
    let init = EventInit { topic: topic.into(), id, data: data.into_bytes(), ..Default::default() };
    match bus.publish(init, None).unwrap() {
        Delivery::Done { .. } => {}
        Delivery::Pending(p) => p.wait().unwrap(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Everything the counting subscription received: (version topic, data).
struct Counted {
    sub: Arc<Subscription>,
    seen: Vec<(String, String)>,
}

impl Counted {
    fn new(bus: &Bus) -> Counted {
        let mut o = bus.subscribe_options();
        o.capacity = 1 << 17;
        Counted { sub: bus.subscribe("count.*", o).unwrap(), seen: Vec::new() }
    }

    fn drain(&mut self) -> usize {
        let mut got: Vec<Arc<Event>> = Vec::new();
        self.sub.take(1 << 17, &mut got);
        for e in got {
            self.seen.push((e.topic.to_string(), String::from_utf8(e.data.to_vec()).unwrap()));
        }
        self.seen.len()
    }

    fn wait(&mut self, n: usize) {
        wait_for(&format!("{n} counted events"), || self.drain() >= n);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(self.drain(), n, "no event handled twice");
    }

    fn on(&self, topic: &str) -> usize {
        self.seen.iter().filter(|(t, _)| t == topic).count()
    }
}

fn version<'a>(info: &'a sluice_sandbox::DeploymentInfo, hash: &str) -> &'a sluice_sandbox::rollout::VersionInfo {
    info.rollout.versions.iter().find(|v| v.hash == hash).unwrap_or_else(|| panic!("no version {hash}"))
}

/// Publishes `total` events on a thread while the caller flips versions; checks that every
/// event was handled exactly once and, with one worker, in order per key.
fn flips_under_load(concurrency: usize) {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let (a, b, c) = (counter("count.a"), counter("count.b"), counter("count.c"));
    let dep = deployments.deploy("flip", &a, &spec(concurrency, &[])).unwrap();
    let total = 20_000usize;
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (bus, done) = (bus.clone(), done.clone());
        thread::spawn(move || {
            for i in 0..total {
                publish(&bus, "in.x", None, i.to_string());
                if i % 64 == 0 {
                    // Spread the load over the flips.
                    thread::sleep(Duration::from_micros(200));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut flips = 0;
    let mut step = 0;
    // Ends after a whole cycle, with no candidate left.
    while !done.load(Ordering::SeqCst) || flips < 120 || step % 6 != 0 {
        let current = dep.hash();
        let other = if current == module_hash(&a) { &b } else { &a };
        match step % 6 {
            0 => dep.rollout(other, &traffic(5.0), Some("ci")).map(|_| ()),
            1 => dep.set_traffic(&Traffic { percent: 50.0, ..Traffic::default() }, Some("ci")),
            2 => dep.promote(Some("ci")).map(|_| ()),
            3 => dep.rollout(&c, &traffic(100.0), Some("ci")).map(|_| ()),
            4 => dep.rollback(None, Some("ci"), None).map(|_| ()),
            _ => dep.rollback(Some(&module_hash(other)), Some("ci"), None).map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("step {step}: {e}"));
        step += 1;
        flips += 1;
        thread::sleep(Duration::from_micros(300));
    }
    publisher.join().unwrap();
    counted.wait(total);
    // Exactly once: every number seen once, across all versions.
    let mut by_number = vec![0u32; total];
    for (_, d) in &counted.seen {
        by_number[d.parse::<usize>().unwrap()] += 1;
    }
    assert!(by_number.iter().all(|n| *n == 1), "every event handled exactly once");
    assert!(counted.on("count.a") > 0 && counted.on("count.b") > 0 && counted.on("count.c") > 0);
    if concurrency == 1 {
        // One worker, one queue: the subscription's order holds across every switch.
        for key in 0..8 {
            let seq: Vec<usize> =
                counted.seen.iter().map(|(_, d)| d.parse::<usize>().unwrap()).filter(|n| n % 8 == key).collect();
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "per-key order kept for key {key}");
        }
    }
    let info = dep.info();
    assert_eq!(info.outcomes.ack, total as u64);
    assert_eq!(info.subscriptions[0].queue.failed, 0);
    assert!(info.rollout.history.len() > 100, "every step is in the audit trail");
    assert!(info.rollout.history.iter().all(|h| h.action == Action::Deploy || h.actor.as_deref() == Some("ci")));
    // Retired versions drain and let their instances go.
    let current = dep.hash();
    wait_for("retired versions released", || {
        dep.info().rollout.versions.iter().all(|v| v.hash == current || (v.released && v.in_flight == 0))
    });
    let info = dep.info();
    assert_eq!(info.instances.live, concurrency, "only the current version holds instances");
    assert!(version(&info, &module_hash(&c)).releases >= 10);
    deployments.stop_all();
}

#[test]
fn flips_under_load_lose_nothing_duplicate_nothing_and_keep_order_with_one_worker() {
    flips_under_load(1);
}

#[test]
fn flips_under_load_lose_nothing_and_duplicate_nothing_with_two_workers() {
    flips_under_load(2);
}

#[test]
fn refused_candidates_change_nothing() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let a = counter("count.a");
    let mut s = spec(1, &[]);
    s.sandbox.config = b"F".to_vec(); // makes init.wat's sluice_init fail
    let dep = deployments.deploy("refuse", &a, &s).unwrap();
    let b = counter("count.b");
    let wrong = RolloutSpec { expected_hash: Some(module_hash(&a)), ..traffic(100.0) };
    assert_eq!(dep.rollout(&b, &wrong, None).unwrap_err().code, "ERR_HASH_MISMATCH");
    assert_eq!(dep.rollout(b"\0asm junk", &traffic(100.0), None).unwrap_err().code, "ERR_COMPILE");
    let abi = dep.rollout(&common::wasm("missing_handle"), &traffic(100.0), None).unwrap_err();
    assert_eq!(abi.code, "ERR_COMPILE");
    assert!(abi.message.contains("sluice_handle"), "{}", abi.message);
    assert_eq!(dep.rollout(&common::wasm("init"), &traffic(100.0), None).unwrap_err().code, "ERR_INSTANTIATE");
    assert_eq!(dep.rollout(&a, &traffic(100.0), None).unwrap_err().code, "ERR_INVALID_ARG", "already current");
    assert_eq!(dep.rollout(&b, &traffic(101.0), None).unwrap_err().code, "ERR_INVALID_ARG");
    assert_eq!(dep.promote(None).unwrap_err().code, "ERR_NO_CANDIDATE");
    assert_eq!(dep.set_traffic(&Traffic::default(), None).unwrap_err().code, "ERR_NO_CANDIDATE");
    assert_eq!(dep.rollback(None, None, None).unwrap_err().code, "ERR_UNKNOWN_VERSION");
    let unknown = format!("sha256:{}", "0".repeat(64));
    assert_eq!(dep.rollback(Some(&unknown), None, None).unwrap_err().code, "ERR_UNKNOWN_VERSION");
    let info = dep.info();
    assert!(info.rollout.candidate.is_none());
    assert_eq!(info.hash, module_hash(&a));
    assert_eq!(info.rollout.history.len(), 1, "only the deploy is recorded");
    for i in 0..50 {
        publish(&bus, "in.x", None, i.to_string());
    }
    counted.wait(50);
    assert_eq!(counted.on("count.a"), 50);
    // The good candidate with the right hash is accepted.
    let right = RolloutSpec { expected_hash: Some(module_hash(&b)), ..traffic(100.0) };
    assert_eq!(dep.rollout(&b, &right, None).unwrap(), module_hash(&b));
    deployments.stop_all();
}

#[test]
fn a_candidate_that_traps_on_every_event_is_rolled_back_within_the_window() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let a = counter("count.a");
    let dep = deployments.deploy("guarded", &a, &spec(2, &[])).unwrap();
    let trap = common::wasm("trap");
    let guard = AutoRollback {
        max_error_rate: Some(0.5),
        max_p99: None,
        window: Duration::from_secs(5),
        min_events: 10,
    };
    let started = Instant::now();
    dep.rollout(&trap, &RolloutSpec { auto_rollback: Some(guard), ..traffic(50.0) }, Some("ci")).unwrap();
    let mut sent = 0;
    while dep.info().rollout.last_rollback.is_none() {
        assert!(sent < 5_000, "no automatic rollback after {sent} events");
        publish(&bus, "in.x", None, sent.to_string());
        sent += 1;
    }
    let took = started.elapsed();
    let info = dep.info();
    let rb = info.rollout.last_rollback.as_ref().unwrap();
    assert!(rb.automatic && rb.hash == module_hash(&trap) && rb.restored == module_hash(&a));
    assert!(rb.reason.contains("error rate"), "{}", rb.reason);
    assert!(rb.events.unwrap() >= 10);
    assert!(took < Duration::from_secs(5), "within the window: {took:?}");
    assert!(info.rollout.candidate.is_none());
    assert_eq!(info.rollout.history.last().unwrap().action, Action::AutoRollback);
    // Trapped events are counted as failed, not lost silently.
    wait_for("all handled", || {
        let i = dep.info();
        i.outcomes.ack + i.outcomes.errors.get("ERR_TRAP").copied().unwrap_or(0) == sent as u64
    });
    let info = dep.info();
    let trapped = *info.outcomes.errors.get("ERR_TRAP").unwrap();
    assert!((10..100).contains(&trapped), "stopped soon after minEvents: {trapped}");
    assert_eq!(info.subscriptions[0].queue.failed, trapped);
    // From now on the current version takes everything.
    counted.wait(sent - trapped as usize);
    for i in 0..200 {
        publish(&bus, "in.x", None, format!("{}", 10_000 + i));
    }
    counted.wait(sent - trapped as usize + 200);
    wait_for("the trapping version released", || version(&dep.info(), &module_hash(&trap)).released);
    deployments.stop_all();
}

#[test]
fn rollback_returns_to_the_previous_version_or_to_any_older_hash() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let (a, b, c) = (counter("count.a"), counter("count.b"), counter("count.c"));
    let (ha, hb, hc) = (module_hash(&a), module_hash(&b), module_hash(&c));
    let dep = deployments.deploy("history", &a, &spec(1, &[])).unwrap();
    for (bytes, who) in [(&b, "alice"), (&c, "bob")] {
        dep.rollout(bytes, &traffic(5.0), Some(who)).unwrap();
        dep.set_traffic(&Traffic { percent: 20.0, ..Traffic::default() }, Some(who)).unwrap();
        dep.rollout(bytes, &traffic(100.0), Some(who)).unwrap();
        dep.promote(Some(who)).unwrap();
    }
    assert_eq!(dep.hash(), hc);
    assert_eq!(dep.rollback(Some(&ha), Some("carol"), Some("incident 7")).unwrap(), ha);
    publish(&bus, "in.x", None, "1".into());
    counted.wait(1);
    assert_eq!(counted.on("count.a"), 1, "the restored version handles events");
    // rollback() undoes the last switch: back to c.
    assert_eq!(dep.rollback(None, None, None).unwrap(), hc);
    assert_eq!(dep.rollback(None, None, None).unwrap(), hb);
    let info = dep.info();
    let actions: Vec<_> = info.rollout.history.iter().map(|h| (h.action, h.hash.clone())).collect();
    assert_eq!(
        actions,
        vec![
            (Action::Deploy, ha.clone()),
            (Action::Rollout, hb.clone()),
            (Action::Traffic, hb.clone()),
            (Action::Rollout, hb.clone()),
            (Action::Promote, hb.clone()),
            (Action::Rollout, hc.clone()),
            (Action::Traffic, hc.clone()),
            (Action::Rollout, hc.clone()),
            (Action::Promote, hc.clone()),
            (Action::Rollback, ha.clone()),
            (Action::Rollback, hc.clone()),
            (Action::Rollback, hb.clone()),
        ]
    );
    let restore = &info.rollout.history[9];
    assert_eq!((restore.actor.as_deref(), restore.previous.as_str()), (Some("carol"), hc.as_str()));
    assert!(restore.reason.as_deref().unwrap().starts_with("incident 7"));
    assert!(info.rollout.history[..5].iter().skip(1).all(|h| h.actor.as_deref() == Some("alice")));
    assert_eq!(info.rollout.history[3].percent, Some(100.0));
    let rb = info.rollout.last_rollback.as_ref().unwrap();
    assert!(!rb.automatic && rb.hash == hc && rb.restored == hb);
    assert_eq!(version(&info, &ha).activations, 2, "a released version is activated again");
    wait_for("a and c released", || {
        let i = dep.info();
        version(&i, &ha).released && version(&i, &hc).released && !version(&i, &hb).released
    });
    deployments.stop_all();
}

#[test]
fn events_in_flight_finish_on_their_version_and_its_instances_go_after() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let slow = counter_with("count.a", "", 300_000_000);
    let fast = counter("count.b");
    let dep = deployments.deploy("drain", &slow, &spec(1, &[])).unwrap();
    publish(&bus, "in.x", None, "0".into());
    wait_for("the slow event in flight", || version(&dep.info(), &module_hash(&slow)).in_flight == 1);
    dep.rollout(&fast, &traffic(100.0), None).unwrap();
    dep.promote(None).unwrap();
    let info = dep.info();
    let old = version(&info, &module_hash(&slow));
    assert_eq!((old.role, old.in_flight, old.released), ("retired", 1, false), "still finishing its event");
    assert_eq!(old.instances.live, 1);
    counted.wait(1);
    assert_eq!(counted.seen[0].0, "count.a", "the event finished on the version that took it");
    wait_for("the old version released", || version(&dep.info(), &module_hash(&slow)).released);
    let info = dep.info();
    let old = version(&info, &module_hash(&slow));
    assert_eq!((old.in_flight, old.instances.live, old.releases), (0, 0, 1));
    assert!(old.released_at.is_some());
    publish(&bus, "in.x", None, "1".into());
    counted.wait(2);
    assert_eq!(counted.seen[1].0, "count.b");
    deployments.stop_all();
}

#[test]
fn shadow_copies_are_compared_not_published() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let a = counter("count.a");
    let same_behaviour = counter_with("count.a", "(func $unused)", 0);
    let different = counter("count.b");
    let dep = deployments.deploy("shadowed", &a, &spec(1, &[])).unwrap();
    let shadow = |percent| RolloutSpec { shadow: true, ..traffic(percent) };
    dep.rollout(&same_behaviour, &shadow(100.0), None).unwrap();
    for i in 0..100 {
        publish(&bus, "in.x", None, i.to_string());
    }
    counted.wait(100);
    wait_for("100 comparisons", || dep.info().rollout.shadow.as_ref().unwrap().compared == 100);
    let s = dep.info().rollout.shadow.unwrap();
    assert_eq!((s.copied, s.outcome_differs, s.emits_differ, s.skipped), (100, 0, 0, 0));
    assert_eq!(version(&dep.info(), &module_hash(&same_behaviour)).role, "shadow");
    dep.rollout(&different, &shadow(100.0), None).unwrap();
    for i in 100..200 {
        publish(&bus, "in.x", None, i.to_string());
    }
    counted.wait(200);
    wait_for("100 more comparisons", || {
        dep.info().rollout.shadow.as_ref().is_some_and(|s| s.hash == module_hash(&different) && s.compared == 100)
    });
    let s = dep.info().rollout.shadow.unwrap();
    assert_eq!((s.emits_differ, s.outcome_differs), (100, 0));
    assert_eq!(counted.on("count.a"), 200, "the current version published every event");
    assert_eq!(counted.on("count.b"), 0, "shadow emits are captured, never published");
    let info = dep.info();
    assert_eq!(info.emits_published, 200);
    assert_eq!(version(&info, &module_hash(&different)).outcomes.ack, 100);
    // Promoting the shadow makes it serve for real.
    dep.promote(None).unwrap();
    publish(&bus, "in.x", None, "200".into());
    counted.wait(201);
    assert_eq!(counted.on("count.b"), 1);
    assert!(!dep.info().rollout.shadow.unwrap().active);
    deployments.stop_all();
}

#[test]
fn percent_is_stable_per_event_id_and_event_types_and_labels_select() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let (a, b) = (counter("count.a"), counter("count.b"));
    let dep = deployments.deploy("select", &a, &spec(2, &[("env", "prod"), ("region", "eu")])).unwrap();
    // Redelivered ids see the same version.
    dep.rollout(&b, &traffic(30.0), None).unwrap();
    for round in 0..2 {
        for i in 0..500 {
            publish(&bus, "in.x", Some(format!("order-{i}")), format!("{round}{i:04}"));
        }
    }
    counted.wait(1000);
    let mut version_of: HashMap<String, &str> = HashMap::new();
    for (topic, d) in &counted.seen {
        let prev = version_of.insert(d[1..].to_owned(), topic);
        assert!(prev.is_none_or(|p| p == topic), "id {} changed version", &d[1..]);
    }
    let share = counted.on("count.b") as f64 / 1000.0;
    assert!((0.22..0.38).contains(&share), "about 30 %: {share}");
    // A label selector this deployment does not satisfy: the candidate gets nothing.
    let staging = RolloutSpec {
        traffic: Traffic { percent: 100.0, labels: BTreeMap::from([("env".into(), "staging".into())]), ..Traffic::default() },
        ..RolloutSpec::default()
    };
    dep.rollout(&b, &staging, None).unwrap();
    assert!(!dep.info().rollout.candidate.unwrap().labels_match);
    for i in 0..100 {
        publish(&bus, "in.x", None, i.to_string());
    }
    counted.wait(1100);
    assert_eq!(counted.seen[1000..].iter().filter(|(t, _)| t == "count.a").count(), 100);
    // Selector satisfied, but only `in.b` events.
    let typed = RolloutSpec {
        traffic: Traffic {
            percent: 100.0,
            event_types: vec!["in.b".into()],
            labels: BTreeMap::from([("env".into(), "prod".into())]),
        },
        ..RolloutSpec::default()
    };
    dep.rollout(&b, &typed, None).unwrap();
    for i in 0..100 {
        publish(&bus, if i % 2 == 0 { "in.a" } else { "in.b" }, None, i.to_string());
    }
    counted.wait(1200);
    let tail = &counted.seen[1100..];
    assert!(tail.iter().all(|(t, d)| (t == "count.b") == (d.parse::<u32>().unwrap() % 2 == 1)));
    deployments.stop_all();
}

#[test]
fn stop_ends_a_shadow_thread_and_undeploy_releases_every_version() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    let deployments = Deployments::new(bus.clone());
    let (a, b) = (counter("count.a"), counter("count.b"));
    let dep: Arc<Deployment> = deployments.deploy("bye", &a, &spec(1, &[])).unwrap();
    dep.rollout(&b, &RolloutSpec { shadow: true, ..traffic(100.0) }, None).unwrap();
    assert!(deployments.undeploy("bye"));
    let info = dep.info();
    assert!(info.rollout.candidate.is_none() && !info.running);
    assert!(version(&info, &module_hash(&b)).released, "the shadow's instances are gone with its thread");
    assert!(matches!(dep.rollout(&b, &traffic(1.0), None), Err(e) if e.code == "ERR_CLOSED"));
}

#[test]
fn rollout_steps_and_the_version_that_handled_each_event_reach_observers() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    bus.recorder().set_interest(Interest { every: Kind::RolloutStep.bit() | Kind::HandlerEnd.bit(), ..Default::default() });
    let deployments = Deployments::new(bus.clone());
    let mut counted = Counted::new(&bus);
    let (a, b) = (counter("count.a"), counter("count.b"));
    let dep = deployments.deploy("observed", &a, &spec(1, &[])).unwrap();
    dep.rollout(&b, &traffic(100.0), Some("ci")).unwrap();
    publish(&bus, "in.x", None, "1".into());
    counted.wait(1);
    dep.promote(Some("alice")).unwrap();
    dep.rollback(None, Some("bob"), Some("pager")).unwrap();
    let mut recs: Vec<Record> = Vec::new();
    wait_for("four rollout steps", || {
        bus.recorder().drain(usize::MAX, &mut recs);
        recs.iter().filter(|r| r.kind == Kind::RolloutStep).count() == 4
    });
    let steps: Vec<&Record> = recs.iter().filter(|r| r.kind == Kind::RolloutStep).collect();
    assert_eq!(steps.iter().map(|r| r.reason).collect::<Vec<_>>(), ["deploy", "rollout", "promote", "rollback"]);
    assert!(steps.iter().all(|r| r.name.as_deref() == Some("observed")));
    let detail: Vec<serde_json::Value> = steps.iter().map(|r| serde_json::from_str(r.detail.as_deref().unwrap()).unwrap()).collect();
    assert_eq!(detail[1]["hash"], module_hash(&b));
    assert_eq!(detail[1]["actor"], "ci");
    assert_eq!(detail[1]["percent"], 100.0);
    assert_eq!((detail[3]["actor"].as_str(), detail[3]["hash"].as_str()), (Some("bob"), Some(module_hash(&a).as_str())));
    assert!(detail[3]["reason"].as_str().unwrap().starts_with("pager"));
    let end = recs.iter().find(|r| r.kind == Kind::HandlerEnd).expect("the handler run");
    assert_eq!(end.detail.as_deref(), Some(module_hash(&b).as_str()), "the record names the version that handled it");
    deployments.stop_all();
}
