use crate::guard::guard;
use crate::wake::Wake;
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use sluice_core::{Bus, DurableWait, Error, PendingBatch, PendingPublish};
use std::sync::{Arc, Mutex};

pub(crate) enum Waiting {
    One(PendingPublish),
    Batch(PendingBatch, Arc<Bus>),
    /// The fsync of journal records many publishes wrote (`watchDurable`).
    Durable(Arc<DurableWait>),
}

/// A publish that must wait for space under the `block` policy. JS waits without holding any
/// thread: `tryProgress()` makes one non-blocking attempt, `onProgress(cb)` asks the core to
/// call back when a consumer frees space (the Context's end is watched in JS, via its signal).
#[napi]
pub struct NativePending {
    inner: Mutex<Option<Waiting>>,
    /// One wake-up per pending publish. The core holds only a weak reference, so once the
    /// publish settles (or is abandoned) it no longer keeps the event loop alive.
    wake: Mutex<Option<Arc<Wake>>>,
}

impl NativePending {
    pub(crate) fn new(w: Waiting) -> Self {
        NativePending { inner: Mutex::new(Some(w)), wake: Mutex::new(None) }
    }
}

fn poisoned() -> Error {
    Error::invalid("pending publish poisoned")
}

#[napi]
impl NativePending {
    /// `true` once every subscription took the event (or batch); throws on the Context's end or
    /// an `error`-policy refusal.
    #[napi]
    pub fn try_progress(&self) -> napi::Result<bool> {
        let result = guard(|| {
            let mut inner = self.inner.lock().map_err(|_| poisoned())?;
            let done = match inner.as_mut() {
                None => Ok(true),
                Some(Waiting::One(p)) => p.try_progress(),
                Some(Waiting::Batch(b, bus)) => b.try_progress(bus),
                Some(Waiting::Durable(w)) => w.result().map_or(Ok(false), |r| r.map(|()| true)),
            };
            if !matches!(done, Ok(false)) {
                inner.take();
            }
            done
        });
        if !matches!(result, Ok(false)) {
            // Settled: release the wake-up so it no longer holds the event loop.
            if let Ok(mut w) = self.wake.lock() {
                w.take();
            }
        }
        result
    }

    /// Calls `cb` once when `tryProgress` may get further. The wake-up is bound to the first
    /// `cb` given; pass the same function every time.
    #[napi]
    pub fn on_progress(&self, cb: Function<(), ()>) -> napi::Result<()> {
        let mut wake = self.wake.lock().map_err(|_| napi::Error::from_reason("ERR_INTERNAL: pending poisoned"))?;
        if wake.is_none() {
            let tsfn: Wake = cb.build_threadsafe_function::<()>().callee_handled::<false>().build()?;
            *wake = Some(Arc::new(tsfn));
        }
        let weak = Arc::downgrade(wake.as_ref().expect("set above"));
        drop(wake);
        guard(|| {
            let inner = self.inner.lock().map_err(|_| poisoned())?;
            let f: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                if let Some(t) = weak.upgrade() {
                    t.call((), ThreadsafeFunctionCallMode::NonBlocking);
                }
            });
            match inner.as_ref() {
                None => f(),
                Some(Waiting::One(p)) => p.on_progress(f),
                Some(Waiting::Batch(b, _)) => b.on_progress(f),
                Some(Waiting::Durable(w)) => w.on_done(f),
            }
            Ok(())
        })
    }
}
