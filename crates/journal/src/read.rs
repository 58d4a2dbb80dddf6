//! Reading a consumer's unacknowledged events back, in sequence order: the pending set says
//! which, the index says where; neighbouring records are read with one `pread`, and every record
//! is checksummed again on the way out (a bad sector surfaces as `ERR_JOURNAL_CORRUPT`, never as
//! a wrong event).

use crate::error::{JournalError, Result};
use crate::event::{Seq, StoredEvent};
use crate::format::{self, Kind};
use crate::journal::{Inner, Journal};
use crate::segment::Entry;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// An event to read: where it is, and the segment file kept open for it.
type Located = (Entry, Arc<File>, PathBuf);

impl Inner {
    /// Up to `max` pending events of `consumer` after `after`, with where to read them.
    fn locate(&self, consumer: u32, after: Seq, max: usize) -> Result<Option<Vec<Located>>> {
        let mut st = self.lock();
        // Readers see everything appended so far, including what is still buffered.
        self.flush(&mut st)?;
        let Some(c) = st.consumers.get(consumer) else { return Ok(None) };
        let seqs: Vec<Seq> = c.pending.iter_after(after).take(max).collect();
        let mut out = Vec::with_capacity(seqs.len());
        let mut si = 0;
        for seq in seqs {
            while si < st.segments.len() && st.segments[si].last_seq().is_none_or(|l| l < seq) {
                si += 1;
            }
            let found = st.segments.get(si).and_then(|s| s.find(seq).map(|e| (e, s.file.clone(), s.path.clone())));
            match found {
                Some(f) => out.push(f),
                None => {
                    return Err(JournalError::corrupt(&self.dir, 0, format!("pending event {seq} has no record in the index")))
                }
            }
        }
        Ok(Some(out))
    }
}

/// Iterator over a consumer's unacknowledged events (see `Journal::unacked`).
pub struct Unacked<'a> {
    j: &'a Journal,
    consumer: u32,
    after: Seq,
    ready: VecDeque<StoredEvent>,
    done: bool,
}

const READ_BATCH: usize = 512;
const READ_SPAN: u64 = 1 << 20;

impl<'a> Unacked<'a> {
    pub(crate) fn new(j: &'a Journal, consumer: u32, after: Seq) -> Self {
        Unacked { j, consumer, after, ready: VecDeque::new(), done: false }
    }

    fn refill(&mut self) -> Result<()> {
        let Some(locs) = self.j.inner.locate(self.consumer, self.after, READ_BATCH)? else {
            self.done = true;
            return Ok(());
        };
        if locs.is_empty() {
            self.done = true;
            return Ok(());
        }
        // Coalesce neighbours in one file into one read.
        let mut i = 0;
        let mut span = Vec::new();
        while i < locs.len() {
            let (e0, file, path) = &locs[i];
            let mut j = i + 1;
            let mut end = e0.offset + e0.len as u64;
            while j < locs.len()
                && Arc::ptr_eq(&locs[j].1, file)
                && locs[j].0.offset == end
                && end - e0.offset < READ_SPAN
            {
                end += locs[j].0.len as u64;
                j += 1;
            }
            span.resize((end - e0.offset) as usize, 0);
            file.read_exact_at(&mut span, e0.offset).map_err(|e| JournalError::io("read", path, e))?;
            for (e, _, _) in &locs[i..j] {
                let at = (e.offset - e0.offset) as usize;
                let rec = &span[at..at + e.len as usize];
                let bad = |r: String| JournalError::corrupt(path, e.offset, r);
                let (kind, payload, _) = format::parse(rec).map_err(|d| bad(d.describe()))?;
                if kind != Kind::Append {
                    return Err(bad("index points at a non-event record".into()));
                }
                let ev = format::decode_append(payload).map_err(bad)?;
                if ev.seq != e.seq {
                    return Err(bad(format!("index says seq {}, record says {}", e.seq, ev.seq)));
                }
                self.ready.push_back(ev);
            }
            i = j;
        }
        self.after = locs.last().unwrap().0.seq;
        Ok(())
    }
}

impl Iterator for Unacked<'_> {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() && !self.done {
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}
