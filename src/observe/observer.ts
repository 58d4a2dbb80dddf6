import type { KindName, LifecycleRecord, ObservationBatch } from './records.js';
import type { SluiceEvent } from '../types.js';

/**
 * How an observer's hooks fail, as users of such hooks expect:
 * - `metrics`: synchronous; a hook that throws has that call dropped and counted, nothing else
 *   changes.
 * - `tracing`: synchronous, sees sampled events only (`sampleEvery`); a hook that throws halves
 *   its observer's sampling rate (degrades), counted.
 * - `audit`: `audit()` is asynchronous and strongly consistent: a handled event is not
 *   acknowledged (its handler's slot and the bus's drain stay held; for a WASM handler, its
 *   verdict is held in the core) until its audit record is durably written; a failed write is
 *   retried, never dropped.
 */
export type ObserverKind = 'metrics' | 'tracing' | 'audit';

type Hook<K extends KindName> = (record: LifecycleRecord<K>) => void;

/** What an audit observer writes for each handled event. */
export interface AuditRecord {
  /** Unix ms when the handler finished. */
  time: number;
  id: string;
  type: string;
  source: string;
  subscription: number;
  /** JS: the subscription's name, if it has one. WASM: the deployment's name. */
  name: string | null;
  /**
   * JS: `ack` when the handler returned, `error` when it threw or rejected. WASM: `ack`,
   * `retry`, `reject` or the error code (`ERR_TRAP`, `ERR_TIMEOUT`, …).
   */
  outcome: 'ack' | 'error' | 'retry' | 'reject' | (string & {});
  durationUs: number;
  traceparent: string | null;
  /** Where the handler ran. */
  runtime: 'js' | 'wasm';
  /** WASM: the hash of the module version that ran. */
  module?: string;
}

/** A plain object with optional typed hooks; register with `bus.use(observer)`. */
export interface Observer {
  name?: string;
  /** Failure policy; default `metrics` (or `audit` when only `audit` is given). */
  kind?: ObserverKind;
  /** Tracing: 1 in `sampleEvery` events without a sampled traceparent is seen (default 1). */
  sampleEvery?: number;
  /**
   * Metrics: time 1 in `handlerTiming` JS handler runs (default 1: every run). Reading the clock
   * can cost more than a small handler on a virtual machine; the untimed runs are still counted
   * exactly, as `handlerEnd` records with `untimed: true` that stand for `count` runs of one
   * subscription and outcome (one such record per subscription and outcome per batch). Applies
   * only while every observer hooking `handlerStart`/`handlerEnd` asks for it, and never to
   * WASM handlers (the core times those off the JS thread).
   */
  handlerTiming?: number;

  published?: Hook<'published'>;
  dropped?: Hook<'dropped'>;
  expired?: Hook<'expired'>;
  delivered?: Hook<'delivered'>;
  handlerStart?: Hook<'handlerStart'>;
  handlerEnd?: Hook<'handlerEnd'>;
  retried?: Hook<'retried'>;
  deadLettered?: Hook<'deadLettered'>;
  sandboxTrap?: Hook<'sandboxTrap'>;
  sandboxLimit?: Hook<'sandboxLimit'>;
  rolloutStep?: Hook<'rolloutStep'>;

  /** Once per drained batch: per-kind counts since the previous batch, and any loss. */
  batch?(batch: ObservationBatch): void;

  /**
   * Tracing: called when an event is published without a `traceparent`; the returned W3C
   * traceparent travels in the event (into WASM handlers and onto their emits).
   */
  inject?(type: string): string | undefined;

  /** Audit: durably write the record; the event is acknowledged once this resolves. */
  audit?(record: AuditRecord): Promise<void> | void;

  /** Called by `bus.use()` with the bus (e.g. to read `stats()` at scrape time). */
  attach?(bus: ObservedBus): void;
  /** Called when the observer is removed or the bus closes. */
  close?(): void | Promise<void>;
}

/** What an observer may call on the bus it is attached to. */
export interface ObservedBus {
  stats(): import('../types.js').BusStats;
}

/** A JS handler's run as the subscription reports it to the observers. */
export interface HandlerTap {
  /** The subscription is about to do something else than run handlers (take a batch). */
  gap(): void;
  /** Returns a start time (performance.now() ms) to hand back to `end`, or -1 when untimed. */
  start(sub: number, name: string | null, event: SluiceEvent): number;
  /** `undefined` when nothing holds the acknowledgement; else resolves once audits are durable. */
  end(sub: number, name: string | null, event: SluiceEvent, t0: number, error: boolean): Promise<void> | undefined;
}
