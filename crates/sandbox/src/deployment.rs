//! A deployment: a sandboxed handler wired to the bus. It subscribes to its topics with bounded
//! queues like any subscriber, and `concurrency` Rust worker threads take events from those
//! queues and run them on the `Sandbox` — an event routed to a WASM handler never enters JS.
//! Allowed guest emits are published back into the bus under the parent event's Context and
//! trace context.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::Serialize;
use sluice_core::{Bus, DeliveryOptions, Overflow, SubscribeOptions, Subscription, SubscriptionStats};

use crate::dispatch::{worker_loop, Wakeup};
use crate::error::SandboxError;
use crate::pool::SandboxOptions;
use crate::registry::{module_hash, ModuleRegistry};
use crate::remote::{remote_loop, Dispatcher, RemoteFactory, RemoteInfo, RemoteState, Slot};
use crate::rollout::{Body, HashRecord, Module, Rollout, RolloutInfo, RolloutSpec, Traffic};
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
#[derive(Clone, Debug, Default)]
pub struct DeploySpec {
    /// Topics or patterns the handler consumes.
    pub topics: Vec<String>,
    /// Queue of each topic subscription (defaults: the bus's).
    pub capacity: Option<usize>,
    pub overflow: Option<Overflow>,
    /// Retries, dead letter, ordering, dedupe of each topic subscription (see `sluice_core::delivery`).
    pub delivery: DeliveryOptions,
    pub sandbox: SandboxOptions,
    pub isolation: Isolation,
    /// Matched by a rollout's label selector (`{ env: 'staging' }`).
    pub labels: BTreeMap<String, String>,
}

