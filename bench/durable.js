// Durable delivery through the public API (issue 6): `node bench/durable.js` after `npm run build`.
//
// One durable subscription (at-least-once, named, capacity 2 × in flight) whose sync handler returns at
// once, so every event is also acknowledged in the journal. Per fsync policy, three publishers:
//
//   window   `publish()` × WINDOW, then `await Promise.all` before the next window: every window
//            waits for its own group fsync (the naive loop; reported as it is).
//   pipeline `publish()` with up to DEPTH windows in flight: a new window starts when the oldest
//            resolved, as a producer that keeps writing while fsyncs run.
//   batch    `publishBatch(BATCH events)` with DEPTH batches in flight: one JSON encoding, one
//            crossing and one journal write per batch.
//
// A run ends when every publish resolved and the handler has seen every event (end to end).
//
// The same three on a bus without a journal (at-most-once) give the cost of at-least-once.
// Then recovery: RECOVER_N unacknowledged events left by one bus; a new bus opens the directory
// and a subscriber of the same name receives all of them.
//
// Environment: SLUICE_DURABLE_N (events per case, default 200000; `always` gets a fifth),
// SLUICE_DURABLE_WINDOW (1024), SLUICE_DURABLE_BATCH (1024), SLUICE_DURABLE_DEPTH (8),
// SLUICE_DURABLE_RECOVER (1000000, 0 skips), SLUICE_DURABLE_CASES (e.g. "batch,never"),
// SLUICE_DURABLE_MODES (e.g. "batch"), SLUICE_DURABLE_CAPACITY (subscription capacity),
// SLUICE_DURABLE_DIR (default: a new directory under os.tmpdir()).

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';
import { Bus, Context } from '../dist/index.js';

const N = Number(process.env.SLUICE_DURABLE_N ?? 200_000);
const WINDOW = Number(process.env.SLUICE_DURABLE_WINDOW ?? 1024);
const BATCH = Number(process.env.SLUICE_DURABLE_BATCH ?? 1024);
const DEPTH = Number(process.env.SLUICE_DURABLE_DEPTH ?? 8);
const RECOVER_N = Number(process.env.SLUICE_DURABLE_RECOVER ?? 1_000_000);
const CASES = (process.env.SLUICE_DURABLE_CASES ?? 'batch,never,always,none').split(',');
const ONLY = process.env.SLUICE_DURABLE_MODES?.split(',');
const CAPACITY = Number(process.env.SLUICE_DURABLE_CAPACITY ?? 2 * DEPTH * Math.max(WINDOW, BATCH));
const root = process.env.SLUICE_DURABLE_DIR ?? mkdtempSync(join(os.tmpdir(), 'sluice-bench-durable-'));
const DATA = { id: 'o1', amount: 42, note: 'x'.repeat(64) };
const hr = process.hrtime.bigint;
let dirs = 0;

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}
const us = (ns) => `${(Number(ns) / 1000).toFixed(1)} µs`;
const ms = (ns) => `${(Number(ns) / 1e6).toFixed(2)} ms`;
const lat = (ns) => (ns === undefined ? '–' : ns >= 1_000_000n ? ms(ns) : us(ns));

/** One window of `k` publishes; every 16th records call → resolve. */
function window(bus, k, lats) {
  const ps = new Array(k);
  for (let j = 0; j < k; j++) {
    if (j % 16 === 0) {
      const s = hr();
      ps[j] = bus.publish('bench', DATA).then(() => void lats.push(hr() - s));
    } else ps[j] = bus.publish('bench', DATA);
  }
  return Promise.all(ps);
}

const BATCH_EVENTS = Array.from({ length: BATCH }, () => ({ type: 'bench', data: DATA }));

/** One `publishBatch`; records call → resolve of the batch. */
function batch(bus, k, lats) {
  const s = hr();
  const events = k === BATCH ? BATCH_EVENTS : BATCH_EVENTS.slice(0, k);
  return bus.publishBatch(events).then(() => void lats.push(hr() - s));
}

/** Publishes n events in units of `size` with up to `depth` units in flight; done when every
 *  publish resolved and the handler has seen every event (`bus.handled`). */
