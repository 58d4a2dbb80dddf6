//! What a full subscription queue does with one more event.

use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The publisher waits for space, bounded by its Context.
    Block,
    /// The new event is dropped (counted).
    DropNewest,
    /// The oldest queued event is dropped (counted) to make room.
    DropOldest,
    /// The publisher gets `ERR_QUEUE_FULL`.
    Error,
    /// Spill to the local journal and flow back in order when the queue has room. Needs a bus
    /// with a journal (`ERR_UNSUPPORTED` otherwise).
    Spill,
}

impl Overflow {
    pub fn parse(s: &str) -> Result<Overflow> {
        match s {
            "block" => Ok(Overflow::Block),
            "drop-newest" => Ok(Overflow::DropNewest),
            "drop-oldest" => Ok(Overflow::DropOldest),
            "error" => Ok(Overflow::Error),
            "spill" => Ok(Overflow::Spill),
            other => Err(Error::invalid(format!(
                "unknown overflow policy '{other}' (expected block, drop-newest, drop-oldest, error)"
            ))),
        }
    }

    /// The error for `spill` on a bus without a journal.
    pub fn spill_needs_journal() -> Error {
        Error::new(ErrorKind::Unsupported, "overflow 'spill' needs a journal: new Bus({ journal: { dir } })")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Block => "block",
            Overflow::DropNewest => "drop-newest",
            Overflow::DropOldest => "drop-oldest",
            Overflow::Error => "error",
            Overflow::Spill => "spill",
        }
    }
}

pub const MAX_CAPACITY: usize = 1 << 24;

pub fn validate_capacity(capacity: i64) -> Result<usize> {
    if capacity < 1 || capacity as u64 > MAX_CAPACITY as u64 {
        return Err(Error::invalid(format!("capacity must be an integer from 1 to {MAX_CAPACITY}, got {capacity}")));
    }
    Ok(capacity as usize)
}
