//! Store data and the `sluice` host imports.
//!
//! Rules every function here follows: look the memory size up on each call (the guest may
//! have grown it), check `(ptr, len)` with `check_guest_range` before touching bytes, cap
//! lengths before copying, and copy out of guest memory instead of keeping a slice (no host
//! function calls back into the guest, so no slice can outlive a guest call).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Caller, Linker, Memory};

use crate::abi::{self, check_guest_range, emit_code, LogLevel};
use crate::error::GuestMemoryFault;
use crate::limits::{Limits, MemoryLimiter};
use crate::topic::{is_valid_topic, AllowList};

/// An event the guest asked to publish, already checked against the allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emit {
    pub topic: String,
    pub data: Vec<u8>,
}

/// One `log` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
    /// True when the guest's message was longer than `Limits::max_log_bytes`.
    pub truncated: bool,
}

/// Immutable per-deployment policy shared by all its instances.
#[derive(Debug)]
pub(crate) struct Policy {
    pub limits: Limits,
    pub allow: AllowList,
    pub config: Box<[u8]>,
}

/// What one event's guest call produced so far.
#[derive(Default, Debug)]
pub(crate) struct CallState {
    pub emits: Vec<Emit>,
    pub emit_bytes: usize,
    pub refused_emits: u32,
    pub logs: Vec<LogRecord>,
    pub dropped_logs: u32,
}

pub(crate) struct HostState {
    pub limiter: MemoryLimiter,
    pub policy: Arc<Policy>,
    /// Set right after instantiation; host functions use it instead of a by-name lookup.
    pub memory: Option<Memory>,
    /// Effective deadline of the current call (event deadline or timeout, whichever is first).
    pub deadline: Instant,
    /// When the current guest call started (for timeout messages).
    pub started: Instant,
    pub call: CallState,
}

impl HostState {
    pub fn new(policy: Arc<Policy>) -> Self {
        HostState {
            limiter: MemoryLimiter::new(policy.limits.memory_bytes),
            policy,
            memory: None,
            deadline: Instant::now(),
            started: Instant::now(),
            call: CallState::default(),
        }
    }
}

type Result<T> = wasmtime::Result<T>;

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::new(GuestMemoryFault::NoMemory))
}

fn fault(f: GuestMemoryFault) -> wasmtime::Error {
    wasmtime::Error::new(f)
}

fn emit(mut caller: Caller<'_, HostState>, tp: i32, tl: i32, dp: i32, dl: i32) -> Result<i32> {
    let mem = memory(&caller)?;
    let (bytes, state) = mem.data_and_store_mut(&mut caller);
    // Pointer faults trap; everything after is a policy refusal the guest can handle.
    let topic_range = check_guest_range(bytes.len(), tp, tl).map_err(fault)?;
    let data_range = check_guest_range(bytes.len(), dp, dl).map_err(fault)?;
    let limits = &state.policy.limits;
    let call = &mut state.call;
    let code = if topic_range.len() > limits.max_topic_bytes as usize
        || data_range.len() > limits.max_emit_bytes as usize
    {
        emit_code::TOO_LARGE
    } else if call.emits.len() >= limits.max_emits as usize
        || call.emit_bytes + data_range.len() > limits.max_emit_total_bytes as usize
    {
        emit_code::QUOTA
    } else {
        match std::str::from_utf8(&bytes[topic_range]) {
            Ok(topic) if !is_valid_topic(topic) => emit_code::BAD_TOPIC,
            Err(_) => emit_code::BAD_TOPIC,
            Ok(topic) if !state.policy.allow.allows(topic) => emit_code::NOT_ALLOWED,
            Ok(topic) => {
                call.emit_bytes += data_range.len();
                call.emits.push(Emit {
                    topic: topic.to_owned(),
                    data: bytes[data_range].to_vec(),
                });
                emit_code::OK
            }
        }
    };
    if code != emit_code::OK {
        call.refused_emits += 1;
    }
    Ok(code)
}

fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> Result<()> {
    let mem = memory(&caller)?;
    let (bytes, state) = mem.data_and_store_mut(&mut caller);
    let range = check_guest_range(bytes.len(), ptr, len).map_err(fault)?;
    let limits = &state.policy.limits;
    if state.call.logs.len() >= limits.max_logs as usize {
        state.call.dropped_logs += 1;
        return Ok(());
    }
    // Cap before copying: a guest may point at megabytes.
    let cap = limits.max_log_bytes as usize;
    let truncated = range.len() > cap;
    let end = range.start + range.len().min(cap);
    let message = String::from_utf8_lossy(&bytes[range.start..end]).into_owned();
    state.call.logs.push(LogRecord {
        level: LogLevel::from_i32(level),
        message,
        truncated,
    });
    Ok(())
}

fn deadline_ms(caller: Caller<'_, HostState>) -> i64 {
    let left = caller
        .data()
        .deadline
        .saturating_duration_since(Instant::now());
    i64::try_from(left.as_millis()).unwrap_or(i64::MAX)
}

fn config_len(caller: Caller<'_, HostState>) -> i32 {
    // MAX_CONFIG_BYTES keeps this lossless.
    caller.data().policy.config.len() as i32
}

fn config_read(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> Result<i32> {
    let mem = memory(&caller)?;
    let (bytes, state) = mem.data_and_store_mut(&mut caller);
    // The whole buffer the guest declares must be inside its memory, even if the config is
    // shorter: a buffer that is partly out of bounds is a guest bug worth reporting.
    let range = check_guest_range(bytes.len(), ptr, len).map_err(fault)?;
    let config = &state.policy.config;
    let n = range.len().min(config.len());
    bytes[range.start..range.start + n].copy_from_slice(&config[..n]);
    Ok(n as i32)
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(m, abi::IMPORT_EMIT, emit)?;
    linker.func_wrap(m, abi::IMPORT_LOG, log)?;
    linker.func_wrap(m, abi::IMPORT_DEADLINE_MS, deadline_ms)?;
    linker.func_wrap(m, abi::IMPORT_CONFIG_LEN, config_len)?;
    linker.func_wrap(m, abi::IMPORT_CONFIG_READ, config_read)?;
    Ok(())
}
