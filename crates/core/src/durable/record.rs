//! Conversion between the bus's `Event` and the journal's `EventRecord`. The journal knows no
//! CloudEvents names: `subject` and `traceparent` travel as attributes. The event id is stored
//! rendered (`<bus prefix>-<n>` or the publisher's own), so it survives a restart unchanged.

use crate::context::Deadline;
use crate::event::{Encoding, Event, EventId};
use crate::subscription::Origin;
use sluice_journal::{Encoding as JEncoding, EventRecord, StoredEvent};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub fn to_record(origin: &Origin, ev: &Event) -> EventRecord {
    let id = match &ev.id {
        EventId::Seq(n) => format!("{}-{n}", origin.id_prefix),
        EventId::Given(s) => s.to_string(),
    };
    let mut attributes = Vec::new();
    if let Some(s) = &ev.subject {
        attributes.push(("subject".to_string(), s.to_string()));
    }
    if let Some(t) = &ev.traceparent {
        attributes.push(("traceparent".to_string(), t.to_string()));
    }
    EventRecord {
        topic: ev.topic.to_string(),
        id,
        time_ms: ev.time_ms,
        encoding: match ev.encoding {
            Encoding::Json => JEncoding::Json,
            Encoding::Binary => JEncoding::Binary,
        },
        data: ev.data.to_vec(),
        attributes,
        deadline_ms: ev.deadline.map(|d| d.unix_ms),
    }
}

/// An event read back from the journal. Its publisher's Context is gone (another process, or
/// it ended); the deadline it carried is kept. `ack_seq` is the journal sequence number the
/// consumer acknowledges (0: nothing to acknowledge).
pub fn from_stored(stored: StoredEvent, ack_seq: u64) -> Arc<Event> {
    let StoredEvent { event: r, .. } = stored;
    let mut subject = None;
    let mut traceparent = None;
    for (k, v) in r.attributes {
        match k.as_str() {
            "subject" => subject = Some(v.into_boxed_str()),
            "traceparent" => traceparent = Some(v.into_boxed_str()),
            _ => {}
        }
    }
    Arc::new(Event {
        id: EventId::Given(r.id.into_boxed_str()),
        topic: r.topic.into(),
        topic_id: None,
        time_ms: r.time_ms,
        subject,
        traceparent,
        deadline: r.deadline_ms.map(Deadline::at_unix_ms),
        ctx: None,
        encoding: match r.encoding {
            JEncoding::Json => Encoding::Json,
            JEncoding::Binary => Encoding::Binary,
        },
        data: r.data.into_boxed_slice(),
        journal_seq: AtomicU64::new(ack_seq),
    })
}
