//! Declarative filters that run in the core, so events a subscriber does not want never wake the
//! JS thread or a WASM instance. A chain is a list of predicates that must all hold, evaluated in
//! order and short-circuiting on the first miss.
//!
//! The wire form (what the TypeScript layer sends) is JSON:
//! `{"type":"order.*"}`, `{"attr":"subject","op":"prefix","value":"eu/"}`,
//! `{"field":"amount","op":"gt","value":0}`, `{"field":"a.b","op":"exists"}`,
//! `{"not":F}`, `{"any":[F, …]}`.
//!
//! Field predicates do not scan the data themselves: the chain's field paths are merged into one
//! [`json::PathSet`] when it is parsed, and the first field predicate evaluated on an event
//! locates all of them in a single pass (nothing is decoded but the values compared). A chain
//! that stops before its first field predicate never reads the data.

use crate::error::{Error, Result};
use crate::event::{Encoding, Event, EventId};
use crate::json;
use crate::pattern::Pattern;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Prefix,
    Exists,
}

impl Op {
    fn parse(s: &str) -> Result<Op> {
        Ok(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "prefix" => Op::Prefix,
            "exists" => Op::Exists,
            other => {
                return Err(Error::invalid(format!(
                    "unknown filter op '{other}' (expected eq, ne, gt, gte, lt, lte, in, prefix, exists)"
                )))
            }
        })
    }
}

/// The value a predicate compares against, decoded once when the filter is built.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
    Set(Vec<Expected>),
    Nothing,
}

impl Expected {
    fn from_json(v: Option<&Value>) -> Result<Expected> {
        Ok(match v {
            None => Expected::Nothing,
            Some(Value::Number(n)) => Expected::Num(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => Expected::Str(s.clone()),
            Some(Value::Bool(b)) => Expected::Bool(*b),
            Some(Value::Null) => Expected::Null,
            Some(Value::Array(a)) => {
                Expected::Set(a.iter().map(|x| Expected::from_json(Some(x))).collect::<Result<_>>()?)
            }
            Some(Value::Object(_)) => return Err(Error::invalid("filter values must be scalars or arrays of scalars")),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attr {
    Type,
    Subject,
    Id,
}

#[derive(Clone, Debug)]
enum Predicate {
    TypeMatches(Pattern),
    Attr { attr: Attr, op: Op, expected: Expected },
    /// `slot`: where the chain's one-pass scan puts this path's value; `None` for paths too deep
    /// for it, looked up on their own.
    Field { path: Vec<String>, slot: Option<usize>, op: Op, expected: Expected },
    Not(Box<Predicate>),
    Any(Vec<Predicate>),
}

/// An AND-chain of predicates.
#[derive(Clone, Debug, Default)]
pub struct FilterChain {
    predicates: Vec<Predicate>,
    /// Every field path the predicates read, located together once per event.
    paths: json::PathSet,
}

const MAX_DEPTH: usize = 16;
const MAX_PREDICATES: usize = 256;

impl FilterChain {
    /// Parses the JSON wire form: one filter object or an array of them.
    pub fn parse(spec: &str) -> Result<FilterChain> {
        let v: Value = serde_json::from_str(spec).map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
        let items = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        if items.len() > MAX_PREDICATES {
            return Err(Error::invalid(format!("a filter chain holds at most {MAX_PREDICATES} predicates")));
        }
        let mut paths = json::PathSet::default();
        let predicates = items.iter().map(|f| parse_predicate(f, 0, &mut paths)).collect::<Result<_>>()?;
        Ok(FilterChain { predicates, paths })
    }

    pub fn len(&self) -> usize {
        self.predicates.len()
    }
    pub fn is_empty(&self) -> bool {
        self.predicates.is_empty()
    }

    pub fn accepts(&self, ev: &Event) -> bool {
        let mut fields = Fields { paths: &self.paths, ev, located: false, values: json::Located::default() };
        self.predicates.iter().all(|p| eval(p, ev, &mut fields))
    }
}

/// An event's field values, located on first use, once for the whole chain.
struct Fields<'a> {
    paths: &'a json::PathSet,
    ev: &'a Event,
    located: bool,
    values: json::Located<'a>,
}

impl<'a> Fields<'a> {
    fn get(&mut self, slot: Option<usize>, path: &[String]) -> Option<&'a [u8]> {
        match slot {
            Some(slot) => {
                if !self.located {
                    self.paths.locate(&self.ev.data, &mut self.values);
                    self.located = true;
                }
                self.values.get(slot)
            }
            None => json::lookup(&self.ev.data, path),
        }
    }
}

fn parse_predicate(v: &Value, depth: usize, paths: &mut json::PathSet) -> Result<Predicate> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(format!("filters nest at most {MAX_DEPTH} deep")));
    }
    let obj = v.as_object().ok_or_else(|| Error::invalid(format!("a filter must be an object, got {v}")))?;
    let op = |default: Op| -> Result<Op> {
        match obj.get("op") {
            None => Ok(default),
            Some(Value::String(s)) => Op::parse(s),
            Some(o) => Err(Error::invalid(format!("filter op must be a string, got {o}"))),
        }
    };
    let expected_for = |op: Op| -> Result<Expected> {
        let e = Expected::from_json(obj.get("value"))?;
        match (op, &e) {
            (Op::Exists, _) => Ok(Expected::Nothing),
            (_, Expected::Nothing) => Err(Error::invalid(format!("filter {v} needs a value"))),
            (Op::In, Expected::Set(_)) => Ok(e),
            (Op::In, _) => Err(Error::invalid("op 'in' needs an array value")),
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Expected::Num(_) | Expected::Str(_)) => Ok(e),
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, _) => Err(Error::invalid("ordering ops need a number or string value")),
            (Op::Prefix, Expected::Str(_)) => Ok(e),
            (Op::Prefix, _) => Err(Error::invalid("op 'prefix' needs a string value")),
            _ => Ok(e),
        }
    };
    if let Some(t) = obj.get("type") {
        let t = t.as_str().ok_or_else(|| Error::invalid("filter 'type' must be a topic or pattern string"))?;
        return Ok(Predicate::TypeMatches(Pattern::parse(t)?));
    }
    if let Some(n) = obj.get("not") {
        return Ok(Predicate::Not(Box::new(parse_predicate(n, depth + 1, paths)?)));
    }
    if let Some(a) = obj.get("any") {
        let a = a.as_array().ok_or_else(|| Error::invalid("filter 'any' must be an array"))?;
        return Ok(Predicate::Any(a.iter().map(|f| parse_predicate(f, depth + 1, paths)).collect::<Result<_>>()?));
    }
    if let Some(a) = obj.get("attr") {
        let attr = match a.as_str() {
            Some("type") => Attr::Type,
            Some("subject") => Attr::Subject,
            Some("id") => Attr::Id,
            _ => return Err(Error::invalid(format!("unknown filter attr {a} (expected type, subject, id)"))),
        };
        let op = op(Op::Eq)?;
        return Ok(Predicate::Attr { attr, op, expected: expected_for(op)? });
    }
    if let Some(f) = obj.get("field") {
        let f = f.as_str().ok_or_else(|| Error::invalid("filter 'field' must be a dot path string"))?;
        let path: Vec<String> = f.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::invalid(format!("filter field path '{f}' has an empty segment")));
        }
        let op = op(Op::Eq)?;
        let expected = expected_for(op)?;
        return Ok(Predicate::Field { slot: paths.insert(&path), path, op, expected });
    }
    Err(Error::invalid(format!("unknown filter {v}: expected one of type, attr, field, not, any")))
}

