import { performance } from 'node:perf_hooks';
import type { NativeAuditGate, NativeRecorder } from '../native.js';
import type { SluiceEvent } from '../types.js';
import type { AuditRecord, HandlerTap, ObservedBus, Observer, ObserverKind } from './observer.js';
import {
  KINDS,
  KIND_BIT,
  decodeRecords,
  zeroCounts,
  type CountsByKind,
  type KindName,
  type LifecycleRecord,
} from './records.js';

/** Records taken from the core per N-API call. */
const DRAIN_MAX = 8192;
/** Held WASM runs taken from the core's audit gate per N-API call. */
const GATE_MAX = 1024;
/** While the bus waits for held WASM runs to be audited, it looks again this often. */
const GATE_POLL_MS = 5;
/** Even without a wake-up from the core, observers see records at least this often. */
const FLUSH_MS = 50;
/** Sampling of a failing tracing observer is halved down to this rate at most. */
const MAX_SAMPLE_EVERY = 1 << 20;
const AUDIT_RETRY_MIN_MS = 5;
const AUDIT_RETRY_MAX_MS = 1000;

/** Counters about the observers themselves (`bus.stats().observers`). */
export interface ObserverStats {
  observers: number;
  /** Records handed to hooks. */
  records: number;
  /** Records the core's ring could not hold, per kind (a loss, counted, never silent). */
  lost: CountsByKind;
  /** Metrics hook calls that threw: dropped and counted. */
  metricsFailures: number;
  /** Tracing hook calls that threw; each halved its observer's sampling rate. */
  tracingFailures: number;
  /** Failed audit writes (each retried until durable). */
  auditFailures: number;
  /** Audit writes in flight: handled events not yet acknowledged. */
  auditPending: number;
  /** Audit records given up only because the bus was shut down while their sink kept failing. */
  auditAbandoned: number;
  /**
   * WASM handler runs whose verdict the core holds until their audit record is durable (waiting
   * to be written, or being written).
   */
  auditHeld: number;
}

/** A held WASM run as the core's audit gate sends it (crates/core/src/audit.rs `encode_held`). */
type RawHeld = [number, number, number, string, string, string, string | null, string, string, string, number, string | null];

interface Entry {
  obs: Observer;
  kind: ObserverKind;
  /** Tracing: current 1-in-N rate (grows on failure). */
  sampleEvery: number;
  hooks: ((r: LifecycleRecord) => void)[];
  closed: boolean;
}

function kindOf(obs: Observer): ObserverKind {
  if (obs.kind) return obs.kind;
  if (obs.audit && !KINDS.some((k) => obs[k])) return 'audit';
  return 'metrics';
}

