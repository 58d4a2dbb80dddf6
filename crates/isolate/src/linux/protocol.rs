//! The control channel between the parent and a helper: length-prefixed frames over a Unix
//! stream socket (fd 3 in the helper). Each frame is `u32 len | u8 tag | payload`, little-endian;
//! `len` counts the tag and the payload. Both sides are trusted to the same degree as any
//! input from the other process: every length is checked before it is used.

use std::io::{self, Read, Write};
use std::time::Duration;

use sluice_sandbox::{Emit, ErrorKind, HandleResult, Limits, LogLevel, LogRecord, Outcome, SandboxError, SandboxOptions};

/// The helper's end of the control socket.
pub const CTL_FD: i32 = 3;
/// The shared-memory rings (memfd), mapped by the helper before lockdown and then closed.
pub const RING_FD: i32 = 4;
/// Bytes of each ring (requests and completions).
pub const RING_CAPACITY: usize = 1 << 20;

/// First byte of every ring record.
pub mod record {
    /// The rest of the record is the frame payload.
    pub const INLINE: u8 = 0;
    /// Too big for the ring: the payload follows on the control socket as a frame. Requests
    /// take this path only when nothing is in flight (so the helper is reading, not writing).
    pub const ON_SOCKET: u8 = 1;
    /// Test builds: an escape probe (request) / its result (completion).
    pub const ESCAPE: u8 = 2;
}
/// Largest frame either side accepts: a 16 MiB module plus 1 MiB config plus headers fits.
pub const MAX_FRAME: usize = 32 << 20;

pub mod tag {
    // parent -> helper
    pub const LOAD: u8 = 1;
    pub const HANDLE: u8 = 2;
    // helper -> parent
    pub const HELLO: u8 = 10;
    pub const READY: u8 = 11;
    pub const FAILED: u8 = 12;
    pub const OUTCOME: u8 = 13;
}

pub fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len() + 1).map_err(|_| io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4] = tag;
    // One buffer, one write: small frames reach the peer in one piece.
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame into `buf` (reused) and returns its tag. EOF before a frame → `UnexpectedEof`.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<u8> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad frame length {len}")));
    }
    buf.clear();
    buf.resize(len - 1, 0);
    r.read_exact(buf)?;
    Ok(head[4])
}

/// Appends little-endian fields.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
}

/// Reads little-endian fields, failing on truncation instead of panicking.
pub struct Dec<'a>(pub &'a [u8]);

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated frame")
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(short());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
    }
}

/// `LOAD`: the module and how to run it.
pub fn encode_load(module: &[u8], options: &SandboxOptions, ring_capacity: usize) -> Vec<u8> {
    let l = &options.limits;
    let mut e = Enc::default();
    e.u64(ring_capacity as u64).u64(l.memory_bytes as u64)
        .u64(l.timeout_ms)
        .u64(l.fuel.unwrap_or(u64::MAX))
        .u32(l.max_emits)
        .u32(l.max_emit_bytes)
        .u32(l.max_emit_total_bytes)
        .u32(l.max_topic_bytes)
        .u32(l.max_logs)
        .u32(l.max_log_bytes)
        .u32(options.concurrency as u32)
        .u32(options.emits.len() as u32);
    for p in &options.emits {
        e.bytes(p.as_bytes());
    }
    e.bytes(&options.config).bytes(module);
    e.0
}

pub fn decode_load(payload: &[u8]) -> io::Result<(SandboxOptions, &[u8], usize)> {
    let mut d = Dec(payload);
    let ring_capacity = d.u64()? as usize;
    let limits = Limits {
        memory_bytes: d.u64()? as usize,
        timeout_ms: d.u64()?,
        fuel: Some(d.u64()?).filter(|f| *f != u64::MAX),
        max_emits: d.u32()?,
        max_emit_bytes: d.u32()?,
        max_emit_total_bytes: d.u32()?,
        max_topic_bytes: d.u32()?,
        max_logs: d.u32()?,
        max_log_bytes: d.u32()?,
    };
    let concurrency = d.u32()? as usize;
    let n = d.u32()? as usize;
    let mut emits = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        emits.push(d.string()?);
    }
    let config = d.bytes()?.to_vec();
    let module = d.bytes()?;
    Ok((SandboxOptions { limits, emits, config, concurrency }, module, ring_capacity))
}

/// What the helper reports once it is locked down: its own view from inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// `getpid()` inside the helper (1 in a new pid namespace).
    pub inner_pid: u32,
    /// Network interfaces the helper sees, with whether each is up.
    pub interfaces: Vec<(String, bool)>,
    pub namespaces: bool,
    pub seccomp: bool,
}

pub fn encode_ready(r: &Ready) -> Vec<u8> {
    let mut e = Enc::default();
    e.u32(r.inner_pid).u8(r.namespaces as u8).u8(r.seccomp as u8).u32(r.interfaces.len() as u32);
    for (name, up) in &r.interfaces {
        e.bytes(name.as_bytes()).u8(*up as u8);
    }
    e.0
}

