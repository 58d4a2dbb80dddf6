//! The event envelope the host writes into guest memory before `sluice_handle(ptr, len)`.
//!
//! Binary, little-endian, versioned. Layout (v1, `docs/abi.md` has the table):
//!
//! ```text
//! off size field
//!   0   4  magic "SLEV"
//!   4   2  version (u16) = 1
//!   6   2  header_len (u16) = 56: offset of the first variable-length field
//!   8   4  flags (u32): bit0 subject present, bit1 traceparent present, bit2 deadline present
//!  12   4  reserved, 0
//!  16   8  time: i64 nanoseconds since the Unix epoch
//!  24   8  deadline: i64 nanoseconds since the Unix epoch (0 unless flag bit2)
//!  32   4  id_len          36 4 type_len       40 4 source_len
//!  44   4  subject_len     48 4 traceparent_len 52 4 data_len
//!  56   …  id, type, source, subject, traceparent, data bytes, back to back, in that order
//! ```
//!
//! Readers use `header_len` to find the variable part, so a later version may append
//! fixed fields without breaking v1 guests that check `version >= 1` only for fields they know.

use std::fmt;

pub const ENVELOPE_MAGIC: [u8; 4] = *b"SLEV";
pub const ENVELOPE_VERSION: u16 = 1;
pub const ENVELOPE_HEADER_LEN: usize = 56;

pub const FLAG_SUBJECT: u32 = 1 << 0;
pub const FLAG_TRACEPARENT: u32 = 1 << 1;
pub const FLAG_DEADLINE: u32 = 1 << 2;

/// The whole envelope must fit a wasm32 guest's signed pointer range.
pub const MAX_ENVELOPE_BYTES: usize = i32::MAX as usize;

/// A CloudEvents-shaped event, borrowed from whoever owns the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub id: &'a str,
    /// The topic, e.g. `order.created`.
    pub event_type: &'a str,
    pub source: &'a str,
    /// Nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    pub subject: Option<&'a str>,
    /// W3C trace context `traceparent` header value.
    pub traceparent: Option<&'a str>,
    /// Absolute deadline of the event's Context, nanoseconds since the Unix epoch.
    pub deadline_unix_nanos: Option<i64>,
    pub data: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The encoded envelope would exceed `MAX_ENVELOPE_BYTES`.
    TooLarge {
        bytes: usize,
    },
    /// Decoding: fewer bytes than the header or the declared field lengths need.
    Truncated,
    BadMagic,
    UnsupportedVersion(u16),
    BadHeaderLen(u16),
    /// Decoding: a text field is not UTF-8.
    BadUtf8 {
        field: &'static str,
    },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooLarge { bytes } => {
                write!(f, "envelope of {bytes} bytes exceeds {MAX_ENVELOPE_BYTES}")
            }
            EnvelopeError::Truncated => write!(f, "envelope truncated"),
            EnvelopeError::BadMagic => write!(f, "envelope magic is not SLEV"),
            EnvelopeError::UnsupportedVersion(v) => write!(f, "unsupported envelope version {v}"),
            EnvelopeError::BadHeaderLen(n) => write!(f, "envelope header_len {n} is too small"),
            EnvelopeError::BadUtf8 { field } => write!(f, "envelope field {field} is not UTF-8"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl Envelope<'_> {
    /// Exact encoded size in bytes (saturating, so absurd inputs still fail the cap check).
    pub fn encoded_len(&self) -> usize {
        [
            self.id.len(),
            self.event_type.len(),
            self.source.len(),
            self.subject.map_or(0, str::len),
            self.traceparent.map_or(0, str::len),
            self.data.len(),
        ]
        .iter()
        .fold(ENVELOPE_HEADER_LEN, |acc, n| acc.saturating_add(*n))
    }
}

/// Encodes `env` into a fresh buffer.
pub fn encode_envelope(env: &Envelope<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    encode_envelope_into(env, &mut out)?;
    Ok(out)
}

/// Encodes `env` into `out` (cleared first) so a worker can reuse one buffer.
pub fn encode_envelope_into(env: &Envelope<'_>, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    let total = env.encoded_len();
    if total > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge { bytes: total });
    }
    out.clear();
    out.resize(total, 0);
    encode_envelope_to(env, out);
    Ok(())
}

/// Writes `env` into `out`, which is exactly `env.encoded_len()` bytes (at most
/// `MAX_ENVELOPE_BYTES`, checked by the caller): the host encodes straight into the buffer the
/// guest allocated, without a copy in between.
///
/// # Panics
/// If `out` is not exactly `env.encoded_len()` bytes long.
pub fn encode_envelope_to(env: &Envelope<'_>, out: &mut [u8]) {
    assert_eq!(out.len(), env.encoded_len(), "envelope buffer of the wrong size");
    let mut flags = 0u32;
    if env.subject.is_some() {
        flags |= FLAG_SUBJECT;
    }
    if env.traceparent.is_some() {
        flags |= FLAG_TRACEPARENT;
    }
    if env.deadline_unix_nanos.is_some() {
        flags |= FLAG_DEADLINE;
    }
    let subject = env.subject.unwrap_or("").as_bytes();
    let traceparent = env.traceparent.unwrap_or("").as_bytes();
    let fields: [&[u8]; 6] = [
        env.id.as_bytes(),
        env.event_type.as_bytes(),
        env.source.as_bytes(),
        subject,
        traceparent,
        env.data,
    ];
    let (header, mut rest) = out.split_at_mut(ENVELOPE_HEADER_LEN);
    header[0..4].copy_from_slice(&ENVELOPE_MAGIC);
    header[4..6].copy_from_slice(&ENVELOPE_VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&(ENVELOPE_HEADER_LEN as u16).to_le_bytes());
    header[8..12].copy_from_slice(&flags.to_le_bytes());
    header[12..16].copy_from_slice(&0u32.to_le_bytes());
    header[16..24].copy_from_slice(&env.time_unix_nanos.to_le_bytes());
    header[24..32].copy_from_slice(&env.deadline_unix_nanos.unwrap_or(0).to_le_bytes());
    for (i, f) in fields.iter().enumerate() {
        // Lossless: the whole envelope fits MAX_ENVELOPE_BYTES (i32::MAX).
        header[32 + 4 * i..36 + 4 * i].copy_from_slice(&(f.len() as u32).to_le_bytes());
        let (field, tail) = rest.split_at_mut(f.len());
        field.copy_from_slice(f);
        rest = tail;
    }
}

