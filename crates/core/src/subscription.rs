//! A subscription: a pattern, an optional declarative filter chain, and its own bounded queue,
//! so one slow consumer never stalls another.

use crate::error::Result;
use crate::event::Event;
use crate::filter::FilterChain;
use crate::overflow::Overflow;
use crate::pattern::Pattern;
use crate::queue::{Offer, Queue, QueueStats};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

pub struct Subscription {
    id: u64,
    pattern: Pattern,
    name: Option<String>,
    filter: Option<FilterChain>,
    filtered: AtomicU64,
    queue: Queue,
    origin: Arc<Origin>,
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
}

impl Subscription {
    pub(crate) fn new(id: u64, pattern: Pattern, opts: SubscribeOptions, origin: Arc<Origin>) -> Result<Self> {
        Ok(Subscription {
            id,
            pattern,
            name: opts.name,
            filter: opts.filter.filter(|f| !f.is_empty()),
            filtered: AtomicU64::new(0),
            queue: Queue::new(opts.capacity, opts.overflow)?,
            origin,
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

    pub fn take(&self, max: usize, out: &mut Vec<Arc<Event>>) -> usize {
        self.queue.take(max, out)
    }

    /// Counts events a consumer-side filter (a JS predicate) turned away after delivery.
    pub fn count_filtered(&self, n: u64) {
        self.filtered.fetch_add(n, Ordering::Relaxed);
    }

    pub fn close(&self) -> u64 {
        self.queue.close()
    }

    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            id: self.id,
            pattern: self.pattern.as_str().to_owned(),
            name: self.name.clone(),
            overflow: self.queue.policy(),
            filtered: self.filtered.load(Ordering::Relaxed),
            queue: self.queue.stats(),
        }
    }
}