/// Where the handler runs.
#[derive(Clone, Debug, Default)]
pub enum Isolation {
    /// Worker threads of this process (`'in-process'`).
    #[default]
    InProcess,
    /// One helper process per unit of concurrency, started by `factory` (`'process'`). With
    /// `fallback`, a platform or kernel that refuses isolation (`ERR_ISOLATION_UNAVAILABLE`)
    /// gets an in-process deployment whose info says why (`'process-if-available'`).
    Process { factory: Arc<dyn RemoteFactory>, fallback: bool },
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
    /// The versions of the handler and the routing between them (`rollout`).
    versions: Arc<Rollout>,
    /// Set for `isolation: 'process'`: the helper processes the versions run in.
    remote: Option<Arc<RemoteState>>,
    /// Why `'process-if-available'` runs in-process.
    degraded: OnceLock<String>,
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
    /// `in-process` or `process`.
    pub isolation: &'static str,
    /// The walls actually in force: `wasm`, `wasm+seccomp` or `wasm+ns+seccomp`.
    pub sandbox_level: &'static str,
    /// Helper process ids (empty in-process).
    pub pids: Vec<i32>,
    /// Set when `process-if-available` could not isolate: the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Per helper: level, restarts, deaths (seccomp kills), redeliveries, given-up events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub helpers: Vec<RemoteInfo>,
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
    /// Versions, the rollout in progress, shadow comparisons, last rollback, audit trail.
    #[serde(flatten)]
    pub rollout: RolloutInfo,
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
    /// Subscribes and starts the workers on the first version (already activated, so a bad
    /// `sluice_init` failed before this).
    fn start(name: &str, bus: Arc<Bus>, versions: Arc<Rollout>, spec: &DeploySpec) -> Result<Arc<Deployment>, DeployError> {
        if spec.topics.is_empty() {
            return Err(invalid("a deployment needs at least one topic"));
        }
        let (subs, shared) = subscribe(name, &bus, spec)?;
        let dep = Arc::new(Deployment {
            name: name.to_owned(),
            bus,
            versions,
            remote: None,
            degraded: OnceLock::new(),
            subs,
            shared,
            workers: Mutex::new(Vec::new()),
            topics: spec.topics.clone(),
        });
        let concurrency = spec.sandbox.concurrency.max(1);
        let mut workers = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            let d = dep.clone();
            let versions = dep.versions.clone();
            let handle = thread::Builder::new()
                .name(format!("sluice-wasm-{name}-{i}"))
                // Room for the wasm stack budget plus the host's own frames.
                .stack_size(4 << 20)
                .spawn(move || worker_loop(&d.bus, &versions, &d.subs, &d.shared))
                .map_err(|e| DeployError { code: "ERR_INSTANTIATE", message: format!("cannot start a worker: {e}") })?;
            workers.push(handle);
        }
        *dep.workers.lock().unwrap() = workers;
        Ok(dep)
    }

    /// Starts one helper per unit of concurrency, each on its own dispatcher thread (helpers
    /// die with the thread that started them), and subscribes only once all are ready.
    fn start_remote(
        name: &str,
        bus: Arc<Bus>,
        bytes: &[u8],
        spec: &DeploySpec,
        factory: &Arc<dyn RemoteFactory>,
    ) -> Result<Arc<Deployment>, DeployError> {
        if spec.topics.is_empty() {
            return Err(invalid("a deployment needs at least one topic"));
        }
        let n = spec.sandbox.concurrency.max(1);
        let state = RemoteState::new(factory.clone(), spec.sandbox.clone(), n);
        let module: Arc<[u8]> = bytes.into();
        let timeout = spec.sandbox.limits.timeout();
        let (ready_tx, ready_rx) = mpsc::channel();
        type Go = Option<(Arc<Deployment>, Arc<crate::remote::Activation>)>;
        let mut gates = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (go_tx, go_rx) = mpsc::channel::<Go>();
            gates.push(go_tx);
            let (module, state, ready) = (module.clone(), state.clone(), ready_tx.clone());
            let spawned = thread::Builder::new().name(format!("sluice-helper-{name}-{i}")).spawn(move || {
                let exec = match state.factory().start(&module, state.options()) {
                    Ok(e) => {
                        let _ = ready.send(Ok((i, e.info())));
                        e
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                if let Ok(Some((d, activation))) = go_rx.recv() {
                    let dispatcher = Dispatcher {
                        bus: &d.bus,
                        subs: &d.subs,
                        shared: &d.shared,
                        rollout: &d.versions,
                        state: &state,
                        index: i,
                        timeout,
                    };
                    remote_loop(&dispatcher, Slot { activation, exec });
                }
            });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    let _ = ready_tx.send(Err(DeployError { code: "ERR_INSTANTIATE", message: format!("cannot start a dispatcher: {e}") }));
                }
            }
        }
        drop(ready_tx);
        let mut first_error = None;
        // By dispatcher index: the dispatchers report in whatever order their helpers start.
        let mut infos = vec![RemoteInfo::default(); n];
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok((i, info))) => infos[i] = info,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(DeployError { code: "ERR_INSTANTIATE", message: "a dispatcher died while starting".into() });
                }
            }
        }
        let subscribed = match first_error {
            None => subscribe(name, &bus, spec),
            Some(e) => Err(e),
        };
        let (subs, shared) = match subscribed {
            Ok(v) => v,
            Err(e) => {
                gates.iter().for_each(|g| drop(g.send(None)));
                workers.into_iter().for_each(|w| drop(w.join()));
                return Err(e);
            }
        };
        state.connect(shared.clone());
        let record = HashRecord::new(Module::Bytes { hash: module_hash(bytes), bytes: module });
        let activation = state.activation(&record);
        activation.started(n);
        // Until each dispatcher reports its own helper's info: the pids are known now.
        for (i, info) in infos.into_iter().enumerate() {
            activation.update(i, info);
        }
        let current = record.adopt(Body::Remote(activation.clone()));
        let versions = Rollout::with_current(
            name,
            record,
            current,
            spec.sandbox.clone(),
            spec.labels.clone(),
            bus.recorder().clone(),
            None,
            Some(state.clone()),
        );
        let dep = Arc::new(Deployment {
            name: name.to_owned(),
            bus,
            versions,
            remote: Some(state),
            degraded: OnceLock::new(),
            subs,
            shared,
            workers: Mutex::new(workers),
            topics: spec.topics.clone(),
        });
        gates.iter().for_each(|g| drop(g.send(Some((dep.clone(), activation.clone())))));
        Ok(dep)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:` of the current version.
    pub fn hash(&self) -> String {
        self.versions.current_hash()
    }

    /// Compiles `bytes` (cached by hash) and routes them as the candidate per `spec`; the
    /// candidate's bytes again change its rule. Refused, changing nothing, when the hash is not
    /// `spec.expected_hash` (`ERR_HASH_MISMATCH`), the module does not compile or satisfy the
    /// ABI (`ERR_COMPILE`) or cannot start (`ERR_INSTANTIATE`, …). Compiles on the calling
    /// thread: callers keep it off the JS thread. A process-isolated deployment compiles only
    /// in the candidate's helpers, started (one per dispatcher) before it is routed. Returns the
    /// candidate's hash.
    pub fn rollout(&self, bytes: &[u8], spec: &RolloutSpec, actor: Option<&str>) -> Result<String, DeployError> {
        check_expected(bytes, spec.expected_hash.as_deref())?;
        let module = match &self.remote {
            Some(_) => Module::Bytes { hash: module_hash(bytes), bytes: bytes.into() },
            None => Module::Compiled(registry()?.compile(bytes)?),
        };
        self.versions.rollout(&module, spec, actor)?;
        Ok(module.hash().to_owned())
    }

    /// Changes the candidate's share (`ERR_NO_CANDIDATE` without one).
    pub fn set_traffic(&self, traffic: &Traffic, actor: Option<&str>) -> Result<(), DeployError> {
        self.versions.set_traffic(traffic, actor)
    }

    /// Makes the candidate current; returns its hash.
    pub fn promote(&self, actor: Option<&str>) -> Result<String, DeployError> {
        self.versions.promote(actor)
    }

    /// Drops the candidate, or returns to the previous version, or (`to_hash`) restores an
    /// earlier version: one this deployment ran, or (in-process) any still in the module
    /// registry. Returns the hash now current.
    pub fn rollback(&self, to_hash: Option<&str>, actor: Option<&str>, reason: Option<&str>) -> Result<String, DeployError> {
        let in_process = self.remote.is_none();
        let lookup = |h: &str| in_process.then(|| registry().ok().and_then(|r| r.get(h))).flatten().map(Module::Compiled);
        self.versions.rollback(to_hash, lookup, actor, reason)
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
        if let Some(remote) = &self.remote {
            remote.stop();
        }
        self.versions.stop();
    }

    /// Counters are totals over every version; `versions` has them per version.
    pub fn info(&self) -> DeploymentInfo {
        let s = self.versions.totals_info();
        // The current version's helpers.
        let helpers = if self.remote.is_some() { self.versions.current_helpers() } else { Vec::new() };
        let sandbox_level = match helpers.iter().find(|h| !h.sandbox_level.is_empty()) {
            Some(h) => h.sandbox_level,
            None => "wasm",
        };
        let c = &self.shared.counters;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        DeploymentInfo {
            name: self.name.clone(),
            hash: s.hash,
            topics: self.topics.clone(),
            emits: s.emits,
            concurrency: s.concurrency,
            isolation: if self.remote.is_some() { "process" } else { "in-process" },
            sandbox_level,
            pids: helpers.iter().filter_map(|h| h.pid).collect(),
            degraded: self.degraded.get().cloned(),
            helpers,
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
            rollout: self.versions.info(),
        }
    }
}

/// Subscribes a deployment to its topics with its queue options and wires the queues' wakers
/// to the dispatchers.
fn subscribe(name: &str, bus: &Arc<Bus>, spec: &DeploySpec) -> Result<(Vec<Arc<Subscription>>, Arc<Shared>), DeployError> {
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
        sub.queue().set_waker(Box::new(move || shared.wakeup.wake_one())).map_err(DeployError::from)?;
    }
    Ok((subs, shared))
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

/// Refuses bytes whose hash is not the one expected.
fn check_expected(bytes: &[u8], expected: Option<&str>) -> Result<(), DeployError> {
    if let Some(want) = expected {
        let got = module_hash(bytes);
        if got != want {
            return Err(DeployError {
                code: "ERR_HASH_MISMATCH",
                message: format!("the module's hash is {got}, expected {want}"),
            });
        }
    }
    Ok(())
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
        let mut degraded = None;
        let dep = match &spec.isolation {
            // The module is compiled inside the helper only: untrusted bytes never reach
            // Cranelift in this process.
            Isolation::Process { factory, fallback } => match Deployment::start_remote(name, self.bus.clone(), bytes, spec, factory) {
                Ok(dep) => Some(dep),
                Err(e) if *fallback && e.code == "ERR_ISOLATION_UNAVAILABLE" => {
                    degraded = Some(format!("process isolation unavailable, running in-process: {}", e.message));
                    None
                }
                Err(e) => return Err(e),
            },
            Isolation::InProcess => None,
        };
        let dep = match dep {
            Some(dep) => dep,
            None => {
                if spec.topics.is_empty() {
                    return Err(invalid("a deployment needs at least one topic"));
                }
                let module = registry()?.compile(bytes)?;
                let versions =
                    Rollout::start(name, module, spec.sandbox.clone(), spec.labels.clone(), self.bus.recorder().clone(), None)?;
                let dep = Deployment::start(name, self.bus.clone(), versions, spec)?;
                if let Some(reason) = degraded {
                    let _ = dep.degraded.set(reason);
                }
                dep
            }
        };
        let mut map = self.by_name.lock().unwrap();
        if let Some(existing) = map.get(name) {
            // Lost a race with a concurrent deploy of the same name.
            dep.stop();
            if existing.hash() == dep.hash() {
                return Ok(existing.clone());
            }
            return Err(DeployError { code: "ERR_EXISTS", message: format!("deployment '{name}' already exists") });
        }
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
