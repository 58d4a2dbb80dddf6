//! Dead letters: the envelope published on a subscription's dead-letter topic, and the bus's
//! bounded in-memory retention that `Bus::replay` reads.
//!
//! Replay reads the retention, not a subscription on the dead-letter topic: dead letters are
//! kept even when nobody subscribes to that topic, and replaying one removes it, so the same
//! dead letter is not re-published twice. The retention is bounded by count per topic; the
//! oldest are evicted first and counted (`deadLetters.evicted` in the bus stats).
//!
//! On a bus with a journal every retained dead letter is also a journal record (its `seq`
//! here), so the retention survives a restart: see `durable::dead_letters`.

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
    /// Its journal record (for the `~dead.<topic>` consumer); 0: kept in memory only.
    seq: u64,
}

/// A dead letter taken out of the retention for replay.
pub(crate) struct Taken {
    /// The original, fresh for a new publish (see `again`).
    pub event: Arc<Event>,
    pub seq: u64,
    kept: Arc<Event>,
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
    /// Journal writes for dead letters that failed (a bus with a journal): a dead letter that
    /// could not be written is kept in memory only (a restart loses it); one whose replay or
    /// eviction could not be recorded is offered for replay again after a restart.
    pub journal_errors: u64,
}

#[derive(Default)]
pub(crate) struct DeadLetters {
    by_topic: Mutex<HashMap<String, VecDeque<Retained>>>,
    stats: Mutex<DeadLetterStats>,
}

impl DeadLetters {
    /// Keeps `event` (journal record `seq`, 0 if none) for replay. Returns the journal record
    /// of a dead letter evicted to make room (0: none, or it had no record).
    pub fn retain(&self, topic: &str, event: Arc<Event>, seq: u64) -> u64 {
        let mut map = self.by_topic.lock().unwrap();
        let q = map.entry(topic.to_owned()).or_default();
        q.push_back(Retained { event, seq });
        let mut s = self.stats.lock().unwrap();
        s.retained += 1;
        if q.len() > RETAINED_PER_TOPIC {
            let evicted = q.pop_front().map_or(0, |r| r.seq);
            s.retained -= 1;
            s.evicted += 1;
            return evicted;
        }
        0
    }

    /// Removes up to `limit` dead letters of `topic` whose original event passes `filter`, oldest
    /// first, and returns fresh copies of the originals ready to publish again (same id, type,
    /// data and attributes; the Context is `ctx`'s).
    pub fn take(&self, topic: &str, filter: Option<&FilterChain>, limit: usize, ctx: Option<&Context>) -> Vec<Taken> {
        let mut map = self.by_topic.lock().unwrap();
        let Some(q) = map.get_mut(topic) else { return Vec::new() };
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(q.len());
        for r in q.drain(..) {
            if out.len() < limit && filter.is_none_or(|f| f.accepts(&r.event)) {
                out.push(Taken { event: again(&r.event, ctx), seq: r.seq, kept: r.event });
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

    /// Puts back dead letters `take` returned whose replay failed, in their old place (ahead of
    /// the rest: they are the oldest).
    pub fn put_back(&self, topic: &str, taken: Vec<Taken>) {
        let n = taken.len() as u64;
        let mut map = self.by_topic.lock().unwrap();
        let q = map.entry(topic.to_owned()).or_default();
        for t in taken.into_iter().rev() {
            q.push_front(Retained { event: t.kept, seq: t.seq });
        }
        let mut s = self.stats.lock().unwrap();
        s.retained += n;
        s.replayed -= n;
    }

    pub fn count_journal_error(&self) {
        self.stats.lock().unwrap().journal_errors += 1;
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
