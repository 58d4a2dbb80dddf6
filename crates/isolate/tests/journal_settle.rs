//! A process-isolated deployment on a journal settles each poll round of outcomes at once:
//! its acknowledgements take far fewer journal ACK records than one per event (as in-process
//! workers and JS handlers do).

mod common;
#[path = "../../sandbox/tests/support/settle_backlog.rs"]
mod settle_backlog;

use std::sync::Arc;

use common::helper_path;
use settle_backlog::{ack_records_for_backlog, EVENTS};
use sluice_isolate::ProcessIsolation;
use sluice_sandbox::Isolation;

#[test]
fn outcomes_of_a_poll_round_are_acknowledged_in_one_journal_record() {
    let factory = ProcessIsolation { helper: Some(helper_path().into()), degrade: false };
    let acks = ack_records_for_backlog(Isolation::Process { factory: Arc::new(factory), fallback: false });
    assert!((1..=EVENTS / 4).contains(&acks), "{acks} ACK records for {EVENTS} events");
}
