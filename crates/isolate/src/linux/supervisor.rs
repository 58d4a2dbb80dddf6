//! The parent's supervisor of one helper: keeps the events that are in flight, notices the
//! helper's death (pidfd, checked whenever the completion ring is idle), restarts it and
//! redelivers what was in flight, in order (at-least-once). The oldest event in flight when
//! the helper dies is charged with the death; after `max_kills` charges it is given up
//! (`Completion::GaveUp`) so one poisonous event cannot keep killing helpers forever.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_sandbox::{HandleResult, SandboxOptions};

use crate::spawn::{Exit, Helper, HelperOptions, IsolateError};

#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    pub helper: HelperOptions,
    /// Deaths charged to one event before it is given up.
    pub max_kills: u32,
    /// Most events in flight (submitted, outcome not yet polled).
    pub window: usize,
    /// Attempts to start a replacement before the events in flight are given up.
    pub restart_attempts: u32,
}

impl SupervisorOptions {
    pub fn new(helper: HelperOptions) -> Self {
        SupervisorOptions { helper, max_kills: 3, window: 512, restart_attempts: 3 }
    }
}

/// What became of a submitted event. Every submitted event gets exactly one.
#[derive(Debug)]
pub enum Completion<T> {
    /// The helper ran it. `attempts` > 1 means it was redelivered after a helper death (so it
    /// may have run more than once: at-least-once).
    Done { item: T, result: HandleResult, attempts: u32 },
    /// Given up: it was in flight when the helper died `kills` times (or no replacement
    /// could be started: `kills` is then its count so far and `exit` the last death).
    GaveUp { item: T, exit: Option<Exit>, kills: u32, reason: String },
}

/// Counters for `dep.info()` and the tests.
#[derive(Clone, Debug, Default)]
pub struct SupervisorStats {
    pub helpers_started: u64,
    pub deaths: u64,
    /// Deaths by SIGSYS: the seccomp filter stopped a forbidden syscall.
    pub seccomp_kills: u64,
    pub redelivered: u64,
    pub gave_up: u64,
    pub last_exit: Option<Exit>,
    pub last_error: Option<String>,
    /// Spawn to READY of the current helper.
    pub start_time: Duration,
    /// From noticing a death to the first outcome of the replacement, most recent first (≤ 256).
    pub redelivery_latency: VecDeque<Duration>,
}

/// Sends SIGKILL to whichever helper is current (tests, admin). Never signals a recycled pid:
/// it holds a duplicate of the helper's pidfd.
#[derive(Clone, Default)]
pub struct KillSwitch(Arc<Mutex<Option<OwnedFd>>>);

impl KillSwitch {
    /// `true` if a helper was running and got the signal.
    pub fn kill(&self) -> bool {
        match &*self.0.lock().unwrap() {
            Some(fd) => unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32) == 0 },
            None => false,
        }
    }

    fn set(&self, helper: Option<&Helper>) {
        *self.0.lock().unwrap() = helper.and_then(|h| h.pidfd_dup().ok());
    }
}

struct InFlight<T> {
    /// The helper's sequence number; `None` until sent to the current helper.
    seq: Option<u64>,
    item: T,
    envelope: Vec<u8>,
    deadline: Option<Instant>,
    kills: u32,
    attempts: u32,
}

pub struct Supervisor<T> {
    opts: SupervisorOptions,
    module: Arc<[u8]>,
    sandbox: SandboxOptions,
    helper: Option<Helper>,
    pending: VecDeque<InFlight<T>>,
    /// The first `sent` events of `pending` went to the current helper (it is sent in order),
    /// so `flush` starts there instead of scanning the whole window per submit.
    sent: usize,
    stats: SupervisorStats,
    switch: KillSwitch,
    died_at: Option<Instant>,
    polled: Vec<(u64, HandleResult)>,
    /// `close` was called: the helper's exit is the end, not a death to recover from.
    closing: bool,
    /// Envelope buffers of finished events, handed back by `take_spare` (≤ `window`).
    spare: Vec<Vec<u8>>,
}

