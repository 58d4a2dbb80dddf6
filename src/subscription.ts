import type { NativeSubscription } from './native.js';
import { Context } from './context.js';
import { decodeBatch } from './batch.js';
import { fromNative } from './errors.js';
import type { SluiceEvent, SubscriptionStats } from './types.js';
import type { HandlerTap } from './observe/observer.js';

export interface DeliveryOptions<Ev> {
  concurrency: number;
  batchSize: number;
  filter: ((event: Ev) => boolean) | undefined;
  onError: ((error: unknown, event: Ev) => void) | undefined;
  /** Shown to observers with each handler run. */
  name?: string | null;
  /** Shared with the bus: observers' handler timing and audit, when any are registered. */
  observe?: { tap: HandlerTap | undefined };
}

/** Outcome codes of the core's settle API (crates/core/src/delivery/outcome.rs). */
const FAIL = 3;
/** Longest failure reason sent to the core (it ends up in dead-letter envelopes). */
const MAX_REASON = 1024;

function reasonOf(e: unknown): string {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return text.length > MAX_REASON ? text.slice(0, MAX_REASON) : text;
}

/**
 * A JS handler's side of a subscription. The core wakes the JS thread once per batch; the pump
 * takes a batch, runs handlers up to `concurrency` at once, and settles them back in bulk: a
 * handler that returns (or resolves) acks its event, one that throws (or rejects) fails it, and
 * the core applies the subscription's retry / dead-letter settings.
 * While handlers are async it takes only as many events as it can start, so the bounded queue in
 * the core, not a JS array, holds the backlog.
 */
export class Subscription implements Disposable {
  readonly #native: NativeSubscription;
  /** The native take, bound to this subscription (a plain N-API function: see fast_take.rs). */
  readonly #take: (max: number) => string | null;
  readonly #handler: (event: SluiceEvent, ctx: Context) => unknown;
  readonly #opts: DeliveryOptions<SluiceEvent>;
  readonly #onClose: (sub: Subscription) => void;
  #events: SluiceEvent[] = [];
  #contexts: (Context | undefined)[] | undefined;
  #tags: number[] | undefined;
  #next = 0;
  #inflight = 0;
  #sawAsync = false;
  #sawSync = false;
  #pumping = false;
  #refillQueued = false;
  #closed = false;
  #filtered = 0;
  /**
   * Verdicts not yet sent to the core: tags acked, as runs (first tag, count) — a batch's tags are
   * consecutive and sync handlers ack them in order, so a batch is usually one run; tags failed
   * with their code and reason.
   */
  #acks: number[] = [];
  #failTags: number[] = [];
  #failCodes: number[] = [];
  #failReasons: string[] = [];
  #idleWaiters: (() => void)[] = [];
  #id: number | undefined;

