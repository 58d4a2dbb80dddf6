//! What the dispatcher tells the bus's lifecycle recorder about a WASM handler: start, end with
//! outcome and duration (an end record's time is the end), and traps or limits hit. Costs one relaxed load per event while nobody
//! watches (see `sluice_core::observe`).

use std::sync::Arc;
use std::time::Instant;

use sluice_core::observe::{Kind, Recorder};
use sluice_core::{Event, Subscription};

use crate::error::ErrorKind;
use crate::pool::Outcome;

/// A handler run being timed; `None` fields when nobody watches its end.
pub(crate) struct Run {
    started: Option<Instant>,
}

pub(crate) fn start(rec: &Recorder, sub: &Subscription, ev: &Arc<Event>, name: &Arc<str>, hash: &str) -> Run {
    rec.note_for(Kind::HandlerStart, Some(ev), 1, |r| r.sub(sub.id()).name(name).detail(hash));
    // The clock is read only when a record will carry the duration (a count needs none).
    let ev = Some(ev);
    let watched = rec.keeps(Kind::HandlerEnd, ev) || rec.keeps(Kind::SandboxTrap, ev) || rec.keeps(Kind::SandboxLimit, ev);
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

pub(crate) fn end(rec: &Recorder, run: Run, sub: &Subscription, ev: &Arc<Event>, name: &Arc<str>, hash: &str, o: &Outcome) {
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
}
