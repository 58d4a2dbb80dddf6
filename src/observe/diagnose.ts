import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { BusStats, SubscriptionStats } from '../types.js';
import type { Observer } from './observer.js';

/** What `bus.diagnose()` looks at; see docs/observers.md "Diagnostics". */
export interface DiagnoseOptions {
  /** How long to watch rates, handlers and the event loop (default 200 ms). */
  windowMs?: number;
  /** A queue at or above this fill ratio is "at capacity" (default 0.9). */
  fullRatio?: number;
  /** Live subscriptions on one pattern from which it is a storm (default 256). */
  stormPerPattern?: number;
  /** Net new subscriptions per second from which it is a storm (default 500). */
  stormGrowthPerSecond?: number;
  /** A handler whose p99 is above this is slow (default 100 ms). */
  slowHandlerMs?: number;
  /** Event-loop delay p99 above this is lag (default 50 ms). */
  eventLoopLagMs?: number;
}

export type Severity = 'critical' | 'warning' | 'info';

export interface Finding {
  severity: Severity;
  /** Stable: `QUEUE_FULL`, `PUBLISHERS_BLOCKED`, `SUBSCRIPTION_STORM`, `SLOW_HANDLER`, `EVENT_LOOP_LAG`,
   * `DROPPING`, `HANDLER_FAILURES`, `OBSERVER_LOSS`. */
  code: string;
  message: string;
  /** The subscription pattern/name or handler the finding is about. */
  subject?: string;
}

export interface QueueReport {
  id: number;
  name: string | null;
  pattern: string;
  depth: number;
  capacity: number;
  fill: number;
  blockedPublishers: number;
  blockedForMs: number;
  dropped: number;
}

export interface HandlerReport {
  name: string;
  runtime: 'js' | 'wasm';
  count: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export interface Diagnosis {
  at: string;
  windowMs: number;
  healthy: boolean;
  /** Worst first. */
  findings: Finding[];
  /** Fullest first (at most 10). */
  queues: QueueReport[];
  subscriptions: {
    live: number;
    /** Subscriptions ever created (ids are sequential). */
    created: number;
    /** Net change of live subscriptions per second over the window. */
    growthPerSecond: number;
    /** Most subscribed patterns first (at most 5). */
    topPatterns: { pattern: string; count: number }[];
  };
  /** Slowest first (at most 5): handlers seen during the window and deployments' lifetime figures. */
  handlers: HandlerReport[];
  /** Event-loop delay beyond the monitor's own period, from `samples` timer ticks in the window. */
  eventLoop: { samples: number; meanMs: number; p99Ms: number; maxMs: number };
  rates: { publishedPerSecond: number; deliveredPerSecond: number; droppedPerSecond: number; failedPerSecond: number };
  /** The same, as readable text. */
  text: string;
}

interface Diagnosable {
  stats(): BusStats;
  use(o: Observer): { remove(): void };
}

const dropped = (s: SubscriptionStats) =>
  s.droppedNewest + s.droppedOldest + s.droppedFull + s.droppedCanceled + s.droppedClosed;

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : 0;
}

