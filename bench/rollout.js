// Rollout benchmarks (issue 4). Standalone: `npm run build:ts && node bench/rollout.js`
// (needs the native addon built). Knobs: SLUICE_BENCH_ROLLOUT_ROUNDS (default 20 rollouts per
// case), SLUICE_BENCH_LAT_MS (default 4000: the whole latency run), SLUICE_BENCH_LAT_WINDOW_MS
// (default 200), SLUICE_BENCH_LAT_RATE (default 5000 events/s), SLUICE_BENCH_ROLLOUT_OUT (JSON
// results; default bench/results/rollout.json).
//
//  1. Time from `dep.rollout(bytes, { percent: 100 })` to the candidate serving: until the promise
//     resolves, and until the first event published after it comes back from the candidate (its
//     emit reaches a JS subscriber). "precompiled": the bytes are already in the module registry;
//     "cold": each round's bytes differ (a unique custom section), so Cranelift compiles them.
//  2. Latency publish → WASM handler on the worker (the worker's clock, through lifecycle
//     records) at a fixed rate, in interleaved steady and swapping windows (the deployment
//     switches version every 10 ms in the latter); the p99 spike is swapping − steady.
//  3. Throughput tryPublishBatch(256) → counting handler, no candidate vs a 5 % canary vs a 5 %
//     shadow.
//  4. Section 1 for an `isolation: 'process'` deployment (concurrency 1, then 2): rollout() starts
//     the candidate's helper processes (spawn, namespaces, compile inside the helper, lockdown)
//     before it resolves; every round starts new helpers (the previous candidate's were closed).
//
// SLUICE_BENCH_ROLLOUT_SECTIONS: comma list of sections to run (serve, latency, throughput,
// isolated); default all.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, cpus } from 'node:os';
import { Bus } from '../dist/index.js';
import { wat } from './wat.js';

const here = dirname(fileURLToPath(import.meta.url));
const env = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback);
const ROUNDS = env('SLUICE_BENCH_ROLLOUT_ROUNDS', 20);
const LAT_MS = env('SLUICE_BENCH_LAT_MS', 4000);
const LAT_RATE = env('SLUICE_BENCH_LAT_RATE', 5000);
const OUT = process.env.SLUICE_BENCH_ROLLOUT_OUT ?? join(here, 'results', 'rollout.json');
const hr = process.hrtime.bigint;
const immediate = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), p999: pct(s, 99.9), max: s[s.length - 1] };
};

const SECTIONS = (process.env.SLUICE_BENCH_ROLLOUT_SECTIONS ?? 'serve,latency,throughput,isolated').split(',');
const results = { date: new Date().toISOString(), loadavg: loadavg(), cpus: cpus().length, node: process.version };

/**
 * ROUNDS rollouts of `bytesFor(i)` to 100 % and back: how long until `rollout()` resolved and
 * until the candidate served event `i` (`lastServed()` is the last number it handled).
 */
async function timeRollouts(bus, dep, bytesFor, lastServed) {
  const resolved = [];
  const serving = [];
  for (let i = 0; i < ROUNDS; i++) {
    const bytes = bytesFor(i);
    const t0 = hr();
    await dep.rollout(bytes, { percent: 100, autoRollback: false });
    const t1 = hr();
    bus.tryPublish('in.x', i);
    while (lastServed() !== i) await immediate();
    const t2 = hr();
    resolved.push(Number(t1 - t0));
    serving.push(Number(t2 - t0));
    await dep.rollback();
  }
  return { resolved: stats(resolved), serving: stats(serving) };
}

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
    out[name] = await timeRollouts(bus, dep, bytesFor, () => lastB);
    const r = out[name];
    console.log(
      `  rollout() ${name.padEnd(11)}: resolved p50 ${fmtMs(r.resolved.p50)} p99 ${fmtMs(r.resolved.p99)}; first event served by the candidate p50 ${fmtMs(r.serving.p50)} p99 ${fmtMs(r.serving.p99)} (${ROUNDS} rounds)`,
    );
  }
  await bus.close();
  return out;
}

// ---- 2. latency: steady vs during swaps, interleaved -------------------------------------------
// One deployment, one run. Time is cut into windows that alternate steady / swapping (ABBA); in a
// swapping window the deployment switches version every 10 ms (rollout 100 % + promote, two
// hashes). Each event's id indexes its publish time; the worker stamps the lifecycle records
// `handlerStart` (took the event) and `handlerEnd` (its version returned) with its own clock, and
// an observer collects them — so the figures are publish → handler on the worker, without the
// trip back to JS. Events are classed by the window they were published in: noise from the
// machine lands on both kinds alike. `cargo run --release -p sluice-sandbox --example
// rollout_latency` measures the same without Node.
const LAT_WINDOW_MS = env('SLUICE_BENCH_LAT_WINDOW_MS', 200);
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const swappingWindow = (k) => (k % 2 === 1) !== (Math.floor(k / 2) % 2 === 1);

