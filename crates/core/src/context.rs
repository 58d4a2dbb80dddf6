//! A Context tree: cancel, deadline and values flowing from a publisher through every listener.
//!
//! Cancelling a parent cancels every child. The effective deadline of a child is the earlier of
//! its own and its parent's. `err()` says which way a Context ended: `Canceled` or
//! `DeadlineExceeded`. Deadlines are checked lazily against a monotonic clock (no timer thread);
//! threads that block on a Context register a waker so `cancel()` wakes them at once.

use crate::error::{Error, ErrorKind};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LIVE: u8 = 0;
const CANCELED: u8 = 1;
const DEADLINE: u8 = 2;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
pub struct Context(Arc<Inner>);

struct Inner {
    id: u64,
    parent: Option<Context>,
    deadline: Option<Deadline>,
    state: AtomicU8,
    reason: Mutex<Option<String>>,
    children: Mutex<Vec<Weak<Inner>>>,
    wakers: Mutex<Vec<(u64, Waker)>>,
    value: Option<(Arc<str>, Arc<str>)>,
    /// The background root can never end; every derived Context can.
    cancelable: bool,
}

/// A deadline on both clocks: monotonic for checks, wall-clock milliseconds for envelopes that
/// leave the process (events, WASM guests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub unix_ms: u64,
}

impl Deadline {
    pub fn after(d: Duration) -> Self {
        Deadline { at: Instant::now() + d, unix_ms: unix_now_ms().saturating_add(d.as_millis() as u64) }
    }
    pub fn at_unix_ms(unix_ms: u64) -> Self {
        let now = unix_now_ms();
        let now_i = Instant::now();
        let at = if unix_ms >= now {
            now_i + Duration::from_millis(unix_ms - now)
        } else {
            now_i.checked_sub(Duration::from_millis(now - unix_ms)).unwrap_or(now_i)
        };
        Deadline { at, unix_ms }
    }
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

pub fn unix_now_ms() -> u64 {
    // Every single publish stamps its event: read the clock directly, without the checked
    // timespec arithmetic of `SystemTime::duration_since` (which cost more than the read).
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid out-pointer; CLOCK_REALTIME always exists.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } == 0 && ts.tv_sec >= 0 {
            return ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000;
        }
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("id", &self.0.id).field("deadline", &self.0.deadline).finish()
    }
}

impl Context {
    /// The root: never canceled, no deadline.
    pub fn background() -> Self {
        Context::child_of(None, None, None)
    }

