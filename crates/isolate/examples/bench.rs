//! Process isolation vs in-process on the same handler (docs/benchmarks.md, "Process
//! isolation"). Run: `cargo build --release -p sluice-isolate --bin sluice-helper &&
//! cargo run --release -p sluice-isolate --example bench`.
//!
//! Measures, for a handler that acks every event (125-byte envelope):
//! - raw executor throughput: in-process `Sandbox::handle_encoded` on one thread vs one
//!   locked-down helper fed through the rings (pipelined submit/poll);
//! - through the bus: publish → deployment → outcome counted, in-process vs `isolation:
//!   process` (concurrency 1 each);
//! - round-trip latency of one event at a time (p50/p99);
//! - helper start time (spawn → locked down, module compiled, READY) and memory per helper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::{Bus, BusOptions, EventInit};
use sluice_isolate::{Helper, HelperOptions, ProcessIsolation};
use sluice_sandbox::{
    encode_envelope, DeploySpec, Deployments, EngineConfig, Envelope, HandlerModule, Isolation, Limits, Sandbox, SandboxEngine,
    SandboxOptions,
};

const ACK: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (i32.const 0)))"#;

fn options() -> SandboxOptions {
    SandboxOptions { limits: Limits { timeout_ms: 1000, ..Limits::default() }, emits: Vec::new(), config: Vec::new(), concurrency: 1 }
}

fn envelope() -> Vec<u8> {
    let data = br#"{"id":"o-1234567","amount":42,"currency":"EUR","customer":"c-98765"}"#;
    encode_envelope(&Envelope {
        id: "bench-1",
        event_type: "order.created",
        source: "bench",
        time_unix_nanos: 1,
        subject: None,
        traceparent: None,
        deadline_unix_nanos: None,
        data,
    })
    .unwrap()
}

fn helper_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("sluice-helper")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

fn rss_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{}", if field == "Pss" { "smaps_rollup" } else { "status" })).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (ms) by thread role: this process's publisher (main thread) and deployment threads,
/// and the helpers (from /proc/<pid>/task/*/stat; load-independent enough to compare changes
/// on a shared machine, unlike the rates).
fn cpu_by_role(helpers: &[i32]) -> Vec<(&'static str, f64)> {
    let mut out: Vec<(&'static str, f64)> = Vec::new();
    let me = std::process::id() as i32;
    for pid in std::iter::once(me).chain(helpers.iter().copied()) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let name = &stat[open + 1..close];
            let f: Vec<&str> = stat[close + 2..].split(' ').collect();
            let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
            let tid: i32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
            let role = match (pid == me, name) {
                (true, _) if tid == me => "publisher",
                (true, n) if n.starts_with("sluice-wasm") => "workers",
                (true, n) if n.starts_with("sluice-helper") => "dispatchers",
                (true, _) => "other",
                (false, "sluice-epoch") => "helper epoch",
                (false, _) => "helpers",
            };
            match out.iter_mut().find(|(r, _)| *r == role) {
                Some((_, ms)) => *ms += ticks * 10.0,
                None => out.push((role, ticks * 10.0)),
            }
        }
    }
    out
}

