// Observer overhead: bus throughput (publish → sync JS handler, end to end) with no observer,
// with the Prometheus metrics observer (JS handler runs timed 1 in 16, its default, and every
// run), and with the OpenTelemetry tracing observer (every event
// traced, and 1 in 100). `npm run bench:observers` (needs `npm run build` first).
//
// The configurations run interleaved — one round of each, ROUNDS times, in alternating order
// (A B C D, D C B A, …) — so load changes on a shared machine hit them alike. Reported per
// configuration: the median rate with min–max, the median CPU time per event
// (`process.cpuUsage`, every thread of the process), and the cost against "no observer" as the
// median of per-round ratios (each configuration against the baseline round run next to it),
// which cancels most of the machine's drift that the spread of the raw rates shows.
//
// Environment:
//   SLUICE_BENCH_ROUNDS=7         rounds per configuration
//   SLUICE_BENCH_ROUND_MS=300     length of one round
//   SLUICE_BENCH_OUT=path         JSON output (default bench/results/observers.json)

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { Registry } from 'prom-client';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Bus } from '../dist/index.js';
import { prometheusObserver } from '../dist/observers/prometheus.js';
import { otelObserver } from '../dist/observers/otel.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROUNDS = Number(process.env.SLUICE_BENCH_ROUNDS ?? 7);
const ROUND_MS = Number(process.env.SLUICE_BENCH_ROUND_MS ?? 300);
const OUT = process.env.SLUICE_BENCH_OUT ?? join(here, 'results', 'observers.json');
const TOPIC = 'order.created';
const DATA = Object.freeze({ id: 'o1', amount: 42 });
const BATCH = 256;
const WINDOW = 2048;
const immediate = () => new Promise((r) => setImmediate(r));

function tracer() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  // Spans are dropped as they pile up: the exporter's cost is not what is measured here.
  const timer = setInterval(() => exporter.reset(), 50);
  timer.unref();
  return provider.getTracer('bench');
}

const CONFIGS = [
  { name: 'no observer', observe: () => {} },
  { name: 'metrics: sluice/prometheus', observe: (bus) => bus.use(prometheusObserver({ registry: new Registry() })) },
  {
    name: 'metrics: prometheus, every run timed',
    observe: (bus) => bus.use(prometheusObserver({ registry: new Registry(), handlerTiming: 1 })),
  },
  { name: 'tracing: sluice/otel, every event', observe: (bus) => bus.use(otelObserver({ tracer: tracer() })) },
  { name: 'tracing: sluice/otel, 1 in 100', observe: (bus) => bus.use(otelObserver({ tracer: tracer(), sampleEvery: 100 })) },
];

const MODES = [
  { name: `tryPublishBatch(${BATCH}) → sync handler`, batch: true },
  { name: 'tryPublish → sync handler', batch: false },
];

/** Publishes for ROUND_MS with at most WINDOW events in flight; returns events handled per second. */
async function round(mode, cfg) {
  const bus = new Bus({ capacity: 4096, overflow: 'block' });
  cfg.observe(bus);
  let handled = 0;
  bus.subscribe(TOPIC, () => void handled++);
  const events = Array.from({ length: BATCH }, () => ({ type: TOPIC, data: DATA }));
  // Warm-up.
  for (let i = 0; i < 4; i++) bus.tryPublishBatch(events);
  while (handled < 4 * BATCH) await immediate();
  const base = handled;
  let sent = 0;
  let refused = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ROUND_MS * 1e6);
  while (process.hrtime.bigint() < end) {
    if (sent - (handled - base) >= WINDOW) {
      await immediate();
      continue;
    }
    if (mode.batch) {
      refused += BATCH - bus.tryPublishBatch(events);
      sent += BATCH;
    } else {
      const stop = sent + WINDOW - (sent - (handled - base));
      for (; sent < stop; sent++) if (!bus.tryPublish(TOPIC, DATA)) refused++;
    }
  }
  while (handled - base < sent - refused) await immediate();
  const ns = Number(process.hrtime.bigint() - t0);
  const cpu = process.cpuUsage(c0);
  const stats = bus.stats();
  await bus.close();
  if (refused) console.log(`    ! ${refused} refused`);
  if (stats.observers && Object.values(stats.observers.lost).some((n) => n > 0)) console.log('    ! observers lost records', stats.observers.lost);
  const n = handled - base;
  // CPU time per event (all threads of the process) is steadier than the rate on a shared machine.
  return { rate: n / (ns / 1e9), cpuNs: ((cpu.user + cpu.system) * 1000) / n };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const fmt = (r) => `${(r / 1e3).toFixed(0)} k/s`;

async function main() {
  const load0 = os.loadavg();
  console.log(`sluice observer overhead — ${new Date().toISOString()}, node ${process.version}, load ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const results = [];
  for (const mode of MODES) {
    const runs = CONFIGS.map(() => []);
    for (let r = 0; r < ROUNDS; r++) {
      const order = CONFIGS.map((_, c) => c);
      if (r % 2 === 1) order.reverse();
      for (const c of order) runs[c][r] = await round(mode, CONFIGS[c]);
    }
    const rates = runs.map((rs) => rs.map((r) => r.rate));
    const cpus = runs.map((rs) => rs.map((r) => r.cpuNs));
    console.log(`\n${mode.name}`);
    console.log(`  ${''.padEnd(36)} ${'rate (min–max)'.padEnd(28)} ${'cost (paired)'.padStart(14)}   ${'CPU/event'.padStart(9)}  ${'CPU cost (paired)'.padStart(17)}`);
    for (let c = 0; c < CONFIGS.length; c++) {
      const m = median(rates[c]);
      const cpu = median(cpus[c]);
      // Paired: this configuration's round against the baseline round of the same pass.
      const costs = rates[c].map((x, r) => 1 - x / rates[0][r]);
      const cpuCosts = cpus[c].map((x, r) => x / cpus[0][r] - 1);
      const pct = (xs) => `${(100 * median(xs)).toFixed(1)}% (${(100 * Math.min(...xs)).toFixed(0)}…${(100 * Math.max(...xs)).toFixed(0)})`;
      const cost = c === 0 ? '' : pct(costs);
      const cpuCost = c === 0 ? '' : pct(cpuCosts);
      console.log(
        `  ${CONFIGS[c].name.padEnd(36)} ${`${fmt(m)} (${fmt(Math.min(...rates[c]))}–${fmt(Math.max(...rates[c]))})`.padEnd(28)} ${cost.padStart(14)}   ${(cpu / 1000).toFixed(2).padStart(6)} µs  ${cpuCost.padStart(17)}`,
      );
      results.push({
        mode: mode.name,
        config: CONFIGS[c].name,
        median: m,
        min: Math.min(...rates[c]),
        max: Math.max(...rates[c]),
        costVsNone: c === 0 ? 0 : median(costs),
        costsPerRound: c === 0 ? [] : costs,
        cpuNsPerEvent: cpu,
        cpuCostVsNone: c === 0 ? 0 : median(cpuCosts),
        cpuCostsPerRound: c === 0 ? [] : cpuCosts,
      });
    }
  }
  const load1 = os.loadavg();
  console.log(`\nload average at end: ${load1.map((x) => x.toFixed(2)).join(' ')}`);
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify({ date: new Date().toISOString(), node: process.version, loadStart: load0, loadEnd: load1, rounds: ROUNDS, roundMs: ROUND_MS, results }, null, 2));
}

await main();