impl<T> Supervisor<T> {
    /// Starts the first helper; its errors (e.g. `ERR_ISOLATION_UNAVAILABLE`, `ERR_COMPILE`)
    /// are the deployment's.
    pub fn start(opts: SupervisorOptions, module: Arc<[u8]>, sandbox: SandboxOptions) -> Result<Self, IsolateError> {
        let helper = Helper::spawn(&opts.helper, &module, &sandbox)?;
        let mut s = Supervisor {
            opts,
            module,
            sandbox,
            helper: None,
            pending: VecDeque::new(),
            sent: 0,
            stats: SupervisorStats::default(),
            switch: KillSwitch::default(),
            died_at: None,
            polled: Vec::new(),
            closing: false,
            spare: Vec::new(),
        };
        s.adopt(helper);
        Ok(s)
    }

    fn adopt(&mut self, helper: Helper) {
        self.stats.helpers_started += 1;
        self.stats.start_time = helper.start_time();
        self.switch.set(Some(&helper));
        self.helper = Some(helper);
    }

    pub fn helper(&self) -> Option<&Helper> {
        self.helper.as_ref()
    }

    pub fn pid(&self) -> Option<i32> {
        self.helper.as_ref().map(|h| h.pid())
    }

    pub fn stats(&self) -> &SupervisorStats {
        &self.stats
    }

    pub fn kill_switch(&self) -> KillSwitch {
        self.switch.clone()
    }

    /// Events submitted whose completion can still come. After `close`, once the helper has
    /// exited, that is none: what it never started stays with the caller (see `close`).
    pub fn in_flight(&self) -> usize {
        if self.closing && self.helper.is_none() {
            0
        } else {
            self.pending.len()
        }
    }

    /// Stops for good (the deployment stops): the helper finishes the event it is running and
    /// exits; `poll` still returns every outcome it pushed, then `in_flight()` drops to 0. The
    /// events it never started get no completion: the caller counts them (the deployment
    /// settles them as failed, "stopped before the handler ran"). No restart after this.
    pub fn close(&mut self) {
        self.closing = true;
        if let Some(h) = &self.helper {
            h.close_requests();
        }
    }

    /// Moves the (cleared) envelope buffers of finished events into `into`, so the caller can
    /// encode the next envelopes without allocating.
    pub fn take_spare(&mut self, into: &mut Vec<Vec<u8>>) {
        for mut buf in self.spare.drain(..) {
            buf.clear();
            into.push(buf);
        }
    }

    /// Takes an event (an encoded envelope) for the helper. Refused, and handed back, when
    /// `window` events are already in flight: poll, then try again.
    pub fn submit(&mut self, item: T, envelope: Vec<u8>, deadline: Option<Instant>) -> Result<(), (T, Vec<u8>)> {
        if self.pending.len() >= self.opts.window || self.closing {
            return Err((item, envelope));
        }
        self.pending.push_back(InFlight { seq: None, item, envelope, deadline, kills: 0, attempts: 0 });
        self.flush();
        Ok(())
    }

