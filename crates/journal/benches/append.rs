//! Journal benchmark: durable append throughput and latency per fsync policy with ~128-byte
//! events from 1 and 2 threads, and recovery time for 1 M unacknowledged events.
//!
//!     CARGO_TARGET_DIR=... cargo bench -p sluice-journal --bench append
//!
//! Runs on the file system of $SLUICE_BENCH_DIR (default: the system temp dir). Prints a table.

use sluice_journal::{EventRecord, FsyncPolicy, Journal, JournalOptions, To};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn event(n: u64) -> EventRecord {
    // 128 bytes of data plus topic and id: a small JSON-sized event.
    let mut e = EventRecord::new("bench.order.created", format!("evt-{n:012}"), vec![b'x'; 128]);
    e.time_ms = 1_700_000_000_000 + n;
    e
}

fn dir() -> tempfile::TempDir {
    match std::env::var("SLUICE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn open(d: &std::path::Path, fsync: FsyncPolicy) -> Journal {
    let j = Journal::open(d, JournalOptions { fsync, segment_bytes: 64 << 20, on_durable: None }).unwrap();
    j.register_consumer("bench").unwrap();
    j
}

struct Row {
    name: String,
    threads: usize,
    events: u64,
    elapsed: Duration,
    lat: Vec<u64>,
}

fn pct(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let v = sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    if v >= 1_000_000 {
        format!("{:.2} ms", v as f64 / 1e6)
    } else {
        format!("{:.1} µs", v as f64 / 1e3)
    }
}

/// `threads` threads call `op` until `budget` elapses or each did `max` calls; latency per call.
fn run(threads: usize, budget: Duration, max: u64, j: &Arc<Journal>, op: fn(&Journal, u64)) -> (u64, Duration, Vec<u64>) {
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(max.min(1 << 20) as usize);
                let mut n = 0;
                while n < max && (n % 16 != 0 || start.elapsed() < budget) {
                    let t0 = Instant::now();
                    op(&j, t as u64 * 1_000_000_000 + n);
                    lat.push(t0.elapsed().as_nanos() as u64);
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let elapsed = start.elapsed();
    lat.sort_unstable();
    (lat.len() as u64, elapsed, lat)
}

fn main() {
    let batch = FsyncPolicy::Batch { interval: Duration::from_millis(2), max_records: 4096 };
    let mut rows = Vec::new();
    for threads in [1, 2] {
        // always: append returns once fsynced; two threads share fsyncs (group commit).
        let d = dir();
        let j = Arc::new(open(d.path(), FsyncPolicy::Always));
        let (n, el, lat) = run(threads, Duration::from_millis(1500), u64::MAX, &j, |j, n| {
            j.append(&event(n)).unwrap();
        });
        rows.push(Row { name: "always: append (durable)".into(), threads, events: n, elapsed: el, lat });

        // batch, pipelined: append returns at once; time includes the final fsync of the last.
        let d = dir();
        let j = Arc::new(open(d.path(), batch));
        let (n, el, lat) = run(threads, Duration::from_secs(3), 400_000 / threads as u64, &j, |j, n| {
            j.append(&event(n)).unwrap();
        });
        let t0 = Instant::now();
        j.wait_durable(j.last_seq()).unwrap();
        rows.push(Row { name: "batch: append, then wait_durable(last)".into(), threads, events: n, elapsed: el + t0.elapsed(), lat });

        // batch, each call waits for its own fsync (a publish that resolves when persisted).
        let d = dir();
        let j = Arc::new(open(d.path(), batch));
        let (n, el, lat) = run(threads, Duration::from_millis(1500), u64::MAX, &j, |j, n| {
            j.append_durable(&event(n)).unwrap();
        });
        rows.push(Row { name: "batch: append_durable (each waits)".into(), threads, events: n, elapsed: el, lat });

        // batch, 64 events per call, each call waits: how a batching publisher uses it.
        let d = dir();
        let j = Arc::new(open(d.path(), batch));
        let (n, el, lat) = run(threads, Duration::from_millis(1500), u64::MAX, &j, |j, n| {
            let evs: Vec<_> = (0..64).map(|k| event(n * 64 + k)).collect();
            let (_, last) = j.append_batch(&evs, To::All).unwrap();
            j.wait_durable(last).unwrap();
        });
        rows.push(Row { name: "batch: append_batch(64) + wait (per call)".into(), threads, events: n * 64, elapsed: el, lat });

        // never: write(2) per append, no fsync.
        let d = dir();
        let j = Arc::new(open(d.path(), FsyncPolicy::Never));
        let (n, el, lat) = run(threads, Duration::from_secs(3), 400_000 / threads as u64, &j, |j, n| {
            j.append(&event(n)).unwrap();
        });
        rows.push(Row { name: "never: append (in the kernel)".into(), threads, events: n, elapsed: el, lat });
    }

    println!("\nsluice-journal append, ~128-byte events ({} B per record on disk)", record_size());
    println!("{:<44} {:>3} {:>10} {:>12} {:>10} {:>10}", "policy / call", "thr", "events", "events/s", "p50", "p99");
    rows.sort_by_key(|r| (r.name.clone(), r.threads));
    for r in &rows {
        println!(
            "{:<44} {:>3} {:>10} {:>12.0} {:>10} {:>10}",
            r.name,
            r.threads,
            r.events,
            r.events as f64 / r.elapsed.as_secs_f64(),
            pct(&r.lat, 0.50),
            pct(&r.lat, 0.99)
        );
    }
    println!("(latency is per call; for append_batch a call carries 64 events)");

    recovery(1_000_000);
}

fn record_size() -> u64 {
    let d = dir();
    let j = open(d.path(), FsyncPolicy::Never);
    let before = j.stats().bytes;
    j.append(&event(1)).unwrap();
    j.stats().bytes - before
}

fn recovery(n: u64) {
    let d = dir();
    let t0 = Instant::now();
    {
        let j = open(d.path(), FsyncPolicy::Never);
        let mut k = 0;
        while k < n {
            let evs: Vec<_> = (k..k + 1000).map(event).collect();
            j.append_batch(&evs, To::All).unwrap();
            k += 1000;
        }
        j.close().unwrap();
    }
    let build = t0.elapsed();
    let t1 = Instant::now();
    let j = Journal::open(d.path(), JournalOptions { fsync: FsyncPolicy::Never, segment_bytes: 64 << 20, on_durable: None }).unwrap();
    let open = t1.elapsed();
    let t2 = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0u64;
    for e in j.unacked("bench").unwrap() {
        let e = e.unwrap();
        bytes += e.event.data.len() as u64;
        count += 1;
    }
    let iter = t2.elapsed();
    assert_eq!(count, n);
    let st = j.stats();
    println!(
        "\nrecovery of {n} unacknowledged events ({} segments, {:.0} MB, page cache warm; built in {:.1?}):\n  \
         open (scan + verify every crc + rebuild cursors): {:.0?}\n  iterate all unacked (read + verify + decode):    {:.0?}  ({} MB of data)\n  total: {:.0?}  ({:.2} M events/s)",
        st.segments,
        st.bytes as f64 / 1e6,
        build,
        open,
        iter,
        bytes / 1_000_000,
        open + iter,
        n as f64 / (open + iter).as_secs_f64() / 1e6
    );
}
