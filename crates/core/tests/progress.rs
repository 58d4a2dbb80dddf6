//! Waiting for space without a thread: `try_progress` + `on_progress`, as the JS binding uses it.

use sluice_core::{BatchData, Bus, BusOptions, Context, Delivery, EventInit, Overflow, PendingPublish};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn bus() -> Bus {
    Bus::new(BusOptions { capacity: 1, overflow: Overflow::Block, ..Default::default() }).unwrap()
}

fn pending(bus: &Bus, data: &str, ctx: Option<&Context>) -> PendingPublish {
    let init = EventInit { topic: "t".into(), data: data.as_bytes().to_vec(), ..Default::default() };
    match bus.publish(init, ctx).unwrap() {
        Delivery::Pending(p) => p,
        Delivery::Done { .. } => panic!("expected to wait"),
    }
}

fn counter() -> (Arc<AtomicUsize>, Arc<dyn Fn() + Send + Sync>) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    (n, Arc::new(move || {
        m.fetch_add(1, Ordering::SeqCst);
    }))
}

#[test]
fn a_take_wakes_the_waiter_and_the_event_lands_in_order() {
    let bus = bus();
    let sub = bus.subscribe("t", bus.subscribe_options()).unwrap();
    bus.try_publish(EventInit { topic: "t".into(), data: b"1".to_vec(), ..Default::default() }, None).unwrap();
    let mut p = pending(&bus, "2", None);
    assert!(!p.try_progress().unwrap());
    let (woken, f) = counter();
    p.on_progress(f);
    assert_eq!(woken.load(Ordering::SeqCst), 0, "no wake while full");
    let mut got = Vec::new();
    sub.take(1, &mut got);
    assert_eq!(woken.load(Ordering::SeqCst), 1, "the take woke the waiter");
    assert!(p.try_progress().unwrap());
    sub.take(1, &mut got);
    assert_eq!(got.iter().map(|e| e.data.to_vec()).collect::<Vec<_>>(), vec![b"1".to_vec(), b"2".to_vec()]);
    let st = sub.stats().queue;
    assert_eq!((st.published, st.delivered, st.dropped_canceled), (2, 2, 0));
}

#[test]
fn registering_when_there_is_room_calls_back_at_once() {
    let bus = bus();
    let sub = bus.subscribe("t", bus.subscribe_options()).unwrap();
    bus.try_publish(EventInit { topic: "t".into(), data: b"1".to_vec(), ..Default::default() }, None).unwrap();
    let p = pending(&bus, "2", None);
    sub.take(1, &mut Vec::new());
    let (woken, f) = counter();
    p.on_progress(f);
    assert_eq!(woken.load(Ordering::SeqCst), 1, "room appeared before registration: no lost wake-up");
}

#[test]
fn an_ended_context_or_a_close_ends_the_wait_and_is_counted() {
    let bus = bus();
    let sub = bus.subscribe("t", bus.subscribe_options()).unwrap();
    bus.try_publish(EventInit { topic: "t".into(), data: b"1".to_vec(), ..Default::default() }, None).unwrap();
    let ctx = Context::background().with_cancel();
    let mut p = pending(&bus, "2", Some(&ctx));
    ctx.cancel(Some("bye"));
    assert_eq!(p.try_progress().unwrap_err().code(), "ERR_CANCELED");
    assert_eq!(sub.stats().queue.dropped_canceled, 1);

    let mut q = pending(&bus, "3", None);
    let (woken, f) = counter();
    q.on_progress(f);
    bus.unsubscribe(sub.id());
    assert_eq!(woken.load(Ordering::SeqCst), 1, "close wakes waiters");
    assert!(q.try_progress().unwrap(), "a closed subscription no longer holds the publisher");
    let st = sub.stats().queue;
    assert_eq!(st.published, st.delivered + st.expired + st.dropped_oldest + st.dropped_closed + st.depth);
}

#[test]
fn a_batch_progresses_in_order() {
    let bus = Arc::new(bus());
    let sub = bus.subscribe("t", bus.subscribe_options()).unwrap();
    let events = bus.make_batch(&["t".to_string()], BatchData::Json(b"[1,2,3]"), None).unwrap();
    let mut batch = bus.publish_batch(events, None).unwrap().expect("the second event waits");
    let mut got = Vec::new();
    loop {
        if batch.try_progress(&bus).unwrap() {
            break;
        }
        let (woken, f) = counter();
        batch.on_progress(f);
        sub.take(1, &mut got);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }
    sub.take(10, &mut got);
    assert_eq!(got.iter().map(|e| e.data.to_vec()).collect::<Vec<_>>(), vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}
