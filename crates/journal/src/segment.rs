//! Segment files: naming, listing, creation, and the in-memory index of where each event lives.

use crate::error::{JournalError, Result};
use crate::event::Seq;
use crate::format::{self, FILE_HEADER_LEN};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SEGMENT_EXT: &str = "seg";

/// `00000000000000000001.seg`: zero-padded so lexical order is numeric order.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

/// Segment ids in the directory, ascending. Other files are ignored (the lock file, editors'
/// leftovers); a `.seg` name that is not a number is an error, since we would otherwise ignore
/// data that looks like ours.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| JournalError::io("list", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| JournalError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else { continue };
        match stem.parse::<u64>() {
            Ok(id) if stem.len() == 20 && id > 0 => ids.push(id),
            _ => {
                return Err(JournalError::corrupt(
                    &entry.path(),
                    0,
                    "segment file name is not a 20-digit sequence number",
                ))
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes a directory entry change (create, delete) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| JournalError::io("fsync directory", dir, e))
}

pub fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| JournalError::io("open", path, e))
}

/// Creates a new segment holding the file header and `first` (a CHECKPOINT, or nothing for the
/// first segment), fsynced with its directory entry before it is used: a crash never leaves a
/// half-made segment that is not the last one.
pub fn create(dir: &Path, id: u64, first: &[u8]) -> Result<File> {
    let path = segment_path(dir, id);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| JournalError::io("create segment", &path, e))?;
    let mut buf = Vec::with_capacity(FILE_HEADER_LEN + first.len());
    buf.extend_from_slice(&format::file_header());
    buf.extend_from_slice(first);
    let written = f.write_all(&buf).and_then(|_| f.sync_data());
    if let Err(e) = written {
        // Typically ENOSPC: do not leave a headerless file behind for recovery to puzzle over.
        let _ = fs::remove_file(&path);
        return Err(JournalError::io("write segment header", &path, e));
    }
    sync_dir(dir)?;
    Ok(f)
}

/// Where one event's record is: byte offset and total length inside its segment.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub seq: Seq,
    pub offset: u64,
    pub len: u32,
}

/// One segment in memory: its file (kept open for reads, so a concurrent retention delete never
/// pulls a segment from under a reader), its size, and the events it holds in seq order.
pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes on disk plus bytes still in the user-space write buffer (active segment only).
    pub len: u64,
    /// Length before any record but the opening checkpoint: a segment no longer than this is
    /// empty, and is never sealed for being too small to hold the next record.
    pub base: u64,
    pub entries: Vec<Entry>,
}

impl Segment {
    pub fn last_seq(&self) -> Option<Seq> {
        self.entries.last().map(|e| e.seq)
    }
    pub fn find(&self, seq: Seq) -> Option<Entry> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok().map(|i| self.entries[i])
    }
}
