//! `Sandbox`: one deployment's runtime. A small pool of instances of one module, shared by
//! the bus's worker threads; `handle` runs one event on one instance.

use crossbeam_queue::ArrayQueue;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{fence, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::{Memory, Store, TypedFunc, UpdateDeadline};

use crate::abi::{self, check_guest_range, status};
use crate::envelope::{encode_envelope_to, Envelope, EnvelopeError, MAX_ENVELOPE_BYTES};
use crate::error::{classify, ErrorKind, SandboxError, TimeoutExceeded};
use crate::host::{CallState, Emit, HostState, LogRecord, Policy};
use crate::limits::{Limits, MAX_CONFIG_BYTES};
use crate::registry::HandlerModule;
use crate::stats::{add, Counters, LatencySnapshot, OutcomeCounts};
use crate::topic::AllowList;

/// How a deployment is run.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub limits: Limits,
    /// Topics the handler may emit: `fraud.flagged`, `fraud.*` (one segment), `fraud.>` (rest).
    pub emits: Vec<String>,
    /// Bytes the guest reads with `config_len` / `config_read` (at most 1 MiB).
    pub config: Vec<u8>,
    /// Instances, i.e. events handled at the same time.
    pub concurrency: usize,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            limits: Limits::default(),
            emits: Vec::new(),
            config: Vec::new(),
            concurrency: 1,
        }
    }
}

/// What the handler decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Retry,
    /// Send to the dead letter destination.
    Reject,
    Error(SandboxError),
}

impl Outcome {
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Outcome::Error(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// Result of one `handle` call.
#[derive(Clone, Debug)]
pub struct HandleResult {
    pub outcome: Outcome,
    /// Allowed emits, in call order; non-empty only when the outcome is `Ack` (a retried,
    /// rejected or failed handler's emits are dropped so redelivery cannot duplicate them).
    pub emits: Vec<Emit>,
    /// `emit` calls refused with a non-zero code during this event.
    pub refused_emits: u32,
    /// Logs are returned whatever the outcome: they explain failures.
    pub logs: Vec<LogRecord>,
    pub dropped_logs: u32,
    /// Time spent in `handle`, including waiting for a free instance; for an event a worker
    /// runs straight after another, from that one's end (`Sandbox::handle_kept`).
    pub elapsed: Duration,
}

/// Instance counts of a deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounts {
    /// Existing instances (idle + running).
    pub live: usize,
    pub idle: usize,
    pub created: u64,
    /// Dropped after a trap, timeout, memory/stack overflow or bad pointer.
    pub discarded: u64,
}

/// Snapshot for `Deployment.info()`.
#[derive(Clone, Debug)]
pub struct SandboxInfo {
    pub hash: String,
    pub concurrency: usize,
    pub limits: Limits,
    pub emits: Vec<String>,
    pub instances: InstanceCounts,
    pub outcomes: OutcomeCounts,
    /// Emits returned to the caller for publishing.
    pub emits_accepted: u64,
    /// `emit` calls answered with a refusal code.
    pub emits_refused: u64,
    /// Accepted by `emit` but dropped because the handler did not ack.
    pub emits_discarded: u64,
    pub logs_dropped: u64,
    pub latency: LatencySnapshot,
}

struct Instance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i32>,
}

/// An instance a worker keeps across the events of a batch (`Sandbox::handle_kept`). Opaque
/// outside the pool; dropping one that still holds an instance would leak its pool slot, so its
/// holder gives it back (`Sandbox::give_back`) first.
#[derive(Default)]
pub(crate) struct Kept {
    instance: Option<Instance>,
    /// When the last call on `instance` ended: the next call's start if its caller went
    /// straight on (see `Sandbox::handle_kept`), which saves a clock read per event.
    ended: Option<Instant>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        debug_assert!(self.instance.is_none(), "a kept instance was dropped instead of given back");
    }
}

/// What one call writes into guest memory.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// Encoded straight into the guest's buffer.
    Envelope(&'a Envelope<'a>),
    /// Encoded before (`encode_envelope`), copied in.
    Encoded(&'a [u8]),
}

impl Input<'_> {
    fn len(&self) -> usize {
        match self {
            Input::Envelope(e) => e.encoded_len(),
            Input::Encoded(b) => b.len(),
        }
    }

    /// Refuses what no guest can address.
    fn check(&self) -> Result<(), EnvelopeError> {
        match self.len() {
            n if n > MAX_ENVELOPE_BYTES => Err(EnvelopeError::TooLarge { bytes: n }),
            _ => Ok(()),
        }
    }

    fn write(&self, out: &mut [u8]) {
        match self {
            Input::Envelope(e) => encode_envelope_to(e, out),
            Input::Encoded(b) => out.copy_from_slice(b),
        }
    }
}

