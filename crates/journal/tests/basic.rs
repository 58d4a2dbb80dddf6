//! The journal's contract through its public API: round trip, restart, cursors, retention,
//! policies, errors.

mod common;

use common::*;
use sluice_journal::{FsyncPolicy, Journal, JournalOptions, To};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn round_trip_preserves_every_field_in_order() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Always, 1 << 20);
    j.register_consumer("c").unwrap();
    let mut expected = Vec::new();
    for n in 0..50 {
        let seq = j.append(&ev(n)).unwrap();
        expected.push((seq, ev(n)));
    }
    let got = unacked(&j, "c");
    assert_eq!(got.len(), 50);
    for (g, (seq, e)) in got.iter().zip(&expected) {
        assert_eq!(g.seq, *seq);
        assert_eq!(&g.event, e);
    }
    // Sequence numbers start at 1 and are consecutive.
    assert_eq!(expected.first().unwrap().0, 1);
    assert!(expected.windows(2).all(|w| w[1].0 == w[0].0 + 1));
}

#[test]
fn restart_returns_everything_unacknowledged_and_keeps_counting() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = open(d.path(), batch(), 4096);
        j.register_consumer("c").unwrap();
        for n in 0..200 {
            j.append(&ev(n)).unwrap();
        }
        for s in 1..=100 {
            j.ack("c", s).unwrap();
        }
        j.close().unwrap();
    }
    let j = open(d.path(), batch(), 4096);
    let got = unacked(&j, "c");
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), (101..=200).collect::<Vec<_>>());
    assert_eq!(got[0].event, ev(100));
    assert!(j.recovery().truncated.is_none());
    assert!(j.recovery().segments > 1, "4 KiB segments must have rolled");
    // Sequence numbers continue across the restart, never reused.
    assert_eq!(j.append(&ev(999)).unwrap(), 201);
}

#[test]
fn out_of_order_acks_survive_restart() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
        j.register_consumer("c").unwrap();
        for n in 0..10 {
            j.append(&ev(n)).unwrap();
        }
        assert_eq!(j.ack_many("c", &[9, 3, 5, 5, 42]).unwrap(), 2 + 1, "5 twice and 42 count once/never");
        assert!(j.ack("c", 1).unwrap());
        assert!(!j.ack("c", 1).unwrap(), "second ack is a no-op");
        assert_eq!(seqs(&j, "c"), vec![2, 4, 6, 7, 8, 10]);
        let info = &j.consumers()[0];
        assert_eq!((info.pending, info.committed), (6, 1));
    }
    let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
    assert_eq!(seqs(&j, "c"), vec![2, 4, 6, 7, 8, 10]);
    j.ack_many("c", &[2, 4]).unwrap();
    assert_eq!(j.consumers()[0].committed, 5);
}

#[test]
fn consumers_have_independent_cursors_and_recipients() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
        j.register_consumer("a").unwrap();
        let s1 = j.append(&ev(1)).unwrap(); // a only: b registers later
        j.register_consumer("b").unwrap();
        assert!(!j.register_consumer("b").unwrap(), "registering twice keeps the cursor");
        let s2 = j.append(&ev(2)).unwrap(); // a and b
        let s3 = j.append_to(&ev(3), To::Only(&["b"])).unwrap(); // spill for b only
        j.ack("a", s2).unwrap();
        assert_eq!(seqs(&j, "a"), vec![s1]);
        assert_eq!(seqs(&j, "b"), vec![s2, s3]);
        let err = j.append_to(&ev(4), To::Only(&["nobody"])).unwrap_err();
        assert_eq!(err.code(), "ERR_JOURNAL_UNKNOWN_CONSUMER");
        assert_eq!(j.last_seq(), s3, "a refused append takes no sequence number");
    }
    let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
    assert_eq!(seqs(&j, "a"), vec![1]);
    assert_eq!(seqs(&j, "b"), vec![2, 3]);
    assert!(j.unregister_consumer("a").unwrap());
    assert_eq!(j.unacked("a").err().unwrap().code(), "ERR_JOURNAL_UNKNOWN_CONSUMER");
    drop(j);
    let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
    assert_eq!(j.consumers().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["b"]);
}

