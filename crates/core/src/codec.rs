//! Encodes a batch of events for a JavaScript consumer as one JSON text, so the JS thread pays one
//! string crossing and one `JSON.parse` per batch instead of building objects field by field
//! through N-API. JSON data is spliced in verbatim (it was encoded once, by the publisher).
//!
//! Shape: `[[event, …], [[index, contextId, binary], …]]`. Each event is
//! `{"id","type","source","time","data"}` plus `subject`, `traceparent`, `deadline` when set.
//! The second list names only events that need a fix-up on the JS side: a live publisher Context
//! to attach (contextId ≠ 0) or base64 data to turn back into bytes (binary = 1).

use crate::delivery::Delivered;
use crate::event::{Encoding, Event, EventId};
use crate::json::write_string;
use crate::subscription::Origin;
use std::io::Write;
use std::sync::Arc;

pub fn encode_js_batch(origin: &Origin, events: &[Arc<Event>], out: &mut Vec<u8>) {
    out.push(b'[');
    out.push(b'[');
    let mut fixups = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_event(origin, ev, 1, out);
        let ctx = ev.ctx.as_ref().map_or(0, |c| c.id());
        let binary = ev.encoding == Encoding::Binary;
        if ctx != 0 || binary {
            fixups.push((i, ctx, binary));
        }
    }
    out.extend_from_slice(b"],[");
    for (n, (i, ctx, bin)) in fixups.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = write!(out, "[{i},{ctx},{}]", *bin as u8);
    }
    out.extend_from_slice(b"]]");
}

pub fn render_id(origin: &Origin, id: &EventId, out: &mut Vec<u8>) {
    match id {
        EventId::Seq(n) => {
            let _ = write!(out, "\"{}-{n}\"", origin.id_prefix);
        }
        EventId::Given(s) => write_string(out, s),
    }
}

/// Like `encode_js_batch`, for a handler's deliveries: a redelivered event carries `"attempt"`
/// (2 for the first retry), and a third list holds the delivery tags the handler settles with
/// (empty when the subscription settles by counting only).
pub fn encode_js_deliveries(origin: &Origin, deliveries: &[Delivered], out: &mut Vec<u8>) {
    out.push(b'[');
    out.push(b'[');
    let mut fixups = Vec::new();
    for (i, d) in deliveries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let ev = &d.event;
        encode_event(origin, ev, d.attempt, out);
        let ctx = ev.ctx.as_ref().map_or(0, |c| c.id());
        let binary = ev.encoding == Encoding::Binary;
        if ctx != 0 || binary {
            fixups.push((i, ctx, binary));
        }
    }
    out.extend_from_slice(b"],[");
    for (n, (i, ctx, bin)) in fixups.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = write!(out, "[{i},{ctx},{}]", *bin as u8);
    }
    out.extend_from_slice(b"],[");
    if deliveries.first().is_some_and(|d| d.tag != 0) {
        for (n, d) in deliveries.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{}", d.tag);
        }
    }
    out.extend_from_slice(b"]]");
}

/// One event as a JSON object (`attempt` is written when above 1).
pub(crate) fn encode_event(origin: &Origin, ev: &Event, attempt: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    render_id(origin, &ev.id, out);
    out.extend_from_slice(b",\"type\":");
    write_string(out, &ev.topic);
    out.extend_from_slice(b",\"source\":");
    write_string(out, &origin.source);
    let _ = write!(out, ",\"time\":{}", ev.time_ms);
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
    match ev.encoding {
        Encoding::Json if !ev.data.is_empty() => out.extend_from_slice(&ev.data),
        Encoding::Json => out.extend_from_slice(b"null"),
        Encoding::Binary => {
            out.push(b'"');
            base64(&ev.data, out);
            out.push(b'"');
        }
    }
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
    use super::*;
    use crate::context::{Context, Deadline};
    use std::time::Duration;

    #[test]
    fn batch_is_valid_json_with_fixups() {
        let origin = Origin { id_prefix: "p".into(), source: "svc/\"a\"".into() };
        let ctx = Context::background().with_timeout(Duration::from_secs(5));
        let mk = |id, enc, data: &[u8], ctx: Option<Context>| {
            Arc::new(Event {
                id,
                topic: "order.created".into(),
                topic_id: None,
                time_ms: 1000,
                subject: Some("s\n".into()),
                traceparent: None,
                deadline: ctx.as_ref().and_then(|c| c.deadline()),
                ctx,
                encoding: enc,
                data: data.into(),
                journal_seq: Default::default(),
            })
        };
        let evs = vec![
            mk(EventId::Seq(1), Encoding::Json, br#"{"a":[1,2]}"#, None),
            mk(EventId::Given("x\"y".into()), Encoding::Binary, &[0, 255, 7, 8], Some(ctx.clone())),
            mk(EventId::Seq(2), Encoding::Json, b"", None),
        ];
        let mut out = Vec::new();
        encode_js_batch(&origin, &evs, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0][0]["id"], "p-1");
        assert_eq!(v[0][0]["source"], "svc/\"a\"");
        assert_eq!(v[0][0]["data"]["a"][1], 2);
        assert_eq!(v[0][0]["subject"], "s\n");
        assert_eq!(v[0][1]["id"], "x\"y");
        assert_eq!(v[0][1]["data"], "AP8HCA==");
        assert_eq!(v[0][1]["deadline"], ctx.deadline().map(|d: Deadline| d.unix_ms).unwrap());
        assert_eq!(v[0][2]["data"], serde_json::Value::Null);
        assert_eq!(v[1], serde_json::json!([[1, ctx.id(), 1]]));
    }
}
