// Cost of delivery settings on the JS subscriber path (issue 6): `npm run build && node bench/delivery.js`.
//
// Publish → sync JS handler, end to end, in batches of 256 (`tryPublishBatch`), every handler
// returning normally (the common case: all acks). Compares plain at-most-once (acks are counted
// when taken: no per-event settle) with tracked settings, where every event is tagged, acked back
// to the core in one `settle` call per batch, and tracked until then. One warm-up round, then
// ROUNDS timed rounds of about ROUND_MS each; the median is reported.
//
//   SLUICE_BENCH_ROUNDS=7  SLUICE_BENCH_ROUND_MS=300

import os from 'node:os';
import { Bus } from '../dist/index.js';

const ROUNDS = Number(process.env.SLUICE_BENCH_ROUNDS ?? 7);
const ROUND_MS = Number(process.env.SLUICE_BENCH_ROUND_MS ?? 300);
const BATCH = 256;
const DATA = Array.from({ length: BATCH }, (_, i) => ({ type: 'order.created', data: { id: `o${i % 64}`, amount: i } }));
const immediate = () => new Promise((r) => setImmediate(r));

const cases = {
  'at-most-once (default)': {},
  'at-least-once + retry (all ack)': {
    deliveryGuarantee: 'at-least-once',
    retry: { maxAttempts: 5, backoff: 'exponential', initialMs: 100 },
    deadLetter: 'order.dead',
  },
  'at-least-once + retry + per-key (64 keys)': {
    deliveryGuarantee: 'at-least-once',
    retry: { maxAttempts: 5 },
    deadLetter: 'order.dead',
    ordering: 'per-key',
    key: 'data.id',
  },
  'at-most-once + dedupe (10 000 ids)': { dedupe: { size: 10_000 } },
};

async function round(opts, events) {
  const bus = new Bus({ capacity: 4096 });
  let handled = 0;
  bus.subscribe('order.created', () => void handled++, opts);
  const t0 = process.hrtime.bigint();
  let sent = 0;
  while (sent < events) {
    const n = bus.tryPublishBatch(DATA);
    sent += n;
    if (n < BATCH || handled + 4 * BATCH < sent) await immediate();
  }
  while (handled < sent) await immediate();
  const ns = Number(process.hrtime.bigint() - t0);
  const stats = bus.stats();
  await bus.close();
  return { ns, handled, stats };
}

async function measure(opts) {
  let n = 50_000;
  for (;;) {
    const { ns } = await round(opts, n);
    if (ns > ROUND_MS * 1e6 * 0.5 || n > 5e6) break;
    n *= 2;
  }
  const { ns: ns0 } = await round(opts, n);
  n = Math.max(BATCH, Math.round((n * ROUND_MS * 1e6) / ns0));
  const rates = [];
  let last;
  for (let i = 0; i < ROUNDS; i++) {
    last = await round(opts, n);
    rates.push((last.handled / last.ns) * 1e9);
  }
  rates.sort((a, b) => a - b);
  return { median: rates[rates.length >> 1], min: rates[0], max: rates[rates.length - 1], events: n, stats: last.stats };
}

const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
console.log(`# delivery settings, JS subscriber path — ${new Date().toISOString()}, node ${process.version}, load ${load}`);
let base;
for (const [name, opts] of Object.entries(cases)) {
  const r = await measure(opts);
  base ??= r.median;
  const s = r.stats;
  const books = s.delivered === s.acked + s.deadLettered + s.discarded + s.duplicatesSuppressed ? 'ok' : 'MISMATCH';
  console.log(
    `${name.padEnd(44)} ${(r.median / 1e6).toFixed(2).padStart(6)} M ev/s  (min ${(r.min / 1e6).toFixed(2)}, max ${(r.max / 1e6).toFixed(2)})  ` +
      `${((r.median / base) * 100).toFixed(0).padStart(3)}% of at-most-once   ${r.events} ev/round  books ${books}`,
  );
}
console.log(`# load after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
