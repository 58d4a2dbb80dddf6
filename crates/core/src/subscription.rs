//! A subscription: a pattern, an optional declarative filter chain, and its own bounded queue,
//! so one slow consumer never stalls another.

use crate::bus::Bus;
use crate::delivery::state::{Decision, DeliveryState};
use crate::delivery::{unit_random, Delivered, DeliveryEnv, DeliveryOptions, DeliveryStats, Disposition, Outcome};
use crate::durable::backlog::SubJournal;
use crate::error::Result;
use crate::event::Event;
use crate::filter::FilterChain;
use crate::overflow::Overflow;
use crate::pattern::Pattern;
use crate::observe::Kind;
use crate::queue::{Offer, Queue, QueueStats};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Who produced the events a subscription sees: renders ids and the `source` attribute.
#[derive(Debug)]
pub struct Origin {
    pub id_prefix: Box<str>,
    pub source: Box<str>,
}

#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    pub capacity: usize,
    pub overflow: Overflow,
    pub filter: Option<FilterChain>,
    pub name: Option<String>,
    /// Acks, retries, dead letters, per-key ordering, dedupe (see `crate::delivery`).
    pub delivery: DeliveryOptions,
}

pub struct Subscription {
    id: u64,
    pattern: Pattern,
    name: Option<String>,
    filter: Option<FilterChain>,
    filtered: AtomicU64,
    queue: Queue,
    origin: Arc<Origin>,
    delivery: DeliveryState,
    env: Arc<DeliveryEnv>,
    /// Durable or `spill` subscriptions on a bus with a journal.
    journal: Option<SubJournal>,
    /// Held by a consumer from popping events off the queue until they are admitted to the
    /// key table, on per-key subscriptions: between the two, another consumer (a deployment
    /// has several workers) could admit a later event of the same key first and run it ahead.
    admission: Mutex<()>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStats {
    pub id: u64,
    pub pattern: String,
    pub name: Option<String>,
    pub overflow: Overflow,
    /// Events the declarative filter chain turned away before they were queued.
    pub filtered: u64,
    #[serde(flatten)]
    pub queue: QueueStats,
    #[serde(flatten)]
    pub delivery: DeliveryStats,
    /// Journal-backed: acknowledged through the journal and resumed by name after a restart.
    pub durable: bool,
    /// Events that found the queue full and went to (or stayed in) the journal.
    pub spilled: u64,
    /// Spill writes that failed (disk full, read-only): the publisher got the error; counted as
    /// dropped.
    pub spill_errors: u64,
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        pattern: Pattern,
        opts: SubscribeOptions,
        origin: Arc<Origin>,
        env: Arc<DeliveryEnv>,
        journal: Option<SubJournal>,
    ) -> Result<Self> {
        opts.delivery.validate()?;
        Ok(Subscription {
            id,
            pattern,
            name: opts.name,
            filter: opts.filter.filter(|f| !f.is_empty()),
            filtered: AtomicU64::new(0),
            queue: Queue::new(opts.capacity, opts.overflow)?,
            origin,
            delivery: DeliveryState::new(opts.delivery),
            env,
            journal,
            admission: Mutex::new(()),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    pub fn journal(&self) -> Option<&SubJournal> {
        self.journal.as_ref()
    }
    pub fn is_durable(&self) -> bool {
        self.journal.as_ref().is_some_and(SubJournal::is_durable)
    }

    /// Runs the filter chain only (journal-backed subscriptions are offered under the journal's
    /// publish lock, after the append).
    pub(crate) fn accepts(&self, ev: &Event) -> bool {
        if let Some(f) = &self.filter {
            if !f.accepts(ev) {
                self.filtered.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// The queue's events, refilled first from the journal while a backlog waits there.
    fn take_queue(&self, max: usize, out: &mut Vec<Arc<Event>>) -> usize {
        self.refill();
        if !self.journal.as_ref().is_some_and(|j| j.is_durable()) {
            return self.queue.take(max, out);
        }
        // An expired durable event is finished with: the journal releases it (settle hook).
        let mut gone = Vec::new();
        let n = self.queue.take_keeping_expired(max, out, &mut gone);
        for ev in &gone {
            self.hook(ev, &Disposition::Expired);
        }
        n
    }

    /// Fills the queue from the journal while a backlog is waiting there.
    pub fn refill(&self) {
        if let Some(j) = &self.journal {
            j.refill(&self.queue);
        }
    }

    /// Runs the filter chain, then offers the event to the queue.
    /// `None` means the filter turned it away.
    pub(crate) fn offer(&self, ev: &Arc<Event>) -> Option<(Offer, Option<Arc<Event>>)> {
        if let Some(f) = &self.filter {
            if !f.accepts(ev) {
                self.filtered.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        Some(self.queue.offer(ev.clone()))
    }

    pub fn delivery_options(&self) -> &DeliveryOptions {
        &self.delivery.opts
    }

    /// Takes events that are acknowledged on receipt (a stream's consumer never settles).
    pub fn take(&self, max: usize, out: &mut Vec<Arc<Event>>) -> usize {
        if !self.delivery.tracked() {
            let n = self.take_queue(max, out);
            self.delivery.counters.acked.fetch_add(n as u64, Ordering::Relaxed);
            return n;
        }
        let mut got = Vec::new();
        let n = self.take_deliveries(max, &mut got);
        for d in got {
            out.push(d.event.clone());
            self.ack(d.tag);
        }
        self.flush_hook();
        n
    }

    fn ack(&self, tag: u64) {
        if let Decision::Acked(ev) = self.delivery.decide(tag, true, false) {
            self.delivery.counters.acked.fetch_add(1, Ordering::Relaxed);
            self.after_final(&ev, &Disposition::Acked);
        }
    }

    /// Takes up to `max` deliveries for a handler, which settles each with `settle`: retries
    /// that came due and events released by their key first, then the queue. A tracked
    /// subscription holds at most `capacity` events outside its queue (running, retrying, held);
    /// beyond that it stops taking until some settle. Returns how many were added to `out`.
    pub fn take_deliveries(&self, max: usize, out: &mut Vec<Delivered>) -> usize {
        let before = out.len();
        if !self.delivery.tracked() {
            let mut evs = Vec::new();
            let n = self.take_queue(max, &mut evs);
            if n > 0 {
                // Not on an empty poll: idle workers poll in a spin.
                self.delivery.counters.acked.fetch_add(n as u64, Ordering::Relaxed);
            }
            out.extend(evs.into_iter().map(|event| Delivered { tag: 0, attempt: 1, event }));
            return n;
        }
        let mut expired = Vec::new();
        self.delivery.take_ready(before + max, out, &mut expired);
        if !expired.is_empty() {
            self.queue.return_expired(expired.len() as u64);
            for ev in &expired {
                self.hook(ev, &Disposition::Expired);
            }
            self.queue.wake();
        }
        let mut evs = Vec::new();
        let _admitting = self.delivery.per_key().then(|| self.admission.lock().unwrap_or_else(|p| p.into_inner()));
        while out.len() - before < max {
            let room = self.delivery.room(self.queue.capacity()).min(max - (out.len() - before));
            if room == 0 {
                break;
            }
            evs.clear();
            if self.take_queue(room, &mut evs) == 0 {
                break;
            }
            let failed_before = |ev: &Event| self.journal.as_ref().map_or(0, |j| j.failed_before(ev));
            for dup in self.delivery.admit(std::mem::take(&mut evs), out, failed_before) {
                self.hook(&dup, &Disposition::Duplicate);
            }
        }
        self.flush_hook();
        out.len() - before
    }

    /// Records a handler's verdict on delivery `tag` (see `crate::delivery`). Unknown tags
    /// (settled already, or abandoned when the subscription closed) are ignored.
    pub fn settle(self: &Arc<Self>, bus: &Bus, tag: u64, outcome: Outcome) {
        self.settle_one(bus, tag, outcome);
        self.flush_hook();
    }

    /// `settle` for a batch of verdicts: what the settle hook buffers (a journal's
    /// acknowledgements) is written once for the whole batch.
    /// Acks of a tracked subscription are gathered and decided under one lock per run (in
    /// verdict order with the rest: a run is decided before the next other verdict).
    pub fn settle_all(self: &Arc<Self>, bus: &Bus, verdicts: impl IntoIterator<Item = (u64, Outcome)>) {
        let mut acks = Vec::new();
        for (tag, outcome) in verdicts {
            if tag != 0 && outcome == Outcome::Ack && self.delivery.tracked() {
                acks.push(tag);
                continue;
            }
            self.settle_acks(&mut acks);
            self.settle_one(bus, tag, outcome);
        }
        self.settle_acks(&mut acks);
        self.flush_hook();
    }

    /// `settle_one(tag, Ack)` for each of `tags` (tracked), with one lock and one wake-up.
    fn settle_acks(&self, tags: &mut Vec<u64>) {
        if tags.is_empty() {
            return;
        }
        let mut acked = Vec::with_capacity(tags.len());
        self.delivery.ack_many(tags, &mut acked);
        tags.clear();
        if acked.is_empty() {
            return;
        }
        self.delivery.counters.acked.fetch_add(acked.len() as u64, Ordering::Relaxed);
        if let Some(h) = self.env.hook.get() {
            h.acked(self, &acked);
        }
        self.queue.wake();
    }

    fn settle_one(self: &Arc<Self>, bus: &Bus, tag: u64, outcome: Outcome) {
        let c = &self.delivery.counters;
        if matches!(outcome, Outcome::Fail(_)) {
            self.queue.count_failed(1);
        }
        if tag == 0 || !self.delivery.tracked() {
            // Counted acked when taken; any other verdict makes it discarded (at-most-once).
            if outcome != Outcome::Ack {
                c.acked.fetch_sub(1, Ordering::Relaxed);
                c.discarded.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let (ack, again, reason) = match outcome {
            Outcome::Ack => (true, false, String::new()),
            Outcome::Retry(r) | Outcome::Fail(r) => (false, true, r),
            Outcome::Reject(r) => (false, false, r),
        };
        match self.delivery.decide(tag, ack, again) {
            Decision::Unknown => {}
            Decision::Acked(ev) => {
                c.acked.fetch_add(1, Ordering::Relaxed);
                self.after_final(&ev, &Disposition::Acked);
            }
            Decision::Retry { event, attempt } => {
                c.retried.fetch_add(1, Ordering::Relaxed);
                let delay = self.delivery.opts.retry.delay(attempt, unit_random(tag ^ (attempt as u64) << 48));
                self.env.timer.schedule(std::time::Instant::now() + delay, Arc::downgrade(self), tag);
                bus.recorder().note_for(Kind::Retried, Some(&event), 1, |r| {
                    r.sub(self.id).reason("retry").duration_us(delay.as_micros() as u64).detail(given_up(None, &reason, attempt))
                });
                self.hook(&event, &Disposition::Retrying { attempt });
            }
            Decision::GiveUp { event, attempts } => {
                let published = match &self.delivery.opts.dead_letter {
                    Some(topic) => bus.dead_letter(self, topic, &event, &reason, attempts, || {
                        c.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    }),
                    None => false,
                };
                let topic = self.delivery.opts.dead_letter.as_deref().filter(|_| published);
                let why = if published { "dead-letter" } else { "discarded" };
                bus.recorder().note_for(Kind::DeadLettered, Some(&event), 1, |r| r.sub(self.id).reason(why).detail(given_up(topic, &reason, attempts)));
                let d = if published {
                    Disposition::DeadLettered { attempts }
                } else {
                    c.discarded.fetch_add(1, Ordering::Relaxed);
                    Disposition::Discarded { attempts }
                };
                self.after_final(&event, &d);
            }
        }
    }

    /// A consumer took delivery `tag` but its Context ended before the handler could start:
    /// it moves from `delivered` to `expired`.
    pub fn return_expired(&self, tag: u64) {
        if tag == 0 || !self.delivery.tracked() {
            self.delivery.counters.acked.fetch_sub(1, Ordering::Relaxed);
            self.queue.return_expired(1);
            return;
        }
        if let Some(ev) = self.delivery.expire(tag) {
            self.queue.return_expired(1);
            self.after_final(&ev, &Disposition::Expired);
            self.flush_hook();
        }
    }

    /// A consumer took `n` untracked deliveries it will never run (it closed mid-batch). Tracked
    /// deliveries need no report: closing the subscription abandons them.
    pub fn return_undelivered(&self, n: u64) {
        if !self.delivery.tracked() {
            self.delivery.counters.acked.fetch_sub(n, Ordering::Relaxed);
            self.queue.return_undelivered(n);
        }
    }

    /// The consumer is going idle: `true` means work arrived meanwhile (keep going). Work is
    /// queued events (while the subscription has room for more in flight) or due retries.
    pub fn arm(&self) -> bool {
        let full = self.delivery.tracked() && self.delivery.room(self.queue.capacity()) == 0;
        if full {
            self.queue.arm_idle();
        } else if self.queue.arm() {
            return true;
        }
        self.delivery.has_ready() && self.queue.disarm()
    }

    /// The retry timer says delivery `tag` is due again.
    pub(crate) fn retry_due(&self, tag: u64) {
        if self.delivery.due(tag) {
            self.queue.wake();
        }
    }

    /// A final decision frees a slot and may release the next event of a key: wake the consumer.
    fn after_final(&self, ev: &Event, d: &Disposition) {
        self.queue.wake();
        self.hook(ev, d);
    }

    fn hook(&self, ev: &Event, d: &Disposition) {
        if let Some(h) = self.env.hook.get() {
            h.settled(self, ev, d);
        }
    }

    fn flush_hook(&self) {
        if let Some(h) = self.env.hook.get() {
            h.flush(self);
        }
    }

    /// Events taken from the queue and not settled yet (0 for untracked subscriptions).
    pub fn in_flight(&self) -> u64 {
        if self.delivery.tracked() {
            self.delivery.stats().in_flight
        } else {
            0
        }
    }

    /// Counts events a consumer-side filter (a JS predicate) turned away after delivery.
    pub fn count_filtered(&self, n: u64) {
        self.filtered.fetch_add(n, Ordering::Relaxed);
    }

    /// Closes the queue (what is queued is counted `droppedClosed`) and abandons what is in
    /// flight (moved from `delivered` to `droppedClosed`; a later settle of it is ignored). A
    /// spill subscription's events still in the journal are dropped and counted like queued
    /// ones; a durable subscription's queued and in-flight events are not counted as dropped:
    /// they stay unacknowledged in the journal for the next subscriber of that name.
    pub fn close(&self) -> u64 {
        let queued = self.queue.close();
        // Acknowledgements still buffered are written before the journal link goes.
        self.flush_hook();
        let abandoned = self.delivery.close();
        if !abandoned.is_empty() {
            self.queue.return_undelivered(abandoned.len() as u64);
            for ev in &abandoned {
                self.hook(ev, &Disposition::Abandoned);
            }
        }
        let abandoned = abandoned.len() as u64;
        match &self.journal {
            Some(j) if j.is_durable() => {
                // Queued and in-flight events are still unacknowledged in the journal.
                self.queue.uncount_closed(queued + abandoned);
                j.detach();
                0
            }
            Some(j) => {
                let spilled = j.detach();
                self.queue.count_closed_n(spilled);
                queued + abandoned + spilled
            }
            None => queued + abandoned,
        }
    }

    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            id: self.id,
            pattern: self.pattern.as_str().to_owned(),
            name: self.name.clone(),
            overflow: self.queue.policy(),
            filtered: self.filtered.load(Ordering::Relaxed),
            queue: self.queue.stats(),
            delivery: self.delivery.stats(),
            durable: self.is_durable(),
            spilled: self.journal.as_ref().map_or(0, |j| j.spilled.load(Ordering::Relaxed)),
            spill_errors: self.journal.as_ref().map_or(0, |j| j.spill.errors.load(Ordering::Relaxed)),
        }
    }
}

/// The `detail` of a retry or give-up record: `{"attempt"|"attempts": n, "reason": …, "topic": …}`.
fn given_up(topic: Option<&str>, reason: &str, attempts: u32) -> String {
    let mut v = serde_json::json!({ "attempts": attempts, "reason": reason });
    if let Some(t) = topic {
        v["topic"] = t.into();
    }
    v.to_string()
}
