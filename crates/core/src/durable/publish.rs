//! The publish path of a bus with a journal. Journal-backed subscriptions (durable, `spill`)
//! are handled under the store's publish lock: the event is appended once for every durable
//! subscription it reaches, then offered to each, so journal order is the order they see. The
//! others are offered exactly as without a journal.

use super::backlog::LazyRecord;
use crate::bus::{Bus, Delivery, PendingPublish};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::queue::Offer;
use crate::subscription::Subscription;
use sluice_journal::To;
use std::sync::atomic::Ordering;
use std::sync::Arc;

struct Routed {
    matched: bool,
    accepted: bool,
    waiting: Vec<Arc<Subscription>>,
    refused: Option<Error>,
    /// The highest journal sequence number this publish wrote (0: none).
    wrote: u64,
}

impl Bus {
    fn route_journaled(&self, ev: &Arc<Event>, can_wait: bool) -> Result<Routed> {
        let store = self.durable.as_ref().expect("journaled publish needs a journal");
        let mut journaled = Vec::new();
        let mut others = Vec::new();
        self.router.for_each_route(ev, |sub| {
            if sub.journal().is_some() {
                if sub.accepts(ev) {
                    journaled.push(sub.clone());
                }
            } else {
                others.push(sub.clone());
            }
        });
        let mut r = Routed {
            matched: !journaled.is_empty() || !others.is_empty(),
            accepted: true,
            waiting: Vec::new(),
            refused: None,
            wrote: 0,
        };
        if !journaled.is_empty() {
            let _order = store.publish_lock.lock().unwrap();
            let mut rec = LazyRecord::new(self.origin(), ev);
            let names: Vec<&str> =
                journaled.iter().filter_map(|s| s.journal().filter(|j| j.is_durable()).map(|j| j.name())).collect();
            if !names.is_empty() {
                // Persisted before anyone sees it; a failure here reaches the publisher alone.
                let seq = store.journal().append_to(rec.get(), To::Only(&names))?;
                ev.journal_seq.store(seq, Ordering::Relaxed);
                r.wrote = seq;
            }
            for sub in &journaled {
                match sub.journal().expect("journaled").offer(sub.queue(), ev, &mut rec) {
                    Ok(Some(seq)) => r.wrote = r.wrote.max(seq),
                    Ok(None) => {}
                    Err(e) => {
                        r.accepted = false;
                        r.refused.get_or_insert(e);
                    }
                }
            }
        }
        for sub in &others {
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
        Ok(r)
    }

    /// `publish` with a journal: pending until the journal has fsynced what it wrote for this
    /// event (per the fsync policy) and every `block` subscription took it.
    pub(crate) fn publish_journaled(&self, ev: Arc<Event>, ctx: Option<&Context>) -> Result<Delivery> {
        let r = self.route_journaled(&ev, true)?;
        let durable = match r.wrote {
            0 => None,
            seq => self.durable.as_ref().and_then(|d| d.wait_for(seq)),
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

    /// `tryPublish` with a journal: appends like `publish` but does not wait for the fsync. A
    /// write that fails after this returned is counted (`stats().journal.lostAfterReturn`).
    /// A spill write that fails at once is an error, as for `publish`.
    pub(crate) fn try_publish_journaled(&self, ev: Arc<Event>) -> Result<bool> {
        let r = self.route_journaled(&ev, false)?;
        if r.wrote > 0 {
            if let Some(d) = &self.durable {
                d.count_if_lost(r.wrote);
            }
        }
        match r.refused {
            Some(e) => Err(e),
            None => Ok(r.accepted),
        }
    }
}
