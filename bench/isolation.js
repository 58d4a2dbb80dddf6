// Process isolation benchmarks (issue 5): the same handler in-process vs `isolation: 'process'`.
// Standalone: `npm run build && node bench/isolation.js` (needs the addon and sluice-helper).
// Knobs: SLUICE_BENCH_ROUNDS (default 5 timed rounds per case), SLUICE_BENCH_ROUND_MS (default
// 500), SLUICE_BENCH_LAT_MS (default 2000 per latency run), SLUICE_BENCH_ISOLATION_OUT (JSON
// results; default bench/results/isolation.json).
//
//  1. Throughput: tryPublishBatch(256) → trivial.wasm (crates/sandbox/tests/fixtures), counted
//     when the deployment has acked them all; concurrency 1 and 2; in-process vs process.
//  2. Latency: one event at a time, publish → handler → emit → JS subscriber (p50/p99), and the
//     handler latency the deployment measures (dispatcher → outcome; for `process` that is the
//     round trip through the shared-memory rings).
//  3. Helper start (spawn → namespaces, compile, seccomp, READY) and memory per helper
//     (VmRSS and Pss of each helper after the throughput run).

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, cpus } from 'node:os';
import wabtInit from 'wabt';
import { Bus } from '../dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const env = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback);
const ROUNDS = env('SLUICE_BENCH_ROUNDS', 5);
const ROUND_MS = env('SLUICE_BENCH_ROUND_MS', 500);
const LAT_MS = env('SLUICE_BENCH_LAT_MS', 2000);
const OUT = process.env.SLUICE_BENCH_ISOLATION_OUT ?? join(here, 'results', 'isolation.json');
const BATCH = 256;
const hr = process.hrtime.bigint;
const immediate = () => new Promise((r) => setImmediate(r));
const DATA = { id: 'o-1234567', amount: 42, currency: 'EUR', customer: 'c-98765' };

const wabt = await wabtInit();
const compile = (text) => new Uint8Array(wabt.parseWat('fixture.wat', text).toBinary({}).buffer);
const trivial = compile(readFileSync(join(root, 'crates/sandbox/tests/fixtures/trivial.wat'), 'utf8'));
// Acks and emits `{}` on lat.out: the latency probe.
const echo = compile(`(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "lat.out{}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32)
    (drop (call $emit (i32.const 0) (i32.const 7) (i32.const 7) (i32.const 2)))
    (i32.const 0)))`);