/// Only creation, discard and waiting take this lock; idle instances come and go without it.
struct PoolState {
    /// Instances that exist (idle + checked out + being created).
    live: usize,
}

/// A deployed handler: a module, its limits and policy, and a pool of instances.
pub struct Sandbox {
    module: Arc<HandlerModule>,
    policy: Arc<Policy>,
    concurrency: usize,
    /// Idle instances, taken and returned per event without a lock: with several workers on
    /// one deployment a mutex here was taken twice per event by each, and the Rust bench's
    /// two-thread case ran at a third of one thread's rate in some runs.
    idle: ArrayQueue<Instance>,
    pool: Mutex<PoolState>,
    /// Threads blocked (or about to block) in `checkout`; read by `checkin` without the lock.
    waiters: AtomicUsize,
    available: Condvar,
    /// Shared with every activation of the same module in a deployment, so a version's
    /// counters survive the release of its instances (see `rollout`).
    counters: Arc<Counters>,
}

impl Sandbox {
    /// Validates the options and creates the first instance right away, so a module whose
    /// `sluice_init` fails or whose initial memory exceeds the limit is refused at deploy.
    pub fn new(
        module: Arc<HandlerModule>,
        options: SandboxOptions,
    ) -> Result<Sandbox, SandboxError> {
        Sandbox::with_counters(module, options, Arc::new(Counters::new()))
    }

    /// `new`, counting into `counters` (a version re-activated by a rollback keeps its totals).
    pub(crate) fn with_counters(
        module: Arc<HandlerModule>,
        options: SandboxOptions,
        counters: Arc<Counters>,
    ) -> Result<Sandbox, SandboxError> {
        let engine_cfg = module.engine().config();
        let cfg_err = |m: String| SandboxError::new(ErrorKind::Config, m);
        options
            .limits
            .validate(engine_cfg.max_memory_bytes, engine_cfg.fuel)?;
        if options.concurrency == 0 || options.concurrency > engine_cfg.max_instances as usize {
            return Err(cfg_err(format!(
                "concurrency {} must be in 1..={} (engine instance slots)",
                options.concurrency, engine_cfg.max_instances
            )));
        }
        if options.config.len() > MAX_CONFIG_BYTES {
            return Err(cfg_err(format!(
                "config is {} bytes, more than {MAX_CONFIG_BYTES}",
                options.config.len()
            )));
        }
        let allow = AllowList::parse(&options.emits).map_err(cfg_err)?;
        let policy = Arc::new(Policy {
            limits: options.limits,
            allow,
            config: options.config.into_boxed_slice(),
        });
        let sandbox = Sandbox {
            module,
            policy,
            concurrency: options.concurrency,
            idle: ArrayQueue::new(options.concurrency),
            pool: Mutex::new(PoolState { live: 0 }),
            waiters: AtomicUsize::new(0),
            available: Condvar::new(),
            counters,
        };
        let first = sandbox.create_instance()?;
        sandbox.lock().live = 1;
        sandbox.checkin(first);
        Ok(sandbox)
    }

    /// Creates instances until `concurrency` exist, so the first events do not pay for
    /// instantiation. Returns how many were created.
    pub fn prewarm(&self) -> Result<usize, SandboxError> {
        let mut created = Vec::new();
        let result = loop {
            {
                let mut pool = self.lock();
                if pool.live >= self.concurrency {
                    break Ok(created.len());
                }
                pool.live += 1;
            }
            match self.create_instance() {
                Ok(inst) => created.push(inst),
                Err(e) => {
                    self.lock().live -= 1;
                    self.wake_one();
                    break Err(e.with_prefix(&format!("prewarm after {} instances", created.len())));
                }
            }
        };
        created.into_iter().for_each(|i| self.checkin(i));
        result
    }

    /// Benchmark hook: creates one instance (store, instantiation through `InstancePre`,
    /// `sluice_init`) and drops it, returning how long creation took. It is counted in
    /// `instances.created` like any other instance.
    #[doc(hidden)]
    pub fn measure_instantiate(&self) -> Result<Duration, SandboxError> {
        let started = Instant::now();
        let inst = self.create_instance()?;
        let took = started.elapsed();
        drop(inst);
        Ok(took)
    }

    pub fn hash(&self) -> &str {
        self.module.hash()
    }

    pub fn module(&self) -> &Arc<HandlerModule> {
        &self.module
    }

