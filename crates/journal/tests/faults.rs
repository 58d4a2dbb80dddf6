//! Disk full, read-only, failing writes and fsyncs: always a typed error at the caller, never
//! silent loss, and what was durable before survives.
//!
//! Real file systems first: a 64 KiB tmpfs for ENOSPC and a tmpfs remounted read-only, which
//! needs mount privileges (root in CI containers here). Where mounting is refused, the same
//! assertions run against injected failures (`fault-injection` feature), so the test never
//! silently passes without checking anything.

mod common;

use common::*;
use sluice_journal::{EventRecord, Fault, FaultKind, FsyncPolicy, Journal};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test's lifetime; unmounted on drop, also when the test panics.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    fn remount_ro(&self) {
        let st = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).status().unwrap();
        assert!(st.success(), "remount read-only failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn big(n: u64) -> EventRecord {
    EventRecord::new("fill", format!("e{n}"), vec![(n % 251) as u8; 200])
}

#[test]
fn disk_full_is_a_clear_error_and_durable_events_survive() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&root.path().join("mnt"), "64k") else {
        eprintln!("mount refused: checking ENOSPC with an injected failure instead");
        return injected_disk_full(root.path());
    };
    let dir = fs.0.join("j");
    let mut stored = Vec::new();
    let err = {
        let j = open(&dir, FsyncPolicy::Always, 8192);
        j.register_consumer("c").unwrap();
        let err = loop {
            match j.append(&big(stored.len() as u64)) {
                Ok(s) => stored.push(s),
                Err(e) => break e,
            }
            assert!(stored.len() < 10_000, "a 64 KiB file system never filled up");
        };
        // Still full: the next append fails the same way, and nothing half-written is kept.
        assert_eq!(j.append(&big(0)).unwrap_err().code(), "ERR_JOURNAL_FULL");
        assert_eq!(seqs(&j, "c"), stored);
        err
    };
    assert_eq!(err.code(), "ERR_JOURNAL_FULL", "{err}");
    assert!(stored.len() > 50, "only {} appends fit in 64 KiB", stored.len());

    // Everything acknowledged as durable is there after a reopen.
    let j = open(&dir, FsyncPolicy::Always, 8192);
    assert_eq!(seqs(&j, "c"), stored);
    // Acking frees whole segments; then the journal takes appends again, without a restart.
    j.ack_many("c", &stored).unwrap();
    assert!(j.stats().segments_deleted > 0);
    let s = j.append(&big(1)).unwrap();
    assert!(s > *stored.last().unwrap());
    drop(j);

    // A journal that cannot even write its first segment fails at open, with the same code.
    let filler = fs.0.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 << 10]);
    let err = Journal::open(fs.0.join("other"), opts(FsyncPolicy::Always, 8192)).err().unwrap();
    assert_eq!(err.code(), "ERR_JOURNAL_FULL", "{err}");
}

fn injected_disk_full(root: &Path) {
    let dir = root.join("j");
    let j = open(&dir, FsyncPolicy::Always, 8192);
    j.register_consumer("c").unwrap();
    let stored: Vec<u64> = (0..20).map(|n| j.append(&big(n)).unwrap()).collect();
    j.inject_fault(Some(Fault { after_bytes: 1000, kind: FaultKind::NoSpace, fsync: false }));
    let err = loop {
        if let Err(e) = j.append(&big(0)) {
            break e;
        }
    };
    assert_eq!(err.code(), "ERR_JOURNAL_FULL");
    drop(j);
    let j = open(&dir, FsyncPolicy::Always, 8192);
    assert!(seqs(&j, "c").starts_with(&stored));
}

