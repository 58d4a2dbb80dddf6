import { Buffer } from 'node:buffer';
import { readFile } from 'node:fs/promises';
import {
  NativeBus,
  publishBatchTo,
  publishBytesTo,
  publishTo,
  tryPublishBatchTo,
  tryPublishBytesTo,
  tryPublishTo,
  type NativePending,
  type PublishAttrs,
} from './native.js';
import { Context, rememberContext } from './context.js';
import { EncodeError, InvalidArgument, fromNative } from './errors.js';
import { Subscription } from './subscription.js';
import { EventStream } from './stream.js';
import { Deployment, type DeployOptions } from './deployment.js';
import { ObserverHub } from './observe/hub.js';
import { loadObservers } from './observe/load.js';
import type { HandlerTap, Observer } from './observe/observer.js';
import { diagnoseBus, type DiagnoseOptions, type Diagnosis } from './observe/diagnose.js';
import { traceBus, type TraceOptions, type TraceSummary } from './observe/trace.js';
import { deliveryInit } from './delivery.js';
import { DurableTickets } from './durable-tickets.js';
import type {
  BusStats,
  CloseOptions,
  CloseReport,
  EventFor,
  EventMap,
  Filter,
  Handler,
  Overflow,
  PublishOptions,
  ReplayOptions,
  SluiceEvent,
  StreamOptions,
  SubscribeOptions,
  SubscriptionStats,
} from './types.js';

export interface BusOptions {
  /** Default queue capacity of each subscription (default 1024). */
  capacity?: number;
  /** Default overflow policy of each subscription (default 'block'). */
  overflow?: Overflow;
  /** The CloudEvents `source` of events published here (default 'sluice'). */
  source?: string;
  /**
   * Observers to register: objects, or module specifiers (`'sluice/otel'`, `'./audit.js'`,
   * relative to the working directory) loaded asynchronously — await `bus.ready` (or use
   * `Bus.create`) before publishing what they must see. See docs/observers.md.
   */
  observers?: (Observer | string)[];
  /** A local journal (a directory; no server) for at-least-once subscriptions and `spill`. */
  journal?: JournalOptions;
}

export interface JournalOptions {
  /** Created if missing; one bus (one process) at a time (`ERR_JOURNAL_LOCKED`). */
  dir: string;
  /**
   * When `publish()` of a persisted event resolves (default 'batch'):
   * - 'always': after an fsync covering its record, started at once (group commit).
   * - 'batch': after the next group fsync, at most `batchIntervalMs` later (fewer fsyncs).
   * - 'never': once the record is written to the kernel: survives a crash of this process,
   *   not of the machine (OS crash, power loss).
   */
  fsync?: 'always' | 'batch' | 'never';
  /** Upper bound of the wait for a group fsync under 'batch' (default 2 ms). */
  batchIntervalMs?: number;
  /** Segment file size in bytes (default 64 MiB). */
  segmentBytes?: number;
}

type DataOf<E extends EventMap, K> = K extends keyof E ? E[K] : unknown;

/** Bounds the JS-side topic cache like the core bounds its table. */
const MAX_CACHED_TOPICS = 4096;
/** Largest packed batch (bytes) that reuses the bus's scratch buffer; larger ones allocate their own. */
const SCRATCH_MAX = 1 << 20;

type FastPublish = ReturnType<NativeBus['fastPublish']>;

/** Encodes event data once, on the publisher's thread. Byte arrays travel as bytes. */
function encode(data: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(data === undefined ? null : data);
  } catch (e) {
    throw new EncodeError(`event data cannot be encoded as JSON: ${(e as Error).message}`, { cause: e });
  }
  if (json === undefined) throw new EncodeError(`event data of type ${typeof data} cannot be encoded as JSON`);
  return json;
}

function attrsOf(opts: PublishOptions | undefined): PublishAttrs | null {
  if (!opts || (opts.id === undefined && opts.subject === undefined && opts.traceparent === undefined)) return null;
  return { id: opts.id, subject: opts.subject, traceparent: opts.traceparent };
}

