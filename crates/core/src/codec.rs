//! Encodes a batch of events for a JavaScript consumer as one JSON text, so the JS thread pays one
//! string crossing and one `JSON.parse` per batch instead of building objects field by field
//! through N-API. JSON data is spliced in verbatim (it was encoded once, by the publisher).
//!
//! The batch is columnar: what events share is written once, and the per-event envelope is an
//! id string and a few small numbers, so `JSON.parse` spends its time on the data (an object per
//! event with five keys and a long number for the time cost more to parse than the data;
//! `src/batch.ts` builds the event objects from the columns):
//!
//! ```text
//! [source, [type…], [typeIndex…], [id…], time0, [timeDelta…], [data…],
//!  [[index, contextId, binary]…], [tag…], [[index, subject, traceparent, deadline, attempt]…]]
//! ```
//!
//! - `[type…]` the distinct topics in order of first use; `[typeIndex…]` one per event, or
//!   empty when there is a single topic.
//! - `id`: the event's id as a string (`<prefix>-<n>` for the bus's own, or the publisher's);
//!   whole strings on purpose (see the comment in `encode_columns`).
//! - `time` of event i: `time0 + timeDelta[0] + … + timeDelta[i]` (Unix ms).
//! - `data`: the JSON data (`null` for none) or, for binary data, base64 text.
//! - fix-ups name only events that need work on the JS side: a live publisher Context to attach
//!   (contextId ≠ 0) or base64 data to turn back into bytes (binary = 1).
//! - `[tag…]` (handler deliveries only): the delivery tags to settle with, one per event, or a
//!   single tag t for consecutive tags t, t+1, …; empty when the subscription settles by
//!   counting only.
//! - extras: events with a subject, traceparent, deadline or an attempt above 1 (`null` where absent).

use crate::delivery::Delivered;
use crate::event::{Encoding, Event, EventId};
use crate::json::{write_i64, write_string, write_u64};
use crate::subscription::Origin;
use std::io::Write;
use std::sync::Arc;


/// A stream's batch (no tags, no attempts).
pub fn encode_js_batch(origin: &Origin, events: &[Arc<Event>], out: &mut Vec<u8>) {
    encode_columns(origin, events.len(), |i| (&*events[i], 1), None, out);
}

/// A handler's deliveries: redeliveries carry `attempt` (2 for the first retry), and the tags.
pub fn encode_js_deliveries(origin: &Origin, deliveries: &[Delivered], out: &mut Vec<u8>) {
    let tags = deliveries.first().is_some_and(|d| d.tag != 0).then_some(deliveries);
    encode_columns(origin, deliveries.len(), |i| (&*deliveries[i].event, deliveries[i].attempt), tags, out);
}

fn encode_columns<'a>(
    origin: &Origin,
    n: usize,
    at: impl Fn(usize) -> (&'a Event, u32),
    tags: Option<&[Delivered]>,
    out: &mut Vec<u8>,
) {
    out.push(b'[');
    write_string(out, &origin.source);
    // Topics: distinct ones in order of first use (a batch rarely has more than a few).
    let mut topics: Vec<&str> = Vec::new();
    let mut index: Vec<u32> = Vec::new();
    for i in 0..n {
        let t: &str = &at(i).0.topic;
        let k = match topics.iter().position(|x| *x == t) {
            Some(k) => k,
            None => {
                topics.push(t);
                topics.len() - 1
            }
        };
        if k > 0 && index.is_empty() {
            index.resize(i, 0);
        }
        if !index.is_empty() {
            index.push(k as u32);
        }
    }
    out.extend_from_slice(b",[");
    for (k, t) in topics.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_string(out, t);
    }
    out.extend_from_slice(b"],[");
    for (k, x) in index.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_u64(out, *x as u64);
    }
    out.extend_from_slice(b"],[");
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        // Whole id strings, not numbers for JS to append to the prefix: V8 turns a number into a
        // string through its number-string cache, an old-space table, so every id string made
        // that way survived the next scavenge (and was promoted): at 240 k events/s that made
        // each scavenge ~5× longer and was the p99 tail of a JS subscriber (docs/benchmarks.md).
        render_id(origin, &at(i).0.id, out);
    }
    let time0 = if n > 0 { at(0).0.time_ms } else { 0 };
    out.extend_from_slice(b"],");
    write_u64(out, time0);
    out.extend_from_slice(b",[");
    let mut prev_time = time0;
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let t = at(i).0.time_ms;
        write_i64(out, t.wrapping_sub(prev_time) as i64);
        prev_time = t;
    }
    out.extend_from_slice(b"],[");
    let mut fixups = Vec::new();
    let mut extras = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let (ev, attempt) = at(i);
        write_data(ev, out);
        let ctx = ev.ctx.as_ref().map_or(0, |c| c.id());
        let binary = ev.encoding == Encoding::Binary;
        if ctx != 0 || binary {
            fixups.push((i, ctx, binary));
        }
        if ev.subject.is_some() || ev.traceparent.is_some() || ev.deadline.is_some() || attempt > 1 {
            extras.push((i, ev, attempt));
        }
    }
    out.extend_from_slice(b"],[");
    for (k, (i, ctx, bin)) in fixups.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_u64(out, *i as u64);
        out.push(b',');
        write_u64(out, *ctx);
        out.extend_from_slice(if *bin { b",1]" } else { b",0]" });
    }
    out.extend_from_slice(b"],[");
    if let Some(ds) = tags {
        let first = ds[0].tag;
        if ds.iter().enumerate().all(|(k, d)| d.tag == first + k as u64) {
            write_u64(out, first);
        } else {
            for (k, d) in ds.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write_u64(out, d.tag);
            }
        }
    }
    out.extend_from_slice(b"],[");
    for (k, (i, ev, attempt)) in extras.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_u64(out, *i as u64);
        out.push(b',');
        write_opt_string(out, ev.subject.as_deref());
        out.push(b',');
        write_opt_string(out, ev.traceparent.as_deref());
        out.push(b',');
        match &ev.deadline {
            Some(d) => write_u64(out, d.unix_ms),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b',');
        if *attempt > 1 {
            write_u64(out, *attempt as u64);
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]]");
}