    pub fn limits(&self) -> &Limits {
        &self.policy.limits
    }

    /// (existing, idle) instances.
    pub(crate) fn instance_counts(&self) -> (usize, usize) {
        (self.lock().live, self.idle.len())
    }

    /// Encodes `envelope` straight into the guest's buffer and runs it; see `handle_encoded`.
    pub fn handle(&self, envelope: &Envelope<'_>, deadline: Option<Instant>) -> HandleResult {
        self.run(Input::Envelope(envelope), deadline, None, None)
    }

    /// Runs one pre-encoded envelope (see `encode_envelope`) on a free instance. Blocks while
    /// all `concurrency` instances are busy, at most until the deadline. The effective
    /// deadline is the earlier of `deadline` and now + `limits.timeout_ms`.
    pub fn handle_encoded(&self, envelope: &[u8], deadline: Option<Instant>) -> HandleResult {
        self.run(Input::Encoded(envelope), deadline, None, None)
    }

    /// `handle`, on the instance `kept` holds, or on a free one that `kept` then keeps for the
    /// caller's next event. A worker keeps one instance across a batch of events instead of
    /// taking one from the shared pool and returning it per event; it must give it back with
    /// `give_back` before it waits for more work. An instance that failed is discarded, not kept.
    ///
    /// `straight_on`: the caller did nothing that can wait (no emit published, no audit hold)
    /// since the previous call on `kept` ended, so that end serves as this call's start — for
    /// the timeout budget and the latency — instead of another clock read. The two differ by
    /// the worker's bookkeeping between two events of a batch.
    pub(crate) fn handle_kept(&self, kept: &mut Kept, envelope: &Envelope<'_>, deadline: Option<Instant>, straight_on: bool) -> HandleResult {
        let start = kept.ended.take().filter(|_| straight_on && kept.instance.is_some());
        self.run(Input::Envelope(envelope), deadline, Some(kept), start)
    }

    /// Returns the instance `kept` holds, if any, to the pool.
    pub(crate) fn give_back(&self, kept: &mut Kept) {
        kept.ended = None;
        if let Some(inst) = kept.instance.take() {
            self.checkin(inst);
        }
    }

    fn run(&self, input: Input<'_>, deadline: Option<Instant>, mut kept: Option<&mut Kept>, start: Option<Instant>) -> HandleResult {
        let start = start.unwrap_or_else(Instant::now);
        let budget = start + self.policy.limits.timeout();
        let deadline = deadline.map_or(budget, |d| d.min(budget));
        if let Err(e) = input.check() {
            // Not the guest's fault: no instance is touched.
            return self.finish(start, Instant::now(), Err(SandboxError::new(ErrorKind::GuestMemory, e.to_string())), CallState::default());
        }
        if start >= deadline {
            let e = SandboxError::new(
                ErrorKind::Timeout,
                "deadline passed before the handler started",
            );
            return self.finish(start, Instant::now(), Err(e), CallState::default());
        }
        let held = kept.as_ref().is_some_and(|k| k.instance.is_some());
        let (mut inst, at_once) = match kept.as_deref_mut().and_then(|k| k.instance.take()) {
            Some(inst) => (inst, true),
            None => match self.checkout(deadline) {
                Ok(i) => i,
                Err(e) => return self.finish(start, Instant::now(), Err(e), CallState::default()),
            },
        };
        debug_assert!(at_once || !held);
        // An idle instance was taken without waiting: `start` is still "now" for arming the
        // timeout (a clock read less per event). After a wait or an instantiation it is not.
        let now = if at_once { start } else { Instant::now() };
        let result = self.call(&mut inst, input, deadline, now);
        let ended = Instant::now();
        let call = std::mem::take(&mut inst.store.data_mut().call);
        match (&result, kept) {
            (Err(e), _) if e.kind().poisons_instance() => self.discard(inst),
            (_, Some(k)) => {
                k.instance = Some(inst);
                k.ended = Some(ended);
            }
            (_, None) => self.checkin(inst),
        }
        self.finish(start, ended, result, call)
    }

