//! Declarative filter chains against an independent reference: generated chains (type, attr and
//! field predicates, `not`, `any`, every op) over generated JSON documents, evaluated by
//! `FilterChain::accepts` (one-pass field scan, raw-token compares) and by a plain evaluator over
//! serde_json's tree. They must agree on every event.

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_core::{Bus, BusOptions, Event, EventInit, FilterChain, Pattern};
use std::sync::Arc;

const KEYS: &[&str] = &["a", "b", "amount", "currency", "k\"q", "é"];
const WORDS: &[&str] = &["EUR", "USD", "eu/", "c-1", "c-", "", "x\"y", "é", "EURO"];
const TOPICS: &[&str] = &["order.*", "order.>", "order.created", "user.*", ">", "*.created"];

fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(KEYS).prop_map(str::to_owned)
}

fn word() -> impl Strategy<Value = Value> {
    proptest::sample::select(WORDS).prop_map(|w| json!(w))
}

/// Numbers that serde_json and the scanner both read exactly: integers and quarters.
fn num() -> impl Strategy<Value = Value> {
    prop_oneof![(-300i32..300).prop_map(|n| json!(n)), (-1200i32..1200).prop_map(|n| json!(n as f64 / 4.0))]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![num(), word(), any::<bool>().prop_map(Value::Bool), Just(Value::Null)]
}

/// Event data: objects keyed from `KEYS` (so field paths hit), nested, with arrays.
fn data() -> impl Strategy<Value = Value> {
    let leaf = scalar();
    let tree = leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::btree_map(key(), inner.clone(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
            proptest::collection::vec(inner, 0..3).prop_map(Value::Array),
        ]
    });
    proptest::collection::btree_map(key(), tree, 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn field_predicate() -> impl Strategy<Value = Value> {
    let path = proptest::collection::vec(key(), 1..3).prop_map(|p| p.join("."));
    let op_value = prop_oneof![
        (proptest::sample::select(&["eq", "ne"][..]), scalar()).prop_map(|(o, v)| (o, Some(v))),
        (proptest::sample::select(&["gt", "gte", "lt", "lte"][..]), prop_oneof![num(), word()]).prop_map(|(o, v)| (o, Some(v))),
        proptest::collection::vec(scalar(), 1..4).prop_map(|v| ("in", Some(Value::Array(v)))),
        word().prop_map(|v| ("prefix", Some(v))),
        Just(("exists", None)),
    ];
    (path, op_value).prop_map(|(path, (op, value))| match value {
        Some(value) => json!({"field": path, "op": op, "value": value}),
        None => json!({"field": path, "op": op}),
    })
}

fn predicate() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => field_predicate(),
        1 => proptest::sample::select(TOPICS).prop_map(|t| json!({"type": t})),
        1 => word().prop_map(|w| json!({"attr": "subject", "op": "prefix", "value": w})),
        1 => Just(json!({"attr": "subject", "op": "exists"})),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| json!({ "not": p })),
            proptest::collection::vec(inner, 0..3).prop_map(|ps| json!({ "any": ps })),
        ]
    })
}

fn ordered(ord: Option<std::cmp::Ordering>, op: &str) -> bool {
    use std::cmp::Ordering::*;
    match (ord, op) {
        (None, op) => op == "ne",
        (Some(o), "eq") => o == Equal,
        (Some(o), "ne") => o != Equal,
        (Some(o), "gt") => o == Greater,
        (Some(o), "gte") => o != Less,
        (Some(o), "lt") => o == Less,
        (Some(o), "lte") => o != Greater,
        _ => false,
    }
}

/// What a field predicate means, on serde_json's tree: a missing field never matches (not
/// even `ne`); a value of another type than the expected one matches only `ne`.
fn field_holds(found: Option<&Value>, op: &str, expected: Option<&Value>) -> bool {
    let Some(v) = found else { return false };
    let Some(expected) = expected else { return op == "exists" };
    if op == "in" {
        return expected.as_array().unwrap().iter().any(|e| field_holds(Some(v), "eq", Some(e)));
    }
    match (expected, v) {
        (Value::Number(x), Value::Number(n)) => ordered(n.as_f64().unwrap().partial_cmp(&x.as_f64().unwrap()), op),
        (Value::String(x), Value::String(s)) if op == "prefix" => s.starts_with(x.as_str()),
        (Value::String(x), Value::String(s)) => ordered(Some(s.as_str().cmp(x.as_str())), op),
        (Value::Bool(_) | Value::Null, v) => (v == expected) == (op == "eq"),
        _ => op == "ne",
    }
}

