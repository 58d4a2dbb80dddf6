import type { KindName, LifecycleRecord, ObservationBatch } from './records.js';
import type { SluiceEvent } from '../types.js';

/**
 * How an observer's hooks fail, as users of such hooks expect:
 * - `metrics`: synchronous; a hook that throws has that call dropped and counted, nothing else
 *   changes.
 * - `tracing`: synchronous, sees sampled events only (`sampleEvery`); a hook that throws halves
 *   its observer's sampling rate (degrades), counted.
 * - `audit`: `audit()` is asynchronous and strongly consistent: a handled event is not
 *   acknowledged (its handler's slot and the bus's drain stay held) until its audit record is
 *   durably written; a failed write is retried, never dropped.
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
  /** Subscription name, if it has one. */
  name: string | null;
  /** `ack` when the handler returned, `error` when it threw or rejected. */
  outcome: 'ack' | 'error';
  durationUs: number;
  traceparent: string | null;
}

/** A plain object with optional typed hooks; register with `bus.use(observer)`. */
export interface Observer {
  name?: string;
  /** Failure policy; default `metrics` (or `audit` when only `audit` is given). */
  kind?: ObserverKind;
  /** Tracing: 1 in `sampleEvery` events without a sampled traceparent is seen (default 1). */
  sampleEvery?: number;

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