const ms = (us: number) => (us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${Math.round(us)} µs`);
const RANK: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };
/** The delay monitor's timer period; its samples are whole periods, so this is subtracted. */
const LOOP_RESOLUTION_MS = 5;

/** Watches the bus for a short window and names the cause of trouble. */
export async function diagnoseBus(bus: Diagnosable, options: DiagnoseOptions = {}): Promise<Diagnosis> {
  const windowMs = options.windowMs ?? 200;
  if (!Number.isFinite(windowMs) || windowMs < 10) throw new RangeError(`windowMs must be at least 10, got ${windowMs}`);
  const fullRatio = options.fullRatio ?? 0.9;
  const stormPerPattern = options.stormPerPattern ?? 256;
  const stormGrowth = options.stormGrowthPerSecond ?? 500;
  const slowUs = (options.slowHandlerMs ?? 100) * 1000;
  const lagMs = options.eventLoopLagMs ?? 50;

  const durations = new Map<string, { runtime: 'js' | 'wasm'; us: number[] }>();
  const timing = bus.use({
    name: 'sluice diagnose',
    handlerEnd(r) {
      const key = r.name ?? `subscription #${r.subscription}`;
      let d = durations.get(key);
      if (!d) durations.set(key, (d = { runtime: r.origin === 'js' ? 'js' : 'wasm', us: [] }));
      if (d.us.length < 100_000) d.us.push(r.durationUs);
    },
  });
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loop.enable();
  // A plain timer's drift, for when the histogram got no ticks in a short window.
  const drift: number[] = [];
  let last = performance.now();
  const ticker = setInterval(() => {
    const t = performance.now();
    drift.push(Math.max(0, t - last - LOOP_RESOLUTION_MS));
    last = t;
  }, LOOP_RESOLUTION_MS);
  const before = bus.stats();
  const t0 = Date.now();
  try {
    await new Promise<void>((r) => setTimeout(r, windowMs));
  } finally {
    loop.disable();
    clearInterval(ticker);
  }
  const after = bus.stats();
  timing.remove();
  const secs = Math.max(1e-3, (Date.now() - t0) / 1000);
  const findings: Finding[] = [];

  // Queues at capacity, and publishers blocked behind them.
  const queues: QueueReport[] = after.subscriptions.map((s) => ({
    id: s.id,
    name: s.name,
    pattern: s.pattern,
    depth: s.depth,
    capacity: s.capacity,
    fill: s.capacity ? s.depth / s.capacity : 0,
    blockedPublishers: s.blockedPublishers,
    blockedForMs: s.blockedForMs ?? 0,
    dropped: dropped(s),
  }));
  queues.sort((a, b) => b.fill - a.fill || b.depth - a.depth);
  const label = (q: { name: string | null; pattern: string; id: number }) => q.name ?? `'${q.pattern}' #${q.id}`;
  for (const q of queues) {
    if (q.fill >= fullRatio) {
      findings.push({
        severity: q.blockedPublishers > 0 ? 'critical' : 'warning',
        code: 'QUEUE_FULL',
        subject: label(q),
        message: `queue of ${label(q)} is at capacity: ${q.depth}/${q.capacity} events; its consumer is slower than its publishers`,
      });
    }
    if (q.blockedPublishers > 0) {
      findings.push({
        severity: q.blockedForMs >= 1000 ? 'critical' : 'warning',
        code: 'PUBLISHERS_BLOCKED',
        subject: label(q),
        message: `${q.blockedPublishers} publisher(s) blocked on ${label(q)} for ${q.blockedForMs} ms (overflow 'block')`,
      });
    }
  }

  // Subscription storms: counts growing without bound, or piling up on one pattern.
  const byPattern = new Map<string, number>();
  for (const s of after.subscriptions) byPattern.set(s.pattern, (byPattern.get(s.pattern) ?? 0) + 1);
  const topPatterns = [...byPattern].map(([pattern, count]) => ({ pattern, count })).sort((a, b) => b.count - a.count);
  const live = after.subscriptions.length;
  const created = Math.max(0, ...after.subscriptions.map((s) => s.id), ...before.subscriptions.map((s) => s.id));
  const growthPerSecond = (live - before.subscriptions.length) / secs;
  const top = topPatterns[0];
  if (top && (top.count >= stormPerPattern || (growthPerSecond >= stormGrowth && live >= 64))) {
    const grew = growthPerSecond > 0 ? `, growing by ${Math.round(growthPerSecond)}/s` : '';
    findings.push({
      severity: 'critical',
      code: 'SUBSCRIPTION_STORM',
      subject: top.pattern,
      message:
        `subscription storm: ${live} live subscriptions${grew}, ${top.count} of them on '${top.pattern}' ` +
        `(${created} created in all) — subscriptions created per request or per event and never unsubscribed?`,
    });
  }

  // Slowest handlers: seen in the window, plus deployments' lifetime percentiles.
  const handlers: HandlerReport[] = [];
  for (const [name, d] of durations) {
    const s = d.us.sort((a, b) => a - b);
    handlers.push({ name, runtime: d.runtime, count: s.length, p50Us: pct(s, 0.5), p99Us: pct(s, 0.99), maxUs: s[s.length - 1] ?? 0 });
  }
  for (const dep of after.deployments ?? []) {
    if (durations.has(dep.name) || dep.latencyUs.count === 0) continue;
    handlers.push({ name: dep.name, runtime: 'wasm', count: dep.latencyUs.count, p50Us: dep.latencyUs.p50, p99Us: dep.latencyUs.p99, maxUs: dep.latencyUs.max });
  }
  handlers.sort((a, b) => b.p99Us - a.p99Us);
  for (const h of handlers) {
    if (h.p99Us >= slowUs) {
      findings.push({
        severity: 'warning',
        code: 'SLOW_HANDLER',
        subject: h.name,
        message: `handler ${h.name} (${h.runtime}) is slow: p99 ${ms(h.p99Us)}, max ${ms(h.maxUs)} over ${h.count} events`,
      });
    }
  }

  const lagOf = (ns: number) => (Number.isFinite(ns) ? Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS) : 0);
  drift.sort((a, b) => a - b);
  const eventLoop =
    loop.count > 0
      ? { samples: loop.count, meanMs: lagOf(loop.mean), p99Ms: lagOf(loop.percentile(99)), maxMs: lagOf(loop.max) }
      : {
          samples: drift.length,
          meanMs: drift.reduce((a, b) => a + b, 0) / Math.max(1, drift.length),
          p99Ms: pct(drift, 0.99),
          maxMs: drift[drift.length - 1] ?? 0,
        };
  if (eventLoop.p99Ms >= lagMs) {
    findings.push({
      severity: eventLoop.p99Ms >= 4 * lagMs ? 'critical' : 'warning',
      code: 'EVENT_LOOP_LAG',
      message: `event loop lag: p99 ${eventLoop.p99Ms.toFixed(1)} ms, max ${eventLoop.maxMs.toFixed(1)} ms — synchronous work is starving handlers and timers`,
    });
  }

  const rates = {
    publishedPerSecond: (after.published - before.published) / secs,
    deliveredPerSecond: (after.delivered - before.delivered) / secs,
    droppedPerSecond: (after.dropped - before.dropped) / secs,
    failedPerSecond: (after.failed - before.failed) / secs,
  };
  if (rates.droppedPerSecond > 0) {
    findings.push({ severity: 'warning', code: 'DROPPING', message: `dropping ${Math.round(rates.droppedPerSecond)} events/s (see stats() per subscription, by reason)` });
  }
  if (rates.failedPerSecond > 0) {
    findings.push({ severity: 'warning', code: 'HANDLER_FAILURES', message: `handlers failing ${Math.round(rates.failedPerSecond)} events/s` });
  }
  const lost = after.observers ? Object.values(after.observers.lost).reduce((a, b) => a + b, 0) : 0;
  if (lost > 0) {
    findings.push({ severity: 'info', code: 'OBSERVER_LOSS', message: `observers missed ${lost} lifecycle records (the core's ring was full); counts stay exact` });
  }
  findings.sort((a, b) => RANK[a.severity] - RANK[b.severity]);

  const d: Omit<Diagnosis, 'text'> = {
    at: new Date().toISOString(),
    windowMs,
    healthy: !findings.some((f) => f.severity !== 'info'),
    findings,
    queues: queues.slice(0, 10),
    subscriptions: { live, created, growthPerSecond, topPatterns: topPatterns.slice(0, 5) },
    handlers: handlers.slice(0, 5),
    eventLoop,
    rates,
  };
  return { ...d, text: render(d) };
}