fn read<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], EnvelopeError> {
    let end = at.checked_add(N).ok_or(EnvelopeError::Truncated)?;
    bytes
        .get(at..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(EnvelopeError::Truncated)
}

/// Decodes an envelope (used by tests and by hosts that receive pre-encoded events).
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if read::<4>(bytes, 0)? != ENVELOPE_MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    let version = u16::from_le_bytes(read(bytes, 4)?);
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let header_len = u16::from_le_bytes(read(bytes, 6)?);
    if (header_len as usize) < ENVELOPE_HEADER_LEN {
        return Err(EnvelopeError::BadHeaderLen(header_len));
    }
    let flags = u32::from_le_bytes(read(bytes, 8)?);
    let time = i64::from_le_bytes(read(bytes, 16)?);
    let deadline = i64::from_le_bytes(read(bytes, 24)?);
    let mut lens = [0usize; 6];
    for (i, l) in lens.iter_mut().enumerate() {
        *l = u32::from_le_bytes(read(bytes, 32 + 4 * i)?) as usize;
    }
    let mut at = header_len as usize;
    let mut take = |n: usize| -> Result<&[u8], EnvelopeError> {
        let end = at.checked_add(n).ok_or(EnvelopeError::Truncated)?;
        let s = bytes.get(at..end).ok_or(EnvelopeError::Truncated)?;
        at = end;
        Ok(s)
    };
    const NAMES: [&str; 5] = ["id", "type", "source", "subject", "traceparent"];
    let mut text = [""; 5];
    for i in 0..5 {
        text[i] = std::str::from_utf8(take(lens[i])?)
            .map_err(|_| EnvelopeError::BadUtf8 { field: NAMES[i] })?;
    }
    let data = take(lens[5])?;
    Ok(Envelope {
        id: text[0],
        event_type: text[1],
        source: text[2],
        time_unix_nanos: time,
        subject: (flags & FLAG_SUBJECT != 0).then_some(text[3]),
        traceparent: (flags & FLAG_TRACEPARENT != 0).then_some(text[4]),
        deadline_unix_nanos: (flags & FLAG_DEADLINE != 0).then_some(deadline),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope<'static> {
        Envelope {
            id: "evt-1",
            event_type: "order.created",
            source: "/orders",
            time_unix_nanos: 1_700_000_000_123_456_789,
            subject: Some("order/42"),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            deadline_unix_nanos: Some(1_700_000_000_223_456_789),
            data: br#"{"amount":12}"#,
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let env = sample();
        let b = encode_envelope(&env).unwrap();
        assert_eq!(&b[0..4], b"SLEV");
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), 1);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 56);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 0b111);
        assert_eq!(
            i64::from_le_bytes(b[16..24].try_into().unwrap()),
            env.time_unix_nanos
        );
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), 13);
        assert_eq!(&b[56..61], b"evt-1");
        assert_eq!(&b[61..74], b"order.created");
        assert!(b.ends_with(br#"{"amount":12}"#));
        assert_eq!(b.len(), env.encoded_len());
    }

    #[test]
    fn round_trips_with_and_without_optionals() {
        let full = sample();
        assert_eq!(
            decode_envelope(&encode_envelope(&full).unwrap()).unwrap(),
            full
        );
        let bare = Envelope {
            subject: None,
            traceparent: None,
            deadline_unix_nanos: None,
            ..full
        };
        let b = encode_envelope(&bare).unwrap();
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 0);
        assert_eq!(decode_envelope(&b).unwrap(), bare);
        // An empty subject is still "present": the flag, not the length, carries presence.
        let empty_subject = Envelope {
            subject: Some(""),
            ..bare
        };
        assert_eq!(
            decode_envelope(&encode_envelope(&empty_subject).unwrap()).unwrap(),
            empty_subject
        );
    }

    #[test]
    fn decode_refuses_bad_input() {
        let good = encode_envelope(&sample()).unwrap();
        assert_eq!(decode_envelope(&good[..10]), Err(EnvelopeError::Truncated));
        assert_eq!(
            decode_envelope(&good[..good.len() - 1]),
            Err(EnvelopeError::Truncated)
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode_envelope(&bad), Err(EnvelopeError::BadMagic));
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(
            decode_envelope(&bad),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        let mut bad = good.clone();
        bad[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_envelope(&bad), Err(EnvelopeError::Truncated));
    }
}
