//! The router (exact, `*`, `>`), route churn from other threads, unsubscribe accounting, filter
//! chains, and batches.

mod common;

use common::*;
use sluice_core::router::Router;
use sluice_core::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

fn seqs(sub: &Subscription) -> Vec<u64> {
    drain(sub).into_iter().map(|t| t.1).collect()
}

#[test]
fn exact_one_segment_and_rest_patterns_route_as_documented() {
    let bus = bus(64, Overflow::DropNewest);
    let patterns = ["order.created", "order.*", "order.>", "*.created", ">", "order.shipped", "order.created.eu", "*.*.eu", "order.*.eu"];
    let subs: Vec<_> = patterns.iter().map(|p| bus.subscribe(p, bus.subscribe_options()).unwrap()).collect();
    let topics = ["order.created", "order.shipped", "order.created.eu", "user.created", "order", "order.created.eu.x"];
    for (i, t) in topics.iter().enumerate() {
        assert!(bus.try_publish(init(t, 0, i as u64), None).unwrap());
    }
    // Which topic indexes each pattern receives (hand-written, not computed by Pattern::matches).
    let expected: BTreeMap<&str, Vec<u64>> = BTreeMap::from([
        ("order.created", vec![0]),
        ("order.*", vec![0, 1]),
        ("order.>", vec![0, 1, 2, 5]),
        ("*.created", vec![0, 3]),
        (">", vec![0, 1, 2, 3, 4, 5]),
        ("order.shipped", vec![1]),
        ("order.created.eu", vec![2]),
        ("*.*.eu", vec![2]),
        ("order.*.eu", vec![2]),
    ]);
    for (p, sub) in patterns.iter().zip(&subs) {
        assert_eq!(seqs(sub), expected[p], "pattern {p}");
    }
    let st = bus.stats();
    assert_eq!((st.published, st.unrouted), (6, 0));
    let lonely = Bus::new(BusOptions::default()).unwrap();
    lonely.subscribe("a.b", lonely.subscribe_options()).unwrap();
    assert!(lonely.try_publish(init("a.c", 0, 0), None).unwrap());
    assert_eq!(lonely.stats().unrouted, 1);
}

#[test]
fn many_subscriptions_per_topic_each_get_every_event() {
    let bus = bus(32, Overflow::DropNewest);
    let subs: Vec<_> = (0..40)
        .map(|i| bus.subscribe(if i % 2 == 0 { "hot.topic" } else { "hot.*" }, bus.subscribe_options()).unwrap())
        .collect();
    for s in 0..20 {
        assert!(bus.try_publish(init("hot.topic", 0, s), None).unwrap());
    }
    for sub in &subs {
        assert_eq!(seqs(sub), (0..20).collect::<Vec<_>>());
    }
    // One slow (full) subscription does not stall or starve the others.
    let slow = bus.subscribe("hot.topic", opts(1, Overflow::DropNewest)).unwrap();
    for s in 20..25 {
        assert!(!bus.try_publish(init("hot.topic", 0, s), None).unwrap() || s == 20);
    }
    assert_eq!(seqs(&slow), vec![20]);
    assert_eq!(slow.stats().queue.dropped_newest, 4);
    for sub in &subs {
        assert_eq!(seqs(sub), (20..25).collect::<Vec<_>>());
    }
}

#[test]
fn churn_from_other_threads_never_loses_events_for_stable_subscriptions() {
    const N: u64 = 20_000;
    let bus = Arc::new(bus(N as usize, Overflow::Block));
    let stable = [
        bus.subscribe("churn.a", bus.subscribe_options()).unwrap(),
        bus.subscribe("churn.*", bus.subscribe_options()).unwrap(),
        bus.subscribe(">", bus.subscribe_options()).unwrap(),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let mut churners = Vec::new();
    for c in 0..2 {
        let (bus, stop, churned) = (bus.clone(), stop.clone(), churned.clone());
        churners.push(thread::spawn(move || {
            let pats = ["churn.a", "churn.*", "churn.>", "other.x", "*.a"];
            let mut live: Vec<Arc<Subscription>> = Vec::new();
            let mut removed: Vec<Arc<Subscription>> = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if live.len() < 6 && i % 3 != 0 {
                    live.push(bus.subscribe(pats[i % pats.len()], opts(8, Overflow::DropOldest)).unwrap());
                } else if let Some(s) = live.pop() {
                    assert!(bus.unsubscribe(s.id()));
                    removed.push(s);
                    churned.fetch_add(1, Ordering::Relaxed);
                }
            }
            (live, removed)
        }));
    }
    let publisher = {
        let bus = bus.clone();
        thread::spawn(move || {
            for s in 0..N {
                publish_wait(&bus, init("churn.a", 1, s), None).unwrap();
            }
        })
    };
    publisher.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut leftovers, mut removed) = (Vec::new(), Vec::new());
    for h in churners {
        let (l, r) = h.join().unwrap();
        leftovers.extend(l);
        removed.extend(r);
    }
    // Once the publisher is done, an unsubscribed subscription holds nothing: whatever reached
    // it was delivered or counted dropped_closed.
    for sub in &removed {
        let q = sub.stats().queue;
        assert_balanced(&q);
        assert_eq!((q.depth, q.delivered), (0, 0), "{q:?}");
        assert_eq!(q.published, q.dropped_closed + q.dropped_oldest, "{q:?}");
    }
    assert!(churned.load(Ordering::Relaxed) > 10, "the churn threads barely ran");
    for sub in &stable {
        assert_eq!(seqs(sub), (0..N).collect::<Vec<_>>(), "pattern {}", sub.pattern().as_str());
    }
    // Every churned subscription still alive holds only what it was offered, in order.
    for sub in leftovers {
        let q = sub.stats().queue;
        assert_balanced(&q);
        let got = seqs(&sub);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }
}