async function latency() {
  const total = Math.floor((LAT_RATE * LAT_MS) / 1000);
  const windows = Math.max(2, Math.round(LAT_MS / LAT_WINDOW_MS / 2) * 2);
  const sentAt = new Float64Array(total);
  const windowOf = new Int32Array(total);
  const at = { handlerStart: new Float64Array(total).fill(NaN), handlerEnd: new Float64Array(total).fill(NaN) };
  const take = (kind) => (r) => {
    const n = Number(r.id.slice(1));
    if (r.id[0] === 'l' && n < total) at[kind][n] = r.timeUs;
  };
  const bus = new Bus({ observers: [{ name: 'lat', handlerStart: take('handlerStart'), handlerEnd: take('handlerEnd') }] });
  const [a, b] = [counter('count.a'), counter('count.b')];
  const dep = await bus.deploy('lat', a, { topics: ['lat.in'], emits: ['count.*'], capacity: 65536, limits: { timeoutMs: 1000 } });
  await dep.rollout(b, { percent: 100, autoRollback: false });
  await dep.promote();
  await dep.rollback();
  const t0 = hr();
  const windowNow = () => Math.floor(Number(hr() - t0) / 1e6 / (LAT_MS / windows));
  let swaps = 0;
  let stop = false;
  const swapper = (async () => {
    while (!stop) {
      const k = windowNow();
      if (k < windows && swappingWindow(k)) {
        await dep.rollout(swaps % 2 === 0 ? b : a, { percent: 100, autoRollback: false });
        await dep.promote();
        swaps++;
      }
      await sleep(10);
    }
  })();
  let sent = 0;
  let refused = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((Number(hr() - t0) * LAT_RATE) / 1e9));
      while (sent < due) {
        windowOf[sent] = windowNow();
        sentAt[sent] = nowUs();
        if (!bus.tryPublish('lat.in', sent, { id: `l${sent}` })) refused++;
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
  while (at.handlerEnd.filter((x) => !Number.isNaN(x)).length < total - refused && Date.now() < deadline) await sleep(5);
  await bus.close();
  const out = { rate: LAT_RATE, windows, windowMs: LAT_MS / windows, swaps, refused };
  console.log(`  ${LAT_RATE}/s for ${LAT_MS} ms in ${windows} windows of ${out.windowMs} ms (steady / swapping, ABBA); ${swaps} switches${refused ? `, ${refused} refused` : ''}`);
  for (const kind of ['handlerStart', 'handlerEnd']) {
    const pick = (swap) => {
      const xs = [];
      for (let i = 0; i < total; i++) if (swappingWindow(windowOf[i]) === swap && !Number.isNaN(at[kind][i])) xs.push((at[kind][i] - sentAt[i]) * 1e3);
      return stats(xs);
    };
    const steady = pick(false);
    const swapping = pick(true);
    const spike = swapping.p99 - steady.p99;
    out[kind] = { steady, swapping, spikeP99: spike };
    for (const [name, s] of [['steady', steady], ['swapping', swapping]]) {
      console.log(
        `  publish → ${kind} (worker clock), ${name.padEnd(8)}: p50 ${fmtUs(s.p50)}  p99 ${fmtUs(s.p99)}  p99.9 ${fmtUs(s.p999)}  max ${fmtUs(s.max)}  (${s.n})`,
      );
    }
    console.log(`  publish → ${kind}: p99 spike (swapping − steady) ${fmtUs(spike)}`);
  }
  return out;
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

// ---- 4. rollout() → candidate serving, isolation: 'process' ----------------------------------
async function timeToServeIsolated(concurrency) {
  const bus = new Bus();
  let lastB = -1;
  bus.subscribe('count.b', (e) => void (lastB = e.data));
  const opts = { topics: ['in.x'], emits: ['count.*'], capacity: 4096, limits: { timeoutMs: 1000 }, concurrency, isolation: 'process' };
  const dep = await bus.deploy('serve-isolated', counter('count.a'), opts);
  const b = counter('count.b');
  const r = { concurrency, ...(await timeRollouts(bus, dep, () => b, () => lastB)) };
  await bus.close();
  console.log(
    `  rollout() isolated, ${concurrency} helper(s) per version: resolved p50 ${fmtMs(r.resolved.p50)} p99 ${fmtMs(r.resolved.p99)}; first event served by the candidate p50 ${fmtMs(r.serving.p50)} p99 ${fmtMs(r.serving.p99)} (${ROUNDS} rounds)`,
  );
  return r;
}

console.log(`rollout bench — ${results.date}, load average ${results.loadavg.map((l) => l.toFixed(2)).join(' ')}`);
if (SECTIONS.includes('serve')) results.timeToServe = await timeToServe();
if (SECTIONS.includes('latency')) results.latency = await latency();
if (SECTIONS.includes('throughput')) {
  results.throughput = {};
  for (const mode of ['none', 'canary', 'shadow', 'none']) {
    const r = await throughput(mode);
    (results.throughput[mode] ??= []).push(r);
  }
}
if (SECTIONS.includes('isolated')) results.timeToServeIsolated = [await timeToServeIsolated(1), await timeToServeIsolated(2)];
results.loadavgAfter = loadavg();
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, JSON.stringify(results, null, 2));
console.log(`load average after ${results.loadavgAfter.map((l) => l.toFixed(2)).join(' ')}; results in ${OUT}`);
