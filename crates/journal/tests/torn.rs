//! Torn tails and corruption, written on purpose: a torn last record is cut off and reported,
//! never misread; damage anywhere a crash cannot explain is `ERR_JOURNAL_CORRUPT`.

mod common;

use common::*;
use sluice_journal::{FsyncPolicy, Journal};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Writes `n` events into a single segment; returns the segment path and its length before the
/// last event was appended.
fn journal_with(dir: &Path, n: u64) -> (std::path::PathBuf, u64) {
    let j = open(dir, FsyncPolicy::Never, 1 << 20);
    j.register_consumer("c").unwrap();
    for k in 0..n - 1 {
        j.append(&ev(k)).unwrap();
    }
    let seg = segment_files(dir).pop().unwrap();
    let before = fs::metadata(&seg).unwrap().len();
    j.append(&ev(n - 1)).unwrap();
    (seg, before)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn truncation_at_every_byte_of_the_last_record_recovers_the_prefix() {
    let src = tempfile::tempdir().unwrap();
    let (seg, before) = journal_with(src.path(), 20);
    let full = fs::metadata(&seg).unwrap().len();
    assert!(full - before > 20, "the last record is more than a header");
    for cut in before..full {
        let d = tempfile::tempdir().unwrap();
        copy_dir(src.path(), d.path());
        let seg = segment_files(d.path()).pop().unwrap();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
        let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
        let got = unacked(&j, "c");
        assert_eq!(got.len(), 19, "cut at {cut}: exactly the complete records");
        assert!(got.iter().enumerate().all(|(k, e)| e.event == ev(k as u64)));
        let t = j.recovery().truncated.clone();
        if cut == before {
            assert!(t.is_none(), "a cut on a record boundary is a clean end");
        } else {
            let t = t.unwrap_or_else(|| panic!("cut at {cut} not reported"));
            assert_eq!((t.offset, t.discarded_bytes), (before, cut - before));
        }
        // The file was cut back: appending continues cleanly and survives another reopen,
        // and the lost sequence number is reissued only because it never became durable.
        assert_eq!(j.append(&ev(100)).unwrap(), 20);
        drop(j);
        let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
        assert!(j.recovery().truncated.is_none());
        assert_eq!(unacked(&j, "c").len(), 20);
    }
}

#[test]
fn garbage_or_zeros_after_the_last_record_are_cut_off() {
    for tail in [vec![0u8; 4096], (0..300u32).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>(), vec![0xD5]] {
        let d = tempfile::tempdir().unwrap();
        let (seg, _) = journal_with(d.path(), 10);
        let full = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&tail).unwrap();
        let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
        assert_eq!(unacked(&j, "c").len(), 10);
        let t = j.recovery().truncated.clone().unwrap();
        assert_eq!((t.offset, t.discarded_bytes), (full, tail.len() as u64));
        assert_eq!(fs::metadata(&seg).unwrap().len(), full);
    }
}

#[test]
fn a_flipped_byte_in_the_final_record_drops_that_record_only() {
    let src = tempfile::tempdir().unwrap();
    let (seg, before) = journal_with(src.path(), 10);
    let full = fs::metadata(&seg).unwrap().len();
    for at in before..full {
        let d = tempfile::tempdir().unwrap();
        copy_dir(src.path(), d.path());
        let seg = segment_files(d.path()).pop().unwrap();
        let mut b = fs::read(&seg).unwrap();
        b[at as usize] ^= 0x40;
        fs::write(&seg, &b).unwrap();
        let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
        let got = unacked(&j, "c");
        assert_eq!(got.len(), 9, "flip at {at}");
        assert_eq!(j.recovery().truncated.as_ref().unwrap().offset, before);
    }
}

/// Record start offsets, read from the length fields (the format is documented, so tests may
/// rely on it).
fn record_offsets(b: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut off = sluice_journal::layout::FILE_HEADER_LEN;
    while off < b.len() {
        v.push(off);
        off += sluice_journal::layout::RECORD_HEADER_LEN + u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
    }
    v
}

