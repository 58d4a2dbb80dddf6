//! The publish path of a bus with a journal. Journal-backed subscriptions (durable, `spill`)
//! are handled under the store's publish lock: the event is appended once for every durable
//! subscription it reaches, then offered to each, so journal order is the order they see. The
//! others are offered exactly as without a journal. A batch appends each run of events bound
//! for the same durable subscriptions with one journal write and waits for one fsync.

use super::record::to_record;
use crate::bus::{Bus, Delivery, PendingBatch, PendingPublish};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::overflow::Overflow;
use crate::queue::Offer;
use crate::subscription::Subscription;
use sluice_journal::{Seq, To};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The outcome of `Bus::publish_event_ticketed`.
pub enum Published {
    /// As from `publish_event`.
    Delivery(Delivery),
    /// Routed; only the fsync of this journal record is outstanding (see `Bus::watch_durable`).
    Durable(Seq),
}

/// Where one event goes on a bus with a journal.
struct Routes {
    journaled: Vec<Arc<Subscription>>,
    others: Vec<Arc<Subscription>>,
}

impl Routes {
    /// The journal consumers the event is appended for (durable subscriptions it reaches).
    fn durable_names(&self) -> Vec<&str> {
        self.durable().map(|s| s.journal().expect("journaled").name()).collect()
    }

    fn durable(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.journaled.iter().filter(|s| s.journal().is_some_and(|j| j.is_durable()))
    }

    /// Whether both events are appended for the same durable subscriptions (compared by
    /// identity: no list of names built per event of a batch).
    fn same_durable(&self, other: &Routes) -> bool {
        self.durable().map(Arc::as_ptr).eq(other.durable().map(Arc::as_ptr))
    }
}

struct Routed {
    matched: bool,
    accepted: bool,
    waiting: Vec<Arc<Subscription>>,
    refused: Option<Error>,
    /// The journal sequence numbers this publish wrote (`first..=last`; 0, 0: none).
    first: Seq,
    last: Seq,
}

impl Routed {
    fn wrote(&mut self, first: Seq, last: Seq) {
        if self.last == 0 {
            self.first = first;
        }
        self.last = self.last.max(last);
    }
}

impl Bus {
    fn routes(&self, ev: &Arc<Event>) -> Routes {
        let mut r = Routes { journaled: Vec::new(), others: Vec::new() };
        self.router.for_each_route(ev, |sub| {
            if sub.journal().is_some() {
                if sub.accepts(ev) {
                    r.journaled.push(sub.clone());
                }
            } else {
                r.others.push(sub.clone());
            }
        });
        r
    }

    /// Offers an event to its routes; a durable append for it, if any, is done (`journal_seq`).
    /// The caller holds the publish lock when `routes.journaled` is not empty.
    fn offer_routed(&self, ev: &Arc<Event>, routes: &Routes, can_wait: bool, r: &mut Routed) {
        r.matched = !routes.journaled.is_empty() || !routes.others.is_empty();
        if !routes.journaled.is_empty() {
            let rec = to_record(self.origin(), ev);
            for sub in &routes.journaled {
                match sub.journal().expect("journaled").offer(sub.queue(), ev, &rec) {
                    Ok(Some(seq)) => r.wrote(seq, seq),
                    Ok(None) => {}
                    Err(e) => {
                        r.accepted = false;
                        r.refused.get_or_insert(e);
                    }
                }
            }
        }
        for sub in &routes.others {
            match sub.offer(ev) {
                None | Some((Offer::Enqueued | Offer::EnqueuedDisplacing, _)) => {}
                Some((Offer::WouldBlock, _)) if can_wait => r.waiting.push(sub.clone()),
                Some((Offer::WouldBlock, _)) => {
                    sub.queue().count_would_block();
                    r.accepted = false;
                }
                Some((Offer::Full, _)) => {
                    r.accepted = false;
                    if can_wait {
                        r.refused.get_or_insert_with(|| {
                            Error::new(
                                ErrorKind::QueueFull,
                                format!("subscription '{}' is full ({} events)", sub.pattern().as_str(), sub.queue().capacity()),
                            )
                        });
                    }
                }
                Some(_) => r.accepted = false,
            }
        }
        self.count_published(ev, r.matched);
    }

    fn route_journaled(&self, ev: &Arc<Event>, can_wait: bool) -> Result<Routed> {
        let store = self.durable.as_ref().expect("journaled publish needs a journal");
        let routes = self.routes(ev);
        let mut r = Routed { matched: false, accepted: true, waiting: Vec::new(), refused: None, first: 0, last: 0 };
        let _order = (!routes.journaled.is_empty()).then(|| store.publish_lock.lock().unwrap());
        let names = routes.durable_names();
        if !names.is_empty() {
            // Persisted before anyone sees it; a failure here reaches the publisher alone.
            let seq = store.journal().append_to(&to_record(self.origin(), ev), To::Only(&names))?;
            ev.journal_seq.store(seq, Ordering::Relaxed);
            r.wrote(seq, seq);
        }
        self.offer_routed(ev, &routes, can_wait, &mut r);
        Ok(r)
    }

