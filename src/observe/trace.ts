import { writeFile } from 'node:fs/promises';
import type { BusStats } from '../types.js';
import type { Observer } from './observer.js';
import type { LifecycleRecord } from './records.js';

/**
 * Writes what the bus did during a window as Chrome trace-event JSON (the "JSON Object Format":
 * `{ "traceEvents": [...] }`), which Perfetto (ui.perfetto.dev) and chrome://tracing open.
 *
 * - one process (the Node.js pid); thread lane 1 "publish", one lane per subscription;
 * - `publish <type>`: a zero-length complete event (`ph: "X"`) when the core accepted the event;
 * - `dispatch <type>`: an async span (`ph: "b"`/`"e"`) from publish to the moment a consumer took
 *   it from the subscription's queue (its queue wait), on that subscription's lane;
 * - `handle <type>`: an async span over the handler's run, JS or WASM, with its outcome;
 * - `dropped` / `expired`: instant events (`ph: "i"`) with the reason;
 * - `queue depth`: counter events (`ph: "C"`), one series per subscription, sampled every `sampleMs`.
 * Async spans are used because an event's queue wait and handlers with concurrency > 1 overlap.
 */
export interface TraceOptions {
  /** How long to record. */
  durationMs: number;
  /** Where to write the trace JSON. */
  file: string;
  /** Queue-depth sampling interval (default 10 ms). */
  sampleMs?: number;
  /** Ends the recording early (the file is still written). */
  signal?: AbortSignal;
}

export interface TraceSummary {
  file: string;
  events: number;
  /** Lifecycle records the core could not hold during the window (the trace misses them). */
  lost: number;
  durationMs: number;
}

export interface TraceEvent {
  name: string;
  cat?: string;
  ph: 'X' | 'b' | 'e' | 'i' | 'C' | 'M';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  id?: string;
  s?: 't' | 'p' | 'g';
  args?: Record<string, unknown>;
}

const PUBLISH_LANE = 1;
const laneOf = (sub: number) => 100 + sub;
/** Publish times kept to pair them with deliveries; bounded. */
const MAX_PENDING = 1 << 17;

export class TraceRecorder {
  readonly events: TraceEvent[] = [];
  readonly #pid = process.pid;
  readonly #published = new Map<string, number>();
  readonly #lanes = new Map<number, string>();
  readonly #t0Us = Date.now() * 1000;
  #seq = 0;

  constructor() {
    this.#meta('process_name', 0, { name: `sluice (node ${process.pid})` });
    this.#lane(PUBLISH_LANE, 'publish');
  }

