//! Compile-once module registry keyed by `sha256:<hex>` of the module bytes.
//!
//! Only WebAssembly binaries are compiled here. Precompiled artifacts are refused outright:
//! `Module::deserialize` trusts its input, so it is never called on user bytes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, FuncType, InstancePre, Module};

use crate::abi;
use crate::engine::SandboxEngine;
use crate::error::{ErrorKind, SandboxError};
use crate::host::HostState;

/// Largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 16 << 20;

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// `sha256:<64 lowercase hex>` of `bytes`.
pub fn module_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn compile_err(message: impl Into<String>) -> SandboxError {
    SandboxError::new(ErrorKind::Compile, message)
}

fn signature(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = wasmtime::ValType>| {
        it.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "({}) -> ({})",
        list(&mut ty.params()),
        list(&mut ty.results())
    )
}

/// The host imports a v1 guest may use, with their signatures as `signature` prints them.
const IMPORTS: [(&str, &str); 5] = [
    (abi::IMPORT_EMIT, "(i32, i32, i32, i32) -> (i32)"),
    (abi::IMPORT_LOG, "(i32, i32, i32) -> ()"),
    (abi::IMPORT_DEADLINE_MS, "() -> (i64)"),
    (abi::IMPORT_CONFIG_LEN, "() -> (i32)"),
    (abi::IMPORT_CONFIG_READ, "(i32, i32) -> (i32)"),
];

/// Required and optional function exports with their signatures.
const EXPORTS: [(&str, &str, bool); 3] = [
    (abi::EXPORT_ALLOC, "(i32) -> (i32)", true),
    (abi::EXPORT_HANDLE, "(i32, i32) -> (i32)", true),
    (abi::EXPORT_INIT, "() -> (i32)", false),
];

/// Checks imports and exports against guest ABI v1; every message names the culprit.
fn check_abi(module: &Module) -> Result<bool, SandboxError> {
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        let expected = IMPORTS
            .iter()
            .find(|(name, _)| m == abi::IMPORT_MODULE && *name == n);
        let Some((_, sig)) = expected else {
            return Err(compile_err(format!(
                "unknown import {m}::{n}: guest ABI v1 only provides {}::{{{}}}",
                abi::IMPORT_MODULE,
                IMPORTS.map(|(n, _)| n).join(", ")
            )));
        };
        match import.ty() {
            ExternType::Func(f) if signature(&f) == *sig => {}
            ExternType::Func(f) => {
                return Err(compile_err(format!(
                    "import {m}::{n} has type {}, expected {sig}",
                    signature(&f)
                )))
            }
            _ => {
                return Err(compile_err(format!(
                    "import {m}::{n} must be a function {sig}"
                )))
            }
        }
    }

    match module.get_export(abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(mem)) if mem.is_64() || mem.is_shared() => {
            return Err(compile_err(
                "export `memory` must be a 32-bit, non-shared memory",
            ))
        }
        Some(ExternType::Memory(_)) => {}
        Some(_) => return Err(compile_err("export `memory` must be a memory")),
        None => return Err(compile_err("missing export `memory`")),
    }

    let mut has_init = false;
    for (name, sig, required) in EXPORTS {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if signature(&f) == sig => {
                has_init |= name == abi::EXPORT_INIT
            }
            Some(ExternType::Func(f)) => {
                return Err(compile_err(format!(
                    "export `{name}` has type {}, expected {sig}",
                    signature(&f)
                )))
            }
            Some(_) => {
                return Err(compile_err(format!(
                    "export `{name}` must be a function {sig}"
                )))
            }
            None if required => return Err(compile_err(format!("missing export `{name}` {sig}"))),
            None => {}
        }
    }
    Ok(has_init)
}

/// A compiled, ABI-checked handler module, ready to instantiate cheaply through `InstancePre`.
pub struct HandlerModule {
    hash: String,
    size: usize,
    has_init: bool,
    compile_time: Duration,
    pre: InstancePre<HostState>,
    engine: Arc<SandboxEngine>,
}

