//! The on-disk record format (see docs/journal.md). All integers little-endian.
//!
//! Segment file = 16-byte file header, then records. Record = 12-byte header + payload:
//!
//! ```text
//! 0      1      2       4        8        12
//! | 0xD5 | kind | 0u16  | len u32 | crc u32 | payload (len bytes)
//! ```
//!
//! `crc` is CRC-32 (IEEE) over header bytes 0..8 followed by the payload, so a flipped kind or
//! length is caught as surely as a flipped payload byte.

use crate::event::{AppendRecord, Encoding, EventRecord, Seq, StoredEvent};

pub const FILE_MAGIC: [u8; 8] = *b"SLCJRNL\0";
pub const FORMAT_VERSION: u32 = 1;
pub const FILE_HEADER_LEN: usize = 16;

pub const RECORD_MAGIC: u8 = 0xD5;
pub const RECORD_HEADER_LEN: usize = 12;
/// Far above any event the bus accepts (64 MiB data + 1 KiB attributes); a larger length in a
/// header is damage, not data.
pub const MAX_PAYLOAD: usize = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Append = 1,
    Ack = 2,
    Register = 3,
    Unregister = 4,
    Checkpoint = 5,
    /// Failed delivery attempts of pending events, so retry counts survive a restart.
    Attempts = 6,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Append,
            2 => Kind::Ack,
            3 => Kind::Register,
            4 => Kind::Unregister,
            5 => Kind::Checkpoint,
            6 => Kind::Attempts,
            _ => return None,
        })
    }
}

const FLAG_DEADLINE: u8 = 1;
const FLAG_RECIPIENTS: u8 = 2;

pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(&FILE_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Appends one framed record to `out`; returns its total length (header + payload).
/// `payload` is written by the closure straight into `out`, then framed in place: no copy.
pub fn frame(out: &mut Vec<u8>, kind: Kind, payload: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[RECORD_MAGIC, kind as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    payload(out);
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 8]);
    h.update(&out[start + RECORD_HEADER_LEN..]);
    let crc = h.finalize();
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Why bytes at some offset are not a complete, intact record.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    /// Fewer bytes than a header, or than the header's length says: a write that never finished.
    Short,
    BadMagic,
    BadKind(u8),
    TooLong(u32),
    BadCrc,
}

impl Damage {
    pub fn describe(&self) -> String {
        match self {
            Damage::Short => "incomplete record".into(),
            Damage::BadMagic => "bad record magic".into(),
            Damage::BadKind(k) => format!("unknown record kind {k}"),
            Damage::TooLong(n) => format!("record length {n} exceeds the maximum"),
            Damage::BadCrc => "checksum mismatch".into(),
        }
    }
}

/// Parses the record at the start of `buf`: its kind, payload, and total length.
pub fn parse(buf: &[u8]) -> Result<(Kind, &[u8], usize), Damage> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(Damage::Short);
    }
    if buf[0] != RECORD_MAGIC {
        return Err(Damage::BadMagic);
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len as usize > MAX_PAYLOAD {
        return Err(Damage::TooLong(len));
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(Damage::Short);
    }
    let crc = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..8]);
    h.update(&buf[RECORD_HEADER_LEN..total]);
    if h.finalize() != crc {
        return Err(Damage::BadCrc);
    }
    // Checked after the crc: a torn header's kind byte is noise, reported as the crc failure.
    let kind = Kind::from_u8(buf[1]).ok_or(Damage::BadKind(buf[1]))?;
    Ok((kind, &buf[RECORD_HEADER_LEN..total], total))
}

