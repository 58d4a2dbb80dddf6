//! One dispatcher of a remote deployment: queues → routing table → the chosen version's helper
//! → outcomes → emits. A dispatcher drives one helper per live version; each event is routed
//! once, when it is handed to a helper, and settled when that helper's outcome comes back.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::{Bus, Delivered, Outcome as Verdict, Subscription};

use crate::deployment::Shared;
use crate::dispatch::{envelope_of, publish_emits, render_id, IdleSpin};
use crate::envelope::encode_envelope_into;
use crate::error::{ErrorKind, SandboxError};
use crate::pool::Outcome;
use crate::record;
use crate::rollout::{Expected, Held, Rollout, Route, ShadowLink, Version, Watch};
use crate::stats::{add, Counters};

use super::{Activation, RemoteExecutor, RemoteOutcome, RemoteState};

/// Events a dispatcher takes from the queues per visit.
const BATCH: usize = 64;
/// With helpers of several versions busy, how long to wait on each in turn.
const SHARED_WAIT: Duration = Duration::from_micros(100);

/// One helper this dispatcher drives: its activation's executor.
pub(crate) struct Slot {
    pub activation: Arc<Activation>,
    pub exec: Box<dyn RemoteExecutor>,
}

/// What one dispatcher works with.
pub(crate) struct Dispatcher<'a> {
    pub bus: &'a Bus,
    pub subs: &'a [Arc<Subscription>],
    pub shared: &'a Shared,
    pub rollout: &'a Rollout,
    pub state: &'a RemoteState,
    pub index: usize,
    pub timeout: Duration,
}

/// An event handed to a version's helper.
struct Taken {
    delivery: Delivered,
    sub: usize,
    submitted: Instant,
    /// Handler start as observers see it (`record.rs`).
    run: record::Run,
    /// The version, counted in flight until the outcome is settled.
    held: Held,
    /// The candidate's watch, when the candidate handles it.
    watch: Option<Arc<Watch>>,
    /// A copy goes to the shadow candidate once the current version's outcome is known.
    shadow: Option<ShadowPlan>,
}

struct ShadowPlan {
    link: Arc<ShadowLink>,
    candidate: Arc<Version>,
    watch: Option<Arc<Watch>>,
    envelope: Vec<u8>,
}

/// A shadow copy in a candidate's helper: compared, then thrown away.
struct CopyJob {
    link: Arc<ShadowLink>,
    held: Held,
    watch: Option<Arc<Watch>>,
    expected: Expected,
    submitted: Instant,
}

enum Job {
    Real(Taken),
    Copy(CopyJob),
}

/// Jobs by token. Tokens are sequential, so a multiply spreads them well enough; the default
/// SipHash showed up per event in profiles of the dispatcher.
type Jobs = HashMap<u64, Job, BuildHasherDefault<TokenHash>>;

#[derive(Default)]
struct TokenHash(u64);

