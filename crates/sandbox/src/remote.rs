//! Deployments whose handler runs outside this process (`isolation: 'process'`). The sandbox
//! only defines the interface; `crates/isolate` implements it with a Linux helper process, and
//! the N-API layer wires the two together. Events leave the subscription queues exactly as for
//! in-process deployments (the queue's overflow policy has already applied), are encoded once
//! into the envelope of `docs/abi.md`, and go to the executor; outcomes come back in batches.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_core::{Bus, Delivered, Outcome as Verdict, Subscription};

use crate::deployment::{DeployError, Shared};
use crate::dispatch::{publish_emits, render_id};
use crate::envelope::{encode_envelope, Envelope};
use crate::pool::{HandleResult, Outcome, SandboxOptions};
use crate::error::{ErrorKind, SandboxError};
use crate::record;
use crate::stats::Counters;

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
}

/// Starts executors. Called on the dispatcher thread that will drive the executor (a helper
/// process may be tied to the thread that started it).
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

/// Shared between a remote deployment's dispatchers and `info()`.
pub(crate) struct RemoteState {
    pub counters: Counters,
    /// Latest info of each dispatcher's executor.
    pub executors: Mutex<Vec<RemoteInfo>>,
}

impl RemoteState {
    pub fn new(n: usize) -> Self {
        RemoteState { counters: Counters::new(), executors: Mutex::new(vec![RemoteInfo::default(); n]) }
    }
}

/// Events a dispatcher takes from the queues per visit.
const BATCH: usize = 64;
/// How long an idle dispatcher with nothing in flight spins before parking on the queues.
const SPIN: Duration = Duration::from_micros(50);

struct Taken {
    delivery: Delivered,
    sub: usize,
    submitted: Instant,
    /// Handler start as observers see it (`record.rs`).
    run: record::Run,
}

/// One dispatcher of a remote deployment: queues → executor → outcomes → emits.
pub(crate) fn remote_loop(
    bus: &Bus,
    mut exec: Box<dyn RemoteExecutor>,
    index: usize,
    subs: &[Arc<Subscription>],
    shared: &Shared,
    state: &RemoteState,
    timeout: Duration,
    hash: &str,
) {
    let mut taken: HashMap<u64, Taken> = HashMap::new();
    // Taken from the queues, not yet accepted by the executor (kept in order).
    let mut waiting: VecDeque<(usize, Delivered)> = VecDeque::new();
    let mut batch: Vec<Delivered> = Vec::with_capacity(BATCH);
    let mut done = Vec::new();
    let mut id = String::new();
    let mut encoded = Vec::new();
    let mut token = 0u64;
    let mut idle_since: Option<Instant> = None;
    let mut info_at = Instant::now();
    state.executors.lock().unwrap()[index] = exec.info();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut moved = 0;
        if waiting.is_empty() {
            for (i, sub) in subs.iter().enumerate() {
                batch.clear();
                moved += sub.take_deliveries(BATCH, &mut batch);
                waiting.extend(batch.drain(..).map(|ev| (i, ev)));
            }
        }
        let mut full = false;
        while let Some((i, d)) = waiting.front() {
            let (sub, ev) = (&subs[*i], &d.event);
            // Tracked deliveries were checked by the core when taken; a late expiry reaches the
            // helper, which answers ERR_TIMEOUT and the retry policy decides.
            if d.tag == 0 && ev.expired() {
                sub.queue().return_expired(1);
                waiting.pop_front();
                continue;
            }
            if encoded.is_empty() {
                render_id(sub, ev, &mut id);
                let envelope = Envelope {
                    id: &id,
                    event_type: &ev.topic,
                    source: &sub.origin().source,
                    time_unix_nanos: (ev.time_ms as i64).saturating_mul(1_000_000),
                    subject: ev.subject.as_deref(),
                    traceparent: ev.traceparent.as_deref(),
                    deadline_unix_nanos: ev.deadline.map(|d| (d.unix_ms as i64).saturating_mul(1_000_000)),
                    data: &ev.data,
                };
                match encode_envelope(&envelope) {
                    Ok(b) => encoded = b,
                    Err(e) => {
                        let (_, d) = waiting.pop_front().unwrap();
                        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                        sub.settle(bus, d.tag, Verdict::Fail(e.to_string()));
                        continue;
                    }
                }
            }
            let deadline = ev.deadline.map(|d| d.at);
            match exec.submit(token + 1, std::mem::take(&mut encoded), deadline) {
                Ok(()) => {
                    token += 1;
                    let (i, delivery) = waiting.pop_front().unwrap();
                    let run = record::start(bus, &subs[i], &delivery.event, &shared.name, hash);
                    taken.insert(token, Taken { delivery, sub: i, submitted: Instant::now(), run });
                }
                // Full: keep the event (and its encoding) for the next round.
                Err(env) => {
                    encoded = env;
                    full = true;
                    break;
                }
            }
        }
        let wait = if full { Duration::from_millis(1) } else { Duration::ZERO };
        if exec.in_flight() > 0 {
            exec.poll(&mut done, wait);
        }
        for (t, outcome) in done.drain(..) {
            moved += 1;
            let Some(taken) = taken.remove(&t) else { continue };
            settle(bus, subs, taken, outcome, shared, state, timeout, hash);
        }
        if info_at.elapsed() > Duration::from_millis(20) {
            state.executors.lock().unwrap()[index] = exec.info();
            info_at = Instant::now();
        }
        if moved > 0 || full {
            idle_since = None;
            continue;
        }
        if exec.in_flight() > 0 {
            // Outcomes pending: wait for them on the executor (it sleeps on its own futex).
            exec.poll(&mut done, Duration::from_millis(1));
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        idle_since = None;
        state.executors.lock().unwrap()[index] = exec.info();
        shared.wakeup.park(subs, shared);
    }
    // Stopping: the handler running now finishes (bounded by its timeout) and its emits are
    // published; events the executor has not started are settled as failed below (counted).
    exec.close();
    let until = Instant::now() + timeout + Duration::from_secs(1);
    while exec.in_flight() > 0 && Instant::now() < until {
        exec.poll(&mut done, Duration::from_millis(10));
        for (t, outcome) in done.drain(..) {
            if let Some(taken) = taken.remove(&t) {
                settle(bus, subs, taken, outcome, shared, state, timeout, hash);
            }
        }
    }
    let stopped = || Verdict::Fail("the deployment stopped before the handler ran".into());
    for (i, d) in waiting.drain(..) {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        subs[i].settle(bus, d.tag, stopped());
    }
    for (_, t) in taken.drain() {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        subs[t.sub].settle(bus, t.delivery.tag, stopped());
    }
    state.executors.lock().unwrap()[index] = exec.info();
}

