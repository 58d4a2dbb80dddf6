//! The event envelope (CloudEvents-shaped). Shared between subscriptions as `Arc<Event>`: one
//! allocation per publish, however many subscribers see it.

use crate::context::{Context, Deadline};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// How `data` is encoded. JSON payloads are kept as the publisher's UTF-8 JSON text, so they are
/// encoded once and never re-encoded on the way to a JS subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Binary,
}

/// Event ids are cheap by default: a per-bus prefix plus a sequence number, rendered only when an
/// event leaves the core. Callers that need their own ids (idempotency) supply them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventId {
    Seq(u64),
    Given(Box<str>),
}

#[derive(Debug)]
pub struct Event {
    pub id: EventId,
    /// Shared with the router's topic table when the topic is interned (no copy per event).
    pub topic: Arc<str>,
    /// The interned topic's id: routing is then an index into the route snapshot.
    pub topic_id: Option<u32>,
    pub time_ms: u64,
    pub subject: Option<Box<str>>,
    pub traceparent: Option<Box<str>>,
    pub deadline: Option<Deadline>,
    /// The publisher's Context; `None` for background. Deliveries check it before dispatch.
    pub ctx: Option<Context>,
    pub encoding: Encoding,
    pub data: Box<[u8]>,
    /// The journal sequence number a durable subscription acknowledges once its handler is done
    /// (0: not journaled). Set by the publish that appended the event, before it is queued.
    pub journal_seq: AtomicU64,
}

impl Event {
    /// Expired events are not delivered: their Context ended or their deadline passed.
    pub fn expired(&self) -> bool {
        match &self.ctx {
            Some(c) => c.is_done(),
            None => self.deadline.is_some_and(|d| d.passed()),
        }
    }
}

/// What a publisher supplies; the bus fills in id, time and deadline.
#[derive(Debug, Default)]
pub struct EventInit {
    pub topic: String,
    pub id: Option<String>,
    pub subject: Option<String>,
    pub traceparent: Option<String>,
    pub encoding: Option<Encoding>,
    pub data: Vec<u8>,
}