fn eval<'a>(p: &Predicate, ev: &'a Event, fields: &mut Fields<'a>) -> bool {
    match p {
        Predicate::TypeMatches(pat) => pat.matches(&ev.topic),
        Predicate::Not(inner) => !eval(inner, ev, fields),
        Predicate::Any(list) => list.iter().any(|q| eval(q, ev, fields)),
        Predicate::Attr { attr: Attr::Subject, op: Op::Exists, .. } => ev.subject.is_some(),
        Predicate::Attr { attr: Attr::Type | Attr::Id, op: Op::Exists, .. } => true,
        Predicate::Attr { attr, op, expected } => {
            let seq;
            let value: Option<&str> = match attr {
                Attr::Type => Some(&ev.topic),
                Attr::Subject => ev.subject.as_deref(),
                Attr::Id => match &ev.id {
                    EventId::Given(s) => Some(s),
                    EventId::Seq(n) => {
                        seq = n.to_string();
                        Some(&seq)
                    }
                },
            };
            match value {
                None => false,
                Some(s) => *op == Op::Exists || compare_str(s, *op, expected),
            }
        }
        Predicate::Field { path, slot, op, expected } => {
            if ev.encoding != Encoding::Json {
                return false;
            }
            match fields.get(*slot, path) {
                None => false,
                Some(_) if *op == Op::Exists => true,
                Some(raw) => compare_raw(raw, *op, expected),
            }
        }
    }
}

fn compare_str(s: &str, op: Op, expected: &Expected) -> bool {
    match (op, expected) {
        (Op::In, Expected::Set(set)) => set.iter().any(|e| matches!(e, Expected::Str(x) if x == s)),
        (Op::Prefix, Expected::Str(x)) => s.starts_with(x.as_str()),
        (_, Expected::Str(x)) => ordered(s.cmp(x.as_str()), op),
        (Op::Ne, _) => true,
        _ => false,
    }
}

fn ordered(ord: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ord == Equal,
        Op::Ne => ord != Equal,
        Op::Gt => ord == Greater,
        Op::Gte => ord != Less,
        Op::Lt => ord == Less,
        Op::Lte => ord != Greater,
        _ => false,
    }
}