impl Hasher for TokenHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Runs until the deployment stops; `first` is the first version's helper.
pub(crate) fn remote_loop(d: &Dispatcher<'_>, first: Slot) {
    // A version retired while this dispatcher held it is dropped off the event path.
    crate::rollout::on_event_path();
    let mut slots = vec![first];
    let mut jobs = Jobs::default();
    // Taken from the queues, not yet accepted by a helper (kept in order).
    let mut waiting: VecDeque<(usize, Delivered)> = VecDeque::new();
    let mut batch: Vec<Delivered> = Vec::with_capacity(BATCH);
    let mut done = Vec::new();
    // Verdicts of a poll round per subscription, settled together (one journal record).
    let mut verdicts: Vec<Vec<(u64, Verdict)>> = vec![Vec::new(); d.subs.len()];
    let mut id = String::new();
    let mut encoded = Vec::new();
    // Envelope buffers of finished events, from the executors: the next envelopes are
    // encoded into them (no allocation per event).
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut token = 0u64;
    // With nothing in flight, spins a while before parking on the queues.
    let mut idle = IdleSpin::new();
    let mut info_at = Instant::now();
    let mut retired_seen = 0;
    d.update_info(&slots);
    while !d.shared.stop.load(Ordering::Relaxed) {
        let epoch = d.state.retired_epoch();
        if epoch != retired_seen && d.close_retired(&mut slots) {
            retired_seen = epoch;
        }
        let mut moved = 0;
        if waiting.is_empty() {
            for (i, sub) in d.subs.iter().enumerate() {
                batch.clear();
                moved += sub.take_deliveries(BATCH, &mut batch);
                waiting.extend(batch.drain(..).map(|ev| (i, ev)));
            }
        }
        let mut full = false;
        // One clock read per round of submissions: an event's handler latency counts from
        // when its round was handed over (a round takes microseconds).
        let mut now = None;
        while let Some((i, dl)) = waiting.front() {
            let (sub, ev) = (&d.subs[*i], &dl.event);
            // Tracked deliveries were checked by the core when taken; a late expiry reaches the
            // helper, which answers ERR_TIMEOUT and the retry policy decides.
            if dl.tag == 0 && ev.expired() {
                sub.queue().return_expired(1);
                waiting.pop_front();
                continue;
            }
            if encoded.is_empty() {
                render_id(sub, ev, &mut id);
                if encoded.capacity() == 0 {
                    encoded = spare.pop().unwrap_or_default();
                }
                match encode_envelope_into(&envelope_of(sub, ev, &id), &mut encoded) {
                    Ok(()) => {}
                    Err(e) => {
                        encoded.clear();
                        let (i, dl) = waiting.pop_front().unwrap();
                        d.fail(i, dl, e.to_string());
                        continue;
                    }
                }
            }
            // The routing table picks exactly one version for this event (by id, topic,
            // labels), at the moment a helper takes it.
            let routed = d.rollout.route_by(&id, &ev.topic);
            // Held (counted in flight) from here: one reference taken per event instead of a
            // clone dropped again after the submit (locked instructions next to the ring
            // writes showed up in profiles). Dropped at once if the event does not go out.
            let version = routed.version().hold();
            let watch = routed.watch().cloned();
            let shadow = routed.shadow().filter(|(link, _)| link.is_active()).map(|(l, c)| (l.clone(), c.clone()));
            let candidate = routed.pick() == Route::Candidate;
            drop(routed);
            let Some(k) = d.slot_of(&mut slots, &version) else {
                let (i, dl) = waiting.pop_front().unwrap();
                encoded.clear();
                d.fail(i, dl, format!("ERR_HELPER: no helper of {} on this dispatcher", version.hash()));
                continue;
            };
            let copy = shadow.as_ref().map(|_| encoded.clone());
            let deadline = ev.deadline.map(|d| d.at);
            match slots[k].exec.submit(token + 1, std::mem::take(&mut encoded), deadline) {
                Ok(()) => {
                    token += 1;
                    let (i, delivery) = waiting.pop_front().unwrap();
                    let run = record::start(d.bus, &d.subs[i], &delivery.event, &d.shared.name, version.hash());
                    let shadow = shadow.zip(copy).map(|((link, candidate), envelope)| ShadowPlan {
                        link,
                        candidate,
                        watch: watch.clone(),
                        envelope,
                    });
                    let watch = if candidate { watch } else { None };
                    let held = version;
                    let submitted = *now.get_or_insert_with(Instant::now);
                    jobs.insert(token, Job::Real(Taken { delivery, sub: i, submitted, run, held, watch, shadow }));
                }
                // Full: keep the event (and its encoding) for the next round; it is routed again then.
                Err(env) => {
                    encoded = env;
                    full = true;
                    break;
                }
            }
        }
        let wait = if full { Duration::from_millis(1) } else { Duration::ZERO };
        poll_all(&mut slots, &mut done, wait);
        if spare.len() < 2 * BATCH {
            for s in &mut slots {
                s.exec.recycle(&mut spare);
            }
        }
        // One clock read per round of outcomes (for the handler latency), like submissions.
        let now = if done.is_empty() { None } else { Some(Instant::now()) };
        for (t, outcome) in done.drain(..) {
            moved += 1;
            match jobs.remove(&t) {
                Some(Job::Real(taken)) => {
                    if let Some(copy) = d.settle(taken, outcome, &mut verdicts, now.unwrap()) {
                        d.send_copy(&mut slots, &mut jobs, &mut token, copy);
                    }
                }
                Some(Job::Copy(copy)) => d.compare(copy, outcome),
                None => {}
            }
        }
        d.settle_round(&mut verdicts);
        if info_at.elapsed() > Duration::from_millis(20) {
            d.update_info(&slots);
            info_at = Instant::now();
        }
        if moved > 0 || full {
            idle.worked();
            continue;
        }
        if slots.iter().any(|s| s.exec.in_flight() > 0) {
            // Outcomes pending: wait for them on the executors (each sleeps on its own futex).
            poll_all(&mut slots, &mut done, Duration::from_millis(1));
            continue;
        }
        if idle.should_park() {
            // Look at idle helpers too: one killed with nothing in flight is otherwise noticed,
            // and replaced, only when this dispatcher next sends it an event — which may be never
            // if the other dispatchers take all the traffic. A parked dispatcher looks again
            // every park timeout.
            for s in slots.iter_mut().filter(|s| s.exec.in_flight() == 0 && s.exec.info().pid.is_some()) {
                s.exec.poll(&mut done, Duration::ZERO);
            }
            if !done.is_empty() {
                continue;
            }
            d.update_info(&slots);
            d.shared.wakeup.park(d.subs, d.shared);
        }
    }
    // Stopping: the handlers running now finish (bounded by the timeout) and their emits are
    // published; events the helpers have not started are settled as failed below (counted).
    for s in &mut slots {
        s.exec.close();
    }
    let until = Instant::now() + d.timeout + Duration::from_secs(1);
    while slots.iter().any(|s| s.exec.in_flight() > 0) && Instant::now() < until {
        poll_all(&mut slots, &mut done, Duration::from_millis(10));
        let now = Instant::now();
        for (t, outcome) in done.drain(..) {
            match jobs.remove(&t) {
                Some(Job::Real(taken)) => {
                    if let Some(copy) = d.settle(taken, outcome, &mut verdicts, now) {
                        copy.plan.link.skipped();
                    }
                }
                Some(Job::Copy(copy)) => d.compare(copy, outcome),
                None => {}
            }
        }
        d.settle_round(&mut verdicts);
    }
    let stopped = "the deployment stopped before the handler ran";
    for (i, dl) in waiting.drain(..) {
        d.fail(i, dl, stopped.into());
    }
    for (_, job) in jobs.drain() {
        match job {
            Job::Real(t) => {
                if let Some(plan) = &t.shadow {
                    plan.link.skipped();
                }
                d.fail(t.sub, t.delivery, stopped.into());
            }
            Job::Copy(c) => c.link.skipped(),
        }
    }
    d.update_info(&slots);
    // Every helper of this dispatcher is killed and reaped before the deployment's stop returns.
    slots.extend(d.state.take_mail(d.index).into_iter().map(|(activation, exec)| Slot { activation, exec }));
    for s in slots {
        let last = s.exec.info();
        drop(s.exec);
        s.activation.closed(d.index, last);
    }
}

