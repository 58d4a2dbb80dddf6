//! Dead letters on a bus with a journal survive a restart, so `bus.replay` finds them.
//!
//! Each dead-letter topic has an internal journal consumer `~dead.<topic>`. When an event is
//! dead-lettered, its original is appended for that consumer (one record, addressed to it
//! alone) while the bus keeps it in the in-memory retention too, with the record's sequence
//! number. Replaying one acknowledges its record after the re-publish was routed (and, for
//! durable subscriptions, appended), and so does evicting one. A bus opening the directory
//! reads every `~dead.*` consumer's unacknowledged records back into the retention.
//!
//! Crash order: the dead letter's record is appended before the settle batch's ACK of the
//! original event (both go through the journal's one ordered buffer), and a replay's
//! re-published records before the ACK of the dead letter; a crash cuts a suffix of the log, so
//! it can leave a duplicate (the original delivered and dead-lettered again, or a dead letter
//! replayed again) but never lose one. A dead letter's record follows the fsync policy like an
//! ack; nobody waits for it.

use super::record::{from_stored, to_record};
use super::Durable;
use crate::error::Result;
use crate::event::Event;
use crate::subscription::Origin;
use sluice_journal::{Seq, To};
use std::sync::Arc;

/// Journal consumers holding dead letters for replay are named with this prefix and their topic.
pub const DEAD_PREFIX: &str = "~dead.";

fn consumer(topic: &str) -> String {
    format!("{DEAD_PREFIX}{topic}")
}

/// Dead letters of one topic read back at open, oldest first, with their journal records.
pub(crate) struct Recovered {
    pub topic: String,
    pub letters: Vec<(Arc<Event>, Seq)>,
}

impl Durable {
    /// Appends the original of a dead letter for `topic`'s consumer (registered on first use).
    pub(crate) fn persist_dead_letter(&self, origin: &Origin, topic: &str, ev: &Event) -> Result<Seq> {
        let name = consumer(topic);
        self.journal.register_consumer(&name)?;
        Ok(self.journal.append_to(&to_record(origin, ev), To::Only(&[name.as_str()]))?)
    }

    /// Acknowledges dead letters of `topic` that were replayed or evicted.
    pub(crate) fn release_dead_letters(&self, topic: &str, seqs: &[Seq]) -> Result<()> {
        if !seqs.is_empty() {
            self.journal.ack_many(&consumer(topic), seqs)?;
        }
        Ok(())
    }

    /// Every dead letter not replayed yet, per topic (for the retention of a bus opening).
    pub(crate) fn recover_dead_letters(&self) -> Result<Vec<Recovered>> {
        let mut out = Vec::new();
        for c in self.journal.consumers() {
            let Some(topic) = c.name.strip_prefix(DEAD_PREFIX) else { continue };
            let mut letters = Vec::with_capacity(c.pending as usize);
            for stored in self.journal.unacked(&c.name)? {
                let stored = stored?;
                let seq = stored.seq;
                letters.push((from_stored(stored, 0), seq));
            }
            out.push(Recovered { topic: topic.to_string(), letters });
        }
        Ok(out)
    }
}