fn write_opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_data(ev: &Event, out: &mut Vec<u8>) {
    match ev.encoding {
        Encoding::Json if !ev.data.is_empty() => out.extend_from_slice(&ev.data),
        Encoding::Json => out.extend_from_slice(b"null"),
        Encoding::Binary => {
            out.push(b'"');
            base64(&ev.data, out);
            out.push(b'"');
        }
    }
}

pub fn render_id(origin: &Origin, id: &EventId, out: &mut Vec<u8>) {
    match id {
        EventId::Seq(n) => {
            out.push(b'"');
            out.extend_from_slice(origin.id_prefix.as_bytes());
            out.push(b'-');
            write_u64(out, *n);
            out.push(b'"');
        }
        EventId::Given(s) => write_string(out, s),
    }
}

/// One event as a JSON object (`attempt` is written when above 1).
pub(crate) fn encode_event(origin: &Origin, ev: &Event, attempt: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    render_id(origin, &ev.id, out);
    out.extend_from_slice(b",\"type\":");
    write_string(out, &ev.topic);
    out.extend_from_slice(b",\"source\":");
    write_string(out, &origin.source);
    out.extend_from_slice(b",\"time\":");
    write_u64(out, ev.time_ms);
    if let Some(s) = &ev.subject {
        out.extend_from_slice(b",\"subject\":");
        write_string(out, s);
    }
    if let Some(t) = &ev.traceparent {
        out.extend_from_slice(b",\"traceparent\":");
        write_string(out, t);
    }
    if let Some(d) = &ev.deadline {
        let _ = write!(out, ",\"deadline\":{}", d.unix_ms);
    }
    if attempt > 1 {
        let _ = write!(out, ",\"attempt\":{attempt}");
    }
    out.extend_from_slice(b",\"data\":");
    write_data(ev, out);
    out.push(b'}');
}

pub(crate) fn base64(data: &[u8], out: &mut Vec<u8>) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63]);
        out.push(T[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] } else { b'=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] } else { b'=' });
    }
}

#[cfg(test)]
mod tests {
    /// JSON numbers are exact up to 2^53: ids above it must still come out right.
    const EXACT: u64 = 1 << 53;
    use super::*;
    use crate::context::Context;
    use serde_json::{json, Value};
    use std::time::Duration;

    /// What `src/batch.ts` does with a batch, written again here: each event object rebuilt from
    /// the columns, plus the fix-ups and the tags expanded to one per event.
    fn decode(text: &[u8]) -> (Vec<Value>, Value, Vec<u64>) {
        let v: Value = serde_json::from_slice(text).expect("valid JSON");
        let a = v.as_array().unwrap();
        let (source, types, index) = (&a[0], a[1].as_array().unwrap(), a[2].as_array().unwrap());
        let (ids, mut time, deltas, data) = (a[3].as_array().unwrap(), a[4].as_i64().unwrap(), a[5].as_array().unwrap(), a[6].as_array().unwrap());
        let (fixups, tags, extras) = (a[7].clone(), a[8].as_array().unwrap(), a[9].as_array().unwrap());
        let mut events = Vec::new();
        for i in 0..data.len() {
            assert!(ids[i].is_string(), "ids cross as whole strings");
            let id = ids[i].clone();
            time += deltas[i].as_i64().unwrap();
            let ty = if index.is_empty() { types[0].clone() } else { types[index[i].as_u64().unwrap() as usize].clone() };
            let mut ev = json!({ "id": id, "type": ty, "source": source, "time": time, "data": data[i] });
            if let Some(x) = extras.iter().find(|x| x[0] == json!(i)) {
                for (k, key) in ["subject", "traceparent", "deadline", "attempt"].iter().enumerate() {
                    if !x[k + 1].is_null() {
                        ev[*key] = x[k + 1].clone();
                    }
                }
            }
            events.push(ev);
        }
        let tags = match tags.len() {
            1 if data.len() > 1 => (0..data.len() as u64).map(|k| tags[0].as_u64().unwrap() + k).collect(),
            _ => tags.iter().map(|t| t.as_u64().unwrap()).collect(),
        };
        (events, fixups, tags)
    }