function declarative(filter: unknown): string | undefined {
  if (filter === undefined || typeof filter === 'function') return undefined;
  return JSON.stringify(filter as Filter | Filter[]);
}

function positiveInt(v: number | undefined, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v < 1) throw new InvalidArgument(`${name} must be a positive integer, got ${v}`);
  return v;
}

/**
 * A typed event bus over the Rust core. Each subscription has its own bounded queue and overflow
 * policy; publishing never takes a lock on the route table.
 */
export class Bus<E extends EventMap = EventMap> implements AsyncDisposable {
  readonly #native: NativeBus;
  readonly #handle: ReturnType<NativeBus['handle']>;
  /** `tryPublish`/`tryPublishBatch` without a Context: N-API functions bound to this bus. */
  readonly #fast: FastPublish;
  /** Topic → interned id (null: the core's table is full; publish by name). */
  readonly #topics = new Map<string, number | null>();
  /** The last topic published by id ('' is never a valid topic). */
  #lastTopic = '';
  #lastTopicId = 0;
  readonly #subs = new Set<Subscription>();
  readonly #streams = new Set<EventStream<SluiceEvent>>();
  #closing: Promise<CloseReport> | undefined;
  /**
   * `tryPublishBatch`'s packed buffer, reused across calls: the core copies each event's bytes
   * before the call returns, and a fresh ArrayBuffer per batch (zero-filled off the V8 heap,
   * swept later) showed in publisher profiles. Batches above `SCRATCH_MAX` get their own.
   */
  #scratch = new Uint8Array(0);
  #hub: ObserverHub | undefined;
  /** Shared with every subscription: the observers' handler tap while one is needed. */
  readonly #observe: { tap: HandlerTap | undefined } = { tap: undefined };
  readonly #deployments = new Set<Deployment>();
  /** Publishes waiting only for the journal's fsync, watched together. */
  readonly #durable: DurableTickets;
  readonly #source: string;
  /** Resolves once the observers named by module specifier in the options are registered. */
  readonly ready: Promise<void>;

  /** A bus whose configured observers (module specifiers too) are registered before it returns. */
  static async create<E extends EventMap = EventMap>(options: BusOptions = {}): Promise<Bus<E>> {
    const bus = new Bus<E>(options);
    await bus.ready;
    return bus;
  }

