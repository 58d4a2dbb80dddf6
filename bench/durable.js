// Durable delivery through the public API (issue 6): `node bench/durable.js` after `npm run build`.
//
//   1. publish throughput and latency per fsync policy, to one durable (at-least-once, named)
//      subscription whose handler acknowledges at once; publishes are pipelined (WINDOW
//      `publish()` promises in flight), which is how group commit pays off.
//   2. the same load at-most-once on a bus without a journal: the cost of at-least-once.
//   3. recovery: RECOVER_N unacknowledged events left by one bus; a new bus opens the directory
//      (recovery) and a subscriber of the same name receives all of them.
//
// Environment: SLUICE_DURABLE_N (events per policy, default 200000; `always` gets a fifth),
// SLUICE_DURABLE_WINDOW (default 1024), SLUICE_DURABLE_RECOVER (default 1000000, 0 skips),
// SLUICE_DURABLE_DIR (default: a new directory under os.tmpdir()).

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';
import { Bus, Context } from '../dist/index.js';

const N = Number(process.env.SLUICE_DURABLE_N ?? 200_000);
const WINDOW = Number(process.env.SLUICE_DURABLE_WINDOW ?? 1024);
const RECOVER_N = Number(process.env.SLUICE_DURABLE_RECOVER ?? 1_000_000);
const root = process.env.SLUICE_DURABLE_DIR ?? mkdtempSync(join(os.tmpdir(), 'sluice-bench-durable-'));
const DATA = { id: 'o1', amount: 42, note: 'x'.repeat(64) };
const hr = process.hrtime.bigint;
let dirs = 0;

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}
const us = (ns) => `${(Number(ns) / 1000).toFixed(1)} µs`;
const ms = (ns) => `${(Number(ns) / 1e6).toFixed(2)} ms`;
const lat = (ns) => (ns >= 1_000_000n ? ms(ns) : us(ns));

/** Publishes n events with `window` in flight; returns events/s and per-publish latencies. */
async function load(bus, n, window) {
  const lats = [];
  const t0 = hr();
  for (let i = 0; i < n; i += window) {
    const k = Math.min(window, n - i);
    const started = hr();
    const ps = new Array(k);
    for (let j = 0; j < k; j++) {
      const s = j % 16 === 0 ? hr() : 0n;
      ps[j] = s ? bus.publish('bench', DATA).then(() => lats.push(hr() - s)) : bus.publish('bench', DATA);
    }
    await Promise.all(ps);
    void started;
  }
  const secs = Number(hr() - t0) / 1e9;
  lats.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { rate: n / secs, p50: pct(lats, 50), p99: pct(lats, 99) };
}

async function durableCase(fsync, n) {
  const bus = new Bus({ journal: { dir: join(root, `d${dirs++}`), fsync } });
  let handled = 0;
  bus.subscribe('bench', () => void handled++, { name: 'bench', deliveryGuarantee: 'at-least-once', capacity: 4096 });
  await load(bus, Math.min(n, 20_000), WINDOW); // warm-up
  const r = await load(bus, n, WINDOW);
  const report = await bus.close();
  return { ...r, unacknowledged: report.unacknowledged };
}

async function plainCase(n) {
  const bus = new Bus();
  bus.subscribe('bench', () => {}, { capacity: 4096 });
  await load(bus, Math.min(n, 20_000), WINDOW);
  const r = await load(bus, n, WINDOW);
  await bus.close();
  return r;
}

async function recovery(n) {
  const dir = join(root, `r${dirs++}`);
  {
    const bus = new Bus({ journal: { dir, fsync: 'never' } });
    // A handler that never finishes: everything stays unacknowledged (queued or in the journal).
    bus.subscribe('bench', () => new Promise(() => {}), { name: 'r', deliveryGuarantee: 'at-least-once', capacity: 1024 });
    for (let i = 0; i < n; i += 4096) {
      const k = Math.min(4096, n - i);
      const ps = [];
      for (let j = 0; j < k; j++) ps.push(bus.publish('bench', DATA));
      await Promise.all(ps);
    }
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
console.log(`journal dir under ${root}; window ${WINDOW} publishes in flight; data ${JSON.stringify(DATA).length} bytes of JSON`);
try {
  const rows = [];
  for (const fsync of ['batch', 'never', 'always']) {
    const n = fsync === 'always' ? Math.max(1, Math.floor(N / 5)) : N;
    const r = await durableCase(fsync, n);
    rows.push([`at-least-once, fsync '${fsync}'`, n, r]);
  }
  const plain = await plainCase(N);
  rows.push(['at-most-once, no journal', N, plain]);
  console.log('\n| case | events | events/s | publish p50 | publish p99 |\n|---|---|---|---|---|');
  for (const [name, n, r] of rows) console.log(`| ${name} | ${n} | ${Math.round(r.rate).toLocaleString('en')} | ${lat(r.p50)} | ${lat(r.p99)} |`);
  const batch = rows[0][2].rate;
  console.log(`\ncost of at-least-once ('batch') over at-most-once: ${(plain.rate / batch).toFixed(2)}× the time per event`);
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
