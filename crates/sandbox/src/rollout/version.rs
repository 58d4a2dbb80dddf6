//! Versions of one deployment. A `Version` is one activation of a module: a `Sandbox` with its
//! instances, or (`isolation: 'process'`) one helper process per dispatcher. It lives as long as
//! a routing table or an event in flight holds it; when the last holder lets go (the table was
//! swapped and the last in-flight event finished), `Drop` releases its instances or retires its
//! helpers. What must outlive that — counters, in-flight count, release times — sits in the
//! `HashRecord` of its hash, shared by every activation of the same bytes. A version dropped on
//! a worker is torn down on the release thread (`release.rs`), not in front of the next event.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::deployment::DeployError;
use crate::envelope::Envelope;
use crate::pool::{HandleResult, Kept, Sandbox, SandboxOptions};
use crate::registry::HandlerModule;
use crate::remote::{Activation, RemoteState};
use crate::stats::Counters;
use crate::stripe::Gauge;

/// What a hash is made of.
#[derive(Clone)]
pub(crate) enum Module {
    /// Compiled in this process (`isolation: 'in-process'`).
    Compiled(Arc<HandlerModule>),
    /// Bytes that helper processes compile (`isolation: 'process'`): untrusted bytes never
    /// reach Cranelift in this process.
    Bytes { hash: String, bytes: Arc<[u8]> },
}

impl Module {
    pub fn hash(&self) -> &str {
        match self {
            Module::Compiled(m) => m.hash(),
            Module::Bytes { hash, .. } => hash,
        }
    }
}

use super::clock::unix_ms;
use super::release;

/// Everything a deployment remembers about one module hash.
pub(crate) struct HashRecord {
    pub hash: String,
    pub module: Module,
    /// Outcomes, latency, instance counts of every activation of this hash.
    pub counters: Arc<Counters>,
    /// Events in the hands of an activation of this hash right now (per-thread stripes: every
    /// event raises and lowers it).
    pub in_flight: Gauge,
    pub activations: AtomicU64,
    /// Activations whose instances were released.
    pub releases: AtomicU64,
    pub last_released_ms: AtomicU64,
    /// The live activation, if any: re-activating a hash that is still draining reuses it.
    pub live: Mutex<Weak<Version>>,
}

impl HashRecord {
    pub fn new(module: Module) -> Arc<HashRecord> {
        Arc::new(HashRecord {
            hash: module.hash().to_owned(),
            module,
            counters: Arc::new(Counters::new()),
            in_flight: Gauge::default(),
            activations: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            last_released_ms: AtomicU64::new(0),
            live: Mutex::new(Weak::new()),
        })
    }

    /// The live activation, or a new one: instances created and `sluice_init` run now, or every
    /// dispatcher's helper started with the module loaded, so a module that cannot start is
    /// refused before any event is routed to it.
    pub fn activate(
        self: &Arc<Self>,
        options: &SandboxOptions,
        remote: Option<&Arc<RemoteState>>,
    ) -> Result<Arc<Version>, DeployError> {
        if let (Module::Bytes { bytes, .. }, Some(remote)) = (&self.module, remote) {
            // Helpers take tens of milliseconds to start: not under the lock `info()` takes.
            if let Some(v) = self.live() {
                return Ok(v);
            }
            let activation = remote.activate(self, bytes)?;
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = live.upgrade() {
                // Lost a race with another activation of this hash: close ours.
                activation.retire();
                return Ok(v);
            }
            return Ok(self.install(&mut live, Body::Remote(activation)));
        }
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = live.upgrade() {
            return Ok(v);
        }
        let body = match (&self.module, remote) {
            (Module::Compiled(module), _) => {
                // Pool slots of versions still being released are free again before new ones are taken.
                release::flush();
                let sandbox = Sandbox::with_counters(module.clone(), options.clone(), self.counters.clone())?;
                sandbox.prewarm()?;
                Body::Local(sandbox)
            }
            (Module::Bytes { .. }, _) => {
                return Err(DeployError { code: "ERR_INVALID_ARG", message: "a module for helper processes needs a process-isolated deployment".into() })
            }
        };
        Ok(self.install(&mut live, body))
    }

    /// A version over a body started elsewhere (a process-isolated deployment's first helpers,
    /// started by its dispatchers).
    pub fn adopt(self: &Arc<Self>, body: Body) -> Arc<Version> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        self.install(&mut live, body)
    }

    fn install(self: &Arc<Self>, live: &mut Weak<Version>, body: Body) -> Arc<Version> {
        let version = Arc::new(Version { record: self.clone(), body: Some(body) });
        self.activations.fetch_add(1, Ordering::Relaxed);
        *live = Arc::downgrade(&version);
        version
    }

    /// The live activation's sandbox, if any (for instance counts).
    pub fn live(&self) -> Option<Arc<Version>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).upgrade()
    }

    /// No activation is live and every one has let its instances go.
    pub fn released(&self) -> bool {
        self.live().is_none() && self.releases.load(Ordering::Acquire) >= self.activations.load(Ordering::Relaxed)
    }
}