    /// Sends what has not been sent to the current helper yet, in order, while it has room.
    fn flush(&mut self) {
        let Some(helper) = self.helper.as_mut() else { return };
        for ev in self.pending.range_mut(self.sent..) {
            match helper.submit(&ev.envelope, ev.deadline) {
                Ok(Some(seq)) => {
                    self.sent += 1;
                    ev.seq = Some(seq);
                    ev.attempts += 1;
                    if ev.attempts > 1 {
                        self.stats.redelivered += 1;
                    }
                }
                // Full, or dead: poll notices the death.
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Collects finished events into `out`, waiting up to `wait` for the first. Handles a
    /// helper death on the way: charge, give up, restart, redeliver.
    pub fn poll(&mut self, out: &mut Vec<Completion<T>>, wait: Duration) -> usize {
        let before = out.len();
        if self.helper.is_none() && !self.closing {
            self.restart(out, None);
        }
        let Some(helper) = self.helper.as_mut() else { return out.len() - before };
        self.polled.clear();
        let result = helper.poll(&mut self.polled, wait);
        for (seq, result) in self.polled.drain(..) {
            // Outcomes come back in submission order; search anyway rather than trust it.
            let Some(i) = self.pending.iter().take(self.sent).position(|e| e.seq == Some(seq)) else { continue };
            let ev = self.pending.remove(i).unwrap();
            self.sent -= 1;
            if let Some(at) = self.died_at.take() {
                let lat = &mut self.stats.redelivery_latency;
                lat.push_front(at.elapsed());
                lat.truncate(256);
            }
            if self.spare.len() < self.opts.window {
                self.spare.push(ev.envelope);
            }
            out.push(Completion::Done { item: ev.item, result, attempts: ev.attempts });
        }
        match result {
            Ok(_) => self.flush(),
            Err(IsolateError::Died(exit)) => self.on_death(out, Some(exit), None),
            Err(e) => self.on_death(out, None, Some(e.to_string())),
        }
        out.len() - before
    }

    fn on_death(&mut self, out: &mut Vec<Completion<T>>, exit: Option<Exit>, error: Option<String>) {
        if self.closing {
            // The exit we asked for (or a death while stopping): nothing to restart or charge.
            self.stats.last_exit = exit;
            self.switch.set(None);
            self.helper = None;
            return;
        }
        self.stats.deaths += 1;
        self.stats.last_exit = exit;
        if exit.is_some_and(Exit::is_seccomp_kill) {
            self.stats.seccomp_kills += 1;
        }
        if let Some(e) = error {
            self.stats.last_error = Some(e);
        }
        self.died_at = Some(Instant::now());
        self.switch.set(None);
        self.helper = None;
        // The oldest event that was sent is the one the helper was running (it works in order).
        if let Some(front) = self.pending.iter_mut().find(|e| e.seq.is_some()) {
            front.kills += 1;
        }
        let max = self.opts.max_kills;
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for mut ev in self.pending.drain(..) {
            if ev.kills >= max {
                self.stats.gave_up += 1;
                let reason = format!("the helper died {} times while running this event (last: {})", ev.kills, exit.map_or("protocol error".to_string(), |e| e.to_string()));
                out.push(Completion::GaveUp { item: ev.item, exit, kills: ev.kills, reason });
            } else {
                ev.seq = None;
                kept.push_back(ev);
            }
        }
        self.pending = kept;
        self.sent = 0;
        self.restart(out, exit);
    }

    /// Test builds: asks the current helper to issue `probe`; a death is handled like any
    /// other (charged to the oldest event in flight, restart, redelivery).
    #[cfg(feature = "escape-tests")]
    pub fn escape(&mut self, probe: crate::escape::Probe, arg: u64, out: &mut Vec<Completion<T>>) -> Option<i64> {
        let helper = self.helper.as_mut()?;
        match helper.escape(probe, arg) {
            Ok(rc) => Some(rc),
            Err(IsolateError::Died(exit)) => {
                self.on_death(out, Some(exit), None);
                None
            }
            Err(e) => {
                self.on_death(out, None, Some(e.to_string()));
                None
            }
        }
    }

    /// Starts a replacement and redelivers; if none can be started, everything in flight is
    /// given up (and the next poll or submit tries again).
    fn restart(&mut self, out: &mut Vec<Completion<T>>, exit: Option<Exit>) {
        let mut last = String::new();
        for _ in 0..self.opts.restart_attempts.max(1) {
            match Helper::spawn(&self.opts.helper, &self.module, &self.sandbox) {
                Ok(h) => {
                    self.adopt(h);
                    self.flush();
                    return;
                }
                Err(e) => last = e.to_string(),
            }
        }
        self.stats.last_error = Some(format!("cannot restart the helper: {last}"));
        self.sent = 0;
        for ev in self.pending.drain(..) {
            self.stats.gave_up += 1;
            out.push(Completion::GaveUp { item: ev.item, exit, kills: ev.kills, reason: format!("cannot restart the helper: {last}") });
        }
    }
}
