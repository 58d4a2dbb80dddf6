//! A WASM deployment on a journal settles each batch it took at once: its acknowledgements are
//! one journal ACK record per batch, not one per event (the JS path does the same).

#[path = "support/settle_backlog.rs"]
mod settle_backlog;

use settle_backlog::{ack_records_for_backlog, EVENTS};

#[test]
fn a_batch_of_acknowledgements_is_one_journal_record() {
    // EVENTS / 32 full batches; a worker that came back to a partly refilled queue may take
    // one more, smaller batch. One record per event would be EVENTS.
    let acks = ack_records_for_backlog(Default::default());
    assert!((1..=4).contains(&acks), "{acks} ACK records for {EVENTS} events");
}
