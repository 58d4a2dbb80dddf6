//! Declarative delivery settings of one subscription (or deployment), validated once.

use crate::error::{Error, Result};
use std::time::Duration;

/// Upper bounds that keep a typo from turning into a runaway retry loop or a huge window.
pub const MAX_ATTEMPTS: u32 = 1000;
pub const MAX_BACKOFF_MS: u64 = 24 * 60 * 60 * 1000;
pub const MAX_DEDUPE_SIZE: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// An event is handed to the handler at most once: a failure is final (dead-lettered if a
    /// topic is configured, else counted `discarded`).
    #[default]
    AtMostOnce,
    /// An event is handed over until it is acknowledged, rejected or out of attempts.
    AtLeastOnce,
}

impl Guarantee {
    pub fn parse(s: &str) -> Result<Guarantee> {
        match s {
            "at-most-once" => Ok(Guarantee::AtMostOnce),
            "at-least-once" => Ok(Guarantee::AtLeastOnce),
            other => Err(Error::invalid(format!(
                "unknown deliveryGuarantee '{other}' (expected at-most-once, at-least-once)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backoff {
    #[default]
    Exponential,
    Fixed,
}

impl Backoff {
    pub fn parse(s: &str) -> Result<Backoff> {
        match s {
            "exponential" => Ok(Backoff::Exponential),
            "fixed" => Ok(Backoff::Fixed),
            other => Err(Error::invalid(format!("unknown retry.backoff '{other}' (expected exponential, fixed)"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries in all, the first included: 1 means no retry.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub initial_ms: u64,
    pub max_ms: u64,
    /// Fraction (0 … 1) of each delay that is randomised away: the delay is drawn from
    /// `[d·(1−jitter), d]`, so `d·(1−jitter)` is a lower bound callers can rely on.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 1, backoff: Backoff::Exponential, initial_ms: 100, max_ms: 30_000, jitter: 0.0 }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next` (2 for the first retry), before jitter.
    pub fn base_delay(&self, next: u32) -> Duration {
        let ms = match self.backoff {
            Backoff::Fixed => self.initial_ms,
            Backoff::Exponential => {
                let shift = next.saturating_sub(2).min(63);
                self.initial_ms.checked_shl(shift).filter(|v| v >> shift == self.initial_ms).unwrap_or(u64::MAX)
            }
        };
        Duration::from_millis(ms.min(self.max_ms.max(self.initial_ms)))
    }

    /// The delay with jitter applied; `unit` is a uniform draw in [0, 1).
    pub fn delay(&self, next: u32, unit: f64) -> Duration {
        let d = self.base_delay(next);
        if self.jitter <= 0.0 {
            return d;
        }
        d.mul_f64(1.0 - self.jitter * unit.clamp(0.0, 1.0))
    }

    fn validate(&self) -> Result<()> {
        if self.max_attempts < 1 || self.max_attempts > MAX_ATTEMPTS {
            return Err(Error::invalid(format!(
                "retry.maxAttempts must be from 1 to {MAX_ATTEMPTS}, got {}",
                self.max_attempts
            )));
        }
        if self.initial_ms > MAX_BACKOFF_MS || self.max_ms > MAX_BACKOFF_MS {
            return Err(Error::invalid(format!("retry.initialMs and retry.maxMs must be at most {MAX_BACKOFF_MS}")));
        }
        if self.max_ms < self.initial_ms {
            return Err(Error::invalid(format!(
                "retry.maxMs ({}) must not be below retry.initialMs ({})",
                self.max_ms, self.initial_ms
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid(format!("retry.jitter must be from 0 to 1, got {}", self.jitter)));
        }
        Ok(())
    }
}

/// Per-key ordering: at most one event per key is with the handler (running or waiting for a
/// retry); later events of that key wait behind it while other keys keep flowing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum KeyOrdering {
    #[default]
    None,
    /// `path` is a dot path into the event (`data.orderId`, `subject`, `id`, `type`).
    PerKey { path: KeyPath },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPath {
    Subject,
    Id,
    Type,
    /// Object keys inside `data` (JSON events only; other events have no key).
    Data(Vec<String>),
}

impl KeyPath {
    pub fn parse(s: &str) -> Result<KeyPath> {
        match s {
            "subject" => return Ok(KeyPath::Subject),
            "id" => return Ok(KeyPath::Id),
            "type" => return Ok(KeyPath::Type),
            _ => {}
        }
        let rest = s.strip_prefix("data.").ok_or_else(|| {
            Error::invalid(format!("key must be 'subject', 'id', 'type' or a path 'data.<field>…', got '{s}'"))
        })?;
        let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::invalid(format!("key path '{s}' has an empty segment")));
        }
        Ok(KeyPath::Data(path))
    }
}

/// The dedupe window by event id: an id seen within the window is suppressed (counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dedupe {
    /// Ids older than this are forgotten (`None`: only `size` bounds the window).
    pub window: Option<Duration>,
    /// Ids remembered at most (oldest forgotten first).
    pub size: usize,
}

impl Dedupe {
    pub const DEFAULT_SIZE: usize = 10_000;
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct DeliveryOptions {
    pub guarantee: Guarantee,
    pub retry: RetryPolicy,
    /// Topic that receives a dead-letter envelope for each event given up on.
    pub dead_letter: Option<String>,
    pub ordering: KeyOrdering,
    pub dedupe: Option<Dedupe>,
}

impl DeliveryOptions {
    /// Whether the core must track each delivered event until it is settled. Plain at-most-once
    /// without a dead-letter topic, ordering or dedupe needs only counters.
    pub fn tracked(&self) -> bool {
        self.guarantee == Guarantee::AtLeastOnce
            || self.dead_letter.is_some()
            || self.ordering != KeyOrdering::None
            || self.dedupe.is_some()
    }

    pub fn validate(&self) -> Result<()> {
        self.retry.validate()?;
        if self.guarantee == Guarantee::AtMostOnce && self.retry.max_attempts > 1 {
            return Err(Error::invalid(
                "retry.maxAttempts > 1 redelivers events: it needs deliveryGuarantee 'at-least-once'",
            ));
        }
        if let Some(t) = &self.dead_letter {
            crate::pattern::validate_topic(t).map_err(|e| Error::invalid(format!("deadLetter: {}", e.message())))?;
        }
        if let Some(d) = &self.dedupe {
            if d.size == 0 || d.size > MAX_DEDUPE_SIZE {
                return Err(Error::invalid(format!("dedupe.size must be from 1 to {MAX_DEDUPE_SIZE}, got {}", d.size)));
            }
            if d.window.is_some_and(|w| w.is_zero() || w.as_millis() as u64 > MAX_BACKOFF_MS) {
                return Err(Error::invalid(format!("dedupe.windowMs must be from 1 to {MAX_BACKOFF_MS}")));
            }
        }
        Ok(())
    }
}

/// Delivery settings as a binding receives them (every field optional, numbers as f64):
/// `build` applies the defaults and the rules, so bindings only copy fields.
#[derive(Clone, Debug, Default)]
pub struct DeliverySpec {
    pub guarantee: Option<String>,
    pub max_attempts: Option<f64>,
    pub backoff: Option<String>,
    pub initial_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub jitter: Option<f64>,
    pub dead_letter: Option<String>,
    pub ordering: Option<String>,
    pub key: Option<String>,
    pub dedupe_window_ms: Option<f64>,
    pub dedupe_size: Option<f64>,
}

fn whole(v: f64, what: &str) -> Result<u64> {
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > 9_007_199_254_740_991.0 {
        return Err(Error::invalid(format!("{what} must be a whole number >= 0, got {v}")));
    }
    Ok(v as u64)
}

impl DeliverySpec {
    pub fn build(self) -> Result<DeliveryOptions> {
        let mut o = DeliveryOptions::default();
        if let Some(g) = &self.guarantee {
            o.guarantee = Guarantee::parse(g)?;
        }
        if let Some(n) = self.max_attempts {
            o.retry.max_attempts = whole(n, "retry.maxAttempts")?.min(u32::MAX as u64) as u32;
        }
        if let Some(b) = &self.backoff {
            o.retry.backoff = Backoff::parse(b)?;
        }
        if let Some(ms) = self.initial_ms {
            o.retry.initial_ms = whole(ms, "retry.initialMs")?;
            if self.max_ms.is_none() {
                o.retry.max_ms = o.retry.max_ms.max(o.retry.initial_ms);
            }
        }
        if let Some(ms) = self.max_ms {
            o.retry.max_ms = whole(ms, "retry.maxMs")?;
        }
        if let Some(j) = self.jitter {
            if !j.is_finite() {
                return Err(Error::invalid(format!("retry.jitter must be from 0 to 1, got {j}")));
            }
            o.retry.jitter = j;
        }
        o.dead_letter = self.dead_letter;
        o.ordering = match (self.ordering.as_deref(), self.key.as_deref()) {
            (None | Some("none"), None) => KeyOrdering::None,
            (Some("per-key"), Some(k)) => KeyOrdering::PerKey { path: KeyPath::parse(k)? },
            (Some("per-key"), None) => return Err(Error::invalid("ordering 'per-key' needs a key ('data.<field>', 'subject', …)")),
            (None | Some("none"), Some(_)) => return Err(Error::invalid("key is only used with ordering 'per-key'")),
            (Some(other), _) => return Err(Error::invalid(format!("unknown ordering '{other}' (expected none, per-key)"))),
        };
        if self.dedupe_window_ms.is_some() || self.dedupe_size.is_some() {
            let window = self.dedupe_window_ms.map(|w| whole(w, "dedupe.windowMs")).transpose()?;
            let size = self.dedupe_size.map(|s| whole(s, "dedupe.size")).transpose()?;
            o.dedupe = Some(Dedupe {
                window: window.map(Duration::from_millis),
                size: size.map_or(Dedupe::DEFAULT_SIZE, |s| s.min(usize::MAX as u64) as usize),
            });
        }
        o.validate()?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let p = RetryPolicy { max_attempts: 10, initial_ms: 10, max_ms: 50, ..Default::default() };
        let ms: Vec<u128> = (2..=6).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(ms, vec![10, 20, 40, 50, 50]);
        assert_eq!(p.base_delay(200).as_millis(), 50, "huge attempt numbers saturate, not overflow");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = RetryPolicy { max_attempts: 3, backoff: Backoff::Fixed, initial_ms: 100, max_ms: 100, jitter: 0.25 };
        assert_eq!(p.delay(2, 0.0).as_millis(), 100);
        assert_eq!(p.delay(2, 0.999_999).as_millis(), 75);
    }

    #[test]
    fn bad_settings_are_invalid_arguments() {
        let mut o = DeliveryOptions::default();
        o.retry.max_attempts = 3;
        assert_eq!(o.validate().unwrap_err().code(), "ERR_INVALID_ARG", "retries need at-least-once");
        o.guarantee = Guarantee::AtLeastOnce;
        o.validate().unwrap();
        o.retry.jitter = 1.5;
        assert!(o.validate().is_err());
        o.retry.jitter = 0.0;
        o.retry.max_ms = 1;
        assert!(o.validate().is_err());
        o.retry.max_ms = 1000;
        o.dead_letter = Some("bad topic!".into());
        assert!(o.validate().is_err());
        assert!(KeyPath::parse("data.").is_err());
        assert!(KeyPath::parse("nope").is_err());
        assert_eq!(KeyPath::parse("data.a.b").unwrap(), KeyPath::Data(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn spec_applies_defaults_and_rules() {
        let o = DeliverySpec { guarantee: Some("at-least-once".into()), max_attempts: Some(4.0), initial_ms: Some(50_000.0), ..Default::default() }
            .build()
            .unwrap();
        assert_eq!((o.retry.max_attempts, o.retry.initial_ms, o.retry.max_ms), (4, 50_000, 50_000));
        let bad = |s: DeliverySpec| s.build().unwrap_err().code();
        assert_eq!(bad(DeliverySpec { ordering: Some("per-key".into()), ..Default::default() }), "ERR_INVALID_ARG");
        assert_eq!(bad(DeliverySpec { key: Some("data.k".into()), ..Default::default() }), "ERR_INVALID_ARG");
        assert_eq!(bad(DeliverySpec { max_attempts: Some(1.5), ..Default::default() }), "ERR_INVALID_ARG");
        assert_eq!(bad(DeliverySpec { dedupe_size: Some(0.0), ..Default::default() }), "ERR_INVALID_ARG");
        assert_eq!(bad(DeliverySpec { guarantee: Some("exactly-once".into()), ..Default::default() }), "ERR_INVALID_ARG");
        let d = DeliverySpec { dedupe_window_ms: Some(500.0), ..Default::default() }.build().unwrap();
        assert_eq!(d.dedupe, Some(Dedupe { window: Some(Duration::from_millis(500)), size: Dedupe::DEFAULT_SIZE }));
    }
}
