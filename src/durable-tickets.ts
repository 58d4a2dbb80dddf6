import { watchDurable, type NativePending } from './native.js';

type Handle = Parameters<typeof watchDurable>[0];

interface Ticket {
  seq: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Resolves the `publish()` calls of a bus with a journal once the journal's fsync covers their
 * records. The core hands back each publish's journal sequence number instead of a wait of its
 * own; this keeps them in publish order and watches all outstanding ones with one native wait,
 * so a group fsync costs one wake-up of the JS thread however many publishes it covers (a wait
 * per publish made the wake-ups, not the disk, the bottleneck). A failed write rejects exactly
 * the publishes whose records it lost, with the journal's typed error.
 */
export class DurableTickets {
  readonly #handle: Handle;
  /** Waits for a native pending (rejects with the typed error). */
  readonly #wait: (pending: NativePending) => Promise<void>;
  #queue: Ticket[] = [];
  #head = 0;
  #watching = false;

  constructor(handle: Handle, wait: (pending: NativePending) => Promise<void>) {
    this.#handle = handle;
    this.#wait = wait;
  }

  /** Resolves once journal record `seq` is fsynced. Sequence numbers arrive in increasing order. */
  wait(seq: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ seq, resolve, reject });
      if (!this.#watching) void this.#watch();
    });
  }

  async #watch(): Promise<void> {
    this.#watching = true;
    try {
      while (this.#head < this.#queue.length) {
        const first = this.#queue[this.#head]!.seq;
        const last = this.#queue[this.#queue.length - 1]!.seq;
        let failed = false;
        const pending = watchDurable(this.#handle, first, last);
        if (pending) {
          try {
            await this.#wait(pending);
          } catch {
            failed = true; // some of them were lost: ask per publish below
          }
        }
        while (this.#head < this.#queue.length && this.#queue[this.#head]!.seq <= last) {
          const t = this.#queue[this.#head++]!;
          if (!failed) {
            t.resolve();
            continue;
          }
          // Rare: a write failed. Each publish learns its own outcome (most may be durable).
          try {
            const own = watchDurable(this.#handle, t.seq, t.seq);
            if (own) await this.#wait(own);
            t.resolve();
          } catch (e) {
            t.reject(e);
          }
        }
        if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
          this.#queue = this.#queue.slice(this.#head);
          this.#head = 0;
        }
      }
    } finally {
      this.#watching = false;
    }
  }
}
