//! Topic → subscriptions. The publish path reads an immutable snapshot through `ArcSwap` without
//! taking a lock; subscribe/unsubscribe build a new snapshot (copy-on-write) under a writer mutex.
//! Changes are rare next to publishes, so paying O(subscriptions) per change buys a lock-free read.

use crate::subscription::Subscription;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default, Clone)]
struct Routes {
    exact: HashMap<Box<str>, Vec<Arc<Subscription>>>,
    wildcard: Vec<Arc<Subscription>>,
    count: usize,
}

#[derive(Default)]
pub struct Router {
    routes: ArcSwap<Routes>,
    writer: Mutex<()>,
}

impl Router {
    pub fn add(&self, sub: Arc<Subscription>) {
        let _w = self.writer.lock().unwrap();
        let mut next = Routes::clone(&self.routes.load());
        if sub.pattern().is_exact() {
            next.exact.entry(sub.pattern().as_str().into()).or_default().push(sub);
        } else {
            next.wildcard.push(sub);
        }
        next.count += 1;
        self.routes.store(Arc::new(next));
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
