//! Automatic rollback: the candidate's error rate and latency p99 over a sliding time window,
//! checked against thresholds as its events complete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::{bucket_of, percentiles, BUCKETS};

/// Thresholds on the candidate. Errors are `Outcome::Error` (traps, timeouts, limits, bad
/// status); retry and reject are the handler's own decisions and do not count.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoRollback {
    /// Roll back when errors / events in the window exceed this (0..=1).
    pub max_error_rate: Option<f64>,
    /// Roll back when the p99 handler latency in the window exceeds this.
    pub max_p99: Option<Duration>,
    pub window: Duration,
    /// No verdict on fewer events than this in the window.
    pub min_events: u64,
}

impl Default for AutoRollback {
    /// On by default: a candidate that errs on more than 5 % of at least 20 events within 10 s
    /// is taken out. Latency has no default (it depends on the handler).
    fn default() -> Self {
        AutoRollback { max_error_rate: Some(0.05), max_p99: None, window: Duration::from_secs(10), min_events: 20 }
    }
}

impl AutoRollback {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.max_error_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("autoRollback.maxErrorRate must be in 0..=1, got {r}"));
            }
        }
        if self.window < Duration::from_millis(10) || self.window > Duration::from_secs(3600) {
            return Err(format!("autoRollback.windowMs must be in 10..=3600000, got {}", self.window.as_millis()));
        }
        if self.min_events == 0 {
            return Err("autoRollback.minEvents must be at least 1".into());
        }
        Ok(())
    }
}

/// Why a candidate was taken out.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub reason: String,
    pub events: u64,
    pub error_rate: f64,
    pub p99: Duration,
}

const SLICES: usize = 10;

struct Slice {
    /// Which slice of time this slot holds (time since start / slice length).
    index: u64,
    events: u64,
    errors: u64,
    buckets: Box<[u64]>,
}

struct Window {
    slices: Vec<Slice>,
    /// Sums over the slices inside the window, kept as slices rotate.
    events: u64,
    errors: u64,
    buckets: Box<[u64]>,
    max_ns: u64,
    newest: u64,
}

/// The window of one candidate. Recording takes a short lock: only the candidate's events
/// (a canary's few percent, or shadow copies) pay for it.
pub(crate) struct Watch {
    pub rules: AutoRollback,
    started: Instant,
    slice: Duration,
    window: Mutex<Window>,
    tripped: AtomicBool,
}

impl Watch {
    pub fn new(rules: AutoRollback) -> Watch {
        let slice = (rules.window / SLICES as u32).max(Duration::from_millis(1));
        let empty = || Slice { index: 0, events: 0, errors: 0, buckets: vec![0; BUCKETS].into_boxed_slice() };
        Watch {
            started: Instant::now(),
            slice,
            window: Mutex::new(Window {
                slices: (0..SLICES).map(|_| empty()).collect(),
                events: 0,
                errors: 0,
                buckets: vec![0; BUCKETS].into_boxed_slice(),
                max_ns: 0,
                newest: 0,
            }),
            rules,
            tripped: AtomicBool::new(false),
        }
    }

