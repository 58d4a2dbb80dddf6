//! The bus: validates and stamps events, routes them to subscriptions, and applies each
//! subscription's overflow policy. Publishing never takes a lock on the route table.

use crate::batch::BatchData;
use crate::context::{unix_now_ms, Context};
use crate::delivery::{dead_letter, DeadLetterStats, DeliveryEnv, Guarantee, SettleHook};
use crate::filter::FilterChain;
use crate::durable::backlog::SubJournal;
use crate::durable::notify::DurableWait;
use crate::durable::{Durable, DurableStats, JournalConfig, SPILL_PREFIX};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Encoding, Event, EventId, EventInit};
use crate::observe::{reason, Kind, Recorder};
use crate::overflow::Overflow;
use crate::pattern::{validate_topic, Pattern};
use crate::queue::Offer;
use crate::router::Router;
use crate::subscription::{Origin, SubscribeOptions, Subscription, SubscriptionStats};
use serde::Serialize;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub const MAX_DATA_BYTES: usize = 64 << 20;
pub const MAX_ATTR_BYTES: usize = 1024;

#[derive(Clone, Debug)]
pub struct BusOptions {
    /// Defaults for subscriptions that do not set their own.
    pub capacity: usize,
    pub overflow: Overflow,
    /// The CloudEvents `source` of events published here.
    pub source: String,
    /// The local journal behind at-least-once subscriptions and `spill`.
    pub journal: Option<JournalConfig>,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions { capacity: 1024, overflow: Overflow::Block, source: "sluice".into(), journal: None }
    }
}

/// Sums over every subscription the bus ever had, live or removed, so final figures survive
/// `unsubscribe` and `close`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub depth: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub expired: u64,
    pub failed: u64,
    pub filtered: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub discarded: u64,
    pub duplicates_suppressed: u64,
}

