//! Lock-free counters and a small log-linear latency histogram for one deployment.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Adds `n` to a counter; nothing for 0. Most events refuse, drop and emit nothing, and a locked
/// add per event per counter showed up in profiles of the per-event paths.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Relaxed);
    }
}
use std::time::Duration;

use crate::error::ErrorKind;
use crate::stripe::{self, Padded};

/// Sub-buckets per power of two: 4 gives about 19% worst-case relative error on a percentile.
const SUB_BITS: u32 = 2;
const SUB: usize = 1 << SUB_BITS;
pub(crate) const BUCKETS: usize = 64 * SUB;

/// Latency histogram over nanoseconds: bucket = (floor(log2 ns), next two bits). Recording is
/// one relaxed atomic add; readers get a snapshot that may be a few samples behind.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

pub(crate) fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // >= SUB_BITS here
    let mantissa = (ns >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp as usize - SUB_BITS as usize + 1) * SUB + mantissa
}

/// Upper bound (inclusive) of the values that land in `bucket`.
pub(crate) fn bucket_upper(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let exp = (bucket / SUB - 1) as u32 + SUB_BITS;
    let mantissa = (bucket % SUB) as u64;
    let low = (1u64 << exp) | (mantissa << (exp - SUB_BITS));
    low.saturating_add((1u64 << (exp - SUB_BITS)) - 1)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        // A locked read-modify-write only for a new maximum (rare): this runs per event.
        if ns > self.max.load(Relaxed) {
            self.max.fetch_max(ns, Relaxed);
        }
    }

    /// Percentiles as bucket upper bounds, capped at the exact maximum.
    #[cfg(test)]
    pub fn snapshot(&self) -> LatencySnapshot {
        Histogram::merged(&[self])
    }

    /// One snapshot over several histograms (a deployment's versions).
    pub fn merged(all: &[&Histogram]) -> LatencySnapshot {
        let mut counts = vec![0u64; BUCKETS];
        let mut max = 0;
        for h in all {
            for (c, b) in counts.iter_mut().zip(h.buckets.iter()) {
                *c += b.load(Relaxed);
            }
            max = max.max(h.max.load(Relaxed));
        }
        percentiles(&counts, max)
    }
}

/// Percentiles of a bucket array whose largest sample is `max` nanoseconds.
pub(crate) fn percentiles(counts: &[u64], max: u64) -> LatencySnapshot {
    let total: u64 = counts.iter().sum();
    let pct = |q: f64| -> Duration {
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(bucket_upper(i).min(max));
            }
        }
        Duration::from_nanos(max)
    };
    LatencySnapshot {
        count: total,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: Duration::from_nanos(max),
    }
}

/// Latency percentiles of `handle` calls (checkout + guest call, not queueing in the bus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Counters of one module hash in a deployment. What workers bump per event sits in per-thread
/// stripes (`stripe.rs`); readers sum them.
pub(crate) struct Counters {
    stripes: Box<[Padded<Stripe>]>,
    pub instances_created: AtomicU64,
    pub instances_discarded: AtomicU64,
}

/// One thread's share of the per-event counters.
pub(crate) struct Stripe {
    pub ack: AtomicU64,
    pub retry: AtomicU64,
    pub reject: AtomicU64,
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    pub emits_accepted: AtomicU64,
    pub emits_refused: AtomicU64,
    /// Accepted by `emit` but dropped because the handler did not ack.
    pub emits_discarded: AtomicU64,
    pub logs_dropped: AtomicU64,
    pub latency: Histogram,
}

impl Stripe {
    fn new() -> Self {
        Stripe {
            ack: AtomicU64::new(0),
            retry: AtomicU64::new(0),
            reject: AtomicU64::new(0),
            errors: Default::default(),
            emits_accepted: AtomicU64::new(0),
            emits_refused: AtomicU64::new(0),
            emits_discarded: AtomicU64::new(0),
            logs_dropped: AtomicU64::new(0),
            latency: Histogram::new(),
        }
    }
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            stripes: (0..stripe::STRIPES).map(|_| Padded(Stripe::new())).collect(),
            instances_created: AtomicU64::new(0),
            instances_discarded: AtomicU64::new(0),
        }
    }

    /// The calling thread's stripe, for counting.
    pub fn local(&self) -> &Stripe {
        &self.stripes[stripe::index()]
    }

    /// A counter summed over the stripes.
    pub fn sum(&self, counter: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes.iter().map(|s| counter(s).load(Relaxed)).sum()
    }

    /// Every stripe's latency histogram (`Histogram::merged` makes one snapshot of them).
    pub fn histograms(&self) -> impl Iterator<Item = &Histogram> {
        self.stripes.iter().map(|s| &s.latency)
    }

    pub fn latency(&self) -> LatencySnapshot {
        Histogram::merged(&self.histograms().collect::<Vec<_>>())
    }

    pub fn outcomes(&self) -> OutcomeCounts {
        OutcomeCounts {
            ack: self.sum(|s| &s.ack),
            retry: self.sum(|s| &s.retry),
            reject: self.sum(|s| &s.reject),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| (*k, self.sum(|s| &s.errors[k.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Outcome counters; `errors` lists only kinds seen at least once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub ack: u64,
    pub retry: u64,
    pub reject: u64,
    pub errors: Vec<(ErrorKind, u64)>,
}

impl OutcomeCounts {
    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for ns in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last || ns > 4999, "bucket order broke at {ns}");
            assert!(
                bucket_upper(b) >= ns,
                "upper bound of bucket {b} below {ns}"
            );
            if ns <= 4999 {
                last = b;
            }
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_land_near_the_truth() {
        let h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        let near = |got: Duration, want_us: u64| {
            let got = got.as_nanos() as f64 / 1000.0;
            assert!(
                got >= want_us as f64 && got <= want_us as f64 * 1.25,
                "{got} vs {want_us}"
            );
        };
        near(s.p50, 500);
        near(s.p99, 990);
        assert_eq!(s.max, Duration::from_micros(1000));
    }
}
