//! Parent side: start a helper, load a module into it, run events, notice its death, reap it.
//!
//! The helper is started without forking Node's JS thread state into anything that runs JS:
//! `Command` forks and the child runs only `dup2` and `prctl` (async-signal-safe) before
//! `execve`. The helper then re-parents its real process onto us with `CLONE_PARENT`, so the
//! process we supervise is our child: we hold a pidfd for it and reap it ourselves.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_sandbox::{HandleResult, SandboxOptions};

use crate::helper::Args;
use crate::protocol::{self, record, tag, Dec, Ready, CTL_FD, RING_CAPACITY, RING_FD};
use crate::ring::{Corrupt, Shm};

/// How a helper ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Killed by seccomp (or by a forged SIGSYS, which the helper cannot send itself).
    pub fn is_seccomp_kill(self) -> bool {
        self == Exit::Signal(libc::SIGSYS)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) if *s == libc::SIGSYS => write!(f, "killed by SIGSYS (seccomp violation)"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Why a helper could not be started or stopped serving.
#[derive(Debug)]
pub enum IsolateError {
    /// The kernel refused a namespace, a mount, a limit or seccomp (`ERR_ISOLATION_UNAVAILABLE`).
    Unavailable { stage: String, message: String },
    /// The module or options were refused inside the helper; `code` is the sandbox's code.
    Load { code: String, message: String },
    /// The helper binary could not be started.
    Spawn(io::Error),
    /// The helper died; `Exit` says how.
    Died(Exit),
    /// The helper broke the channel protocol or did not answer in time.
    Protocol(String),
}

impl IsolateError {
    pub fn code(&self) -> &str {
        match self {
            IsolateError::Unavailable { .. } => "ERR_ISOLATION_UNAVAILABLE",
            IsolateError::Load { code, .. } => code,
            IsolateError::Spawn(_) | IsolateError::Died(_) | IsolateError::Protocol(_) => "ERR_HELPER",
        }
    }
}

impl fmt::Display for IsolateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsolateError::Unavailable { stage, message } => write!(f, "isolation unavailable at {stage}: {message}"),
            IsolateError::Load { code, message } => write!(f, "{code}: {message}"),
            IsolateError::Spawn(e) => write!(f, "cannot start the helper: {e}"),
            IsolateError::Died(exit) => write!(f, "helper {exit}"),
            IsolateError::Protocol(m) => write!(f, "helper protocol: {m}"),
        }
    }
}

impl std::error::Error for IsolateError {}

/// Where the helper is and how to lock it down.
#[derive(Clone, Debug)]
pub struct HelperOptions {
    pub path: PathBuf,
    pub args: Args,
    /// Setup, compile and lockdown must finish within this.
    pub start_timeout: Duration,
}

impl HelperOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        HelperOptions {
            path: path.into(),
            args: Args { namespaces: true, seccomp: true, seccomp_log: false },
            start_timeout: Duration::from_secs(20),
        }
    }
}

/// A running, locked-down helper that has loaded one module.
pub struct Helper {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    ctl: UnixStream,
    shm: Shm,
    ready: Ready,
    exit: Option<Exit>,
    buf: Vec<u8>,
    frame: Vec<u8>,
    seq: u64,
    /// Submitted and not yet completed.
    in_flight: usize,
    survived: Option<i64>,
    started_in: Duration,
    /// Last look at the pidfd from a non-waiting `poll` (a syscall: not on every empty poll).
    checked_at: Instant,
    /// Requests staged by `submit` that the helper has not been told about (see `announce`).
    unannounced: bool,
}

/// A `poll` that finds the completion ring empty looks at the pidfd at most this often (death
/// is still noticed within ~1 ms while the caller keeps polling, far inside the 100 ms goal).
const DEATH_CHECK_EVERY: Duration = Duration::from_millis(1);
/// A waiting `poll` spins this long on an empty ring before sleeping on its futex: an outcome
/// is usually microseconds away, and a sleeping consumer costs the helper a futex wake per
/// record and this thread a wake-up (tens of µs).
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);
/// Empty polls that spin before a waiting `poll` starts yielding the CPU instead.
const SPIN_POLLS: u32 = 64;

fn protocol_err(e: impl fmt::Display) -> IsolateError {
    IsolateError::Protocol(e.to_string())
}

