//! Typed errors with stable codes. The codes are part of the public contract: the N-API layer
//! passes them through to JavaScript as `err.code`, so they never change once shipped.

use std::fmt;

/// Why a deployment could not be built or why one event could not be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The module is malformed, oversized, precompiled, or violates the guest ABI.
    Compile,
    /// Invalid options (limits above the engine's ceilings, bad emit pattern, …).
    Config,
    /// An instance could not be created (pool slots exhausted, `sluice_init` failed).
    Instantiate,
    /// The event's deadline or the deployment's `timeout_ms` passed while the guest ran.
    Timeout,
    /// The per-event fuel budget ran out.
    OutOfFuel,
    /// The guest tried to grow its memory past `Limits::memory_bytes`.
    MemoryLimit,
    /// The guest exhausted the engine's wasm stack budget.
    StackOverflow,
    /// Any other trap (`unreachable`, division by zero, out-of-bounds access in guest code, …).
    Trap,
    /// The guest handed the host a pointer/length outside its memory.
    GuestMemory,
    /// `sluice_handle` returned a status other than ack / retry / reject.
    HandlerStatus,
}

impl ErrorKind {
    /// Every kind, in the order used by the stats counters.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Compile,
        ErrorKind::Config,
        ErrorKind::Instantiate,
        ErrorKind::Timeout,
        ErrorKind::OutOfFuel,
        ErrorKind::MemoryLimit,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::GuestMemory,
        ErrorKind::HandlerStatus,
    ];

    /// Stable error code, shared with the TypeScript API.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Compile => "ERR_COMPILE",
            ErrorKind::Config => "ERR_INVALID_CONFIG",
            ErrorKind::Instantiate => "ERR_INSTANTIATE",
            ErrorKind::Timeout => "ERR_TIMEOUT",
            ErrorKind::OutOfFuel => "ERR_FUEL_EXHAUSTED",
            ErrorKind::MemoryLimit => "ERR_MEMORY_LIMIT",
            ErrorKind::StackOverflow => "ERR_STACK_OVERFLOW",
            ErrorKind::Trap => "ERR_TRAP",
            ErrorKind::GuestMemory => "ERR_GUEST_MEMORY",
            ErrorKind::HandlerStatus => "ERR_HANDLER_STATUS",
        }
    }

    /// True when the instance that produced this error must not run another event: its
    /// state may be half-updated (a trap can stop it anywhere) or it already broke a rule.
    pub fn poisons_instance(self) -> bool {
        !matches!(
            self,
            ErrorKind::HandlerStatus | ErrorKind::Config | ErrorKind::Compile
        )
    }

    pub(crate) fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error with a stable kind and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxError {
    kind: ErrorKind,
    message: String,
}

impl SandboxError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SandboxError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Shorthand for `self.kind().code()`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn with_prefix(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for SandboxError {}

/// Why a guest pointer/length pair was refused. Each check has its own variant so tests can
/// tell which check fired (and fail if one is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemoryFault {
    /// The module has no usable `memory` (cannot happen after validation; kept defensive).
    NoMemory,
    NegativePointer {
        ptr: i32,
    },
    NegativeLength {
        len: i32,
    },
    /// `ptr + len` does not fit in an i32 (wasm32 pointers above 2 GiB are not accepted).
    Overflow {
        ptr: i32,
        len: i32,
    },
    /// The range ends past the current memory size.
    OutOfBounds {
        ptr: i32,
        len: i32,
        memory_size: usize,
    },
}

impl fmt::Display for GuestMemoryFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GuestMemoryFault::NoMemory => write!(f, "guest has no exported memory"),
            GuestMemoryFault::NegativePointer { ptr } => write!(f, "negative guest pointer {ptr}"),
            GuestMemoryFault::NegativeLength { len } => write!(f, "negative guest length {len}"),
            GuestMemoryFault::Overflow { ptr, len } => {
                write!(
                    f,
                    "guest range overflows: ptr {ptr} + len {len} exceeds i32"
                )
            }
            GuestMemoryFault::OutOfBounds {
                ptr,
                len,
                memory_size,
            } => write!(
                f,
                "guest range out of bounds: ptr {ptr} + len {len} > memory size {memory_size}"
            ),
        }
    }
}

impl std::error::Error for GuestMemoryFault {}

/// Raised from the epoch callback when the effective deadline has passed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeoutExceeded {
    /// How long the guest had run when it was stopped.
    pub ran_ms: u128,
}

impl fmt::Display for TimeoutExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest stopped at its deadline after {} ms", self.ran_ms)
    }
}

impl std::error::Error for TimeoutExceeded {}

/// Raised from the resource limiter when the guest asks for more memory than allowed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest memory would grow to {} bytes, limit is {} bytes",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Maps an error coming out of Wasmtime (a trap, or one of our own host-side errors carried
/// through it) to a typed `SandboxError`. `fallback` is used for errors that are not traps,
/// e.g. pool exhaustion during instantiation.
pub(crate) fn classify(err: wasmtime::Error, fallback: ErrorKind) -> SandboxError {
    if let Some(fault) = err.downcast_ref::<GuestMemoryFault>() {
        return SandboxError::new(ErrorKind::GuestMemory, fault.to_string());
    }
    if let Some(t) = err.downcast_ref::<TimeoutExceeded>() {
        return SandboxError::new(ErrorKind::Timeout, t.to_string());
    }
    if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
        return SandboxError::new(ErrorKind::MemoryLimit, m.to_string());
    }
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        let kind = match trap {
            wasmtime::Trap::StackOverflow => ErrorKind::StackOverflow,
            // Only epoch interruption raises `Interrupt` in this engine.
            wasmtime::Trap::Interrupt => ErrorKind::Timeout,
            wasmtime::Trap::OutOfFuel => ErrorKind::OutOfFuel,
            _ => ErrorKind::Trap,
        };
        return SandboxError::new(kind, trap.to_string());
    }
    SandboxError::new(fallback, format!("{err:#}"))
}
