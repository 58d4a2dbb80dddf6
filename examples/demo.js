// sluice demo: a small order-processing service on the embedded, in-process bus (no broker).
//
//   npm run demo                  # about 4 seconds
//   node examples/demo.js --seconds 10
//
// Four publishers send `order.created` in bursts, each publish bounded by a Context deadline.
// Four consumers, each with its own bounded queue and overflow policy:
//   fulfilment  'block', concurrency 4: publishers wait for room, but never longer than their
//               Context allows. Every so often the warehouse API stalls: the queue fills,
//               publishers hit their deadline, and queued orders whose deadline passed expire.
//   analytics   'drop-oldest', capacity 64, on `order.>`: a slow dashboard that keeps only the
//               freshest events; what it sheds is counted.
//   review      'error' with a declarative filter (amount > 900) evaluated in the Rust core:
//               it only ever sees large orders, and rejects some of them (counted as failed).
//   audit       a `bus.stream('order.>')` consumed with `for await`, 'drop-newest'.
// And one WebAssembly handler, deployed with `bus.deploy`:
//   fraud-scorer  guest/assemblyscript/build/fraud.wasm (AssemblyScript, built by `npm run build`)
//               on `order.created`, 2 instances on Rust worker threads, 4 MiB of memory and 50 ms
//               per event; it reads the amount from the JSON and emits `fraud.flagged` above the
//               threshold passed as config ('1000'). Its events never enter JS; a JS subscriber
//               on `fraud.flagged` receives what it emits.
// A progress line updates while it runs; at the end a table shows throughput, latency
// percentiles (publish → handler start), drops and expiries from `bus.stats()`, and the WASM
// handler's own counters from `dep.info()`.
// Observers (docs/observers.md): a metrics observer counts every lifecycle event and times every
// handler (its figures are printed and checked against bus.stats()), `sluice/prometheus` fills a
// prom-client registry, `bus.diagnose()` runs during a warehouse stall, and `bus.trace()` writes
// a Perfetto trace of one second around a stall ($SLUICE_DEMO_TRACE, default in the temp dir).

import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { Bus, Context, DeadlineExceeded, QueueFull, BusClosed, Canceled } from '../dist/index.js';
import { prometheusObserver } from '../dist/observers/prometheus.js';

// ---- options --------------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { seconds: 4 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds' || a === '-s') opts.seconds = Number(argv[++i]);
    else if (a.startsWith('--seconds=')) opts.seconds = Number(a.slice('--seconds='.length));
    else if (a === '--help' || a === '-h') {
      console.log('usage: node examples/demo.js [--seconds N]');
      process.exit(0);
    } else {
      console.error(`unknown argument: ${a}\nusage: node examples/demo.js [--seconds N]`);
      process.exit(2);
    }
  }
  if (!Number.isFinite(opts.seconds) || opts.seconds <= 0 || opts.seconds > 3600) {
    console.error('--seconds takes a number of seconds between 0 and 3600');
    process.exit(2);
  }
  return opts;
}

const { seconds } = parseArgs(process.argv.slice(2));
const RUN_MS = Math.round(seconds * 1000);
const PUBLISHERS = 4;
const RATE = 600; // orders per second per publisher
const DEADLINE_MS = 40; // each publish, and the order it carries, must be handled within this
const STALL_EVERY_MS = 1200; // the warehouse API stalls this often …
const STALL_MS = 180; // … for this long
const BIG_ORDERS = 0.03; // share of orders between 1 000 and 5 000 (the rest: 0–1 000)
const FRAUD_THRESHOLD = '1000'; // the WASM scorer's config
const FRAUD_WASM = new URL('../guest/assemblyscript/build/fraud.wasm', import.meta.url);

// `node examples/demo.js | head` closes stdout early: finish quietly instead of crashing.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

// Never hang: if anything below fails to finish, say so and exit non-zero.
const watchdog = setTimeout(() => {
  console.error(`\ndemo: still running ${RUN_MS / 1000 + 15} s after start; giving up`);
  process.exit(1);
}, RUN_MS + 15_000);