/// Polls every helper with events in flight; with one busy helper waits up to `wait` on it.
fn poll_all(slots: &mut [Slot], done: &mut Vec<(u64, RemoteOutcome)>, wait: Duration) {
    let busy = slots.iter().filter(|s| s.exec.in_flight() > 0).count();
    let wait = if busy > 1 { wait.min(SHARED_WAIT) } else { wait };
    for s in slots.iter_mut().filter(|s| s.exec.in_flight() > 0) {
        s.exec.poll(done, if done.is_empty() { wait } else { Duration::ZERO });
    }
}

impl Dispatcher<'_> {
    /// Settles an event that no helper ran, as failed (counted).
    fn fail(&self, sub: usize, delivery: Delivered, reason: String) {
        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.subs[sub].settle(self.bus, delivery.tag, Verdict::Fail(reason));
    }

    fn update_info(&self, slots: &[Slot]) {
        for s in slots {
            s.activation.update(self.index, s.exec.info());
        }
    }

    /// The slot of `version`'s helper on this dispatcher, taking posted helpers first if needed
    /// (they are posted before the routing table names their version).
    fn slot_of(&self, slots: &mut Vec<Slot>, version: &Version) -> Option<usize> {
        let activation = version.activation()?;
        let find = |slots: &[Slot]| slots.iter().position(|s| Arc::ptr_eq(&s.activation, activation));
        if let Some(k) = find(slots) {
            return Some(k);
        }
        slots.extend(self.state.take_mail(self.index).into_iter().map(|(activation, exec)| Slot { activation, exec }));
        let k = find(slots)?;
        slots[k].activation.update(self.index, slots[k].exec.info());
        Some(k)
    }

    /// Closes the helpers of retired versions (their last event is settled: the version was
    /// dropped). Returns false if one still had events in flight (looked at again later).
    fn close_retired(&self, slots: &mut Vec<Slot>) -> bool {
        slots.extend(self.state.take_mail(self.index).into_iter().map(|(activation, exec)| Slot { activation, exec }));
        let mut all = true;
        let mut k = 0;
        while k < slots.len() {
            let s = &slots[k];
            if !s.activation.is_retired() {
                k += 1;
                continue;
            }
            if s.exec.in_flight() > 0 {
                all = false;
                k += 1;
                continue;
            }
            let Slot { activation, exec } = slots.swap_remove(k);
            let last = exec.info();
            let index = self.index;
            // Kill and reap off the event path.
            crate::rollout::release_off_path(move || {
                drop(exec);
                activation.closed(index, last);
            });
        }
        all
    }

    /// Counts one outcome on its version and reports the verdict to the subscription
    /// (`docs/delivery.md`): ack publishes the emits; retry / reject / handler errors go to the
    /// retry policy and dead letters; an event the supervisor gave up on (it kept killing its
    /// helper) is rejected for good, and counted failed. The verdict goes to `verdicts` (its
    /// subscription's list), settled with the round by `settle_round`; emits are published
    /// here, before it (journal order). Returns the shadow copy to send.
    /// `now`: when this round's outcomes were collected.
    fn settle(&self, taken: Taken, outcome: RemoteOutcome, verdicts: &mut [Vec<(u64, Verdict)>], now: Instant) -> Option<CopyPlan> {
        let Taken { delivery, sub: index, submitted, run, held, watch, shadow } = taken;
        let sub = &self.subs[index];
        let c = &held.record.counters;
        let waited = now.saturating_duration_since(submitted);
        c.local().latency.record(waited);
        let (observed, elapsed) = match &outcome {
            RemoteOutcome::Done(result) => (result.outcome.clone(), result.elapsed),
            RemoteOutcome::GaveUp(reason) => (Outcome::Error(SandboxError::new(ErrorKind::Trap, reason.clone())), waited),
        };
        count(c, &observed);
        if let Some(w) = &watch {
            self.rollout.observe(w, elapsed, observed.error_kind().is_some());
        }
        let hash = held.hash();
        let us = record::end(self.bus.recorder(), run, sub, &delivery.event, &self.shared.name, hash, &observed);
        let why = record::outcome_name(&observed);
        // Copied only for an audit record (`held` is released before the settle).
        let module: Option<Arc<str>> = self.bus.audit_gate().on().then(|| hash.into());
        let mut copy = None;
        let verdict = match outcome {
            RemoteOutcome::Done(result) => {
                add(&c.local().emits_refused, result.refused_emits.into());
                add(&c.local().logs_dropped, result.dropped_logs.into());
                copy = shadow.map(|plan| CopyPlan { expected: Expected::of(&result.outcome, &result.emits), plan });
                match result.outcome {
                    Outcome::Ack => {
                        add(&c.local().emits_accepted, result.emits.len() as u64);
                        publish_emits(self.bus, self.timeout, &delivery.event, result.emits, self.shared);
                        Verdict::Ack
                    }
                    Outcome::Retry => Verdict::Retry("handler returned 1 (retry)".into()),
                    Outcome::Reject => Verdict::Reject("handler returned 2 (reject)".into()),
                    Outcome::Error(e) => Verdict::Fail(e.to_string()),
                }
            }
            RemoteOutcome::GaveUp(reason) => {
                if let Some(plan) = shadow {
                    // Nothing to compare the candidate with.
                    plan.link.skipped();
                }
                sub.queue().count_failed(1);
                Verdict::Reject(reason)
            }
        };
        // The event is out of the version's hands: it may be released now.
        drop(held);
        if verdict != Verdict::Ack {
            self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        let ran = record::Ran { name: &self.shared.name, hash: module.as_deref().unwrap_or(""), outcome: why, duration_us: us };
        record::settle_later(self.bus, sub, &delivery.event, delivery.tag, verdict, ran, &self.shared.stop, &mut verdicts[index]);
        copy
    }

    /// One settle per subscription for a poll round's verdicts, as in-process workers and JS
    /// handlers do: its acknowledgements are one journal record.
    fn settle_round(&self, verdicts: &mut [Vec<(u64, Verdict)>]) {
        for (sub, v) in self.subs.iter().zip(verdicts.iter_mut()) {
            if !v.is_empty() {
                sub.settle_all(self.bus, v.drain(..));
            }
        }
    }

    /// Hands a shadow copy to the candidate's helper on this dispatcher; never waits for room.
    fn send_copy(&self, slots: &mut Vec<Slot>, jobs: &mut Jobs, token: &mut u64, copy: CopyPlan) {
        let CopyPlan { expected, plan: ShadowPlan { link, candidate, watch, envelope } } = copy;
        link.copied();
        if !link.is_active() {
            return link.skipped();
        }
        let Some(k) = self.slot_of(slots, &candidate) else { return link.skipped() };
        // The event's own deadline belonged to the real delivery; the copy gets the
        // deployment's timeout.
        match slots[k].exec.submit(*token + 1, envelope, None) {
            Ok(()) => {
                *token += 1;
                let held = candidate.hold();
                jobs.insert(*token, Job::Copy(CopyJob { link, held, watch, expected, submitted: Instant::now() }));
            }
            Err(_) => link.skipped(),
        }
    }

    /// A shadow copy's outcome: counted on the candidate, compared, its emits thrown away.
    fn compare(&self, copy: CopyJob, outcome: RemoteOutcome) {
        let CopyJob { link, held, watch, expected, submitted } = copy;
        let c = &held.record.counters;
        c.local().latency.record(submitted.elapsed());
        let (observed, emits, elapsed) = match outcome {
            RemoteOutcome::Done(r) => (r.outcome, r.emits, r.elapsed),
            RemoteOutcome::GaveUp(reason) => (Outcome::Error(SandboxError::new(ErrorKind::Trap, reason)), Vec::new(), submitted.elapsed()),
        };
        count(c, &observed);
        link.compare(expected, &observed, &emits);
        drop(held);
        if let Some(w) = &watch {
            self.rollout.observe(w, elapsed, observed.error_kind().is_some());
        }
    }
}

struct CopyPlan {
    expected: Expected,
    plan: ShadowPlan,
}

fn count(c: &Counters, outcome: &Outcome) {
    let c = c.local();
    let n = match outcome {
        Outcome::Ack => &c.ack,
        Outcome::Retry => &c.retry,
        Outcome::Reject => &c.reject,
        Outcome::Error(e) => &c.errors[e.kind().index()],
    };
    n.fetch_add(1, Ordering::Relaxed);
}
