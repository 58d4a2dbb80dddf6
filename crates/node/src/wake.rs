//! The JS wake-up that core components (subscriptions, pending publishes, the observer ring,
//! the audit gate) call from any thread: a threadsafe function with no arguments.

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use std::sync::Arc;

pub type Wake = ThreadsafeFunction<(), (), (), Status, false>;

/// A wake-up for a background drainer: non-blocking, and it does not keep the event loop alive
/// (the drainer also runs on a timer or at close).
#[allow(deprecated)]
pub fn unref_wake(env: &Env, wake: Function<(), ()>) -> napi::Result<Box<dyn Fn() + Send + Sync>> {
    let mut tsfn: Wake = wake.build_threadsafe_function::<()>().callee_handled::<false>().build()?;
    tsfn.unref(env)?;
    let tsfn = Arc::new(tsfn);
    Ok(Box::new(move || {
        tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }))
}