impl Totals {
    fn add(&mut self, s: &SubscriptionStats) {
        self.depth += s.queue.depth;
        self.delivered += s.queue.delivered;
        self.dropped += s.queue.dropped() + s.spill_errors;
        self.expired += s.queue.expired;
        self.failed += s.queue.failed;
        self.filtered += s.filtered;
        self.acked += s.delivery.acked;
        self.retried += s.delivery.retried;
        self.dead_lettered += s.delivery.dead_lettered;
        self.discarded += s.delivery.discarded;
        self.duplicates_suppressed += s.delivery.duplicates_suppressed;
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BusStats {
    pub closed: bool,
    pub published: u64,
    /// Published events that matched no subscription.
    pub unrouted: u64,
    #[serde(flatten)]
    pub totals: Totals,
    /// Dead letters kept for `replay`.
    pub dead_letters: DeadLetterStats,
    /// Live subscriptions only.
    pub subscriptions: Vec<SubscriptionStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<DurableStats>,
}

pub struct Bus {
    pub(crate) router: Router,
    pub(crate) durable: Option<Arc<Durable>>,
    defaults: BusOptions,
    origin: Arc<Origin>,
    seq: AtomicU64,
    next_sub: AtomicU64,
    closed: AtomicBool,
    published: AtomicU64,
    unrouted: AtomicU64,
    /// Final counters of removed subscriptions.
    retired: std::sync::Mutex<Totals>,
    /// Retry timer, settle hook and dead-letter retention shared by the subscriptions.
    delivery: Arc<DeliveryEnv>,
    /// Lifecycle records for observers (see observe.rs); off until someone watches.
    recorder: Arc<Recorder>,
    /// Verdicts of worker-thread handler runs waiting for their audit record (see audit.rs).
    audit: crate::audit::AuditGate,
}

/// The outcome of a publish that may have to wait.
pub enum Delivery {
    /// Every matching subscription took its decision. `accepted` is false if any of them
    /// dropped or refused the event.
    Done { accepted: bool },
    /// Some `block` subscriptions were full: finish with `wait()` off the caller's event loop.
    Pending(PendingPublish),
}

pub struct PendingPublish {
    pub(crate) ev: Arc<Event>,
    /// The journal's fsync of this publish's records (durable subscriptions, spill).
    pub(crate) durable: Option<Arc<DurableWait>>,
    pub(crate) waiting: Vec<Arc<Subscription>>,
    pub(crate) ctx: Option<Context>,
    /// An `error`-policy refusal seen while offering, reported after the waits finish.
    pub(crate) refused: Option<Error>,
}

impl PendingPublish {
    /// Bounds the wait by `ctx` instead of the publisher's Context (the event keeps the
    /// publisher's). A dispatcher publishing a handler's emits uses this so a full queue cannot
    /// hold its worker longer than the handler's own budget.
    pub fn bounded_by(mut self, ctx: Context) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// One non-blocking round: offers the event to the subscriptions still full. `Ok(true)` when
    /// every one took it (or closed); `Ok(false)` while some are full — register `on_progress`
    /// and call again; the Context's end is an error (counted as `dropped_canceled`).
    pub fn try_progress(&mut self) -> Result<bool> {
        if let Some(w) = &self.durable {
            // The journal's answer first: a persisted event is not canceled by the Context.
            match w.result() {
                None if self.waiting.is_empty() => return Ok(false),
                None => {}
                Some(Err(e)) => {
                    self.durable = None;
                    for sub in self.waiting.drain(..) {
                        sub.queue().count_canceled();
                    }
                    return Err(e);
                }
                Some(Ok(())) => self.durable = None,
            }
        }
        if let Some(e) = self.ctx.as_ref().and_then(Context::error) {
            for sub in self.waiting.drain(..) {
                sub.queue().count_canceled();
            }
            return Err(e);
        }
        let ev = &self.ev;
        self.waiting.retain(|sub| matches!(sub.queue().try_place(ev), Ok(false)));
        if !self.waiting.is_empty() || self.durable.is_some() {
            return Ok(false);
        }
        self.refused.take().map_or(Ok(true), Err)
    }

    /// Calls `f` (once, from whichever thread frees space) when `try_progress` may get further.
    /// The Context's end is not reported here: the caller watches it (a JS AbortSignal).
    pub fn on_progress(&self, f: Arc<dyn Fn() + Send + Sync>) {
        match (self.waiting.first(), &self.durable) {
            (Some(sub), _) => sub.queue().on_space(Box::new(move || f())),
            (None, Some(w)) => w.on_done(f),
            (None, None) => f(),
        }
    }

    /// Blocks until every waiting subscription took the event or the Context ended. The waits
    /// go in order, so a publisher that awaits each publish keeps its order per subscription.
    pub fn wait(mut self) -> Result<()> {
        let waiting = std::mem::take(&mut self.waiting);
        let refused = self.refused.take();
        if let Some(w) = self.durable.take() {
            w.wait()?;
        }
        let mut result = Ok(());
        for sub in &waiting {
            if let Err(e) = sub.queue().push_blocking(self.ev.clone(), self.ctx.as_ref()) {
                if result.is_ok() && e.kind() != ErrorKind::Closed {
                    result = Err(e);
                }
            }
        }
        match (result, refused) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }
}

impl PendingPublish {
    /// The journal's fsync alone, when nothing else is left to wait for (no full `block` queue,
    /// no refusal): a batch collects these and keeps publishing.
    pub(crate) fn into_durable_only(mut self) -> std::result::Result<Arc<DurableWait>, PendingPublish> {
        if self.waiting.is_empty() && self.refused.is_none() {
            if let Some(w) = self.durable.take() {
                return Ok(w);
            }
        }
        Err(self)
    }
}

impl Drop for PendingPublish {
    /// A pending publish dropped without `wait()` (its caller went away) never reaches the
    /// subscriptions it was waiting for: count it there as `dropped_canceled`, so nothing is
    /// dropped silently.
    fn drop(&mut self) {
        for sub in self.waiting.drain(..) {
            sub.queue().count_canceled();
        }
    }
}

/// The rest of a batch behind an event that had to wait, and the journal's fsync of the events
/// already published (a batch waits for its durability once, at the end, not event by event).
pub struct PendingBatch {
    current: Option<PendingPublish>,
    rest: std::vec::IntoIter<Arc<Event>>,
    ctx: Option<Context>,
    refused: Option<Error>,
    /// Outstanding durability waits, oldest first.
    durable: std::collections::VecDeque<Arc<DurableWait>>,
    /// Runs once when the batch finishes, with whether all of it was published (a replay
    /// releases its dead letters, or keeps them).
    then: Option<Box<dyn FnOnce(&Bus, bool) + Send + Sync>>,
}

impl PendingBatch {
    pub(crate) fn new(
        current: Option<PendingPublish>,
        rest: std::vec::IntoIter<Arc<Event>>,
        ctx: Option<&Context>,
        refused: Option<Error>,
        durable: std::collections::VecDeque<Arc<DurableWait>>,
    ) -> Self {
        PendingBatch { current, rest, ctx: ctx.cloned(), refused, durable, then: None }
    }

    fn finish(&mut self, bus: &Bus, r: Result<()>) -> Result<()> {
        if let Some(f) = self.then.take() {
            f(bus, r.is_ok());
        }
        r
    }

    fn refuse(&mut self, e: Error) -> Result<()> {
        if e.kind() == ErrorKind::QueueFull {
            self.refused.get_or_insert(e);
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Publishes the rest of the batch until an event has to wait for a full `block` queue
    /// (it becomes `current`). Events that only wait for the journal's fsync do not stop it.
    fn publish_rest(&mut self, bus: &Bus) -> Result<()> {
        while self.current.is_none() {
            let Some(ev) = self.rest.next() else { return Ok(()) };
            match bus.publish_event(ev, self.ctx.as_ref()) {
                Ok(Delivery::Done { .. }) => {}
                Ok(Delivery::Pending(p)) => match p.into_durable_only() {
                    Ok(w) => self.durable.push_back(w),
                    Err(p) => self.current = Some(p),
                },
                Err(e) => self.refuse(e)?,
            }
        }
        Ok(())
    }

    /// Non-blocking progress through the batch, in order; see `PendingPublish::try_progress`.
    pub fn try_progress(&mut self, bus: &Bus) -> Result<bool> {
        match self.progress(bus) {
            Ok(false) => Ok(false),
            r => self.finish(bus, r.map(|_| ())).map(|_| true),
        }
    }

    fn progress(&mut self, bus: &Bus) -> Result<bool> {
        loop {
            if let Some(cur) = self.current.as_mut() {
                match cur.try_progress() {
                    Ok(false) => return Ok(false),
                    Ok(true) => self.current = None,
                    Err(e) => {
                        self.current = None;
                        self.refuse(e)?;
                    }
                }
            }
            self.publish_rest(bus)?;
            if self.current.is_none() {
                break;
            }
        }
        while let Some(w) = self.durable.front() {
            match w.result() {
                None => return Ok(false),
                Some(r) => {
                    self.durable.pop_front();
                    r?;
                }
            }
        }
        self.refused.take().map_or(Ok(true), Err)
    }

    pub fn on_progress(&self, f: Arc<dyn Fn() + Send + Sync>) {
        match (&self.current, self.durable.front()) {
            (Some(p), _) => p.on_progress(f),
            (None, Some(w)) => w.on_done(f),
            (None, None) => f(),
        }
    }

    pub fn wait(mut self, bus: &Bus) -> Result<()> {
        let r = self.wait_all(bus);
        self.finish(bus, r)
    }

    fn wait_all(&mut self, bus: &Bus) -> Result<()> {
        loop {
            if let Some(p) = self.current.take() {
                if let Err(e) = p.wait() {
                    self.refuse(e)?;
                }
            }
            self.publish_rest(bus)?;
            if self.current.is_none() {
                break;
            }
        }
        for w in std::mem::take(&mut self.durable) {
            w.wait()?;
        }
        self.refused.take().map_or(Ok(()), Err)
    }
}

/// Per-bus random id prefix, so ids from two processes or two buses do not collide.
fn random_prefix() -> String {
    let h = RandomState::new().hash_one((std::process::id(), unix_now_ms()));
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

impl Bus {
    pub fn new(defaults: BusOptions) -> Result<Bus> {
        if defaults.capacity == 0 || defaults.capacity > crate::overflow::MAX_CAPACITY {
            return Err(Error::invalid(format!(
                "capacity must be from 1 to {}, got {}",
                crate::overflow::MAX_CAPACITY,
                defaults.capacity
            )));
        }
        if defaults.overflow == Overflow::Spill && defaults.journal.is_none() {
            return Err(Overflow::spill_needs_journal());
        }
        if defaults.source.is_empty() || defaults.source.len() > MAX_ATTR_BYTES {
            return Err(Error::invalid("source must be a non-empty string of at most 1024 bytes"));
        }
        let origin = Arc::new(Origin { id_prefix: random_prefix().into(), source: defaults.source.clone().into() });
        let durable = defaults.journal.as_ref().map(Durable::open).transpose()?.map(Arc::new);
        let delivery = Arc::new(DeliveryEnv::default());
        if let Some(store) = &durable {
            // Settle decisions release durable events in the journal.
            let _ = delivery.hook.set(Arc::new(crate::durable::JournalRelease));
            // Dead letters not replayed before the last shutdown or crash.
            for r in store.recover_dead_letters()? {
                let mut evicted = Vec::new();
                for (ev, seq) in r.letters {
                    evicted.extend(Some(delivery.dead_letters.retain(&r.topic, ev, seq)).filter(|s| *s > 0));
                }
                store.release_dead_letters(&r.topic, &evicted)?;
            }
        }
        Ok(Bus {
            router: Router::default(),
            durable,
            defaults,
            origin,
            seq: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            published: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            retired: std::sync::Mutex::new(Totals::default()),
            delivery,
            recorder: Arc::new(Recorder::default()),
            audit: crate::audit::AuditGate::default(),
        })
    }

    pub fn defaults(&self) -> &BusOptions {
        &self.defaults
    }
    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }
    /// Where every layer records lifecycle events for observers (`docs/observers.md`).
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Where handlers running off the JS thread hold their verdicts while an audit observer
    /// writes their records (see audit.rs).
    pub fn audit_gate(&self) -> &crate::audit::AuditGate {
        &self.audit
    }

    pub fn subscribe(&self, pattern: &str, opts: SubscribeOptions) -> Result<Arc<Subscription>> {
        self.check_open()?;
        let pattern = Pattern::parse(pattern)?;
        let mut opts = opts;
        opts.delivery.validate()?;
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let journal = self.attach_journal(id, &mut opts)?;
        let claimed = journal.as_ref().filter(|j| j.is_durable()).map(|j| (j.store().clone(), j.name().to_string()));
        let sub = match Subscription::new(id, pattern, opts, self.origin.clone(), self.delivery.clone(), journal) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                if let Some((store, name)) = claimed {
                    store.release_name(&name);
                }
                return Err(e);
            }
        };
        // A durable subscription resuming after a restart gets its backlog queued before it
        // is routed, so its consumer finds events at once.
        sub.queue().set_recorder(self.recorder.clone(), id);
        sub.refill();
        self.router.add(sub.clone());
        Ok(sub)
    }

    /// The journal link of a new subscription: durable (at-least-once with a name) or `spill`.
    fn attach_journal(&self, id: u64, opts: &mut SubscribeOptions) -> Result<Option<SubJournal>> {
        let Some(store) = &self.durable else {
            if opts.overflow == Overflow::Spill {
                return Err(Overflow::spill_needs_journal());
            }
            return Ok(None);
        };
        if opts.delivery.guarantee == Guarantee::AtLeastOnce {
            let name = opts.name.clone().ok_or_else(|| {
                Error::invalid("an at-least-once subscription on a bus with a journal needs a name (its journal consumer)")
            })?;
            if name.is_empty() || name.len() > MAX_ATTR_BYTES || name.starts_with('~') {
                return Err(Error::invalid(format!(
                    "durable subscription name must be 1 to {MAX_ATTR_BYTES} bytes and not start with '~'"
                )));
            }
            // A durable queue never blocks or drops: what does not fit stays in the journal.
            opts.overflow = Overflow::Spill;
            store.claim_name(&name)?;
            return SubJournal::attach(store.clone(), name.clone(), true).map(Some).inspect_err(|_| store.release_name(&name));
        }
        if opts.overflow == Overflow::Spill {
            return SubJournal::attach(store.clone(), format!("{SPILL_PREFIX}{id}"), false).map(Some);
        }
        Ok(None)
    }

    pub fn durable(&self) -> Option<&Arc<Durable>> {
        self.durable.as_ref()
    }

    /// Default options for a subscription on this bus.
    pub fn subscribe_options(&self) -> SubscribeOptions {
        SubscribeOptions {
            capacity: self.defaults.capacity,
            overflow: self.defaults.overflow,
            filter: None,
            name: None,
            delivery: Default::default(),
        }
    }

    /// Removes the subscription; what is still queued is counted as dropped (closed).
    pub fn unsubscribe(&self, id: u64) -> bool {
        match self.router.remove(id) {
            Some(sub) => {
                sub.close();
                self.retire(&sub);
                true
            }
            None => false,
        }
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("bus"));
        }
        Ok(())
    }

