// Rollout benchmarks (issue 4). Standalone: `npm run build:ts && node bench/rollout.js`
// (needs the native addon built). Knobs: SLUICE_BENCH_ROLLOUT_ROUNDS (default 20 rollouts per
// case), SLUICE_BENCH_LAT_MS (default 2000 per latency run), SLUICE_BENCH_LAT_RATE (default
// 20000 events/s), SLUICE_BENCH_ROLLOUT_OUT (JSON results; default bench/results/rollout.json).
//
//  1. Time from `dep.rollout(bytes, { percent: 100 })` to the candidate serving: until the promise
//     resolves, and until the first event published after it comes back from the candidate (its
//     emit reaches a JS subscriber). "precompiled": the bytes are already in the module registry;
//     "cold": each round's bytes differ (a unique custom section), so Cranelift compiles them.
//  2. Latency publish → WASM handler → emit → JS subscriber at a fixed rate, steady state vs
//     while the deployment switches version every 10 ms (rollout 100 % + promote, alternating two
//     hashes). The JS hop is in both; the difference is what swapping costs.
//  3. Throughput tryPublishBatch(256) → counting handler, no candidate vs a 5 % canary vs a 5 %
//     shadow.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, cpus } from 'node:os';
import wabtInit from 'wabt';
import { Bus } from '../dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const env = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback);
const ROUNDS = env('SLUICE_BENCH_ROLLOUT_ROUNDS', 20);
const LAT_MS = env('SLUICE_BENCH_LAT_MS', 2000);
const LAT_RATE = env('SLUICE_BENCH_LAT_RATE', 20_000);
const OUT = process.env.SLUICE_BENCH_ROLLOUT_OUT ?? join(here, 'results', 'rollout.json');
const hr = process.hrtime.bigint;
const immediate = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const wabt = await wabtInit();
function wat(text) {
  const mod = wabt.parseWat('bench.wat', text);
  try {
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}

/** Emits the event's data on `topic`, then acks. */
const counter = (topic) =>
  wat(`(module
  (import "sluice" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "${topic}")
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param $p i32) (param $len i32) (result i32)
    (local $off i32)
    (local.set $off (i32.add (local.get $p) (i32.load16_u offset=6 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=32 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=36 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=40 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=44 (local.get $p))))
    (local.set $off (i32.add (local.get $off) (i32.load offset=48 (local.get $p))))
    (drop (call $emit (i32.const 0) (i32.const ${topic.length}) (local.get $off) (i32.load offset=52 (local.get $p))))
    (i32.const 0)))`);

const trivial = (tag) =>
  wat(`(module (memory (export "memory") 1)
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_handle") (param i32 i32) (result i32) (i32.const 0))
  (func $tag (result i32) (i32.const ${tag})))`);

/** Same code, new hash: appends a custom section (id 0) named `u` holding `n`. */
function unique(bytes, n) {
  const payload = new TextEncoder().encode(`u${n}`);
  const body = new Uint8Array([1, 0x75, ...payload.slice(1)]); // name "u" then the digits
  const out = new Uint8Array(bytes.length + 2 + body.length);
  out.set(bytes);
  out.set([0, body.length], bytes.length);
  out.set(body, bytes.length + 2);
  return out;
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const fmtMs = (ns) => `${(ns / 1e6).toFixed(3)} ms`;
const fmtUs = (ns) => `${(ns / 1e3).toFixed(1)} µs`;
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s[s.length - 1] };
};

const results = { date: new Date().toISOString(), loadavg: loadavg(), cpus: cpus().length, node: process.version };

// ---- 1. rollout() → candidate serving ------------------------------------------------------
async function timeToServe() {
  const bus = new Bus();
  let lastB = -1;
  bus.subscribe('count.b', (e) => void (lastB = e.data));
  const a = counter('count.a');
  const b = counter('count.b');
  const opts = { topics: ['in.x'], emits: ['count.*'], capacity: 4096, limits: { timeoutMs: 1000 } };
  const dep = await bus.deploy('serve', a, opts);
  await (await bus.deploy('warm', b, opts)).undeploy(); // b is in the registry now
  const out = {};
  for (const [name, bytesFor] of [
    ['precompiled', () => b],
    ['cold', (i) => unique(b, i)],
  ]) {
    const resolved = [];
    const serving = [];
    for (let i = 0; i < ROUNDS; i++) {
      const bytes = bytesFor(i);
      const t0 = hr();
      await dep.rollout(bytes, { percent: 100, autoRollback: false });
      const t1 = hr();
      bus.tryPublish('in.x', i);
      while (lastB !== i) await immediate();
      const t2 = hr();
      resolved.push(Number(t1 - t0));
      serving.push(Number(t2 - t0));
      await dep.rollback();
    }
    out[name] = { resolved: stats(resolved), serving: stats(serving) };
    const r = out[name];
    console.log(
      `  rollout() ${name.padEnd(11)}: resolved p50 ${fmtMs(r.resolved.p50)} p99 ${fmtMs(r.resolved.p99)}; first event served by the candidate p50 ${fmtMs(r.serving.p50)} p99 ${fmtMs(r.serving.p99)} (${ROUNDS} rounds)`,
    );
  }
  await bus.close();
  return out;
}

