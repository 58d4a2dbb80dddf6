// sluice guest SDK for AssemblyScript — guest ABI v1 (see docs/abi.md).
//
// A handler module looks like:
//
//   import { Event, Status, emit, log } from "../sdk";
//   export { sluice_alloc } from "../sdk";
//   export function handle(event: Event): Status { ... }
//   export function sluice_handle(ptr: usize, len: i32): i32 { return dispatch(ptr, len, handle); }
//
// and is compiled with `--use abort=sdk/index/sluiceAbort` so that AssemblyScript's runtime
// errors become a log line plus a trap instead of an `env.abort` import the host refuses.

// ---- host imports ---------------------------------------------------------------------------

@external("sluice", "emit")
declare function hostEmit(topicPtr: usize, topicLen: i32, dataPtr: usize, dataLen: i32): i32;
@external("sluice", "log")
declare function hostLog(level: i32, ptr: usize, len: i32): void;
@external("sluice", "deadline_ms")
declare function hostDeadlineMs(): i64;
@external("sluice", "config_len")
declare function hostConfigLen(): i32;
@external("sluice", "config_read")
declare function hostConfigRead(ptr: usize, len: i32): i32;

// ---- statuses and codes ---------------------------------------------------------------------

/** What `handle` returns. */
export enum Status {
  /** Done; emits are published. */
  Ack = 0,
  /** Redeliver later; emits are dropped. */
  Retry = 1,
  /** Send to the dead letter destination; emits are dropped. */
  Reject = 2,
}

/** Return values of `emit`. */
export namespace EmitResult {
  export const Ok: i32 = 0;
  export const NotAllowed: i32 = -1;
  export const TooLarge: i32 = -2;
  export const BadTopic: i32 = -3;
  export const Quota: i32 = -4;
}

export enum LogLevel {
  Trace = 0,
  Debug = 1,
  Info = 2,
  Warn = 3,
  Error = 4,
}

// ---- envelope -------------------------------------------------------------------------------

const FLAG_SUBJECT: u32 = 1;
const FLAG_TRACEPARENT: u32 = 2;
const FLAG_DEADLINE: u32 = 4;

/** The event being handled. Valid only during `handle`: it points into the host's buffer. */
export class Event {
  constructor(private ptr: usize, private len: i32) {}

  private field(index: i32): usize {
    // Start of field `index` (0 id, 1 type, 2 source, 3 subject, 4 traceparent, 5 data).
    let at = this.ptr + <usize>load<u16>(this.ptr, 6);
    for (let i = 0; i < index; i++) at += <usize>load<u32>(this.ptr + 32 + 4 * i);
    return at;
  }

  private fieldLen(index: i32): i32 {
    return <i32>load<u32>(this.ptr + 32 + 4 * index);
  }

  private text(index: i32): string {
    return String.UTF8.decodeUnsafe(this.field(index), this.fieldLen(index));
  }

  private get flags(): u32 {
    return load<u32>(this.ptr, 8);
  }

  /** Envelope version (1). */
  get version(): u16 {
    return load<u16>(this.ptr, 4);
  }

  get id(): string {
    return this.text(0);
  }

  /** The topic, e.g. "order.created". */
  get type(): string {
    return this.text(1);
  }

  get source(): string {
    return this.text(2);
  }

  get subject(): string | null {
    return this.flags & FLAG_SUBJECT ? this.text(3) : null;
  }

  get traceparent(): string | null {
    return this.flags & FLAG_TRACEPARENT ? this.text(4) : null;
  }

  /** Event time, nanoseconds since the Unix epoch. */
  get timeNanos(): i64 {
    return load<i64>(this.ptr, 16);
  }

  /** Absolute deadline of the event's Context in ns since the epoch, or 0 when none. */
  get deadlineNanos(): i64 {
    return this.flags & FLAG_DEADLINE ? load<i64>(this.ptr, 24) : 0;
  }

  /** The payload bytes (a copy). */
  get data(): Uint8Array {
    const n = this.fieldLen(5);
    const out = new Uint8Array(n);
    memory.copy(out.dataStart, this.field(5), n);
    return out;
  }

  /** The payload decoded as UTF-8, e.g. JSON text. */
  get dataString(): string {
    return this.text(5);
  }
}

// ---- host calls -----------------------------------------------------------------------------

/** Emits `data` on `topic`; see `EmitResult` for the codes. Published only if you ack. */
export function emit(topic: string, data: Uint8Array): i32 {
  const t = String.UTF8.encode(topic);
  return hostEmit(changetype<usize>(t), t.byteLength, data.dataStart, data.byteLength);
}

/** Emits a string payload (e.g. JSON) on `topic`. */
export function emitString(topic: string, data: string): i32 {
  const t = String.UTF8.encode(topic);
  const d = String.UTF8.encode(data);
  return hostEmit(changetype<usize>(t), t.byteLength, changetype<usize>(d), d.byteLength);
}

export function log(message: string, level: LogLevel = LogLevel.Info): void {
  const m = String.UTF8.encode(message);
  hostLog(level, changetype<usize>(m), m.byteLength);
}

/** Milliseconds before this call is interrupted. */
export function deadlineMs(): i64 {
  return hostDeadlineMs();
}

/** The deployment's configuration bytes. */
export function config(): Uint8Array {
  const out = new Uint8Array(hostConfigLen());
  hostConfigRead(out.dataStart, out.byteLength);
  return out;
}

export function configString(): string {
  const c = config();
  return String.UTF8.decodeUnsafe(c.dataStart, c.byteLength);
}

// ---- tiny JSON helper -------------------------------------------------------------------------

/**
 * Reads the number stored under `"key"` in flat JSON text, or `fallback` when absent.
 * Deliberately minimal (no nesting awareness); use a JSON library for anything richer.
 */
export function jsonNumber(json: string, key: string, fallback: f64 = NaN): f64 {
  const at = json.indexOf('"' + key + '"');
  if (at < 0) return fallback;
  let i = json.indexOf(":", at + key.length + 2);
  if (i < 0) return fallback;
  i++;
  while (i < json.length && json.charCodeAt(i) == 32) i++;
  let end = i;
  while (end < json.length) {
    const c = json.charCodeAt(end);
    if ((c >= 48 && c <= 57) || c == 45 || c == 43 || c == 46 || c == 101 || c == 69) end++;
    else break;
  }
  return end > i ? parseFloat(json.substring(i, end)) : fallback;
}

// ---- ABI glue -------------------------------------------------------------------------------

// The host writes each envelope here. A global keeps it reachable for the GC; one instance
// handles one event at a time, so a single growing buffer is enough.
let inbox = new ArrayBuffer(0);

export function sluice_alloc(len: i32): usize {
  if (inbox.byteLength < len) inbox = new ArrayBuffer(len);
  return changetype<usize>(inbox);
}

/** Call from your exported `sluice_handle` with your `handle` function. */
export function dispatch(ptr: usize, len: i32, handler: (event: Event) => Status): i32 {
  return <i32>handler(new Event(ptr, len));
}

/** Replacement for AssemblyScript's `abort` (see `--use abort=...`): log, then trap. */
export function sluiceAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const m = message ? message! : "abort";
  const f = fileName ? fileName! : "?";
  log(m + " at " + f + ":" + line.toString() + ":" + column.toString(), LogLevel.Error);
  unreachable();
}