    /// Validates and stamps an event. Fails if the publisher's Context already ended.
    pub fn make_event(&self, init: EventInit, ctx: Option<&Context>) -> Result<Arc<Event>> {
        validate_topic(&init.topic)?;
        if init.data.len() > MAX_DATA_BYTES {
            return Err(Error::invalid(format!("event data is {} bytes; the limit is {MAX_DATA_BYTES}", init.data.len())));
        }
        for (name, v) in [("id", &init.id), ("subject", &init.subject), ("traceparent", &init.traceparent)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > MAX_ATTR_BYTES {
                    return Err(Error::invalid(format!("{name} must be a non-empty string of at most {MAX_ATTR_BYTES} bytes")));
                }
            }
        }
        if let Some(e) = ctx.and_then(Context::error) {
            return Err(e);
        }
        let id = match init.id {
            Some(s) => EventId::Given(s.into_boxed_str()),
            None => EventId::Seq(self.seq.fetch_add(1, Ordering::Relaxed)),
        };
        Ok(Arc::new(Event {
            id,
            topic: init.topic.into(),
            topic_id: None,
            time_ms: unix_now_ms(),
            subject: init.subject.map(String::into_boxed_str),
            traceparent: init.traceparent.map(String::into_boxed_str),
            deadline: ctx.and_then(Context::deadline),
            ctx: ctx.filter(|c| c.can_end()).cloned(),
            encoding: init.encoding.unwrap_or(Encoding::Json),
            data: init.data.into_boxed_slice(),
            journal_seq: Default::default(),
        }))
    }

    /// Interns a topic (validated once) for the fast publish path; `None` when the router's
    /// table is full, in which case publish by name.
    pub fn intern_topic(&self, topic: &str) -> Result<Option<u32>> {
        self.router.intern(topic)
    }

    /// `try_publish_event(make_interned(…))` with one read of the route snapshot for both the
    /// topic's name and its subscriptions: the per-event path of `tryPublish` from JS.
    pub fn try_publish_interned(
        &self,
        topic: u32,
        data: Vec<u8>,
        encoding: Encoding,
        ctx: Option<&Context>,
    ) -> Result<bool> {
        if self.durable.is_some() {
            return self.try_publish_event(self.make_interned(topic, data, encoding, ctx)?);
        }
        self.check_open()?;
        self.router
            .with_interned_route(topic, |name, subs| {
                let ev = self.event_on(name.clone(), topic, data, encoding, ctx, unix_now_ms())?;
                Ok(self.route_to(&ev, subs))
            })
            .unwrap_or_else(|| Err(unknown_topic(topic)))
    }

    /// Stamps an event on an interned topic: no validation, no topic copy.
    pub fn make_interned(&self, topic: u32, data: Vec<u8>, encoding: Encoding, ctx: Option<&Context>) -> Result<Arc<Event>> {
        let name = self.router.topic(topic).ok_or_else(|| unknown_topic(topic))?;
        self.event_on(name, topic, data, encoding, ctx, unix_now_ms())
    }

    /// An event on interned topic `topic` whose name the caller already looked up.
    fn event_on(
        &self,
        name: Arc<str>,
        topic: u32,
        data: Vec<u8>,
        encoding: Encoding,
        ctx: Option<&Context>,
        time_ms: u64,
    ) -> Result<Arc<Event>> {
        if data.len() > MAX_DATA_BYTES {
            return Err(Error::invalid(format!("event data is {} bytes; the limit is {MAX_DATA_BYTES}", data.len())));
        }
        if let Some(e) = ctx.and_then(Context::error) {
            return Err(e);
        }
        Ok(Arc::new(Event {
            id: EventId::Seq(self.seq.fetch_add(1, Ordering::Relaxed)),
            topic: name,
            topic_id: Some(topic),
            time_ms,
            subject: None,
            traceparent: None,
            deadline: ctx.and_then(Context::deadline),
            ctx: ctx.filter(|c| c.can_end()).cloned(),
            encoding,
            data: data.into_boxed_slice(),
            journal_seq: Default::default(),
        }))
    }

    /// A batch on one interned topic (a JSON array or packed byte arrays): one clock read for
    /// the batch.
    pub fn make_batch_interned(&self, topic: u32, data: BatchData<'_>, ctx: Option<&Context>) -> Result<Vec<Arc<Event>>> {
        let (parts, encoding) = data.parts()?;
        let bytes = data.bytes();
        let now = unix_now_ms();
        let name = self.router.topic(topic).ok_or_else(|| unknown_topic(topic))?;
        parts
            .into_iter()
            .map(|r| self.event_on(name.clone(), topic, bytes[r].to_vec(), encoding, ctx, now))
            .collect()
    }

    /// Routes an event without ever waiting. Returns whether every matching subscription took
    /// it. A full `block` subscription counts it as `dropped_full`.
    pub fn try_publish_event(&self, ev: Arc<Event>) -> Result<bool> {
        self.check_open()?;
        if self.durable.is_some() {
            return self.try_publish_journaled(ev);
        }
        Ok(self.route_now(ev))
    }

    /// `try_publish_event` without the open check: dead letters still flow while a closing
    /// bus drains its handlers.
    fn route_now(&self, ev: Arc<Event>) -> bool {
        if self.durable.is_some() {
            // Dead letters reach durable and spilling subscriptions through the journal too.
            return self.try_publish_journaled(ev).unwrap_or(false);
        }
        let mut accepted = true;
        let mut matched = false;
        self.router.for_each_route(&ev, |sub| {
            matched = true;
            accepted &= Self::offer_now(sub, &ev);
        });
        self.count_published(&ev, matched);
        accepted
    }

    /// `route_now` for events whose subscriptions the caller already resolved.
    fn route_to(&self, ev: &Arc<Event>, subs: &[Arc<Subscription>]) -> bool {
        let mut accepted = true;
        for sub in subs {
            accepted &= Self::offer_now(sub, ev);
        }
        self.count_published(ev, !subs.is_empty());
        accepted
    }

    /// Offers `ev` to one subscription without waiting; `false` if it was not taken.
    #[inline]
    fn offer_now(sub: &Arc<Subscription>, ev: &Arc<Event>) -> bool {
        match sub.offer(ev) {
            None | Some((Offer::Enqueued | Offer::EnqueuedDisplacing, _)) => true,
            Some((Offer::WouldBlock, _)) => {
                sub.queue().count_would_block_event(ev);
                false
            }
            Some(_) => false,
        }
    }

    /// Installs the hook a durable layer uses to learn each settle decision (once per bus).
    pub fn set_settle_hook(&self, hook: Arc<dyn SettleHook>) -> Result<()> {
        self.delivery.hook.set(hook).map_err(|_| Error::invalid("this bus already has a settle hook"))
    }

    /// Publishes the dead-letter envelope of `ev` on `topic` without waiting (a full queue
    /// there counts its own drop) and keeps the original for `replay`. `false` if the envelope
    /// could not be made (the original is then counted `discarded` by the caller).
    /// `counted` runs once the envelope exists and before it is routed, so a consumer of the
    /// dead-letter topic never sees an envelope the subscription's counters do not include yet.
    pub(crate) fn dead_letter(
        &self,
        sub: &Subscription,
        topic: &str,
        ev: &Arc<Event>,
        reason: &str,
        attempts: u32,
        counted: impl FnOnce(),
    ) -> bool {
        let init = EventInit {
            topic: topic.to_owned(),
            traceparent: ev.traceparent.as_deref().map(str::to_owned),
            encoding: Some(Encoding::Json),
            data: dead_letter::envelope(sub, ev, reason, attempts),
            ..Default::default()
        };
        let Ok(envelope) = self.make_event(init, None) else { return false };
        self.retain_dead_letter(topic, ev);
        counted();
        self.route_now(envelope);
        true
    }

    /// Publishes again, in order, up to `limit` dead letters kept for `topic` whose original
    /// event passes `filter`; they leave the retention. Returns how many, and the rest of the
    /// batch if a `block` queue made it wait (finish it like `publish_batch`).
    pub fn replay(
        &self,
        topic: &str,
        filter: Option<&FilterChain>,
        limit: usize,
        ctx: Option<&Context>,
    ) -> Result<(usize, Option<PendingBatch>)> {
        self.check_open()?;
        validate_topic(topic)?;
        if let Some(e) = ctx.and_then(Context::error) {
            return Err(e);
        }
        let taken = self.delivery.dead_letters.take(topic, filter, limit, ctx);
        let n = taken.len();
        match self.publish_batch(taken.iter().map(|t| t.event.clone()).collect(), ctx) {
            Ok(None) => {
                self.finish_replay(topic, taken, true);
                Ok((n, None))
            }
            Ok(Some(mut pending)) => {
                let topic = topic.to_owned();
                pending.then = Some(Box::new(move |bus, ok| bus.finish_replay(&topic, taken, ok)));
                Ok((n, Some(pending)))
            }
            Err(e) => {
                self.finish_replay(topic, taken, false);
                Err(e)
            }
        }
    }

    /// A replay's dead letters leave the journal once all of them were published (routed and,
    /// for durable subscriptions, appended: a crash before this release replays them again). A
    /// replay that failed keeps them all for another one (some may have been published).
    fn finish_replay(&self, topic: &str, taken: Vec<dead_letter::Taken>, published: bool) {
        if published {
            let seqs: Vec<_> = taken.iter().map(|t| t.seq).filter(|s| *s > 0).collect();
            self.release_dead_letters(topic, &seqs);
        } else {
            self.delivery.dead_letters.put_back(topic, taken);
        }
    }

    /// Keeps a dead letter for `replay`, in the journal too when the bus has one.
    fn retain_dead_letter(&self, topic: &str, ev: &Arc<Event>) {
        let seq = match &self.durable {
            Some(store) => store.persist_dead_letter(&self.origin, topic, ev).unwrap_or_else(|_| {
                self.delivery.dead_letters.count_journal_error();
                0
            }),
            None => 0,
        };
        let evicted = self.delivery.dead_letters.retain(topic, ev.clone(), seq);
        if evicted > 0 {
            self.release_dead_letters(topic, &[evicted]);
        }
    }

    fn release_dead_letters(&self, topic: &str, seqs: &[u64]) {
        if let Some(store) = &self.durable {
            if store.release_dead_letters(topic, seqs).is_err() {
                self.delivery.dead_letters.count_journal_error();
            }
        }
    }

    pub fn try_publish(&self, init: EventInit, ctx: Option<&Context>) -> Result<bool> {
        self.check_open()?;
        let ev = self.make_event(init, ctx)?;
        self.try_publish_event(ev)
    }

    /// Routes an event; `block` subscriptions that are full come back as a pending wait.
    /// An `error` subscription that is full makes the publish fail with `ERR_QUEUE_FULL`
    /// (the other subscriptions still get the event).
    pub fn publish_event(&self, ev: Arc<Event>, ctx: Option<&Context>) -> Result<Delivery> {
        self.check_open()?;
        if self.durable.is_some() {
            return self.publish_journaled(ev, ctx);
        }
        let mut accepted = true;
        let mut matched = false;
        let mut waiting = Vec::new();
        let mut refused = None;
        self.router.for_each_route(&ev, |sub| {
            matched = true;
            match sub.offer(&ev) {
                None | Some((Offer::Enqueued | Offer::EnqueuedDisplacing, _)) => {}
                Some((Offer::WouldBlock, _)) => waiting.push(sub.clone()),
                Some((Offer::Full, _)) => {
                    accepted = false;
                    refused.get_or_insert_with(|| {
                        Error::new(
                            ErrorKind::QueueFull,
                            format!("subscription '{}' is full ({} events)", sub.pattern().as_str(), sub.queue().capacity()),
                        )
                    });
                }
                Some(_) => accepted = false,
            }
        });
        self.count_published(&ev, matched);
        if !waiting.is_empty() {
            return Ok(Delivery::Pending(PendingPublish { ev, durable: None, waiting, ctx: ctx.cloned(), refused }));
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(Delivery::Done { accepted }),
        }
    }

    pub fn publish(&self, init: EventInit, ctx: Option<&Context>) -> Result<Delivery> {
        self.check_open()?;
        let ev = self.make_event(init, ctx)?;
        self.publish_event(ev, ctx)
    }

    /// Builds the events of a batch from one buffer: a JSON array of data (one `JSON.stringify`
    /// on the JS side for the whole batch) or packed byte arrays. `topics` holds one topic for
    /// all, or one per event.
    pub fn make_batch(&self, topics: &[String], data: BatchData<'_>, ctx: Option<&Context>) -> Result<Vec<Arc<Event>>> {
        let (parts, encoding) = data.parts()?;
        let bytes = data.bytes();
        if topics.len() != 1 && topics.len() != parts.len() {
            return Err(Error::invalid(format!("batch has {} events but {} topics", parts.len(), topics.len())));
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let topic = if topics.len() == 1 { &topics[0] } else { &topics[i] };
                let init = EventInit { topic: topic.clone(), data: bytes[r].to_vec(), encoding: Some(encoding), ..Default::default() };
                self.make_event(init, ctx)
            })
            .collect()
    }

    /// Gives each event of a freshly made batch its W3C traceparent (one per event, `""` for
    /// none), as a tracing observer injected them: a batch is traced per event, like events
    /// published one by one. Call before publishing, while the batch is not shared.
    pub fn trace_batch(events: &mut [Arc<Event>], traceparents: &[String]) -> Result<()> {
        if traceparents.len() != events.len() {
            return Err(Error::invalid(format!("batch has {} events but {} traceparents", events.len(), traceparents.len())));
        }
        for (ev, tp) in events.iter_mut().zip(traceparents) {
            if tp.is_empty() {
                continue;
            }
            if tp.len() > MAX_ATTR_BYTES {
                return Err(Error::invalid(format!("traceparent must be a non-empty string of at most {MAX_ATTR_BYTES} bytes")));
            }
            let ev = Arc::get_mut(ev).ok_or_else(|| Error::invalid("trace_batch needs a batch nobody else holds yet"))?;
            ev.traceparent = Some(tp.as_str().into());
        }
        Ok(())
    }

    /// Publishes events in order without waiting; returns how many every subscription took.
    pub fn try_publish_batch(&self, events: Vec<Arc<Event>>) -> Result<u32> {
        let mut accepted = 0;
        if self.durable.is_some() {
            for ev in events {
                accepted += self.try_publish_event(ev)? as u32;
            }
            return Ok(accepted);
        }
        self.check_open()?;
        // Consecutive events on one interned topic share one route snapshot: the whole run is
        // routed against the subscriptions that existed when it started.
        let mut route: Option<(u32, Arc<[Arc<Subscription>]>)> = None;
        for ev in events {
            if let Some(id) = ev.topic_id {
                if route.as_ref().is_none_or(|(cached, _)| *cached != id) {
                    route = self.router.interned_route(id).map(|(_, subs)| (id, subs));
                }
                if let Some((_, subs)) = &route {
                    accepted += self.route_to(&ev, subs) as u32;
                    continue;
                }
            }
            accepted += self.route_now(ev) as u32;
        }
        Ok(accepted)
    }

    /// Publishes events in order. If one has to wait, the rest wait behind it (order is kept):
    /// the returned batch finishes with `wait()`.
    /// With a journal, the events' durability is waited for once, for the whole batch.
    pub fn publish_batch(&self, events: Vec<Arc<Event>>, ctx: Option<&Context>) -> Result<Option<PendingBatch>> {
        self.check_open()?;
        let mut batch = if self.durable.is_some() {
            self.publish_batch_journaled(events, ctx)?
        } else {
            PendingBatch::new(None, events.into_iter(), ctx, None, Default::default())
        };
        batch.publish_rest(self)?;
        if batch.current.is_none() && batch.durable.is_empty() {
            return batch.refused.map_or(Ok(None), Err);
        }
        Ok(Some(batch))
    }

    pub(crate) fn count_published(&self, ev: &Arc<Event>, matched: bool) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if !matched {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        self.recorder.note_for(Kind::Published, Some(ev), 1, |r| r.reason(if matched { "" } else { reason::UNROUTED }));
    }

    /// Stops accepting publishes and subscriptions. Queued events stay for consumers to drain;
    /// `shutdown()` then releases what is left.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Flushes, fsyncs and closes the journal (after `shutdown`). Returns how many events
    /// durable subscriptions left unacknowledged: they stay persisted for the next process.
    pub fn close_journal(&self) -> Result<u64> {
        self.close();
        self.durable.as_ref().map_or(Ok(0), |d| d.close())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes every subscription; whatever is still queued is counted as dropped (closed).
    pub fn shutdown(&self) -> u64 {
        self.close();
        let mut left = 0;
        for sub in self.router.all() {
            if let Some(s) = self.router.remove(sub.id()) {
                left += s.close();
                self.retire(&s);
            }
        }
        left
    }

    /// Folds a removed subscription's counters into the bus totals. Its consumer may still hand
    /// back or fail events it already took; those late reports land on the subscription itself,
    /// which is why removal happens after `close()` has counted what was queued.
    fn retire(&self, sub: &Subscription) {
        self.retired.lock().unwrap().add(&sub.stats());
    }

    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        self.router.all()
    }

    pub fn stats(&self) -> BusStats {
        let subscriptions: Vec<SubscriptionStats> = self.router.all().iter().map(|s| s.stats()).collect();
        let mut totals = self.retired.lock().unwrap().clone();
        for s in &subscriptions {
            totals.add(s);
        }
        BusStats {
            closed: self.is_closed(),
            published: self.published.load(Ordering::Relaxed),
            unrouted: self.unrouted.load(Ordering::Relaxed),
            totals,
            dead_letters: self.delivery.dead_letters.stats(),
            subscriptions,
            journal: self.durable.as_ref().map(|d| d.stats()),
        }
    }
}

fn unknown_topic(id: u32) -> Error {
    Error::invalid(format!("unknown topic id {id}"))
}