const fmtRate = (r) => (r >= 1e6 ? `${(r / 1e6).toFixed(2)} M/s` : `${(r / 1e3).toFixed(0)} k/s`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

function memKiB(pid) {
  const field = (file, name) => {
    try {
      const line = readFileSync(`/proc/${pid}/${file}`, 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
      return line ? Number(line.split(/\s+/)[1]) : null;
    } catch {
      return null; // the helper was replaced since info() was read
    }
  };
  return { rssKiB: field('status', 'VmRSS'), pssKiB: field('smaps_rollup', 'Pss') };
}

async function throughput(isolation, concurrency) {
  const bus = new Bus({ capacity: 65536, overflow: 'block' });
  const t0 = hr();
  const dep = await bus.deploy(`t-${isolation}-${concurrency}`, trivial, { topics: ['order.created'], concurrency, isolation, capacity: 65536 });
  const deployMs = Number(hr() - t0) / 1e6;
  const events = Array.from({ length: BATCH }, () => ({ type: 'order.created', data: DATA }));
  const acked = () => dep.info().outcomes.ack;
  const run = async (n) => {
    const base = acked();
    const start = hr();
    for (let sent = 0; sent < n; ) {
      let batch = events;
      for (;;) {
        const took = bus.tryPublishBatch(batch);
        sent += took;
        if (took === batch.length) break;
        batch = batch.slice(took);
        await immediate();
      }
    }
    // Bounded: a stuck deployment must show its state, not hang the bench.
    const deadline = Date.now() + 60_000;
    while (acked() - base < n) {
      if (Date.now() > deadline) throw new Error(`${isolation}: ${acked() - base}/${n} acked after 60 s: ${JSON.stringify(dep.info())}`);
      await immediate();
    }
    return Number(hr() - start) / 1e9;
  };
  // Warm-up, then size rounds to ROUND_MS.
  let n = BATCH * 16;
  let secs = await run(n);
  while (secs < ROUND_MS / 4000) {
    n *= 2;
    secs = await run(n);
  }
  n = Math.max(BATCH, Math.round((n * ROUND_MS) / 1000 / secs / BATCH) * BATCH);
  const rates = [];
  for (let i = 0; i < ROUNDS; i++) rates.push(n / (await run(n)));
  const info = dep.info();
  const memory = info.pids.map(memKiB);
  await dep.undeploy();
  await bus.close();
  return {
    isolation,
    concurrency,
    eventsPerRound: n,
    median: median(rates),
    min: Math.min(...rates),
    max: Math.max(...rates),
    deployMs,
    helperStartUs: (info.helpers ?? []).map((h) => h.startTimeUs),
    memory,
    sandboxLevel: info.sandboxLevel,
  };
}

async function latency(isolation) {
  const bus = new Bus();
  let got = 0;
  bus.subscribe('lat.out', () => void got++);
  const dep = await bus.deploy(`lat-${isolation}`, echo, { topics: ['lat.in'], emits: ['lat.out'], isolation });
  const samples = [];
  const end = Date.now() + LAT_MS;
  while (Date.now() < end) {
    const want = got + 1;
    const t = hr();
    bus.tryPublish('lat.in', DATA);
    while (got < want) await immediate();
    samples.push(Number(hr() - t) / 1e3);
  }
  const handler = dep.info().latencyUs;
  await dep.undeploy();
  await bus.close();
  samples.sort((a, b) => a - b);
  return { isolation, samples: samples.length, p50Us: pct(samples, 0.5), p99Us: pct(samples, 0.99), handlerP50Us: handler.p50, handlerP99Us: handler.p99 };
}

const load = loadavg().map((l) => l.toFixed(2)).join(' ');
console.log(`sluice process isolation bench — ${new Date().toISOString()}, ${cpus().length} CPUs, load ${load}`);
const out = { date: new Date().toISOString(), loadBefore: loadavg(), throughput: [], latency: [] };
for (const concurrency of [1, 2]) {
  for (const isolation of ['in-process', 'process']) {
    const r = await throughput(isolation, concurrency);
    out.throughput.push(r);
    const mem = r.memory.map((m) => `${(m.rssKiB / 1024).toFixed(1)}/${(m.pssKiB / 1024).toFixed(1)} MiB`).join(', ');
    console.log(
      `  tryPublishBatch(${BATCH}) → trivial.wasm, conc. ${concurrency}, ${isolation.padEnd(10)} ${fmtRate(r.median).padStart(10)}` +
        `  (min ${fmtRate(r.min)}, max ${fmtRate(r.max)})  deploy ${r.deployMs.toFixed(1)} ms` +
        (r.helperStartUs.length ? `, helper start ${r.helperStartUs.map((u) => (u / 1e3).toFixed(1)).join('/')} ms, RSS/Pss ${mem}` : ''),
    );
  }
  const [a, b] = out.throughput.slice(-2);
  console.log(`    isolated / in-process: ${((100 * b.median) / a.median).toFixed(0)} %`);
}
for (const isolation of ['in-process', 'process']) {
  const r = await latency(isolation);
  out.latency.push(r);
  console.log(
    `  one at a time, publish → ${isolation.padEnd(10)} → emit → JS: p50 ${r.p50Us.toFixed(1)} µs  p99 ${r.p99Us.toFixed(1)} µs` +
      `  (handler as measured by the deployment: p50 ${r.handlerP50Us.toFixed(1)} µs, p99 ${r.handlerP99Us.toFixed(1)} µs; ${r.samples} events)`,
  );
}
out.loadAfter = loadavg();
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, JSON.stringify(out, null, 2));
console.log(`load after ${out.loadAfter.map((l) => l.toFixed(2)).join(' ')}; JSON in ${OUT}`);
