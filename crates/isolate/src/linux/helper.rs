//! The helper process (`sluice-helper`): sets itself up while single-threaded, loads one
//! module, locks itself down with seccomp, then runs events from the control channel until the
//! parent closes it. Order and reasons: `docs/isolation.md`.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use sluice_sandbox::{EngineConfig, HandlerModule, Sandbox, SandboxEngine};

use crate::filter;
use crate::lockdown;
use crate::protocol::{self, record, tag, Enc, Ready, CTL_FD, RING_FD};
use crate::ring::{Ring, Shm};

/// Command-line switches; the parent chooses them from the deployment's isolation mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct Args {
    pub namespaces: bool,
    pub seccomp: bool,
    /// Discovery mode: log syscalls outside the allow-list instead of killing (test builds).
    pub seccomp_log: bool,
}

impl Args {
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args { namespaces: true, seccomp: true, seccomp_log: false };
        for arg in args {
            match arg.as_str() {
                "--no-namespaces" => a.namespaces = false,
                "--no-seccomp" => a.seccomp = false,
                #[cfg(feature = "escape-tests")]
                "--seccomp-log" => a.seccomp_log = true,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(a)
    }

    pub fn to_vec(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.namespaces {
            v.push("--no-namespaces");
        }
        if !self.seccomp {
            v.push("--no-seccomp");
        }
        if self.seccomp_log {
            v.push("--seccomp-log");
        }
        v
    }
}

/// Reports a setup failure to the parent and exits. `code` is a sluice error code.
fn fail(ctl: &mut File, stage: &str, code: &str, message: &str) -> ! {
    let mut e = Enc::default();
    e.bytes(stage.as_bytes()).bytes(code.as_bytes()).bytes(message.as_bytes());
    let _ = protocol::write_frame(ctl, tag::FAILED, &e.0);
    unsafe { libc::_exit(1) }
}

const ISOLATION: &str = "ERR_ISOLATION_UNAVAILABLE";

/// The helper's `main`. Never returns.
pub fn main() -> ! {
    // SAFETY: fd 3 is the control socket the parent placed there; nothing else owns it.
    let mut ctl = unsafe { File::from_raw_fd(CTL_FD) };
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => fail(&mut ctl, "arguments", "ERR_INVALID_CONFIG", &e),
    };
    if let Err(e) = lockdown::close_other_fds() {
        fail(&mut ctl, "close descriptors", ISOLATION, &e);
    }
    let entered = if args.namespaces { lockdown::enter_namespaces() } else { lockdown::drop_root().map(drop) };
    if let Err(e) = entered {
        fail(&mut ctl, "namespaces", ISOLATION, &e);
    }
    // The child must not write before stage 0 has sent HELLO: it waits for this pipe to close.
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        fail(&mut ctl, "pipe", ISOLATION, &io::Error::last_os_error().to_string());
    }
    let pid = match lockdown::fork_as_sibling() {
        Ok(p) => p,
        Err(e) => fail(&mut ctl, "fork", ISOLATION, &e),
    };
    if pid > 0 {
        let _ = protocol::write_frame(&mut ctl, tag::HELLO, &(pid as u32).to_le_bytes());
        unsafe { libc::_exit(0) }
    }
    unsafe {
        libc::close(fds[1]);
        let mut b = 0u8;
        while libc::read(fds[0], (&mut b as *mut u8).cast(), 1) < 0 {}
        libc::close(fds[0]);
    }
    run_helper(&mut ctl, args)
}

