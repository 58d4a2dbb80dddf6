//! Model test: random sequences of register / unregister / append (to all or to some) / ack /
//! reopen against a plain in-memory reference. After every step, every consumer's unacked
//! events (seq and content) must match the model exactly, across segment rolls, retention and
//! restarts.

mod common;

use common::*;
use proptest::prelude::*;
use sluice_journal::{FsyncPolicy, Journal, Seq, To};
use std::collections::{BTreeMap, BTreeSet};

const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    Register(usize),
    Unregister(usize),
    /// `None`: every registered consumer; `Some(mask)`: those named by the bit mask.
    Append { to: Option<u8>, size: usize },
    Ack { who: usize, picks: Vec<usize> },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize).prop_map(Op::Register),
        1 => (0..3usize).prop_map(Op::Unregister),
        8 => (proptest::option::of(0u8..8), 0..400usize).prop_map(|(to, size)| Op::Append { to, size }),
        5 => (0..3usize, proptest::collection::vec(0..64usize, 1..6)).prop_map(|(who, picks)| Op::Ack { who, picks }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    events: BTreeMap<Seq, Vec<u8>>,
    pending: BTreeMap<&'static str, BTreeSet<Seq>>,
    last: Seq,
}

/// fsyncs are free on tmpfs: the model runs hundreds of opens and segment rolls quickly.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = scratch_dir();
    let mut j = Some(open(dir.path(), FsyncPolicy::Never, 4096));
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let jr = j.as_ref().unwrap();
        match op {
            Op::Register(k) => {
                let new = jr.register_consumer(NAMES[k]).unwrap();
                prop_assert_eq!(new, !m.pending.contains_key(NAMES[k]));
                m.pending.entry(NAMES[k]).or_default();
            }
            Op::Unregister(k) => {
                let had = jr.unregister_consumer(NAMES[k]).unwrap();
                prop_assert_eq!(had, m.pending.remove(NAMES[k]).is_some());
            }
            Op::Append { to, size } => {
                let data: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + m.last) as u8).collect();
                let mut e = ev(m.last);
                e.data = data.clone();
                match to {
                    None => {
                        let s = jr.append(&e).unwrap();
                        m.last = s;
                        for p in m.pending.values_mut() {
                            p.insert(s);
                        }
                        m.events.insert(s, data);
                    }
                    Some(mask) => {
                        let names: Vec<&str> = (0..3).filter(|b| mask & (1 << b) != 0).map(|b| NAMES[b]).collect();
                        let r = jr.append_to(&e, To::Only(&names));
                        if names.iter().all(|n| m.pending.contains_key(n)) {
                            let s = r.unwrap();
                            prop_assert!(s > m.last);
                            m.last = s;
                            for n in names {
                                m.pending.get_mut(n).unwrap().insert(s);
                            }
                            m.events.insert(s, data);
                        } else {
                            prop_assert_eq!(r.unwrap_err().code(), "ERR_JOURNAL_UNKNOWN_CONSUMER");
                        }
                    }
                }
            }
            Op::Ack { who, picks } => {
                let name = NAMES[who];
                match m.pending.get_mut(name) {
                    None => prop_assert_eq!(jr.ack(name, 1).unwrap_err().code(), "ERR_JOURNAL_UNKNOWN_CONSUMER"),
                    Some(p) => {
                        // Picks index into pending (out of order) or beyond it (already acked or
                        // never addressed: must be no-ops).
                        let all: Vec<Seq> = p.iter().copied().collect();
                        let seqs: Vec<Seq> = picks
                            .iter()
                            .map(|&i| if i < all.len() { all[all.len() - 1 - i] } else { i as Seq })
                            .collect();
                        let expect: BTreeSet<Seq> = seqs.iter().copied().filter(|s| p.contains(s)).collect();
                        let n = jr.ack_many(name, &seqs).unwrap();
                        prop_assert_eq!(n, expect.len());
                        for s in expect {
                            p.remove(&s);
                        }
                    }
                }
            }
            Op::Reopen => {
                drop(j.take());
                j = Some(open(dir.path(), FsyncPolicy::Never, 4096));
                prop_assert!(j.as_ref().unwrap().recovery().truncated.is_none());
            }
        }
        let jr = j.as_ref().unwrap();
        prop_assert_eq!(jr.last_seq(), m.last, "step {}", step);
        let names: BTreeSet<String> = jr.consumers().into_iter().map(|c| c.name).collect();
        prop_assert_eq!(names, m.pending.keys().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        for (name, p) in &m.pending {
            let got = unacked(jr, name);
            let want: Vec<(Seq, &Vec<u8>)> = p.iter().map(|s| (*s, &m.events[s])).collect();
            let got: Vec<(Seq, &Vec<u8>)> = got.iter().map(|e| (e.seq, &e.event.data)).collect();
            prop_assert_eq!(got, want, "consumer {} after step {}", name, step);
        }
        prop_assert_eq!(jr.stats().segments, segment_files(dir.path()).len());
    }
    // Retention: once everything is acknowledged, the log shrinks to the active segment (plus at
    // most the one the last ack record opened).
    let jr = j.as_ref().unwrap();
    for (name, p) in &m.pending {
        jr.ack_many(name, &p.iter().copied().collect::<Vec<_>>()).unwrap();
    }
    jr.append_to(&ev(0), To::Only(&[])).unwrap();
    prop_assert!(segment_files(dir.path()).len() <= 2, "{} segments left", segment_files(dir.path()).len());
    drop(j);
    let j = Journal::open(dir.path(), opts(FsyncPolicy::Never, 4096)).unwrap();
    for name in m.pending.keys() {
        prop_assert!(unacked(&j, name).is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn journal_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
