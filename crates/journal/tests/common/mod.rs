//! Shared helpers for the journal integration tests.
#![allow(dead_code)]

use sluice_journal::{EventRecord, FsyncPolicy, Journal, JournalOptions, Seq, StoredEvent};
use std::path::Path;
use std::time::Duration;

pub fn ev(n: u64) -> EventRecord {
    let mut e = EventRecord::new(format!("t.{}", n % 3), format!("id-{n}"), n.to_le_bytes().to_vec());
    e.time_ms = 1_700_000_000_000 + n;
    if n.is_multiple_of(2) {
        e.attributes.push(("subject".into(), format!("s{n}")));
        e.deadline_ms = Some(n * 10);
    }
    e
}

pub fn opts(fsync: FsyncPolicy, segment_bytes: u64) -> JournalOptions {
    JournalOptions { fsync, segment_bytes, on_durable: None }
}

pub fn batch() -> FsyncPolicy {
    FsyncPolicy::Batch { interval: Duration::from_millis(1), max_records: 64 }
}

pub fn open(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> Journal {
    Journal::open(dir, opts(fsync, segment_bytes)).expect("open")
}

pub fn unacked(j: &Journal, consumer: &str) -> Vec<StoredEvent> {
    j.unacked(consumer).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

pub fn seqs(j: &Journal, consumer: &str) -> Vec<Seq> {
    unacked(j, consumer).into_iter().map(|e| e.seq).collect()
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}
