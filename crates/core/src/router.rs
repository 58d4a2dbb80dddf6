//! Topic → subscriptions. The publish path reads an immutable snapshot through `ArcSwap` without
//! taking a lock; subscribe/unsubscribe build a new snapshot (copy-on-write) under a writer mutex.
//! Changes are rare next to publishes, so paying O(subscriptions) per change buys a lock-free read.

//!
//! Topics a publisher uses often are interned: the snapshot then holds, per topic id, the list
//! of subscriptions it routes to, kept current by every change. Publishing to an interned topic
//! is an index into that list — no hashing, no pattern matching, no topic validation.

use crate::error::Result;
use crate::event::Event;
use crate::pattern::validate_topic;
use crate::subscription::Subscription;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Interned topics per router. Beyond this, topics route by name (per-entity topic names
/// must not grow the table without bound).
pub const MAX_INTERNED_TOPICS: usize = 4096;

#[derive(Clone)]
struct TopicRoute {
    name: Arc<str>,
    subs: Arc<[Arc<Subscription>]>,
}

#[derive(Default, Clone)]
struct Routes {
    exact: HashMap<Box<str>, Vec<Arc<Subscription>>>,
    wildcard: Vec<Arc<Subscription>>,
    count: usize,
    topics: Vec<TopicRoute>,
}

impl Routes {
    fn resolve(&self, topic: &str) -> Arc<[Arc<Subscription>]> {
        let exact = self.exact.get(topic).into_iter().flatten();
        let wild = self.wildcard.iter().filter(|s| s.pattern().matches(topic));
        exact.chain(wild).cloned().collect()
    }
}

#[derive(Default)]
pub struct Router {
    routes: ArcSwap<Routes>,
    /// Held by writers; maps interned topic names to ids.
    writer: Mutex<HashMap<Arc<str>, u32>>,
}

impl Router {
    pub fn add(&self, sub: Arc<Subscription>) {
        let _w = self.writer.lock().unwrap();
        let mut next = Routes::clone(&self.routes.load());
        for t in next.topics.iter_mut() {
            if sub.pattern().matches(&t.name) {
                t.subs = t.subs.iter().cloned().chain(std::iter::once(sub.clone())).collect();
            }
        }
        if sub.pattern().is_exact() {
            next.exact.entry(sub.pattern().as_str().into()).or_default().push(sub);
        } else {
            next.wildcard.push(sub);
        }
        next.count += 1;
        self.routes.store(Arc::new(next));
    }

    /// Validates `topic` once and returns its id, or `None` when the table is full.
    pub fn intern(&self, topic: &str) -> Result<Option<u32>> {
        validate_topic(topic)?;
        let mut ids = self.writer.lock().unwrap();
        if let Some(id) = ids.get(topic) {
            return Ok(Some(*id));
        }
        if ids.len() >= MAX_INTERNED_TOPICS {
            return Ok(None);
        }
        let mut next = Routes::clone(&self.routes.load());
        let id = next.topics.len() as u32;
        let name: Arc<str> = topic.into();
        let subs = next.resolve(topic);
        next.topics.push(TopicRoute { name: name.clone(), subs });
        self.routes.store(Arc::new(next));
        ids.insert(name, id);
        Ok(Some(id))
    }

    /// The name of an interned topic.
    pub fn topic(&self, id: u32) -> Option<Arc<str>> {
        self.routes.load().topics.get(id as usize).map(|t| t.name.clone())
    }

    /// The name of an interned topic and the subscriptions it routes to, from one snapshot:
    /// a batch on one topic reads the snapshot once instead of once per event.
    pub fn interned_route(&self, id: u32) -> Option<(Arc<str>, Arc<[Arc<Subscription>]>)> {
        self.routes.load().topics.get(id as usize).map(|t| (t.name.clone(), t.subs.clone()))
    }

    /// Runs `f` on the name and subscriptions of an interned topic while holding the snapshot,
    /// without taking a reference on the subscription list (a single publish).
    #[inline]
    pub fn with_interned_route<R>(&self, id: u32, f: impl FnOnce(&Arc<str>, &[Arc<Subscription>]) -> R) -> Option<R> {
        let routes = self.routes.load();
        routes.topics.get(id as usize).map(|t| f(&t.name, &t.subs))
    }

    /// Calls `f` for every subscription `ev` routes to: by id when interned, else by name.
    #[inline]
    pub fn for_each_route(&self, ev: &Event, mut f: impl FnMut(&Arc<Subscription>)) {
        if let Some(id) = ev.topic_id {
            let routes = self.routes.load();
            if let Some(t) = routes.topics.get(id as usize) {
                t.subs.iter().for_each(&mut f);
                return;
            }
        }
        self.for_each_match(&ev.topic, f)
    }

    pub fn remove(&self, id: u64) -> Option<Arc<Subscription>> {
        let _w = self.writer.lock().unwrap();
        let mut next = Routes::clone(&self.routes.load());
        let mut found = None;
        if let Some(i) = next.wildcard.iter().position(|s| s.id() == id) {
            found = Some(next.wildcard.remove(i));
        } else {
            let mut empty_key = None;
            for (k, subs) in next.exact.iter_mut() {
                if let Some(i) = subs.iter().position(|s| s.id() == id) {
                    found = Some(subs.remove(i));
                    if subs.is_empty() {
                        empty_key = Some(k.clone());
                    }
                    break;
                }
            }
            if let Some(k) = empty_key {
                next.exact.remove(&k);
            }
        }
        if found.is_some() {
            for t in next.topics.iter_mut() {
                if t.subs.iter().any(|s| s.id() == id) {
                    t.subs = t.subs.iter().filter(|s| s.id() != id).cloned().collect();
                }
            }
            next.count -= 1;
            self.routes.store(Arc::new(next));
        }
        found
    }

    /// Calls `f` for every subscription whose pattern matches `topic`.
    #[inline]
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&Arc<Subscription>)) {
        let routes = self.routes.load();
        if let Some(subs) = routes.exact.get(topic) {
            subs.iter().for_each(&mut f);
        }
        if routes.wildcard.is_empty() {
            return;
        }
        // Split the topic once on the stack; topics deeper than the buffer take the slow path.
        let mut buf = [""; 16];
        let mut n = 0;
        for part in topic.split('.') {
            if n == buf.len() {
                n = usize::MAX;
                break;
            }
            buf[n] = part;
            n += 1;
        }
        for s in &routes.wildcard {
            let hit = if n == usize::MAX { s.pattern().matches(topic) } else { s.pattern().matches_segments(&buf[..n]) };
            if hit {
                f(s);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.routes.load().count
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Subscription>> {
        let routes = self.routes.load();
        let mut v: Vec<_> = routes.exact.values().flatten().chain(routes.wildcard.iter()).cloned().collect();
        v.sort_by_key(|s| s.id());
        v
    }
}