#[test]
fn router_reads_see_adds_and_removes() {
    let bus = bus(4, Overflow::DropNewest);
    let r = Router::default();
    let a = bus.subscribe("r.a", bus.subscribe_options()).unwrap();
    let b = bus.subscribe("r.*", bus.subscribe_options()).unwrap();
    let c = bus.subscribe("r.>", bus.subscribe_options()).unwrap();
    for s in [&a, &b, &c] {
        r.add(s.clone());
    }
    let ids = |t: &str| {
        let mut v = Vec::new();
        r.for_each_match(t, |s| v.push(s.id()));
        v.sort();
        v
    };
    assert_eq!(ids("r.a"), vec![a.id(), b.id(), c.id()]);
    assert_eq!(ids("r.b.c"), vec![c.id()]);
    assert_eq!(r.len(), 3);
    assert_eq!(r.remove(b.id()).map(|s| s.id()), Some(b.id()));
    assert!(r.remove(b.id()).is_none());
    assert_eq!(ids("r.a"), vec![a.id(), c.id()]);
    r.remove(a.id());
    assert_eq!(ids("r.a"), vec![c.id()]);
    assert_eq!(r.all().len(), 1);
}

#[test]
fn unsubscribe_counts_queued_events_as_dropped_closed() {
    let bus = bus(10, Overflow::Block);
    let sub = bus.subscribe("u.t", bus.subscribe_options()).unwrap();
    let other = bus.subscribe("u.t", bus.subscribe_options()).unwrap();
    for s in 0..5 {
        publish_wait(&bus, init("u.t", 0, s), None).unwrap();
    }
    assert_eq!(sub.take(2, &mut Vec::new()), 2);
    assert!(bus.unsubscribe(sub.id()));
    assert!(!bus.unsubscribe(sub.id()), "second unsubscribe is a no-op");
    let s = sub.stats().queue;
    assert_eq!((s.published, s.delivered, s.dropped_closed, s.depth), (5, 2, 3, 0), "{s:?}");
    publish_wait(&bus, init("u.t", 0, 5), None).unwrap();
    assert_eq!(sub.stats().queue.published, 5, "an unsubscribed subscription is no longer routed to");
    assert_eq!(bus.stats().subscriptions.len(), 1);
    assert_eq!(seqs(&other), vec![0, 1, 2, 3, 4, 5]);
    // shutdown drops what is left everywhere and reports how much.
    publish_wait(&bus, init("u.t", 0, 6), None).unwrap();
    assert_eq!(bus.shutdown(), 1);
    assert_eq!(other.stats().queue.dropped_closed, 1);
    assert!(bus.subscriptions().is_empty());
}