#[test]
fn damage_before_intact_records_in_the_last_segment_is_counted() {
    let d = tempfile::tempdir().unwrap();
    let (seg, _) = journal_with(d.path(), 10);
    let mut b = fs::read(&seg).unwrap();
    let offs = record_offsets(&b);
    assert_eq!(offs.len(), 11, "register + 10 events");
    // Damage the 5th event (record 5; record 0 is the registration): the five records after it
    // are intact but behind a hole, as unsynced pages can be after a power loss.
    b[offs[5] + 20] ^= 1;
    fs::write(&seg, &b).unwrap();
    let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
    let t = j.recovery().truncated.clone().unwrap();
    assert_eq!(t.offset, offs[5] as u64);
    assert_eq!(t.intact_records_after, 5, "{t:?}");
    // Only the intact prefix is delivered: nothing after a hole is ever misread as data.
    let got = unacked(&j, "c");
    assert_eq!(got.len(), 4);
    assert!(got.iter().enumerate().all(|(k, e)| e.event == ev(k as u64)));
}

#[test]
fn damage_in_a_sealed_segment_is_corruption() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = open(d.path(), FsyncPolicy::Never, 4096);
        j.register_consumer("c").unwrap();
        for n in 0..200 {
            j.append(&ev(n)).unwrap();
        }
    }
    let segs = segment_files(d.path());
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut b = fs::read(victim).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    fs::write(victim, &b).unwrap();
    let err = Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).err().unwrap();
    assert_eq!(err.code(), "ERR_JOURNAL_CORRUPT", "{err}");
    assert!(err.to_string().contains("00000000000000000002.seg"), "{err}");
    // Nothing was "repaired": the damaged file is untouched for the operator.
    assert_eq!(fs::read(victim).unwrap(), b);

    // A sealed segment cut short (lost its last records) is corruption too, not a torn tail.
    b[mid] ^= 0x01;
    fs::write(victim, &b[..b.len() - 5]).unwrap();
    let err = Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).err().unwrap();
    assert_eq!(err.code(), "ERR_JOURNAL_CORRUPT");
}

#[test]
fn foreign_or_future_segment_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    {
        open(d.path(), FsyncPolicy::Never, 4096).append(&ev(1)).unwrap();
    }
    let seg = segment_files(d.path()).pop().unwrap();
    let good = fs::read(&seg).unwrap();
    let mut b = good.clone();
    b[8] = 9; // format version 9
    fs::write(&seg, &b).unwrap();
    let err = Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).err().unwrap();
    assert_eq!(err.code(), "ERR_JOURNAL_CORRUPT");
    assert!(err.to_string().contains("version 9"));
    b = good.clone();
    b[0] = b'X';
    fs::write(&seg, &b).unwrap();
    assert_eq!(Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).err().unwrap().code(), "ERR_JOURNAL_CORRUPT");
    fs::write(&seg, &good).unwrap();
    fs::write(d.path().join("notanumber.seg"), b"").unwrap();
    assert_eq!(Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).err().unwrap().code(), "ERR_JOURNAL_CORRUPT");
}

#[test]
fn a_segment_whose_creation_was_interrupted_is_removed() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = open(d.path(), FsyncPolicy::Never, 4096);
        j.register_consumer("c").unwrap();
        for n in 0..60 {
            j.append(&ev(n)).unwrap();
        }
    }
    let segs = segment_files(d.path());
    let last_id = segs.len() as u64;
    // Fake the crash: a next segment with a torn header, then one with a header but a torn
    // checkpoint. Either way it never held data, so it goes and nothing else changes.
    for content in [b"SLCJR".to_vec(), {
        let mut v = fs::read(&segs[segs.len() - 1]).unwrap()[..16].to_vec();
        v.extend_from_slice(&[0xD5, 5, 0, 0, 200, 0]);
        v
    }] {
        let p = sluice_journal::layout::segment_path(d.path(), last_id + 1);
        fs::write(&p, &content).unwrap();
        let j = open(d.path(), FsyncPolicy::Never, 4096);
        assert_eq!(j.recovery().removed_incomplete_segment.as_deref(), Some(p.as_path()));
        assert_eq!(seqs(&j, "c"), (1..=60).collect::<Vec<_>>());
        assert!(!p.exists());
    }
}