fn run_helper(ctl: &mut File, args: Args) -> ! {
    let setup = || -> Result<(), String> {
        lockdown::die_with_parent()?;
        if args.namespaces {
            lockdown::empty_root()?;
        } else {
            lockdown::chdir_root()?;
        }
        lockdown::early_rlimits()?;
        lockdown::drop_privileges()
    };
    if let Err(e) = setup() {
        fail(ctl, "lockdown", ISOLATION, &e);
    }
    let interfaces = lockdown::interfaces();
    let inner_pid = unsafe { libc::getpid() } as u32;

    let mut buf = Vec::new();
    match protocol::read_frame(ctl, &mut buf) {
        Ok(tag::LOAD) => {}
        Ok(t) => fail(ctl, "load", "ERR_INVALID_CONFIG", &format!("expected LOAD, got frame {t}")),
        Err(_) => unsafe { libc::_exit(0) },
    }
    let (options, module, ring_capacity) = match protocol::decode_load(&buf) {
        Ok(v) => v,
        Err(e) => fail(ctl, "load", "ERR_INVALID_CONFIG", &e.to_string()),
    };
    if !ring_capacity.is_power_of_two() || !(4096..=(64 << 20)).contains(&ring_capacity) {
        fail(ctl, "load", "ERR_INVALID_CONFIG", &format!("bad ring capacity {ring_capacity}"));
    }
    // Map the rings and drop the descriptor: after lockdown the helper holds no memfd of ours.
    let shm = match Shm::map(unsafe { BorrowedFd::borrow_raw(RING_FD) }, ring_capacity) {
        Ok(m) => m,
        Err(e) => fail(ctl, "rings", ISOLATION, &format!("mmap: {e}")),
    };
    unsafe { libc::close(RING_FD) };
    // One engine per helper, sized for this deployment. Compilation runs on this thread: no
    // compiler thread pool is left behind, and nothing is compiled after lockdown.
    let config = EngineConfig {
        max_instances: (options.concurrency.max(1) * 2) as u32,
        max_memory_bytes: options.limits.memory_bytes.max(EngineConfig::default().max_memory_bytes),
        parallel_compilation: false,
        ..EngineConfig::default()
    };
    let sandbox = SandboxEngine::new(config)
        .and_then(|engine| HandlerModule::compile(&engine, module))
        .and_then(|module| Sandbox::new(Arc::new(module), options))
        .and_then(|sandbox| sandbox.prewarm().map(|_| sandbox));
    let sandbox = match sandbox {
        Ok(s) => s,
        Err(e) => fail(ctl, "load", e.code(), e.message()),
    };
    drop(buf);
    if let Err(e) = lockdown::late_rlimits() {
        fail(ctl, "lockdown", ISOLATION, &e);
    }
    if args.seccomp {
        if let Err(e) = filter::install(args.seccomp_log) {
            fail(ctl, "seccomp", ISOLATION, &e);
        }
    }
    let ready = Ready { inner_pid, interfaces, namespaces: args.namespaces, seccomp: args.seccomp };
    if protocol::write_frame(ctl, tag::READY, &protocol::encode_ready(&ready)).is_err() {
        unsafe { libc::_exit(0) }
    }
    serve(ctl, &sandbox, &shm)
}

