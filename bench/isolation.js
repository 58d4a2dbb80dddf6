// Process isolation benchmarks (issue 5): the same handler in-process vs `isolation: 'process'`.
// Standalone: `npm run build && node bench/isolation.js` (needs the addon and sluice-helper).
// Knobs: SLUICE_BENCH_ROUNDS (default 5 timed rounds per case), SLUICE_BENCH_ROUND_MS (default
// 500), SLUICE_BENCH_LAT_MS (default 2000 per latency run; 0 skips the latency runs),
// SLUICE_BENCH_PUBLISHERS (default `tryPublishBatch,publishBatch,tryPublish(bytes)`),
// SLUICE_BENCH_ISOLATIONS (default `in-process,process`), SLUICE_BENCH_ISOLATION_OUT (JSON
// results; default bench/results/isolation.json).
//
//  1. Throughput: batches of 256 → trivial.wasm (crates/sandbox/tests/fixtures), counted when
//     the deployment has settled them all (acked, or failed: `notAcked` in the JSON);
//     concurrency 1 and 2; in-process vs process; CPU per event of each thread role; three
//     publishers:
//     - `tryPublishBatch`: never waits; when the queue is full it takes part of the batch and the
//       bench retries the rest after `setImmediate`. Each retry JSON-encodes the whole rest again
//       and the loop spins, so on a 2-core machine this publisher competes for CPU with the
//       consumers it waits for (measured: ~6 events encoded per event taken, docs/benchmarks.md).
//     - `publishBatch` (awaited): one encoding per batch; on a full queue it sleeps until the
//       consumer takes events (`onProgress`), leaving the CPU to the dispatcher and the helper.
//       This is the figure for the handler path; the first one is a publisher that spins.
//     - `tryPublish(bytes)`: one event per call, its data already encoded (the UTF-8 bytes of
//       the same JSON), so no JSON.stringify on the JS thread; on `false` (queue full) it awaits
//       `publish` of that event, which waits natively under `overflow: 'block'` — no spinning.
//       The JS thread's share of the CPU is smallest here, which leaves the most to the consumer
//       side: the figure for what the handler path itself can move.
//  2. Latency: one event at a time, publish → handler → emit → JS subscriber (p50/p99), and the
//     handler latency the deployment measures (dispatcher → outcome; for `process` that is the
//     round trip through the shared-memory rings).
//  3. Helper start (spawn → namespaces, compile, seccomp, READY) and memory per helper
//     (VmRSS and Pss of each helper after the throughput run).

import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, cpus } from 'node:os';
import wabtInit from 'wabt';
import { Bus } from '../dist/index.js';
import { tryPublishAll } from './publish-all.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const env = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback);
const ROUNDS = env('SLUICE_BENCH_ROUNDS', 5);
const ROUND_MS = env('SLUICE_BENCH_ROUND_MS', 500);
const LAT_MS = env('SLUICE_BENCH_LAT_MS', 2000);
const PUBLISHERS = (process.env.SLUICE_BENCH_PUBLISHERS ?? 'tryPublishBatch,publishBatch,tryPublish(bytes)').split(',');
const ISOLATIONS = (process.env.SLUICE_BENCH_ISOLATIONS ?? 'in-process,process').split(',');
const OUT = process.env.SLUICE_BENCH_ISOLATION_OUT ?? join(here, 'results', 'isolation.json');
const BATCH = 256;
const hr = process.hrtime.bigint;
const CLK_TCK = 100; // USER_HZ: /proc/*/stat counts CPU time in 1/100 s on Linux
const immediate = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const DATA = { id: 'o-1234567', amount: 42, currency: 'EUR', customer: 'c-98765' };
// The same event data, encoded once: what the `tryPublish(bytes)` publisher sends.
const BYTES = new TextEncoder().encode(JSON.stringify(DATA));

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

// CPU time (utime + stime, ms) per role: the JS thread, the deployment's threads in this process
// (in-process workers or remote dispatchers), the helper processes. CPU per event is what a
// shared, loaded machine cannot distort much (wall-clock rates it can).
function threadCpuMs(pids) {
  const out = {};
  const add = (role, ms) => void (out[role] = (out[role] ?? 0) + ms);
  const scan = (pid, roleOf) => {
    let tids = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      return; // the helper was replaced since info() was read
    }
    for (const tid of tids) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        add(roleOf(Number(tid), name), ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK);
      } catch {}
    }
  };
  scan(process.pid, (tid, name) =>
    tid === process.pid ? 'js' : name.startsWith('sluice-wasm') ? 'workers' : name.startsWith('sluice-helper') ? 'dispatchers' : 'other',
  );
  for (const pid of pids) scan(pid, (tid, name) => (name === 'sluice-epoch' ? 'helper epoch' : 'helpers'));
  return out;
}

