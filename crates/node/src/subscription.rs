use crate::guard::guard;
use crate::text::BatchText;
use crate::wake::Wake;
use napi::bindgen_prelude::{Float64Array, Function, Uint8Array};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Env;
use napi_derive::napi;
use sluice_core::codec::encode_js_batch;
use sluice_core::{Bus, Error, Event, Outcome, Subscription};
use std::sync::{Arc, Mutex};

/// One subscription's queue, consumed from JS in batches: the core wakes JS once (a non-blocking
/// threadsafe call, coalesced while JS is draining) and JS pulls with `take`.
///
/// Like a `MessagePort` with a listener, a live subscription keeps the event loop alive (events
/// may come from other threads at any time) until it is unsubscribed or `keepAlive(false)`.
#[napi]
pub struct NativeSubscription {
    sub: Arc<Subscription>,
    bus: Arc<Bus>,
    scratch: Mutex<Vec<Arc<Event>>>,
    wake: Arc<Mutex<Option<Wake>>>,
}

impl NativeSubscription {
    pub(crate) fn new(sub: Arc<Subscription>, bus: Arc<Bus>) -> Self {
        NativeSubscription {
            sub,
            bus,
            scratch: Mutex::new(Vec::new()),
            wake: Arc::new(Mutex::new(None)),
        }
    }
}

#[napi]
impl NativeSubscription {
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.sub.id() as f64
    }

    /// Installs the JS wake-up, called at most once per `arm()`.
    #[napi]
    pub fn set_waker(&self, wake: Function<(), ()>) -> napi::Result<()> {
        let tsfn: Wake = wake.build_threadsafe_function::<()>().callee_handled::<false>().build()?;
        *self.wake.lock().map_err(|_| napi::Error::from_reason("ERR_INTERNAL: waker poisoned"))? = Some(tsfn);
        let wake = self.wake.clone();
        guard(|| {
            self.sub.queue().set_waker(Box::new(move || {
                if let Ok(w) = wake.lock() {
                    if let Some(t) = w.as_ref() {
                        t.call((), ThreadsafeFunctionCallMode::NonBlocking);
                    }
                }
            }))
        })
    }

    /// Whether this subscription keeps the Node.js event loop alive (default true).
    // napi-rs marks refer/unref deprecated in favour of clone, but clone manages the tsfn's
    // lifetime; these toggle the event-loop reference (napi_ref/unref_threadsafe_function).
    #[allow(deprecated)]
    #[napi]
    pub fn keep_alive(&self, env: Env, on: bool) -> napi::Result<()> {
        if let Some(t) = self.wake.lock().map_err(|_| napi::Error::from_reason("ERR_INTERNAL: waker poisoned"))?.as_mut() {
            if on {
                t.refer(&env)?;
            } else {
                t.unref(&env)?;
            }
        }
        Ok(())
    }

    /// Takes up to `max` events as one JSON batch (see core `codec`), or `null` when empty.
    #[napi(ts_return_type = "string | null")]
    pub fn take(&self, max: u32) -> napi::Result<Option<BatchText>> {
        guard(|| {
            let mut events = self.scratch.lock().map_err(|_| Error::invalid("subscription poisoned"))?;
            events.clear();
            if self.sub.take(max.max(1) as usize, &mut events) == 0 {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(events.len() * 160);
            encode_js_batch(self.sub.origin(), &events, &mut out);
            events.clear();
            BatchText::new(out).map(Some)
        })
    }

    /// `takeDeliveries(max)` for this subscription: up to `max` deliveries for a handler as one
    /// JSON batch (see core `codec`: redeliveries carry `attempt`, a list holds the tags to
    /// settle), or `null`. A function of its own, hand-written (see `fast_take.rs`).
    #[napi(ts_return_type = "(max: number) => string | null")]
    pub fn fast_take(&self) -> crate::fast_take::FastTake {
        crate::fast_take::FastTake(self.sub.clone())
    }

    /// Settles a batch of deliveries: `acks` are the tags handled, as runs `(first, count)`
    /// (flattened pairs: a batch's tags are consecutive, so most batches are one run);
    /// `fail_tags[i]` ended with outcome `fail_codes[i]` (1 retry, 2 reject, 3 fail) for
    /// `fail_reasons[i]`. Untracked subscriptions send only failures, with tag 0.
    #[napi]
    pub fn settle(
        &self,
        acks: Float64Array,
        fail_tags: Float64Array,
        fail_codes: Uint8Array,
        fail_reasons: Vec<String>,
    ) -> napi::Result<()> {
        guard(|| {
            if fail_tags.len() != fail_codes.len() || fail_tags.len() != fail_reasons.len() {
                return Err(Error::invalid("settle: failure lists differ in length"));
            }
            if acks.len() % 2 != 0 || acks.chunks(2).any(|r| !(r[0] >= 0.0 && r[1] >= 0.0 && r[1] <= 1e9)) {
                return Err(Error::invalid("settle: acks must be (first tag, count) pairs"));
            }
            let mut failures = Vec::with_capacity(fail_tags.len());
            for ((tag, code), reason) in fail_tags.iter().zip(fail_codes.iter()).zip(fail_reasons) {
                let outcome = Outcome::from_code(*code, reason)
                    .ok_or_else(|| Error::invalid(format!("settle: unknown outcome code {code}")))?;
                failures.push((*tag as u64, outcome));
            }
            let acked = acks.chunks(2).flat_map(|r| (r[0] as u64..).take(r[1] as usize)).map(|t| (t, Outcome::Ack));
            self.sub.settle_all(&self.bus, acked.chain(failures));
            Ok(())
        })
    }

    /// The consumer is going idle; `true` means work arrived meanwhile (keep draining).
    #[napi]
    pub fn arm(&self) -> bool {
        self.sub.arm()
    }

    /// Queued plus in flight (taken, not settled: running, waiting to retry, held by key).
    #[napi(getter)]
    pub fn depth(&self) -> u32 {
        (self.sub.queue().len() as u64 + self.sub.in_flight()) as u32
    }

    /// Events taken but never handed to a handler (closed mid-batch).
    #[napi]
    pub fn return_undelivered(&self, n: u32) {
        self.sub.return_undelivered(n as u64);
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
    /// Releases the wake-up, so the subscription no longer holds the event loop.
    #[napi]
    pub fn unsubscribe(&self) -> bool {
        let removed = self.bus.unsubscribe(self.sub.id());
        if let Ok(mut w) = self.wake.lock() {
            w.take();
        }
        removed
    }

    #[napi]
    pub fn stats(&self) -> napi::Result<String> {
        guard(|| serde_json::to_string(&self.sub.stats()).map_err(|e| Error::invalid(e.to_string())))
    }
}
