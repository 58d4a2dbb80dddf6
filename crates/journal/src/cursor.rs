//! Durable consumer cursors, in memory. A consumer's state is the set of sequence numbers that
//! were addressed to it and that it has not acknowledged yet. That one set answers every question:
//! the low-water mark ("committed") is just below its smallest member, out-of-order acks are
//! removals above it, and replaying APPEND and ACK records rebuilds it exactly after a restart.

use crate::event::Seq;
use crate::pending::PendingSet;
use std::collections::{BTreeMap, HashMap};

pub struct Consumer {
    pub name: String,
    pub pending: PendingSet,
    /// Failed delivery attempts of pending events (ATTEMPTS records); absent means none.
    pub attempts: HashMap<Seq, u32>,
}

impl Consumer {
    /// Forgets `seq` (acknowledged): no longer pending, its attempt count goes with it.
    pub fn release(&mut self, seq: Seq) -> bool {
        if !self.attempts.is_empty() {
            self.attempts.remove(&seq);
        }
        self.pending.remove(&seq)
    }
}

#[derive(Default)]
pub struct Consumers {
    by_name: HashMap<String, u32>,
    by_id: BTreeMap<u32, Consumer>,
    pub next_id: u32,
}

impl Consumers {
    pub fn new(next_id: u32) -> Self {
        Consumers { next_id: next_id.max(1), ..Default::default() }
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: u32) -> Option<&Consumer> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Consumer> {
        self.by_id.get_mut(&id)
    }

    pub fn insert(&mut self, id: u32, name: String) {
        self.by_name.insert(name.clone(), id);
        self.by_id.insert(id, Consumer { name, pending: PendingSet::new(), attempts: HashMap::new() });
        self.next_id = self.next_id.max(id + 1);
    }

    pub fn remove(&mut self, id: u32) -> Option<Consumer> {
        let c = self.by_id.remove(&id)?;
        self.by_name.remove(&c.name);
        Some(c)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Consumer)> {
        self.by_id.iter().map(|(id, c)| (*id, c))
    }

    /// The smallest sequence number any consumer still needs: everything below it may go.
    pub fn min_pending(&self) -> Option<Seq> {
        self.by_id.values().filter_map(|c| c.pending.first()).min()
    }

    /// Records that `seq` is addressed to `ids` (or to every registered consumer).
    pub fn deliver(&mut self, seq: Seq, ids: Option<&[u32]>) -> Result<(), u32> {
        self.deliver_range(seq, seq, ids)
    }

    /// `deliver` for `first..=last` (a batch appended with one write).
    pub fn deliver_range(&mut self, first: Seq, last: Seq, ids: Option<&[u32]>) -> Result<(), u32> {
        match ids {
            None => {
                for c in self.by_id.values_mut() {
                    c.pending.insert_range(first, last);
                }
            }
            Some(ids) => {
                for id in ids {
                    self.by_id.get_mut(id).ok_or(*id)?.pending.insert_range(first, last);
                }
            }
        }
        Ok(())
    }

    /// The registry as a checkpoint lists it.
    pub fn snapshot(&self) -> Vec<(u32, String)> {
        self.by_id.iter().map(|(id, c)| (*id, c.name.clone())).collect()
    }
}