// ---- helpers --------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

class Latency {
  samples = [];
  add(ms) {
    this.samples.push(ms);
  }
  pct(p) {
    if (!this.sorted) this.sorted = Float64Array.from(this.samples).sort();
    const s = this.sorted;
    return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
  }
}

function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(0)} ms`;
}

function fmtInt(n) {
  return Number(n).toLocaleString('en-US');
}

function table(headers, rows, align) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const cell = (v, i) => (align?.[i] === 'l' ? String(v).padEnd(widths[i]) : String(v).padStart(widths[i]));
  const line = (cells) => '  ' + cells.map(cell).join('  ');
  return [line(headers), '  ' + widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

// ---- the service ----------------------------------------------------------------------------

/** @type {Bus<{ 'order.created': { id: string; customer: string; amount: number; t: number }; 'order.shipped': { id: string; t: number } }>} */
const bus = new Bus({ capacity: 256, overflow: 'block', source: 'demo/orders' });

// ---- observers ------------------------------------------------------------------------------

// A metrics observer: per-kind counts from the core's batches, drops by reason, and every
// handler run (JS and WASM) timed, by handler name.
const seen = { counts: {}, dropped: {}, handlers: new Map(), lost: 0 };
bus.use({
  name: 'demo metrics',
  batch(b) {
    for (const [k, n] of Object.entries(b.counts)) seen.counts[k] = (seen.counts[k] ?? 0) + n;
    for (const n of Object.values(b.lost)) seen.lost += n;
  },
  dropped(r) {
    seen.dropped[r.reason] = (seen.dropped[r.reason] ?? 0) + r.count;
  },
  handlerEnd(r) {
    const name = r.name ?? (r.subscription === auditId ? 'audit' : `#${r.subscription}`);
    let h = seen.handlers.get(name);
    if (!h) seen.handlers.set(name, (h = { runtime: r.origin === 'js' ? 'js' : 'wasm', lat: new Latency(), failed: 0 }));
    h.lat.add(r.durationUs / 1000);
    if (r.reason !== 'ack') h.failed++;
  },
});
const registry = new Registry();
bus.use(prometheusObserver({ registry }));
const TRACE_FILE = process.env.SLUICE_DEMO_TRACE ?? join(tmpdir(), 'sluice-demo-trace.json');

const lat = { fulfilment: new Latency(), analytics: new Latency(), review: new Latency(), audit: new Latency() };
const handled = { fulfilment: 0, analytics: 0, review: 0, audit: 0, shipped: 0, shipLate: 0, flagged: 0 };
let stalledUntil = 0;

// Fulfilment: 'block', 4 at once. Simulated I/O: a short await per order, and periodic stalls.
const fulfilment = bus.subscribe(
  'order.created',
  async (event, ctx) => {
    lat.fulfilment.add(now() - event.data.t);
    const wait = stalledUntil - now();
    if (wait > 0) await sleep(wait); // the warehouse API is slow right now
    else if (handled.fulfilment % 8 === 0) await new Promise((resolve) => setImmediate(resolve)); // a stock lookup
    else await null; // served from cache
    handled.fulfilment++;
    // Announce the shipment under the order's own Context: if its deadline has passed by now,
    // publishing fails with DeadlineExceeded and the notice is skipped (counted below).
    try {
      if (bus.tryPublish('order.shipped', { id: event.data.id, t: now() }, { ctx })) handled.shipped++;
    } catch (e) {
      if (!(e instanceof DeadlineExceeded || e instanceof Canceled || e instanceof BusClosed)) throw e;
      handled.shipLate++;
    }
  },
  { name: 'fulfilment', overflow: 'block', capacity: 256, concurrency: 4 },
);

// Analytics: a slow dashboard with a small 'drop-oldest' queue on everything about orders.
const analytics = bus.subscribe(
  'order.>',
  async (event) => {
    lat.analytics.add(now() - event.data.t);
    handled.analytics++;
    if (handled.analytics % 32 === 0) await sleep(1);
  },
  { name: 'analytics', overflow: 'drop-oldest', capacity: 64 },
);

