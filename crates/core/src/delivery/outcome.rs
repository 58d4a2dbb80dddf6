//! What a handler says about one delivered event, and what the core finally did with it.

use crate::event::Event;
use crate::subscription::Subscription;
use std::sync::Arc;

/// A handler's verdict on one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: the event is done.
    Ack,
    /// The handler asks for the event again later (WASM status 1). Same path as `Fail`, but not
    /// counted as a failure.
    Retry(String),
    /// The handler refuses the event for good (WASM status 2): dead-lettered at once.
    Reject(String),
    /// The handler threw, rejected, trapped or ran out of a limit: retried per the policy.
    Fail(String),
}

impl Outcome {
    pub fn code(&self) -> u8 {
        match self {
            Outcome::Ack => 0,
            Outcome::Retry(_) => 1,
            Outcome::Reject(_) => 2,
            Outcome::Fail(_) => 3,
        }
    }

    /// The inverse of `code`, for bindings that pass outcomes as numbers.
    pub fn from_code(code: u8, reason: String) -> Option<Outcome> {
        match code {
            0 => Some(Outcome::Ack),
            1 => Some(Outcome::Retry(reason)),
            2 => Some(Outcome::Reject(reason)),
            3 => Some(Outcome::Fail(reason)),
            _ => None,
        }
    }
}

/// Where a delivered event ended up, reported to the `SettleHook` once per event (plus once per
/// retry scheduled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Acked,
    /// Scheduled for delivery `attempt` (2 for the first retry).
    Retrying { attempt: u32 },
    /// Published to the dead-letter topic after `attempts` deliveries.
    DeadLettered { attempts: u32 },
    /// Given up with no dead-letter topic (or the bus refused the envelope): counted, not lost.
    Discarded { attempts: u32 },
    /// Suppressed by the dedupe window: never handed to the handler.
    Duplicate,
    /// Its Context ended (or deadline passed) before a delivery could start: counted `expired`.
    Expired,
    /// Taken from the queue but never settled because the subscription closed.
    Abandoned,
}

impl Disposition {
    /// Whether the event is finished with on this subscription (a journal may release it).
    pub fn is_final(&self) -> bool {
        !matches!(self, Disposition::Retrying { .. })
    }
}

/// The seam for a durable layer: called after each settle decision, on the settling thread
/// (the JS thread for JS handlers, a worker thread for WASM handlers), so it must be cheap and
/// must not block for long. A journal releases the event on every final disposition except
/// `Abandoned` (which a restart must deliver again).
pub trait SettleHook: Send + Sync {
    fn settled(&self, sub: &Subscription, event: &Event, disposition: &Disposition);

    /// `settled(sub, e, &Disposition::Acked)` for each of `events` (a settle batch's acks): a
    /// hook can take them in one go.
    fn acked(&self, sub: &Subscription, events: &[Arc<Event>]) {
        for e in events {
            self.settled(sub, e, &Disposition::Acked);
        }
    }

    /// The end of a group of decisions on `sub` (a settle batch, a take that expired events):
    /// a hook that buffers work per decision (a journal's acknowledgements) writes it now.
    fn flush(&self, _sub: &Subscription) {}
}