fn reference(p: &Value, topic: &str, subject: &str, data: &Value) -> bool {
    if let Some(t) = p.get("type") {
        return Pattern::parse(t.as_str().unwrap()).unwrap().matches(topic);
    }
    if let Some(inner) = p.get("not") {
        return !reference(inner, topic, subject, data);
    }
    if let Some(list) = p.get("any") {
        return list.as_array().unwrap().iter().any(|q| reference(q, topic, subject, data));
    }
    let op = p["op"].as_str().unwrap();
    if p.get("attr").is_some() {
        return op == "exists" || subject.starts_with(p["value"].as_str().unwrap());
    }
    let found = p["field"].as_str().unwrap().split('.').try_fold(data, |v, k| v.as_object()?.get(k));
    field_holds(found, op, p.get("value"))
}

fn bus() -> &'static Bus {
    static BUS: std::sync::OnceLock<Bus> = std::sync::OnceLock::new();
    BUS.get_or_init(|| Bus::new(BusOptions::default()).unwrap())
}

fn event(bus: &Bus, data: &[u8]) -> Arc<Event> {
    let init = EventInit { topic: "order.created".into(), subject: Some("eu/berlin".into()), data: data.to_vec(), ..Default::default() };
    bus.make_event(init, None).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn chains_agree_with_a_tree_evaluator(chain in proptest::collection::vec(predicate(), 1..6), data in data(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_vec_pretty(&data) } else { serde_json::to_vec(&data) }.unwrap();
        let ev = event(bus(), &text);
        let spec = Value::Array(chain.clone()).to_string();
        let want = chain.iter().all(|p| reference(p, "order.created", "eu/berlin", &data));
        prop_assert_eq!(FilterChain::parse(&spec).unwrap().accepts(&ev), want, "chain {} on {}", spec, String::from_utf8_lossy(&text));
    }
}

/// The documented edge cases, spelled out (the generator above reaches them, this names them).
#[test]
fn field_semantics_edges() {
    let accepts = |spec: &str, data: &str| FilterChain::parse(spec).unwrap().accepts(&event(bus(), data.as_bytes()));
    // Duplicate keys: the first one counts.
    assert!(accepts(r#"{"field":"a","value":1}"#, r#"{"a":1,"a":2}"#));
    assert!(!accepts(r#"{"field":"a","value":2}"#, r#"{"a":1,"a":2}"#));
    // Escaped keys and strings are compared decoded.
    assert!(accepts(r#"{"field":"k\"q","value":"x\"y"}"#, r#"{"k\"q":"x\"y"}"#));
    assert!(accepts(r#"{"field":"é","value":"é"}"#, r#"{"\u00e9":"\u00e9"}"#));
    // Several predicates on one field and on fields nested under it, in one chain.
    assert!(accepts(
        r#"[{"field":"o","op":"exists"},{"field":"o.n","op":"gt","value":1},{"field":"o.s","op":"prefix","value":"ab"},{"field":"o.n","op":"lt","value":3}]"#,
        r#"{"o":{"n":2,"s":"abc"}}"#
    ));
    // A field found before the document breaks off still counts; one after it does not.
    assert!(accepts(r#"{"field":"a","value":1}"#, r#"{"a":1,"b":"#));
    assert!(!accepts(r#"{"field":"b","op":"exists"}"#, r#"{"a":1,"b":"#));
    // Data that is not an object: no field exists, and `ne` does not hold either.
    for data in ["[1,2]", "3", "\"a\"", "", "nul"] {
        assert!(!accepts(r#"{"field":"a","op":"ne","value":1}"#, data), "{data}");
        assert!(accepts(r#"{"not":{"field":"a","op":"exists"}}"#, data), "{data}");
    }
    // A path deeper than the one-pass scan handles is still looked up (on its own).
    let deep = (0..40).map(|_| "a").collect::<Vec<_>>().join(".");
    let doc = format!("{}7{}", r#"{"a":"#.repeat(40), "}".repeat(40));
    assert!(accepts(&format!(r#"{{"field":"{deep}","value":7}}"#), &doc));
}
