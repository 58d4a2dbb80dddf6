//! Real crash test. This binary is both sides: run normally it is the parent; with
//! `SLUICE_JOURNAL_CRASH_CHILD` set it is the child, which appends a numbered stream from two
//! threads and prints each event only after its durable wait returned, plus acks once they are
//! covered by a later fsync. The parent SIGKILLs the child at a random moment, reopens the
//! journal and checks, in Jepsen's queue vocabulary: lost = 0 (every reported-durable event is
//! there, with its data), unexpected = 0 (nothing that was never appended), duplicates = 0,
//! per-thread streams are gap-free prefixes, and acks reported durable stay acked. Every fifth
//! round it also writes a torn record on purpose before reopening.

mod common;

use sluice_journal::{EventRecord, FsyncPolicy, Journal, JournalOptions, Seq};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SLUICE_JOURNAL_CRASH_CHILD";
const ROUNDS: u32 = 30;
const THREADS: u32 = 2;

fn policy(name: &str) -> FsyncPolicy {
    match name {
        "always" => FsyncPolicy::Always,
        _ => FsyncPolicy::Batch { interval: Duration::from_millis(2), max_records: 64 },
    }
}

fn options(p: FsyncPolicy) -> JournalOptions {
    // Small segments: rolls (and their checkpoints) happen during the crash rounds too.
    JournalOptions { fsync: p, segment_bytes: 16 << 10, on_durable: None }
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir), &std::env::var("SLUICE_POLICY").unwrap(), std::env::var("SLUICE_ROUND").unwrap().parse().unwrap());
        return;
    }
    parent();
}