    /// `publish` with a journal: pending until the journal has fsynced what it wrote for this
    /// event (per the fsync policy) and every `block` subscription took it.
    pub(crate) fn publish_journaled(&self, ev: Arc<Event>, ctx: Option<&Context>) -> Result<Delivery> {
        let r = self.route_journaled(&ev, true)?;
        self.pending_journaled(ev, ctx, r)
    }

    /// Like `publish_event`, but when all that is left is the fsync of the one journal record
    /// this publish wrote, returns its sequence number instead of a wait of its own: a publisher
    /// with many publishes in flight watches them together with `watch_durable` (one wake-up
    /// per group fsync, not one per publish).
    pub fn publish_event_ticketed(&self, ev: Arc<Event>, ctx: Option<&Context>) -> Result<Published> {
        self.check_open()?;
        if !self.durable.as_ref().is_some_and(|d| d.fsync() != super::Fsync::Never) {
            return self.publish_event(ev, ctx).map(Published::Delivery);
        }
        let r = self.route_journaled(&ev, true)?;
        if r.waiting.is_empty() && r.refused.is_none() && r.last > 0 && r.first == r.last {
            return Ok(Published::Durable(r.last));
        }
        self.pending_journaled(ev, ctx, r).map(Published::Delivery)
    }

    /// A wait for the fsync of journal records `first..=last` (the tickets of
    /// `publish_event_ticketed`); `None` on a bus without a journal or with fsync `never`.
    pub fn watch_durable(&self, first: Seq, last: Seq) -> Option<Arc<crate::durable::notify::DurableWait>> {
        self.durable.as_ref().and_then(|d| d.wait_for(first, last))
    }

    /// For a publisher that does not wait for the fsync of journal record `seq` (a handler's
    /// emits): a write that fails later is counted in `stats().journal.lostAfterReturn`.
    pub fn count_if_lost(&self, seq: Seq) {
        if let Some(d) = &self.durable {
            d.count_if_lost(seq);
        }
    }

    fn pending_journaled(&self, ev: Arc<Event>, ctx: Option<&Context>, r: Routed) -> Result<Delivery> {
        let durable = match r.last {
            0 => None,
            last => self.durable.as_ref().and_then(|d| d.wait_for(r.first, last)),
        };
        if !r.waiting.is_empty() || durable.is_some() {
            return Ok(Delivery::Pending(PendingPublish {
                ev,
                durable,
                waiting: r.waiting,
                ctx: ctx.cloned(),
                refused: r.refused,
            }));
        }
        match r.refused {
            Some(e) => Err(e),
            None => Ok(Delivery::Done { accepted: r.accepted }),
        }
    }

    /// `publishBatch` with a journal. Unless a `block` subscription outside the journal could
    /// make an event wait (then the batch goes event by event, still with one fsync wait at the
    /// end), the whole batch is routed under one hold of the publish lock, each run of events
    /// bound for the same durable subscriptions is appended with one journal write, and the
    /// publisher waits once for the fsync of everything the batch wrote. A journal error stops
    /// the batch there: the events before it are published, the rest are not.
    pub(crate) fn publish_batch_journaled(&self, events: Vec<Arc<Event>>, ctx: Option<&Context>) -> Result<PendingBatch> {
        let store = self.durable.clone().expect("journaled publish needs a journal");
        let routes: Vec<Routes> = events.iter().map(|ev| self.routes(ev)).collect();
        if routes.iter().any(|r| r.others.iter().any(|s| s.queue().policy() == Overflow::Block)) {
            return Ok(PendingBatch::new(None, events.into_iter(), ctx, None, Default::default()));
        }
        let mut r = Routed { matched: false, accepted: true, waiting: Vec::new(), refused: None, first: 0, last: 0 };
        let _order = routes.iter().any(|r| !r.journaled.is_empty()).then(|| store.publish_lock.lock().unwrap());
        let mut i = 0;
        while i < events.len() {
            let names = routes[i].durable_names();
            let mut j = i + 1;
            if !names.is_empty() {
                while j < events.len() && routes[j].same_durable(&routes[i]) {
                    j += 1;
                }
                let records: Vec<_> = events[i..j].iter().map(|ev| to_record(self.origin(), ev)).collect();
                let (first, last) = store.journal().append_batch(&records, To::Only(&names))?;
                for (k, ev) in events[i..j].iter().enumerate() {
                    ev.journal_seq.store(first + k as u64, Ordering::Relaxed);
                }
                r.wrote(first, last);
            }
            for k in i..j {
                self.offer_routed(&events[k], &routes[k], true, &mut r);
            }
            i = j;
        }
        let mut durable = std::collections::VecDeque::new();
        if r.last > 0 {
            durable.extend(store.wait_for(r.first, r.last));
        }
        Ok(PendingBatch::new(None, Vec::new().into_iter(), ctx, r.refused, durable))
    }

    /// `tryPublish` with a journal: appends like `publish` but does not wait for the fsync. A
    /// write that fails after this returned is counted (`stats().journal.lostAfterReturn`).
    /// A spill write that fails at once is an error, as for `publish`.
    pub(crate) fn try_publish_journaled(&self, ev: Arc<Event>) -> Result<bool> {
        let r = self.route_journaled(&ev, false)?;
        if r.last > 0 {
            if let Some(d) = &self.durable {
                d.count_if_lost(r.last);
            }
        }
        match r.refused {
            Some(e) => Err(e),
            None => Ok(r.accepted),
        }
    }
}