#[test]
fn read_only_directory_is_refused_at_open() {
    let root = tempfile::tempdir().unwrap();
    if let Some(fs) = Tmpfs::mount(&root.path().join("mnt"), "1m") {
        let dir = fs.0.join("j");
        {
            let j = open(&dir, FsyncPolicy::Always, 8192);
            j.register_consumer("c").unwrap();
            j.append(&big(1)).unwrap();
        }
        fs.remount_ro();
        let err = Journal::open(&dir, opts(FsyncPolicy::Always, 8192)).err().unwrap();
        assert_eq!(err.code(), "ERR_JOURNAL_READONLY", "{err}");
        let err = Journal::open(fs.0.join("new"), opts(FsyncPolicy::Always, 8192)).err().unwrap();
        assert_eq!(err.code(), "ERR_JOURNAL_READONLY", "{err}");
    } else if unsafe { libc::geteuid() } != 0 {
        // Without root, permissions do stop us.
        use std::os::unix::fs::PermissionsExt;
        let dir = root.path().join("ro");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let err = Journal::open(&dir, opts(FsyncPolicy::Always, 8192)).err().unwrap();
        assert_eq!(err.code(), "ERR_JOURNAL_READONLY", "{err}");
    } else {
        eprintln!("root without mount: checking EROFS with an injected failure instead");
        let j = open(root.path(), FsyncPolicy::Always, 8192);
        j.inject_fault(Some(Fault { after_bytes: 0, kind: FaultKind::ReadOnly, fsync: false }));
        assert_eq!(j.append(&big(1)).unwrap_err().code(), "ERR_JOURNAL_READONLY");
    }
}

#[test]
fn a_write_failing_half_way_is_cut_back_and_its_sequence_never_reused() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Always, 1 << 20);
    j.register_consumer("c").unwrap();
    for n in 0..10 {
        j.append(&ev(n)).unwrap();
    }
    let seg = segment_files(d.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // The kernel takes 30 bytes of the record, then reports ENOSPC.
    j.inject_fault(Some(Fault { after_bytes: 30, kind: FaultKind::NoSpace, fsync: false }));
    assert_eq!(j.append(&ev(10)).unwrap_err().code(), "ERR_JOURNAL_FULL");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "partial record was cut off");
    assert_eq!(j.wait_durable(11).unwrap_err().code(), "ERR_JOURNAL_FULL", "seq 11 is reported lost");
    j.inject_fault(None);
    assert_eq!(j.append(&ev(11)).unwrap(), 12);
    assert_eq!(seqs(&j, "c"), (1..=10).chain([12]).collect::<Vec<_>>());
    drop(j);
    let j = open(d.path(), FsyncPolicy::Always, 1 << 20);
    assert!(j.recovery().truncated.is_none());
    assert_eq!(seqs(&j, "c"), (1..=10).chain([12]).collect::<Vec<_>>());
}

#[test]
fn batch_waiters_learn_that_their_events_were_lost() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Batch { interval: std::time::Duration::from_millis(20), max_records: 1000 }, 1 << 20);
    j.register_consumer("c").unwrap();
    let durable = j.append_durable(&ev(0)).unwrap();
    j.inject_fault(Some(Fault { after_bytes: 0, kind: FaultKind::NoSpace, fsync: false }));
    let buffered: Vec<u64> = (1..6).map(|n| j.append(&ev(n)).unwrap()).collect();
    for s in &buffered {
        assert_eq!(j.wait_durable(*s).unwrap_err().code(), "ERR_JOURNAL_FULL");
    }
    j.inject_fault(None);
    let s = j.append_durable(&ev(9)).unwrap();
    assert!(s > *buffered.last().unwrap());
    assert_eq!(seqs(&j, "c"), vec![durable, s]);
}

#[test]
fn a_failed_fsync_poisons_the_journal_until_reopened() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Always, 1 << 20);
    j.register_consumer("c").unwrap();
    j.append(&ev(0)).unwrap();
    j.inject_fault(Some(Fault { after_bytes: u64::MAX, kind: FaultKind::Io, fsync: true }));
    assert_eq!(j.append(&ev(1)).unwrap_err().code(), "ERR_JOURNAL_IO");
    j.inject_fault(None);
    // After a failed fsync the page cache cannot be trusted: no more calls until reopened.
    assert_eq!(j.append(&ev(2)).unwrap_err().code(), "ERR_JOURNAL_IO");
    assert_eq!(j.ack("c", 1).unwrap_err().code(), "ERR_JOURNAL_IO");
    drop(j);
    let j = open(d.path(), FsyncPolicy::Always, 1 << 20);
    // Seq 1 was durable; seq 2 reached the file (only its fsync failed) and reopen re-syncs it.
    assert_eq!(seqs(&j, "c")[0], 1);
    j.append(&ev(3)).unwrap();
}
