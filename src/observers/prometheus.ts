/**
 * `sluice/prometheus`: prom-client metrics on a registry the user passes (prom-client is an
 * optional peer dependency). Counters come from the core's per-kind counts and records (exact:
 * every event counted once); gauges (queue depth, capacity, blocked publishers, lag) are read from
 * `bus.stats()` when the registry is scraped.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `sluice_events_published_total` / `_delivered_total` / `_expired_total` | counter | — |
 * | `sluice_events_dropped_total` | counter | `reason` |
 * | `sluice_handler_runs_total` | counter | `handler`, `runtime`, `outcome`: every run, exact |
 * | `sluice_handler_duration_seconds` | histogram | `handler`, `runtime`, `outcome`: every WASM run, 1 in `handlerTiming` JS runs |
 * | `sluice_deployment_events_total` | counter | `deployment`, `version`, `outcome` (per module version) |
 * | `sluice_sandbox_faults_total` | counter | `deployment`, `kind` (`trap`/`limit`), `code` |
 * | `sluice_retries_total` / `sluice_dead_letters_total` | counter | `handler` |
 * | `sluice_rollout_steps_total` | counter | `deployment`, `step` |
 * | `sluice_queue_depth` / `sluice_queue_capacity` | gauge | `subscription` |
 * | `sluice_queue_lag_seconds` | gauge | `subscription`: publish → handler start of the last handled event |
 * | `sluice_publishers_blocked` / `sluice_publishers_blocked_seconds` | gauge | `subscription` |
 * | `sluice_observer_lost_records_total` | counter | `kind` |
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { FastHistogram } from './histogram.js';
import type { LifecycleRecord, ObservedBus, Observer } from '../index.js';

export interface PrometheusOptions {
  registry: Registry;
  /** Metric name prefix (default `sluice_`). */
  prefix?: string;
  /** Handler duration buckets in seconds. */
  buckets?: number[];
  /**
   * Time 1 in this many JS handler runs for the duration histogram (default 16; 1 = every run).
   * Every run is still counted in `sluice_handler_runs_total`; reading the clock per run costs
   * more than a small handler on many virtual machines (see docs/observers.md).
   */
  handlerTiming?: number;
}

const MAX_CHILDREN = 4096;
const DEFAULT_BUCKETS = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];

