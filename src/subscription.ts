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

/**
 * A JS handler's side of a subscription. The core wakes the JS thread once per batch; the pump
 * takes a batch, runs handlers up to `concurrency` at once, and reports failures back in bulk.
 * While handlers are async it takes only as many events as it can start, so the bounded queue in
 * the core, not a JS array, holds the backlog.
 */
export class Subscription implements Disposable {
  readonly #native: NativeSubscription;
  readonly #handler: (event: SluiceEvent, ctx: Context) => unknown;
  readonly #opts: DeliveryOptions<SluiceEvent>;
  readonly #onClose: (sub: Subscription) => void;
  #events: SluiceEvent[] = [];
  #contexts: (Context | undefined)[] | undefined;
  #next = 0;
  #inflight = 0;
  #sawAsync = false;
  #sawSync = false;
  #pumping = false;
  #refillQueued = false;
  #closed = false;
  #failed = 0;
  #filtered = 0;
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
          this.#run(this.#events[i]!, this.#contexts?.[i]);
        }
        if (this.#closed || this.#inflight >= concurrency) break;
        // Take whole batches only once handlers have proved synchronous: events handed to an
        // async handler's pump would otherwise sit in a JS array, outside the bounded queue.
        const room = this.#sawSync && !this.#sawAsync ? batchSize : Math.min(batchSize, concurrency - this.#inflight);
        let text: string | null;
        this.#opts.observe?.tap?.gap();
        try {
          text = this.#native.take(room);
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
        this.#next = 0;
      }
    } finally {
      this.#pumping = false;
      this.#flushCounts();
      this.#settleIdle();
    }
  }

  #run(event: SluiceEvent, ctx: Context | undefined): void {
    const filter = this.#opts.filter;
    if (filter) {
      let keep: boolean;
      try {
        keep = filter(event);
      } catch (e) {
        this.#fail(e, event);
        return;
      }
      if (!keep) {
        this.#filtered++;
        return;
      }
    }
    const tap = this.#opts.observe?.tap;
    if (tap) return this.#runObserved(tap, event, ctx);
    let result: unknown;
    try {
      result = this.#handler(event, ctx ?? Context.background());
    } catch (e) {
      this.#fail(e, event);
      return;
    }
    if (result === null || typeof result !== 'object' || typeof (result as PromiseLike<unknown>).then !== 'function') {
      this.#sawSync = true;
    } else {
      this.#sawAsync = true;
      this.#inflight++;
      (result as PromiseLike<unknown>).then(
        () => this.#done(),
        (e: unknown) => {
          this.#fail(e, event);
          this.#done();
        },
      );
    }
  }

  /**
   * `#run` with observers: the run is timed, and the event counts as handled (its slot freed,
   * the bus's drain released) only once every audit sink has durably written it.
   */
  #runObserved(tap: HandlerTap, event: SluiceEvent, ctx: Context | undefined): void {
    const name = this.#opts.name ?? null;
    // The id once per subscription: reading it through the native getter costs an N-API call.
    const id = (this.#id ??= this.#native.id);
    const t0 = tap.start(id, name, event);
    let result: unknown;
    try {
      result = this.#handler(event, ctx ?? Context.background());
    } catch (e) {
      this.#fail(e, event);
      this.#hold(tap.end(id, name, event, t0, true));
      return;
    }
    if (result === null || typeof result !== 'object' || typeof (result as PromiseLike<unknown>).then !== 'function') {
      this.#sawSync = true;
      this.#hold(tap.end(id, name, event, t0, false));
    } else {
      this.#sawAsync = true;
      this.#inflight++;
      const finish = (error: boolean) => {
        const audited = tap.end(id, name, event, t0, error);
        if (audited) audited.then(() => this.#done());
        else this.#done();
      };
      (result as PromiseLike<unknown>).then(
        () => finish(false),
        (e: unknown) => {
          this.#fail(e, event);
          finish(true);
        },
      );
    }
  }

  /** Keeps a handled event's slot until its audit write is durable. */
  #hold(audited: Promise<void> | undefined): void {
    if (!audited) return;
    this.#inflight++;
    audited.then(() => this.#done());
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

  #fail(error: unknown, event: SluiceEvent): void {
    this.#failed++;
    const onError = this.#opts.onError;
    if (!onError) return;
    try {
      onError(error, event);
    } catch {
      // An error hook that throws must not take the subscription down; the failure is counted.
    }
  }

  /** @internal reports counts gathered on the JS side (failures, JS-filtered) to the core. */
  flush(): void {
    this.#flushCounts();
  }

  #flushCounts(): void {
    if (this.#failed) {
      this.#native.reportFailed(this.#failed);
      this.#failed = 0;
    }
    if (this.#filtered) {
      this.#native.reportFiltered(this.#filtered);
      this.#filtered = 0;
    }
  }
}