/// Counts one outcome and reports the verdict to the subscription (`docs/delivery.md`): ack
/// publishes the emits; retry / reject / handler errors go to the retry policy and dead
/// letters; an event the supervisor gave up on (it kept killing its helper) is rejected for
/// good, and counted failed.
#[allow(clippy::too_many_arguments)]
fn settle(
    bus: &Bus,
    subs: &[Arc<Subscription>],
    taken: Taken,
    outcome: RemoteOutcome,
    shared: &Shared,
    state: &RemoteState,
    timeout: Duration,
    hash: &str,
) {
    let Taken { delivery, sub, submitted, run } = taken;
    let sub = &subs[sub];
    let c = &state.counters;
    c.latency.record(submitted.elapsed());
    let observed = match &outcome {
        RemoteOutcome::Done(result) => result.outcome.clone(),
        RemoteOutcome::GaveUp(reason) => Outcome::Error(SandboxError::new(ErrorKind::Trap, reason.clone())),
    };
    let us = record::end(bus.recorder(), run, sub, &delivery.event, &shared.name, hash, &observed);
    let why = record::outcome_name(&observed);
    let verdict = match outcome {
        RemoteOutcome::Done(result) => {
            c.emits_refused.fetch_add(u64::from(result.refused_emits), Ordering::Relaxed);
            c.logs_dropped.fetch_add(u64::from(result.dropped_logs), Ordering::Relaxed);
            match result.outcome {
                Outcome::Ack => {
                    c.ack.fetch_add(1, Ordering::Relaxed);
                    c.emits_accepted.fetch_add(result.emits.len() as u64, Ordering::Relaxed);
                    publish_emits(bus, timeout, &delivery.event, result.emits, shared);
                    Verdict::Ack
                }
                Outcome::Retry => {
                    c.retry.fetch_add(1, Ordering::Relaxed);
                    Verdict::Retry("handler returned 1 (retry)".into())
                }
                Outcome::Reject => {
                    c.reject.fetch_add(1, Ordering::Relaxed);
                    Verdict::Reject("handler returned 2 (reject)".into())
                }
                Outcome::Error(e) => {
                    c.errors[e.kind().index()].fetch_add(1, Ordering::Relaxed);
                    Verdict::Fail(e.to_string())
                }
            }
        }
        RemoteOutcome::GaveUp(reason) => {
            sub.queue().count_failed(1);
            Verdict::Reject(reason)
        }
    };
    if verdict != Verdict::Ack {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    let module: Arc<str> = if bus.audit_gate().on() { hash.into() } else { Arc::from("") };
    let ran = record::Ran { name: &shared.name, hash: &module, outcome: why, duration_us: us };
    record::settle(bus, sub, &delivery.event, delivery.tag, verdict, ran, &shared.stop);
}