fn decode_failed(payload: &[u8]) -> IsolateError {
    let mut d = Dec(payload);
    let (stage, code, message) = match (d.string(), d.string(), d.string()) {
        (Ok(s), Ok(c), Ok(m)) => (s, c, m),
        _ => return IsolateError::Protocol("malformed FAILED frame".into()),
    };
    if code == "ERR_ISOLATION_UNAVAILABLE" {
        IsolateError::Unavailable { stage, message }
    } else {
        IsolateError::Load { code, message }
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own (pidfd_open sets close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A close-on-exec duplicate numbered above the helper's fixed descriptors, so the `dup2`s
/// after fork cannot overwrite one another.
fn dup_high(fd: i32) -> io::Result<OwnedFd> {
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Starts the helper process with the control socket on fd 3 and the ring memfd on fd 4, and
/// hands back the stage-0 child and our end of the socket.
fn start(opts: &HelperOptions, ring: &OwnedFd) -> Result<(std::process::Child, UnixStream), IsolateError> {
    let (ours, theirs) = UnixStream::pair().map_err(IsolateError::Spawn)?;
    let theirs = dup_high(theirs.as_raw_fd()).map_err(IsolateError::Spawn)?;
    let ring = dup_high(ring.as_raw_fd()).map_err(IsolateError::Spawn)?;
    let (child_fd, ring_fd) = (theirs.as_raw_fd(), ring.as_raw_fd());
    let mut cmd = Command::new(&opts.path);
    cmd.args(opts.args.to_vec())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe calls (dup2, prctl) between fork and exec. dup2 clears
    // close-on-exec on the copies; the originals (numbered >= 10) close at exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(child_fd, CTL_FD) < 0 || libc::dup2(ring_fd, RING_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(IsolateError::Spawn)?;
    drop((theirs, ring));
    Ok((child, ours))
}

impl Helper {
    /// Starts a helper, waits until it is locked down with `module` loaded and instances
    /// created. Errors name the stage that failed; nothing is downgraded here.
    pub fn spawn(opts: &HelperOptions, module: &[u8], options: &SandboxOptions) -> Result<Helper, IsolateError> {
        let started = Instant::now();
        let (shm, ring_fd) = Shm::create(RING_CAPACITY).map_err(IsolateError::Spawn)?;
        let spawned = start(opts, &ring_fd);
        drop(ring_fd);
        let (mut stage0, mut ctl) = spawned?;
        let _ = ctl.set_read_timeout(Some(opts.start_timeout));
        let mut buf = Vec::new();
        let hello = protocol::read_frame(&mut ctl, &mut buf);
        // Stage 0 exits right after HELLO (or FAILED); reap it either way.
        let stage0_status = stage0.wait().map_err(IsolateError::Spawn)?;
        let pid = match hello {
            Ok(tag::HELLO) if buf.len() == 4 => u32::from_le_bytes(buf[..4].try_into().unwrap()) as libc::pid_t,
            Ok(tag::FAILED) => return Err(decode_failed(&buf)),
            Ok(t) => return Err(protocol_err(format!("expected HELLO, got frame {t}"))),
            Err(e) => return Err(protocol_err(format!("no HELLO from the helper ({e}); stage 0 {stage0_status}"))),
        };
        let pidfd = pidfd_open(pid).map_err(IsolateError::Spawn)?;
        let mut helper = Helper {
            pid,
            pidfd,
            ctl,
            shm,
            ready: Ready { inner_pid: 0, interfaces: Vec::new(), namespaces: false, seccomp: false },
            exit: None,
            buf,
            frame: Vec::new(),
            seq: 0,
            in_flight: 0,
            survived: None,
            started_in: Duration::ZERO,
            checked_at: Instant::now(),
            unannounced: false,
        };
        let load = protocol::encode_load(module, options, RING_CAPACITY);
        if protocol::write_frame(&mut helper.ctl, tag::LOAD, &load).is_err() {
            return Err(helper.death_error());
        }
        match protocol::read_frame(&mut helper.ctl, &mut helper.buf) {
            Ok(tag::READY) => helper.ready = protocol::decode_ready(&helper.buf).map_err(protocol_err)?,
            Ok(tag::FAILED) => return Err(decode_failed(&helper.buf)),
            Ok(t) => return Err(protocol_err(format!("expected READY, got frame {t}"))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                return Err(protocol_err(format!("helper not ready within {:?}", opts.start_timeout)))
            }
            Err(_) => return Err(helper.death_error()),
        }
        let _ = helper.ctl.set_read_timeout(None);
        helper.started_in = started.elapsed();
        Ok(helper)
    }

    /// The helper's pid as the parent sees it.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// A duplicate of the helper's pidfd (for a `KillSwitch`).
    pub fn pidfd_dup(&self) -> io::Result<OwnedFd> {
        self.pidfd.try_clone()
    }

    /// What the helper reported from inside after lockdown.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// From spawn to READY (setup, compile, instances, lockdown).
    pub fn start_time(&self) -> Duration {
        self.started_in
    }

    /// The isolation actually in force: `wasm+ns+seccomp`, `wasm+seccomp` or `wasm`.
    pub fn sandbox_level(&self) -> &'static str {
        match (self.ready.namespaces, self.ready.seccomp) {
            (true, true) => "wasm+ns+seccomp",
            (false, true) => "wasm+seccomp",
            _ => "wasm",
        }
    }

    /// Events submitted whose outcome has not been polled yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues one encoded envelope (docs/abi.md) for the helper without waiting. Returns its
    /// sequence number, or `None` when the request ring is full (poll, then try again). An
    /// envelope too big for the ring is sent over the socket, only when nothing is in flight.
    /// The helper sees inline events from the next `poll` on (or `handle`), which publishes
    /// everything submitted since the last one at once.
    pub fn submit(&mut self, envelope: &[u8], deadline: Option<Instant>) -> Result<Option<u64>, IsolateError> {
        if let Some(exit) = self.exit {
            return Err(IsolateError::Died(exit));
        }
        let seq = self.seq + 1;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64);
        let ring = self.shm.requests();
        let len = protocol::handle_len(envelope);
        let inline = len < ring.max_record();
        if !inline && self.in_flight > 0 {
            return Ok(None);
        }
        // Inline: written straight into the ring slot (no intermediate frame), staged: the
        // batch a caller submits is published, and the helper woken, once, by the next `poll`
        // (a fence and a store to the shared `tail` line per batch instead of per event).
        let pushed = if inline {
            ring.stage(len + 1, |b| {
                b[0] = record::INLINE;
                protocol::write_handle(&mut b[1..], seq, left, envelope);
            })
        } else {
            ring.stage(1, |b| b[0] = record::ON_SOCKET)
        };
        match pushed {
            Ok(true) => self.unannounced = true,
            Ok(false) => return Ok(None),
            Err(c) => return Err(self.corrupt(c)),
        }
        if !inline {
            // The helper must be reading the socket before we write a frame that may not fit
            // in its buffer.
            self.announce();
            protocol::encode_handle(&mut self.frame, seq, left, envelope);
            if protocol::write_frame(&mut self.ctl, tag::HANDLE, &self.frame).is_err() {
                return Err(self.death_error());
            }
        }
        self.seq = seq;
        self.in_flight += 1;
        Ok(Some(seq))
    }

    /// Publishes what `submit` staged and wakes the helper if it sleeps.
    fn announce(&mut self) {
        if std::mem::take(&mut self.unannounced) {
            self.shm.requests().notify();
        }
    }

    /// Collects completed outcomes `(seq, result)` into `out`, waiting up to `wait` for the
    /// first one. Publishes the events submitted since the last poll first (every caller polls
    /// after submitting: that is when the helper learns of them). Outcomes the helper finished before dying are still delivered; after that,
    /// `Err(Died)` reports the death (the pidfd is checked whenever the ring is idle).
    ///
    /// Waiting: spins for `SPIN_POLLS` empty polls, then yields the CPU between polls until
    /// `SPIN_BEFORE_PARK` has passed (on a 2-core machine the helper may need this core to
    /// produce what we wait for), then sleeps on the ring's futex. The clock is read only once
    /// the ring is found empty.
    pub fn poll(&mut self, out: &mut Vec<(u64, HandleResult)>, wait: Duration) -> Result<usize, IsolateError> {
        self.announce();
        let mut start = None;
        let mut empty_polls = 0u32;
        let mut got = 0;
        loop {
            match self.next_completion() {
                Ok(Some(done)) => {
                    out.push(done);
                    got += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if got > 0 {
                // The helper may be waiting for the space we just made.
                self.shm.completions().notify_space();
                return Ok(got);
            }
            let now = Instant::now();
            let start = *start.get_or_insert(now);
            let until = start + wait;
            let parking = now < until && now.duration_since(start) >= SPIN_BEFORE_PARK;
            // The pidfd is looked at before sleeping, otherwise only every DEATH_CHECK_EVERY.
            let look = parking || now.duration_since(self.checked_at) >= DEATH_CHECK_EVERY;
            if look {
                self.checked_at = now;
            }
            if self.exit.is_some() || (look && self.wait(Some(Duration::ZERO)).is_some()) {
                // Dead: the ring may still hold what it finished; drain that first.
                if self.shm.completions().is_empty() {
                    return Err(IsolateError::Died(self.exit.unwrap()));
                }
                continue;
            }
            if now >= until {
                return Ok(0);
            }
            if !parking {
                empty_polls += 1;
                if empty_polls <= SPIN_POLLS {
                    std::hint::spin_loop();
                } else {
                    unsafe { libc::sched_yield() };
                }
                continue;
            }
            // Short slices: the pidfd is looked at between them (death seen within ~10 ms).
            self.shm.completions().wait_nonempty((until - now).min(Duration::from_millis(10)));
        }
    }

    /// One record from the completion ring, if any.
    fn next_completion(&mut self) -> Result<Option<(u64, HandleResult)>, IsolateError> {
        loop {
            let popped = self.shm.completions().try_pop(&mut self.buf);
            match popped {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(c) => return Err(self.corrupt(c)),
            }
            let kind = self.buf.first().copied();
            let payload = match kind {
                Some(record::INLINE) => &self.buf[1..],
                Some(record::ON_SOCKET) => match protocol::read_frame(&mut self.ctl, &mut self.frame) {
                    Ok(tag::OUTCOME) => &self.frame[..],
                    _ => return Err(self.death_error()),
                },
                Some(record::ESCAPE) if self.buf.len() == 9 => {
                    self.survived = Some(i64::from_le_bytes(self.buf[1..9].try_into().unwrap()));
                    continue;
                }
                _ => return Err(self.corrupt(Corrupt(format!("unknown completion record {kind:?}")))),
            };
            let decoded = protocol::decode_outcome(payload);
            let (seq, result) = match decoded {
                Ok(v) => v,
                Err(e) => return Err(self.corrupt(Corrupt(e.to_string()))),
            };
            if self.in_flight == 0 || seq > self.seq {
                return Err(self.corrupt(Corrupt(format!("outcome for event {seq}, never sent"))));
            }
            self.in_flight -= 1;
            return Ok(Some((seq, result)));
        }
    }

    /// The helper broke the shared-memory protocol: treat it as compromised and kill it.
    fn corrupt(&mut self, c: Corrupt) -> IsolateError {
        self.kill();
        self.wait(None);
        IsolateError::Protocol(format!("helper {} corrupted the channel: {}", self.pid, c.0))
    }

    /// Runs one encoded envelope and waits for its outcome (nothing else may be in flight).
    pub fn handle(&mut self, envelope: &[u8], deadline: Option<Instant>) -> Result<HandleResult, IsolateError> {
        let seq = loop {
            if let Some(seq) = self.submit(envelope, deadline)? {
                break seq;
            }
            self.shm.requests().wait_space(Duration::from_millis(10));
        };
        let mut out = Vec::with_capacity(1);
        loop {
            self.poll(&mut out, Duration::from_millis(100))?;
            if let Some(i) = out.iter().position(|(s, _)| *s == seq) {
                return Ok(out.swap_remove(i).1);
            }
        }
    }

    /// Test builds: asks the helper to issue `probe`. `Ok(rc)` if it survived.
    #[cfg(feature = "escape-tests")]
    pub fn escape(&mut self, probe: crate::escape::Probe, arg: u64) -> Result<i64, IsolateError> {
        let pushed = self.shm.requests().try_push(13, |b| {
            b[0] = record::ESCAPE;
            b[1..5].copy_from_slice(&(probe as u32).to_le_bytes());
            b[5..13].copy_from_slice(&arg.to_le_bytes());
        });
        self.shm.requests().notify();
        if !matches!(pushed, Ok(true)) {
            return Err(IsolateError::Protocol("request ring full".into()));
        }
        let mut out = Vec::new();
        loop {
            self.poll(&mut out, Duration::from_millis(100))?;
            if let Some(rc) = self.survived.take() {
                return Ok(rc);
            }
        }
    }

    /// The channel broke: the helper is dead or dying. Reap it and say how it ended.
    fn death_error(&mut self) -> IsolateError {
        match self.wait(Some(Duration::from_secs(5))) {
            Some(exit) => IsolateError::Died(exit),
            None => {
                self.kill();
                IsolateError::Died(self.wait(None).unwrap_or(Exit::Signal(libc::SIGKILL)))
            }
        }
    }

    /// Asks the helper to stop taking requests: it finishes the event it is running, pushes
    /// that outcome and exits 0. Outcomes already pushed can still be polled.
    pub fn close_requests(&self) {
        self.shm.requests().close();
    }

    /// Sends SIGKILL (through the pidfd: never to a recycled pid).
    pub fn kill(&self) {
        if self.exit.is_none() {
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32) };
        }
    }

    /// Waits until the helper has exited (at most `timeout`), reaps it and returns how it
    /// ended; `None` if it is still running.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<Exit> {
        if let Some(exit) = self.exit {
            return Some(exit);
        }
        if let Some(t) = timeout {
            // A pidfd becomes readable when the process exits.
            let mut pfd = libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = t.as_millis().min(i32::MAX as u128) as i32;
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc <= 0 {
                return None;
            }
        }
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            let rc = unsafe { libc::waitid(libc::P_PIDFD, self.pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
            if rc == 0 {
                break;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return None;
            }
        }
        let status = unsafe { info.si_status() };
        let exit = if info.si_code == libc::CLD_EXITED { Exit::Code(status) } else { Exit::Signal(status) };
        self.exit = Some(exit);
        Some(exit)
    }
}

impl Drop for Helper {
    /// Kills and reaps the helper: no zombie, no descriptor left behind.
    fn drop(&mut self) {
        self.shm.requests().close();
        if self.exit.is_none() {
            self.kill();
            self.wait(None);
        }
    }
}
