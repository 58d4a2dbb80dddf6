//! The worker threads of a deployment: take events from the deployment's subscriptions in
//! batches, run them in the sandbox, publish what the guest emitted. Workers spin briefly before
//! parking (waking a parked thread costs tens of microseconds on these VMs) and park with the
//! queues armed, so a publish wakes exactly one of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use sluice_core::{Bus, Context, Delivered, Delivery, Encoding, Event, EventId, EventInit, Published, Subscription};

use crate::deployment::Shared;
use crate::envelope::Envelope;
use crate::host::Emit;
use crate::pool::Outcome;
use crate::prefetch;
use crate::rollout::{Lease, Rollout};
use crate::record;
use sluice_core::Outcome as Settle;

/// Events taken per queue visit. Small enough that a second worker gets work quickly.
const BATCH: usize = 32;
/// A parked worker looks again this often even without a wake-up (defence in depth).
const PARK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(crate) struct Wakeup {
    parked: Mutex<Vec<Thread>>,
    count: AtomicUsize,
}

impl Wakeup {
    /// Called by publishers (through the queue's waker): unpark one parked worker.
    pub fn wake_one(&self) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(t) = self.parked.lock().unwrap().pop() {
            t.unpark();
        }
    }

    pub fn wake_all(&self) {
        for t in self.parked.lock().unwrap().drain(..) {
            t.unpark();
        }
    }

    /// Parks the calling worker until a publish wakes it. Arms every queue first and does not
    /// sleep if one of them already has events (no lost wake-up).
    pub(crate) fn park(&self, subs: &[Arc<Subscription>], shared: &Shared) {
        let me = thread::current();
        self.parked.lock().unwrap().push(me.clone());
        self.count.fetch_add(1, Ordering::SeqCst);
        let pending = subs.iter().fold(false, |any, s| s.arm() | any);
        if !pending && !shared.stop.load(Ordering::SeqCst) {
            thread::park_timeout(PARK);
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.parked.lock().unwrap().retain(|t| t.id() != me.id());
    }
}

/// Spin-then-park for a worker that found nothing to do: it spins for a short while after
/// its last work (more usually arrives within microseconds, and parking costs a wake-up on the
/// publisher's side), then parks. Shared by in-process workers and remote dispatchers.
pub(crate) struct IdleSpin(Option<Instant>);

impl IdleSpin {
    const SPIN: Duration = Duration::from_micros(50);

    pub fn new() -> Self {
        IdleSpin(None)
    }

    /// There was work: the next idle round spins again.
    pub fn worked(&mut self) {
        self.0 = None;
    }

    /// Spins once and returns `false` while the spin lasts; `true` once the caller should park.
    pub fn should_park(&mut self) -> bool {
        let since = *self.0.get_or_insert_with(Instant::now);
        if since.elapsed() < Self::SPIN {
            std::hint::spin_loop();
            return false;
        }
        self.0 = None;
        true
    }
}

pub(crate) fn worker_loop(bus: &Bus, versions: &Rollout, subs: &[Arc<Subscription>], shared: &Shared) {
    // A version retired while this worker held it is torn down elsewhere, not before our next event.
    crate::rollout::on_event_path();
    let mut batch: Vec<Delivered> = Vec::with_capacity(BATCH);
    let mut verdicts: Vec<(u64, Settle)> = Vec::with_capacity(BATCH);
    let mut id = String::new();
    let mut lease = Lease::default();
    let mut idle = IdleSpin::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for sub in subs {
            batch.clear();
            let n = sub.take_deliveries(BATCH, &mut batch);
            if n == BATCH {
                // More than one worker's worth: share it.
                shared.wakeup.wake_one();
            }
            got += n;
            batch.iter().for_each(|d| prefetch::event_fields(&d.event));
            // The first event of a batch reads the clock; the next ones may start where the
            // previous one ended (`Sandbox::handle_kept`).
            let mut straight_on = false;
            for i in 0..batch.len() {
                if let Some(next) = batch.get(i + 1) {
                    prefetch::event_data(&next.event);
                }
                straight_on = handle_one(bus, versions, sub, &batch[i], shared, &mut id, &mut lease, &mut verdicts, straight_on);
            }
            batch.clear();
            // The instance goes back before the settle and before this worker may park.
            lease.release();
            if !verdicts.is_empty() {
                // One settle per batch, as for JS handlers: its acknowledgements are one
                // journal record. Each event's emits were published before (journal order).
                sub.settle_all(bus, verdicts.drain(..));
            }
        }
        if got > 0 {
            idle.worked();
            continue;
        }
        if idle.should_park() {
            shared.wakeup.park(subs, shared);
        }
    }
}

pub(crate) fn render_id(sub: &Subscription, ev: &Event, out: &mut String) {
    out.clear();
    match &ev.id {
        EventId::Seq(n) => {
            // By hand: `write!` through the formatter showed in per-event profiles.
            out.push_str(&sub.origin().id_prefix);
            out.push('-');
            // SAFETY: write_u64 appends ASCII digits only; the String stays UTF-8.
            sluice_core::json::write_u64(unsafe { out.as_mut_vec() }, *n);
        }
        EventId::Given(s) => out.push_str(s),
    }
}

