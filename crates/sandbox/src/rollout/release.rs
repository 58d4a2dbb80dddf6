//! Releases retired versions off the event path. When a worker lets go of the last routing
//! table naming an old version (a swap happened while it handled an event), dropping that
//! version would tear down its instances right there — each store returns its pool slot, resets
//! and decommits guest memory — and the next events in that worker's queue would wait for it.
//! Workers (and shadow threads) mark themselves with [`on_event_path`]; a version dropped on
//! such a thread hands its instances to one `sluice-release` thread instead. Control calls
//! (`rollout`, `rollback`, undeploy) drop inline, and [`flush`] before creating instances so
//! pool slots handed off are free again before new ones are taken.

use std::cell::Cell;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static EVENT_PATH: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one that handles events: versions it drops are released later.
pub(crate) fn on_event_path() {
    EVENT_PATH.with(|c| c.set(true));
}

fn releaser() -> Option<&'static Mutex<Sender<Job>>> {
    static TX: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let spawned = thread::Builder::new().name("sluice-release".into()).spawn(move || {
            for job in rx {
                job();
            }
        });
        spawned.ok().map(|_| Mutex::new(tx))
    })
    .as_ref()
}

/// Runs `release` now, or — on an event-path thread — on the release thread.
pub(crate) fn release(release: impl FnOnce() + Send + 'static) {
    if !EVENT_PATH.with(Cell::get) {
        return release();
    }
    let mut job: Job = Box::new(release);
    if let Some(tx) = releaser() {
        match tx.lock().unwrap_or_else(|p| p.into_inner()).send(job) {
            Ok(()) => return,
            Err(e) => job = e.0,
        }
    }
    // No release thread could be started: release here rather than leak.
    job();
}

/// Waits until everything handed to the release thread so far is released.
pub(crate) fn flush() {
    let Some(tx) = releaser() else { return };
    let (done_tx, done_rx) = channel::<()>();
    let sent = tx.lock().unwrap_or_else(|p| p.into_inner()).send(Box::new(move || {
        let _ = done_tx.send(());
    }));
    if sent.is_ok() {
        let _ = done_rx.recv();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn event_path_threads_release_on_the_release_thread_and_flush_waits_for_it() {
        let released_on = Arc::new(Mutex::new(None::<String>));
        let (r, done) = (released_on.clone(), Arc::new(AtomicBool::new(false)));
        let d = done.clone();
        thread::spawn(move || {
            on_event_path();
            release(move || {
                thread::sleep(std::time::Duration::from_millis(20));
                *r.lock().unwrap() = thread::current().name().map(str::to_owned);
                d.store(true, Ordering::SeqCst);
            });
        })
        .join()
        .unwrap();
        flush();
        assert!(done.load(Ordering::SeqCst), "flush returned before the release ran");
        assert_eq!(released_on.lock().unwrap().as_deref(), Some("sluice-release"));
        // Other threads release inline.
        let here = Arc::new(AtomicBool::new(false));
        let h = here.clone();
        release(move || h.store(true, Ordering::SeqCst));
        assert!(here.load(Ordering::SeqCst));
    }
}
