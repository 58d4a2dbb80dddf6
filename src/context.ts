import { NativeContext } from './native.js';
import { Canceled, DeadlineExceeded, InvalidArgument, SluiceError, fromNative } from './errors.js';

const NO_VALUE = Symbol('no value');

/**
 * Cancellation, deadline and values that flow from a publisher through every listener (and,
 * later, into WASM handlers and out on what they emit). Backed by a Rust Context: the core sees
 * the same deadline and cancellation. `signal` is a standard AbortSignal for everything else.
 */
export class Context {
  /** @internal */
  readonly native: NativeContext;
  readonly #parent: Context | undefined;
  readonly #key: unknown;
  readonly #value: unknown;
  #controller: AbortController | undefined;
  #signal: AbortSignal | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  private constructor(native: NativeContext, parent?: Context, key: unknown = NO_VALUE, value?: unknown) {
    this.native = native;
    this.#parent = parent;
    this.#key = key;
    this.#value = value;
  }

  static #background: Context | undefined;

  /** The root: never canceled, no deadline. */
  static background(): Context {
    return (Context.#background ??= new Context(NativeContext.background()));
  }

  /** A Context canceled when `signal` aborts. */
  static fromSignal(signal: AbortSignal): Context {
    const ctx = Context.background().withCancel();
    if (signal.aborted) ctx.cancel(reasonText(signal.reason));
    else signal.addEventListener('abort', () => ctx.cancel(reasonText(signal.reason)), { once: true });
    return ctx;
  }

  withCancel(): Context {
    return new Context(call(() => this.native.withCancel()), this);
  }

  /** A child that ends `ms` milliseconds from now (or earlier, with its parent). */
  withTimeout(ms: number): Context {
    if (typeof ms !== 'number') throw new InvalidArgument(`timeout must be a number of milliseconds, got ${typeof ms}`);
    return new Context(call(() => this.native.withTimeout(ms)), this);
  }

  /** A child that ends at `deadline` (a Date or Unix milliseconds). */
  withDeadline(deadline: Date | number): Context {
    const ms = deadline instanceof Date ? deadline.getTime() : deadline;
    if (typeof ms !== 'number' || Number.isNaN(ms)) throw new InvalidArgument('deadline must be a Date or Unix milliseconds');
    return new Context(call(() => this.native.withDeadline(Math.max(0, ms))), this);
  }

  /**
   * A child carrying `key → value`. String values are also visible to the core (and to WASM
   * handlers); any other value stays on the JS side.
   */
  withValue(key: unknown, value: unknown): Context {
    const native =
      typeof key === 'string' && typeof value === 'string'
        ? call(() => this.native.withValue(key, value))
        : call(() => this.native.withCancel());
    return new Context(native, this, key, value);
  }

  /** The nearest value stored under `key`, or undefined. */
  value<T = unknown>(key: unknown): T | undefined {
    for (let c: Context | undefined = this; c; c = c.#parent) {
      if (c.#key !== NO_VALUE && Object.is(c.#key, key)) return c.#value as T;
    }
    return undefined;
  }

  /** Cancels this Context and every Context derived from it. */
  cancel(reason?: string): void {
    this.native.cancel(reason ?? null);
    this.#abortIfDone();
  }

  /** `undefined` while live; `Canceled` or `DeadlineExceeded` once ended. */
  get err(): SluiceError | undefined {
    const code = this.native.errCode();
    if (code === null) return undefined;
    return code === 'ERR_CANCELED' ? new Canceled(withReason('context canceled', this.native.reason())) : new DeadlineExceeded();
  }

  /** The deadline in Unix milliseconds, if any (inherited from a parent when earlier). */
  get deadline(): number | undefined {
    return this.native.deadline ?? undefined;
  }

  /** @internal the native id, used to reunite delivered events with their live Context. */
  get id(): number {
    return this.native.id;
  }

  /** An AbortSignal that aborts when this Context ends, with `Canceled`/`DeadlineExceeded` as reason. */
  get signal(): AbortSignal {
    if (this.#signal) return this.#signal;
    this.#controller = new AbortController();
    const own = this.#controller.signal;
    const parent = this.#parent?.signal;
    this.#signal = parent ? AbortSignal.any([parent, own]) : own;
    const left = this.native.remainingMs();
    if (left !== null && !this.native.errCode()) {
      // Fire the signal at the deadline; the core checks the deadline by the clock itself.
      this.#timer = setTimeout(() => this.#abortIfDone(), Math.ceil(left) + 1);
      this.#timer.unref?.();
    }
    this.#abortIfDone();
    return this.#signal;
  }

  #abortIfDone(): void {
    if (!this.#controller || this.#controller.signal.aborted) return;
    const err = this.err;
    if (!err) {
      // A timer can fire a hair early on some clocks: look again shortly.
      if (this.#timer) {
        this.#timer = setTimeout(() => this.#abortIfDone(), 1);
        this.#timer.unref?.();
      }
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#controller.abort(err);
  }
}

function withReason(base: string, reason: string | null): string {
  return reason ? `${base}: ${reason}` : base;
}

function reasonText(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'aborted' : String(reason);
}

function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fromNative(e);
  }
}

/**
 * Events carry their publisher's Context through the core by id. A JS subscriber gets the very
 * Context the publisher used while it is alive; if it has been collected, nobody can cancel it any
 * more, so an equivalent Context with the event's deadline stands in.
 */
const live = new Map<number, WeakRef<Context>>();
const collected = new FinalizationRegistry<number>((id) => {
  const ref = live.get(id);
  if (ref && !ref.deref()) live.delete(id);
});

/** @internal */
export function rememberContext(ctx: Context): void {
  if (!live.has(ctx.id)) {
    live.set(ctx.id, new WeakRef(ctx));
    collected.register(ctx, ctx.id);
  }
}

/** @internal */
export function contextFor(id: number, deadline: number | undefined): Context {
  const ctx = live.get(id)?.deref();
  if (ctx) return ctx;
  return deadline === undefined ? Context.background() : Context.background().withDeadline(deadline);
}
