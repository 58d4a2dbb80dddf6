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

export interface SubscribeOptions<Ev> extends QueueOptions {
  /** Handlers running at once (default 1: events are handled in order). */
  concurrency?: number;
  /** A JS predicate (runs on the JS thread) or declarative filters (run in the core). */
  filter?: ((event: Ev) => boolean) | Filter | Filter[];
  /** Called with each error a handler throws or rejects with. */
  onError?: (error: unknown, event: Ev) => void;
  /** Events taken from the core per wake of the JS thread (default 256). */
  batchSize?: number;
  name?: string;
}

export interface StreamOptions extends QueueOptions {
  signal?: AbortSignal;
  /** Shown in `stats()`. */
  name?: string;
  filter?: Filter | Filter[];
  batchSize?: number;
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
  subscriptions: SubscriptionStats[];
  /** Running WASM deployments of this bus, each with its own counters and queues. */
  deployments?: import('./deployment.js').DeploymentInfo[];
  /** Present once an observer was registered: the observers' own counters (losses, failures). */
  observers?: import('./observe/hub.js').ObserverStats;
}