fn raw(module: &[u8], env: &[u8], n: u64) {
    // In-process, one thread, the same engine settings the helper uses.
    let engine = SandboxEngine::new(EngineConfig { max_instances: 2, parallel_compilation: false, ..EngineConfig::default() }).unwrap();
    let sandbox = Sandbox::new(Arc::new(HandlerModule::compile(&engine, module).unwrap()), options()).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        sandbox.handle_encoded(env, None);
    }
    let inproc = n as f64 / t.elapsed().as_secs_f64();
    println!("raw in-process:        {:>10.0} events/s", inproc);

    let opts = HelperOptions::new(helper_path());
    let mut h = Helper::spawn(&opts, module, &options()).unwrap();
    let (mut sent, mut done) = (0u64, 0u64);
    let mut out = Vec::new();
    let t = Instant::now();
    while done < n {
        while sent < n && h.submit(env, None).unwrap().is_some() {
            sent += 1;
        }
        out.clear();
        done += h.poll(&mut out, Duration::from_millis(10)).unwrap() as u64;
    }
    let iso = n as f64 / t.elapsed().as_secs_f64();
    println!("raw isolated (rings):  {:>10.0} events/s  ({:.0}% of in-process)", iso, 100.0 * iso / inproc);

    // Latency, one event at a time.
    let rounds = 20_000;
    let mut a = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        sandbox.handle_encoded(env, None);
        a.push(t.elapsed());
        let t = Instant::now();
        h.handle(env, None).unwrap();
        b.push(t.elapsed());
    }
    a.sort();
    b.sort();
    println!("latency in-process:    p50 {:>7.2} µs  p99 {:>7.2} µs", pct(&a, 0.5), pct(&a, 0.99));
    println!("latency isolated:      p50 {:>7.2} µs  p99 {:>7.2} µs  (one event in flight; the helper spins, yields for 200 µs, then sleeps on a futex)", pct(&b, 0.5), pct(&b, 0.99));

    let pid = h.pid();
    println!(
        "helper memory:         VmRSS {} KiB, Pss {} KiB (after {} events)",
        rss_kib(pid, "VmRSS"),
        rss_kib(pid, "Pss"),
        n + rounds as u64
    );
    drop(h);

    let mut starts: Vec<Duration> = (0..10).map(|_| Helper::spawn(&opts, module, &options()).unwrap().start_time()).collect();
    starts.sort();
    println!("helper start:          p50 {:.1} ms  max {:.1} ms (spawn → namespaces, compile, lockdown, READY)", pct(&starts, 0.5) / 1e3, starts[9].as_secs_f64() * 1e3);

}

fn main() {
    let module = wat::parse_str(ACK).unwrap();
    let env = envelope();
    let n: u64 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    println!("envelope {} bytes, {n} events per throughput run", env.len());
    let only_bus = std::env::var("ONLY").is_ok_and(|v| v == "bus");
    if !only_bus {
        raw(&module, &env, n);
    }

    // Through the bus (`ONLY=bus`: only this, the isolated case; for comparing CPU per event).
    for isolated in [false, true] {
        if only_bus && !isolated {
            continue;
        }
        let bus = Arc::new(Bus::new(BusOptions::default()).unwrap());
        let deployments = Deployments::new(bus.clone());
        let isolation = if isolated {
            Isolation::Process { factory: Arc::new(ProcessIsolation { helper: Some(helper_path()), degrade: false }), fallback: false }
        } else {
            Isolation::InProcess
        };
        let spec = DeploySpec { topics: vec!["order.created".into()], capacity: Some(65_536), overflow: None, delivery: Default::default(), sandbox: options(), isolation, labels: Default::default() };
        let dep = deployments.deploy("bench", &module, &spec).unwrap();
        let events = n / 2;
        let data = br#"{"id":"o-1234567","amount":42,"currency":"EUR","customer":"c-98765"}"#.to_vec();
        let pids = dep.info().pids;
        let cpu0 = cpu_by_role(&pids);
        let t = Instant::now();
        for _ in 0..events {
            let init = EventInit { topic: "order.created".into(), data: data.clone(), ..Default::default() };
            match bus.publish(init, None).unwrap() {
                sluice_core::Delivery::Done { .. } => {}
                sluice_core::Delivery::Pending(p) => p.wait().unwrap(),
            }
        }
        while dep.info().outcomes.ack < events {
            std::thread::sleep(Duration::from_micros(200));
        }
        let rate = events as f64 / t.elapsed().as_secs_f64();
        let cpu1 = cpu_by_role(&pids);
        let lat = dep.info().latency_us;
        println!(
            "bus → {:<10}       {:>10.0} events/s  handler latency p50 {:.1} µs p99 {:.1} µs",
            if isolated { "isolated" } else { "in-process" },
            rate,
            lat.p50,
            lat.p99
        );
        let per_event: Vec<String> = cpu1
            .iter()
            .map(|(role, ms)| (role, (ms - cpu0.iter().find(|(r, _)| r == role).map_or(0.0, |(_, m)| *m)) * 1e6 / events as f64))
            .filter(|(_, ns)| *ns > 0.0)
            .map(|(role, ns)| format!("{role} {ns:.0}"))
            .collect();
        println!("    CPU ns per event: {}", per_event.join(", "));
        deployments.stop_all();
    }
}
