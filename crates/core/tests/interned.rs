//! The interned-topic fast path routes exactly like publishing by name, and stays current as
//! subscriptions come and go.

use sluice_core::{BatchData, Bus, BusOptions, Encoding, EventInit, Overflow, MAX_INTERNED_TOPICS};
use std::sync::Arc;

fn drain(sub: &sluice_core::Subscription) -> Vec<String> {
    let mut out = Vec::new();
    sub.take(usize::MAX, &mut out);
    out.iter().map(|e| String::from_utf8(e.data.to_vec()).unwrap()).collect()
}

#[test]
fn interned_publish_follows_subscribe_and_unsubscribe() {
    let bus = Bus::new(BusOptions { overflow: Overflow::DropNewest, ..Default::default() }).unwrap();
    let id = bus.intern_topic("order.created").unwrap().unwrap();
    assert_eq!(bus.intern_topic("order.created").unwrap(), Some(id), "interning is idempotent");
    let exact = bus.subscribe("order.created", bus.subscribe_options()).unwrap();
    let wild = bus.subscribe("order.*", bus.subscribe_options()).unwrap();
    let other = bus.subscribe("payment.*", bus.subscribe_options()).unwrap();
    assert!(bus.try_publish_event(bus.make_interned(id, b"1".to_vec(), Encoding::Json, None).unwrap()).unwrap());
    bus.unsubscribe(wild.id());
    let rest = bus.subscribe("order.>", bus.subscribe_options()).unwrap();
    assert!(bus.try_publish_event(bus.make_interned(id, b"2".to_vec(), Encoding::Json, None).unwrap()).unwrap());
    // The same event by name routes identically.
    bus.try_publish(EventInit { topic: "order.created".into(), data: b"3".to_vec(), ..Default::default() }, None).unwrap();
    assert_eq!(drain(&exact), ["1", "2", "3"]);
    assert_eq!(drain(&wild), Vec::<String>::new(), "removed subscriptions get nothing more");
    assert_eq!(wild.stats().queue.dropped_closed, 1);
    assert_eq!(drain(&rest), ["2", "3"]);
    assert_eq!(drain(&other), Vec::<String>::new());
    let ev = bus.make_interned(id, b"4".to_vec(), Encoding::Json, None).unwrap();
    assert_eq!(&*ev.topic, "order.created");
}

#[test]
fn interned_batches_keep_order_and_route_once() {
    let bus = Bus::new(BusOptions::default()).unwrap();
    let sub = bus.subscribe("t.*", bus.subscribe_options()).unwrap();
    let id = bus.intern_topic("t.x").unwrap().unwrap();
    let events = bus.make_batch_interned(id, BatchData::Json(br#"[1, {"a":2}, "three"]"#), None).unwrap();
    assert_eq!(bus.try_publish_batch(events).unwrap(), 3);
    assert_eq!(drain(&sub), ["1", r#"{"a":2}"#, r#""three""#]);
    assert_eq!(bus.make_batch_interned(id, BatchData::Json(b"nope"), None).unwrap_err().code(), "ERR_ENCODE");
}

#[test]
fn bad_or_unknown_topics_and_a_full_table() {
    let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
    assert_eq!(bus.intern_topic("a.*").unwrap_err().code(), "ERR_INVALID_ARG");
    assert_eq!(bus.make_interned(9999, b"1".to_vec(), Encoding::Json, None).unwrap_err().code(), "ERR_INVALID_ARG");
    for i in 0..MAX_INTERNED_TOPICS {
        assert!(bus.intern_topic(&format!("t.{i}")).unwrap().is_some());
    }
    assert_eq!(bus.intern_topic("one.more").unwrap(), None, "a full table says so instead of growing");
    assert!(bus.intern_topic("t.7").unwrap().is_some(), "known topics still resolve");
}

#[test]
fn try_publish_interned_routes_counts_and_refuses_like_the_two_step_path() {
    let bus = Bus::new(BusOptions { capacity: 2, overflow: Overflow::DropNewest, ..Default::default() }).unwrap();
    let id = bus.intern_topic("p.q").unwrap().unwrap();
    assert!(bus.try_publish_interned(id, b"0".to_vec(), Encoding::Json, None).unwrap(), "no subscriber: taken, unrouted");
    let a = bus.subscribe("p.q", bus.subscribe_options()).unwrap();
    let b = bus.subscribe("p.>", bus.subscribe_options()).unwrap();
    assert!(bus.try_publish_interned(id, b"1".to_vec(), Encoding::Json, None).unwrap());
    assert!(bus.try_publish_interned(id, vec![2], Encoding::Binary, None).unwrap());
    assert!(!bus.try_publish_interned(id, b"3".to_vec(), Encoding::Json, None).unwrap(), "full drop-newest queues refuse");
    let stats = bus.stats();
    assert_eq!((stats.published, stats.unrouted), (4, 1));
    assert_eq!(a.stats().queue.dropped_newest, 1);
    assert_eq!(b.stats().queue.dropped_newest, 1);
    assert_eq!(drain(&a), ["1", "\u{2}"]);
    assert_eq!(bus.try_publish_interned(4242, b"1".to_vec(), Encoding::Json, None).unwrap_err().code(), "ERR_INVALID_ARG");
    bus.close();
    assert_eq!(bus.try_publish_interned(id, b"1".to_vec(), Encoding::Json, None).unwrap_err().code(), "ERR_CLOSED");
}

#[test]
fn a_batch_over_several_interned_topics_routes_each_run_to_its_own_subscribers() {
    let bus = Bus::new(BusOptions::default()).unwrap();
    let x = bus.intern_topic("t.x").unwrap().unwrap();
    let y = bus.intern_topic("t.y").unwrap().unwrap();
    let only_x = bus.subscribe("t.x", bus.subscribe_options()).unwrap();
    let all = bus.subscribe("t.*", bus.subscribe_options()).unwrap();
    let mut events = Vec::new();
    for (topic, data) in [(x, "1"), (x, "2"), (y, "3"), (x, "4"), (y, "5")] {
        events.push(bus.make_interned(topic, data.as_bytes().to_vec(), Encoding::Json, None).unwrap());
    }
    // One event by name in the middle of the batch routes by name.
    events.insert(2, bus.make_event(EventInit { topic: "t.x".into(), data: b"n".to_vec(), ..Default::default() }, None).unwrap());
    assert_eq!(bus.try_publish_batch(events).unwrap(), 6);
    assert_eq!(drain(&only_x), ["1", "2", "n", "4"]);
    assert_eq!(drain(&all), ["1", "2", "n", "3", "4", "5"]);
}
