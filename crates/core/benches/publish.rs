//! The core's own cost of publishing, without JS or N-API: what `tryPublish` and
//! `tryPublishBatch` cost once their arguments are in Rust. Through the binding a publish can
//! only be slower, so these rates bound what `npm run bench` can reach on the same machine.
//! One subscriber, drop-oldest, kept full: every publish also frees the event it displaces (the
//! steady state of a consumer that keeps up, in allocations). Plain `fn main()`; run with
//! `cargo bench -p sluice-core --bench publish`.

use sluice_core::{BatchData, Bus, BusOptions, Encoding, Overflow};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The bench's event data, as bytes (`{ id: 'o1', amount: 42 }` in bench/run.js).
const DATA: &[u8] = br#"{"id":"o1","amount":42}"#;
const BATCH: usize = 256;

/// Median ns per event over rounds of ~200 ms after a warm-up; `round(n)` publishes n events.
fn measure(name: &str, unit: usize, mut round: impl FnMut(usize)) {
    let mut n = unit * 64;
    loop {
        let t = Instant::now();
        round(n);
        if t.elapsed() > Duration::from_millis(50) {
            break;
        }
        n *= 2;
    }
    n *= 4;
    let mut ns: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            round(n);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    ns.sort_by(|a, b| a.total_cmp(b));
    let med = ns[ns.len() / 2];
    println!("{name:<58} {med:>8.1} ns/event {:>8.2} M events/s", 1e3 / med);
}

fn main() {
    let bus = Bus::new(BusOptions { capacity: 65536, overflow: Overflow::DropOldest, ..Default::default() }).unwrap();
    let sub = bus.subscribe("order.created", bus.subscribe_options()).unwrap();
    let topic = bus.intern_topic("order.created").unwrap().unwrap();
    println!("core publish, one drop-oldest subscriber kept full ({} B of data per event)", DATA.len());

    measure("try_publish_interned (data copied into a Vec, as the binding does)", 1, |n| {
        for _ in 0..n {
            black_box(bus.try_publish_interned(topic, DATA.to_vec(), Encoding::Binary, None).unwrap());
        }
    });

    let mut packed = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..BATCH {
        packed.extend_from_slice(DATA);
        ends.push(packed.len() as u32);
    }
    measure("make_batch_interned(packed 256) + try_publish_batch", BATCH, |n| {
        for _ in 0..n / BATCH {
            let events = bus.make_batch_interned(topic, BatchData::Packed { bytes: &packed, ends: &ends }, None).unwrap();
            black_box(bus.try_publish_batch(events).unwrap());
        }
    });

    let json = format!("[{}]", vec![std::str::from_utf8(DATA).unwrap(); BATCH].join(","));
    measure("make_batch_interned(JSON array of 256) + try_publish_batch", BATCH, |n| {
        for _ in 0..n / BATCH {
            let events = bus.make_batch_interned(topic, BatchData::Json(json.as_bytes()), None).unwrap();
            black_box(bus.try_publish_batch(events).unwrap());
        }
    });
    black_box(sub.queue().len());
}