#[test]
fn retention_deletes_fully_acknowledged_segments_only() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Never, 4096);
    j.register_consumer("fast").unwrap();
    j.register_consumer("slow").unwrap();
    for n in 0..400 {
        j.append(&ev(n)).unwrap();
    }
    let before = segment_files(d.path()).len();
    assert!(before >= 5, "expected several 4 KiB segments, got {before}");
    let all: Vec<u64> = (1..=400).collect();
    j.ack_many("fast", &all).unwrap();
    // The big ack record may itself open a segment; none may go while slow needs everything.
    let after_fast = segment_files(d.path());
    assert!(after_fast.len() >= before, "slow still needs everything");
    assert!(after_fast[0].ends_with("00000000000000000001.seg"));
    j.ack_many("slow", &all[..200]).unwrap();
    let mid = segment_files(d.path()).len();
    assert!(mid < after_fast.len() && mid > 1, "half acked: some segments go ({before} -> {mid})");
    assert_eq!(seqs(&j, "slow"), (201..=400).collect::<Vec<_>>());
    j.ack_many("slow", &all[200..]).unwrap();
    // Only the active segment is left; the log does not grow without bound.
    assert_eq!(segment_files(d.path()).len(), 1);
    assert!(j.stats().segments_deleted as usize >= before - 1);
    drop(j);
    // The surviving segment's checkpoint carries the registry and the sequence counter.
    let j = open(d.path(), FsyncPolicy::Never, 4096);
    assert_eq!(j.consumers().len(), 2);
    assert!(seqs(&j, "slow").is_empty());
    assert_eq!(j.append(&ev(1)).unwrap(), 401);
}

#[test]
fn events_for_nobody_do_not_pin_segments() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Never, 4096);
    for n in 0..300 {
        j.append(&ev(n)).unwrap();
    }
    j.register_consumer("late").unwrap();
    let s = j.append(&ev(1)).unwrap();
    assert_eq!(seqs(&j, "late"), vec![s]);
    j.ack("late", s).unwrap();
    assert_eq!(segment_files(d.path()).len(), 1);
}

#[test]
fn iterator_resumes_and_sees_acks_made_while_iterating() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Never, 1 << 20);
    j.register_consumer("c").unwrap();
    for n in 0..2000 {
        j.append(&ev(n)).unwrap();
    }
    let mut it = j.unacked("c").unwrap();
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.seq, 1);
    // Acked behind the iterator's read-ahead window: must not be returned.
    j.ack_many("c", &(1000..=1999).collect::<Vec<_>>()).unwrap();
    let rest: Vec<u64> = it.map(|e| e.unwrap().seq).collect();
    assert_eq!(rest.len(), 2000 - 1 - 1000);
    assert_eq!(*rest.last().unwrap(), 2000);
    let after: Vec<u64> = j.unacked_after("c", 1990).unwrap().map(|e| e.unwrap().seq).collect();
    assert_eq!(after, vec![2000]);
}

#[test]
fn group_commit_shares_fsyncs_across_threads() {
    let d = tempfile::tempdir().unwrap();
    let j = Arc::new(open(d.path(), FsyncPolicy::Always, 1 << 20));
    j.register_consumer("c").unwrap();
    let fsyncs_before = j.stats().fsyncs;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for n in 0..25 {
                    let s = j.append(&ev(t * 1000 + n)).unwrap();
                    // Always: durable on return.
                    assert!(j.durable_seq() >= s);
                    mine.push(s);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    assert_eq!(all, (1..=100).collect::<Vec<_>>());
    let fsyncs = j.stats().fsyncs - fsyncs_before;
    assert!(fsyncs <= 100, "never more than one fsync per append ({fsyncs})");
    assert_eq!(seqs(&j, "c").len(), 100);
}

#[test]
fn batch_waits_for_durability_and_reports_it() {
    let d = tempfile::tempdir().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    let o = JournalOptions {
        fsync: FsyncPolicy::Batch { interval: std::time::Duration::from_millis(5), max_records: 1_000_000 },
        segment_bytes: 1 << 20,
        on_durable: Some(Arc::new(move |s| {
            s2.fetch_max(s, Ordering::SeqCst);
        })),
    };
    let j = Journal::open(d.path(), o).unwrap();
    let mut last = 0;
    for n in 0..100 {
        last = j.append(&ev(n)).unwrap();
    }
    // Batch: append returns before the fsync; the syncer covers all 100 with few fsyncs.
    j.wait_durable(last).unwrap();
    assert!(j.durable_seq() >= last);
    assert!(seen.load(Ordering::SeqCst) >= last, "on_durable saw the watermark");
    assert!(j.stats().fsyncs < 50, "batched: {} fsyncs for 100 appends", j.stats().fsyncs);
    assert_eq!(j.append_durable(&ev(1)).unwrap(), last + 1);
    assert_eq!(j.wait_durable(10_000).unwrap_err().code(), "ERR_JOURNAL_INVALID");
}

#[test]
fn append_batch_is_consecutive_and_survives_restart() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = open(d.path(), FsyncPolicy::Always, 4096);
        j.register_consumer("c").unwrap();
        let evs: Vec<_> = (0..100).map(ev).collect();
        // Larger than a segment: the batch is kept together in one (oversized) segment.
        assert_eq!(j.append_batch(&evs, To::All).unwrap(), (1, 100));
        assert_eq!(j.append_batch(&evs[..3], To::All).unwrap(), (101, 103));
    }
    let j = open(d.path(), FsyncPolicy::Always, 4096);
    let got = unacked(&j, "c");
    assert_eq!(got.len(), 103);
    assert_eq!(got[100].event, ev(0));
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Never, 4096);
    let err = Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).err().unwrap();
    assert_eq!(err.code(), "ERR_JOURNAL_LOCKED");
    drop(j);
    Journal::open(d.path(), opts(FsyncPolicy::Never, 4096)).unwrap();
}

