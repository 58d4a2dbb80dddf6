//! The thread that starts candidate helpers. A helper is tied to the thread that started it
//! (`PR_SET_PDEATHSIG` fires when that *thread* exits), so it must be one that outlives the
//! helper; and starting one takes tens of milliseconds (spawn, namespaces, compile inside the
//! helper), which a dispatcher must not spend in front of its events. One process-wide thread
//! that never exits does both: rollouts start their helpers there, one after the other.

use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread;

use crate::deployment::DeployError;

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> Result<&'static Mutex<Sender<Job>>, DeployError> {
    static TX: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let spawned = thread::Builder::new().name("sluice-spawn".into()).spawn(move || {
            for job in rx {
                // A panicking start must not end this thread: its helpers would die with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        });
        spawned.ok().map(|_| Mutex::new(tx))
    })
    .as_ref()
    .ok_or_else(|| DeployError { code: "ERR_INSTANTIATE", message: "cannot start the helper spawner thread".into() })
}

/// Runs `job` on the spawner thread and returns its result.
pub(crate) fn run<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Result<R, DeployError> {
    let (tx, rx) = sync_channel(1);
    let sent = spawner()?.lock().unwrap_or_else(|p| p.into_inner()).send(Box::new(move || {
        let _ = tx.send(job());
    }));
    let lost = || DeployError { code: "ERR_INSTANTIATE", message: "the helper spawner thread is gone".into() };
    sent.map_err(|_| lost())?;
    rx.recv().map_err(|_| lost())
}
