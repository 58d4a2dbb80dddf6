//! sluice-journal: the durable local journal behind at-least-once delivery and the `spill`
//! overflow policy. A directory of append-only, checksummed segment files with group commit,
//! durable consumer cursors (out-of-order acks), retention, and torn-tail recovery.
//!
//! ```no_run
//! use sluice_journal::{EventRecord, FsyncPolicy, Journal, JournalOptions};
//! let j = Journal::open("/var/lib/app/journal", JournalOptions { fsync: FsyncPolicy::batch(), ..Default::default() })?;
//! j.register_consumer("billing")?;
//! let seq = j.append_durable(&EventRecord::new("order.created", "e-1", b"{}".to_vec()))?;
//! for e in j.unacked("billing")? {
//!     let e = e?;
//!     j.ack("billing", e.seq)?;
//! }
//! # let _ = seq;
//! # Ok::<(), sluice_journal::JournalError>(())
//! ```
//!
//! Plain Rust with no dependency on `sluice-core`: the bus converts its `Event` at the boundary.
//! The on-disk format and the crash model are specified in `docs/journal.md`.

mod cursor;
mod error;
mod event;
mod fault;
mod format;
mod fsync;
mod journal;
mod pending;
mod read;
mod recovery;
mod segment;

pub use error::{JournalError, Result};
pub use event::{AppendRecord, Encoding, EventRecord, Seq, StoredEvent};
#[cfg(feature = "fault-injection")]
pub use fault::{Fault, FaultKind};
pub use fsync::FsyncPolicy;
pub use journal::{ConsumerInfo, DurableHook, Journal, JournalOptions, JournalStats, To};
pub use read::Unacked;
pub use recovery::{RecoveryStats, Truncation};

/// Names of the segment files in a journal directory (for tests and tooling).
pub mod layout {
    pub use crate::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
    pub use crate::segment::{list_segments, segment_path};
}
