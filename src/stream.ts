import type { NativeSubscription } from './native.js';
import { decodeBatch } from './batch.js';
import { fromNative } from './errors.js';
import type { SluiceEvent, SubscriptionStats } from './types.js';

/**
 * A subscription consumed by `for await`. It is bounded: events wait in the core's queue under
 * its overflow policy until the loop asks for them. Ends when the loop breaks, the stream is
 * disposed, or the bus closes; rejects with `signal.reason` when the signal aborts.
 */
export class EventStream<Ev extends SluiceEvent = SluiceEvent> implements AsyncIterableIterator<Ev>, AsyncDisposable {
  readonly #native: NativeSubscription;
  readonly #batchSize: number;
  readonly #signal: AbortSignal | undefined;
  readonly #onClose: () => void;
  #buffer: Ev[] = [];
  #next = 0;
  #waiting: { resolve: () => void } | undefined;
  #done = false;

  /** @internal */
  constructor(native: NativeSubscription, batchSize: number, signal: AbortSignal | undefined, onClose: () => void) {
    this.#native = native;
    this.#batchSize = batchSize;
    this.#signal = signal;
    this.#onClose = onClose;
    native.setWaker(() => this.#wake());
    signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  #onAbort = (): void => {
    this.#finish();
    this.#wake();
  };

  #wake(): void {
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.resolve();
  }

  async next(): Promise<IteratorResult<Ev, undefined>> {
    for (;;) {
      if (this.#signal?.aborted) {
        this.#finish();
        throw this.#signal.reason;
      }
      if (this.#next < this.#buffer.length) return { value: this.#buffer[this.#next++]!, done: false };
      if (this.#done) return { value: undefined, done: true };
      let text: string | null;
      try {
        text = this.#native.take(this.#batchSize);
      } catch (e) {
        throw fromNative(e);
      }
      if (text !== null) {
        this.#buffer = decodeBatch(text).events as Ev[];
        this.#next = 0;
        continue;
      }
      if (this.#native.closed) {
        this.#finish();
        continue;
      }
      if (this.#native.arm()) continue;
      await new Promise<void>((resolve) => (this.#waiting = { resolve }));
    }
  }

  async return(): Promise<IteratorResult<Ev, undefined>> {
    this.#finish();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#finish();
  }

  /** Lets the process exit while the stream waits (see `Subscription.unref`). */
  unref(): this {
    if (!this.#done) this.#native.keepAlive(false);
    return this;
  }

  ref(): this {
    if (!this.#done) this.#native.keepAlive(true);
    return this;
  }

  /** @internal called when the bus closes. */
  close(): void {
    this.#finish(true);
  }

  stats(): SubscriptionStats {
    return JSON.parse(this.#native.stats()) as SubscriptionStats;
  }

  /** Ends the stream. Events already taken stay readable after a bus close; on return/abort
   * they are handed back to the books as undelivered (counted as dropped, closed). */
  #finish(keepBuffer = false): void {
    if (this.#done) return;
    this.#done = true;
    const left = this.#buffer.length - this.#next;
    if (!keepBuffer && left > 0) {
      this.#native.returnUndelivered(left);
      this.#buffer = [];
      this.#next = 0;
    }
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#native.unsubscribe();
    this.#onClose();
    this.#wake();
  }
}
