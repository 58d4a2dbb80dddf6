//! Deployments whose handler runs outside this process (`isolation: 'process'`). The sandbox
//! only defines the interface; `crates/isolate` implements it with a Linux helper process, and
//! the N-API layer wires the two together. Events leave the subscription queues exactly as for
//! in-process deployments (the queue's overflow policy has already applied), are routed to one
//! version by the deployment's rollout table, encoded once into the envelope of `docs/abi.md`,
//! and go to that version's executor; outcomes come back in batches (`dispatch.rs`).
//!
//! Versions: each activation of a module (`rollout::Version`) owns one executor — one helper
//! process — per dispatcher (`Activation`). A candidate's helpers are started on the spawner
//! thread (`spawner.rs`) and handed to the dispatchers through their mailboxes before the
//! routing table names the candidate; a retired activation's helpers are closed by their
//! dispatchers once the version's last event is settled.

mod activation;
mod dispatch;
mod spawner;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::deployment::{DeployError, Shared};
use crate::pool::{HandleResult, SandboxOptions};
use crate::rollout::HashRecord;

pub(crate) use activation::Activation;
pub(crate) use dispatch::{remote_loop, Dispatcher, Slot};

/// What became of one submitted event.
#[derive(Debug)]
pub enum RemoteOutcome {
    Done(HandleResult),
    /// The executor gave up on it (it kept killing its process, or none could be started).
    GaveUp(String),
}

/// One process running a deployment's handler, driven from one dispatcher thread.
pub trait RemoteExecutor: Send {
    /// Queues an encoded envelope under `token`; hands it back when the executor is full.
    fn submit(&mut self, token: u64, envelope: Vec<u8>, deadline: Option<Instant>) -> Result<(), Vec<u8>>;
    /// Appends finished `(token, outcome)` pairs, waiting up to `wait` for the first.
    fn poll(&mut self, out: &mut Vec<(u64, RemoteOutcome)>, wait: Duration);
    fn in_flight(&self) -> usize;
    fn info(&self) -> RemoteInfo;
    /// The deployment stops: finish the event running now and start no other. Outcomes keep
    /// coming from `poll`; `in_flight()` then counts only what can still complete.
    fn close(&mut self) {}
    /// Moves the envelope buffers of finished events into `spare`, for the dispatcher to encode
    /// the next envelopes into (no allocation per event). Optional.
    fn recycle(&mut self, _spare: &mut Vec<Vec<u8>>) {}
}

/// Starts executors. Called on a thread that lives as long as the executor is used (a helper
/// process may be tied to the thread that started it): a dispatcher, or the spawner thread.
pub trait RemoteFactory: Send + Sync + std::fmt::Debug {
    fn start(&self, module: &[u8], options: &SandboxOptions) -> Result<Box<dyn RemoteExecutor>, DeployError>;
}

/// The executor's side of `dep.info()`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteInfo {
    /// What is actually in force: `wasm+ns+seccomp`, `wasm+seccomp` or `wasm`.
    pub sandbox_level: &'static str,
    pub pid: Option<i32>,
    pub helpers_started: u64,
    pub deaths: u64,
    pub seccomp_kills: u64,
    pub redelivered: u64,
    pub gave_up: u64,
    pub start_time_us: u64,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
}

type Mail = (Arc<Activation>, Box<dyn RemoteExecutor>);

/// Shared by a remote deployment's dispatchers and its rollout.
pub(crate) struct RemoteState {
    factory: Arc<dyn RemoteFactory>,
    /// Each helper runs its events one at a time.
    options: SandboxOptions,
    /// Executors started for a dispatcher (by index) that it has not taken yet.
    mailboxes: Vec<Mutex<Vec<Mail>>>,
    /// Bumped whenever an activation retires: the dispatchers then close their helpers of it.
    retired: AtomicU64,
    /// To wake parked dispatchers (set once subscribed).
    shared: OnceLock<Arc<Shared>>,
    /// The dispatchers are gone: helpers posted now are closed at once.
    stopped: AtomicBool,
    me: Weak<RemoteState>,
}

impl RemoteState {
    pub fn new(factory: Arc<dyn RemoteFactory>, options: SandboxOptions, dispatchers: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| RemoteState {
            factory,
            options: SandboxOptions { concurrency: 1, ..options },
            mailboxes: (0..dispatchers).map(|_| Mutex::new(Vec::new())).collect(),
            retired: AtomicU64::new(0),
            shared: OnceLock::new(),
            stopped: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    pub fn dispatchers(&self) -> usize {
        self.mailboxes.len()
    }

    pub fn factory(&self) -> &Arc<dyn RemoteFactory> {
        &self.factory
    }

    /// What each helper is started with.
    pub fn options(&self) -> &SandboxOptions {
        &self.options
    }

    pub fn connect(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    /// An activation of `record` without helpers yet (the first version's helpers are
    /// started by the dispatchers themselves).
    pub fn activation(&self, record: &Arc<HashRecord>) -> Arc<Activation> {
        Activation::new(record.clone(), self.me.clone(), self.dispatchers())
    }

    /// Starts one helper per dispatcher with `bytes` loaded, on the spawner thread, and posts
    /// each to its dispatcher. Fails — every helper started so far killed and reaped — if one
    /// cannot start (`ERR_COMPILE`, `ERR_INSTANTIATE`, `ERR_ISOLATION_UNAVAILABLE`, …).
    pub fn activate(&self, record: &Arc<HashRecord>, bytes: &Arc<[u8]>) -> Result<Arc<Activation>, DeployError> {
        let activation = self.activation(record);
        let mut started = Vec::with_capacity(self.dispatchers());
        for i in 0..self.dispatchers() {
            let (factory, bytes, options) = (self.factory.clone(), bytes.clone(), self.options.clone());
            let exec = spawner::run(move || factory.start(&bytes, &options))??;
            activation.update(i, exec.info());
            started.push(exec);
        }
        activation.started(self.dispatchers());
        for (mailbox, exec) in self.mailboxes.iter().zip(started) {
            mailbox.lock().unwrap_or_else(|p| p.into_inner()).push((activation.clone(), exec));
        }
        if self.stopped.load(Ordering::SeqCst) {
            // The deployment stopped while these started: no dispatcher will take them.
            self.close_mail();
            return Err(DeployError { code: "ERR_CLOSED", message: "the deployment stopped".into() });
        }
        Ok(activation)
    }

    /// After the dispatchers have exited: kills and reaps the helpers still in the mailboxes
    /// (started for a version no dispatcher took yet), now and for any rollout still starting.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.close_mail();
    }

    fn close_mail(&self) {
        for index in 0..self.dispatchers() {
            for (activation, exec) in self.take_mail(index) {
                let last = exec.info();
                drop(exec);
                activation.closed(index, last);
            }
        }
    }

    /// Executors posted to dispatcher `index`.
    fn take_mail(&self, index: usize) -> Vec<Mail> {
        std::mem::take(&mut *self.mailboxes[index].lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn retired_epoch(&self) -> u64 {
        self.retired.load(Ordering::Acquire)
    }

    fn note_retired(&self) {
        self.retired.fetch_add(1, Ordering::AcqRel);
        if let Some(shared) = self.shared.get() {
            shared.wakeup.wake_all();
        }
    }
}