// ---- payload encoders -------------------------------------------------------------------------

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_str16(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

/// Rejects what the fixed-width length fields cannot hold, before anything is written.
pub fn validate_event(e: &impl AppendRecord) -> Result<(), String> {
    let topic = e.topic().len();
    if topic > u16::MAX as usize {
        return Err(format!("topic is {topic} bytes (max {})", u16::MAX));
    }
    // The id's length is checked as it is encoded (`encode_append`).
    let mut size = 64 + topic + u16::MAX as usize + e.data().len();
    let mut count = 0;
    for (k, v) in e.attributes() {
        if k.len() > u16::MAX as usize || v.len() > u32::MAX as usize {
            return Err(format!("attribute '{}' is too long", k.chars().take(32).collect::<String>()));
        }
        size += 6 + k.len() + v.len();
        count += 1;
    }
    if count > u16::MAX as usize {
        return Err("more than 65535 attributes".into());
    }
    if size > MAX_PAYLOAD - 4 * 65536 {
        return Err(format!("event is about {size} bytes (max {})", MAX_PAYLOAD - 4 * 65536));
    }
    Ok(())
}

/// APPEND payload: seq, time, deadline, flags, encoding, [recipients], topic, id, attributes,
/// data. Recipients come before the strings so recovery can read them without decoding the rest.
/// False (and `out` partly written: discard it) when the id is longer than 65535 bytes.
#[must_use]
pub fn encode_append(out: &mut Vec<u8>, seq: Seq, e: &impl AppendRecord, recipients: Option<&[u32]>) -> bool {
    put_u64(out, seq);
    put_u64(out, e.time_ms());
    let deadline = e.deadline_ms();
    put_u64(out, deadline.unwrap_or(0));
    let mut flags = 0;
    if deadline.is_some() {
        flags |= FLAG_DEADLINE;
    }
    if recipients.is_some() {
        flags |= FLAG_RECIPIENTS;
    }
    out.push(flags);
    out.push(e.encoding() as u8);
    if let Some(r) = recipients {
        put_u16(out, r.len() as u16);
        for id in r {
            put_u32(out, *id);
        }
    }
    put_str16(out, e.topic());
    let at = out.len();
    put_u16(out, 0);
    e.write_id(out);
    let Ok(id_len) = u16::try_from(out.len() - at - 2) else { return false };
    out[at..at + 2].copy_from_slice(&id_len.to_le_bytes());
    put_u16(out, e.attributes().count() as u16);
    for (k, v) in e.attributes() {
        put_str16(out, k);
        put_u32(out, v.len() as u32);
        out.extend_from_slice(v.as_bytes());
    }
    let data = e.data();
    put_u32(out, data.len() as u32);
    out.extend_from_slice(data);
    true
}

pub fn encode_ack(out: &mut Vec<u8>, consumer: u32, seqs: &[Seq]) {
    put_u32(out, consumer);
    put_u32(out, seqs.len() as u32);
    for s in seqs {
        put_u64(out, *s);
    }
}

pub fn encode_attempts(out: &mut Vec<u8>, consumer: u32, failed: &[(Seq, u32)]) {
    put_u32(out, consumer);
    put_u32(out, failed.len() as u32);
    for (s, n) in failed {
        put_u64(out, *s);
        put_u32(out, *n);
    }
}

pub fn encode_register(out: &mut Vec<u8>, id: u32, name: &str) {
    put_u32(out, id);
    put_str16(out, name);
}

pub fn encode_unregister(out: &mut Vec<u8>, id: u32) {
    put_u32(out, id);
}

/// CHECKPOINT opens every segment after the first: the state that older, deleted segments
/// established (the next sequence number and the consumer registry), so retention can drop them.
pub fn encode_checkpoint(out: &mut Vec<u8>, c: &Checkpoint) {
    put_u64(out, c.next_seq);
    put_u32(out, c.next_consumer_id);
    put_u32(out, c.consumers.len() as u32);
    for (id, name) in &c.consumers {
        put_u32(out, *id);
        put_str16(out, name);
    }
}

// ---- payload decoders (checked: a payload that passed its crc is still never trusted blindly) --

struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("payload shorter than its fields".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn str16(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        self.string(n)
    }
    fn end(&self) -> Result<(), String> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes in payload", self.b.len()))
        }
    }
}

/// What recovery needs from an APPEND without decoding strings or data.
pub struct AppendMeta {
    pub seq: Seq,
    /// `None`: every consumer registered when it was appended.
    pub recipients: Option<Vec<u32>>,
}

pub fn decode_append_meta(p: &[u8]) -> Result<AppendMeta, String> {
    let mut r = Rd { b: p };
    let seq = r.u64()?;
    r.take(16)?;
    let flags = r.u8()?;
    r.u8()?;
    let recipients = if flags & FLAG_RECIPIENTS != 0 {
        let n = r.u16()? as usize;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(r.u32()?);
        }
        Some(v)
    } else {
        None
    };
    Ok(AppendMeta { seq, recipients })
}

