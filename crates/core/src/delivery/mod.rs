//! Delivery guarantees: how a delivered event is settled, retried, dead-lettered, ordered per
//! key and deduplicated. Settings are declarative (`DeliveryOptions` on `SubscribeOptions`);
//! JS handlers and WASM handlers go through the same API. See `docs/delivery.md`.
//!
//! # Settling events
//!
//! A consumer takes events with `Subscription::take_deliveries`, which returns `Delivered
//! { tag, attempt, event }`, and reports each verdict with
//! `Subscription::settle(&bus, tag, Outcome)`:
//!
//! - `Outcome::Ack` — done.
//! - `Outcome::Retry(reason)` / `Outcome::Fail(reason)` — under `at-least-once`, delivered again
//!   after the policy's backoff until `retry.max_attempts` deliveries; then given up. `Fail` is
//!   also counted `failed` (the handler threw, rejected, trapped or hit a limit).
//! - `Outcome::Reject(reason)` — given up at once.
//!
//! Given up means: an envelope with the original event, the reason and the attempt count is
//! published on the `dead_letter` topic (and kept for `Bus::replay`), or, with no such topic,
//! the event is counted `discarded`. Nothing leaves without a counter.
//!
//! Subscriptions without tracking needs (plain at-most-once: no dead-letter topic, no ordering,
//! no dedupe) hand out tag 0 and count an event `acked` when taken; a later non-Ack verdict on
//! tag 0 moves it to `discarded`. This keeps the common path at one counter add per batch.
//!
//! A durable layer hooks in with `Bus::set_settle_hook`: its `SettleHook::settled` is called
//! for every decision on a tracked subscription (acked, retrying, dead-lettered, discarded,
//! duplicate, expired, abandoned), on the settling thread.
//!
//! Retries wait in one timer per bus (`timer.rs`); events behind a retrying key wait in the
//! subscription (`state.rs`); neither blocks other events.

pub mod dead_letter;
pub mod options;
pub mod outcome;
pub(crate) mod state;
pub(crate) mod timer;

pub use dead_letter::{DeadLetterStats, RETAINED_PER_TOPIC};
pub use options::{Backoff, Dedupe, DeliveryOptions, DeliverySpec, Guarantee, KeyOrdering, KeyPath, RetryPolicy};
pub use outcome::{Disposition, Outcome, SettleHook};
pub use state::{Delivered, DeliveryStats};

use std::sync::{Arc, OnceLock};

/// What every subscription of a bus shares for delivery: the retry timer, the settle hook and
/// the dead-letter retention.
#[derive(Default)]
pub(crate) struct DeliveryEnv {
    pub timer: timer::RetryTimer,
    pub hook: OnceLock<Arc<dyn SettleHook>>,
    pub dead_letters: dead_letter::DeadLetters,
}

/// A uniform draw in [0, 1) for jitter; std's per-process random keys are enough here.
pub(crate) fn unit_random(salt: u64) -> f64 {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(salt);
    (h >> 11) as f64 / (1u64 << 53) as f64
}
