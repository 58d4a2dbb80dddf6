//! Versions of one deployment. A `Version` is one activation of a module: a `Sandbox` with its
//! instances. It lives as long as a routing table or an event in flight holds it; when the last
//! holder lets go (the table was swapped and the last in-flight event finished), `Drop` releases
//! its instances. What must outlive that — counters, in-flight count, release times — sits in the
//! `HashRecord` of its hash, shared by every activation of the same bytes. A version dropped on
//! a worker is torn down on the release thread (`release.rs`), not in front of the next event.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::envelope::Envelope;
use crate::pool::{HandleResult, Sandbox, SandboxOptions};
use crate::registry::HandlerModule;
use crate::stats::Counters;

use super::clock::unix_ms;
use super::release;

/// Everything a deployment remembers about one module hash.
pub(crate) struct HashRecord {
    pub hash: String,
    pub module: Arc<HandlerModule>,
    /// Outcomes, latency, instance counts of every activation of this hash.
    pub counters: Arc<Counters>,
    /// Events in the hands of an activation of this hash right now.
    pub in_flight: AtomicUsize,
    pub activations: AtomicU64,
    /// Activations whose instances were released.
    pub releases: AtomicU64,
    pub last_released_ms: AtomicU64,
    /// The live activation, if any: re-activating a hash that is still draining reuses it.
    pub live: Mutex<Weak<Version>>,
}

impl HashRecord {
    pub fn new(module: Arc<HandlerModule>) -> Arc<HashRecord> {
        Arc::new(HashRecord {
            hash: module.hash().to_owned(),
            module,
            counters: Arc::new(Counters::new()),
            in_flight: AtomicUsize::new(0),
            activations: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            last_released_ms: AtomicU64::new(0),
            live: Mutex::new(Weak::new()),
        })
    }

    /// The live activation, or a new one (instances created and `sluice_init` run now, so a
    /// module that cannot start is refused before any event is routed to it).
    pub fn activate(self: &Arc<Self>, options: &SandboxOptions) -> Result<Arc<Version>, crate::SandboxError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = live.upgrade() {
            return Ok(v);
        }
        // Pool slots of versions still being released are free again before new ones are taken.
        release::flush();
        let sandbox = Sandbox::with_counters(self.module.clone(), options.clone(), self.counters.clone())?;
        sandbox.prewarm()?;
        let version = Arc::new(Version { record: self.clone(), sandbox: Some(sandbox) });
        self.activations.fetch_add(1, Ordering::Relaxed);
        *live = Arc::downgrade(&version);
        Ok(version)
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

/// One activation of a module: its instances.
pub(crate) struct Version {
    pub record: Arc<HashRecord>,
    /// Taken out only by `Drop`.
    sandbox: Option<Sandbox>,
}

impl Version {
    pub fn hash(&self) -> &str {
        &self.record.hash
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("a version has its sandbox until dropped")
    }

    /// Runs one event, counted in flight while the guest has it.
    pub fn run(&self, envelope: &Envelope<'_>, deadline: Option<Instant>) -> HandleResult {
        let _in_flight = InFlight::enter(&self.record.in_flight);
        self.sandbox().handle(envelope, deadline)
    }

    /// Runs a pre-encoded copy (shadow traffic).
    pub fn run_encoded(&self, envelope: &[u8], deadline: Option<Instant>) -> HandleResult {
        let _in_flight = InFlight::enter(&self.record.in_flight);
        self.sandbox().handle_encoded(envelope, deadline)
    }
}

impl Drop for Version {
    /// The sandbox (and with it every instance and its pool slot) goes with this activation —
    /// on the release thread when the last holder was a worker.
    fn drop(&mut self) {
        let sandbox = self.sandbox.take();
        let record = self.record.clone();
        release::release(move || {
            drop(sandbox);
            record.last_released_ms.store(unix_ms(), Ordering::Relaxed);
            record.releases.fetch_add(1, Ordering::Release);
        });
    }
}

/// Decrements on drop, so an unwinding guest call cannot leave the count high.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