export function prometheusObserver(options: PrometheusOptions): Observer {
  const registry = options?.registry;
  if (!registry || typeof registry.registerMetric !== 'function') throw new TypeError('prometheusObserver needs options.registry (a prom-client Registry)');
  const p = options.prefix ?? 'sluice_';
  const handlerTiming = options.handlerTiming ?? 16;
  if (!Number.isInteger(handlerTiming) || handlerTiming < 1) throw new RangeError(`handlerTiming must be a positive integer, got ${String(options.handlerTiming)}`);
  const registers = [registry];
  let bus: ObservedBus | undefined;

  const published = new Counter({ name: `${p}events_published_total`, help: 'Events published', registers });
  const delivered = new Counter({ name: `${p}events_delivered_total`, help: 'Events handed to a consumer', registers });
  const expired = new Counter({ name: `${p}events_expired_total`, help: 'Events whose deadline passed or Context ended while queued', registers });
  const dropped = new Counter({ name: `${p}events_dropped_total`, help: 'Events dropped, by reason', labelNames: ['reason'], registers });
  const runs = new Counter({
    name: `${p}handler_runs_total`,
    help: 'Handler runs, by handler, runtime and outcome',
    labelNames: ['handler', 'runtime', 'outcome'],
    registers,
  });
  const duration = new FastHistogram({
    name: `${p}handler_duration_seconds`,
    help: 'Handler run time',
    buckets: options.buckets ?? DEFAULT_BUCKETS,
    registers,
  });
  const perVersion = new Counter({
    name: `${p}deployment_events_total`,
    help: 'Events handled by a WASM deployment, per module version and outcome',
    labelNames: ['deployment', 'version', 'outcome'],
    registers,
  });
  const faults = new Counter({ name: `${p}sandbox_faults_total`, help: 'Sandbox traps and limits hit', labelNames: ['deployment', 'kind', 'code'], registers });
  const retries = new Counter({ name: `${p}retries_total`, help: 'Deliveries retried', labelNames: ['handler'], registers });
  const deadLetters = new Counter({ name: `${p}dead_letters_total`, help: 'Events dead-lettered', labelNames: ['handler'], registers });
  const rollout = new Counter({ name: `${p}rollout_steps_total`, help: 'Rollout steps', labelNames: ['deployment', 'step'], registers });
  const lost = new Counter({ name: `${p}observer_lost_records_total`, help: 'Lifecycle records the core could not hold for observers', labelNames: ['kind'], registers });
  /** Subscription id → seconds the last event delivered from it had waited. */
  const lag = new Map<number, number>();
  /** Labelled children per (subscription, runtime, outcome, version): label hashing once, not per event. */
  const children = new Map<
    number,
    Map<string | null, { runs: { inc(n: number): void }; duration: { observe(v: number): void }; version: { inc(): void } | undefined }>
  >();
  const subName = new Map<number, string>();
  const label = (s: { id: number; name: string | null; pattern: string }) => s.name ?? `${s.pattern}#${s.id}`;
  const handlerOf = (r: LifecycleRecord) => r.name ?? subName.get(r.subscription) ?? `#${r.subscription}`;

  const gauges = (name: string, help: string, value: (s: import('../index.js').SubscriptionStats) => number) =>
    new Gauge({
      name: `${p}${name}`,
      help,
      labelNames: ['subscription'],
      registers,
      collect() {
        this.reset();
        if (!bus) return;
        for (const s of bus.stats().subscriptions) {
          subName.set(s.id, label(s));
          this.set({ subscription: label(s) }, value(s));
        }
      },
    });
  gauges('queue_depth', 'Events waiting in a subscription queue', (s) => s.depth);
  gauges('queue_capacity', 'Capacity of a subscription queue', (s) => s.capacity);
  gauges('publishers_blocked', 'Publishers waiting for room (overflow block)', (s) => s.blockedPublishers);
  gauges('publishers_blocked_seconds', 'How long publishers have been blocked on a queue', (s) => (s.blockedForMs ?? 0) / 1000);
  new Gauge({
    name: `${p}queue_lag_seconds`,
    help: 'Publish to handler start of the last event handled from a queue',
    labelNames: ['subscription'],
    registers,
    collect() {
      this.reset();
      if (!bus) return;
      const live = new Set<number>();
      for (const s of bus.stats().subscriptions) {
        live.add(s.id);
        const secs = lag.get(s.id);
        if (secs !== undefined) this.set({ subscription: label(s) }, secs);
      }
      for (const id of lag.keys()) if (!live.has(id)) lag.delete(id);
    },
  });

  return {
    name: 'sluice/prometheus',
    kind: 'metrics',
    handlerTiming,
    attach(b) {
      bus = b;
    },
    batch(b) {
      if (b.counts.published) published.inc(b.counts.published);
      if (b.counts.delivered) delivered.inc(b.counts.delivered);
      if (b.counts.expired) expired.inc(b.counts.expired);
      for (const [kind, n] of Object.entries(b.lost)) if (n > 0) lost.inc({ kind }, n);
    },
    dropped(r) {
      dropped.inc({ reason: r.reason ?? 'unknown' }, r.count);
    },
    handlerEnd(r) {
      // One map per subscription, keyed by outcome (and module version for WASM): no label
      // hashing or string building per event once a combination was seen.
      let perSub = children.get(r.subscription);
      if (perSub === undefined) children.set(r.subscription, (perSub = new Map()));
      const key = r.origin === 'js' ? r.reason : `${r.reason}\u0000${r.detail}`;
      let c = perSub.get(key);
      if (c === undefined) {
        const runtime = r.origin === 'js' ? 'js' : 'wasm';
        const outcome = r.reason ?? 'unknown';
        const labels = { handler: handlerOf(r), runtime, outcome };
        c = {
          runs: runs.labels(labels),
          duration: duration.child(labels),
          version: runtime === 'wasm' ? perVersion.labels({ deployment: r.name ?? '', version: r.detail ?? '', outcome }) : undefined,
        };
        if (perSub.size < MAX_CHILDREN) perSub.set(key, c);
      }
      c.runs.inc(r.count);
      if (r.untimed) return;
      c.duration.observe(r.durationUs / 1e6);
      c.version?.inc();
      // Lag: from publish to the handler's start.
      if (r.eventTimeMs > 0) lag.set(r.subscription, Math.max(0, (r.timeUs - r.durationUs) / 1e6 - r.eventTimeMs / 1e3));
    },
    sandboxTrap(r) {
      faults.inc({ deployment: r.name ?? '', kind: 'trap', code: r.reason ?? '' });
    },
    sandboxLimit(r) {
      faults.inc({ deployment: r.name ?? '', kind: 'limit', code: r.reason ?? '' });
    },
    retried(r) {
      retries.inc({ handler: handlerOf(r) }, r.count);
    },
    deadLettered(r) {
      deadLetters.inc({ handler: handlerOf(r) }, r.count);
    },
    rolloutStep(r) {
      rollout.inc({ deployment: r.name ?? '', step: r.reason ?? '' });
    },
  };
}

export default prometheusObserver;
