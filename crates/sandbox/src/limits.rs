//! Per-deployment limits and the resource limiter that enforces the memory one.

use std::time::Duration;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::error::{ErrorKind, MemoryLimitExceeded, SandboxError};

/// Limits of one deployment. Every instance of the deployment gets the same ones; time, fuel
/// and the emit/log caps are per event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory ceiling per instance, bytes. Growing past it traps with `ERR_MEMORY_LIMIT`.
    pub memory_bytes: usize,
    /// Wall-clock budget per event; the effective deadline is the earlier of this and the
    /// event's own deadline.
    pub timeout_ms: u64,
    /// Optional deterministic CPU budget per event (needs an engine with fuel enabled).
    pub fuel: Option<u64>,
    /// Most `emit` calls accepted per event; more return `QUOTA`.
    pub max_emits: u32,
    /// Largest data accepted by one `emit`; larger returns `TOO_LARGE`.
    pub max_emit_bytes: u32,
    /// Sum of data bytes accepted across one event's emits; more returns `QUOTA`.
    pub max_emit_total_bytes: u32,
    /// Longest topic accepted by `emit`; longer returns `TOO_LARGE`.
    pub max_topic_bytes: u32,
    /// Most log records kept per event; the rest are counted as dropped.
    pub max_logs: u32,
    /// Log messages are truncated to this many bytes.
    pub max_log_bytes: u32,
}

/// Longest per-event timeout (one hour): keeps `Instant` arithmetic far from overflow.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Largest configuration blob a deployment may carry.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 16 << 20,
            timeout_ms: 50,
            fuel: None,
            max_emits: 64,
            max_emit_bytes: 1 << 20,
            max_emit_total_bytes: 4 << 20,
            max_topic_bytes: 255,
            max_logs: 32,
            max_log_bytes: 4096,
        }
    }
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the limits against the engine ceilings they must fit under.
    pub(crate) fn validate(
        &self,
        max_memory_bytes: usize,
        fuel_enabled: bool,
    ) -> Result<(), SandboxError> {
        let bad = |m: String| Err(SandboxError::new(ErrorKind::Config, m));
        if self.memory_bytes == 0 || self.memory_bytes > max_memory_bytes {
            return bad(format!(
                "limits.memory_bytes {} must be in 1..={max_memory_bytes} (engine ceiling)",
                self.memory_bytes
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return bad(format!(
                "limits.timeout_ms {} must be in 1..={MAX_TIMEOUT_MS}",
                self.timeout_ms
            ));
        }
        if self.fuel.is_some() && !fuel_enabled {
            return bad("limits.fuel is set but the engine was built without fuel metering".into());
        }
        if self.max_emit_bytes > i32::MAX as u32 || self.max_emit_total_bytes > i32::MAX as u32 {
            return bad("emit byte caps must fit in i32".into());
        }
        Ok(())
    }
}

/// Wraps Wasmtime's `StoreLimits` so that hitting our memory ceiling is a typed trap instead
/// of `memory.grow` quietly returning -1: a guest that ignores -1 would otherwise spin until
/// its timeout and be reported as the wrong failure.
pub(crate) struct MemoryLimiter {
    inner: StoreLimits,
    limit: usize,
}

impl MemoryLimiter {
    pub fn new(limit: usize) -> Self {
        let inner = StoreLimitsBuilder::new()
            .memory_size(limit)
            .instances(1)
            .memories(1)
            .tables(1)
            .table_elements(100_000)
            .build();
        MemoryLimiter { inner, limit }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.limit,
            }));
        }
        // Below our ceiling the module's own declared maximum still applies (plain -1).
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