#[test]
fn closed_journal_refuses_calls_with_a_code() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), batch(), 4096);
    j.register_consumer("c").unwrap();
    let s = j.append(&ev(1)).unwrap();
    j.close().unwrap();
    // close() fsyncs what batch had pending.
    assert!(j.durable_seq() >= s);
    for code in [
        j.append(&ev(2)).unwrap_err().code(),
        j.ack("c", s).unwrap_err().code(),
        j.unacked("c").err().unwrap().code(),
        j.sync().unwrap_err().code(),
    ] {
        assert_eq!(code, "ERR_JOURNAL_CLOSED");
    }
}

#[test]
fn invalid_input_is_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let j = open(d.path(), FsyncPolicy::Never, 4096);
    let mut e = ev(1);
    e.topic = "x".repeat(70_000);
    assert_eq!(j.append(&e).unwrap_err().code(), "ERR_JOURNAL_INVALID");
    // The id's length is checked while the batch is encoded: nothing of the batch is kept.
    let mut long_id = ev(2);
    long_id.id = "i".repeat(70_000);
    assert_eq!(j.append_batch(&[ev(3), long_id], To::All).unwrap_err().code(), "ERR_JOURNAL_INVALID");
    assert_eq!(j.register_consumer("").unwrap_err().code(), "ERR_JOURNAL_INVALID");
    assert_eq!(j.last_seq(), 0);
    assert_eq!(j.append(&ev(4)).unwrap(), 1);
    drop(j);
    let j = open(d.path(), FsyncPolicy::Never, 4096);
    assert_eq!(j.recovery().events, 1, "the refused batch left no record");
    let bad = Journal::open(d.path().join("x"), opts(FsyncPolicy::Never, 10)).err().unwrap();
    assert_eq!(bad.code(), "ERR_JOURNAL_INVALID");
}

#[test]
fn attempt_counts_of_pending_events_survive_a_restart_and_go_with_the_ack() {
    let d = tempfile::tempdir().unwrap();
    {
        // Small segments: the counts must survive segment rolls and retention too.
        let j = open(d.path(), batch(), 4096);
        j.register_consumer("c").unwrap();
        j.register_consumer("other").unwrap();
        for n in 0..100 {
            j.append_to(&ev(n), To::Only(&["c"])).unwrap();
        }
        assert_eq!(j.record_attempts("c", &[(3, 1), (7, 2)]).unwrap(), 2);
        // A later count replaces the earlier one; unknown or other consumers' events are ignored.
        assert_eq!(j.record_attempts("c", &[(3, 2), (1000, 5)]).unwrap(), 1);
        assert_eq!(j.record_attempts("other", &[(3, 1)]).unwrap(), 0);
        // Acknowledged: its count goes with it.
        j.ack("c", 7).unwrap();
        // Everything before 3 acknowledged: old segments can be deleted.
        j.ack_many("c", &[1, 2]).unwrap();
        assert_eq!(j.attempts("c").unwrap(), vec![(3, 2)]);
        j.sync().unwrap();
    }
    let j = open(d.path(), batch(), 4096);
    assert_eq!(j.attempts("c").unwrap(), vec![(3, 2)], "replayed from the ATTEMPTS records");
    assert_eq!(j.attempts("other").unwrap(), vec![]);
    j.ack("c", 3).unwrap();
    assert_eq!(j.attempts("c").unwrap(), vec![]);
    drop(j);
    let j = open(d.path(), batch(), 4096);
    assert_eq!(j.attempts("c").unwrap(), vec![], "the ack outlives the count");
    assert_eq!(seqs(&j, "c").len(), 96);
}
