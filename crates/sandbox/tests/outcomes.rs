//! Status codes, outcome counters and the instance pool's behaviour on success and failure.

mod common;
use common::*;
use sluice_sandbox::{ErrorKind, Outcome};

#[test]
fn status_codes_map_to_ack_retry_reject() {
    let sb = deploy("probe", opts(&[]));
    assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
    assert_eq!(Probe::new(1).run(&sb).outcome, Outcome::Retry);
    assert_eq!(Probe::new(2).run(&sb).outcome, Outcome::Reject);

    let info = sb.info();
    assert_eq!(
        (info.outcomes.ack, info.outcomes.retry, info.outcomes.reject),
        (1, 1, 1)
    );
    assert_eq!(info.latency.count, 3);
    assert!(info.latency.p50 <= info.latency.max);
}

#[test]
fn unknown_status_is_an_error_but_keeps_the_instance() {
    let sb = deploy("probe", opts(&[]));
    let r = Probe::new(7).run(&sb);
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::HandlerStatus));
    match &r.outcome {
        Outcome::Error(e) => {
            assert_eq!(e.code(), "ERR_HANDLER_STATUS");
            assert!(e.message().contains('7'), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let info = sb.info();
    assert_eq!(info.instances.discarded, 0);
    assert_eq!(info.instances.created, 1);
    assert_eq!(info.outcomes.error_count(ErrorKind::HandlerStatus), 1);
}

#[test]
fn trap_discards_the_instance_and_later_events_still_succeed() {
    let sb = deploy("probe", opts(&[]));
    let mut p = Probe::new(0);
    p.op(UNREACHABLE, 0, 0, 0, 0);
    let r = p.run(&sb);
    assert_eq!(
        r.outcome.error_kind(),
        Some(ErrorKind::Trap),
        "{:?}",
        r.outcome
    );

    let info = sb.info();
    assert_eq!(info.instances.discarded, 1);
    assert_eq!(info.instances.live, 0);

    for _ in 0..3 {
        assert_eq!(Probe::new(0).run(&sb).outcome, Outcome::Ack);
    }
    let info = sb.info();
    assert_eq!(info.instances.created, 2, "one replacement, then reused");
    assert_eq!(info.instances.live, 1);
    assert_eq!(info.outcomes.ack, 3);
    assert_eq!(info.outcomes.error_count(ErrorKind::Trap), 1);
}

#[test]
fn trap_fixture_reports_err_trap_every_time() {
    let sb = deploy("trap", opts(&[]));
    for _ in 0..2 {
        let r = handle(&sb, b"x");
        match r.outcome {
            Outcome::Error(e) => {
                assert_eq!(e.code(), "ERR_TRAP");
                assert!(e.message().contains("unreachable"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sb.info().instances.discarded, 2);
}

#[test]
fn guest_state_persists_between_events_on_a_kept_instance() {
    // The init fixture retries when its init flag is unset: a kept instance keeps it.
    let sb = deploy("init", opts(&[]));
    for _ in 0..3 {
        assert_eq!(handle(&sb, b"").outcome, Outcome::Ack);
    }
    assert_eq!(sb.info().instances.created, 1);
}

#[test]
fn init_failure_refuses_the_deployment() {
    let mut o = opts(&[]);
    o.config = b"FAIL".to_vec();
    let err = try_deploy("init", o).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Instantiate);
    assert!(err.message().contains("sluice_init returned 1"), "{err}");
}

#[test]
fn deadline_in_the_past_is_a_timeout_without_running() {
    let sb = deploy("probe", opts(&[]));
    let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
    let r = Probe::new(0).run_until(&sb, Some(past));
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Timeout));
    assert_eq!(sb.info().instances.discarded, 0);
}

#[test]
fn logs_are_returned_even_when_the_handler_traps() {
    let sb = deploy("probe", opts(&[]));
    let mut p = Probe::new(0);
    p.log(4, "about to fail").op(UNREACHABLE, 0, 0, 0, 0);
    let r = p.run(&sb);
    assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Trap));
    assert!(
        r.logs
            .iter()
            .any(|l| l.message == "about to fail" && l.level == sluice_sandbox::LogLevel::Error),
        "{:?}",
        r.logs
    );
}

#[test]
fn envelope_fields_reach_the_guest_intact() {
    // The probe locates its script through the envelope's length fields: with a subject and
    // a traceparent present, a wrong offset would make it read garbage instead of status 2.
    let sb = deploy("probe", opts(&[]));
    let data = Probe::new(2).data();
    let env = sluice_sandbox::Envelope {
        subject: Some("order/42"),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        deadline_unix_nanos: Some(1),
        ..event(&data)
    };
    assert_eq!(sb.handle(&env, None).outcome, Outcome::Reject);
}