  constructor(options: BusOptions = {}) {
    if (options === null || typeof options !== 'object') throw new InvalidArgument('Bus options must be an object');
    try {
      const j = options.journal;
      if (j !== undefined && (j === null || typeof j !== 'object' || typeof j.dir !== 'string')) {
        throw new InvalidArgument('journal must be an object with a dir');
      }
      this.#native = new NativeBus({
        capacity: options.capacity,
        overflow: options.overflow,
        source: options.source,
        journal: j && { dir: j.dir, fsync: j.fsync, batchIntervalMs: j.batchIntervalMs, segmentBytes: j.segmentBytes },
      });
    } catch (e) {
      throw fromNative(e);
    }
    this.#handle = this.#native.handle();
    this.#durable = new DurableTickets(this.#handle, (p) => this.#wait(p, undefined));
    this.#fast = this.#native.fastPublish();
    this.#source = options.source ?? 'sluice';
    const observers = options.observers ?? [];
    if (!Array.isArray(observers)) throw new InvalidArgument('observers must be an array of observers or module specifiers');
    for (const o of observers) if (typeof o !== 'string') this.use(o);
    this.ready = loadObservers(observers.filter((o): o is string => typeof o === 'string')).then((loaded) => {
      for (const o of loaded) this.use(o);
    });
    // Reported through `ready`; not an unhandled rejection when nobody awaits it.
    this.ready.catch(() => {});
  }

  /**
   * Registers an observer (see `Observer`); returns a handle that removes it (also with `using`).
   */
  use(observer: Observer): Disposable & { remove(): void } {
    if (this.#hub === undefined) {
      this.#hub = new ObserverHub(this.#native.recorder(), this.#native.auditGate(), this, this.#source, (tap) => {
        this.#observe.tap = tap;
      });
    }
    let remove: () => void;
    try {
      remove = this.#hub.add(observer);
    } catch (e) {
      throw new InvalidArgument((e as Error).message, { cause: e });
    }
    return { remove, [Symbol.dispose]: remove };
  }

  #attrs(type: string, options: PublishOptions | undefined): PublishAttrs | null {
    const hub = this.#hub;
    if (hub === undefined || !hub.injecting || options?.traceparent !== undefined) return attrsOf(options);
    const traceparent = hub.inject(type);
    return traceparent === undefined ? attrsOf(options) : { id: options?.id, subject: options?.subject, traceparent };
  }

  /**
   * A batch is traced per event, like events published one by one: each asks the tracing
   * observer for its own traceparent ('' for none). Undefined when nothing is injected.
   */
  #batchTraceparents(events: ReadonlyArray<{ type: string }>): string[] | undefined {
    const hub = this.#hub;
    if (hub === undefined || !hub.injecting) return undefined;
    let any = false;
    const tps = events.map((e) => {
      const tp = hub.inject(e.type);
      if (tp === undefined) return '';
      any = true;
      return tp;
    });
    return any ? tps : undefined;
  }

  /** The interned id of a topic (validated once by the core), or null to publish by name. */
  #topicId(type: string): number | null {
    // Publishers mostly repeat one topic: comparing with the last one is far cheaper than the
    // Map lookup (callgrind: ~50 instructions per publish).
    if (type === this.#lastTopic) return this.#lastTopicId;
    let id = this.#topics.get(type);
    if (id === undefined) {
      try {
        id = this.#native.internTopic(type);
      } catch (e) {
        throw fromNative(e);
      }
      if (this.#topics.size < MAX_CACHED_TOPICS) this.#topics.set(type, id);
    }
    if (id !== null) {
      this.#lastTopic = type;
      this.#lastTopicId = id;
    }
    return id;
  }

  /** Delivers events matching `pattern` (`order.created`, `order.*`, `order.>`) to `handler`. */
  subscribe<P extends string>(
    pattern: P,
    handler: Handler<EventFor<E, P>>,
    options: SubscribeOptions<EventFor<E, P>> = {},
  ): Subscription {
    if (typeof handler !== 'function') throw new InvalidArgument('handler must be a function');
    const concurrency = positiveInt(options.concurrency, 'concurrency', 1);
    const batchSize = positiveInt(options.batchSize, 'batchSize', 256);
    const native = this.#call(() =>
      this.#native.subscribe(pattern, {
        capacity: options.capacity,
        overflow: options.overflow,
        filter: declarative(options.filter),
        name: options.name,
        delivery: deliveryInit(options),
      }),
    );
    const sub = new Subscription(
      native,
      handler as (event: SluiceEvent, ctx: Context) => unknown,
      {
        concurrency,
        batchSize,
        filter: typeof options.filter === 'function' ? (options.filter as (e: SluiceEvent) => boolean) : undefined,
        onError: options.onError as ((error: unknown, event: SluiceEvent) => void) | undefined,
        name: options.name ?? null,
        observe: this.#observe,
      },
      (s) => this.#subs.delete(s),
    );
    this.#subs.add(sub);
    return sub;
  }

  /** A bounded async iterator over events matching `pattern`. */
  stream<P extends string>(pattern: P, options: StreamOptions = {}): EventStream<EventFor<E, P>> {
    const batchSize = positiveInt(options.batchSize, 'batchSize', 64);
    const native = this.#call(() =>
      this.#native.subscribe(pattern, {
        capacity: options.capacity,
        overflow: options.overflow,
        filter: declarative(options.filter),
        name: options.name,
      }),
    );
    const stream: EventStream<EventFor<E, P>> = new EventStream(native, batchSize, options.signal, () =>
      this.#streams.delete(stream as EventStream<SluiceEvent>),
    );
    this.#streams.add(stream as EventStream<SluiceEvent>);
    return stream;
  }

  /**
   * Publishes an event. Under `block` it waits until every matching queue has room or `ctx`
   * ends (`DeadlineExceeded`/`Canceled`); a full `error` queue rejects with `QueueFull`.
   */
  publish<K extends keyof E & string>(type: K, data: DataOf<E, K>, options?: PublishOptions): Promise<void> {
    // Not `async`: a durable publish returns its ticket's promise itself. An async function
    // would wrap it in a promise of its own, which costs two more microtask turns per publish.
    const ctx = options?.ctx;
    let attrs: PublishAttrs | null;
    let pending: NativePending | number | null;
    try {
      attrs = this.#attrs(type, options);
    } catch (e) {
      return Promise.reject(e);
    }
    try {
      const id = attrs === null ? this.#topicId(type) : null;
      const bytes = data instanceof Uint8Array;
      pending =
        id !== null
          ? ctx === undefined
            ? this.#fast.publish(id, bytes ? data : encode(data))
            : bytes
              ? publishBytesTo(this.#handle, id, data, ctx.native)
              : publishTo(this.#handle, id, encode(data), ctx.native)
          : bytes
            ? this.#native.publishBytes(type, data, ctx?.native, attrs)
            : this.#native.publish(type, encode(data), ctx?.native, attrs);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
    if (ctx) rememberContext(ctx);
    if (typeof pending === 'number') return this.#durable.wait(pending);
    if (pending) return this.#wait(pending, ctx);
    return Promise.resolve();
  }

  /** Publishes without ever waiting. `false` if any matching queue dropped or refused it. */
  tryPublish<K extends keyof E & string>(type: K, data: DataOf<E, K>, options?: PublishOptions): boolean {
    const ctx = options?.ctx;
    const attrs = this.#attrs(type, options);
    let ok: boolean;
    try {
      const id = attrs === null ? this.#topicId(type) : null;
      const bytes = data instanceof Uint8Array;
      ok =
        id !== null
          ? ctx === undefined
            ? this.#fast.tryPublish(id, bytes ? data : encode(data))
            : bytes
              ? tryPublishBytesTo(this.#handle, id, data, ctx.native)
              : tryPublishTo(this.#handle, id, encode(data), ctx.native)
          : bytes
            ? this.#native.tryPublishBytes(type, data, ctx?.native, attrs)
            : this.#native.tryPublish(type, encode(data), ctx?.native, attrs);
    } catch (e) {
      throw fromNative(e);
    }
    if (ctx) rememberContext(ctx);
    return ok;
  }

  /**
   * Publishes many events with one crossing into the core: one JSON encoding for a batch of
   * JSON data, or one packed buffer for a batch whose data are all `Uint8Array`s. Order is kept;
   * under `block` the rest of the batch waits behind an event that has to wait. A batch that
   * mixes both kinds of data is published event by event.
   */
  async publishBatch<K extends keyof E & string>(
    events: ReadonlyArray<{ type: K; data: DataOf<E, K> }>,
    options?: { ctx?: Context },
  ): Promise<void> {
    const ctx = options?.ctx;
    const encoded = this.#encodeBatch(events);
    if (encoded === null) {
      for (const e of events) await this.publish(e.type, e.data, options);
      return;
    }
    const [topics, data, ends] = encoded;
    const id = topics.length === 1 ? this.#topicId(topics[0]!) : null;
    const tps = this.#batchTraceparents(events);
    const pending = this.#call(() =>
      id !== null
        ? publishBatchTo(this.#handle, id, data, ctx?.native, tps, ends)
        : this.#native.publishBatch(topics, data, ctx?.native, tps, ends),
    );
    if (ctx) rememberContext(ctx);
    if (pending) await this.#wait(pending, ctx);
  }

  /**
   * Like `publishBatch` but never waits; returns how many events every queue took. A batch that
   * mixes JSON data and `Uint8Array`s is published event by event.
   */
  tryPublishBatch<K extends keyof E & string>(
    events: ReadonlyArray<{ type: K; data: DataOf<E, K> }>,
    options?: { ctx?: Context },
  ): number {
    const ctx = options?.ctx;
    const encoded = this.#encodeBatch(events, true);
    if (encoded === null) {
      let took = 0;
      for (const e of events) took += this.tryPublish(e.type, e.data, options) ? 1 : 0;
      return took;
    }
    const [topics, data, ends] = encoded;
    const id = topics.length === 1 ? this.#topicId(topics[0]!) : null;
    const tps = this.#batchTraceparents(events);
    const n = this.#call(() =>
      id === null
        ? this.#native.tryPublishBatch(topics, data, ctx?.native, tps, ends)
        : ctx === undefined && tps === undefined
          ? this.#fast.tryPublishBatch(id, data, ends)
          : tryPublishBatchTo(this.#handle, id, data, ctx?.native, tps, ends),
    );
    if (ctx) rememberContext(ctx);
    return n;
  }

  /**
   * A batch as the core takes it: its topics (one if all share it) and its data — one JSON array
   * for JSON data, or for byte arrays one buffer with each event's end offset. `null` for a batch
   * mixing both.
   */
  #encodeBatch(
    events: ReadonlyArray<{ type: string; data: unknown }>,
    synchronous = false,
  ): [string[], string | Uint8Array, Uint32Array | undefined] | null {
    if (!Array.isArray(events)) throw new InvalidArgument('publishBatch takes an array of { type, data }');
    // One pass: this runs per event of every batch.
    const n = events.length;
    const first = n > 0 ? events[0]!.type : undefined;
    const packed = n > 0 && events[0]!.data instanceof Uint8Array;
    const data = new Array<unknown>(n);
    let same = true;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const e = events[i]!;
      const d = e.data;
      if (d instanceof Uint8Array !== packed) return null;
      if (e.type !== first) same = false;
      if (packed) bytes += (d as Uint8Array).length;
      data[i] = d === undefined ? null : d;
    }
    const topics = same && first !== undefined ? [first] : events.map((e) => e.type);
    if (!packed) return [topics, encode(data), undefined];
    // Only a call that returns before JS runs again may share the scratch buffer.
    const buffer = synchronous && bytes <= SCRATCH_MAX ? this.#scratchOf(bytes) : new Uint8Array(bytes);
    const ends = new Uint32Array(n);
    let at = 0;
    for (let i = 0; i < n; i++) {
      const d = data[i] as Uint8Array;
      buffer.set(d, at);
      ends[i] = at += d.length;
    }
    return [topics, buffer, ends];
  }

  /** A view of the first `bytes` bytes of the scratch buffer, grown (doubling) as needed. */
  #scratchOf(bytes: number): Uint8Array {
    if (this.#scratch.length < bytes) this.#scratch = new Uint8Array(Math.min(SCRATCH_MAX, Math.max(bytes, 2 * this.#scratch.length)));
    return this.#scratch.subarray(0, bytes);
  }

  /**
   * Deploys a WebAssembly handler (bytes, or a path/URL to a `.wasm` file) on `topics`. The
   * module is compiled off the JS thread and cached by its SHA-256; events routed to it are
   * handled on Rust worker threads and never enter JS. Deploying the same bytes again under the
   * same name returns the running deployment.
   */
  async deploy(name: string, wasm: Uint8Array | string | URL, options: DeployOptions): Promise<Deployment> {
    if (!options || !Array.isArray(options.topics)) throw new InvalidArgument('deploy needs options.topics, an array of topics');
    const bytes = wasm instanceof Uint8Array ? wasm : await readFile(wasm);
    const cfg = options.config;
    const config =
      cfg === undefined
        ? undefined
        : cfg instanceof Uint8Array
          ? cfg
          : Buffer.from(typeof cfg === 'string' ? cfg : JSON.stringify(cfg));
    const limits = options.limits ?? {};
    const delivery = deliveryInit(options);
    try {
      const native = await this.#native.deploy(name, bytes, {
        topics: options.topics,
        emits: options.emits,
        concurrency: options.concurrency,
        memoryBytes: limits.memoryBytes,
        timeoutMs: limits.timeoutMs,
        fuel: limits.fuel,
        config,
        capacity: options.capacity,
        overflow: options.overflow,
        delivery,
        isolation: options.isolation,
        labels: options.labels,
      });
      const dep = new Deployment(native);
      this.#deployments.add(dep);
      return dep;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Publishes again the dead letters this bus kept for `deadLetterTopic` (the newest 1000 per
   * topic, in memory), oldest first, optionally only those whose original event passes `filter`
   * and at most `limit`. Each goes out once, with its original id, type and data. Resolves with
   * how many were re-published, after every queue took them (waits like `publishBatch`).
   */
  async replay(deadLetterTopic: string, options: ReplayOptions = {}): Promise<number> {
    const ctx = options.ctx;
    if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 0)) {
      throw new InvalidArgument(`limit must be a whole number >= 0, got ${options.limit}`);
    }
    const replay = this.#call(() =>
      this.#native.replay(deadLetterTopic, declarative(options.filter), options.limit, ctx?.native),
    );
    if (ctx) rememberContext(ctx);
    const pending = replay.takePending();
    if (pending) await this.#wait(pending, ctx);
    return replay.count;
  }

  /** Counters for the bus and each subscription. */
  stats(): BusStats {
    for (const sub of this.#subs) sub.flush();
    this.#hub?.flush();
    const stats = JSON.parse(this.#native.stats()) as BusStats;
    stats.deployments = [];
    for (const d of this.#deployments) {
      const info = d.info();
      if (info.running) stats.deployments.push(info);
      else this.#deployments.delete(d);
    }
    if (this.#hub) stats.observers = this.#hub.stats();
    return stats;
  }

  /**
   * Watches the bus for a short window and names the cause of trouble (queues at capacity,
   * blocked publishers, subscription storms, slow handlers, event-loop lag), as data and `text`.
   */
  diagnose(options?: DiagnoseOptions): Promise<Diagnosis> {
    return diagnoseBus(this, options);
  }

  /** Records `durationMs` of activity into a Chrome/Perfetto trace-event JSON `file`. */
  trace(options: TraceOptions): Promise<TraceSummary> {
    return traceBus(this, options);
  }

  get closed(): boolean {
    return this.#native.closed;
  }

  /**
   * Stops accepting events, lets handlers drain what is queued (until `ctx` ends, if given), then
   * closes every subscription. Whatever was left is counted as dropped (closed), except what
   * durable subscriptions did not acknowledge: the journal is flushed, fsynced and closed, and
   * keeps it for the next process (reported as `unacknowledged`).
   */
  close(options: CloseOptions = {}): Promise<CloseReport> {
    return (this.#closing ??= this.#close(options.ctx));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(ctx: Context | undefined): Promise<CloseReport> {
    this.#native.close();
    const ended = ctx
      ? new Promise<void>((resolve) => {
          if (ctx.signal.aborted) resolve();
          else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
        })
      : undefined;
    const until = (p: Promise<unknown>) => (ended ? Promise.race([p, ended]) : p);
    await until(Promise.all([...this.#subs].map((s) => s.idle())));
    for (const s of this.#subs) s.flush();
    // Stops the deployments too; the verdicts of their last runs may still wait for audit.
    this.#native.shutdown();
    if (this.#hub) await until(this.#hub.auditIdle());
    this.#hub?.markShutdown();
    for (const s of [...this.#subs]) s.unsubscribe();
    for (const s of [...this.#streams]) s.close();
    await this.#hub?.close();
    return { unacknowledged: this.#call(() => this.#native.closeJournal()) };
  }

  /**
   * Waits for space without holding a thread: the core calls back when a consumer takes events
   * (or the queue closes); the Context's end arrives through its signal, and `tryProgress` then
   * reports it as `Canceled`/`DeadlineExceeded`.
   */
  async #wait(pending: NativePending, ctx: Context | undefined): Promise<void> {
    const signal = ctx?.signal;
    let wake: (() => void) | undefined;
    // One stable callback: the native side binds its wake-up to the first function it is given.
    const onWake = () => wake?.();
    signal?.addEventListener('abort', onWake);
    try {
      while (!pending.tryProgress()) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          pending.onProgress(onWake);
        });
      }
    } catch (e) {
      throw fromNative(e);
    } finally {
      signal?.removeEventListener('abort', onWake);
    }
  }

  #call<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw fromNative(e);
    }
  }
}
