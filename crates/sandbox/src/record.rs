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
    rec.note(Kind::HandlerStart, |r| r.sub(sub.id()).event(ev).name(name).detail(hash));
    let watched = rec.on(Kind::HandlerEnd) || rec.on(Kind::SandboxTrap) || rec.on(Kind::SandboxLimit);
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
    let Some(t0) = run.started else { return };
    let us = t0.elapsed().as_micros() as u64;
    let why = outcome_name(o);
    rec.note(Kind::HandlerEnd, |r| r.sub(sub.id()).event(ev).name(name).detail(hash).reason(why).duration_us(us));
    if let Outcome::Error(e) = o {
        let kind = match e.kind() {
            ErrorKind::Timeout | ErrorKind::OutOfFuel | ErrorKind::MemoryLimit | ErrorKind::StackOverflow => {
                Kind::SandboxLimit
            }
            _ => Kind::SandboxTrap,
        };
        rec.note(kind, |r| r.sub(sub.id()).event(ev).name(name).detail(e.message()).reason(why).duration_us(us));
    }
}
