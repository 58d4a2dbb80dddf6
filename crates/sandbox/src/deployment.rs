//! A deployment: a sandboxed handler wired to the bus. It subscribes to its topics with bounded
//! queues like any subscriber, and `concurrency` Rust worker threads take events from those
//! queues and run them on the `Sandbox` — an event routed to a WASM handler never enters JS.
//! Allowed guest emits are published back into the bus under the parent event's Context and
//! trace context.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::Serialize;
use sluice_core::{Bus, DeliveryOptions, Overflow, SubscribeOptions, Subscription, SubscriptionStats};

use crate::dispatch::{worker_loop, Wakeup};
use crate::error::SandboxError;
use crate::pool::{Sandbox, SandboxOptions};
use crate::registry::{module_hash, ModuleRegistry};
use crate::SandboxEngine;

/// Errors of deploy/undeploy: the sandbox's codes (`ERR_COMPILE`, …) or the bus's
/// (`ERR_INVALID_ARG`, `ERR_CLOSED`, …), unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DeployError {}

impl From<SandboxError> for DeployError {
    fn from(e: SandboxError) -> Self {
        DeployError { code: e.code(), message: e.message().to_owned() }
    }
}

impl From<sluice_core::Error> for DeployError {
    fn from(e: sluice_core::Error) -> Self {
        DeployError { code: e.code(), message: e.message().to_owned() }
    }
}

fn invalid(message: impl Into<String>) -> DeployError {
    DeployError { code: "ERR_INVALID_ARG", message: message.into() }
}

/// What to deploy besides the module bytes.
#[derive(Clone, Debug)]
pub struct DeploySpec {
    /// Topics or patterns the handler consumes.
    pub topics: Vec<String>,
    /// Queue of each topic subscription (defaults: the bus's).
    pub capacity: Option<usize>,
    pub overflow: Option<Overflow>,
    /// Retries, dead letter, ordering, dedupe of each topic subscription (see `sluice_core::delivery`).
    pub delivery: DeliveryOptions,
    pub sandbox: SandboxOptions,
}

/// Counters kept by the dispatcher, beside the sandbox's own.
#[derive(Default)]
pub(crate) struct DispatchCounters {
    pub emits_published: AtomicU64,
    /// Allowed emits the bus refused or could not place in time (the bus counts the drop too).
    pub emits_failed: AtomicU64,
    /// Events whose handler did not ack (retry, reject, or an error), counted as failed.
    pub failed: AtomicU64,
}

pub(crate) struct Shared {
    /// The deployment's name, as lifecycle records carry it.
    pub name: Arc<str>,
    pub stop: AtomicBool,
    pub wakeup: Wakeup,
    pub counters: DispatchCounters,
}

pub struct Deployment {
    name: String,
    bus: Arc<Bus>,
    sandbox: Arc<Sandbox>,
    subs: Vec<Arc<Subscription>>,
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    topics: Vec<String>,
}

