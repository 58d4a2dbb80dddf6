// sluice benchmarks: `npm run bench` (= `npm run build && node bench/run.js`).
//
// Every figure is measured in this one process, on this machine, against peers measured in the
// same run: node:events, eventemitter3 and emittery (`await emit`); for WASM handlers (bench/wasm.js)
// V8's own WebAssembly in-process and, if installed, the Extism JS SDK. Plain process.hrtime.bigint()
// loops: one warm-up round, then ROUNDS timed rounds, each sized to take about ROUND_MS; the
// median round is reported (min–max in the JSON).
//
// Environment:
//   SLUICE_BENCH_ROUNDS=5        timed rounds per case
//   SLUICE_BENCH_ROUND_MS=250    target length of one round
//   SLUICE_BENCH_LAT_MS=2000     length of each latency run
//   SLUICE_BENCH_RUST=1          also run `cargo bench -p sluice-core --bench route_churn|filters`
//                                and `cargo run --release -p sluice-sandbox --example bench`
//   SLUICE_BENCH_WASM=0          skip the WASM handler benchmarks (bench/wasm.js)
//   SLUICE_BENCH_OUT=path        where the JSON goes (default bench/results/latest.json)

import { EventEmitter } from 'node:events';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import EventEmitter3 from 'eventemitter3';
import Emittery from 'emittery';
import { Bus } from '../dist/index.js';
import { wasmBenches } from './wasm.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const ROUNDS = envInt('SLUICE_BENCH_ROUNDS', 5);
const ROUND_MS = envInt('SLUICE_BENCH_ROUND_MS', 250);
const LAT_MS = envInt('SLUICE_BENCH_LAT_MS', 2000);
const OUT = process.env.SLUICE_BENCH_OUT ?? join(here, 'results', 'latest.json');
const RUST = process.env.SLUICE_BENCH_RUST === '1';
const WASM = process.env.SLUICE_BENCH_WASM !== '0';

const TOPIC = 'order.created';
const DATA = Object.freeze({ id: 'o1', amount: 42 });
const DATA_BYTES = new TextEncoder().encode(JSON.stringify(DATA));
const BATCH = 256;

const hr = process.hrtime.bigint;
const immediate = () => new Promise((resolve) => setImmediate(resolve));

function envInt(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
  return n;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmtRate(r) {
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)} M/s`;
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)} k/s`;
  return `${r.toFixed(0)} /s`;
}

