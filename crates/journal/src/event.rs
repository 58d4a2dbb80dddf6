//! What the journal stores. Deliberately independent of `sluice-core`'s `Event` (so this crate
//! builds alone): the bus converts at the boundary. `attributes` carries the optional CloudEvents
//! fields (`source`, `subject`, `traceparent`, ...) without the journal knowing their names.

/// Journal sequence number: assigned by `append`, strictly increasing over the durable log and
/// across restarts. 0 is never a valid sequence number ("nothing").
pub type Seq = u64;

/// Mirrors the core's payload encoding: JSON text kept as published, or opaque bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    Json = 0,
    Binary = 1,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub topic: String,
    pub id: String,
    /// Publish time, Unix milliseconds.
    pub time_ms: u64,
    pub encoding: Encoding,
    pub data: Vec<u8>,
    /// Ordered key/value pairs; keys up to 64 KiB, values up to 4 GiB (the bus caps far lower).
    pub attributes: Vec<(String, String)>,
    /// Absolute deadline, Unix milliseconds. Stored as published; expiry is the bus's decision.
    pub deadline_ms: Option<u64>,
}

impl EventRecord {
    /// A binary event with no attributes or deadline: the common case in tests and spill.
    pub fn new(topic: impl Into<String>, id: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        EventRecord {
            topic: topic.into(),
            id: id.into(),
            time_ms: 0,
            encoding: Encoding::Binary,
            data: data.into(),
            attributes: Vec::new(),
            deadline_ms: None,
        }
    }
}

/// An event read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: Seq,
    pub event: EventRecord,
}