// ---- 2. latency: steady vs during swaps ----------------------------------------------------
async function latency(swapping) {
  const bus = new Bus();
  const [a, b] = [counter('count.a'), counter('count.b')];
  const dep = await bus.deploy('lat', a, { topics: ['lat.in'], emits: ['count.*'], capacity: 65536, limits: { timeoutMs: 1000 } });
  const base = hr();
  const total = Math.floor((LAT_RATE * LAT_MS) / 1000);
  const lat = new Float64Array(total);
  let got = 0;
  bus.subscribe('count.*', (e) => {
    if (got < total) lat[got++] = Number(hr() - base) - e.data;
  }, { capacity: 65536 });
  let swaps = 0;
  let stop = false;
  const swapper = (async () => {
    while (swapping && !stop) {
      await dep.rollout(swaps % 2 === 0 ? b : a, { percent: 100, autoRollback: false });
      await dep.promote();
      swaps++;
      await sleep(10);
    }
  })();
  let sent = 0;
  let refused = 0;
  const t0 = hr();
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((Number(hr() - t0) * LAT_RATE) / 1e9));
      while (sent < due) {
        if (!bus.tryPublish('lat.in', Number(hr() - base))) refused++;
        sent++;
      }
      if (sent < total) setImmediate(tick);
      else resolve();
    };
    setImmediate(tick);
  });
  stop = true;
  await swapper;
  const deadline = Date.now() + 10_000;
  while (got < total - refused && Date.now() < deadline) await immediate();
  const s = stats(lat.subarray(0, got));
  const info = dep.info();
  await bus.close();
  const name = swapping ? `during swaps (${swaps} switches, every ~10 ms)` : 'steady state';
  console.log(
    `  publish → handler → JS @ ${LAT_RATE}/s ${name.padEnd(40)}: p50 ${fmtUs(s.p50)}  p90 ${fmtUs(s.p90)}  p99 ${fmtUs(s.p99)}  max ${fmtUs(s.max)}  (${s.n} samples${refused ? `, ${refused} refused` : ''}; versions ${info.versions.length})`,
  );
  return { ...s, swaps, refused, rate: LAT_RATE };
}

// ---- 3. throughput with a canary -------------------------------------------------------------
async function throughput(mode) {
  const bus = new Bus();
  const dep = await bus.deploy('tp', trivial(1), { topics: ['tp.in'], capacity: 65536, overflow: 'block', limits: { timeoutMs: 1000 } });
  if (mode !== 'none') await dep.rollout(trivial(2), { percent: 5, shadow: mode === 'shadow', autoRollback: false });
  const batch = new Array(256).fill({ type: 'tp.in', data: 42 });
  const ms = 1500;
  let sent = 0;
  const t0 = hr();
  while (Number(hr() - t0) < ms * 1e6) {
    sent += bus.tryPublishBatch(batch);
    if (sent % 4096 < 256) await immediate();
  }
  // Events handled for real: the current version's, plus a live canary's (shadow copies are extra).
  const live = (info) =>
    info.versions.filter((v) => v.role === 'current' || v.role === 'candidate').reduce((n, v) => n + v.handled, 0);
  while (live(dep.info()) < sent) await immediate();
  const elapsed = Number(hr() - t0) / 1e9;
  const info = dep.info();
  const candidate = info.versions.find((v) => v.role !== 'current');
  await bus.close();
  const rate = live(info) / elapsed;
  console.log(
    `  tryPublishBatch(256) → trivial.wasm, ${mode.padEnd(6)}: ${(rate / 1e6).toFixed(2)} M events/s (${sent} events${candidate ? `; candidate handled ${candidate.handled}` : ''}${info.shadow ? `, shadow compared ${info.shadow.compared} skipped ${info.shadow.skipped}` : ''})`,
  );
  return { rate, sent, candidateHandled: candidate?.handled ?? 0, shadow: info.shadow };
}

console.log(`rollout bench — ${results.date}, load average ${results.loadavg.map((l) => l.toFixed(2)).join(' ')}`);
results.timeToServe = await timeToServe();
results.latencySteady = await latency(false);
results.latencySwapping = await latency(true);
results.latencySteady2 = await latency(false);
results.throughput = {};
for (const mode of ['none', 'canary', 'shadow', 'none']) {
  const r = await throughput(mode);
  (results.throughput[mode] ??= []).push(r);
}
results.loadavgAfter = loadavg();
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, JSON.stringify(results, null, 2));
console.log(`load average after ${results.loadavgAfter.map((l) => l.toFixed(2)).join(' ')}; results in ${OUT}`);