    fn mk(id: EventId, topic: &str, time_ms: u64, enc: Encoding, data: &[u8], ctx: Option<Context>) -> Arc<Event> {
        Arc::new(Event {
            id,
            topic: topic.into(),
            topic_id: None,
            time_ms,
            subject: None,
            traceparent: None,
            deadline: ctx.as_ref().and_then(|c| c.deadline()),
            ctx,
            encoding: enc,
            data: data.into(),
            journal_seq: Default::default(),
        })
    }

    /// Every event rebuilt from the columns equals the event encoded on its own (`encode_event`,
    /// the per-event form dead letters use): ids (the bus's, given ones, one past 2^53), types,
    /// times going backwards, binary data, every optional field and redelivery attempts.
    #[test]
    fn columns_rebuild_every_event_exactly() {
        let origin = Origin { id_prefix: "p1".into(), source: "svc/\"a\"".into() };
        let ctx = Context::background().with_timeout(Duration::from_secs(5));
        let mut odd = mk(EventId::Seq(7), "order.paid", 1_764_000_000_500, Encoding::Json, b"", None);
        {
            let e = Arc::get_mut(&mut odd).unwrap();
            e.subject = Some("s\n".into());
            e.traceparent = Some("00-ab-cd-01".into());
        }
        let evs = vec![
            mk(EventId::Seq(5), "order.created", 1_764_000_000_000, Encoding::Json, br#"{"a":[1,2]}"#, None),
            mk(EventId::Given("x\"y".into()), "order.created", 1_764_000_000_001, Encoding::Binary, &[0, 255, 7, 8], Some(ctx.clone())),
            odd,
            mk(EventId::Seq(6), "order.created", 1_763_999_999_000, Encoding::Json, b"3", None),
            mk(EventId::Seq(EXACT + 1), "order.paid", 1_764_000_000_000, Encoding::Json, b"\"t\"", None),
            mk(EventId::Seq(8), "order.created", 1_764_000_000_000, Encoding::Json, b"null", None),
        ];
        let attempts = [1, 1, 3, 1, 2, 1];
        let deliveries: Vec<Delivered> =
            evs.iter().zip(attempts).enumerate().map(|(k, (e, a))| Delivered { tag: 40 + k as u64 * 2, attempt: a, event: e.clone() }).collect();
        let mut out = Vec::new();
        encode_js_deliveries(&origin, &deliveries, &mut out);
        let (got, fixups, tags) = decode(&out);
        for (k, d) in deliveries.iter().enumerate() {
            let mut one = Vec::new();
            encode_event(&origin, &d.event, d.attempt, &mut one);
            assert_eq!(got[k], serde_json::from_slice::<Value>(&one).unwrap(), "event {k}");
        }
        assert_eq!(got[4]["id"], format!("p1-{}", EXACT + 1));
        assert_eq!(fixups, json!([[1, ctx.id(), 1]]));
        assert_eq!(tags, vec![40, 42, 44, 46, 48, 50]);

        // A stream's batch has no tags and no attempts.
        out.clear();
        encode_js_batch(&origin, &evs, &mut out);
        let (got, _, tags) = decode(&out);
        assert!(tags.is_empty());
        assert!(got[2].get("attempt").is_none() && got[2]["subject"] == "s\n");
    }

    /// Consecutive tags go as the first alone; the JS side counts up from it.
    #[test]
    fn consecutive_tags_are_one_number() {
        let origin = Origin { id_prefix: "p".into(), source: "s".into() };
        let ds: Vec<Delivered> = (0..3)
            .map(|k| Delivered { tag: 9 + k, attempt: 1, event: mk(EventId::Seq(k + 1), "t", 5, Encoding::Json, b"1", None) })
            .collect();
        let mut out = Vec::new();
        encode_js_deliveries(&origin, &ds, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[8], json!([9]));
        assert_eq!(v[2], json!([]), "one topic: no per-event index");
        assert_eq!(decode(&out).2, vec![9, 10, 11]);
        let untracked: Vec<Delivered> = ds.into_iter().map(|d| Delivered { tag: 0, ..d }).collect();
        out.clear();
        encode_js_deliveries(&origin, &untracked, &mut out);
        assert!(decode(&out).2.is_empty());
    }
}
