//! Helpers shared by the integration tests: events that carry (publisher, sequence) in their id.
#![allow(dead_code)]

use sluice_core::*;
use std::sync::Arc;

pub fn bus(capacity: usize, overflow: Overflow) -> Bus {
    Bus::new(BusOptions { capacity, overflow, ..Default::default() }).unwrap()
}

pub fn opts(capacity: usize, overflow: Overflow) -> SubscribeOptions {
    SubscribeOptions { capacity, overflow, filter: None, name: None, delivery: Default::default() }
}

/// An event whose id is `"{publisher}:{seq}"`.
pub fn init(topic: &str, publisher: u64, seq: u64) -> EventInit {
    EventInit {
        topic: topic.to_owned(),
        id: Some(format!("{publisher}:{seq}")),
        data: format!(r#"{{"p":{publisher},"s":{seq}}}"#).into_bytes(),
        ..Default::default()
    }
}

/// Reads back (publisher, seq) from an event made by `init`.
pub fn tag(ev: &Event) -> (u64, u64) {
    match &ev.id {
        EventId::Given(s) => {
            let (p, q) = s.split_once(':').expect("id has the form p:s");
            (p.parse().unwrap(), q.parse().unwrap())
        }
        other => panic!("unexpected id {other:?}"),
    }
}

/// Takes everything queued and returns the tags in order.
pub fn drain(sub: &Subscription) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    sub.take(usize::MAX, &mut out);
    out.iter().map(|e| tag(e)).collect()
}

pub fn data_str(ev: &Arc<Event>) -> &str {
    std::str::from_utf8(&ev.data).unwrap()
}

/// Publishes and, if it must wait, waits. Panics on error.
pub fn publish_wait(bus: &Bus, init: EventInit, ctx: Option<&Context>) -> Result<()> {
    match bus.publish(init, ctx)? {
        Delivery::Done { .. } => Ok(()),
        Delivery::Pending(p) => p.wait(),
    }
}

/// The counter invariant every quiet queue must satisfy.
pub fn assert_balanced(s: &QueueStats) {
    assert_eq!(
        s.published,
        s.delivered + s.expired + s.dropped_oldest + s.dropped_closed + s.depth,
        "published != delivered + expired + dropped_oldest + dropped_closed + depth: {s:?}"
    );
}