/// Compares a raw JSON token with the expected value without building a tree.
fn compare_raw(raw: &[u8], op: Op, expected: &Expected) -> bool {
    if let (Op::In, Expected::Set(set)) = (op, expected) {
        return set.iter().any(|e| compare_raw(raw, Op::Eq, e));
    }
    match expected {
        Expected::Num(x) => {
            let Some(n) = json::number(raw) else {
                return op == Op::Ne;
            };
            match n.partial_cmp(x) {
                Some(ord) => ordered(ord, op),
                None => op == Op::Ne,
            }
        }
        Expected::Str(x) => {
            // (In)equality of a string without escapes is a byte compare: no decoding, and no
            // UTF-8 check, as bytes equal to the (valid) expected string are valid themselves.
            if let (Op::Eq | Op::Ne, Some(bytes)) = (op, json::plain_string(raw)) {
                return (bytes == x.as_bytes()) == (op == Op::Eq);
            }
            match json::string_contents(raw) {
                Some(s) => compare_str(&s, op, expected),
                None => op == Op::Ne,
            }
        }
        Expected::Bool(b) => {
            let is = if *b { &b"true"[..] } else { &b"false"[..] };
            (raw == is) == (op == Op::Eq)
        }
        Expected::Null => (raw == b"null") == (op == Op::Eq),
        Expected::Set(_) | Expected::Nothing => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(topic: &str, data: &str) -> Event {
        Event {
            id: EventId::Seq(7),
            topic: topic.into(),
            topic_id: None,
            time_ms: 0,
            subject: Some("eu/berlin".into()),
            traceparent: None,
            deadline: None,
            ctx: None,
            encoding: Encoding::Json,
            data: data.as_bytes().into(),
            journal_seq: Default::default(),
        }
    }

    fn accepts(spec: &str, e: &Event) -> bool {
        FilterChain::parse(spec).unwrap().accepts(e)
    }

    #[test]
    fn field_type_and_attr_predicates() {
        let e = ev("order.created", r#"{"amount": 42.5, "currency": "EUR", "vip": true, "tags": null, "c": {"n": "x"}}"#);
        assert!(accepts(r#"{"field":"amount","op":"gt","value":0}"#, &e));
        assert!(!accepts(r#"{"field":"amount","op":"lt","value":10}"#, &e));
        assert!(accepts(r#"{"field":"amount","op":"lte","value":42.5}"#, &e));
        assert!(accepts(r#"{"field":"currency","value":"EUR"}"#, &e));
        assert!(accepts(r#"{"field":"currency","op":"in","value":["USD","EUR"]}"#, &e));
        assert!(accepts(r#"{"field":"vip","value":true}"#, &e));
        assert!(!accepts(r#"{"field":"vip","value":false}"#, &e));
        assert!(accepts(r#"{"field":"tags","value":null}"#, &e));
        assert!(accepts(r#"{"field":"c.n","op":"exists"}"#, &e));
        assert!(!accepts(r#"{"field":"c.m","op":"exists"}"#, &e));
        assert!(accepts(r#"{"type":"order.*"}"#, &e));
        assert!(!accepts(r#"{"type":"order.shipped"}"#, &e));
        assert!(accepts(r#"{"attr":"subject","op":"prefix","value":"eu/"}"#, &e));
        assert!(accepts(r#"{"attr":"id","value":"7"}"#, &e));
        assert!(accepts(r#"{"not":{"field":"amount","op":"lt","value":0}}"#, &e));
        assert!(accepts(r#"{"any":[{"field":"amount","op":"lt","value":0},{"field":"vip","value":true}]}"#, &e));
        assert!(!accepts(r#"[{"field":"amount","op":"gt","value":0},{"field":"currency","value":"USD"}]"#, &e));
        // A field that is missing or of another type never matches an ordering op.
        assert!(!accepts(r#"{"field":"currency","op":"gt","value":0}"#, &e));
        assert!(accepts(r#"{"field":"currency","op":"ne","value":0}"#, &e));
    }

    #[test]
    fn bad_specs_are_typed_errors() {
        for bad in [
            "nope",
            r#"{"field":"a","op":"regex","value":"x"}"#,
            r#"{"field":"a","op":"gt"}"#,
            r#"{"field":"a..b","value":1}"#,
            r#"{"field":"a","op":"in","value":1}"#,
            r#"{"type":"a.>.b"}"#,
            r#"{"attr":"colour","value":1}"#,
            r#"{"what":1}"#,
            r#"{"field":"a","value":{"x":1}}"#,
        ] {
            assert_eq!(FilterChain::parse(bad).unwrap_err().code(), "ERR_INVALID_ARG", "{bad}");
        }
        let deep = format!("{}{}{}", r#"{"not":"#.repeat(40), r#"{"type":"a"}"#, "}".repeat(40));
        assert!(FilterChain::parse(&deep).is_err());
    }
}