pub fn decode_ready(payload: &[u8]) -> io::Result<Ready> {
    let mut d = Dec(payload);
    let inner_pid = d.u32()?;
    let namespaces = d.u8()? != 0;
    let seccomp = d.u8()? != 0;
    let n = d.u32()? as usize;
    let mut interfaces = Vec::new();
    for _ in 0..n.min(1024) {
        interfaces.push((d.string()?, d.u8()? != 0));
    }
    Ok(Ready { inner_pid, interfaces, namespaces, seccomp })
}

/// `HANDLE`: one encoded envelope. `deadline_ms` is the time left (u64::MAX: none); the
/// parent's and the helper's clocks are not compared.
pub fn encode_handle(out: &mut Vec<u8>, seq: u64, deadline_ms: Option<u64>, envelope: &[u8]) {
    out.clear();
    let mut e = Enc(std::mem::take(out));
    e.u64(seq).u64(deadline_ms.unwrap_or(u64::MAX)).bytes(envelope);
    *out = e.0;
}

pub fn decode_handle(payload: &[u8]) -> io::Result<(u64, Option<Duration>, &[u8])> {
    let mut d = Dec(payload);
    let seq = d.u64()?;
    let ms = d.u64()?;
    let env = d.bytes()?;
    Ok((seq, (ms != u64::MAX).then(|| Duration::from_millis(ms)), env))
}

/// Bytes of a `HANDLE` payload for `envelope`.
pub fn handle_len(envelope: &[u8]) -> usize {
    20 + envelope.len()
}

/// Writes a `HANDLE` payload straight into `out` (exactly `handle_len` bytes: a ring slot),
/// the same bytes as `encode_handle` without the intermediate buffer.
pub fn write_handle(out: &mut [u8], seq: u64, deadline_ms: Option<u64>, envelope: &[u8]) {
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&deadline_ms.unwrap_or(u64::MAX).to_le_bytes());
    out[16..20].copy_from_slice(&(envelope.len() as u32).to_le_bytes());
    out[20..].copy_from_slice(envelope);
}

/// `OUTCOME` into `out` (cleared first; reused by the helper so an outcome costs no allocation).
pub fn encode_outcome(out: &mut Vec<u8>, seq: u64, r: &HandleResult) {
    out.clear();
    let mut e = Enc(std::mem::take(out));
    e.u64(seq);
    match &r.outcome {
        Outcome::Ack => e.u8(0).u8(0).bytes(b""),
        Outcome::Retry => e.u8(1).u8(0).bytes(b""),
        Outcome::Reject => e.u8(2).u8(0).bytes(b""),
        Outcome::Error(err) => {
            let kind = ErrorKind::ALL.iter().position(|k| *k == err.kind()).unwrap_or(0) as u8;
            e.u8(3).u8(kind).bytes(err.message().as_bytes())
        }
    };
    e.u32(r.refused_emits).u32(r.dropped_logs).u64(r.elapsed.as_nanos() as u64);
    e.u32(r.emits.len() as u32);
    for emit in &r.emits {
        e.bytes(emit.topic.as_bytes()).bytes(&emit.data);
    }
    e.u32(r.logs.len() as u32);
    for log in &r.logs {
        e.u8(log.level as u8).u8(log.truncated as u8).bytes(log.message.as_bytes());
    }
    *out = e.0;
}

pub fn decode_outcome(payload: &[u8]) -> io::Result<(u64, HandleResult)> {
    let mut d = Dec(payload);
    let seq = d.u64()?;
    let which = d.u8()?;
    let kind = d.u8()?;
    let message = d.string()?;
    let outcome = match which {
        0 => Outcome::Ack,
        1 => Outcome::Retry,
        2 => Outcome::Reject,
        _ => {
            let kind = *ErrorKind::ALL.get(kind as usize).unwrap_or(&ErrorKind::Trap);
            Outcome::Error(SandboxError::new(kind, message))
        }
    };
    let refused_emits = d.u32()?;
    let dropped_logs = d.u32()?;
    let elapsed = Duration::from_nanos(d.u64()?);
    let n = d.u32()? as usize;
    let mut emits = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        emits.push(Emit { topic: d.string()?, data: d.bytes()?.to_vec() });
    }
    let n = d.u32()? as usize;
    let mut logs = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let level = LogLevel::from_i32(d.u8()? as i32);
        let truncated = d.u8()? != 0;
        logs.push(LogRecord { level, truncated, message: d.string()? });
    }
    Ok((seq, HandleResult { outcome, emits, refused_emits, logs, dropped_logs, elapsed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_handle_matches_encode_handle() {
        let env = b"envelope bytes";
        let mut a = Vec::new();
        encode_handle(&mut a, 7, Some(42), env);
        let mut b = vec![0; handle_len(env)];
        write_handle(&mut b, 7, Some(42), env);
        assert_eq!(a, b);
        assert_eq!(decode_handle(&b).unwrap(), (7, Some(Duration::from_millis(42)), &env[..]));
    }
}
