//! Opening a journal directory: scan every segment, verify every checksum, rebuild the index and
//! the consumer cursors, and cut off a torn tail.
//!
//! The rule that keeps this honest: damage is only ever forgiven at the end of the log. Segments
//! are sealed (fsynced) before the next one is created, so a crash can only leave a partial
//! record in the last segment. A bad record there is the write that was in flight: it is
//! truncated and reported. A bad record anywhere else is corruption and opening fails with
//! `ERR_JOURNAL_CORRUPT`: nothing is skipped silently.

use crate::cursor::Consumers;
use crate::error::{JournalError, Result};
use crate::event::Seq;
use crate::format::{self, Kind, FILE_HEADER_LEN, FILE_MAGIC, FORMAT_VERSION};
use crate::segment::{self, Entry, Segment};
use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `open` found and repaired.
#[derive(Clone, Debug, Default)]
pub struct RecoveryStats {
    pub segments: usize,
    pub records: u64,
    pub events: u64,
    /// Events that some consumer has not acknowledged.
    pub unacked_events: u64,
    pub bytes: u64,
    /// The torn tail that was cut off, if any.
    pub truncated: Option<Truncation>,
    /// A last segment whose creation was interrupted (no complete checkpoint): removed.
    pub removed_incomplete_segment: Option<PathBuf>,
    /// Segments older than a gap in the numbering: leftovers of a retention pass interrupted by
    /// a power loss (deletes run oldest first), removed.
    pub removed_stale_segments: Vec<PathBuf>,
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub segment: PathBuf,
    /// The file now ends here: the end of the last complete record.
    pub offset: u64,
    pub discarded_bytes: u64,
    pub reason: String,
    /// Intact-looking records found after the damage and discarded with it. A process crash
    /// leaves none (the kernel has every byte we wrote, in order); a power loss can, because
    /// the page cache writes unsynced pages back in any order. Non-zero is worth a loud log.
    pub intact_records_after: u64,
}

pub struct Recovered {
    pub segments: VecDeque<Segment>,
    pub consumers: Consumers,
    pub next_seq: Seq,
    pub stats: RecoveryStats,
}

pub fn recover(dir: &Path) -> Result<Recovered> {
    let started = Instant::now();
    let mut stats = RecoveryStats::default();
    let mut ids = segment::list_segments(dir)?;

    // Deletes run oldest-first, so a hole means everything before it was already released.
    if let Some(gap) = ids.windows(2).rposition(|w| w[1] != w[0] + 1) {
        for id in ids.drain(..=gap) {
            let p = segment::segment_path(dir, id);
            fs::remove_file(&p).map_err(|e| JournalError::io("remove stale segment", &p, e))?;
            stats.removed_stale_segments.push(p);
        }
    }

    let mut st = Replay { consumers: Consumers::new(1), next_seq: 1, last_seq: 0, have_state: false };
    let mut segments = VecDeque::new();
    let n = ids.len();
    for (i, &id) in ids.iter().enumerate() {
        let is_last = i + 1 == n;
        let path = segment::segment_path(dir, id);
        let bytes = fs::read(&path).map_err(|e| JournalError::io("read segment", &path, e))?;
        let mut entries = Vec::new();
        let mut base = FILE_HEADER_LEN as u64;
        let (good_len, damage) = scan(&path, &bytes, id, &mut st, &mut entries, &mut base, &mut stats)?;
        if let Some(reason) = damage {
            if !is_last {
                return Err(JournalError::corrupt(&path, good_len as u64, reason));
            }
            if good_len <= FILE_HEADER_LEN && id > 1 {
                // No intact checkpoint: the crash hit while this segment was being created.
                // Nothing was ever appended to it (creation is fsynced before use), so when an
                // older segment exists it simply goes; alone, the registry would be lost.
                if n == 1 {
                    return Err(JournalError::corrupt(&path, 0, "only segment has no checkpoint"));
                }
                fs::remove_file(&path).map_err(|e| JournalError::io("remove segment", &path, e))?;
                segment::sync_dir(dir)?;
                stats.removed_incomplete_segment = Some(path);
                continue;
            }
            let f = segment::open_rw(&path)?;
            let keep = if good_len < FILE_HEADER_LEN { 0 } else { good_len as u64 };
            f.set_len(keep)
                .and_then(|_| f.sync_data())
                .map_err(|e| JournalError::io("truncate torn tail", &path, e))?;
            stats.truncated = Some(Truncation {
                segment: path.clone(),
                offset: keep,
                discarded_bytes: bytes.len() as u64 - keep,
                reason,
                intact_records_after: count_intact_after(&bytes, good_len),
            });
            if keep == 0 {
                // Not even the file header survived (segment 1 only): rewrite it.
                use std::io::Write;
                let mut w = &f;
                w.write_all(&format::file_header())
                    .and_then(|_| f.sync_data())
                    .map_err(|e| JournalError::io("rewrite segment header", &path, e))?;
            }
            let len = keep.max(FILE_HEADER_LEN as u64);
            stats.bytes += len;
            segments.push_back(Segment { id, path, file: Arc::new(f), len, base, entries });
            continue;
        }
        let f = segment::open_rw(&path)?;
        stats.bytes += bytes.len() as u64;
        segments.push_back(Segment { id, path, file: Arc::new(f), len: bytes.len() as u64, base, entries });
    }
    stats.segments = segments.len();
    stats.unacked_events = {
        let mut all = crate::pending::PendingSet::new();
        for (_, c) in st.consumers.iter() {
            all.extend(c.pending.iter());
        }
        all.len() as u64
    };
    stats.duration = started.elapsed();
    let next_seq = st.next_seq.max(st.last_seq + 1);
    Ok(Recovered { segments, consumers: st.consumers, next_seq, stats })
}