  /** @internal */
  constructor(
    native: NativeSubscription,
    handler: (event: SluiceEvent, ctx: Context) => unknown,
    opts: DeliveryOptions<SluiceEvent>,
    onClose: (sub: Subscription) => void,
  ) {
    this.#native = native;
    this.#take = native.fastTake();
    this.#handler = handler;
    this.#opts = opts;
    this.#onClose = onClose;
    native.setWaker(() => this.#pump());
    if (native.arm()) queueMicrotask(() => this.#pump());
  }

  get id(): number {
    return this.#native.id;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops delivery and removes the subscription; events still queued are dropped and counted. */
  unsubscribe(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Events taken but never started (a handler unsubscribed mid-batch) were not delivered.
    const unstarted = this.#events.length - this.#next;
    if (unstarted > 0) this.#native.returnUndelivered(unstarted);
    this.#events = [];
    this.#next = 0;
    this.#flushCounts();
    this.#native.unsubscribe();
    this.#onClose(this);
    this.#settleIdle();
  }

  [Symbol.dispose](): void {
    this.unsubscribe();
  }

  /**
   * Lets the process exit while this subscription is live (like `MessagePort.unref()`); by
   * default a subscription keeps the event loop alive, since events may arrive from other threads.
   */
  unref(): this {
    if (!this.#closed) this.#native.keepAlive(false);
    return this;
  }

  ref(): this {
    if (!this.#closed) this.#native.keepAlive(true);
    return this;
  }

  stats(): SubscriptionStats {
    this.#flushCounts();
    return JSON.parse(this.#native.stats()) as SubscriptionStats;
  }

  /** @internal resolves once nothing is queued, buffered or running. */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #isIdle(): boolean {
    return this.#closed || (this.#inflight === 0 && this.#next >= this.#events.length && this.#native.depth === 0);
  }

  #settleIdle(): void {
    if (this.#idleWaiters.length && this.#isIdle()) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  #pump(): void {
    if (this.#pumping || this.#closed) return;
    this.#pumping = true;
    try {
      const { concurrency, batchSize } = this.#opts;
      for (;;) {
        while (this.#next < this.#events.length && this.#inflight < concurrency && !this.#closed) {
          const i = this.#next++;
          this.#run(this.#events[i]!, this.#contexts?.[i], this.#tags?.[i] ?? 0);
        }
        if (this.#closed || this.#inflight >= concurrency) break;
        // Verdicts go back before the next take: an ack may release the next event of a key.
        this.#flushCounts();
        // Take whole batches only once handlers have proved synchronous: events handed to an
        // async handler's pump would otherwise sit in a JS array, outside the bounded queue.
        const room = this.#sawSync && !this.#sawAsync ? batchSize : Math.min(batchSize, concurrency - this.#inflight);
        let text: string | null;
        this.#opts.observe?.tap?.gap();
        try {
          text = this.#take(room);
        } catch (e) {
          // Runs on a wake-up with no caller to throw to: report it and stop this round.
          process.emitWarning(fromNative(e));
          break;
        }
        if (text === null) {
          if (this.#native.arm()) continue;
          break;
        }
        const batch = decodeBatch(text);
        this.#events = batch.events;
        this.#contexts = batch.contexts;
        this.#tags = batch.tags;
        this.#next = 0;
      }
    } finally {
      this.#pumping = false;
      this.#flushCounts();
      this.#settleIdle();
    }
  }

  #run(event: SluiceEvent, ctx: Context | undefined, tag: number): void {
    const filter = this.#opts.filter;
    if (filter) {
      let keep: boolean;
      try {
        keep = filter(event);
      } catch (e) {
        this.#fail(e, event, tag);
        return;
      }
      if (!keep) {
        this.#filtered++;
        this.#ack(tag);
        return;
      }
    }
    const tap = this.#opts.observe?.tap;
    if (tap) return this.#runObserved(tap, event, ctx, tag);
    let result: unknown;
    try {
      result = this.#handler(event, ctx ?? Context.background());
    } catch (e) {
      this.#fail(e, event, tag);
      return;
    }
    if (result === null || typeof result !== 'object' || typeof (result as PromiseLike<unknown>).then !== 'function') {
      this.#sawSync = true;
      this.#ack(tag);
    } else {
      this.#sawAsync = true;
      this.#inflight++;
      (result as PromiseLike<unknown>).then(
        () => {
          this.#ack(tag);
          this.#done();
        },
        (e: unknown) => {
          this.#fail(e, event, tag);
          this.#done();
        },
      );
    }
  }

  /**
   * `#run` with observers: the run is timed, and the event counts as handled (its slot freed,
   * the bus's drain released) only once every audit sink has durably written it.
   */
  #runObserved(tap: HandlerTap, event: SluiceEvent, ctx: Context | undefined, tag: number): void {
    const name = this.#opts.name ?? null;
    // The id once per subscription: reading it through the native getter costs an N-API call.
    const id = (this.#id ??= this.#native.id);
    const t0 = tap.start(id, name, event);
    let result: unknown;
    try {
      result = this.#handler(event, ctx ?? Context.background());
    } catch (e) {
      this.#fail(e, event, tag);
      this.#hold(tap.end(id, name, event, t0, true), 0);
      return;
    }
    if (result === null || typeof result !== 'object' || typeof (result as PromiseLike<unknown>).then !== 'function') {
      this.#sawSync = true;
      this.#hold(tap.end(id, name, event, t0, false), tag);
    } else {
      this.#sawAsync = true;
      this.#inflight++;
      const finish = (error: boolean) => {
        const audited = tap.end(id, name, event, t0, error);
        const handled = () => {
          if (!error) this.#ack(tag);
          this.#done();
        };
        if (audited) audited.then(handled);
        else handled();
      };
      (result as PromiseLike<unknown>).then(
        () => finish(false),
        (e: unknown) => {
          this.#fail(e, event, tag);
          finish(true);
        },
      );
    }
  }

  /** Keeps a handled event's slot (and its ack, if `tag` is set) until its audit write is durable. */
  #hold(audited: Promise<void> | undefined, tag: number): void {
    if (!audited) return this.#ack(tag);
    this.#inflight++;
    audited.then(() => {
      this.#ack(tag);
      this.#done();
    });
  }

  /** Untracked deliveries (tag 0) were counted acked when taken: nothing to send. */
  #ack(tag: number): void {
    if (tag === 0) return;
    const runs = this.#acks;
    const n = runs.length;
    if (n > 0 && runs[n - 2]! + runs[n - 1]! === tag) runs[n - 1]!++;
    else runs.push(tag, 1);
  }

  #done(): void {
    this.#inflight--;
    if (this.#closed) return this.#settleIdle();
    // Handlers finishing in the same tick refill their slots with one take, not one each.
    if (!this.#refillQueued) {
      this.#refillQueued = true;
      queueMicrotask(this.#refill);
    }
  }

  #refill = (): void => {
    this.#refillQueued = false;
    this.#pump();
  };

  #fail(error: unknown, event: SluiceEvent, tag: number): void {
    this.#failTags.push(tag);
    this.#failCodes.push(FAIL);
    this.#failReasons.push(reasonOf(error));
    const onError = this.#opts.onError;
    if (!onError) return;
    try {
      onError(error, event);
    } catch {
      // An error hook that throws must not take the subscription down; the failure is counted.
    }
  }

  /** @internal sends verdicts and counts gathered on the JS side (acks, failures, JS-filtered) to the core. */
  flush(): void {
    this.#flushCounts();
  }

  #flushCounts(): void {
    if (this.#acks.length > 0 || this.#failTags.length > 0) {
      const acks = Float64Array.from(this.#acks);
      const failTags = Float64Array.from(this.#failTags);
      const failCodes = Uint8Array.from(this.#failCodes);
      const failReasons = this.#failReasons;
      this.#acks = [];
      this.#failTags = [];
      this.#failCodes = [];
      this.#failReasons = [];
      try {
        this.#native.settle(acks, failTags, failCodes, failReasons);
      } catch (e) {
        process.emitWarning(fromNative(e));
      }
    }
    if (this.#filtered) {
      this.#native.reportFiltered(this.#filtered);
      this.#filtered = 0;
    }
  }
}