    /// Records one completed event; returns a verdict the first time a threshold is crossed.
    pub fn record(&self, elapsed: Duration, error: bool) -> Option<Verdict> {
        if self.tripped.load(Ordering::Relaxed) {
            return None;
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock so slices only move forward.
        let now = (self.started.elapsed().as_nanos() / self.slice.as_nanos().max(1)) as u64;
        w.advance(now);
        let b = bucket_of(ns);
        let s = &mut w.slices[now as usize % SLICES];
        s.events += 1;
        s.errors += u64::from(error);
        s.buckets[b] += 1;
        w.events += 1;
        w.errors += u64::from(error);
        w.buckets[b] += 1;
        w.max_ns = w.max_ns.max(ns);
        let verdict = self.judge(&w)?;
        drop(w);
        // Only one caller reports it.
        (!self.tripped.swap(true, Ordering::SeqCst)).then_some(verdict)
    }

    fn judge(&self, w: &Window) -> Option<Verdict> {
        if w.events < self.rules.min_events {
            return None;
        }
        let rate = w.errors as f64 / w.events as f64;
        let window_ms = self.rules.window.as_millis();
        if let Some(max) = self.rules.max_error_rate {
            if rate > max {
                let p99 = percentiles(&w.buckets, w.max_ns).p99;
                return Some(Verdict {
                    reason: format!(
                        "error rate {:.1}% ({} of {} events in the last {window_ms} ms) above maxErrorRate {:.1}%",
                        rate * 100.0,
                        w.errors,
                        w.events,
                        max * 100.0
                    ),
                    events: w.events,
                    error_rate: rate,
                    p99,
                });
            }
        }
        if let Some(max) = self.rules.max_p99 {
            let p99 = percentiles(&w.buckets, w.max_ns).p99;
            if p99 > max {
                return Some(Verdict {
                    reason: format!(
                        "latency p99 {:.3} ms over {} events in the last {window_ms} ms above maxP99Ms {}",
                        p99.as_secs_f64() * 1e3,
                        w.events,
                        max.as_secs_f64() * 1e3
                    ),
                    events: w.events,
                    error_rate: rate,
                    p99,
                });
            }
        }
        None
    }
}

impl Window {
    /// Empties the slots of slices that fell out of the window since the newest one recorded.
    fn advance(&mut self, now: u64) {
        if now <= self.newest && self.events > 0 {
            return;
        }
        let from = if self.events == 0 { now } else { self.newest + 1 };
        // Past a whole window every slot is stale: clear each once.
        let from = from.max(now.saturating_sub(SLICES as u64 - 1));
        for index in from..=now {
            let slot = &mut self.slices[index as usize % SLICES];
            self.events -= slot.events;
            self.errors -= slot.errors;
            for (total, n) in self.buckets.iter_mut().zip(slot.buckets.iter_mut()) {
                *total -= *n;
                *n = 0;
            }
            slot.events = 0;
            slot.errors = 0;
            slot.index = index;
        }
        self.newest = now;
        if self.events == 0 {
            // The window emptied: its maximum is history too.
            self.max_ns = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rate: Option<f64>, p99_ms: Option<u64>, window_ms: u64, min: u64) -> AutoRollback {
        AutoRollback {
            max_error_rate: rate,
            max_p99: p99_ms.map(Duration::from_millis),
            window: Duration::from_millis(window_ms),
            min_events: min,
        }
    }

    #[test]
    fn trips_once_on_the_error_rate_after_min_events() {
        let w = Watch::new(rules(Some(0.5), None, 60_000, 10));
        for _ in 0..9 {
            assert!(w.record(Duration::from_micros(5), true).is_none(), "fewer than minEvents");
        }
        let v = w.record(Duration::from_micros(5), true).expect("tripped on the 10th");
        assert_eq!((v.events, v.error_rate), (10, 1.0));
        assert!(v.reason.contains("error rate 100.0%"), "{}", v.reason);
        assert!(w.record(Duration::from_micros(5), true).is_none(), "reported once");
    }

    #[test]
    fn healthy_traffic_does_not_trip_and_latency_does() {
        let w = Watch::new(rules(Some(0.1), Some(2), 60_000, 10));
        for _ in 0..1000 {
            assert!(w.record(Duration::from_micros(100), false).is_none());
        }
        // 2 % slow events push p99 past 2 ms.
        let mut verdict = None;
        for _ in 0..30 {
            verdict = verdict.or(w.record(Duration::from_millis(5), false));
        }
        let v = verdict.expect("p99 above 2 ms");
        assert!(v.reason.contains("latency p99"), "{}", v.reason);
    }

    #[test]
    fn old_slices_leave_the_window() {
        let w = Watch::new(rules(Some(0.5), None, 50, 5));
        for _ in 0..4 {
            assert!(w.record(Duration::from_micros(5), true).is_none());
        }
        std::thread::sleep(Duration::from_millis(120));
        // The four old errors are out of the window: four new errors are still below minEvents.
        for _ in 0..4 {
            assert!(w.record(Duration::from_micros(5), true).is_none());
        }
        assert!(w.record(Duration::from_micros(5), true).is_some());
    }
}
