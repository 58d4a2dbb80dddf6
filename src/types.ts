import type { Context } from './context.js';

/** Maps topic names to the type of their `data`. */
export type EventMap = Record<string, unknown>;

/** A CloudEvents-shaped envelope. `time` and `deadline` are Unix milliseconds. */
export interface SluiceEvent<T extends string = string, D = unknown> {
  id: string;
  type: T;
  source: string;
  time: number;
  data: D;
  subject?: string;
  traceparent?: string;
  deadline?: number;
  /** Which delivery this is when the event is delivered again (2 for the first retry). */
  attempt?: number;
}

type Split<S extends string> = S extends `${infer H}.${infer R}` ? [H, ...Split<R>] : [S];
type MatchSegments<K extends string[], P extends string[]> = P extends ['>']
  ? K extends [string, ...string[]]
    ? true
    : false
  : P extends [infer PH, ...infer PR extends string[]]
    ? K extends [infer KH, ...infer KR extends string[]]
      ? PH extends '*'
        ? MatchSegments<KR, PR>
        : PH extends KH
          ? MatchSegments<KR, PR>
          : false
      : false
    : K extends []
      ? true
      : false;

/** The topics of `E` that pattern `P` matches (`*` one segment, a final `>` the rest). */
export type TopicsMatching<E extends EventMap, P extends string> = {
  [K in keyof E & string]: MatchSegments<Split<K>, Split<P>> extends true ? K : never;
}[keyof E & string];

/** The event a subscriber to `P` receives: a union discriminated by `type`. */
export type EventFor<E extends EventMap, P extends string> = string extends keyof E
  ? SluiceEvent<string, E[string]>
  : [TopicsMatching<E, P>] extends [never]
    ? SluiceEvent<string, unknown>
    : { [K in TopicsMatching<E, P>]: SluiceEvent<K, E[K]> }[TopicsMatching<E, P>];

/** What a full queue does: wait, drop the new event, drop the oldest, throw `QueueFull`, or spill. */
export type Overflow = 'block' | 'drop-newest' | 'drop-oldest' | 'error' | 'spill';

export type FilterOp = 'eq' | 'ne' | 'gt' | 'gte' | 'lt' | 'lte' | 'in' | 'prefix' | 'exists';
type Scalar = string | number | boolean | null;

/**
 * A declarative filter, evaluated in the Rust core before an event is queued (it never wakes the
 * JS thread). An array of filters must all hold.
 */
export type Filter =
  | { type: string }
  | { attr: 'type' | 'subject' | 'id'; op?: FilterOp; value?: Scalar | Scalar[] }
  | { field: string; op?: FilterOp; value?: Scalar | Scalar[] }
  | { not: Filter }
  | { any: Filter[] };

export type Handler<Ev> = (event: Ev, ctx: Context) => unknown | Promise<unknown>;

export interface QueueOptions {
  /** Queue capacity in events (1 … 16 777 216). */
  capacity?: number;
  overflow?: Overflow;
}

export type DeliveryGuarantee = 'at-most-once' | 'at-least-once';

export interface RetryOptions {
  /** Deliveries in all, the first included (1 … 1000; > 1 needs 'at-least-once'). Default 1. */
  maxAttempts?: number;
  /** 'exponential' doubles from `initialMs` up to `maxMs`; 'fixed' waits `initialMs`. */
  backoff?: 'exponential' | 'fixed';
  /** Default 100. */
  initialMs?: number;
  /** Cap of the exponential delay (default 30 000). */
  maxMs?: number;
  /** 0 … 1: each delay is drawn from [d·(1−jitter), d]. Default 0. */
  jitter?: number;
}

/**
 * What happens to an event after its handler: retries with backoff, a dead-letter topic, per-key
 * ordering, a dedupe window. See docs/delivery.md.
 */
export interface DeliveryOptions {
  /**
   * 'at-most-once' (default): a failure is final. 'at-least-once': retried per `retry`; on a bus
   * with a journal the subscription is also durable (it needs a `name`): events are persisted
   * before `publish()` resolves and released when settled, and a subscription of the same name
   * in a later process first receives what was not. Its queue never blocks or drops: what does
   * not fit stays in the journal. See docs/journal.md.
   */
  deliveryGuarantee?: DeliveryGuarantee;
  retry?: RetryOptions;
  /** Topic that receives `{ reason, attempts, subscription, deadLetteredAt, event }` for each
   * event given up on; without it such events are counted `discarded`. */
  deadLetter?: string;
  /** 'per-key': one event per key at a time; later events of a key wait behind a retrying one. */
  ordering?: 'none' | 'per-key';
  /** The ordering key: 'subject', 'id', 'type' or 'data.<field>[.<field>…]'. */
  key?: string;
  /** Suppress events whose id was seen within the window (counted `duplicatesSuppressed`). */
  dedupe?: { windowMs?: number; size?: number };
}

