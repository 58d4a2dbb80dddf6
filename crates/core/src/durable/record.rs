//! Conversion between the bus's `Event` and the journal's `EventRecord`. The journal knows no
//! CloudEvents names: `subject` and `traceparent` travel as attributes. The event id is stored
//! rendered (`<bus prefix>-<n>` or the publisher's own), so it survives a restart unchanged.

use crate::context::Deadline;
use crate::event::{Encoding, Event, EventId};
use crate::json::write_u64;
use crate::subscription::Origin;
use sluice_journal::{AppendRecord, Encoding as JEncoding, StoredEvent};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// An event as the journal appends it: read in place while the record is encoded (no owned copy
/// of its strings and data per append).
#[derive(Clone, Copy)]
pub struct Record<'a> {
    origin: &'a Origin,
    ev: &'a Event,
}

pub fn to_record<'a>(origin: &'a Origin, ev: &'a Event) -> Record<'a> {
    Record { origin, ev }
}

impl AppendRecord for Record<'_> {
    fn topic(&self) -> &str {
        &self.ev.topic
    }
    fn write_id(&self, out: &mut Vec<u8>) {
        match &self.ev.id {
            EventId::Seq(n) => {
                out.extend_from_slice(self.origin.id_prefix.as_bytes());
                out.push(b'-');
                write_u64(out, *n);
            }
            EventId::Given(s) => out.extend_from_slice(s.as_bytes()),
        }
    }
    fn time_ms(&self) -> u64 {
        self.ev.time_ms
    }
    fn encoding(&self) -> JEncoding {
        match self.ev.encoding {
            Encoding::Json => JEncoding::Json,
            Encoding::Binary => JEncoding::Binary,
        }
    }
    fn data(&self) -> &[u8] {
        &self.ev.data
    }
    fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        let subject = self.ev.subject.as_deref().map(|s| ("subject", s));
        let traceparent = self.ev.traceparent.as_deref().map(|t| ("traceparent", t));
        subject.into_iter().chain(traceparent)
    }
    fn deadline_ms(&self) -> Option<u64> {
        self.ev.deadline.map(|d| d.unix_ms)
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