fn child(dir: &Path, pol: &str, round: u32) {
    let j = Arc::new(Journal::open(dir, options(policy(pol))).expect("child open"));
    j.register_consumer("keep").unwrap();
    j.register_consumer("c").unwrap();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    println!("READY");
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (j, out) = (j.clone(), out.clone());
            std::thread::spawn(move || {
                let mut unreported_ack: Option<Seq> = None;
                for i in 0u64.. {
                    let name = format!("{round}:{t}:{i}");
                    let seq = j.append_durable(&EventRecord::new("crash", name.clone(), name.clone().into_bytes())).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "D {seq} {name}").unwrap();
                    // This durable append was written after the earlier ack record, so the
                    // fsync that covered it covered the ack too.
                    if let Some(a) = unreported_ack.take() {
                        writeln!(o, "A {a}").unwrap();
                    }
                    o.flush().unwrap();
                    drop(o);
                    if i % 3 == 0 {
                        assert!(j.ack("c", seq).unwrap());
                        unreported_ack = Some(seq);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn parent() {
    let started = Instant::now();
    let seed = std::env::var("SLUICE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("crash test: {ROUNDS} rounds, seed {seed} (SLUICE_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Everything any child ever reported durable: seq -> name.
    let mut durable: BTreeMap<Seq, String> = BTreeMap::new();
    let mut acked_durable: Vec<Seq> = Vec::new();
    let (mut truncations, mut unreported) = (0, 0);
    for round in 0..ROUNDS {
        let pol = if round % 2 == 0 { "always" } else { "batch" };
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .env("SLUICE_POLICY", pol)
            .env("SLUICE_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let (lines, stdout) = (lines.clone(), child.stdout.take().unwrap());
            std::thread::spawn(move || {
                for l in BufReader::new(stdout).lines() {
                    lines.lock().unwrap().push(l.unwrap());
                }
            })
        };
        // Kill only once the child is really appending, then at a random moment.
        let t0 = Instant::now();
        while lines.lock().unwrap().iter().filter(|l| l.starts_with('D')).count() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(20), "child made no progress");
            if let Some(st) = child.try_wait().unwrap() {
                panic!("child exited early: {st}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let lines = lines.lock().unwrap().clone();
        let mut reported = 0;
        for l in &lines {
            let mut p = l.split(' ');
            match p.next() {
                Some("D") => {
                    let seq: Seq = p.next().unwrap().parse().unwrap();
                    let name = p.next().unwrap().to_string();
                    assert!(durable.insert(seq, name).is_none(), "seq {seq} reported twice");
                    reported += 1;
                }
                Some("A") => acked_durable.push(p.next().unwrap().parse().unwrap()),
                Some("READY") => {}
                other => panic!("unexpected child output {other:?}"),
            }
        }

        if round % 5 == 4 {
            tear_last_record(dir.path());
        }
        let j = Journal::open(dir.path(), options(FsyncPolicy::Never)).expect("reopen after SIGKILL");
        if let Some(t) = &j.recovery().truncated {
            truncations += 1;
            assert_eq!(t.intact_records_after, 0, "a process crash cannot leave a hole: {t:?}");
        }
        if round % 5 == 4 {
            assert!(j.recovery().truncated.is_some(), "the torn record written on purpose was not found");
        }
        let keep: Vec<(Seq, String)> = j
            .unacked("keep")
            .unwrap()
            .map(|e| {
                let e = e.expect("read after crash");
                let name = String::from_utf8(e.event.data.clone()).expect("data is what we wrote");
                assert_eq!(e.event.id, name, "seq {}: id and data disagree (misread)", e.seq);
                (e.seq, name)
            })
            .collect();
        let present: HashMap<Seq, &String> = keep.iter().map(|(s, n)| (*s, n)).collect();
        let lost: Vec<_> = durable.iter().filter(|(s, n)| present.get(s) != Some(n)).collect();
        assert!(lost.is_empty(), "round {round} ({pol}): lost {} durable events, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);

        // Each (round, thread) stream is a gap-free prefix 0..k in seq order: no duplicates, no
        // unexpected events, nothing reordered.
        let mut next_i: HashMap<(u32, u32), u64> = HashMap::new();
        for (seq, name) in &keep {
            let v: Vec<u64> = name.split(':').map(|x| x.parse().expect("well-formed name")).collect();
            let (r, t, i) = (v[0] as u32, v[1] as u32, v[2]);
            assert!(r <= round && t < THREADS, "unexpected event {name} at {seq}");
            let want = next_i.entry((r, t)).or_insert(0);
            assert_eq!(i, *want, "stream {r}:{t}: expected #{want} at seq {seq}, found #{i} (gap or duplicate)");
            *want += 1;
        }
        unreported = keep.len() - durable.len();

        // Acks reported durable stay acked; events never acked stay pending for "c".
        let c: std::collections::HashSet<Seq> = j.unacked("c").unwrap().map(|e| e.unwrap().seq).collect();
        for a in &acked_durable {
            assert!(!c.contains(a), "durable ack of {a} was lost");
        }
        for (seq, name) in &keep {
            if name.rsplit(':').next().unwrap().parse::<u64>().unwrap() % 3 != 0 {
                assert!(c.contains(seq), "{name} at {seq} was never acked but is not pending for c");
            }
        }
        println!(
            "round {round:2} {pol:6}: {reported:4} reported durable, {:5} in log, truncated: {}",
            keep.len(),
            j.recovery().truncated.as_ref().map_or("-".to_string(), |t| format!("{} B", t.discarded_bytes))
        );
    }
    println!(
        "crash test passed: {ROUNDS} SIGKILLs, {} durable events, lost 0, unexpected 0, duplicates 0; \
         {unreported} written-but-unreported events in the log (allowed); {truncations} torn tails cut; {:.1?}",
        durable.len(),
        started.elapsed()
    );
}

/// Appends the first half of a copy of the last record to the last segment: the shape of a
/// write cut short by a crash.
fn tear_last_record(dir: &Path) {
    let seg = common::segment_files(dir).pop().unwrap();
    let b = std::fs::read(&seg).unwrap();
    let mut off = sluice_journal::layout::FILE_HEADER_LEN;
    let mut last = None;
    while off < b.len() {
        let len = sluice_journal::layout::RECORD_HEADER_LEN + u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
        if off + len > b.len() {
            break;
        }
        last = Some((off, len));
        off += len;
    }
    let (o, l) = last.expect("last segment has a record");
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&b[o..o + l / 2]).unwrap();
}