async function drive(bus, n, size, depth, unit) {
  const target = (bus.handled ?? 0) + n;
  const lats = [];
  const inflight = new Set();
  const c0 = process.cpuUsage();
  const t0 = hr();
  for (let i = 0; i < n; i += size) {
    const p = unit(bus, Math.min(size, n - i), lats);
    inflight.add(p);
    void p.then(() => inflight.delete(p));
    if (inflight.size >= depth) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  while (bus.handled !== undefined && bus.handled < target) await new Promise((r) => setImmediate(r));
  const secs = Number(hr() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  lats.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  // CPU time of the whole process (JS thread, journal flusher, notifier) per event: unlike the
  // rate, it hardly depends on how many other processes compete for the cores.
  return { rate: n / secs, cpuUs: (cpu.user + cpu.system) / n, p50: pct(lats, 50), p99: pct(lats, 99) };
}

const ALL_MODES = {
  window: (bus, n) => drive(bus, n, WINDOW, 1, window),
  pipeline: (bus, n) => drive(bus, n, WINDOW, DEPTH, window),
  batch: (bus, n) => drive(bus, n, BATCH, DEPTH, batch),
};
const MODES = Object.fromEntries(Object.entries(ALL_MODES).filter(([m]) => !ONLY || ONLY.includes(m)));

async function run(fsync, mode, n) {
  const bus = fsync === 'none' ? new Bus() : new Bus({ journal: { dir: join(root, `d${dirs++}`), fsync } });

  // The queue holds everything in flight (CAPACITY, default 2 × in flight): without a journal a
  // full queue makes `block` publishers wait; a durable subscription never waits, but what does
  // not fit goes through its journal backlog (read back from the file: SLUICE_DURABLE_CAPACITY
  // smaller than in flight measures that).
  const opts =
    fsync === 'none' ? { capacity: CAPACITY } : { name: 'bench', deliveryGuarantee: 'at-least-once', capacity: CAPACITY };
  bus.handled = 0;
  bus.subscribe('bench', () => void bus.handled++, opts);
  await MODES[mode](bus, Math.min(n, 20_000)); // warm-up
  const r = await MODES[mode](bus, n);
  const report = await bus.close();
  return { ...r, unacknowledged: report.unacknowledged ?? 0, handled: bus.handled };
}

async function recovery(n) {
  const dir = join(root, `r${dirs++}`);
  {
    const bus = new Bus({ journal: { dir, fsync: 'never' } });
    // A handler that never finishes: everything stays unacknowledged (queued or in the journal).
    bus.subscribe('bench', () => new Promise(() => {}), { name: 'r', deliveryGuarantee: 'at-least-once', capacity: 1024 });
    await drive(bus, n, BATCH, DEPTH, batch);
    const left = await bus.close({ ctx: Context.background().withTimeout(10) });
    if (left.unacknowledged !== n) throw new Error(`expected ${n} unacknowledged, got ${left.unacknowledged}`);
  }
  const t0 = hr();
  const bus = new Bus({ journal: { dir, fsync: 'batch' } });
  const opened = hr() - t0;
  const rec = bus.stats().journal.recovered;
  let got = 0;
  let done;
  const all = new Promise((r) => (done = r));
  const t1 = hr();
  bus.subscribe('bench', () => void (++got === n && done()), { name: 'r', deliveryGuarantee: 'at-least-once', capacity: 4096 });
  await all;
  const delivered = hr() - t1;
  await bus.close();
  return { opened, delivered, rec };
}

const load1 = os.loadavg()[0];
console.log(`sluice durable bench — ${new Date().toISOString()}, node ${process.version}, ${os.cpus().length} CPUs, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log(
  `journal dir under ${root}; window ${WINDOW} publishes, batch ${BATCH} events, ${DEPTH} windows/batches in flight (pipeline, batch), subscription capacity ${CAPACITY}; data ${JSON.stringify(DATA).length} bytes of JSON`,
);
try {
  const rows = [];
  for (const fsync of CASES) {
    const n = fsync === 'always' ? Math.max(1, Math.floor(N / 5)) : N;
    for (const mode of Object.keys(MODES)) {
      const r = await run(fsync, mode, n);
      const name = fsync === 'none' ? 'at-most-once, no journal' : `at-least-once, fsync '${fsync}'`;
      rows.push({ fsync, mode, name, n, r });
      console.error(`  ${name} / ${mode}: ${Math.round(r.rate).toLocaleString('en')} events/s, ${r.cpuUs.toFixed(2)} CPU µs/event (load ${os.loadavg()[0].toFixed(2)})`);
    }
  }
  console.log('\n| case | publisher | events | events/s | CPU µs/event | latency p50 | latency p99 |\n|---|---|---|---|---|---|---|');
  for (const { name, mode, n, r } of rows) {
    const unit = mode === 'batch' ? ` (${BATCH}/call)` : '';
    console.log(
      `| ${name} | ${mode}${unit} | ${n} | ${Math.round(r.rate).toLocaleString('en')} | ${r.cpuUs.toFixed(2)} | ${lat(r.p50)} | ${lat(r.p99)} |`,
    );
  }
  for (const mode of Object.keys(MODES)) {
    const b = rows.find((x) => x.fsync === 'batch' && x.mode === mode);
    const p = rows.find((x) => x.fsync === 'none' && x.mode === mode);
    if (b && p) {
      console.log(
        `cost of at-least-once ('batch') over at-most-once, ${mode}: ${(p.r.rate / b.r.rate).toFixed(2)}× the time per event, ` +
          `${(b.r.cpuUs / p.r.cpuUs).toFixed(2)}× the CPU per event`,
      );
    }
  }
  if (RECOVER_N > 0) {
    const r = await recovery(RECOVER_N);
    console.log(
      `\nrecovery of ${RECOVER_N.toLocaleString('en')} unacknowledged events: open ${ms(r.opened)} ` +
        `(journal's own count ${r.rec.durationMs.toFixed(1)} ms, ${r.rec.unacknowledged} unacknowledged), ` +
        `delivery of all to a handler ${ms(r.delivered)} (${Math.round(RECOVER_N / (Number(r.delivered) / 1e9)).toLocaleString('en')} events/s)`,
    );
  }
  console.log(`\nload average at start ${load1.toFixed(2)}, at end ${os.loadavg()[0].toFixed(2)}`);
} finally {
  if (!process.env.SLUICE_DURABLE_DIR) rmSync(root, { recursive: true, force: true });
}
