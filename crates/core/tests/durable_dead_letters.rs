//! Dead letters on a bus with a journal survive a restart: `replay` after reopening the
//! directory re-publishes what was dead-lettered before, once.

use sluice_core::delivery::Guarantee;
use sluice_core::*;
use std::sync::Arc;

fn journal_bus(dir: &std::path::Path) -> Bus {
    Bus::new(BusOptions {
        journal: Some(JournalConfig { dir: dir.to_path_buf(), fsync: Fsync::Batch { interval_ms: 2 }, segment_bytes: None }),
        ..Default::default()
    })
    .unwrap()
}

/// A durable subscription that dead-letters on `t.dead` at the first failure.
fn worker(bus: &Bus) -> Arc<Subscription> {
    let delivery = DeliveryOptions { guarantee: Guarantee::AtLeastOnce, dead_letter: Some("t.dead".into()), ..Default::default() };
    bus.subscribe("t", SubscribeOptions { name: Some("w".into()), delivery, ..bus.subscribe_options() }).unwrap()
}

fn publish(bus: &Bus, id: &str, v: u32) {
    let init = EventInit { topic: "t".into(), id: Some(id.into()), data: format!(r#"{{"v":{v}}}"#).into_bytes(), ..Default::default() };
    match bus.publish(init, None).unwrap() {
        Delivery::Done { .. } => {}
        Delivery::Pending(p) => p.wait().unwrap(),
    }
}

/// Takes everything deliverable now and settles each with `verdict`; returns the ids seen.
fn drive(bus: &Bus, sub: &Arc<Subscription>, verdict: impl Fn(&Event) -> Outcome) -> Vec<String> {
    let mut seen = Vec::new();
    let mut batch = Vec::new();
    while sub.take_deliveries(64, &mut batch) > 0 {
        let verdicts: Vec<_> = batch
            .drain(..)
            .map(|d| {
                seen.push(id(&d.event));
                (d.tag, verdict(&d.event))
            })
            .collect();
        sub.settle_all(bus, verdicts);
    }
    seen
}

fn id(e: &Event) -> String {
    match &e.id {
        EventId::Given(s) => s.to_string(),
        EventId::Seq(n) => n.to_string(),
    }
}

fn replay(bus: &Bus, filter: Option<&FilterChain>, limit: usize) -> usize {
    let (n, pending) = bus.replay("t.dead", filter, limit, None).unwrap();
    if let Some(p) = pending {
        p.wait(bus).unwrap();
    }
    n
}

fn reopen(bus: Bus, dir: &std::path::Path) -> Bus {
    bus.shutdown();
    bus.close_journal().unwrap();
    drop(bus);
    journal_bus(dir)
}

#[test]
fn dead_letters_are_replayed_after_a_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path());
    let sub = worker(&bus);
    for i in 0..6 {
        publish(&bus, &format!("e{i}"), i);
    }
    let seen = drive(&bus, &sub, |_| Outcome::Reject("bad".into()));
    assert_eq!(seen.len(), 6);
    assert_eq!(bus.stats().dead_letters.retained, 6);

    // Restart: the retention comes back from the journal; the originals were acknowledged.
    let bus = reopen(bus, dir.path());
    let s = bus.stats();
    assert_eq!((s.dead_letters.retained, s.dead_letters.journal_errors), (6, 0));
    assert_eq!(s.journal.unwrap().unacknowledged, 0, "dead-letter records are not a subscription's backlog");
    let sub = worker(&bus);
    assert!(drive(&bus, &sub, |_| Outcome::Ack).is_empty(), "dead-lettered events are not redelivered");

    // Replay a filtered part, then restart again: only the rest is still there.
    let even = FilterChain::parse(r#"{"field":"v","op":"lt","value":2}"#).unwrap();
    assert_eq!(replay(&bus, Some(&even), 10), 2);
    assert_eq!(drive(&bus, &sub, |_| Outcome::Ack), vec!["e0", "e1"], "same ids, oldest first");
    let bus = reopen(bus, dir.path());
    assert_eq!(bus.stats().dead_letters.retained, 4);
    let sub = worker(&bus);
    assert_eq!(replay(&bus, None, 10), 4);
    assert_eq!(drive(&bus, &sub, |_| Outcome::Ack), vec!["e2", "e3", "e4", "e5"]);

    let bus = reopen(bus, dir.path());
    assert_eq!(bus.stats().dead_letters.retained, 0);
    assert_eq!(replay(&bus, None, 10), 0, "a replayed dead letter is not replayed again");
}

#[test]
fn a_replayed_event_that_fails_again_is_a_new_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path());
    let sub = worker(&bus);
    publish(&bus, "x", 1);
    drive(&bus, &sub, |_| Outcome::Reject("bad".into()));
    let bus = reopen(bus, dir.path());
    let sub = worker(&bus);
    assert_eq!(replay(&bus, None, 10), 1);
    assert_eq!(drive(&bus, &sub, |_| Outcome::Reject("still bad".into())), vec!["x"]);
    let bus = reopen(bus, dir.path());
    assert_eq!(bus.stats().dead_letters.retained, 1);
    assert_eq!(replay(&bus, None, 10), 1);
}