// Review: only large orders reach it (the filter runs in the core); 'error' makes a publish that
// finds its queue full reject with QueueFull instead of waiting.
let reviewRejected = 0;
const review = bus.subscribe(
  'order.created',
  (event) => {
    lat.review.add(now() - event.data.t);
    handled.review++;
    if (event.data.amount > 990) {
      reviewRejected++;
      throw new Error(`order ${event.data.id}: amount ${event.data.amount} needs manual review`);
    }
  },
  {
    name: 'review',
    overflow: 'error',
    capacity: 8,
    filter: { field: 'amount', op: 'gt', value: 900 },
    onError: () => {}, // counted as failed in stats(); a real service would log it
  },
);

// Fraud scorer: an untrusted AssemblyScript handler in the Wasmtime sandbox. Compiled off the JS
// thread; each event is handled on a Rust worker and never enters JS.
if (!existsSync(FRAUD_WASM)) {
  console.error(`demo: ${FRAUD_WASM.pathname} is missing; run \`npm run build\` first (it builds the guest handlers)`);
  process.exit(1);
}
const fraudDep = await bus.deploy('fraud-scorer', FRAUD_WASM, {
  topics: ['order.created'],
  emits: ['fraud.*'],
  config: FRAUD_THRESHOLD,
  concurrency: 2,
  limits: { memoryBytes: 4 << 20, timeoutMs: 50 },
  capacity: 1024,
});
// What the scorer emits comes back to JS like any other event. Orders are published with their
// own id as the CloudEvents id, which the scorer puts in `fraud.flagged` as `order`: that gives
// the latency order published → alert handled in JS (through the WASM handler and its emit).
const bigOrderSent = new Map(); // id → publish time, for orders above the threshold only
const flaggedLat = new Latency();
const flaggedSub = bus.subscribe(
  'fraud.flagged',
  (event) => {
    handled.flagged++;
    const t = bigOrderSent.get(event.data.order);
    if (t !== undefined) {
      flaggedLat.add(now() - t);
      bigOrderSent.delete(event.data.order);
    }
    if (!(event.data.amount > Number(FRAUD_THRESHOLD))) throw new Error(`flagged below the threshold: ${JSON.stringify(event.data)}`);
  },
  { name: 'fraud-alerts', capacity: 1024 },
);

// Audit: a bounded stream consumed with for-await.
const auditAbort = new AbortController();
const audit = bus.stream('order.>', { capacity: 512, overflow: 'drop-newest', signal: auditAbort.signal, batchSize: 64 });
// Stream options take no `name`: recognise the stream in stats() by its id.
const auditId = audit.stats().id;
const auditDone = (async () => {
  try {
    for await (const event of audit) {
      lat.audit.add(now() - event.data.t);
      handled.audit++;
    }
  } catch (e) {
    if (e !== auditAbort.signal.reason) throw e;
  }
})();

// ---- publishers -----------------------------------------------------------------------------

let bigOrders = 0;
const pub = { attempted: 0, accepted: 0, deadline: 0, queueFull: 0, canceled: 0, closed: 0 };
let stopping = false;

async function publisher(p) {
  // Paced: RATE orders per second, sent in small bursts as they fall due.
  const t0 = now();
  let seq = 0;
  while (!stopping) {
    const due = Math.floor(((now() - t0) / 1000) * RATE);
    while (seq < due && !stopping) {
      const id = `p${p}-${++seq}`;
      const big = Math.random() < BIG_ORDERS;
      const amount = Math.round((big ? 1000 + Math.random() * 4000 : Math.random() * 1000) * 100) / 100;
      const ctx = Context.background().withTimeout(DEADLINE_MS);
      pub.attempted++;
      const t = now();
      if (amount > Number(FRAUD_THRESHOLD)) {
        bigOrders++;
        bigOrderSent.set(id, t);
      }
      try {
        await bus.publish('order.created', { id, customer: `c-${seq % 97}`, amount, t }, { ctx, id });
        pub.accepted++;
      } catch (e) {
        if (e instanceof DeadlineExceeded) pub.deadline++;
        else if (e instanceof QueueFull) pub.queueFull++;
        else if (e instanceof Canceled) pub.canceled++;
        else if (e instanceof BusClosed) pub.closed++;
        else throw e;
      }
    }
    await sleep(2);
  }
}