function fmtNs(ns) {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${ns.toFixed(0)} ns`;
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ---------------------------------------------------------------------------------------------
// Harness: `round(n)` runs n events and returns the elapsed ns (it may be async). The first call
// calibrates n so that a round lasts about ROUND_MS; then one warm-up round and ROUNDS timed ones.

const results = [];

async function measure(group, name, round, { start = 1000, unit = 1, note } = {}) {
  let n = start;
  for (;;) {
    const ns = Number(await round(n));
    if (ns >= ROUND_MS * 1e6 * 0.25 || n >= 1e9) {
      n = Math.max(unit, Math.round((n * (ROUND_MS * 1e6)) / Math.max(ns, 1) / unit) * unit);
      break;
    }
    n *= 4;
  }
  await round(n); // warm-up at full size
  const rates = [];
  const cpu = [];
  for (let r = 0; r < ROUNDS; r++) {
    const c0 = process.cpuUsage();
    const ns = Number(await round(n));
    const c = process.cpuUsage(c0);
    rates.push((n * 1e9) / ns);
    cpu.push(((c.user + c.system) * 1e3) / n);
  }
  const res = {
    group,
    name,
    eventsPerRound: n,
    rounds: rates.length,
    median: median(rates),
    min: Math.min(...rates),
    max: Math.max(...rates),
    nsPerEvent: 1e9 / median(rates),
    // CPU time of this process (all threads) per event: less sensitive than wall time to other
    // processes competing for the cores.
    cpuNsPerEvent: median(cpu),
    note,
  };
  results.push(res);
  console.log(
    `  ${name.padEnd(58)} ${fmtRate(res.median).padStart(11)}  ${fmtNs(res.nsPerEvent).padStart(9)}/event  cpu ${fmtNs(res.cpuNsPerEvent).padStart(9)}  (${fmtRate(res.min)} … ${fmtRate(res.max)})`,
  );
  return res;
}

function find(name) {
  const r = results.find((x) => x.name === name);
  if (!r) throw new Error(`no result named ${name}`);
  return r;
}

/** Waits (yielding to the event loop) until `cond()` holds; throws after `ms`. */
async function until(cond, ms = 30_000, what = 'condition') {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await immediate();
  }
}

// ---------------------------------------------------------------------------------------------
// Machine

function machine() {
  const cpus = os.cpus();
  let lscpuModel;
  try {
    const out = execFileSync('lscpu', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    lscpuModel = /Model name:\s*(.+)/.exec(out)?.[1]?.trim();
  } catch {}
  let sluiceVersion;
  try {
    sluiceVersion = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
  } catch {}
  let commit;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {}
  return {
    date: new Date().toISOString(),
    cpu: lscpuModel ?? cpus[0]?.model ?? 'unknown',
    cores: os.availableParallelism?.() ?? cpus.length,
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    v8: process.versions.v8,
    sluice: sluiceVersion,
    commit,
    loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

// ---------------------------------------------------------------------------------------------
// 1. Peers: synchronous listeners (context only: they never leave the JS thread)

async function peersSync() {
  console.log('\nSync listener, 1 listener, emit in a loop (peers; context)');
  {
    const ee = new EventEmitter();
    let seen = 0;
    ee.on(TOPIC, (d) => {
      seen += d.amount;
    });
    await measure('sync', 'node:events emit', (n) => {
      const t0 = hr();
      for (let i = 0; i < n; i++) ee.emit(TOPIC, DATA);
      return hr() - t0;
    }, { start: 100_000 });
    if (seen === 0) throw new Error('node:events listener never ran');
  }
  {
    const ee = new EventEmitter3();
    let seen = 0;
    ee.on(TOPIC, (d) => {
      seen += d.amount;
    });
    await measure('sync', 'eventemitter3 emit', (n) => {
      const t0 = hr();
      for (let i = 0; i < n; i++) ee.emit(TOPIC, DATA);
      return hr() - t0;
    }, { start: 100_000 });
    if (seen === 0) throw new Error('eventemitter3 listener never ran');
  }
}

// ---------------------------------------------------------------------------------------------
// 2. tryPublish into the core (the publisher's cost; the consumer runs between rounds)

async function intoCore() {
  console.log('\nsluice: publish into the core (1 subscriber, capacity 65536, drop-oldest; consumer drains between rounds)');
  const bus = new Bus();
  let handled = 0;
  const sub = bus.subscribe(TOPIC, () => {
    handled++;
  }, { capacity: 65536, overflow: 'drop-oldest', name: 'bench' });
  const drained = () => until(() => sub.stats().depth === 0, 30_000, 'the subscriber to drain');

  const single = await measure('core', 'sluice tryPublish (JSON data), single', async (n) => {
    await drained();
    const t0 = hr();
    for (let i = 0; i < n; i++) bus.tryPublish(TOPIC, DATA);
    return hr() - t0;
  }, { start: 1000, note: 'includes JSON.stringify of the data and one N-API call per event' });

  const bytes = await measure('core', 'sluice tryPublish (pre-encoded Uint8Array), single', async (n) => {
    await drained();
    const t0 = hr();
    for (let i = 0; i < n; i++) bus.tryPublish(TOPIC, DATA_BYTES);
    return hr() - t0;
  }, { start: 1000, note: 'no JSON.stringify: the N-API crossing + core cost alone' });

  const events = Array.from({ length: BATCH }, () => ({ type: TOPIC, data: DATA }));
  const batched = await measure('core', `sluice tryPublishBatch (${BATCH} events/call)`, async (n) => {
    await drained();
    const calls = n / BATCH;
    const t0 = hr();
    for (let i = 0; i < calls; i++) bus.tryPublishBatch(events);
    return hr() - t0;
  }, { start: BATCH * 16, unit: BATCH, note: 'one JSON.stringify of the array and one N-API call per batch' });

  const packedEvents = Array.from({ length: BATCH }, () => ({ type: TOPIC, data: DATA_BYTES }));
  const packed = await measure('core', `sluice tryPublishBatch (${BATCH} pre-encoded Uint8Array events/call)`, async (n) => {
    await drained();
    const calls = n / BATCH;
    const t0 = hr();
    for (let i = 0; i < calls; i++) bus.tryPublishBatch(packedEvents);
    return hr() - t0;
  }, { start: BATCH * 16, unit: BATCH, note: 'no JSON.stringify: the byte arrays packed into one buffer, one N-API call per batch' });

  // What JSON data costs before sluice sees it: a publisher of objects cannot be faster.
  let encoded = 0;
  const stringify = await measure('core', 'floor: JSON.stringify of the event data alone (no sluice)', (n) => {
    const t0 = hr();
    for (let i = 0; i < n; i++) encoded += JSON.stringify(DATA).length;
    return hr() - t0;
  }, { start: 1000, note: 'the encoding every tryPublish of an object pays' });
  if (encoded === 0) throw new Error('JSON.stringify produced nothing');

  {
    const empty = new Bus();
    await measure('core', 'sluice tryPublish, no subscriber (route miss)', (n) => {
      const t0 = hr();
      for (let i = 0; i < n; i++) empty.tryPublish(TOPIC, DATA);
      return hr() - t0;
    }, { start: 1000, note: 'floor: encode + N-API call + route lookup, nothing queued' });
    await empty.close();
  }

  await drained();
  const st = sub.stats();
  sub.unsubscribe();
  await bus.close();
  if (handled === 0) throw new Error('the into-core subscriber never ran');
  return { single, bytes, batched, packed, stringify, subscriberStats: st };
}

// ---------------------------------------------------------------------------------------------
// 3. End to end: publish → JS subscriber handled. The publisher and the subscriber share the JS
// thread, so the publisher keeps at most `window` events in flight (below the queue capacity: no
// drops) and yields to the event loop whenever the window is full; the core wakes the
// subscriber, which takes batches and runs the handler. Rate = events handled / elapsed.

async function e2eSluice(name, { handler, concurrency, batch = false, window = 2048, capacity = 4096, group = 'e2e' }) {
  const bus = new Bus({ capacity, overflow: 'block' });
  const state = { handled: 0 };
  const sub = bus.subscribe(TOPIC, handler(state), { concurrency });
  const events = Array.from({ length: BATCH }, () => ({ type: TOPIC, data: DATA }));
  let refused = 0;
  const res = await measure(group, name, async (n) => {
    const base = state.handled;
    let sent = 0;
    const t0 = hr();
    while (sent < n) {
      if (sent - (state.handled - base) >= window) {
        await immediate();
        continue;
      }
      if (batch) {
        const k = Math.min(BATCH, n - sent);
        const took = bus.tryPublishBatch(k === BATCH ? events : events.slice(0, k));
        if (took !== k) refused += k - took;
        sent += k;
      } else {
        const stop = Math.min(n, sent + window - (sent - (state.handled - base)));
        for (; sent < stop; sent++) if (!bus.tryPublish(TOPIC, DATA)) refused++;
      }
    }
    while (state.handled - base < n - refused) await immediate();
    return hr() - t0;
  }, { start: 4096, unit: batch ? BATCH : 1 });
  const st = bus.stats();
  sub.unsubscribe();
  await bus.close();
  res.dropped = st.dropped;
  res.refused = refused;
  if (refused || st.dropped) console.log(`    ! ${refused} refused, ${st.dropped} dropped (should be 0)`);
  return res;
}

async function e2e() {
  console.log('\nEnd to end: publish → async JS handler, events handled per second');
  const emittery = await (async () => {
    const em = new Emittery();
    let handled = 0;
    em.on(TOPIC, async (d) => {
      handled += d.amount > 0 ? 1 : 0;
    });
    return measure('e2e-async', 'emittery await emit, 1 async listener', async (n) => {
      const t0 = hr();
      for (let i = 0; i < n; i++) await em.emit(TOPIC, DATA);
      return hr() - t0;
    }, { start: 10_000 });
  })();

  const asyncHandler = (s) => async (e) => {
    if (e.data.amount > 0) s.handled++;
  };
  const a1 = await e2eSluice('sluice tryPublish → async handler, concurrency 1', { handler: asyncHandler, concurrency: 1, group: 'e2e-async' });
  const a64 = await e2eSluice('sluice tryPublish → async handler, concurrency 64', { handler: asyncHandler, concurrency: 64, group: 'e2e-async' });
  const ab = await e2eSluice(`sluice tryPublishBatch(${BATCH}) → async handler, conc. 64`, { handler: asyncHandler, concurrency: 64, batch: true, group: 'e2e-async' });

  // The natural publisher: `await bus.publish()` under 'block', backpressure from the core.
  const awaited = await (async () => {
    const bus = new Bus({ capacity: 4096, overflow: 'block' });
    let handled = 0;
    const sub = bus.subscribe(TOPIC, async (e) => {
      if (e.data.amount > 0) handled++;
    }, { concurrency: 64 });
    const r = await measure('e2e-async', 'sluice await publish (block) → async handler, conc. 64', async (n) => {
      const base = handled;
      const t0 = hr();
      for (let i = 0; i < n; i++) await bus.publish(TOPIC, DATA);
      while (handled - base < n) await immediate();
      return hr() - t0;
    }, { start: 4096 });
    r.dropped = bus.stats().dropped;
    sub.unsubscribe();
    await bus.close();
    return r;
  })();

  console.log('\nEnd to end: publish → sync JS handler (sluice), vs sync emit (peers above)');
  const syncHandler = (s) => (e) => {
    if (e.data.amount > 0) s.handled++;
  };
  const s1 = await e2eSluice('sluice tryPublish → sync handler', { handler: syncHandler, concurrency: 1, group: 'e2e-sync' });
  const sb = await e2eSluice(`sluice tryPublishBatch(${BATCH}) → sync handler`, { handler: syncHandler, concurrency: 1, batch: true, group: 'e2e-sync' });
  return { emittery, a1, a64, ab, awaited, s1, sb };
}

// ---------------------------------------------------------------------------------------------
// 4. Latency at half the saturating rate. The publisher paces itself on the event loop: on each
// turn it publishes the events that are due by now (rate × elapsed), each carrying its own
// hrtime stamp; the handler records hrtime − stamp. The saturating rate is the single-event
// end-to-end sync rate measured above.

async function latencyRun(name, rate, ms, publish, subscribe) {
  const total = Math.max(1000, Math.floor((rate * ms) / 1000));
  const lat = new Float64Array(total);
  let got = 0;
  const base = hr();
  const done = subscribe((stamp) => {
    if (got < total) lat[got++] = Number(hr() - base) - stamp;
  });
  let sent = 0;
  let turns = 0;
  let refused = 0;
  const t0 = hr();
  await new Promise((resolve) => {
    const tick = () => {
      turns++;
      const due = Math.min(total, Math.floor((Number(hr() - t0) * rate) / 1e9));
      while (sent < due) {
        if (!publish(Number(hr() - base))) refused++;
        sent++;
      }
      if (sent < total) setImmediate(tick);
      else resolve();
    };
    setImmediate(tick);
  });
  const deadline = Date.now() + 10_000;
  while (got < total - refused && Date.now() < deadline) await immediate();
  const elapsed = Number(hr() - t0) / 1e9;
  await done();
  const sorted = Array.from(lat.subarray(0, got)).sort((a, b) => a - b);
  const res = {
    group: 'latency',
    name,
    targetRate: rate,
    achievedRate: got / elapsed,
    samples: got,
    refused,
    eventsPerTurn: sent / turns,
    p50: pct(sorted, 50),
    p90: pct(sorted, 90),
    p99: pct(sorted, 99),
    p999: pct(sorted, 99.9),
    max: sorted[sorted.length - 1],
  };
  results.push(res);
  console.log(
    `  ${name.padEnd(44)} @ ${fmtRate(rate).padStart(10)}: p50 ${fmtNs(res.p50).padStart(8)}  p90 ${fmtNs(res.p90).padStart(8)}  p99 ${fmtNs(res.p99).padStart(8)}  p99.9 ${fmtNs(res.p999).padStart(8)}  (${got} samples, ${res.eventsPerTurn.toFixed(1)} events/turn${refused ? `, ${refused} refused` : ''})`,
  );
  return res;
}

async function latency(saturating) {
  const rate = Math.max(1000, Math.round(saturating / 2));
  console.log(`\nLatency publish → handler at half the saturating rate (saturating = ${fmtRate(saturating)}, sluice tryPublish → sync handler)`);
  const bus = new Bus();
  const sluice = await latencyRun('sluice tryPublish → sync handler', rate, LAT_MS, (stamp) => bus.tryPublish(TOPIC, { id: 'o1', amount: 42, t: stamp }), (record) => {
    const sub = bus.subscribe(TOPIC, (e) => record(e.data.t), { capacity: 65536, overflow: 'block' });
    return async () => sub.unsubscribe();
  });
  // The same at fixed low rates: the wake-up path alone, without a backlog.
  const fixed = [];
  for (const r of [1000, 10_000]) {
    if (r >= rate) continue;
    fixed.push(
      await latencyRun(`sluice tryPublish → sync handler (fixed rate)`, r, Math.min(LAT_MS, 1000), (stamp) => bus.tryPublish(TOPIC, { id: 'o1', amount: 42, t: stamp }), (record) => {
        const sub = bus.subscribe(TOPIC, (e) => record(e.data.t), { capacity: 65536, overflow: 'block' });
        return async () => sub.unsubscribe();
      }),
    );
  }
  // Reference: the same pacing with the event handed over by setImmediate (pure JS, no core):
  // the floor that any handoff through the event loop pays on this machine.
  let sink;
  const hop = await latencyRun('reference: setImmediate handoff (no core)', rate, LAT_MS, (stamp) => {
    setImmediate(sink, stamp);
    return true;
  }, (record) => {
    sink = record;
    return async () => {};
  });
  await bus.close();
  return { sluice, hop, fixed };
}

// ---------------------------------------------------------------------------------------------
// 5. Rust benches (opt-in: they compile the core in release mode)

function rustBenches() {
  const out = {};
  for (const b of ['route_churn', 'filters', 'publish']) {
    console.log(`\n$ cargo bench -p sluice-core --bench ${b}`);
    const t0 = Date.now();
    const r = spawnSync('cargo', ['bench', '-p', 'sluice-core', '--bench', b], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 15 * 60_000,
    });
    const stdout = r.stdout ?? '';
    process.stdout.write(stdout);
    if (r.status !== 0) {
      process.stdout.write((r.stderr ?? '').split('\n').slice(-20).join('\n') + '\n');
      console.log(`  (cargo bench --bench ${b} failed: status ${r.status}${r.error ? `, ${r.error.message}` : ''})`);
    }
    out[b] = { status: r.status, seconds: (Date.now() - t0) / 1000, stdout };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

function table(rows, headers) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => '| ' + cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
  return [line(headers), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)].join('\n');
}

async function main() {
  const started = Date.now();
  const m = machine();
  console.log(`sluice bench — ${m.date}`);
  console.log(`cpu: ${m.cpu} × ${m.cores}, ${m.memGiB} GiB, ${m.platform}`);
  console.log(`node ${m.node} (V8 ${m.v8}), sluice ${m.sluice}${m.commit ? ` @ ${m.commit}` : ''}, load average ${m.loadavgAtStart.join(' ')}`);
  console.log(`${ROUNDS} rounds of ~${ROUND_MS} ms after a warm-up; medians`);
  if (m.loadavgAtStart[0] > m.cores * 0.75) {
    console.log(`warning: load average ${m.loadavgAtStart[0]} on ${m.cores} cores: other processes compete for the CPU; wall-clock figures will be low and latency tails long (see the cpu/event column)`);
  }

  await peersSync();
  const core = await intoCore();
  const e = await e2e();
  const lat = await latency(e.s1.median);
  const wasm = WASM
    ? await wasmBenches({ measure, immediate, latencyRun, fmtRate, fmtNs, root, rust: RUST, latMs: LAT_MS })
    : undefined;
  const rust = RUST ? rustBenches() : undefined;

  const targets = [
    ['tryPublish single ≥ 5 M events/s (JSON data)', `${fmtRate(core.single.median)} (JSON.stringify alone: ${fmtRate(core.stringify.median)})`, core.single.median >= 5e6],
    ['tryPublish single ≥ 5 M events/s (pre-encoded bytes)', fmtRate(core.bytes.median), core.bytes.median >= 5e6],
    [`tryPublishBatch(${BATCH}) ≥ 20 M events/s (JSON data)`, fmtRate(core.batched.median), core.batched.median >= 20e6],
    [`tryPublishBatch(${BATCH}) ≥ 20 M events/s (pre-encoded bytes)`, fmtRate(core.packed.median), core.packed.median >= 20e6],
    ['async e2e ≥ 2× emittery (concurrency 1)', `${(e.a1.median / e.emittery.median).toFixed(2)}×`, e.a1.median >= 2 * e.emittery.median],
    ['async e2e ≥ 2× emittery (concurrency 64)', `${(e.a64.median / e.emittery.median).toFixed(2)}×`, e.a64.median >= 2 * e.emittery.median],
    [`async e2e ≥ 2× emittery (batch ${BATCH}, conc. 64)`, `${(e.ab.median / e.emittery.median).toFixed(2)}×`, e.ab.median >= 2 * e.emittery.median],
    ['latency p99 < 50 µs at half saturation', fmtNs(lat.sluice.p99), lat.sluice.p99 < 50_000],
    ...(wasm?.targets ?? []),
  ].map(([t, v, ok]) => [t, v, ok ? 'met' : 'MISSED']);

  const nodeEvents = find('node:events emit').median;
  const ratios = [
    ['sluice async e2e (conc. 1) / emittery await emit', e.a1.median / e.emittery.median],
    ['sluice async e2e (conc. 64) / emittery await emit', e.a64.median / e.emittery.median],
    [`sluice async e2e (batch ${BATCH}) / emittery await emit`, e.ab.median / e.emittery.median],
    ['sluice await publish e2e / emittery await emit', e.awaited.median / e.emittery.median],
    ['sluice sync e2e / node:events emit', e.s1.median / nodeEvents],
    [`sluice sync e2e (batch ${BATCH}) / node:events emit`, e.sb.median / nodeEvents],
    ['sluice sync e2e / eventemitter3 emit', e.s1.median / find('eventemitter3 emit').median],
    ['sluice tryPublish single / node:events emit', core.single.median / nodeEvents],
    ...(wasm?.ratios ?? []),
  ].map(([k, v]) => [k, `${v.toFixed(3)}×`]);

  console.log('\nSummary (median of rounds)');
  console.log(table(results.filter((r) => r.group !== 'latency').map((r) => [r.group, r.name, fmtRate(r.median), fmtNs(r.nsPerEvent), fmtNs(r.cpuNsPerEvent)]), ['group', 'case', 'events/s', 'wall/event', 'cpu/event']));
  console.log();
  console.log(table(results.filter((r) => r.group === 'latency').map((r) => [r.name, fmtRate(r.targetRate), fmtNs(r.p50), fmtNs(r.p90), fmtNs(r.p99), fmtNs(r.p999), fmtNs(r.max)]), ['latency', 'rate', 'p50', 'p90', 'p99', 'p99.9', 'max']));
  console.log();
  console.log(table(ratios, ['ratio (same run)', 'value']));
  console.log();
  console.log(table(targets, ['target (issues 2, 3)', 'measured', '']));

  const seconds = (Date.now() - started) / 1000;
  m.loadavgAtEnd = os.loadavg().map((x) => +x.toFixed(2));
  console.log(`\nload average at end ${m.loadavgAtEnd.join(' ')}; bench took ${seconds.toFixed(1)} s`);

  const json = {
    machine: m,
    settings: { rounds: ROUNDS, roundMs: ROUND_MS, latencyMs: LAT_MS, batch: BATCH, event: DATA },
    results,
    ratios: Object.fromEntries(ratios),
    targets: targets.map(([target, measured, status]) => ({ target, measured, status })),
    intoCoreSubscriberStats: core.subscriberStats,
    wasm: wasm && { envelopeBytes: wasm.envelopeBytes, extism: wasm.extism?.skipped ? wasm.extism : { version: wasm.extism?.version }, rust: wasm.rust },
    rust,
    seconds,
  };
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify(json, null, 2) + '\n');
  console.log(`results written to ${OUT}`);
}

await main();
