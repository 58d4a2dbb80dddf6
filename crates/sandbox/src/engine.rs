//! The process-wide Wasmtime engine: Cranelift, pooling allocator, epoch interruption,
//! copy-on-write memory images, a bounded wasm stack, and the host-function linker.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
};

use crate::epoch::Ticker;
use crate::error::{ErrorKind, SandboxError};
use crate::host::{self, HostState};

/// Engine-wide settings. They cannot vary per deployment because Wasmtime fixes them per
/// `Engine` (stack size, fuel instrumentation, pool geometry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Instance slots in the pooling allocator, shared by all deployments.
    pub max_instances: u32,
    /// Ceiling for any deployment's `Limits::memory_bytes` (pool slot size). At most 2 GiB:
    /// the ABI passes pointers as non-negative i32.
    pub max_memory_bytes: usize,
    /// Wasm stack budget; deeper recursion traps with `ERR_STACK_OVERFLOW`. Threads that call
    /// `handle` need this much stack plus room for the host (Rust's 2 MiB default is enough
    /// for the 512 KiB default).
    pub max_wasm_stack: usize,
    /// Epoch tick; the timeout resolution.
    pub tick: Duration,
    /// Compile fuel metering in. Needed for `Limits::fuel`; costs some speed on every guest.
    pub fuel: bool,
    /// Compile functions of one module on several threads.
    pub parallel_compilation: bool,
    /// Bytes of each linear memory (and table) zeroed with memset instead of `madvise` when an
    /// instance is dropped, so the next instance in that pool slot takes fewer page faults.
    /// Trades a little resident memory per warm slot for faster replacement.
    pub keep_resident_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            max_wasm_stack: 512 << 10,
            tick: Duration::from_millis(1),
            fuel: true,
            parallel_compilation: true,
            keep_resident_bytes: 64 << 10,
        }
    }
}

/// A Wasmtime engine plus what every deployment on it shares: the linker holding the
/// `sluice` host functions and the epoch ticker.
pub struct SandboxEngine {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Ticker,
    config: EngineConfig,
}

static GLOBAL: OnceLock<Result<Arc<SandboxEngine>, SandboxError>> = OnceLock::new();

impl SandboxEngine {
    /// The lazily created process-wide engine with `EngineConfig::default()`.
    pub fn global() -> Result<Arc<SandboxEngine>, SandboxError> {
        GLOBAL
            .get_or_init(|| SandboxEngine::new(EngineConfig::default()))
            .clone()
    }

    /// A separate engine (tests, benchmarks, or a host that wants other ceilings).
    pub fn new(config: EngineConfig) -> Result<Arc<SandboxEngine>, SandboxError> {
        let bad = |m: String| SandboxError::new(ErrorKind::Config, m);
        if config.max_memory_bytes == 0 || config.max_memory_bytes > (2usize << 30) {
            return Err(bad(format!(
                "max_memory_bytes {} must be in 1..=2 GiB",
                config.max_memory_bytes
            )));
        }
        if config.tick.is_zero() {
            return Err(bad("tick must be positive".into()));
        }

        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory_bytes)
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(config.keep_resident_bytes);

        let mut c = Config::new();
        c.epoch_interruption(true)
            .consume_fuel(config.fuel)
            .max_wasm_stack(config.max_wasm_stack)
            .memory_init_cow(true)
            .parallel_compilation(config.parallel_compilation)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        let engine = Engine::new(&c).map_err(|e| bad(format!("engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| bad(format!("linker: {e:#}")))?;
        let ticker = Ticker::start(engine.clone(), config.tick)
            .map_err(|e| bad(format!("epoch ticker thread: {e}")))?;
        Ok(Arc::new(SandboxEngine {
            engine,
            linker,
            ticker,
            config,
        }))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    pub(crate) fn ticker(&self) -> &Ticker {
        &self.ticker
    }
}

impl std::fmt::Debug for SandboxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
