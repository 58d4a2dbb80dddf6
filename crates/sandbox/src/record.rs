//! What the dispatcher tells the bus's lifecycle recorder about a WASM handler: start, end with
//! outcome and duration (an end record's time is the end), and traps or limits hit. Costs one relaxed load per event while nobody
//! watches (see `sluice_core::observe`).

use std::sync::Arc;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_core::audit::Held;
use sluice_core::observe::{Kind, Recorder};
use sluice_core::{Bus, Event, Outcome as Verdict, Subscription};

use crate::error::ErrorKind;
use crate::pool::Outcome;

/// A handler run being timed; `None` fields when nobody watches its end.
pub(crate) struct Run {
    started: Option<Instant>,
}

pub(crate) fn start(bus: &Bus, sub: &Subscription, ev: &Arc<Event>, name: &Arc<str>, hash: &str) -> Run {
    let rec = bus.recorder();
    rec.note_for(Kind::HandlerStart, Some(ev), 1, |r| r.sub(sub.id()).name(name).detail(hash));
    // The clock is read only when a record or an audit will carry the duration (a count needs
    // none).
    let ev = Some(ev);
    let watched = rec.keeps(Kind::HandlerEnd, ev)
        || rec.keeps(Kind::SandboxTrap, ev)
        || rec.keeps(Kind::SandboxLimit, ev)
        || bus.audit_gate().on();
    Run { started: watched.then(Instant::now) }
}

/// The outcome as observers see it: `ack`, `retry`, `reject`, or the error code.
pub(crate) fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ack => "ack",
        Outcome::Retry => "retry",
        Outcome::Reject => "reject",
        Outcome::Error(e) => e.code(),
    }
}

/// Records the end of a run; returns its duration in µs (0 when it was not timed).
pub(crate) fn end(rec: &Recorder, run: Run, sub: &Subscription, ev: &Arc<Event>, name: &Arc<str>, hash: &str, o: &Outcome) -> u64 {
    let us = run.started.map_or(0, |t0| t0.elapsed().as_micros() as u64);
    let why = outcome_name(o);
    rec.note_for(Kind::HandlerEnd, Some(ev), 1, |r| r.sub(sub.id()).name(name).detail(hash).reason(why).duration_us(us));
    if let Outcome::Error(e) = o {
        let kind = match e.kind() {
            ErrorKind::Timeout | ErrorKind::OutOfFuel | ErrorKind::MemoryLimit | ErrorKind::StackOverflow => {
                Kind::SandboxLimit
            }
            _ => Kind::SandboxTrap,
        };
        rec.note_for(kind, Some(ev), 1, |r| r.sub(sub.id()).name(name).detail(e.message()).reason(why).duration_us(us));
    }
    us
}

/// What an audit record says about a finished run besides its event.
pub(crate) struct Ran<'a> {
    pub name: &'a Arc<str>,
    pub hash: &'a str,
    pub outcome: &'static str,
    pub duration_us: u64,
}

/// Settles a run's verdict with the caller's batch, or, while an audit observer is attached,
/// holds it in the bus's audit gate until its record is durable (`sluice_core::audit`). A
/// verdict that needs no audit record goes to `out`, for the caller to settle with the rest of
/// its batch (`Subscription::settle_all`: one journal record for the batch's
/// acknowledgements); an untracked subscription's ack needs no settle at all. `stopping` lets
/// a worker whose deployment stops go past a full gate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle_later(
    bus: &Bus,
    sub: &Arc<Subscription>,
    ev: &Arc<Event>,
    tag: u64,
    verdict: Verdict,
    ran: Ran<'_>,
    stopping: &AtomicBool,
    out: &mut Vec<(u64, Verdict)>,
) {
    let gate = bus.audit_gate();
    if !gate.on() {
        if tag != 0 || verdict != Verdict::Ack {
            out.push((tag, verdict));
        }
        return;
    }
    let mut held = Held::new(sub, tag, verdict, ev);
    held.name = ran.name.clone();
    held.module = ran.hash.into();
    held.outcome = ran.outcome;
    held.duration_us = ran.duration_us;
    gate.hold(bus, held, || stopping.load(Ordering::Relaxed));
}