impl HandlerModule {
    /// Validates and compiles `bytes` without caching. Prefer `ModuleRegistry::compile`.
    pub fn compile(
        engine: &Arc<SandboxEngine>,
        bytes: &[u8],
    ) -> Result<HandlerModule, SandboxError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(compile_err(format!(
                "module is {} bytes, more than the {MAX_MODULE_BYTES}-byte cap",
                bytes.len()
            )));
        }
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(compile_err(
                "precompiled Wasmtime artifacts are refused; deploy the .wasm binary",
            ));
        }
        match (bytes.get(0..4), bytes.get(4..8)) {
            (Some(m), Some(v)) if m == WASM_MAGIC && v == CORE_VERSION => {}
            (Some(m), Some(_)) if m == WASM_MAGIC => {
                return Err(compile_err(
                    "not a core WebAssembly module (components are not supported by ABI v1)",
                ))
            }
            _ => {
                return Err(compile_err(
                    "not a WebAssembly binary (bad magic or version)",
                ))
            }
        }

        let started = Instant::now();
        let module = Module::from_binary(engine.wasmtime(), bytes)
            .map_err(|e| compile_err(format!("invalid module: {e:#}")))?;
        let compile_time = started.elapsed();
        let has_init = check_abi(&module)?;
        let pre = engine
            .linker()
            .instantiate_pre(&module)
            .map_err(|e| compile_err(format!("linking: {e:#}")))?;
        Ok(HandlerModule {
            hash: module_hash(bytes),
            size: bytes.len(),
            has_init,
            compile_time,
            pre,
            engine: engine.clone(),
        })
    }

    /// `sha256:<hex>` of the module bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the module exports `sluice_init`.
    pub fn has_init(&self) -> bool {
        self.has_init
    }

    /// How long Cranelift took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    pub fn engine(&self) -> &Arc<SandboxEngine> {
        &self.engine
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }
}

impl std::fmt::Debug for HandlerModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerModule")
            .field("hash", &self.hash)
            .field("size", &self.size)
            .field("has_init", &self.has_init)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<Mutex<Option<Arc<HandlerModule>>>>;

/// In-memory cache of compiled modules. Compiling the same bytes twice, even from two
/// threads at once, runs Cranelift once: each hash has its own slot lock, so different
/// modules still compile in parallel.
pub struct ModuleRegistry {
    engine: Arc<SandboxEngine>,
    slots: Mutex<HashMap<String, Slot>>,
    compilations: AtomicU64,
}

impl ModuleRegistry {
    pub fn new(engine: Arc<SandboxEngine>) -> ModuleRegistry {
        ModuleRegistry {
            engine,
            slots: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
        }
    }

    pub fn engine(&self) -> &Arc<SandboxEngine> {
        &self.engine
    }

    /// Returns the cached module for these bytes, compiling it on first sight. Failed
    /// compilations are not cached (the error is cheap to reproduce and carries no state).
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<HandlerModule>, SandboxError> {
        if bytes.len() > MAX_MODULE_BYTES {
            // Refuse before hashing megabytes of junk.
            return HandlerModule::compile(&self.engine, bytes).map(Arc::new);
        }
        let hash = module_hash(bytes);
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hash.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        self.compilations.fetch_add(1, Ordering::Relaxed);
        match HandlerModule::compile(&self.engine, bytes) {
            Ok(module) => {
                let module = Arc::new(module);
                *guard = Some(module.clone());
                Ok(module)
            }
            Err(e) => {
                // Do not keep an empty slot per rejected upload.
                drop(guard);
                let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                if slots.get(&hash).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(&hash);
                }
                Err(e)
            }
        }
    }

    /// The compiled module with this hash, if it is cached.
    pub fn get(&self, hash: &str) -> Option<Arc<HandlerModule>> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)?
            .clone();
        let guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        guard.clone()
    }

    /// Drops the cache entry; deployments still holding the module keep it alive.
    pub fn remove(&self, hash: &str) -> bool {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash)
            .is_some()
    }

    /// Number of cached (successfully compiled) modules.
    pub fn len(&self) -> usize {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .filter(|s| s.lock().map(|g| g.is_some()).unwrap_or(false))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times Cranelift ran (cache misses, including failed compilations).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }
}