  #meta(name: string, tid: number, args: Record<string, unknown>): void {
    this.events.push({ name, ph: 'M', ts: 0, pid: this.#pid, tid, args });
  }

  #lane(tid: number, label: string): void {
    if (this.#lanes.has(tid)) return;
    this.#lanes.set(tid, label);
    this.#meta('thread_name', tid, { name: label });
  }

  #subLane(r: LifecycleRecord): number {
    const tid = laneOf(r.subscription);
    if (!this.#lanes.has(tid)) this.#lane(tid, r.name ? `${r.name} (#${r.subscription})` : `subscription #${r.subscription}`);
    return tid;
  }

  /** The observer to register for the window. */
  observer(): Observer {
    return {
      name: 'sluice trace',
      published: (r) => {
        if (r.id === null) return;
        if (this.#published.size >= MAX_PENDING) this.#published.clear();
        this.#published.set(r.id, r.timeUs);
        this.events.push({
          name: `publish ${r.type}`,
          cat: 'publish',
          ph: 'X',
          ts: r.timeUs,
          dur: 0,
          pid: this.#pid,
          tid: PUBLISH_LANE,
          args: { id: r.id, traceparent: r.traceparent, unrouted: r.reason === 'unrouted' },
        });
      },
      delivered: (r) => {
        if (r.id === null) return;
        const tid = this.#subLane(r);
        const from = this.#published.get(r.id) ?? (r.eventTimeMs > 0 ? r.eventTimeMs * 1000 : r.timeUs);
        const id = `d${++this.#seq}`;
        const args = { id: r.id, subscription: r.subscription, waitUs: Math.max(0, r.timeUs - from) };
        this.events.push({ name: `dispatch ${r.type}`, cat: 'dispatch', ph: 'b', id, ts: Math.min(from, r.timeUs), pid: this.#pid, tid, args });
        this.events.push({ name: `dispatch ${r.type}`, cat: 'dispatch', ph: 'e', id, ts: r.timeUs, pid: this.#pid, tid });
      },
      handlerEnd: (r) => {
        const tid = this.#subLane(r);
        const id = `h${++this.#seq}`;
        const name = `handle ${r.type}`;
        const args = { id: r.id, outcome: r.reason, handler: r.name, module: r.detail, runtime: r.origin === 'js' ? 'js' : 'wasm' };
        this.events.push({ name, cat: 'handler', ph: 'b', id, ts: r.timeUs - r.durationUs, pid: this.#pid, tid, args });
        this.events.push({ name, cat: 'handler', ph: 'e', id, ts: r.timeUs, pid: this.#pid, tid });
      },
      dropped: (r) => this.#instant('dropped', r),
      expired: (r) => this.#instant('expired', r),
      sandboxTrap: (r) => this.#instant('sandbox trap', r),
      sandboxLimit: (r) => this.#instant('sandbox limit', r),
      retried: (r) => this.#instant('retried', r),
      deadLettered: (r) => this.#instant('dead-lettered', r),
      rolloutStep: (r) => this.#instant('rollout', r),
    };
  }

  #instant(what: string, r: LifecycleRecord): void {
    const tid = r.subscription ? this.#subLane(r) : PUBLISH_LANE;
    this.events.push({
      name: `${what}${r.reason ? ` (${r.reason})` : ''}`,
      cat: what,
      ph: 'i',
      s: 't',
      ts: r.timeUs,
      pid: this.#pid,
      tid,
      args: { id: r.id, type: r.type, count: r.count, name: r.name, detail: r.detail },
    });
  }

  /** One counter sample of every subscription's queue depth. */
  sample(stats: BusStats): void {
    const args: Record<string, number> = {};
    for (const s of stats.subscriptions) args[s.name ?? `${s.pattern} #${s.id}`] = s.depth;
    this.events.push({ name: 'queue depth', cat: 'queue', ph: 'C', ts: Date.now() * 1000, pid: this.#pid, tid: 0, args });
  }

  async write(file: string, lost: number): Promise<TraceSummary> {
    const durationMs = (Date.now() * 1000 - this.#t0Us) / 1000;
    const body = { traceEvents: this.events, displayTimeUnit: 'ms', otherData: { producer: 'sluice', lostRecords: lost } };
    await writeFile(file, JSON.stringify(body));
    return { file, events: this.events.length, lost, durationMs };
  }
}

interface Traceable {
  stats(): BusStats;
  use(o: Observer): { remove(): void };
}

/** Records the bus for `durationMs` and writes the trace file. */
export async function traceBus(bus: Traceable, options: TraceOptions): Promise<TraceSummary> {
  if (!options || typeof options.file !== 'string' || options.file === '') throw new TypeError('trace needs options.file');
  const { durationMs } = options;
  if (!Number.isFinite(durationMs) || durationMs < 0) throw new RangeError(`durationMs must be a number >= 0, got ${durationMs}`);
  const sampleMs = options.sampleMs ?? 10;
  const rec = new TraceRecorder();
  const lostNow = () => Object.values(bus.stats().observers?.lost ?? {}).reduce((a, b) => a + b, 0);
  const handle = bus.use(rec.observer());
  const lost0 = lostNow();
  rec.sample(bus.stats());
  const timer = setInterval(() => rec.sample(bus.stats()), sampleMs);
  const { signal } = options;
  try {
    await new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(t);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, durationMs);
      signal?.addEventListener('abort', done, { once: true });
    });
  } finally {
    clearInterval(timer);
  }
  rec.sample(bus.stats());
  const lost = lostNow() - lost0;
  handle.remove();
  return rec.write(options.file, lost);
}