    fn child_of(parent: Option<&Context>, own: Option<Deadline>, value: Option<(Arc<str>, Arc<str>)>) -> Self {
        let deadline = match (parent.and_then(|p| p.0.deadline), own) {
            (Some(p), Some(o)) => Some(if o.at < p.at { o } else { p }),
            (p, o) => o.or(p),
        };
        let ctx = Context(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            parent: parent.cloned(),
            deadline,
            state: AtomicU8::new(LIVE),
            reason: Mutex::new(None),
            children: Mutex::new(Vec::new()),
            wakers: Mutex::new(Vec::new()),
            value,
            cancelable: parent.is_some(),
        }));
        if let Some(p) = parent {
            let mut children = p.0.children.lock().unwrap();
            // Registration happens under the parent's children lock, and cancel() sets the state
            // before taking that lock, so a child is either registered in time or sees the state.
            match p.0.state.load(Ordering::Acquire) {
                LIVE => {
                    children.retain(|w| w.strong_count() > 0);
                    children.push(Arc::downgrade(&ctx.0));
                }
                s => {
                    drop(children);
                    ctx.finish(s, p.reason());
                }
            }
        }
        ctx
    }

    pub fn with_cancel(&self) -> Self {
        Context::child_of(Some(self), None, None)
    }
    pub fn with_timeout(&self, d: Duration) -> Self {
        Context::child_of(Some(self), Some(Deadline::after(d)), None)
    }
    pub fn with_deadline(&self, d: Deadline) -> Self {
        Context::child_of(Some(self), Some(d), None)
    }
    pub fn with_value(&self, key: &str, value: &str) -> Self {
        Context::child_of(Some(self), None, Some((key.into(), value.into())))
    }

    /// The nearest value for `key` on the path to the root.
    pub fn value(&self, key: &str) -> Option<Arc<str>> {
        let mut cur = Some(self);
        while let Some(c) = cur {
            if let Some((k, v)) = &c.0.value {
                if &**k == key {
                    return Some(v.clone());
                }
            }
            cur = c.0.parent.as_ref();
        }
        None
    }

    /// Whether this Context can ever end (false only for the background root).
    pub fn can_end(&self) -> bool {
        self.0.cancelable || self.0.deadline.is_some()
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }
    pub fn deadline(&self) -> Option<Deadline> {
        self.0.deadline
    }

    /// Cancels this Context and every descendant. The first reason wins.
    pub fn cancel(&self, reason: Option<&str>) {
        if !self.0.cancelable {
            return;
        }
        self.finish(CANCELED, reason.map(str::to_owned));
    }

    fn finish(&self, state: u8, reason: Option<String>) {
        if self.0.state.compare_exchange(LIVE, state, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        *self.0.reason.lock().unwrap() = reason.clone();
        let wakers: Vec<Waker> = self.0.wakers.lock().unwrap().iter().map(|(_, w)| w.clone()).collect();
        for w in wakers {
            w();
        }
        let children: Vec<Context> =
            self.0.children.lock().unwrap().drain(..).filter_map(|w| w.upgrade().map(Context)).collect();
        for c in children {
            c.finish(state, reason.clone());
        }
    }

    /// `None` while live; otherwise why it ended.
    pub fn err(&self) -> Option<ErrorKind> {
        match self.0.state.load(Ordering::Acquire) {
            CANCELED => Some(ErrorKind::Canceled),
            DEADLINE => Some(ErrorKind::DeadlineExceeded),
            _ => match self.0.deadline {
                Some(d) if d.passed() => {
                    self.finish(DEADLINE, None);
                    // A concurrent cancel may have won the race; report what was recorded.
                    self.err()
                }
                _ => None,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        self.err().is_some()
    }

    pub fn reason(&self) -> Option<String> {
        self.0.reason.lock().unwrap().clone()
    }

    /// The error to return to a caller whose operation this Context ended.
    pub fn error(&self) -> Option<Error> {
        self.err().map(|k| {
            let msg = match (k, self.reason()) {
                (ErrorKind::Canceled, Some(r)) => format!("context canceled: {r}"),
                (ErrorKind::Canceled, None) => "context canceled".to_owned(),
                _ => "context deadline exceeded".to_owned(),
            };
            Error::new(k, msg)
        })
    }

    /// Calls `waker` when this Context is canceled (deadlines are polled by the waiter, who knows
    /// how long it may sleep). The registration ends when the guard drops.
    pub fn on_cancel(&self, waker: Waker) -> CancelRegistration {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        self.0.wakers.lock().unwrap().push((key, waker.clone()));
        if self.0.state.load(Ordering::Acquire) != LIVE {
            waker();
        }
        CancelRegistration { ctx: self.clone(), key }
    }
}

pub struct CancelRegistration {
    ctx: Context,
    key: u64,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.ctx.0.wakers.lock().unwrap().retain(|(k, _)| *k != self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn cancel_parent_cancels_children_and_says_why() {
        let root = Context::background();
        let a = root.with_cancel();
        let b = a.with_timeout(Duration::from_secs(60));
        let c = b.with_value("k", "v");
        assert_eq!(c.err(), None);
        a.cancel(Some("shutdown"));
        assert_eq!(b.err(), Some(ErrorKind::Canceled));
        assert_eq!(c.err(), Some(ErrorKind::Canceled));
        assert_eq!(c.reason().as_deref(), Some("shutdown"));
        assert_eq!(root.err(), None, "cancel never travels up");
        root.cancel(None);
        assert_eq!(root.err(), None, "the background root never ends");
        assert!(!root.can_end() && a.can_end());
        let late = a.with_cancel();
        assert_eq!(late.err(), Some(ErrorKind::Canceled), "child of a canceled parent starts canceled");
    }

    #[test]
    fn deadline_is_inherited_and_reported() {
        let root = Context::background();
        let short = root.with_timeout(Duration::from_millis(20));
        let long_child = short.with_timeout(Duration::from_secs(10));
        assert_eq!(long_child.deadline(), short.deadline(), "a child never outlives its parent");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(long_child.err(), Some(ErrorKind::DeadlineExceeded));
        assert_eq!(short.error().unwrap().code(), "ERR_DEADLINE_EXCEEDED");
        // After expiry, cancel does not change the verdict.
        short.cancel(None);
        assert_eq!(short.err(), Some(ErrorKind::DeadlineExceeded));
    }

    #[test]
    fn values_resolve_nearest_first() {
        let c = Context::background().with_value("a", "1").with_value("b", "2").with_value("a", "3");
        assert_eq!(c.value("a").as_deref(), Some("3"));
        assert_eq!(c.value("b").as_deref(), Some("2"));
        assert_eq!(c.value("z"), None);
    }

    #[test]
    fn cancel_wakes_registered_waiters_once_registered() {
        let c = Context::background().with_cancel();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let reg = c.on_cancel(Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        c.cancel(None);
        c.cancel(None);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        drop(reg);
    }

    #[test]
    fn deadline_unix_and_monotonic_agree() {
        let d = Deadline::after(Duration::from_millis(500));
        let again = Deadline::at_unix_ms(d.unix_ms);
        let diff = if again.at > d.at { again.at - d.at } else { d.at - again.at };
        assert!(diff < Duration::from_millis(5), "{diff:?}");
    }
}