/// The guest's view of `ev` as `sub` delivers it (`docs/abi.md`), with `id` from `render_id`.
pub(crate) fn envelope_of<'a>(sub: &'a Subscription, ev: &'a Event, id: &'a str) -> Envelope<'a> {
    Envelope {
        id,
        event_type: &ev.topic,
        source: &sub.origin().source,
        time_unix_nanos: (ev.time_ms as i64).saturating_mul(1_000_000),
        subject: ev.subject.as_deref(),
        traceparent: ev.traceparent.as_deref(),
        deadline_unix_nanos: ev.deadline.map(|d| (d.unix_ms as i64).saturating_mul(1_000_000)),
        data: &ev.data,
    }
}

/// Runs one event on the instance `lease` keeps; its verdict goes to `verdicts` (settled with
/// the batch). `straight_on`: nothing that can wait happened since the previous event's run
/// ended. Returns whether that still holds after this event: not if it published emits (a
/// full `block` queue may hold the worker) or went through the audit gate (which may hold it).
#[allow(clippy::too_many_arguments)]
fn handle_one(
    bus: &Bus,
    versions: &Rollout,
    sub: &Arc<Subscription>,
    d: &Delivered,
    shared: &Shared,
    id: &mut String,
    lease: &mut Lease,
    verdicts: &mut Vec<(u64, Settle)>,
    straight_on: bool,
) -> bool {
    let ev = &d.event;
    // Waiting behind earlier events of the batch may have outlived the event's Context.
    if ev.expired() {
        sub.return_expired(d.tag);
        return straight_on;
    }
    render_id(sub, ev, id);
    let envelope = envelope_of(sub, ev, id);
    // The routing table picks exactly one version for this event (by id, topic, labels).
    let version = versions.route(&envelope);
    let run = record::start(bus, sub, ev, &shared.name, version.hash());
    let result = version.run(lease, &envelope, ev.deadline.map(|d| d.at), straight_on);
    let us = record::end(bus.recorder(), run, sub, ev, &shared.name, version.hash(), &result.outcome);
    // The hash outlives the routed version only for an audit record; without an audit
    // observer nothing is copied (this runs per event).
    let audited = bus.audit_gate().on();
    let hash: Option<Arc<str>> = audited.then(|| version.hash().into());
    drop(version);
    let emitted = !result.emits.is_empty();
    if matches!(result.outcome, Outcome::Ack) {
        publish_emits(bus, versions.timeout(), ev, result.emits, shared);
    } else {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    let ran = record::Ran { name: &shared.name, hash: hash.as_deref().unwrap_or(""), outcome: record::outcome_name(&result.outcome), duration_us: us };
    record::settle_later(bus, sub, ev, d.tag, verdict(result.outcome), ran, &shared.stop, verdicts);
    !emitted && !audited
}

/// Turns the guest's outcome into the core's settle verdict: status 0 ack, 1 retry, 2 reject
/// (dead letter); a trap, a limit or a bad status is a failure (retried per the policy).
fn verdict(outcome: Outcome) -> Settle {
    match outcome {
        Outcome::Ack => Settle::Ack,
        Outcome::Retry => Settle::Retry("handler returned 1 (retry)".into()),
        Outcome::Reject => Settle::Reject("handler returned 2 (reject)".into()),
        Outcome::Error(e) => Settle::Fail(e.to_string()),
    }
}

/// Publishes a handler's emits as children of `parent`: same Context (so the deadline flows
/// on) and same trace context. Data that is valid JSON travels as JSON, anything else as bytes.
pub(crate) fn publish_emits(bus: &Bus, timeout: Duration, parent: &Event, emits: Vec<Emit>, shared: &Shared) {
    let counters = &shared.counters;
    for emit in emits {
        let encoding = if serde_json::from_slice::<serde::de::IgnoredAny>(&emit.data).is_ok() {
            Encoding::Json
        } else {
            Encoding::Binary
        };
        let init = EventInit {
            topic: emit.topic,
            traceparent: parent.traceparent.as_deref().map(str::to_owned),
            encoding: Some(encoding),
            data: emit.data,
            ..Default::default()
        };
        let outcome = bus.make_event(init, parent.ctx.as_ref()).and_then(|child| bus.publish_event_ticketed(child, None));
        let ok = match outcome {
            // Appended; only its fsync is outstanding. Not waited for: the parent's
            // acknowledgement follows this record in the journal, so a crash keeps both or
            // redelivers the parent (which emits again). Waiting would cost this worker an
            // fsync per emit. A write that fails later is counted by the journal
            // (`lostAfterReturn`), as for `tryPublish`.
            Ok(Published::Durable(seq)) => {
                bus.count_if_lost(seq);
                true
            }
            Ok(Published::Delivery(Delivery::Done { .. })) => true,
            Ok(Published::Delivery(Delivery::Pending(p))) => {
                // A full `block` queue may hold this worker at most the handler's own budget.
                let wait = parent.ctx.clone().unwrap_or_else(Context::background).with_timeout(timeout);
                p.bounded_by(wait).wait().is_ok()
            }
            Err(_) => false,
        };
        let counter = if ok { &counters.emits_published } else { &counters.emits_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