/// What runs one activation's events.
pub(crate) enum Body {
    Local(Sandbox),
    /// One helper per dispatcher; the dispatchers own them and close them once retired.
    Remote(Arc<Activation>),
}

/// One activation of a module: its instances or helpers.
pub(crate) struct Version {
    pub record: Arc<HashRecord>,
    /// Taken out only by `Drop`.
    body: Option<Body>,
}

impl Version {
    pub fn hash(&self) -> &str {
        &self.record.hash
    }

    fn body(&self) -> &Body {
        self.body.as_ref().expect("a version has its body until dropped")
    }

    pub fn sandbox(&self) -> &Sandbox {
        match self.body() {
            Body::Local(s) => s,
            Body::Remote(_) => unreachable!("helper-process versions are run by their dispatchers"),
        }
    }

    /// The helpers of a process-isolated version.
    pub fn activation(&self) -> Option<&Arc<Activation>> {
        match self.body() {
            Body::Local(_) => None,
            Body::Remote(a) => Some(a),
        }
    }

    /// Live and idle instances (helpers running, for a process-isolated version).
    pub fn instance_counts(&self) -> (usize, usize) {
        match self.body() {
            Body::Local(s) => s.instance_counts(),
            Body::Remote(a) => (a.live_helpers(), 0),
        }
    }

    /// Runs a pre-encoded copy (shadow traffic).
    pub fn run_encoded(&self, envelope: &[u8], deadline: Option<Instant>) -> HandleResult {
        let _in_flight = InFlight::enter(&self.record.in_flight);
        self.sandbox().handle_encoded(envelope, deadline)
    }

    /// Holds the version for an event handed to a helper: counted in flight (and the version
    /// kept, with its helper) until the event's outcome is settled.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.record.in_flight.raise();
        Held(self.clone())
    }
}

/// The instance a worker keeps across the events of one batch, and the version it belongs to.
/// Taking an instance from the shared pool and returning it per event cost two contended queue
/// operations per event with two workers. Each version has `concurrency` instances and a
/// deployment `concurrency` workers, each keeping at most one instance: no worker waits for an
/// instance another one keeps. Released (`release`, or dropped) before the worker waits for
/// more work; a retired version stays alive until then.
#[derive(Default)]
pub(crate) struct Lease {
    held: Option<(Arc<Version>, Kept)>,
}

impl Lease {
    /// Runs one event on `version`, counted in flight while the guest has it.
    pub fn run(&mut self, version: &Arc<Version>, envelope: &Envelope<'_>, deadline: Option<Instant>, straight_on: bool) -> HandleResult {
        if !matches!(&self.held, Some((v, _)) if Arc::ptr_eq(v, version)) {
            self.release();
            self.held = Some((version.clone(), Kept::default()));
        }
        let (version, kept) = self.held.as_mut().expect("set above");
        let _in_flight = InFlight::enter(&version.record.in_flight);
        version.sandbox().handle_kept(kept, envelope, deadline, straight_on)
    }

    /// Gives the kept instance back to its version's pool.
    pub fn release(&mut self) {
        if let Some((version, mut kept)) = self.held.take() {
            version.sandbox().give_back(&mut kept);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// An event in a process-isolated version's hands (`Version::hold`).
pub(crate) struct Held(Arc<Version>);

impl Deref for Held {
    type Target = Version;
    fn deref(&self) -> &Version {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.record.in_flight.lower();
    }
}

impl Drop for Version {
    /// The sandbox (and with it every instance and its pool slot) goes with this activation —
    /// on the release thread when the last holder was a worker. Helpers are retired: each
    /// dispatcher closes its own, and the last one closed counts the release.
    fn drop(&mut self) {
        match self.body.take() {
            Some(Body::Local(sandbox)) => {
                let record = self.record.clone();
                release::release(move || {
                    drop(sandbox);
                    record.mark_released();
                });
            }
            Some(Body::Remote(activation)) => activation.retire(),
            None => {}
        }
    }
}

impl HashRecord {
    /// One activation let go of everything it held.
    pub fn mark_released(&self) {
        self.last_released_ms.store(unix_ms(), Ordering::Relaxed);
        self.releases.fetch_add(1, Ordering::Release);
    }
}

/// Decrements on drop, so an unwinding guest call cannot leave the count high.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(n: &'a Gauge) -> Self {
        n.raise();
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lower();
    }
}
