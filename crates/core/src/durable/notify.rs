//! Resolves publishes once the journal has fsynced their records, from one thread per bus
//! (not one blocked thread per publish): it waits for the highest sequence number anyone is
//! waiting for, then settles every waiter at or below it. A failed write or fsync reaches each
//! waiter as its typed journal error.

use crate::error::{Error, Result};
use sluice_journal::{Journal, Seq};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Wake = Arc<dyn Fn() + Send + Sync>;

/// One publisher's wait for durability.
#[derive(Default)]
pub struct DurableWait {
    slot: Mutex<Slot>,
    cv: Condvar,
}

#[derive(Default)]
struct Slot {
    result: Option<Result<()>>,
    wake: Option<Wake>,
}

impl DurableWait {
    /// `None` while the fsync is outstanding.
    pub fn result(&self) -> Option<Result<()>> {
        self.slot.lock().unwrap().result.clone()
    }

    /// Calls `f` once when the result is known (at once if it already is).
    pub fn on_done(&self, f: Wake) {
        let mut s = self.slot.lock().unwrap();
        if s.result.is_some() {
            drop(s);
            f();
        } else {
            s.wake = Some(f);
        }
    }

    pub fn wait(&self) -> Result<()> {
        let mut s = self.slot.lock().unwrap();
        loop {
            if let Some(r) = &s.result {
                return r.clone();
            }
            s = self.cv.wait(s).unwrap();
        }
    }

    fn settle(&self, r: Result<()>) {
        let wake = {
            let mut s = self.slot.lock().unwrap();
            s.result = Some(r);
            s.wake.take()
        };
        self.cv.notify_all();
        if let Some(w) = wake {
            w();
        }
    }
}

/// Who learns the outcome of one journal write.
pub(crate) enum Waiter {
    /// A publisher waiting for it.
    Publish(Arc<DurableWait>),
    /// Nobody waits (`tryPublish`): a failure is counted here.
    Count(Arc<AtomicU64>),
    /// A spill write: a failure is counted on the subscription (the event is gone from it).
    Spill(Arc<super::backlog::SpillCounters>),
}

#[derive(Default)]
struct Queue {
    /// (first, last, who): the events `first..=last` one write or batch put in the journal.
    waiters: Vec<(Seq, Seq, Waiter)>,
    stop: bool,
}

pub struct Notifier {
    journal: Arc<Journal>,
    q: Arc<(Mutex<Queue>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Writes that failed after their publisher had already returned (`tryPublish`).
    pub lost_after_return: Arc<AtomicU64>,
}

impl Notifier {
    pub fn start(journal: Arc<Journal>) -> Result<Notifier> {
        let q: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let lost = Arc::new(AtomicU64::new(0));
        let q2 = q.clone();
        let j2 = journal.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-durable-notify".into())
            .spawn(move || run(&j2, &q2))
            .map_err(|e| Error::invalid(format!("cannot start the journal notifier: {e}")))?;
        Ok(Notifier { journal, q, thread: Mutex::new(Some(thread)), lost_after_return: lost })
    }

    /// A wait the publisher observes, for the events `first..=last` it wrote.
    pub fn watch(&self, first: Seq, last: Seq) -> Arc<DurableWait> {
        let w = Arc::new(DurableWait::default());
        self.push_range(first, last, Waiter::Publish(w.clone()));
        w
    }

    /// Nobody waits (`tryPublish`): a failure is only counted.
    pub fn count_if_lost(&self, seq: Seq) {
        self.push(seq, Waiter::Count(self.lost_after_return.clone()));
    }

    pub(crate) fn push(&self, seq: Seq, w: Waiter) {
        self.push_range(seq, seq, w)
    }

    fn push_range(&self, first: Seq, last: Seq, w: Waiter) {
        let (m, cv) = &*self.q;
        let mut q = m.lock().unwrap();
        if q.stop {
            // The bus closed (after a final fsync): answer from the journal's record of it.
            drop(q);
            let r = self.journal.durable_result(first, last).unwrap_or_else(|| {
                Err(sluice_journal::JournalError::Closed { reason: "the journal closed before this write was fsynced".into() })
            });
            settle_one(w, r.map_err(Error::from));
            return;
        }
        q.waiters.push((first, last, w));
        if q.waiters.len() == 1 {
            // The thread sleeps only on an empty queue: one wake-up per round is enough.
            cv.notify_one();
        }
    }

    /// Settles every outstanding waiter and ends the thread. Call after a final `sync()`.
    pub fn stop(&self) {
        let (m, cv) = &*self.q;
        m.lock().unwrap().stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

fn run(journal: &Journal, q: &(Mutex<Queue>, Condvar)) {
    let (m, cv) = q;
    loop {
        let (batch, stop) = {
            let mut g = m.lock().unwrap();
            while g.waiters.is_empty() && !g.stop {
                g = cv.wait(g).unwrap();
            }
            (std::mem::take(&mut g.waiters), g.stop)
        };
        if batch.is_empty() && stop {
            return;
        }
        let min = batch.iter().map(|(s, _, _)| *s).min().unwrap_or(0);
        let max = batch.iter().map(|(_, s, _)| *s).max().unwrap_or(0);
        let all = journal.wait_durable_range(min, max);
        for (first, last, w) in batch {
            // On an error, ask per waiter: a failure can cover only some of them.
            let r = match &all {
                Ok(()) => Ok(()),
                Err(_) => journal.wait_durable_range(first, last).map_err(Error::from),
            };
            settle_one(w, r);
        }
    }
}

fn settle_one(w: Waiter, r: Result<()>) {
    match w {
        Waiter::Publish(w) => w.settle(r),
        Waiter::Count(n) if r.is_err() => {
            n.fetch_add(1, Ordering::Relaxed);
        }
        Waiter::Spill(c) if r.is_err() => c.lost(),
        _ => {}
    }
}