function render(d: Omit<Diagnosis, 'text'>): string {
  const lines = [
    `sluice diagnosis at ${d.at} (watched ${d.windowMs} ms): ${d.healthy ? 'healthy' : `${d.findings.filter((f) => f.severity !== 'info').length} problem(s)`}`,
  ];
  for (const f of d.findings) lines.push(`  ${f.severity.toUpperCase().padEnd(8)} ${f.code}: ${f.message}`);
  const r = d.rates;
  lines.push(
    `rates: published ${Math.round(r.publishedPerSecond)}/s, delivered ${Math.round(r.deliveredPerSecond)}/s, ` +
      `dropped ${Math.round(r.droppedPerSecond)}/s, failed ${Math.round(r.failedPerSecond)}/s`,
  );
  const s = d.subscriptions;
  lines.push(
    `subscriptions: ${s.live} live, ${s.created} created, ${s.growthPerSecond >= 0 ? '+' : ''}${Math.round(s.growthPerSecond)}/s; ` +
      `top patterns: ${s.topPatterns.map((p) => `${p.pattern} ×${p.count}`).join(', ') || '—'}`,
  );
  const busy = d.queues.filter((q) => q.depth > 0).slice(0, 5);
  lines.push(
    `fullest queues: ${busy.map((q) => `${q.name ?? q.pattern} ${q.depth}/${q.capacity}${q.blockedPublishers ? ` (${q.blockedPublishers} blocked ${q.blockedForMs} ms)` : ''}`).join(', ') || 'all empty'}`,
  );
  lines.push(
    `slowest handlers: ${d.handlers.map((h) => `${h.name} (${h.runtime}) p50 ${ms(h.p50Us)} p99 ${ms(h.p99Us)}`).join(', ') || 'none ran'}`,
  );
  const el = d.eventLoop;
  lines.push(
    el.samples === 0
      ? 'event loop delay: no samples in the window (the loop never got to run the monitor\'s timer)'
      : `event loop delay: mean ${el.meanMs.toFixed(1)} ms, p99 ${el.p99Ms.toFixed(1)} ms, max ${el.maxMs.toFixed(1)} ms (${el.samples} samples)`,
  );
  return lines.join('\n');
}
