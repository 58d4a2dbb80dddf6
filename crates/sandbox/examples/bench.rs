//! Small benchmark of the sandbox: compile time, instantiate time, per-event call cost and
//! the cost of each time limit (epoch only, fuel metering compiled in, fuel budget).
//!
//!   cargo run --release -p sluice-sandbox --example bench
//!
//! Uses the WAT fixtures, plus the AssemblyScript examples when they have been built
//! (guest/assemblyscript/build/*.wasm). One run; figures vary with machine load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_sandbox::{
    encode_envelope, EngineConfig, Envelope, Limits, ModuleRegistry, Outcome, Sandbox,
    SandboxEngine, SandboxOptions,
};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> Vec<u8> {
    wat::parse_file(format!("{DIR}/tests/fixtures/{name}.wat")).expect("fixture")
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// A 125-byte envelope, the size the design's V8 anchor uses.
fn sample_data() -> Vec<u8> {
    let probe = Envelope {
        id: "evt-000001",
        event_type: "order.created",
        source: "/orders",
        time_unix_nanos: 1_700_000_000_000_000_000,
        subject: None,
        traceparent: None,
        deadline_unix_nanos: None,
        data: b"",
    };
    let fixed = encode_envelope(&probe).unwrap().len();
    let mut data = br#"{"id":"o-1","amount":1200,"pad":""#.to_vec();
    while fixed + data.len() + 2 < 125 {
        data.push(b'x');
    }
    data.extend_from_slice(b"\"}");
    data
}

fn envelope(data: &[u8]) -> Envelope<'_> {
    Envelope {
        id: "evt-000001",
        event_type: "order.created",
        source: "/orders",
        time_unix_nanos: 1_700_000_000_000_000_000,
        subject: None,
        traceparent: None,
        deadline_unix_nanos: None,
        data,
    }
}

fn deploy(engine: &Arc<SandboxEngine>, bytes: &[u8], limits: Limits, emits: &[&str]) -> Sandbox {
    let module = ModuleRegistry::new(engine.clone())
        .compile(bytes)
        .expect("compile");
    Sandbox::new(
        module,
        SandboxOptions {
            limits,
            emits: emits.iter().map(|s| s.to_string()).collect(),
            concurrency: 2,
            ..SandboxOptions::default()
        },
    )
    .expect("deploy")
}