    /// Writes the envelope into guest memory and calls `sluice_handle`. No slice of guest
    /// memory is held across the two guest calls: the slice is taken after `sluice_alloc`
    /// returns, bounds-checked against the size at that moment, and dropped before the call.
    fn call(
        &self,
        inst: &mut Instance,
        input: Input<'_>,
        deadline: Instant,
        now: Instant,
    ) -> Result<i32, SandboxError> {
        // Lossless: `Input::check` capped the length at MAX_ENVELOPE_BYTES (i32::MAX).
        let len = input.len() as i32;
        self.arm(&mut inst.store, deadline, now)?;
        let _active = self.module.engine().ticker().enter();
        let ptr = inst
            .alloc
            .call(&mut inst.store, len)
            .map_err(|e| classify(e, ErrorKind::Trap).with_prefix(abi::EXPORT_ALLOC))?;
        let memory = inst.memory.data_mut(&mut inst.store);
        let range = check_guest_range(memory.len(), ptr, len).map_err(|f| {
            SandboxError::new(
                ErrorKind::GuestMemory,
                format!("{} returned a bad buffer: {f}", abi::EXPORT_ALLOC),
            )
        })?;
        input.write(&mut memory[range]);
        inst.handle
            .call(&mut inst.store, (ptr, len))
            .map_err(|e| classify(e, ErrorKind::Trap).with_prefix(abi::EXPORT_HANDLE))
    }

    /// Resets per-call state and sets the time and fuel budgets for the next guest call.
    /// `now`: the caller's clock read, which serves the start stamp and the tick count (clock
    /// reads showed up in profiles of the per-event path).
    fn arm(&self, store: &mut Store<HostState>, deadline: Instant, now: Instant) -> Result<(), SandboxError> {
        let state = store.data_mut();
        state.deadline = deadline;
        state.started = now;
        state.call = CallState::default();
        if self.module.engine().config().fuel {
            // With metering compiled in every store needs fuel; no budget means "unmetered".
            store
                .set_fuel(self.policy.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| SandboxError::new(ErrorKind::Config, format!("fuel: {e:#}")))?;
        }
        store.set_epoch_deadline(self.module.engine().ticker().ticks_until(deadline, now));
        Ok(())
    }