/** FNV-1a of a string: a cheap, stable per-event sampling key on the JS side. */
function hashId(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The sampled flag of a W3C traceparent, or undefined when it has none / does not parse. */
function traceSampled(tp: string | null): boolean | undefined {
  if (tp === null || tp.length < 55 || tp[2] !== '-' || tp[35] !== '-' || tp[52] !== '-') return undefined;
  const flags = parseInt(tp.slice(53, 55), 16);
  return Number.isNaN(flags) ? undefined : (flags & 1) === 1;
}

const KIND_INDEX = Object.fromEntries(KINDS.map((k, i) => [k, i])) as Record<KindName, number>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `tap.start`'s answer for a run that is counted but not timed (sampled timing). */
const UNTIMED = -2;

/**
 * Connects the core's lifecycle recorder to the registered observers: sets what the core
 * records, drains it in batches (woken by the core when its ring fills, and on a timer), times JS
 * handlers, and applies each observer kind's failure policy.
 */
export class ObserverHub {
  readonly #recorder: NativeRecorder;
  readonly #gate: NativeAuditGate;
  /** Tickets of held WASM runs now durable, released to the core together. */
  #released: number[] = [];
  #gateOn = false;
  readonly #bus: ObservedBus;
  readonly #source: string;
  readonly #onTap: (tap: HandlerTap | undefined) => void;
  #entries: Entry[] = [];
  /** Per kind index: the entries with a hook for it. */
  #byKind: Entry[][] = KINDS.map(() => []);
  #batchers: Entry[] = [];
  #auditors: Entry[] = [];
  #injectors: Entry[] = [];
  #coreSampleEvery = 1;
  #lastCounts: number[] = KINDS.map(() => 0);
  #lastLost: number[] = KINDS.map(() => 0);
  #local: LifecycleRecord[] = [];
  #localQueued = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #flushing = false;
  #shutdown = false;
  /**
   * JS handler records are made only while someone wants them: 0 none, 1 every run (a metrics
   * or audit observer hooks the kind), 2 sampled runs only (only tracing observers do).
   */
  #startMode: 0 | 1 | 2 = 0;
  #endMode: 0 | 1 | 2 = 0;
  /** Batch observers count JS handler runs without records. */
  #countHandlers = false;
  /** 1 in `#timingEvery` JS handler runs is timed (metrics observers' `handlerTiming`). */
  #timingEvery = 1;
  #untilTimed = 1;
  /** Untimed JS runs per subscription since the last flush: [name, acks, errors]. */
  #untimed = new Map<number, [string | null, number, number]>();
  #jsStarted = 0;
  #jsEnded = 0;
  /**
   * The clock reading at the end of the last handler run, while the next run can start from it:
   * within one synchronous stretch with nothing else in between (the subscription calls `gap()`
   * before it takes a batch; a microtask ends the stretch).
   */
  #lastEnd = -1;
  #gapQueued = false;
  readonly #gap = (): void => {
    this.#gapQueued = false;
    this.#lastEnd = -1;
  };
  readonly #stats: ObserverStats = {
    observers: 0,
    records: 0,
    lost: zeroCounts(),
    metricsFailures: 0,
    tracingFailures: 0,
    auditFailures: 0,
    auditPending: 0,
    auditAbandoned: 0,
    auditHeld: 0,
  };

  constructor(
    recorder: NativeRecorder,
    gate: NativeAuditGate,
    bus: ObservedBus,
    source: string,
    onTap: (tap: HandlerTap | undefined) => void,
  ) {
    this.#recorder = recorder;
    this.#gate = gate;
    gate.setWaker(() => this.#drainGate());
    this.#bus = bus;
    this.#source = source;
    this.#onTap = onTap;
    recorder.setWaker(() => this.flush());
  }

  /** Registers an observer; the returned function removes it. */
  add(obs: Observer): () => void {
    if (obs === null || typeof obs !== 'object') throw new TypeError('an observer is an object with optional hooks');
    const kind = kindOf(obs);
    const sampleEvery = obs.sampleEvery ?? 1;
    if (!Number.isInteger(sampleEvery) || sampleEvery < 1) {
      throw new RangeError(`sampleEvery must be a positive integer, got ${String(obs.sampleEvery)}`);
    }
    if (kind === 'audit' && typeof obs.audit !== 'function') throw new TypeError('an audit observer needs an audit() hook');
    const entry: Entry = { obs, kind, sampleEvery, hooks: [], closed: false };
    entry.hooks = KINDS.map((k) => {
      const h = obs[k] as ((r: LifecycleRecord) => void) | undefined;
      return typeof h === 'function' ? h.bind(obs) : (undefined as unknown as (r: LifecycleRecord) => void);
    });
    this.flush();
    this.#entries.push(entry);
    this.#reconfigure();
    obs.attach?.(this.#bus);
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      this.flush();
      // WASM runs held so far are still written by the observers registered now.
      if (this.#gateOn) this.#drainGate();
      this.#entries = this.#entries.filter((e) => e !== entry);
      entry.closed = true;
      this.#reconfigure();
      void Promise.resolve()
        .then(() => obs.close?.())
        .catch((e: unknown) => process.emitWarning(`sluice observer close() failed: ${String(e)}`));
    };
  }

  get observing(): boolean {
    return this.#entries.length > 0;
  }

  #reconfigure(): void {
    let every = 0;
    let sampled = 0;
    let counted = 0;
    let rate = Infinity;
    this.#byKind = KINDS.map(() => []);
    for (const e of this.#entries) {
      let bits = 0;
      KINDS.forEach((k, i) => {
        if (e.hooks[i]) {
          bits |= KIND_BIT[k];
          this.#byKind[i]!.push(e);
        }
      });
      if (e.kind === 'tracing') {
        sampled |= bits;
        rate = Math.min(rate, e.obs.sampleEvery ?? 1);
      } else {
        every |= bits;
      }
      if (e.obs.batch) counted = (1 << KINDS.length) - 1;
    }
    this.#batchers = this.#entries.filter((e) => typeof e.obs.batch === 'function');
    this.#auditors = this.#entries.filter((e) => typeof e.obs.audit === 'function');
    this.#injectors = this.#entries.filter((e) => typeof e.obs.inject === 'function');
    // WASM runs are held in the core only while someone audits them: otherwise their workers
    // settle on their own and JS stays off their path.
    const gateOn = this.#auditors.length > 0;
    if (gateOn !== this.#gateOn) {
      this.#gateOn = gateOn;
      this.#gate.setOn(gateOn);
      if (gateOn) this.#gate.arm();
    }
    this.#coreSampleEvery = rate === Infinity ? 1 : rate;
    // Counts are cumulative in the core; restart the deltas from what it has now.
    this.#recorder.setInterest(counted, every, sampled & ~every, this.#coreSampleEvery);
    const mode = (k: KindName): 0 | 1 | 2 => {
      const hooked = this.#byKind[KIND_INDEX[k]]!;
      if (hooked.length === 0) return 0;
      return hooked.some((e) => e.kind !== 'tracing') ? 1 : 2;
    };
    this.#startMode = mode('handlerStart');
    this.#endMode = mode('handlerEnd');
    const timers = [...this.#byKind[KIND_INDEX.handlerStart]!, ...this.#byKind[KIND_INDEX.handlerEnd]!];
    const timing = (e: Entry) => (e.kind === 'metrics' && Number.isInteger(e.obs.handlerTiming) ? Math.max(1, e.obs.handlerTiming!) : 1);
    this.#timingEvery = timers.length > 0 ? Math.min(...timers.map(timing)) : 1;
    this.#untilTimed = 1;
    this.#countHandlers = counted !== 0;
    const tapNeeded = this.#startMode !== 0 || this.#endMode !== 0 || this.#countHandlers || this.#auditors.length > 0;
    this.#onTap(tapNeeded ? this.#tap : undefined);
    if (this.#entries.length > 0 && this.#timer === undefined) {
      this.#timer = setInterval(() => this.flush(), FLUSH_MS);
      this.#timer.unref();
    } else if (this.#entries.length === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
    this.#recorder.arm();
  }

  /** A traceparent for an event published without one, from the first tracing observer that has one. */
  inject(type: string): string | undefined {
    for (const e of this.#injectors) {
      try {
        const tp = e.obs.inject!(type);
        if (tp) return tp;
      } catch {
        this.#failed(e);
      }
    }
    return undefined;
  }

  get injecting(): boolean {
    return this.#injectors.length > 0;
  }

  readonly #tap: HandlerTap = {
    // The clock is read only when a record or an audit will carry the time: reading it can cost
    // more than a small handler on a virtual machine.
    gap: () => {
      this.#lastEnd = -1;
    },
    start: (sub, name, event) => {
      if (this.#countHandlers) this.#jsStarted++;
      // Sampled timing: most runs are only counted (no clock read, no record of their own).
      if (this.#timingEvery > 1 && --this.#untilTimed > 0 && this.#auditors.length === 0) {
        this.#lastEnd = -1; // the next timed run cannot start from an earlier run's end
        return UNTIMED;
      }
      this.#untilTimed = this.#timingEvery;
      const s = this.#startMode;
      const e = this.#endMode;
      const wantStart = s === 1 || (s === 2 && this.#traced(event));
      const wantEnd = e === 1 || (e === 2 && this.#traced(event)) || this.#auditors.length > 0;
      if (!wantStart && !wantEnd) return -1;
      // Back-to-back handler runs share a clock read: one run's end is the next one's start.
      const t0 = this.#lastEnd >= 0 ? this.#lastEnd : performance.now();
      this.#lastEnd = -1;
      if (wantStart) this.#pushLocal('handlerStart', sub, name, event, t0, 0, null);
      return t0;
    },
    end: (sub, name, event, t0, error) => {
      if (this.#countHandlers) this.#jsEnded++;
      if (t0 === UNTIMED) {
        let u = this.#untimed.get(sub);
        if (u === undefined) this.#untimed.set(sub, (u = [name, 0, 0]));
        if (error) u[2]++;
        else u[1]++;
        return undefined;
      }
      if (t0 < 0) return undefined;
      const t1 = performance.now();
      this.#lastEnd = t1;
      if (!this.#gapQueued) {
        this.#gapQueued = true;
        queueMicrotask(this.#gap);
      }
      const durationUs = Math.round((t1 - t0) * 1000);
      const m = this.#endMode;
      if (m === 1 || (m === 2 && this.#traced(event))) this.#pushLocal('handlerEnd', sub, name, event, t1, durationUs, error ? 'error' : 'ack');
      if (this.#auditors.length === 0) return undefined;
      const rec: AuditRecord = {
        time: performance.timeOrigin + t1,
        id: event.id,
        type: event.type,
        source: event.source ?? this.#source,
        subscription: sub,
        name,
        outcome: error ? 'error' : 'ack',
        durationUs,
        traceparent: event.traceparent ?? null,
        runtime: 'js',
      };
      return this.#audit(rec).then(() => undefined);
    },
  };

  /** Whether tracing (at the lowest rate asked for) samples this event; see `#sees`. */
  #traced(event: SluiceEvent): boolean {
    const flag = traceSampled(event.traceparent ?? null);
    if (flag !== undefined) return flag;
    const rate = this.#coreSampleEvery;
    return rate <= 1 || hashId(event.id) % rate === 0;
  }

  #pushLocal(
    kind: 'handlerStart' | 'handlerEnd',
    sub: number,
    name: string | null,
    event: SluiceEvent,
    at: number,
    durationUs: number,
    reason: string | null,
  ): void {
    this.#local.push({
      kind,
      timeUs: Math.round((performance.timeOrigin + at) * 1000),
      subscription: sub,
      id: event.id,
      type: event.type,
      traceparent: event.traceparent ?? null,
      count: 1,
      reason,
      durationUs,
      name,
      detail: null,
      eventTimeMs: event.time,
      origin: 'js',
    });
    if (!this.#localQueued) {
      this.#localQueued = true;
      setImmediate(() => {
        this.#localQueued = false;
        this.flush();
      });
    }
  }

  /** Untimed JS runs become one `handlerEnd` record per subscription and outcome. */
  #flushUntimed(): void {
    const timeUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
    for (const [sub, u] of this.#untimed) {
      for (const [reason, count] of [['ack', u[1]], ['error', u[2]]] as const) {
        if (count === 0) continue;
        this.#local.push({
          kind: 'handlerEnd',
          timeUs,
          subscription: sub,
          id: null,
          type: null,
          traceparent: null,
          count,
          reason,
          durationUs: 0,
          name: u[0],
          detail: null,
          eventTimeMs: 0,
          origin: 'js',
          untimed: true,
        });
      }
    }
    this.#untimed.clear();
  }

  /**
   * Every audit sink writes the record; each failure is retried until it succeeds. Resolves
   * true once durable everywhere, false if given up at shutdown.
   */
  async #audit(rec: AuditRecord): Promise<boolean> {
    this.#stats.auditPending++;
    try {
      const done = await Promise.all(this.#auditors.map((e) => this.#auditOne(e, rec)));
      return done.every(Boolean);
    } finally {
      this.#stats.auditPending--;
    }
  }

  async #auditOne(e: Entry, rec: AuditRecord): Promise<boolean> {
    let delay = AUDIT_RETRY_MIN_MS;
    for (;;) {
      try {
        await e.obs.audit!(rec);
        return true;
      } catch (err) {
        this.#stats.auditFailures++;
        if (this.#shutdown) {
          this.#stats.auditAbandoned++;
          process.emitWarning(`sluice: audit record for event ${rec.id} abandoned at shutdown: ${String(err)}`);
          return false;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, AUDIT_RETRY_MAX_MS);
      }
    }
  }

  /**
   * Takes the WASM runs the core holds for audit, writes each through every audit observer, and
   * releases it (the core then settles its verdict) once durable. A record abandoned at shutdown
   * is not released: its event stays unacknowledged (a durable subscription delivers it again).
   */
  #drainGate(): void {
    for (;;) {
      const held = JSON.parse(this.#gate.take(GATE_MAX)) as RawHeld[];
      for (const h of held) {
        const rec: AuditRecord = {
          time: h[1] / 1000,
          id: h[3],
          type: h[4],
          source: h[5],
          subscription: h[2],
          name: h[7],
          outcome: h[9],
          durationUs: h[10],
          traceparent: h[11],
          runtime: 'wasm',
          module: h[8],
        };
        const ticket = h[0];
        void this.#audit(rec).then((durable) => durable && this.#release(ticket));
      }
      if (held.length < GATE_MAX) break;
    }
    this.#gate.arm();
  }

  #release(ticket: number): void {
    // Records of one fsync group resolve together: one crossing into the core for all of them.
    if (this.#released.push(ticket) === 1) {
      queueMicrotask(() => {
        const tickets = Float64Array.from(this.#released);
        this.#released = [];
        this.#gate.release(tickets);
      });
    }
  }

  /** Resolves once no WASM run is held for audit (polling: the core's wake-up does not keep Node alive). */
  async auditIdle(): Promise<void> {
    for (;;) {
      this.#drainGate();
      if (this.#gate.pending === 0) return;
      await sleep(GATE_POLL_MS);
    }
  }

  #failed(e: Entry): void {
    if (e.kind === 'tracing') {
      this.#stats.tracingFailures++;
      e.sampleEvery = Math.min(e.sampleEvery * 2, MAX_SAMPLE_EVERY);
    } else {
      this.#stats.metricsFailures++;
    }
  }

  /**
   * Whether a tracing observer sees this record. The core already kept only sampled events at
   * the lowest rate any tracing observer asked for; here each observer's own rate applies, and a
   * degraded observer (its hooks threw) keeps a further 1 in (current / configured) events, by id
   * so that all records of one event stay together.
   */
  #sees(e: Entry, r: LifecycleRecord): boolean {
    if (e.kind !== 'tracing') return true;
    const flag = traceSampled(r.traceparent);
    if (flag === false) return false;
    if (r.id === null) return true;
    const base = e.obs.sampleEvery ?? 1;
    if (flag === undefined) {
      // Without a traceparent: JS handler records were not sampled by the core at all.
      const extra = r.origin === 'js' ? base : Math.round(base / this.#coreSampleEvery);
      if (extra > 1 && hashId(r.id) % extra !== 0) return false;
    }
    const degrade = Math.round(e.sampleEvery / base);
    return degrade <= 1 || hashId(`${r.id}#`) % degrade === 0;
  }

  #dispatch(records: LifecycleRecord[]): void {
    for (const r of records) {
      const i = KIND_INDEX[r.kind];
      const entries = this.#byKind[i];
      if (!entries) continue;
      for (const e of entries) {
        if (e.closed || !this.#sees(e, r)) continue;
        this.#stats.records++;
        try {
          e.hooks[i]!(r);
        } catch {
          this.#failed(e);
        }
      }
    }
  }

  /** Drains the core's records (and the JS handlers' ones) to the observers. */
  flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (;;) {
        const batch = decodeRecords(this.#recorder.drain(DRAIN_MAX));
        const counts = zeroCounts();
        const lost = zeroCounts();
        KINDS.forEach((k, i) => {
          counts[k] = (batch.counts[i] ?? 0) - this.#lastCounts[i]!;
          lost[k] = (batch.lost[i] ?? 0) - this.#lastLost[i]!;
          this.#stats.lost[k] += lost[k];
        });
        this.#lastCounts = batch.counts;
        this.#lastLost = batch.lost;
        // JS handler records join the batch; their counts add to the core's.
        if (batch.records.length < DRAIN_MAX && this.#untimed.size > 0) this.#flushUntimed();
        const local = batch.records.length < DRAIN_MAX ? this.#local.splice(0) : [];
        counts.handlerStart += this.#jsStarted;
        counts.handlerEnd += this.#jsEnded;
        this.#jsStarted = 0;
        this.#jsEnded = 0;
        const records = local.length ? batch.records.concat(local) : batch.records;
        if (records.length) this.#dispatch(records);
        const any = records.length > 0 || KINDS.some((k) => counts[k] !== 0 || lost[k] !== 0);
        if (any) {
          for (const e of this.#batchers) {
            try {
              e.obs.batch!({ counts, lost, records: records.length });
            } catch {
              this.#failed(e);
            }
          }
        }
        if (batch.records.length < DRAIN_MAX) break;
      }
    } finally {
      this.#flushing = false;
      this.#recorder.arm();
    }
  }

  stats(): ObserverStats {
    return { ...this.#stats, observers: this.#entries.length, lost: { ...this.#stats.lost }, auditHeld: this.#gate.pending };
  }

  /** The bus is shutting down: a sink that still fails after this gives up (counted). */
  markShutdown(): void {
    this.#shutdown = true;
  }

  async close(): Promise<void> {
    this.flush();
    // Whatever is still held goes to the writers (and is abandoned, unreleased, if they fail):
    // switching the gate off below would otherwise settle it unaudited.
    if (this.#gateOn) this.#drainGate();
    this.#shutdown = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    const entries = this.#entries;
    this.#entries = [];
    this.#reconfigure();
    for (const e of entries) {
      e.closed = true;
      try {
        await e.obs.close?.();
      } catch (err) {
        process.emitWarning(`sluice observer close() failed: ${String(err)}`);
      }
    }
  }
}

export type { KindName };