// ---- progress -------------------------------------------------------------------------------

const tty = Boolean(process.stdout.isTTY);
const started = now();

function progress(final = false) {
  const s = bus.stats();
  const el = ((now() - started) / 1000).toFixed(1);
  const line =
    `${el.padStart(5)} s  published ${fmtInt(pub.accepted)}  fulfilled ${fmtInt(handled.fulfilment)}  ` +
    `analytics ${fmtInt(handled.analytics)}  review ${fmtInt(handled.review)}  audit ${fmtInt(handled.audit)}  ` +
    `wasm scored ${fmtInt(fraudDep.info().outcomes.ack)} flagged ${fmtInt(handled.flagged)}  ` +
    `dropped ${fmtInt(s.dropped)}  expired ${fmtInt(s.expired)}  timed-out publishes ${fmtInt(pub.deadline)}  queued ${fmtInt(s.depth)}` +
    (stalledUntil > now() ? '  [warehouse stalled]' : '');
  if (tty) process.stdout.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
  else console.log(line);
}

// ---- run ------------------------------------------------------------------------------------

console.log(`sluice demo: ${PUBLISHERS} publishers × ${RATE} orders/s, 4 JS subscribers + 1 WASM handler (${fraudDep.name}, ${fraudDep.hash.slice(0, 19)}…), in-process bus, ${seconds} s (deadline ${DEADLINE_MS} ms per order; warehouse stalls ${STALL_MS} ms every ${STALL_EVERY_MS} ms)\n`);

const stallTimer = setInterval(() => {
  stalledUntil = now() + STALL_MS;
}, STALL_EVERY_MS);
const progressTimer = setInterval(progress, tty ? 200 : 1000);

const publishers = Array.from({ length: PUBLISHERS }, (_, p) => publisher(p + 1));
// Diagnose the first warehouse stall while it happens, and trace one second around it.
const traceMs = Math.min(1000, RUN_MS);
const traced = sleep(Math.max(0, Math.min(STALL_EVERY_MS - 300, RUN_MS - traceMs))).then(() => bus.trace({ durationMs: traceMs, file: TRACE_FILE }));
const diagnosed = RUN_MS > STALL_EVERY_MS + 150 ? sleep(STALL_EVERY_MS + 20).then(() => bus.diagnose({ windowMs: 100 })) : Promise.resolve(undefined);
await sleep(RUN_MS);
stopping = true;
clearInterval(stallTimer);
stalledUntil = 0;
await Promise.all(publishers);
const publishSeconds = (now() - started) / 1000;

// Let the consumers drain what is queued (at most 2 s), read the counters, then close.
for (const until = now() + 2000; now() < until; ) {
  const s = bus.stats();
  if (s.depth === 0 && s.subscriptions.every((x) => x.blockedPublishers === 0)) break;
  await sleep(5);
}
await sleep(20); // handlers already started finish their simulated I/O
clearInterval(progressTimer);
progress(true);
const [trace, diagnosis] = await Promise.all([traced, diagnosed]);
const stats = bus.stats(); // after close() the bus no longer lists its subscriptions
const promText = await registry.metrics();
const fraudInfo = fraudDep.info();
const elapsed = (now() - started) / 1000;
await fraudDep.undeploy();
flaggedSub.unsubscribe();
await bus.close({ ctx: Context.background().withTimeout(2000) });
auditAbort.abort();
await auditDone;
// What close() itself had to drop (counted per subscription, read from the handles).
const droppedAtClose = [fulfilment, analytics, review, audit].reduce((n, h) => n + h.stats().droppedClosed, 0);