pub fn decode_append(p: &[u8]) -> Result<StoredEvent, String> {
    let mut r = Rd { b: p };
    let seq = r.u64()?;
    let time_ms = r.u64()?;
    let deadline = r.u64()?;
    let flags = r.u8()?;
    if flags & !(FLAG_DEADLINE | FLAG_RECIPIENTS) != 0 {
        return Err(format!("unknown append flags {flags:#x}"));
    }
    let encoding = match r.u8()? {
        0 => Encoding::Json,
        1 => Encoding::Binary,
        e => return Err(format!("unknown encoding {e}")),
    };
    if flags & FLAG_RECIPIENTS != 0 {
        let n = r.u16()? as usize;
        r.take(4 * n)?;
    }
    let topic = r.str16()?;
    let id = r.str16()?;
    let nattr = r.u16()? as usize;
    let mut attributes = Vec::with_capacity(nattr);
    for _ in 0..nattr {
        let k = r.str16()?;
        let vlen = r.u32()? as usize;
        attributes.push((k, r.string(vlen)?));
    }
    let dlen = r.u32()? as usize;
    let data = r.take(dlen)?.to_vec();
    r.end()?;
    let deadline_ms = (flags & FLAG_DEADLINE != 0).then_some(deadline);
    Ok(StoredEvent {
        seq,
        event: EventRecord { topic, id, time_ms, encoding, data, attributes, deadline_ms },
    })
}

pub fn decode_ack(p: &[u8]) -> Result<(u32, Vec<Seq>), String> {
    let mut r = Rd { b: p };
    let id = r.u32()?;
    let n = r.u32()? as usize;
    if n.checked_mul(8) != Some(r.b.len()) {
        return Err("ack count does not match its length".into());
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.u64()?);
    }
    Ok((id, v))
}

pub fn decode_attempts(p: &[u8]) -> Result<(u32, Vec<(Seq, u32)>), String> {
    let mut r = Rd { b: p };
    let id = r.u32()?;
    let n = r.u32()? as usize;
    if n.checked_mul(12) != Some(r.b.len()) {
        return Err("attempts count does not match its length".into());
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let s = r.u64()?;
        v.push((s, r.u32()?));
    }
    Ok((id, v))
}

pub fn decode_register(p: &[u8]) -> Result<(u32, String), String> {
    let mut r = Rd { b: p };
    let id = r.u32()?;
    let name = r.str16()?;
    r.end()?;
    Ok((id, name))
}

pub fn decode_unregister(p: &[u8]) -> Result<u32, String> {
    let mut r = Rd { b: p };
    let id = r.u32()?;
    r.end()?;
    Ok(id)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub next_seq: Seq,
    pub next_consumer_id: u32,
    pub consumers: Vec<(u32, String)>,
}

pub fn decode_checkpoint(p: &[u8]) -> Result<Checkpoint, String> {
    let mut r = Rd { b: p };
    let next_seq = r.u64()?;
    let next_consumer_id = r.u32()?;
    let n = r.u32()? as usize;
    let mut consumers = Vec::new();
    for _ in 0..n {
        let id = r.u32()?;
        consumers.push((id, r.str16()?));
    }
    r.end()?;
    Ok(Checkpoint { next_seq, next_consumer_id, consumers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventRecord {
        EventRecord {
            topic: "order.created".into(),
            id: "e-1".into(),
            time_ms: 1_700_000_000_000,
            encoding: Encoding::Json,
            data: br#"{"id":1}"#.to_vec(),
            attributes: vec![("subject".into(), "s".into()), ("traceparent".into(), "00-ab".into())],
            deadline_ms: Some(42),
        }
    }

    #[test]
    fn append_round_trips_with_and_without_recipients() {
        for rec in [None, Some(&[3u32, 7][..])] {
            let mut out = Vec::new();
            let n = frame(&mut out, Kind::Append, |o| assert!(encode_append(o, 9, &sample(), rec)));
            assert_eq!(n, out.len());
            let (kind, payload, total) = parse(&out).unwrap();
            assert_eq!((kind, total), (Kind::Append, out.len()));
            let ev = decode_append(payload).unwrap();
            assert_eq!(ev.seq, 9);
            assert_eq!(ev.event, sample());
            let meta = decode_append_meta(payload).unwrap();
            assert_eq!(meta.recipients.as_deref(), rec);
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        frame(&mut out, Kind::Ack, |o| encode_ack(o, 1, &[5, 6, 7]));
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut b = out.clone();
                b[byte] ^= 1 << bit;
                assert!(parse(&b).is_err(), "flip at byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn every_truncation_is_short() {
        let mut out = Vec::new();
        frame(&mut out, Kind::Append, |o| assert!(encode_append(o, 1, &sample(), None)));
        for cut in 0..out.len() {
            assert_eq!(parse(&out[..cut]).unwrap_err(), Damage::Short, "cut at {cut}");
        }
    }
}