    fn create_instance(&self) -> Result<Instance, SandboxError> {
        let engine = self.module.engine();
        let mut store = Store::new(engine.wasmtime(), HostState::new(self.policy.clone()));
        store.limiter(|state| &mut state.limiter);
        let tick = engine.ticker().tick();
        // The ticker only says "look at the clock"; the clock decides. This keeps the
        // timeout accurate to one tick whatever phase the ticker was in.
        store.epoch_deadline_callback(move |ctx| {
            let state = ctx.data();
            let now = Instant::now();
            if now >= state.deadline {
                let ran_ms = now.duration_since(state.started).as_millis();
                return Err(wasmtime::Error::new(TimeoutExceeded { ran_ms }));
            }
            let left = state.deadline - now;
            Ok(UpdateDeadline::Continue(
                (left.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64).max(1),
            ))
        });
        // Instantiation and `sluice_init` get a full timeout of their own.
        let now = Instant::now();
        self.arm(&mut store, now + self.policy.limits.timeout(), now)?;
        let _active = engine.ticker().enter();

        let instance = self
            .module
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| classify(e, ErrorKind::Instantiate).with_prefix("instantiate"))?;
        let missing = |what: &str| {
            SandboxError::new(ErrorKind::Compile, format!("export `{what}` not usable"))
        };
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| missing(abi::EXPORT_MEMORY))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, abi::EXPORT_ALLOC)
            .map_err(|_| missing(abi::EXPORT_ALLOC))?;
        let handle = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, abi::EXPORT_HANDLE)
            .map_err(|_| missing(abi::EXPORT_HANDLE))?;
        store.data_mut().memory = Some(memory);

        if self.module.has_init() {
            let init = instance
                .get_typed_func::<(), i32>(&mut store, abi::EXPORT_INIT)
                .map_err(|_| missing(abi::EXPORT_INIT))?;
            let code = init
                .call(&mut store, ())
                .map_err(|e| classify(e, ErrorKind::Instantiate).with_prefix(abi::EXPORT_INIT))?;
            if code != 0 {
                return Err(SandboxError::new(
                    ErrorKind::Instantiate,
                    format!("{} returned {code}", abi::EXPORT_INIT),
                ));
            }
        }
        store.data_mut().call = CallState::default();
        self.counters.instances_created.fetch_add(1, Relaxed);
        Ok(Instance {
            store,
            memory,
            alloc,
            handle,
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic elsewhere cannot leave PoolState inconsistent (every update is one step),
        // so a poisoned lock is still usable.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free instance, and whether it was idle at once (no wait, no instantiation).
    fn checkout(&self, deadline: Instant) -> Result<(Instance, bool), SandboxError> {
        if let Some(inst) = self.idle.pop() {
            return Ok((inst, true));
        }
        let mut pool = self.lock();
        loop {
            if pool.live < self.concurrency {
                // Replace a discarded instance (or grow to `concurrency`) outside the lock.
                pool.live += 1;
                drop(pool);
                return self.create_instance().map(|i| (i, false)).inspect_err(|_| {
                    self.lock().live -= 1;
                    self.wake_one();
                });
            }
            // Announce the wait before looking again: a `checkin` either sees this waiter and
            // notifies (under the lock, so not before we wait) or its instance is seen here.
            self.waiters.fetch_add(1, SeqCst);
            fence(SeqCst);
            if let Some(inst) = self.idle.pop() {
                self.waiters.fetch_sub(1, SeqCst);
                return Ok((inst, false));
            }
            let now = Instant::now();
            if now >= deadline {
                self.waiters.fetch_sub(1, SeqCst);
                return Err(SandboxError::new(
                    ErrorKind::Timeout,
                    "no instance became free before the deadline",
                ));
            }
            pool = self
                .available
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            self.waiters.fetch_sub(1, SeqCst);
        }
    }

    /// Wakes one thread waiting in `checkout`, if any. std's `Condvar::notify_one` makes a
    /// futex syscall even with no waiter, which cost more than the guest call itself.
    fn wake_one(&self) {
        fence(SeqCst);
        if self.waiters.load(Relaxed) > 0 {
            let _pool = self.lock();
            self.available.notify_one();
        }
    }

    fn checkin(&self, inst: Instance) {
        // Never full: it holds at most `live` <= `concurrency` instances.
        if self.idle.push(inst).is_err() {
            unreachable!("more idle instances than the pool's concurrency");
        }
        self.wake_one();
    }

    fn discard(&self, inst: Instance) {
        // Dropping the store returns its pool slot to Wasmtime (outside the lock).
        drop(inst);
        self.lock().live -= 1;
        self.wake_one();
        self.counters.instances_discarded.fetch_add(1, Relaxed);
    }

    fn finish(
        &self,
        start: Instant,
        ended: Instant,
        result: Result<i32, SandboxError>,
        call: CallState,
    ) -> HandleResult {
        // This thread's stripe: two workers on one deployment must not share a line here.
        let c = self.counters.local();
        let outcome = match result {
            Ok(status::ACK) => Outcome::Ack,
            Ok(status::RETRY) => Outcome::Retry,
            Ok(status::REJECT) => Outcome::Reject,
            Ok(other) => Outcome::Error(SandboxError::new(
                ErrorKind::HandlerStatus,
                format!("{} returned unknown status {other}", abi::EXPORT_HANDLE),
            )),
            Err(e) => Outcome::Error(e),
        };
        match &outcome {
            Outcome::Ack => c.ack.fetch_add(1, Relaxed),
            Outcome::Retry => c.retry.fetch_add(1, Relaxed),
            Outcome::Reject => c.reject.fetch_add(1, Relaxed),
            Outcome::Error(e) => c.errors[e.kind().index()].fetch_add(1, Relaxed),
        };
        let CallState {
            emits,
            refused_emits,
            logs,
            dropped_logs,
            ..
        } = call;
        let emits = if outcome == Outcome::Ack {
            add(&c.emits_accepted, emits.len() as u64);
            emits
        } else {
            add(&c.emits_discarded, emits.len() as u64);
            Vec::new()
        };
        add(&c.emits_refused, u64::from(refused_emits));
        add(&c.logs_dropped, u64::from(dropped_logs));
        let elapsed = ended.saturating_duration_since(start);
        c.latency.record(elapsed);
        HandleResult {
            outcome,
            emits,
            refused_emits,
            logs,
            dropped_logs,
            elapsed,
        }
    }

    /// Counters, instance counts and latency percentiles.
    pub fn info(&self) -> SandboxInfo {
        let (live, idle) = self.instance_counts();
        let c = &self.counters;
        SandboxInfo {
            hash: self.module.hash().to_string(),
            concurrency: self.concurrency,
            limits: self.policy.limits.clone(),
            emits: self
                .policy
                .allow
                .patterns()
                .iter()
                .map(|p| p.to_string())
                .collect(),
            instances: InstanceCounts {
                live,
                idle,
                created: c.instances_created.load(Relaxed),
                discarded: c.instances_discarded.load(Relaxed),
            },
            outcomes: c.outcomes(),
            emits_accepted: c.sum(|s| &s.emits_accepted),
            emits_refused: c.sum(|s| &s.emits_refused),
            emits_discarded: c.sum(|s| &s.emits_discarded),
            logs_dropped: c.sum(|s| &s.logs_dropped),
            latency: c.latency(),
        }
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("hash", &self.module.hash())
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}