// ---- report ---------------------------------------------------------------------------------
const rows = [
  ['fulfilment', 'block ×4', fulfilment, lat.fulfilment, handled.fulfilment],
  ['analytics', 'drop-oldest', analytics, lat.analytics, handled.analytics],
  ['review', 'error+filter', review, lat.review, handled.review],
  ['audit', 'stream drop-newest', audit, lat.audit, handled.audit],
].map(([name, policy, , l, n]) => {
  const s = stats.subscriptions.find((x) => (name === 'audit' ? x.id === auditId : x.name === name));
  const dropped = s ? s.droppedNewest + s.droppedOldest + s.droppedFull + s.droppedCanceled + s.droppedClosed : NaN;
  return [
    name,
    `${s?.pattern ?? '?'}`,
    policy,
    fmtInt(s?.capacity ?? 0),
    fmtInt(n),
    `${fmtInt(Math.round(n / elapsed))}/s`,
    fmtMs(l.pct(50)),
    fmtMs(l.pct(90)),
    fmtMs(l.pct(99)),
    fmtInt(dropped),
    fmtInt(s?.expired ?? 0),
    fmtInt(s?.failed ?? 0),
    fmtInt(s?.filtered ?? 0),
  ];
});

console.log(`\nRan ${elapsed.toFixed(2)} s (publishing ${publishSeconds.toFixed(2)} s). Latency is publish → handler start; counters from bus.stats().\n`);
console.log(
  table(
    ['subscriber', 'pattern', 'policy', 'capacity', 'handled', 'rate', 'p50', 'p90', 'p99', 'dropped', 'expired', 'failed', 'filtered'],
    rows,
    ['l', 'l', 'l'],
  ),
);

console.log('\nPublishers');
console.log(
  table(
    ['attempted', 'accepted', 'rate', 'deadline exceeded', 'queue full (review)', 'canceled', 'closed'],
    [[fmtInt(pub.attempted), fmtInt(pub.accepted), `${fmtInt(Math.round(pub.accepted / publishSeconds))}/s`, fmtInt(pub.deadline), fmtInt(pub.queueFull), fmtInt(pub.canceled), fmtInt(pub.closed)]],
  ),
);

console.log('\nbus.stats()');
console.log(
  table(
    ['published', 'unrouted', 'delivered', 'dropped', 'expired', 'failed', 'filtered', 'dropped at close', 'shipped', 'ship notice late', 'review rejected'],
    [[stats.published, stats.unrouted, stats.delivered, stats.dropped, stats.expired, stats.failed, stats.filtered, droppedAtClose, handled.shipped, handled.shipLate, reviewRejected].map(fmtInt)],
  ),
);

// The WASM handler's own counters (dep.info(), read before undeploy).
{
  const o = fraudInfo.outcomes;
  const errors = Object.entries(o.errors).map(([k, n]) => `${k} ${fmtInt(n)}`).join(', ') || '0';
  const us = (x) => (x >= 1000 ? `${(x / 1000).toFixed(1)} ms` : `${x.toFixed(1)} µs`);
  const fs = fraudInfo.subscriptions[0];
  console.log(`\nWASM handlers (dep.info(); latency = time in the handler on a worker thread)`);
  console.log(
    table(
      ['handler', 'topics → emits', 'limits', 'inst. live/created/discarded', 'ack', 'retry', 'reject', 'errors', 'emits published', 'refused', 'p50', 'p99', 'queue dropped'],
      [
        [
          fraudInfo.name,
          `${fraudInfo.topics.join(',')} → ${fraudInfo.emits.join(',')}`,
          `${fraudInfo.limits.memoryBytes >> 20} MiB, ${fraudInfo.limits.timeoutMs} ms`,
          `${fraudInfo.instances.live}/${fraudInfo.instances.created}/${fraudInfo.instances.discarded}`,
          fmtInt(o.ack),
          fmtInt(o.retry),
          fmtInt(o.reject),
          errors,
          fmtInt(fraudInfo.emitsPublished),
          fmtInt(fraudInfo.emitsRefused),
          us(fraudInfo.latencyUs.p50),
          us(fraudInfo.latencyUs.p99),
          fmtInt(fs ? fs.droppedNewest + fs.droppedOldest + fs.droppedFull + fs.droppedCanceled + fs.droppedClosed : 0),
        ],
      ],
      ['l', 'l', 'l'],
    ),
  );
  console.log(
    `  fraud.flagged received in JS: ${fmtInt(handled.flagged)} of ${fmtInt(bigOrders)} orders above ${FRAUD_THRESHOLD} (attempted); ` +
      `order published → alert handled in JS: p50 ${fmtMs(flaggedLat.pct(50))}, p99 ${fmtMs(flaggedLat.pct(99))}`,
  );
}