/// `Deployment.info()`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfo {
    pub name: String,
    pub hash: String,
    pub topics: Vec<String>,
    pub emits: Vec<String>,
    pub concurrency: usize,
    pub isolation: &'static str,
    pub limits: LimitsInfo,
    pub instances: InstancesInfo,
    pub outcomes: OutcomesInfo,
    pub emits_published: u64,
    pub emits_refused: u64,
    pub emits_discarded: u64,
    pub emits_failed: u64,
    pub logs_dropped: u64,
    pub latency_us: LatencyInfo,
    pub subscriptions: Vec<SubscriptionStats>,
    pub running: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsInfo {
    pub memory_bytes: usize,
    pub timeout_ms: u64,
    pub fuel: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancesInfo {
    pub live: usize,
    pub idle: usize,
    pub created: u64,
    pub discarded: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomesInfo {
    pub ack: u64,
    pub retry: u64,
    pub reject: u64,
    /// Errors by code (`ERR_TRAP`, `ERR_TIMEOUT`, …); only codes seen are listed.
    pub errors: HashMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyInfo {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Deployment {
    /// Builds the sandbox (first instance created, so a bad `sluice_init` fails here), creates
    /// the rest of the instances, subscribes, and starts the workers.
    fn start(name: &str, bus: Arc<Bus>, sandbox: Arc<Sandbox>, spec: &DeploySpec) -> Result<Arc<Deployment>, DeployError> {
        if spec.topics.is_empty() {
            return Err(invalid("a deployment needs at least one topic"));
        }
        sandbox.prewarm()?;
        let mut opts: SubscribeOptions = bus.subscribe_options();
        if let Some(c) = spec.capacity {
            opts.capacity = c;
        }
        if let Some(o) = spec.overflow {
            opts.overflow = o;
        }
        opts.name = Some(format!("deployment:{name}"));
        opts.delivery = spec.delivery.clone();
        let shared = Arc::new(Shared {
            name: name.into(),
            stop: AtomicBool::new(false),
            wakeup: Wakeup::default(),
            counters: DispatchCounters::default(),
        });
        let mut subs = Vec::with_capacity(spec.topics.len());
        for topic in &spec.topics {
            match bus.subscribe(topic, opts.clone()) {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    for s in &subs {
                        bus.unsubscribe(s.id());
                    }
                    return Err(e.into());
                }
            }
        }
        for sub in &subs {
            let shared = shared.clone();
            sub.queue()
                .set_waker(Box::new(move || shared.wakeup.wake_one()))
                .map_err(DeployError::from)?;
        }
        let dep = Arc::new(Deployment {
            name: name.to_owned(),
            bus,
            sandbox,
            subs,
            shared,
            workers: Mutex::new(Vec::new()),
            topics: spec.topics.clone(),
        });
        let concurrency = spec.sandbox.concurrency.max(1);
        let mut workers = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            let d = dep.clone();
            let handle = thread::Builder::new()
                .name(format!("sluice-wasm-{name}-{i}"))
                // Room for the wasm stack budget plus the host's own frames.
                .stack_size(4 << 20)
                .spawn(move || worker_loop(&d.bus, &d.sandbox, &d.subs, &d.shared))
                .map_err(|e| DeployError { code: "ERR_INSTANTIATE", message: format!("cannot start a worker: {e}") })?;
            workers.push(handle);
        }
        *dep.workers.lock().unwrap() = workers;
        Ok(dep)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hash(&self) -> &str {
        self.sandbox.hash()
    }

    /// Unsubscribes (what is queued is counted as dropped, closed), lets each worker finish the
    /// event in its hands, and joins the workers.
    pub fn stop(&self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for s in &self.subs {
            self.bus.unsubscribe(s.id());
        }
        self.shared.wakeup.wake_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap());
        for w in workers {
            let _ = w.join();
        }
    }

    pub fn info(&self) -> DeploymentInfo {
        let s = self.sandbox.info();
        let c = &self.shared.counters;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        DeploymentInfo {
            name: self.name.clone(),
            hash: s.hash,
            topics: self.topics.clone(),
            emits: s.emits,
            concurrency: s.concurrency,
            isolation: "in-process",
            limits: LimitsInfo { memory_bytes: s.limits.memory_bytes, timeout_ms: s.limits.timeout_ms, fuel: s.limits.fuel },
            instances: InstancesInfo {
                live: s.instances.live,
                idle: s.instances.idle,
                created: s.instances.created,
                discarded: s.instances.discarded,
            },
            outcomes: OutcomesInfo {
                ack: s.outcomes.ack,
                retry: s.outcomes.retry,
                reject: s.outcomes.reject,
                errors: s.outcomes.errors.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.code(), *n)).collect(),
            },
            emits_published: c.emits_published.load(Ordering::Relaxed),
            emits_refused: s.emits_refused,
            emits_discarded: s.emits_discarded,
            emits_failed: c.emits_failed.load(Ordering::Relaxed),
            logs_dropped: s.logs_dropped,
            latency_us: LatencyInfo {
                count: s.latency.count,
                p50: us(s.latency.p50),
                p90: us(s.latency.p90),
                p99: us(s.latency.p99),
                max: us(s.latency.max),
            },
            subscriptions: self.subs.iter().map(|s| s.stats()).collect(),
            running: !self.shared.stop.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment").field("name", &self.name).field("hash", &self.hash()).finish_non_exhaustive()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wakeup.wake_all();
    }
}

fn registry() -> Result<&'static ModuleRegistry, DeployError> {
    static REGISTRY: OnceLock<ModuleRegistry> = OnceLock::new();
    if let Some(r) = REGISTRY.get() {
        return Ok(r);
    }
    let engine = SandboxEngine::global()?;
    Ok(REGISTRY.get_or_init(|| ModuleRegistry::new(engine)))
}

/// The deployments of one bus, by name.
pub struct Deployments {
    bus: Arc<Bus>,
    by_name: Mutex<HashMap<String, Arc<Deployment>>>,
}

impl Deployments {
    pub fn new(bus: Arc<Bus>) -> Self {
        Deployments { bus, by_name: Mutex::new(HashMap::new()) }
    }

    /// Compiles (cached by hash) and starts a deployment. Deploying the same bytes again under
    /// the same name returns the running deployment unchanged; other bytes under a running name
    /// are refused (`ERR_EXISTS`): replacing a version is a rollout. Compiles on the calling
    /// thread: callers keep it off the JS thread.
    pub fn deploy(&self, name: &str, bytes: &[u8], spec: &DeploySpec) -> Result<Arc<Deployment>, DeployError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("a deployment name is 1 to 128 characters without whitespace"));
        }
        if self.bus.is_closed() {
            return Err(sluice_core::Error::closed("bus").into());
        }
        if let Some(existing) = self.by_name.lock().unwrap().get(name) {
            let hash = module_hash(bytes);
            if existing.hash() == hash {
                return Ok(existing.clone());
            }
            return Err(DeployError {
                code: "ERR_EXISTS",
                message: format!("deployment '{name}' runs {}; undeploy it or roll out {hash}", existing.hash()),
            });
        }
        let module = registry()?.compile(bytes)?;
        let sandbox = Arc::new(Sandbox::new(module, spec.sandbox.clone())?);
        let mut map = self.by_name.lock().unwrap();
        if let Some(existing) = map.get(name) {
            // Lost a race with a concurrent deploy of the same name.
            if existing.hash() == sandbox.hash() {
                return Ok(existing.clone());
            }
            return Err(DeployError { code: "ERR_EXISTS", message: format!("deployment '{name}' already exists") });
        }
        let dep = Deployment::start(name, self.bus.clone(), sandbox, spec)?;
        map.insert(name.to_owned(), dep.clone());
        Ok(dep)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.by_name.lock().unwrap().get(name).cloned()
    }

    /// Stops and forgets a deployment; `false` if there was none by that name.
    pub fn undeploy(&self, name: &str) -> bool {
        let dep = self.by_name.lock().unwrap().remove(name);
        match dep {
            Some(d) => {
                d.stop();
                true
            }
            None => false,
        }
    }

    /// Stops every deployment (bus close).
    pub fn stop_all(&self) {
        let all: Vec<_> = self.by_name.lock().unwrap().drain().map(|(_, d)| d).collect();
        for d in all {
            d.stop();
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.lock().unwrap().keys().cloned().collect()
    }
}

impl Drop for Deployments {
    /// Workers hold their deployment alive; without this, a bus dropped without `close()` would
    /// leave them parked forever.
    fn drop(&mut self) {
        self.stop_all();
    }
}
