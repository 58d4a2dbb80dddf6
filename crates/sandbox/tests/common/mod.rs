//! Shared helpers: load WAT fixtures, deploy them, and script the probe fixture.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

use sluice_sandbox::{
    Envelope, HandleResult, Limits, LogLevel, ModuleRegistry, Sandbox, SandboxEngine, SandboxError,
    SandboxOptions,
};

pub fn wasm(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn engine() -> Arc<SandboxEngine> {
    SandboxEngine::global().expect("global engine")
}

pub fn registry() -> ModuleRegistry {
    ModuleRegistry::new(engine())
}

pub fn try_deploy(name: &str, options: SandboxOptions) -> Result<Sandbox, SandboxError> {
    let module = registry().compile(&wasm(name))?;
    Sandbox::new(module, options)
}

pub fn deploy(name: &str, options: SandboxOptions) -> Sandbox {
    try_deploy(name, options).unwrap_or_else(|e| panic!("deploy {name}: {e}"))
}

pub fn event(data: &[u8]) -> Envelope<'_> {
    Envelope {
        id: "e1",
        event_type: "probe.run",
        source: "test",
        time_unix_nanos: 1_700_000_000_000_000_000,
        subject: None,
        traceparent: None,
        deadline_unix_nanos: None,
        data,
    }
}

pub fn handle(sb: &Sandbox, data: &[u8]) -> HandleResult {
    sb.handle(&event(data), None)
}

// Probe ops, mirrored from tests/fixtures/probe.wat.
pub const EMIT: i32 = 1;
pub const LOG: i32 = 2;
pub const CONFIG_READ: i32 = 3;
pub const CONFIG_LEN: i32 = 4;
pub const DEADLINE_MS: i32 = 5;
pub const UNREACHABLE: i32 = 6;
pub const GROW: i32 = 7;
pub const LOAD: i32 = 8;
pub const LOOP: i32 = 9;
pub const RECURSE: i32 = 10;

/// Where probe.wat's sluice_alloc puts the envelope.
pub const ENVELOPE_AT: i32 = 1024;
/// The probe's single initial page.
pub const PROBE_MEMORY: i32 = 65536;
const MAX_OPS: usize = 16;
const DATA_AT: i32 = ENVELOPE_AT + 56 + ("e1".len() + "probe.run".len() + "test".len()) as i32;
/// Absolute guest address of the first payload byte.
pub const PAYLOAD_AT: i32 = DATA_AT + 8 + 20 * MAX_OPS as i32;

/// A script for probe.wat. Ops live in a fixed 16-slot area so payload addresses are known
/// before all ops are added.
pub struct Probe {
    status: i32,
    ops: Vec<[i32; 5]>,
    payload: Vec<u8>,
}

impl Probe {
    pub fn new(status: i32) -> Probe {
        Probe {
            status,
            ops: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Stores bytes in the payload; returns their guest (ptr, len).
    pub fn put(&mut self, bytes: &[u8]) -> (i32, i32) {
        let ptr = PAYLOAD_AT + self.payload.len() as i32;
        self.payload.extend_from_slice(bytes);
        (ptr, bytes.len() as i32)
    }

    pub fn op(&mut self, op: i32, a: i32, b: i32, c: i32, d: i32) -> &mut Probe {
        assert!(self.ops.len() < MAX_OPS, "probe supports {MAX_OPS} ops");
        self.ops.push([op, a, b, c, d]);
        self
    }

    pub fn emit(&mut self, topic: &str, data: &[u8]) -> &mut Probe {
        let (tp, tl) = self.put(topic.as_bytes());
        let (dp, dl) = self.put(data);
        self.op(EMIT, tp, tl, dp, dl)
    }

    pub fn log(&mut self, level: i32, message: &str) -> &mut Probe {
        let (p, l) = self.put(message.as_bytes());
        self.op(LOG, level, p, l, 0)
    }

    pub fn data(&self) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&self.status.to_le_bytes());
        d.extend_from_slice(&(self.ops.len() as i32).to_le_bytes());
        for slot in 0..MAX_OPS {
            let op = self.ops.get(slot).copied().unwrap_or([0; 5]);
            for v in op {
                d.extend_from_slice(&v.to_le_bytes());
            }
        }
        d.extend_from_slice(&self.payload);
        d
    }

    pub fn run(&self, sb: &Sandbox) -> HandleResult {
        self.run_until(sb, None)
    }

    pub fn run_until(&self, sb: &Sandbox, deadline: Option<Instant>) -> HandleResult {
        let data = self.data();
        sb.handle(&event(&data), deadline)
    }
}

/// The values probe.wat reported, in op order.
pub fn reports(r: &HandleResult) -> Vec<i64> {
    r.logs
        .iter()
        .filter(|l| l.level == LogLevel::Debug && l.message.len() == 16)
        .filter_map(|l| u64::from_str_radix(&l.message, 16).ok().map(|v| v as i64))
        .collect()
}

/// Options with a generous timeout: this 2-core machine is shared with other builds, and a
/// descheduled thread must not turn into a spurious ERR_TIMEOUT in unrelated tests.
pub fn opts(emits: &[&str]) -> SandboxOptions {
    SandboxOptions {
        emits: emits.iter().map(|s| s.to_string()).collect(),
        limits: Limits {
            timeout_ms: 5_000,
            ..Limits::default()
        },
        ..Default::default()
    }
}
