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

/// An event as `append` reads it. `EventRecord` is one; a caller can implement it for its own
/// event type, so an append encodes straight into the journal's buffer instead of first
/// building an `EventRecord` copy (owned strings, a copy of the data) per event.
pub trait AppendRecord {
    fn topic(&self) -> &str;
    /// Appends the event id's UTF-8 text to `out` (at most 65535 bytes, or the append fails).
    fn write_id(&self, out: &mut Vec<u8>);
    fn time_ms(&self) -> u64;
    fn encoding(&self) -> Encoding;
    fn data(&self) -> &[u8];
    /// Key/value pairs, in order (read twice: once to count them).
    fn attributes(&self) -> impl Iterator<Item = (&str, &str)>;
    fn deadline_ms(&self) -> Option<u64>;
}

impl AppendRecord for EventRecord {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn write_id(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
    }
    fn time_ms(&self) -> u64 {
        self.time_ms
    }
    fn encoding(&self) -> Encoding {
        self.encoding
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn deadline_ms(&self) -> Option<u64> {
        self.deadline_ms
    }
}

/// An event read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: Seq,
    pub event: EventRecord,
}
