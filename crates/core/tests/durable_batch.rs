//! The throughput paths of a bus with a journal, on real files: a batch is one journal write per
//! run of events and one fsync wait; a settle batch writes one acknowledgement record; a
//! ticketed publish is resolved by a shared watch. Each test also checks what survives a
//! restart, so batching cannot trade away durability unnoticed.

mod common;

use sluice_core::*;
use std::sync::Arc;

fn journal_bus(dir: &std::path::Path, fsync: Fsync) -> Bus {
    Bus::new(BusOptions {
        capacity: 4,
        journal: Some(JournalConfig { dir: dir.to_path_buf(), fsync, segment_bytes: None }),
        ..Default::default()
    })
    .unwrap()
}

fn durable(bus: &Bus, pattern: &str, name: &str, capacity: usize) -> Arc<Subscription> {
    let delivery = DeliveryOptions { guarantee: sluice_core::delivery::Guarantee::AtLeastOnce, ..Default::default() };
    let opts = SubscribeOptions { capacity, name: Some(name.into()), delivery, ..bus.subscribe_options() };
    bus.subscribe(pattern, opts).unwrap()
}

fn events(bus: &Bus, topic: impl Fn(u32) -> String, n: std::ops::Range<u32>) -> Vec<Arc<Event>> {
    n.map(|i| bus.make_event(EventInit { topic: topic(i), data: i.to_string().into_bytes(), ..Default::default() }, None).unwrap())
        .collect()
}

fn num(e: &Event) -> u32 {
    std::str::from_utf8(&e.data).unwrap().parse().unwrap()
}

/// Takes everything (refilling from the journal) and acknowledges it with one `settle_all` per
/// take; returns the data in delivery order.
fn drain_all(bus: &Bus, sub: &Arc<Subscription>) -> Vec<u32> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    while sub.take_deliveries(64, &mut batch) > 0 {
        out.extend(batch.iter().map(|d| num(&d.event)));
        sub.settle_all(bus, batch.drain(..).map(|d| (d.tag, Outcome::Ack)));
    }
    out
}

#[test]
fn a_batch_is_durable_when_its_wait_returns_and_keeps_order_across_runs_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for fsync in [Fsync::Always, Fsync::Batch { interval_ms: 2 }, Fsync::Never] {
        let dir = dir.path().join(fsync.as_str());
        {
            let bus = journal_bus(&dir, fsync);
            let a = durable(&bus, "a.>", "a", 8);
            let both = durable(&bus, ">", "both", 8);
            // Runs of different recipients: a.*, then b.*, then a.* again.
            let topic = |i: u32| if (20..40).contains(&i) { "b.x".to_string() } else { "a.x".to_string() };
            if let Some(p) = bus.publish_batch(events(&bus, topic, 0..60), None).unwrap() {
                assert_ne!(fsync, Fsync::Never, "nothing to wait for under never");
                p.wait(&bus).unwrap();
            }
            let j = bus.durable().unwrap().journal().stats();
            assert_eq!(j.appended, 60);
            if fsync != Fsync::Never {
                assert!(j.durable_seq >= j.last_seq, "{fsync:?}: the batch's wait returned before its fsync");
            }
            // Capacity 8: the rest stayed in the journal (backlog), none was dropped.
            assert_eq!(a.stats().queue.published + a.stats().spilled, 40);
            assert_eq!(both.stats().queue.published + both.stats().spilled, 60);
            bus.shutdown();
            assert_eq!(bus.close_journal().unwrap(), 100, "nothing acknowledged yet");
        }
        let bus = journal_bus(&dir, fsync);
        let a = durable(&bus, "a.>", "a", 8);
        let both = durable(&bus, ">", "both", 8);
        let want_a: Vec<u32> = (0..20).chain(40..60).collect();
        assert_eq!(drain_all(&bus, &a), want_a, "{fsync:?}");
        assert_eq!(drain_all(&bus, &both), (0..60).collect::<Vec<_>>(), "{fsync:?}");
        assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0);
    }
}

#[test]
fn a_batch_behind_a_full_block_queue_still_waits_once_for_durability() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(journal_bus(dir.path(), Fsync::Batch { interval_ms: 2 }));
    let d = durable(&bus, "a.>", "d", 4);
    let blocking = bus.subscribe("a.>", common::opts(2, Overflow::Block)).unwrap();
    let pending = bus.publish_batch(events(&bus, |_| "a.x".into(), 0..10), None).unwrap().expect("the block queue is full");
    let consumer = {
        let blocking = blocking.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 10 {
                let mut b = Vec::new();
                if blocking.take(4, &mut b) == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                got.extend(b.iter().map(|e| num(e)));
            }
            got
        })
    };
    pending.wait(&bus).unwrap();
    assert_eq!(consumer.join().unwrap(), (0..10).collect::<Vec<_>>());
    let j = bus.durable().unwrap().journal().stats();
    assert_eq!(j.appended, 10);
    assert!(j.durable_seq >= j.last_seq);
    assert_eq!(drain_all(&bus, &d), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_settle_batch_writes_one_acknowledgement_record() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path(), Fsync::Never);
    let sub = durable(&bus, "a.>", "s", 64);
    if let Some(p) = bus.publish_batch(events(&bus, |_| "a.x".into(), 0..50), None).unwrap() {
        p.wait(&bus).unwrap();
    }
    let mut batch = Vec::new();
    assert_eq!(sub.take_deliveries(64, &mut batch), 50);
    let before = bus.durable().unwrap().journal().stats().bytes;
    sub.settle_all(&bus, batch.drain(..).map(|d| (d.tag, Outcome::Ack)));
    let after = bus.durable().unwrap().journal().stats();
    // One ACK record: 12-byte header, consumer id u32, count u32, 50 × seq u64. One record per
    // event would be 50 × 28 bytes.
    assert_eq!(after.bytes - before, 12 + 4 + 4 + 50 * 8);
    assert_eq!(after.acked, 50);
    assert_eq!(bus.stats().journal.unwrap().unacknowledged, 0);
}

#[test]
fn a_ticketed_publish_resolves_through_a_shared_watch_and_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let bus = journal_bus(dir.path(), Fsync::Batch { interval_ms: 2 });
    let _sub = durable(&bus, "a.>", "t", 1024);
    let mut seqs = Vec::new();
    for ev in events(&bus, |_| "a.x".into(), 0..100) {
        match bus.publish_event_ticketed(ev, None).unwrap() {
            Published::Durable(seq) => seqs.push(seq),
            Published::Delivery(_) => panic!("only the fsync is outstanding"),
        }
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "journal order is publish order");
    let w = bus.watch_durable(seqs[0], seqs[99]).expect("batch fsync has a wait");
    w.wait().unwrap();
    assert!(bus.durable().unwrap().journal().durable_seq() >= 100);
    // Published just before close: close fsyncs, and a watch made afterwards still answers.
    let Published::Durable(late) = bus.publish_event_ticketed(events(&bus, |_| "a.x".into(), 100..101).remove(0), None).unwrap()
    else {
        panic!("ticketed")
    };
    bus.shutdown();
    assert_eq!(bus.close_journal().unwrap(), 101);
    bus.watch_durable(late, late).expect("a wait").wait().unwrap();
    // Without a durable subscription nothing is written, so nothing is ticketed.
    let bus = journal_bus(&dir.path().join("none"), Fsync::Batch { interval_ms: 2 });
    let ev = events(&bus, |_| "a.x".into(), 0..1).remove(0);
    assert!(matches!(bus.publish_event_ticketed(ev, None).unwrap(), Published::Delivery(Delivery::Done { .. })));
}
