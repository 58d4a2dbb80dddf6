//! Bad input gets a typed error with a stable code, never a panic.

mod common;

use common::*;
use sluice_core::bus::MAX_ATTR_BYTES;
use sluice_core::overflow::validate_capacity;
use sluice_core::*;

fn code<T>(r: Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn capacity_zero_and_spill_without_a_journal_are_refused() {
    assert_eq!(code(Bus::new(BusOptions { capacity: 0, ..Default::default() })), "ERR_INVALID_ARG");
    assert_eq!(code(Bus::new(BusOptions { overflow: Overflow::Spill, ..Default::default() })), "ERR_UNSUPPORTED");
    let bus = bus(4, Overflow::Block);
    assert_eq!(code(bus.subscribe("a.b", opts(0, Overflow::Block))), "ERR_INVALID_ARG");
    assert_eq!(code(bus.subscribe("a.b", opts(4, Overflow::Spill))), "ERR_UNSUPPORTED");
    assert!(bus.subscriptions().is_empty(), "a refused subscription is not routed");
    assert_eq!(code(Overflow::parse("fast")), "ERR_INVALID_ARG");
    for p in ["block", "drop-newest", "drop-oldest", "error", "spill"] {
        assert_eq!(Overflow::parse(p).unwrap().as_str(), p);
    }
    for bad in [0, -1, i64::MIN, (1 << 24) + 1] {
        assert_eq!(code(validate_capacity(bad)), "ERR_INVALID_ARG", "{bad}");
    }
    assert_eq!(validate_capacity(1 << 24).unwrap(), 1 << 24);
}

#[test]
fn malformed_patterns_and_wildcard_topics_are_refused() {
    let bus = bus(4, Overflow::DropNewest);
    for bad in ["", "a..b", ".a", "a.", "a.>.b", "a.b*", "a b", "a.>x", "a.\u{7}"] {
        assert_eq!(code(bus.subscribe(bad, bus.subscribe_options())), "ERR_INVALID_ARG", "pattern {bad:?}");
    }
    assert_eq!(code(bus.subscribe(&"x".repeat(257), bus.subscribe_options())), "ERR_INVALID_ARG");
    bus.subscribe(">", bus.subscribe_options()).unwrap();
    for bad in ["a.*", "a.>", ">", "*", "", "a..b", "a b"] {
        assert_eq!(code(bus.publish(init(bad, 0, 0), None)), "ERR_INVALID_ARG", "topic {bad:?}");
        assert_eq!(code(bus.try_publish(init(bad, 0, 0), None)), "ERR_INVALID_ARG", "topic {bad:?}");
    }
    assert_eq!(bus.stats().published, 0, "refused publishes are not counted as published");
}

#[test]
fn oversized_or_empty_attributes_are_refused() {
    let bus = bus(4, Overflow::DropNewest);
    let sub = bus.subscribe("a.b", bus.subscribe_options()).unwrap();
    let big = "x".repeat(MAX_ATTR_BYTES + 1);
    let fits = "y".repeat(MAX_ATTR_BYTES);
    let with = |id: Option<&str>, subject: Option<&str>, traceparent: Option<&str>| EventInit {
        topic: "a.b".into(),
        id: id.map(str::to_owned),
        subject: subject.map(str::to_owned),
        traceparent: traceparent.map(str::to_owned),
        data: b"1".to_vec(),
        ..Default::default()
    };
    for init in [
        with(Some(&big), None, None),
        with(None, Some(&big), None),
        with(None, None, Some(&big)),
        with(Some(""), None, None),
        with(None, Some(""), None),
    ] {
        assert_eq!(code(bus.try_publish(init, None)), "ERR_INVALID_ARG");
    }
    assert!(bus.try_publish(with(Some(&fits), Some(&fits), Some(&fits)), None).unwrap());
    assert_eq!(sub.stats().queue.published, 1);
    let src = |s: String| Bus::new(BusOptions { source: s, ..Default::default() });
    assert_eq!(code(src(String::new())), "ERR_INVALID_ARG");
    assert_eq!(code(src(big.clone())), "ERR_INVALID_ARG");
    assert!(src(fits).is_ok());
}

#[test]
fn everything_after_close_is_err_closed_but_queued_events_stay_takeable() {
    let bus = bus(4, Overflow::Block);
    let sub = bus.subscribe("a.b", bus.subscribe_options()).unwrap();
    publish_wait(&bus, init("a.b", 0, 0), None).unwrap();
    bus.close();
    assert!(bus.is_closed());
    assert_eq!(code(bus.publish(init("a.b", 0, 1), None)), "ERR_CLOSED");
    assert_eq!(code(bus.try_publish(init("a.b", 0, 1), None)), "ERR_CLOSED");
    assert_eq!(code(bus.subscribe("a.c", bus.subscribe_options())), "ERR_CLOSED");
    let ev = bus.make_event(init("a.b", 0, 1), None).unwrap();
    assert_eq!(code(bus.publish_event(ev.clone(), None)), "ERR_CLOSED");
    assert_eq!(code(bus.try_publish_event(ev.clone())), "ERR_CLOSED");
    assert_eq!(code(bus.publish_batch(vec![ev.clone()], None)), "ERR_CLOSED");
    assert_eq!(code(bus.try_publish_batch(vec![ev])), "ERR_CLOSED");
    assert_eq!(drain(&sub), vec![(0, 0)], "close() lets consumers drain");
    assert_eq!(sub.stats().queue.published, 1);
    assert!(bus.stats().closed);
}

#[test]
fn bad_filter_specs_are_refused() {
    for bad in ["", "[", "42", r#"{"field":"a","op":"regex","value":1}"#, r#"{"any":{}}"#, r#"{"field":"","value":1}"#] {
        assert_eq!(code(FilterChain::parse(bad)), "ERR_INVALID_ARG", "{bad}");
    }
    let too_many = format!("[{}]", vec![r#"{"type":"a"}"#; 257].join(","));
    assert_eq!(code(FilterChain::parse(&too_many)), "ERR_INVALID_ARG");
}