#[test]
fn filter_chain_turns_events_away_and_counts_them() {
    let bus = bus(64, Overflow::DropNewest);
    let chain = FilterChain::parse(
        r#"[{"type":"order.*"},{"field":"amount","op":"gte","value":100},{"attr":"subject","op":"prefix","value":"eu/"}]"#,
    )
    .unwrap();
    let filtered = bus
        .subscribe("order.>", SubscribeOptions { filter: Some(chain), name: Some("big-eu".into()), ..bus.subscribe_options() })
        .unwrap();
    let all = bus.subscribe("order.>", bus.subscribe_options()).unwrap();
    let cases = [
        ("order.created", 150, "eu/berlin", true),
        ("order.created", 50, "eu/berlin", false),
        ("order.created", 150, "us/nyc", false),
        ("order.created.x", 500, "eu/paris", false),
        ("order.shipped", 100, "eu/rome", true),
    ];
    for (i, (topic, amount, subject, _)) in cases.iter().enumerate() {
        let ev = EventInit {
            topic: topic.to_string(),
            id: Some(format!("0:{i}")),
            subject: Some(subject.to_string()),
            data: format!(r#"{{"id":"o-{i}","amount":{amount}}}"#).into_bytes(),
            ..Default::default()
        };
        assert!(bus.try_publish(ev, None).unwrap(), "a filtered-out event is not a refusal");
    }
    let want: Vec<u64> = cases.iter().enumerate().filter(|c| c.1 .3).map(|(i, _)| i as u64).collect();
    assert_eq!(seqs(&filtered), want);
    let st = filtered.stats();
    assert_eq!((st.filtered, st.queue.published), (3, 2));
    assert_eq!(st.name.as_deref(), Some("big-eu"));
    assert_eq!(seqs(&all).len(), 5);
    assert_eq!(all.stats().filtered, 0);
}

#[test]
fn make_batch_splits_one_json_array() {
    let bus = bus(16, Overflow::DropNewest);
    let evs = bus.make_batch(&["b.one".into()], BatchData::Json(br#"[{"a":1}, "x,y", [1,2], null]"#), None).unwrap();
    assert_eq!(evs.len(), 4);
    assert!(evs.iter().all(|e| &*e.topic == "b.one"));
    assert_eq!(evs.iter().map(data_str).collect::<Vec<_>>(), vec![r#"{"a":1}"#, r#""x,y""#, "[1,2]", "null"]);
    let evs = bus.make_batch(&["b.x".into(), "b.y".into()], BatchData::Json(b"[1,2]"), None).unwrap();
    assert_eq!(evs.iter().map(|e| &*e.topic).collect::<Vec<_>>(), vec!["b.x", "b.y"]);
    assert!(bus.make_batch(&["b.x".into()], BatchData::Json(b"[]"), None).unwrap().is_empty());
    let code = |topics: &[&str], json: &[u8]| {
        let t: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
        bus.make_batch(&t, BatchData::Json(json), None).err().map(|e| e.code())
    };
    assert_eq!(code(&["b.x", "b.y"], b"[1,2,3]"), Some("ERR_INVALID_ARG"));
    assert_eq!(code(&[], b"[1]"), Some("ERR_INVALID_ARG"));
    assert_eq!(code(&["b.x"], br#"{"a":1}"#), Some("ERR_ENCODE"));
    assert_eq!(code(&["b.x"], b"[1,"), Some("ERR_ENCODE"));
    assert_eq!(code(&["b.x"], b"[1] [2]"), Some("ERR_ENCODE"));
    assert_eq!(code(&["b.*"], b"[1]"), Some("ERR_INVALID_ARG"));
    let c = Context::background().with_cancel();
    c.cancel(None);
    assert_eq!(bus.make_batch(&["b.x".into()], BatchData::Json(b"[1]"), Some(&c)).unwrap_err().code(), "ERR_CANCELED");
}

#[test]
fn make_batch_cuts_packed_byte_arrays_into_binary_events() {
    let bus = bus(16, Overflow::DropNewest);
    let data = BatchData::Packed { bytes: b"\x00\x01abc", ends: &[2, 2, 5] };
    let evs = bus.make_batch(&["b.one".into()], data, None).unwrap();
    assert!(evs.iter().all(|e| e.encoding == Encoding::Binary));
    assert_eq!(evs.iter().map(|e| &*e.data).collect::<Vec<_>>(), vec![&b"\x00\x01"[..], b"", b"abc"]);
    let id = bus.intern_topic("b.two").unwrap().unwrap();
    let evs = bus.make_batch_interned(id, BatchData::Packed { bytes: b"xy", ends: &[1, 2] }, None).unwrap();
    assert_eq!(evs.iter().map(|e| (&*e.topic, &*e.data, e.encoding)).collect::<Vec<_>>(), vec![("b.two", &b"x"[..], Encoding::Binary), ("b.two", b"y", Encoding::Binary)]);
    let topics = ["b.x".to_string(), "b.y".to_string()];
    let mismatch = bus.make_batch(&topics, BatchData::Packed { bytes: b"xyz", ends: &[1, 2, 3] }, None);
    assert_eq!(mismatch.unwrap_err().code(), "ERR_INVALID_ARG");
    let short = bus.make_batch(&topics, BatchData::Packed { bytes: b"xyz", ends: &[1, 2] }, None);
    assert_eq!(short.unwrap_err().code(), "ERR_ENCODE");
}

#[test]
fn trace_batch_gives_each_event_its_own_traceparent() {
    let bus = bus(16, Overflow::DropNewest);
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut evs = bus.make_batch(&["b.x".into()], BatchData::Json(b"[1,2,3]"), None).unwrap();
    Bus::trace_batch(&mut evs, &[tp.into(), String::new(), tp.replace("-01", "-00")]).unwrap();
    let tps: Vec<_> = evs.iter().map(|e| e.traceparent.as_deref()).collect();
    assert_eq!(tps, vec![Some(tp), None, Some(&*tp.replace("-01", "-00"))]);
    assert_eq!(Bus::trace_batch(&mut evs, &[tp.into()]).unwrap_err().code(), "ERR_INVALID_ARG");
    assert_eq!(Bus::trace_batch(&mut evs, &["x".repeat(2000), String::new(), String::new()]).unwrap_err().code(), "ERR_INVALID_ARG");
    let shared = evs[0].clone();
    assert_eq!(Bus::trace_batch(&mut evs, &[tp.into(), String::new(), String::new()]).unwrap_err().code(), "ERR_INVALID_ARG");
    drop(shared);
}

fn batch(bus: &Bus, topic: &str, n: u64) -> Vec<Arc<Event>> {
    (0..n).map(|s| bus.make_event(init(topic, 7, s), None).unwrap()).collect()
}

#[test]
fn try_publish_batch_keeps_order_and_counts_acceptance() {
    let bus = bus(3, Overflow::DropNewest);
    let sub = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    assert_eq!(bus.try_publish_batch(batch(&bus, "b.t", 5)).unwrap(), 3);
    assert_eq!(seqs(&sub), vec![0, 1, 2]);
    let blk = bus.subscribe("b.u", opts(2, Overflow::Block)).unwrap();
    assert_eq!(bus.try_publish_batch(batch(&bus, "b.u", 4)).unwrap(), 2, "try never waits");
    assert_eq!(blk.stats().queue.dropped_full, 2);
    assert_eq!(seqs(&blk), vec![0, 1]);
}

#[test]
fn publish_batch_that_blocks_continues_in_order() {
    let bus = Arc::new(bus(2, Overflow::Block));
    let slow = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    let fast = bus.subscribe("b.*", opts(64, Overflow::Block)).unwrap();
    let pending = bus.publish_batch(batch(&bus, "b.t", 9), None).unwrap().expect("a batch over capacity must wait");
    assert_eq!(slow.stats().queue.depth, 2);
    assert_eq!(fast.stats().queue.depth, 3, "events behind the waiting one are not published yet");
    let b2 = bus.clone();
    let waiter = thread::spawn(move || pending.wait(&b2));
    let mut got = Vec::new();
    while got.len() < 9 {
        let mut out = Vec::new();
        slow.take(1, &mut out);
        got.extend(out.iter().map(|e| tag(e).1));
        thread::yield_now();
    }
    waiter.join().unwrap().unwrap();
    assert_eq!(got, (0..9).collect::<Vec<_>>());
    assert_eq!(seqs(&fast), (0..9).collect::<Vec<_>>());

    // An error-policy subscription refusing mid-batch fails the batch, but the others get it all.
    let bus = bus_with_error();
    let (err_sub, all) = (bus.subscriptions()[0].clone(), bus.subscriptions()[1].clone());
    assert_eq!(bus.publish_batch(batch(&bus, "b.t", 4), None).err().unwrap().code(), "ERR_QUEUE_FULL");
    assert_eq!(seqs(&err_sub), vec![0, 1]);
    assert_eq!(seqs(&all), vec![0, 1, 2, 3]);

    // A batch waiting under a Context that ends stops with that error.
    let bus = self::bus(1, Overflow::Block);
    let sub = bus.subscribe("b.t", bus.subscribe_options()).unwrap();
    let ctx = Context::background().with_timeout(std::time::Duration::from_millis(30));
    let pending = bus.publish_batch(batch(&bus, "b.t", 3), Some(&ctx)).unwrap().unwrap();
    assert_eq!(pending.wait(&bus).unwrap_err().code(), "ERR_DEADLINE_EXCEEDED");
    assert_eq!(seqs(&sub), vec![0]);
}

fn bus_with_error() -> Bus {
    let b = bus(8, Overflow::DropNewest);
    b.subscribe("b.t", opts(2, Overflow::Error)).unwrap();
    b.subscribe("b.t", opts(8, Overflow::DropNewest)).unwrap();
    b
}