fn instantiate(label: &str, sb: &Sandbox) {
    let mut samples: Vec<Duration> = (0..2000)
        .map(|_| sb.measure_instantiate().unwrap())
        .collect();
    samples.sort();
    println!(
        "instantiate {label:<28} p50 {:>9}  p99 {:>9}",
        fmt(percentile(&samples, 0.5)),
        fmt(percentile(&samples, 0.99))
    );
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Resident memory added per idle instance (store + instance + whatever guest pages its
/// start function and `sluice_init` touched), averaged over 200 instances on a fresh engine.
fn idle_memory(label: &str, bytes: &[u8], emits: &[&str]) {
    const N: usize = 200;
    let engine = SandboxEngine::new(EngineConfig::default()).unwrap();
    let module = ModuleRegistry::new(engine).compile(bytes).unwrap();
    let before = resident_bytes();
    let sb = Sandbox::new(
        module,
        SandboxOptions {
            emits: emits.iter().map(|s| s.to_string()).collect(),
            concurrency: N,
            ..SandboxOptions::default()
        },
    )
    .unwrap();
    sb.prewarm().unwrap();
    let after = resident_bytes();
    println!(
        "idle instance {label:<26} {:>6.1} KiB resident each ({N} instances)",
        after.saturating_sub(before) as f64 / N as f64 / 1024.0
    );
}

/// Single-thread loop over `handle` (encoding included) and `handle_encoded`.
fn calls(label: &str, sb: &Sandbox, data: &[u8], n: u32) {
    let env = envelope(data);
    for _ in 0..1000 {
        sb.handle(&env, None);
    }
    let started = Instant::now();
    for _ in 0..n {
        let r = sb.handle(&env, None);
        debug_assert!(r.outcome == Outcome::Ack);
    }
    let per = started.elapsed() / n;
    let bytes = encode_envelope(&env).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        sb.handle_encoded(&bytes, None);
    }
    let per_encoded = started.elapsed() / n;
    let info = sb.info();
    println!(
        "call {label:<35} {:>8}/event ({:.2} M/s), pre-encoded {:>8} ({:.2} M/s); p99 {}",
        fmt(per),
        1e3 / per.as_nanos() as f64,
        fmt(per_encoded),
        1e3 / per_encoded.as_nanos() as f64,
        fmt(info.latency.p99),
    );
}

/// Two threads sharing one deployment with concurrency 2.
fn two_threads(label: &str, sb: &Arc<Sandbox>, data: &[u8], n: u32) {
    let bytes = Arc::new(encode_envelope(&envelope(data)).unwrap());
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (sb, bytes) = (sb.clone(), bytes.clone());
            std::thread::spawn(move || {
                for _ in 0..n {
                    sb.handle_encoded(&bytes, None);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let rate = 2.0 * n as f64 / started.elapsed().as_secs_f64();
    println!("call {label:<35} 2 threads: {:.2} M events/s", rate / 1e6);
}

fn main() {
    let data = sample_data();
    println!(
        "event: {} bytes encoded",
        encode_envelope(&envelope(&data)).unwrap().len()
    );
    let metered = SandboxEngine::new(EngineConfig::default()).unwrap();
    let unmetered = SandboxEngine::new(EngineConfig {
        fuel: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let limits = Limits {
        timeout_ms: 1_000,
        ..Limits::default()
    };
    let n = 200_000;

    let mut wasm = vec![
        ("trivial (WAT)", fixture("trivial"), vec![]),
        ("probe (WAT)", fixture("probe"), vec![]),
    ];
    for name in ["echo", "fraud"] {
        let path = format!("{DIR}/../../guest/assemblyscript/build/{name}.wasm");
        match std::fs::read(&path) {
            Ok(bytes) => wasm.push((
                if name == "echo" {
                    "echo (AssemblyScript)"
                } else {
                    "fraud (AssemblyScript)"
                },
                bytes,
                vec!["echo.*", "fraud.*"],
            )),
            Err(_) => println!("({path} not built; skipping)"),
        }
    }

    for (label, bytes, _) in &wasm {
        let started = Instant::now();
        let m = sluice_sandbox::HandlerModule::compile(&metered, bytes).unwrap();
        println!(
            "compile {label:<32} {:>9} ({} bytes; cranelift {})",
            fmt(started.elapsed()),
            bytes.len(),
            fmt(m.compile_time())
        );
    }

    for (label, bytes, emits) in &wasm {
        let sb = deploy(&metered, bytes, limits.clone(), emits);
        instantiate(label, &sb);
    }
    // Same, with every reused pool slot reset by madvise instead of memset.
    let madvise = SandboxEngine::new(EngineConfig {
        keep_resident_bytes: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    for (label, bytes, emits) in &wasm {
        let sb = deploy(&madvise, bytes, limits.clone(), emits);
        instantiate(&format!("{label}, no keep-resident"), &sb);
    }

    for (label, bytes, emits) in &wasm {
        idle_memory(label, bytes, emits);
    }

    let trivial = fixture("trivial");
    let sb = deploy(&unmetered, &trivial, limits.clone(), &[]);
    calls("trivial, epoch only", &sb, &data, n);
    let sb = deploy(&metered, &trivial, limits.clone(), &[]);
    calls("trivial, fuel compiled in, no budget", &sb, &data, n);
    let sb = deploy(
        &metered,
        &trivial,
        Limits {
            fuel: Some(1_000_000),
            ..limits.clone()
        },
        &[],
    );
    calls("trivial, fuel budget", &sb, &data, n);
    let sb = Arc::new(deploy(&unmetered, &trivial, limits.clone(), &[]));
    two_threads("trivial, epoch only", &sb, &data, n);

    for (label, bytes, emits) in wasm.iter().skip(2) {
        let sb = deploy(&unmetered, bytes, limits.clone(), emits);
        calls(&format!("{label}, epoch only"), &sb, &data, n / 4);
    }
}
