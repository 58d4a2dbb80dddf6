//! A consumer's pending set: the sequence numbers addressed to it and not acknowledged yet.
//!
//! A bitmap over the window from the smallest pending number to the largest, one bit per
//! sequence number, instead of a `BTreeSet` (a node walk and often an allocation per insert and
//! per removal, on every event). Appends add consecutive numbers at the top and acks clear bits
//! mostly near the bottom, so both are a word operation; empty words at either end are dropped,
//! so the window stays as short as its oldest and newest pending events allow.
//!
//! Memory: one bit per sequence number of the window. The window never reaches below the oldest
//! retained segment (an event pending for anyone keeps its segment, and the journal keeps an index
//! entry of ~24 bytes per retained event), so the bitmap costs under 1/192 of the index it sits
//! beside, however old the oldest pending event is.

use crate::event::Seq;
use std::collections::VecDeque;

#[derive(Default, Clone, Debug)]
pub struct PendingSet {
    /// Bit `s % 64` of word `s / 64 - base` is set when `s` is pending. Neither end word is 0.
    words: VecDeque<u64>,
    /// Word index (`seq / 64`) of `words[0]`.
    base: u64,
    len: u64,
}

impl PendingSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The smallest pending sequence number.
    pub fn first(&self) -> Option<Seq> {
        let w = *self.words.front()?;
        Some(self.base * 64 + w.trailing_zeros() as u64)
    }

    pub fn contains(&self, seq: &Seq) -> bool {
        let wi = seq / 64;
        if wi < self.base {
            return false;
        }
        self.words.get((wi - self.base) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Adds `seq`; false if it was pending already.
    pub fn insert(&mut self, seq: Seq) -> bool {
        self.insert_range(seq, seq) == 1
    }

    /// Adds `first..=last`; returns how many of them were not pending before.
    pub fn insert_range(&mut self, first: Seq, last: Seq) -> u64 {
        if first > last {
            return 0;
        }
        let (lo, hi) = (first / 64, last / 64);
        if self.words.is_empty() {
            self.base = lo;
        }
        while lo < self.base {
            self.words.push_front(0);
            self.base -= 1;
        }
        while self.base + (self.words.len() as u64) <= hi {
            self.words.push_back(0);
        }
        let mut added = 0;
        for wi in lo..=hi {
            let from = if wi == lo { first % 64 } else { 0 };
            let to = if wi == hi { last % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - to)) & (u64::MAX << from);
            let w = &mut self.words[(wi - self.base) as usize];
            added += (mask & !*w).count_ones() as u64;
            *w |= mask;
        }
        self.len += added;
        added
    }

    /// Removes `seq`; false if it was not pending.
    pub fn remove(&mut self, seq: &Seq) -> bool {
        let wi = seq / 64;
        if wi < self.base {
            return false;
        }
        let Some(w) = self.words.get_mut((wi - self.base) as usize) else { return false };
        let bit = 1 << (seq % 64);
        if *w & bit == 0 {
            return false;
        }
        *w &= !bit;
        self.len -= 1;
        if *w == 0 {
            self.trim();
        }
        true
    }

    fn trim(&mut self) {
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.base += 1;
        }
        while self.words.back() == Some(&0) {
            self.words.pop_back();
        }
        if self.words.is_empty() {
            self.base = 0;
        }
    }

    /// Pending sequence numbers above `after`, ascending.
    pub fn iter_after(&self, after: Seq) -> impl Iterator<Item = Seq> + '_ {
        let start = after.saturating_add(1);
        let skip = (start / 64).saturating_sub(self.base) as usize;
        self.words.iter().enumerate().skip(skip).flat_map(move |(i, &w)| {
            let wi = self.base + i as u64;
            let mut w = w;
            if wi == start / 64 {
                w &= u64::MAX << (start % 64);
            }
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as u64;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }

    /// Every pending sequence number, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Seq> + '_ {
        self.iter_after(0)
    }
}

impl Extend<Seq> for PendingSet {
    fn extend<I: IntoIterator<Item = Seq>>(&mut self, iter: I) {
        for s in iter {
            self.insert(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Range(u64, u64),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..700, 0u64..200).prop_map(|(a, n)| Op::Range(a, a + n)),
            (0u64..1000).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Against `BTreeSet` (what it replaced): same membership, order, first, len after
        /// every step, including removals that empty words at either end and re-growth below.
        #[test]
        fn matches_a_btreeset(ops in prop::collection::vec(op(), 1..200), probe in 0u64..1000) {
            let mut p = PendingSet::new();
            let mut m = BTreeSet::new();
            for o in ops {
                match o {
                    Op::Range(a, b) => {
                        let before = m.len();
                        m.extend(a..=b);
                        prop_assert_eq!(p.insert_range(a, b), (m.len() - before) as u64);
                    }
                    Op::Remove(s) => prop_assert_eq!(p.remove(&s), m.remove(&s)),
                }
                prop_assert_eq!(p.len(), m.len());
                prop_assert_eq!(p.first(), m.first().copied());
                prop_assert_eq!(p.contains(&probe), m.contains(&probe));
                prop_assert!(p.iter().eq(m.iter().copied()));
                prop_assert!(p.iter_after(probe).eq(m.range(probe + 1..).copied()));
            }
        }
    }

    #[test]
    fn window_shrinks_to_what_is_pending() {
        let mut p = PendingSet::new();
        p.insert_range(1, 100_000);
        for s in 1..100_000 {
            assert!(p.remove(&s));
        }
        assert_eq!(p.words.len(), 1);
        assert_eq!(p.first(), Some(100_000));
        assert!(p.remove(&100_000));
        assert!(p.len() == 0 && p.words.is_empty());
        assert!(!p.contains(&5) && !p.remove(&5));
        assert_eq!(p.iter_after(u64::MAX).count(), 0);
    }
}