const byCause = stats.subscriptions
  .filter((s) => s.droppedNewest + s.droppedOldest + s.droppedFull + s.droppedCanceled + s.droppedClosed > 0)
  .map((s) => {
    const name = s.name ?? (s.id === auditId ? 'audit' : `#${s.id}`);
    const parts = [
      ['newest', s.droppedNewest],
      ['oldest', s.droppedOldest],
      ['full', s.droppedFull],
      ['canceled', s.droppedCanceled],
      ['closed', s.droppedClosed],
    ].filter(([, n]) => n > 0);
    return `${name}: ${parts.map(([k, n]) => `${k} ${fmtInt(n)}`).join(', ')}`;
  });
if (byCause.length) console.log(`\ndrops by cause — ${byCause.join('; ')}`);

// ---- what the observers saw ---------------------------------------------------------------

console.log('\nObservers (lifecycle events recorded in the core, handed to JS in batches)');
const agrees = (a, b) => (a === b ? '=' : `≠ ${fmtInt(b)}`);
console.log(
  table(
    ['published', 'delivered', 'dropped', 'expired', 'handler runs', 'records lost', 'hook failures'],
    [[
      `${fmtInt(seen.counts.published ?? 0)} ${agrees(seen.counts.published ?? 0, stats.published)}`,
      `${fmtInt(seen.counts.delivered ?? 0)}`,
      `${fmtInt(seen.counts.dropped ?? 0)}`,
      `${fmtInt(seen.counts.expired ?? 0)}`,
      fmtInt(seen.counts.handlerEnd ?? 0),
      fmtInt(seen.lost),
      fmtInt((stats.observers?.metricsFailures ?? 0) + (stats.observers?.tracingFailures ?? 0)),
    ]],
  ),
);
console.log(`  (= matches bus.stats(); drops by reason: ${Object.entries(seen.dropped).map(([k, n]) => `${k} ${fmtInt(n)}`).join(', ') || 'none'})`);
console.log(
  table(
    ['handler', 'runtime', 'runs', 'failed', 'p50 run time', 'p99 run time'],
    [...seen.handlers].map(([name, h]) => [name, h.runtime, fmtInt(h.lat.samples.length), fmtInt(h.failed), fmtMs(h.lat.pct(50)), fmtMs(h.lat.pct(99))]),
    ['l', 'l'],
  ),
);
const promSeries = promText.split('\n').filter((l) => l && !l.startsWith('#')).length;
console.log(`  sluice/prometheus: ${promSeries} series on the registry, e.g.`);
for (const l of promText.split('\n').filter((l) => /^sluice_(events_dropped_total|deployment_events_total)/.test(l)).slice(0, 4)) console.log(`    ${l}`);
if (diagnosis) console.log(`\nbus.diagnose() during the first warehouse stall:\n${diagnosis.text.replace(/^/gm, '  ')}`);
console.log(`\nbus.trace(): ${fmtInt(trace.events)} trace events over ${(trace.durationMs / 1000).toFixed(1)} s → ${trace.file} (open in https://ui.perfetto.dev)`);

clearTimeout(watchdog);
// Anything still holding the event loop open after this point is a bug; do not hang on it.
setTimeout(() => process.exit(0), 1000).unref();