async function throughput(isolation, concurrency, publisher) {
  const bus = new Bus({ capacity: 65536, overflow: 'block' });
  const t0 = hr();
  const dep = await bus.deploy(`t-${isolation}-${concurrency}-${publisher.replace(/\W+/g, "-")}`, trivial, { topics: ['order.created'], concurrency, isolation, capacity: 65536 });
  const deployMs = Number(hr() - t0) / 1e6;
  const events = Array.from({ length: BATCH }, () => ({ type: 'order.created', data: DATA }));
  // Every outcome counts as done: on a loaded machine a descheduled helper can push a trivial
  // handler past its 50 ms timeout (ERR_TIMEOUT), and that event will never be acked.
  const acked = () => {
    const o = dep.info().outcomes;
    return o.ack + o.retry + o.reject + Object.values(o.errors).reduce((a, b) => a + b, 0);
  };
  const run = async (n) => {
    const base = acked();
    const start = hr();
    if (publisher === 'tryPublish(bytes)') {
      for (let sent = 0; sent < n; sent++) {
        if (!bus.tryPublish('order.created', BYTES)) await bus.publish('order.created', BYTES);
      }
    }
    for (let sent = publisher === 'tryPublish(bytes)' ? n : 0; sent < n; ) {
      if (publisher === 'publishBatch') {
        await bus.publishBatch(events);
        sent += events.length;
        continue;
      }
      await tryPublishAll(bus, events, immediate);
      sent += events.length;
    }
    // Bounded: a stuck deployment must show its state, not hang the bench. Polled every
    // millisecond, not every loop turn: up to `capacity` events are still queued when the last
    // batch is in, and a JS thread spinning on `dep.info()` while they drain takes a core from
    // the threads it waits for (at most 1 ms late per round of ~500 ms).
    const deadline = Date.now() + 60_000;
    while (acked() - base < n) {
      if (Date.now() > deadline) throw new Error(`${isolation}: ${acked() - base}/${n} settled after 60 s: ${JSON.stringify(dep.info())}`);
      await sleep(1);
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
  const cpu0 = threadCpuMs(dep.info().pids);
  for (let i = 0; i < ROUNDS; i++) rates.push(n / (await run(n)));
  const info = dep.info();
  const cpu1 = threadCpuMs(info.pids);
  // ns of CPU per event, by role, over the timed rounds.
  const cpuNsPerEvent = Object.fromEntries(
    Object.keys(cpu1).map((role) => [role, Math.round(((cpu1[role] - (cpu0[role] ?? 0)) * 1e6) / (n * ROUNDS))]),
  );
  const memory = info.pids.map(memKiB);
  await dep.undeploy();
  await bus.close();
  return {
    isolation,
    concurrency,
    publisher,
    eventsPerRound: n,
    median: median(rates),
    min: Math.min(...rates),
    max: Math.max(...rates),
    deployMs,
    helperStartUs: (info.helpers ?? []).map((h) => h.startTimeUs),
    memory,
    cpuNsPerEvent,
    notAcked: info.outcomes.retry + info.outcomes.reject + Object.values(info.outcomes.errors).reduce((a, b) => a + b, 0),
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
for (const publisher of PUBLISHERS) {
  for (const concurrency of [1, 2]) {
    for (const isolation of ISOLATIONS) {
      const r = await throughput(isolation, concurrency, publisher);
      out.throughput.push(r);
      const mem = r.memory.map((m) => `${(m.rssKiB / 1024).toFixed(1)}/${(m.pssKiB / 1024).toFixed(1)} MiB`).join(', ');
      const call = { publishBatch: `await publishBatch(${BATCH})`, tryPublishBatch: `tryPublishBatch(${BATCH})` }[publisher] ?? publisher;
      const cpu = Object.entries(r.cpuNsPerEvent)
        .filter(([, ns]) => ns > 0)
        .map(([role, ns]) => `${role} ${ns}`)
        .join(', ');
      console.log(
        `  ${call.padEnd(23)} → trivial.wasm, conc. ${concurrency}, ${isolation.padEnd(10)} ${fmtRate(r.median).padStart(10)}` +
          `  (min ${fmtRate(r.min)}, max ${fmtRate(r.max)})  deploy ${r.deployMs.toFixed(1)} ms` +
          (r.helperStartUs.length ? `, helper start ${r.helperStartUs.map((u) => (u / 1e3).toFixed(1)).join('/')} ms, RSS/Pss ${mem}` : '') +
          `\n      CPU ns per event: ${cpu}`,
      );
    }
    if (ISOLATIONS.length === 2) {
      const [a, b] = out.throughput.slice(-2);
      console.log(`    isolated / in-process: ${((100 * b.median) / a.median).toFixed(0)} %`);
    }
  }
}
for (const isolation of LAT_MS > 0 ? ISOLATIONS : []) {
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