struct Replay {
    consumers: Consumers,
    next_seq: Seq,
    last_seq: Seq,
    /// Whether the registry is known: from the start of segment 1, or from a checkpoint.
    have_state: bool,
}

/// Walks one segment's records, applying them. Returns the length of the intact prefix and, if
/// the segment does not end cleanly, why. Records that pass their checksum but make no sense are
/// corruption wherever they are (a crash cannot produce them).
fn scan(
    path: &Path,
    bytes: &[u8],
    id: u64,
    st: &mut Replay,
    entries: &mut Vec<Entry>,
    base: &mut u64,
    stats: &mut RecoveryStats,
) -> Result<(usize, Option<String>)> {
    if bytes.len() < FILE_HEADER_LEN {
        return Ok((0, Some("incomplete segment header".into())));
    }
    if bytes[..8] != FILE_MAGIC {
        if bytes[..FILE_HEADER_LEN].iter().all(|b| *b == 0) {
            // A file system may show a zero-filled header after a crash during creation.
            return Ok((0, Some("zero-filled segment header".into())));
        }
        return Err(JournalError::corrupt(path, 0, "not a sluice journal segment (bad magic)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(JournalError::corrupt(path, 8, format!("unsupported format version {version}")));
    }
    if id == 1 && !st.have_state {
        st.have_state = true;
    }
    let mut off = FILE_HEADER_LEN;
    let mut first = true;
    while off < bytes.len() {
        let (kind, payload, total) = match format::parse(&bytes[off..]) {
            Ok(r) => r,
            Err(d) => return Ok((off, Some(d.describe()))),
        };
        let bad = |reason: String| JournalError::corrupt(path, off as u64, reason);
        if first && id > 1 {
            if kind != Kind::Checkpoint {
                return Err(bad("segment does not start with a checkpoint".into()));
            }
            *base = (off + total) as u64;
        }
        first = false;
        match kind {
            Kind::Checkpoint => {
                let cp = format::decode_checkpoint(payload).map_err(bad)?;
                if st.have_state {
                    // A checkpoint repeats what replay already knows: a mismatch is a bug or
                    // damage, and continuing would build the wrong cursors.
                    if cp.consumers != st.consumers.snapshot() {
                        return Err(bad("checkpoint disagrees with the replayed consumer registry".into()));
                    }
                    st.next_seq = st.next_seq.max(cp.next_seq);
                    st.consumers.next_id = st.consumers.next_id.max(cp.next_consumer_id);
                } else {
                    st.consumers = Consumers::new(cp.next_consumer_id);
                    for (cid, name) in cp.consumers {
                        st.consumers.insert(cid, name);
                    }
                    st.next_seq = cp.next_seq;
                    st.have_state = true;
                }
            }
            Kind::Append => {
                let meta = format::decode_append_meta(payload).map_err(bad)?;
                if meta.seq < st.next_seq {
                    return Err(bad(format!("sequence {} is below the next expected {}", meta.seq, st.next_seq)));
                }
                st.consumers
                    .deliver(meta.seq, meta.recipients.as_deref())
                    .map_err(|cid| bad(format!("event addressed to unknown consumer id {cid}")))?;
                st.last_seq = meta.seq;
                st.next_seq = st.next_seq.max(meta.seq + 1);
                entries.push(Entry { seq: meta.seq, offset: off as u64, len: total as u32 });
                stats.events += 1;
            }
            Kind::Ack => {
                let (cid, seqs) = format::decode_ack(payload).map_err(bad)?;
                let c = st
                    .consumers
                    .get_mut(cid)
                    .ok_or_else(|| bad(format!("ack from unknown consumer id {cid}")))?;
                for s in seqs {
                    // Acks of events in already-deleted segments find nothing: fine.
                    c.release(s);
                }
            }
            Kind::Attempts => {
                let (cid, failed) = format::decode_attempts(payload).map_err(bad)?;
                let c = st
                    .consumers
                    .get_mut(cid)
                    .ok_or_else(|| bad(format!("attempts from unknown consumer id {cid}")))?;
                for (s, n) in failed {
                    // Only pending events keep a count (an acknowledged one needs none).
                    if c.pending.contains(&s) {
                        c.attempts.insert(s, n);
                    }
                }
            }
            Kind::Register => {
                let (cid, name) = format::decode_register(payload).map_err(bad)?;
                if st.consumers.get(cid).is_some() || st.consumers.id(&name).is_some() {
                    return Err(bad(format!("consumer '{name}' registered twice")));
                }
                st.consumers.insert(cid, name);
            }
            Kind::Unregister => {
                let cid = format::decode_unregister(payload).map_err(bad)?;
                st.consumers.remove(cid).ok_or_else(|| bad(format!("unregister of unknown id {cid}")))?;
            }
        }
        stats.records += 1;
        off += total;
    }
    Ok((off, None))
}

/// Counts records that parse cleanly anywhere after a tear, by sliding over every byte offset.
/// Runs only on a damaged last segment, so its cost does not matter.
fn count_intact_after(bytes: &[u8], tear: usize) -> u64 {
    let mut n = 0;
    let mut off = tear.max(FILE_HEADER_LEN) + 1;
    while off + format::RECORD_HEADER_LEN <= bytes.len() {
        match format::parse(&bytes[off..]) {
            Ok((_, _, total)) => {
                n += 1;
                off += total;
            }
            Err(_) => off += 1,
        }
    }
    n
}
