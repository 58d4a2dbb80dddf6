//! sluice core: bounded lock-free channels with overflow policies, a topic router with lock-free
//! reads, a Context tree, declarative filters and counters. Plain Rust: this crate never links
//! N-API or Wasmtime, so every rule here is tested with `cargo test` alone.

pub mod audit;
pub mod batch;
pub mod bus;
pub mod codec;
pub mod context;
pub mod delivery;
pub mod durable;
pub mod error;
pub mod event;
pub mod filter;
pub mod json;
pub mod observe;
pub mod overflow;
pub mod pattern;
pub mod queue;
pub mod router;
pub mod subscription;

pub use batch::BatchData;
pub use bus::{Bus, BusOptions, BusStats, Delivery, PendingBatch, PendingPublish, Totals};
pub use context::{Context, Deadline};
pub use delivery::{Delivered, DeliveryOptions, Disposition, Outcome, SettleHook};
pub use durable::{notify::DurableWait, DurableStats, Fsync, JournalConfig, Published};
pub use error::{Error, ErrorKind, Result};
pub use event::{Encoding, Event, EventId, EventInit};
pub use filter::FilterChain;
pub use observe::{Interest, Kind, Record, Recorder};
pub use overflow::Overflow;
pub use pattern::Pattern;
pub use router::MAX_INTERNED_TOPICS;
pub use queue::{Offer, QueueStats};
pub use subscription::{Origin, SubscribeOptions, Subscription, SubscriptionStats};
