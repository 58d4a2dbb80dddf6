/**
 * Typed errors with stable `code`s. The native layer throws errors whose message starts with the
 * code (`ERR_QUEUE_FULL: …`); `fromNative` turns them into these classes with the original as
 * `cause`.
 */
export class SluiceError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export class Canceled extends SluiceError {
  constructor(message = 'context canceled', options?: { cause?: unknown }) {
    super('ERR_CANCELED', message, options);
  }
}

export class DeadlineExceeded extends SluiceError {
  constructor(message = 'context deadline exceeded', options?: { cause?: unknown }) {
    super('ERR_DEADLINE_EXCEEDED', message, options);
  }
}

export class QueueFull extends SluiceError {
  constructor(message = 'queue full', options?: { cause?: unknown }) {
    super('ERR_QUEUE_FULL', message, options);
  }
}

export class BusClosed extends SluiceError {
  constructor(message = 'bus is closed', options?: { cause?: unknown }) {
    super('ERR_CLOSED', message, options);
  }
}

export class InvalidArgument extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARG', message, options);
  }
}

export class EncodeError extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_ENCODE', message, options);
  }
}

export class Unsupported extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UNSUPPORTED', message, options);
  }
}

/**
 * `isolation: 'process'` cannot be had here: not Linux x86_64, the kernel refused a namespace
 * or seccomp, or the `sluice-helper` binary is missing. Never downgraded silently.
 */
export class IsolationUnavailable extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_ISOLATION_UNAVAILABLE', message, options);
  }
}

/** The local journal failed. `code` says how: the subclasses below, or `ERR_JOURNAL_CLOSED`, `ERR_JOURNAL_UNKNOWN_CONSUMER`, `ERR_JOURNAL_INVALID`. */
export class JournalError extends SluiceError {}

/** I/O error (EIO, a failed fsync: the journal stays unusable until reopened). */
export class JournalIoError extends JournalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_JOURNAL_IO', message, options);
  }
}

/** The file system is full (ENOSPC, EDQUOT). Nothing acknowledged before is lost. */
export class JournalFull extends JournalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_JOURNAL_FULL', message, options);
  }
}

/** The directory or file system cannot be written (EROFS, EACCES, EPERM). */
export class JournalReadOnly extends JournalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_JOURNAL_READONLY', message, options);
  }
}

/** Another journal (this process or another) has the directory open. */
export class JournalLocked extends JournalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_JOURNAL_LOCKED', message, options);
  }
}

/** Damage a crash cannot explain (not a torn last record); the files are left untouched. */
export class JournalCorrupt extends JournalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_JOURNAL_CORRUPT', message, options);
  }
}

/** A WASM handler or module failed: `ERR_COMPILE`, `ERR_TRAP`, `ERR_TIMEOUT`, `ERR_MEMORY_LIMIT`, … */
export class SandboxError extends SluiceError {}

/** A rollout step was refused: `ERR_HASH_MISMATCH`, `ERR_NO_CANDIDATE`, `ERR_UNKNOWN_VERSION`. */
export class RolloutError extends SluiceError {}

const rolloutCodes = new Set(['ERR_HASH_MISMATCH', 'ERR_NO_CANDIDATE', 'ERR_UNKNOWN_VERSION']);

const sandboxCodes = new Set([
  'ERR_COMPILE',
  'ERR_INVALID_CONFIG',
  'ERR_INSTANTIATE',
  'ERR_TIMEOUT',
  'ERR_FUEL_EXHAUSTED',
  'ERR_MEMORY_LIMIT',
  'ERR_STACK_OVERFLOW',
  'ERR_TRAP',
  'ERR_GUEST_MEMORY',
  'ERR_HANDLER_STATUS',
  'ERR_EXISTS',
]);

const byCode: Record<string, new (message: string, options?: { cause?: unknown }) => SluiceError> = {
  ERR_CANCELED: Canceled,
  ERR_DEADLINE_EXCEEDED: DeadlineExceeded,
  ERR_QUEUE_FULL: QueueFull,
  ERR_CLOSED: BusClosed,
  ERR_INVALID_ARG: InvalidArgument,
  ERR_ENCODE: EncodeError,
  ERR_UNSUPPORTED: Unsupported,
  ERR_ISOLATION_UNAVAILABLE: IsolationUnavailable,
  ERR_JOURNAL_IO: JournalIoError,
  ERR_JOURNAL_FULL: JournalFull,
  ERR_JOURNAL_READONLY: JournalReadOnly,
  ERR_JOURNAL_LOCKED: JournalLocked,
  ERR_JOURNAL_CORRUPT: JournalCorrupt,
};

/** Maps an error thrown by the native binding to its typed class. */
export function fromNative(e: unknown): Error {
  if (e instanceof SluiceError || !(e instanceof Error)) return e as Error;
  const m = /^(ERR_[A-Z_]+): ([\s\S]*)$/.exec(e.message);
  if (!m) {
    // napi-rs argument conversion errors (a number where a string belongs, …) are bad input.
    if ((e as { code?: string }).code === 'InvalidArg' || /expect|Failed to convert/i.test(e.message)) {
      return new InvalidArgument(e.message, { cause: e });
    }
    return e;
  }
  const Ctor = byCode[m[1]!];
  if (Ctor) return new Ctor(m[2]!, { cause: e });
  if (sandboxCodes.has(m[1]!)) return new SandboxError(m[1]!, m[2]!, { cause: e });
  if (m[1]!.startsWith('ERR_JOURNAL_')) return new JournalError(m[1]!, m[2]!, { cause: e });
  if (rolloutCodes.has(m[1]!)) return new RolloutError(m[1]!, m[2]!, { cause: e });
  return new SluiceError(m[1]!, m[2]!, { cause: e });
}
