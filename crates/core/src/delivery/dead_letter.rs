//! Dead letters: the envelope published on a subscription's dead-letter topic, and the bus's
//! bounded in-memory retention that `Bus::replay` reads.
//!
//! Replay reads the retention, not a subscription on the dead-letter topic: dead letters are
//! kept even when nobody subscribes to that topic, and replaying one removes it, so the same
//! dead letter is not re-published twice. The retention is bounded by count per topic; the
//! oldest are evicted first and counted (`deadLetters.evicted` in the bus stats).

use crate::codec::encode_event;
use crate::context::{unix_now_ms, Context};
use crate::event::{Encoding, Event};
use crate::filter::FilterChain;
use crate::json::write_string;
use crate::subscription::Subscription;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Dead letters kept per dead-letter topic for `replay`.
pub const RETAINED_PER_TOPIC: usize = 1000;

/// The dead-letter envelope (JSON):
/// `{"reason","attempts","subscription":{"id","pattern","name"},"deadLetteredAt","event":{id,type,source,time,data,…}}`
/// plus `"binary":true` when the original data is bytes (then `event.data` is base64).
pub fn envelope(sub: &Subscription, ev: &Event, reason: &str, attempts: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(ev.data.len() + 256);
    out.extend_from_slice(b"{\"reason\":");
    write_string(&mut out, reason);
    let _ = write!(out, ",\"attempts\":{attempts},\"subscription\":{{\"id\":{},\"pattern\":", sub.id());
    write_string(&mut out, sub.pattern().as_str());
    out.extend_from_slice(b",\"name\":");
    match sub.name() {
        Some(n) => write_string(&mut out, n),
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, "}},\"deadLetteredAt\":{}", unix_now_ms());
    if ev.encoding == Encoding::Binary {
        out.extend_from_slice(b",\"binary\":true");
    }
    out.extend_from_slice(b",\"event\":");
    encode_event(sub.origin(), ev, 1, &mut out);
    out.push(b'}');
    out
}

struct Retained {
    event: Arc<Event>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterStats {
    /// Dead letters held for replay, over all topics.
    pub retained: u64,
    /// Dead letters pushed out of the retention by newer ones (their envelope was still
    /// published on the dead-letter topic).
    pub evicted: u64,
    pub replayed: u64,
}

#[derive(Default)]
pub(crate) struct DeadLetters {
    by_topic: Mutex<HashMap<String, VecDeque<Retained>>>,
    stats: Mutex<DeadLetterStats>,
}

impl DeadLetters {
    pub fn retain(&self, topic: &str, event: Arc<Event>) {
        let mut map = self.by_topic.lock().unwrap();
        let q = map.entry(topic.to_owned()).or_default();
        q.push_back(Retained { event });
        let mut s = self.stats.lock().unwrap();
        s.retained += 1;
        if q.len() > RETAINED_PER_TOPIC {
            q.pop_front();
            s.retained -= 1;
            s.evicted += 1;
        }
    }

    /// Removes up to `limit` dead letters of `topic` whose original event passes `filter`, oldest
    /// first, and returns fresh copies of the originals ready to publish again (same id, type,
    /// data and attributes; the Context is `ctx`'s).
    pub fn take(&self, topic: &str, filter: Option<&FilterChain>, limit: usize, ctx: Option<&Context>) -> Vec<Arc<Event>> {
        let mut map = self.by_topic.lock().unwrap();
        let Some(q) = map.get_mut(topic) else { return Vec::new() };
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(q.len());
        for r in q.drain(..) {
            if out.len() < limit && filter.is_none_or(|f| f.accepts(&r.event)) {
                out.push(again(&r.event, ctx));
            } else {
                kept.push_back(r);
            }
        }
        *q = kept;
        let mut s = self.stats.lock().unwrap();
        s.retained -= out.len() as u64;
        s.replayed += out.len() as u64;
        out
    }

    pub fn stats(&self) -> DeadLetterStats {
        self.stats.lock().unwrap().clone()
    }
}

fn again(ev: &Event, ctx: Option<&Context>) -> Arc<Event> {
    Arc::new(Event {
        id: ev.id.clone(),
        topic: ev.topic.clone(),
        topic_id: ev.topic_id,
        time_ms: ev.time_ms,
        subject: ev.subject.clone(),
        traceparent: ev.traceparent.clone(),
        deadline: ctx.and_then(Context::deadline),
        ctx: ctx.filter(|c| c.can_end()).cloned(),
        encoding: ev.encoding,
        data: ev.data.clone(),
        // A replay is a new publish: the journal gives it a new sequence number.
        journal_seq: Default::default(),
    })
}
