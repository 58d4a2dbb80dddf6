use crate::guard::{guard, to_js};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use sluice_core::{Bus, PendingBatch, PendingPublish};
use std::sync::{Arc, Mutex};

pub(crate) enum Waiting {
    One(PendingPublish),
    Batch(PendingBatch, Arc<Bus>),
}

/// A publish that must wait for space under the `block` policy. `wait()` finishes it on a libuv
/// worker thread so the JS thread never blocks.
#[napi]
pub struct NativePending {
    pub(crate) inner: Mutex<Option<Waiting>>,
}

impl NativePending {
    pub(crate) fn new(w: Waiting) -> Self {
        NativePending { inner: Mutex::new(Some(w)) }
    }
}

pub struct WaitTask(Option<Waiting>);

impl Task for WaitTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        match self.0.take() {
            None => Ok(()),
            Some(Waiting::One(p)) => guard(|| p.wait()),
            Some(Waiting::Batch(b, bus)) => guard(|| b.wait(&bus)),
        }
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

#[napi]
impl NativePending {
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait(&self) -> napi::Result<AsyncTask<WaitTask>> {
        let w = self
            .inner
            .lock()
            .map_err(|_| to_js(sluice_core::Error::invalid("pending publish poisoned")))?
            .take();
        Ok(AsyncTask::new(WaitTask(w)))
    }
}
