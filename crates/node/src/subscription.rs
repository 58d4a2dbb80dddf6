use crate::guard::guard;
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use sluice_core::codec::encode_js_batch;
use sluice_core::{Bus, Error, ErrorKind, Event, Subscription};
use std::sync::{Arc, Mutex};

/// One subscription's queue, consumed from JS in batches: the core wakes JS once (a non-blocking
/// threadsafe call, coalesced while JS is draining) and JS pulls with `take`.
#[napi]
pub struct NativeSubscription {
    sub: Arc<Subscription>,
    bus: Arc<Bus>,
    scratch: Mutex<Vec<Arc<Event>>>,
}

impl NativeSubscription {
    pub(crate) fn new(sub: Arc<Subscription>, bus: Arc<Bus>) -> Self {
        NativeSubscription { sub, bus, scratch: Mutex::new(Vec::new()) }
    }
}

#[napi]
impl NativeSubscription {
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.sub.id() as f64
    }

    /// Installs the JS wake-up. It does not keep the event loop alive (like an EventEmitter
    /// listener), and it is called at most once per `arm()`.
    #[napi]
    pub fn set_waker(&self, wake: Function<(), ()>) -> napi::Result<()> {
        let tsfn = wake.build_threadsafe_function::<()>().weak::<true>().callee_handled::<false>().build()?;
        guard(|| {
            self.sub.queue().set_waker(Box::new(move || {
                tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }))
        })
    }

    /// Takes up to `max` events as one JSON batch (see core `codec`), or `null` when empty.
    #[napi]
    pub fn take(&self, max: u32) -> napi::Result<Option<String>> {
        guard(|| {
            let mut events = self.scratch.lock().map_err(|_| Error::invalid("subscription poisoned"))?;
            events.clear();
            if self.sub.take(max.max(1) as usize, &mut events) == 0 {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(events.len() * 160);
            encode_js_batch(self.sub.origin(), &events, &mut out);
            events.clear();
            String::from_utf8(out).map(Some).map_err(|_| Error::new(ErrorKind::Encode, "event data is not UTF-8 JSON"))
        })
    }

    /// The consumer is going idle; `true` means events arrived meanwhile (keep draining).
    #[napi]
    pub fn arm(&self) -> bool {
        self.sub.queue().arm()
    }

    #[napi(getter)]
    pub fn depth(&self) -> u32 {
        self.sub.queue().len() as u32
    }

    #[napi]
    pub fn report_failed(&self, n: u32) {
        self.sub.queue().count_failed(n as u64);
    }

    /// Events taken but never handed to a handler (closed mid-batch).
    #[napi]
    pub fn return_undelivered(&self, n: u32) {
        self.sub.queue().return_undelivered(n as u64);
    }

    #[napi]
    pub fn report_filtered(&self, n: u32) {
        self.sub.count_filtered(n as u64);
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.sub.queue().is_closed()
    }

    /// Removes the subscription from the bus; queued events are counted as dropped (closed).
    #[napi]
    pub fn unsubscribe(&self) -> bool {
        self.bus.unsubscribe(self.sub.id())
    }

    #[napi]
    pub fn stats(&self) -> napi::Result<String> {
        guard(|| serde_json::to_string(&self.sub.stats()).map_err(|e| Error::invalid(e.to_string())))
    }
}