/// The event loop after lockdown: requests from the request ring, outcomes into the
/// completion ring; oversized records over the control socket (`protocol::record`).
///
/// Outcomes are staged as they are written and published, with a wake-up if the parent
/// sleeps, once per batch: when the request ring runs dry (we are about to idle) or every
/// `NOTIFY_EVERY` outcomes. A parent that went to sleep gets a batch per wake-up instead of one
/// outcome, and a parent polling the ring pulls its `tail` line across once per batch, not per
/// outcome. Outcomes staged when the helper dies are lost with it; their events are still in
/// flight for the supervisor, which redelivers them (at-least-once).
fn serve(ctl: &mut File, sandbox: &Sandbox, shm: &Shm) -> ! {
    let (requests, completions) = (shm.requests(), shm.completions());
    let mut rec = Vec::with_capacity(64 << 10);
    let mut big = Vec::new();
    let mut outcome = Vec::with_capacity(4096);
    let mut idle = Idle::default();
    let mut unannounced = 0u32;
    loop {
        // Closed by the parent (the deployment stops): the event just finished has its outcome
        // in the completion ring; requests not started yet are left for the parent to count.
        if requests.is_closed() {
            completions.notify();
            unsafe { libc::_exit(0) }
        }
        match requests.try_pop(&mut rec) {
            Ok(true) => idle = Idle::default(),
            Ok(false) => {
                if unannounced > 0 {
                    completions.notify();
                    requests.notify_space();
                    unannounced = 0;
                }
                if idle.step() {
                    requests.wait_nonempty(Duration::from_millis(100));
                }
                continue;
            }
            // The parent wrote nonsense into our ring: stop.
            Err(_) => unsafe { libc::_exit(2) },
        }
        let (kind, body) = match rec.split_first() {
            Some((k, b)) => (*k, b),
            None => unsafe { libc::_exit(2) },
        };
        let payload: &[u8] = match kind {
            record::INLINE => body,
            record::ON_SOCKET => match protocol::read_frame(ctl, &mut big) {
                Ok(tag::HANDLE) => &big,
                _ => unsafe { libc::_exit(2) },
            },
            #[cfg(feature = "escape-tests")]
            record::ESCAPE => {
                let mut d = protocol::Dec(body);
                let (kind, arg) = (d.u32().unwrap_or(u32::MAX), d.u64().unwrap_or(0));
                let rc = match crate::escape::Probe::from_u32(kind) {
                    Some(p) => crate::escape::run(p, arg),
                    None => i64::MIN,
                };
                push(ctl, &completions, record::ESCAPE, &rc.to_le_bytes());
                completions.notify();
                continue;
            }
            _ => unsafe { libc::_exit(2) },
        };
        let (seq, left, envelope) = match protocol::decode_handle(payload) {
            Ok(v) => v,
            Err(_) => unsafe { libc::_exit(2) },
        };
        let deadline = left.map(|d| Instant::now() + d);
        let result = sandbox.handle_encoded(envelope, deadline);
        protocol::encode_outcome(&mut outcome, seq, &result);
        push(ctl, &completions, record::INLINE, &outcome);
        unannounced += 1;
        if unannounced >= NOTIFY_EVERY {
            completions.notify();
            requests.notify_space();
            unannounced = 0;
        }
    }
}

/// Outcomes written before they are published and the parent is woken, when requests keep
/// coming.
const NOTIFY_EVERY: u32 = 16;

/// What an idle helper does, in order: spins (a request is often a few hundred nanoseconds
/// away while the parent is submitting a batch), then yields the CPU between polls (on a
/// machine with fewer cores than busy threads, spinning would keep the parent — the one
/// thread that can give us work — off the core we hold), then sleeps on the ring's futex.
#[derive(Default)]
struct Idle {
    polls: u32,
    since: Option<Instant>,
}

/// Polls with `spin_loop` before yielding. Few: a `pause` takes ~40 ns on the AMD hosts we
/// measure on, and the cores an idle helper spins on are the ones the parent's threads need to
/// produce its next batch.
const SPINS: u32 = 64;
/// Idle time, counted from the first yield, before sleeping: longer than the gap between
/// events sent one at a time (a sleeping helper costs the parent a futex wake per event).
const YIELD_FOR: Duration = Duration::from_micros(200);

impl Idle {
    /// One empty poll; `true` when it is time to sleep.
    fn step(&mut self) -> bool {
        self.polls += 1;
        if self.polls <= SPINS {
            std::hint::spin_loop();
            return false;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() < YIELD_FOR {
            unsafe { libc::sched_yield() };
            false
        } else {
            true
        }
    }
}

/// Stages a completion (published by the caller's next `notify`), waiting for space;
/// oversized ones go over the socket behind a marker, published at once (the parent must be
/// reading the socket before we write a frame that may not fit in its buffer).
fn push(ctl: &mut File, ring: &Ring<'_>, kind: u8, payload: &[u8]) {
    let inline = payload.len() < ring.max_record();
    let (kind, body) = if inline { (kind, payload) } else { (record::ON_SOCKET, &[][..]) };
    loop {
        let pushed = ring.stage(body.len() + 1, |b| {
            b[0] = kind;
            b[1..].copy_from_slice(body);
        });
        match pushed {
            Ok(true) => break,
            Ok(false) => ring.wait_space(Duration::from_millis(100)),
            Err(_) => unsafe { libc::_exit(2) },
        }
    }
    if !inline {
        ring.notify();
        if protocol::write_frame(ctl, tag::OUTCOME, payload).is_err() {
            unsafe { libc::_exit(0) }
        }
    }
}