export interface SubscribeOptions<Ev> extends QueueOptions, DeliveryOptions {
  /** Handlers running at once (default 1: events are handled in order). */
  concurrency?: number;
  /** A JS predicate (runs on the JS thread) or declarative filters (run in the core). */
  filter?: ((event: Ev) => boolean) | Filter | Filter[];
  /** Called with each error a handler throws or rejects with. */
  onError?: (error: unknown, event: Ev) => void;
  /** Events taken from the core per wake of the JS thread (default 256). */
  batchSize?: number;
  /** Shown in `stats()`; on a bus with a journal, the durable subscription's identity. */
  name?: string;
}

export interface StreamOptions extends QueueOptions {
  signal?: AbortSignal;
  /** Shown in `stats()`. */
  name?: string;
  filter?: Filter | Filter[];
  batchSize?: number;
}

export interface ReplayOptions {
  /** Declarative filters over the original events (default: all). */
  filter?: Filter | Filter[];
  /** At most this many, oldest first (default: all kept). */
  limit?: number;
  /** Bounds waits for queue space and is the replayed events' Context. */
  ctx?: Context;
}

export interface PublishOptions {
  ctx?: Context;
  id?: string;
  subject?: string;
  traceparent?: string;
}

export interface CloseOptions {
  /** Bounds the drain: when it ends, what is left is dropped and counted. */
  ctx?: Context;
}

export interface SubscriptionStats {
  id: number;
  pattern: string;
  name: string | null;
  overflow: Overflow;
  capacity: number;
  depth: number;
  published: number;
  delivered: number;
  droppedNewest: number;
  droppedOldest: number;
  droppedFull: number;
  droppedCanceled: number;
  droppedClosed: number;
  expired: number;
  failed: number;
  filtered: number;
  blockedPublishers: number;
  /** How long publishers have found this `block` queue full (ms); 0 when none is blocked. */
  blockedForMs: number;
  deliveryGuarantee: DeliveryGuarantee;
  acked: number;
  /** Redeliveries scheduled. */
  retried: number;
  deadLettered: number;
  /** Given up with no dead-letter topic. */
  discarded: number;
  duplicatesSuppressed: number;
  /** Taken and not settled yet (running, waiting to retry, held behind their key). */
  inFlight: number;
  retrying: number;
  held: number;
  /** Journal-backed (at-least-once with a name, on a bus with a journal). */
  durable: boolean;
  /** Events that found the queue full and went to (or stayed in) the journal. */
  spilled: number;
  /** Spill writes that failed (disk full, read-only); the publisher got the error. */
  spillErrors: number;
}

export interface JournalStats {
  dir: string;
  fsync: 'always' | 'batch' | 'never';
  closed: boolean;
  segments: number;
  bytes: number;
  appended: number;
  acknowledged: number;
  /** Events durable subscriptions have not acknowledged (kept on disk for a later process). */
  unacknowledged: number;
  /** Journal writes of `tryPublish` calls (and WASM handlers' emits) that failed after the call had returned. */
  lostAfterReturn: number;
  /** What opening the journal found. */
  recovered: { events: number; unacknowledged: number; truncatedBytes: number; durationMs: number };
}

/** What `bus.close()` left behind. */
export interface CloseReport {
  /** Events durable subscriptions did not acknowledge; persisted, delivered again to a subscription of the same name after a restart. 0 without a journal. */
  unacknowledged: number;
}

export interface BusStats {
  closed: boolean;
  published: number;
  unrouted: number;
  depth: number;
  delivered: number;
  dropped: number;
  expired: number;
  failed: number;
  filtered: number;
  acked: number;
  retried: number;
  deadLettered: number;
  discarded: number;
  duplicatesSuppressed: number;
  /** Dead letters kept for `bus.replay` (in the journal too on a bus with one; see docs/delivery.md). */
  deadLetters: { retained: number; evicted: number; replayed: number; journalErrors: number };
  subscriptions: SubscriptionStats[];
  /** Running WASM deployments of this bus, each with its own counters and queues. */
  deployments?: import('./deployment.js').DeploymentInfo[];
  /** Present once an observer was registered: the observers' own counters (losses, failures). */
  observers?: import('./observe/hub.js').ObserverStats;
  /** Present on a bus with a journal. */
  journal?: JournalStats;
}
