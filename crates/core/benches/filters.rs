//! ns per event for declarative filter chains (the Go reference design reports 82 ns for 3
//! filters and 267 ns for 10). The event is a realistic ~120-byte JSON order; every predicate in
//! the "pass" chains holds, so nothing short-circuits early. Plain `fn main()`; run with
//! `cargo bench -p sluice-core --bench filters [-- WORD]`: with WORD, only the rows whose name or
//! spec contains it run (to profile one predicate under perf or callgrind).

use sluice_core::{Bus, BusOptions, Event, EventInit, FilterChain};
use std::hint::black_box;
use std::time::{Duration, Instant};

const ORDER: &str = r#"{"id":"ord-7f3a91","customer":"c-10293","amount":129.95,"currency":"EUR","items":3,"country":"DE","express":true}"#;

const CHAIN_3: &str = r#"[
  {"type":"order.*"},
  {"field":"amount","op":"gt","value":100},
  {"attr":"subject","op":"prefix","value":"eu/"}
]"#;

const CHAIN_10: &str = r#"[
  {"type":"order.*"},
  {"attr":"subject","op":"prefix","value":"eu/"},
  {"field":"amount","op":"gt","value":100},
  {"field":"currency","op":"in","value":["EUR","USD","GBP"]},
  {"field":"items","op":"gte","value":1},
  {"field":"country","value":"DE"},
  {"field":"express","value":true},
  {"field":"customer","op":"prefix","value":"c-"},
  {"not":{"field":"amount","op":"lt","value":0}},
  {"attr":"id","op":"exists"}
]"#;

/// The same 10 predicates, but the first one misses: the chain stops there.
const CHAIN_10_MISS_FIRST: &str = r#"[
  {"type":"user.*"},
  {"attr":"subject","op":"prefix","value":"eu/"},
  {"field":"amount","op":"gt","value":100},
  {"field":"currency","op":"in","value":["EUR","USD","GBP"]},
  {"field":"items","op":"gte","value":1},
  {"field":"country","value":"DE"},
  {"field":"express","value":true},
  {"field":"customer","op":"prefix","value":"c-"},
  {"not":{"field":"amount","op":"lt","value":0}},
  {"attr":"id","op":"exists"}
]"#;

/// The same 10 predicates, but the last one misses: the worst case, all ten evaluated.
const CHAIN_10_MISS_LAST: &str = r#"[
  {"type":"order.*"},
  {"attr":"subject","op":"prefix","value":"eu/"},
  {"field":"amount","op":"gt","value":100},
  {"field":"currency","op":"in","value":["EUR","USD","GBP"]},
  {"field":"items","op":"gte","value":1},
  {"field":"country","value":"DE"},
  {"field":"express","value":true},
  {"field":"customer","op":"prefix","value":"c-"},
  {"not":{"field":"amount","op":"lt","value":0}},
  {"attr":"subject","op":"prefix","value":"us/"}
]"#;

/// ns per `accepts` call: 100 ms warm-up, then `run` of timed chunks of 1000 calls. Returns the
/// mean and the fastest chunk: on this shared machine the mean moves with the load, the fastest
/// chunk (1000 calls, tens of µs, mostly uninterrupted) much less.
fn time(chain: &FilterChain, ev: &Event, expect: bool, run: Duration) -> (f64, f64) {
    assert_eq!(chain.accepts(ev), expect);
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        for _ in 0..1000 {
            black_box(black_box(chain).accepts(black_box(ev)));
        }
    }
    let mut n = 0u64;
    let mut hits = 0u64;
    let mut best = Duration::MAX;
    let t0 = Instant::now();
    while t0.elapsed() < run {
        let chunk = Instant::now();
        for _ in 0..1000 {
            hits += black_box(chain).accepts(black_box(ev)) as u64;
        }
        best = best.min(chunk.elapsed());
        n += 1000;
    }
    assert_eq!(hits, if expect { n } else { 0 }, "the chain's verdict changed between calls");
    (t0.elapsed().as_nanos() as f64 / n as f64, best.as_nanos() as f64 / 1000.0)
}

fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |row: &str| only.as_deref().is_none_or(|w| row.contains(w));
    let bus = Bus::new(BusOptions::default()).unwrap();
    let ev = bus
        .make_event(
            EventInit {
                topic: "order.created".into(),
                subject: Some("eu/berlin".into()),
                data: ORDER.as_bytes().to_vec(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    println!("event: {} bytes of JSON data, topic order.created, subject eu/berlin", ORDER.len());
    println!("{:<36} {:>10} {:>14} {:>12}", "chain", "ns/event", "M events/s", "best chunk");
    for (name, spec, expect) in [
        ("3 predicates, all pass", CHAIN_3, true),
        ("10 predicates, all pass", CHAIN_10, true),
        ("10 predicates, first misses", CHAIN_10_MISS_FIRST, false),
        ("10 predicates, last misses", CHAIN_10_MISS_LAST, false),
    ] {
        if !wanted(name) {
            continue;
        }
        let (ns, best) = time(&FilterChain::parse(spec).unwrap(), &ev, expect, Duration::from_millis(1500));
        println!("{:<36} {:>10.1} {:>14.2} {:>12.1}", name, ns, 1e3 / ns, best);
    }
    // Where the time goes: each predicate of the 10-chain alone. Field lookups scan the JSON from
    // the start, so their cost grows with the key's position in the document.
    println!();
    println!("{:>10} {:>11}  single predicate of the 10-chain", "ns/event", "best chunk");
    let singles: Vec<serde_json::Value> = serde_json::from_str(CHAIN_10).unwrap();
    for p in singles.into_iter().filter(|p| wanted(&p.to_string())) {
        let (ns, best) = time(&FilterChain::parse(&p.to_string()).unwrap(), &ev, true, Duration::from_millis(300));
        println!("{ns:>10.1} {best:>11.1}  {p}");
    }
}
