//! A hand-written N-API `takeDeliveries` for JS subscriptions, for the reason `fast.rs` gives
//! for publishing: the `#[napi]` method paid ~3 400 instructions of napi-rs bookkeeping per call
//! (type-tag check, unwrap, borrow scope; callgrind), and an async handler at concurrency 1
//! calls it once per event. It does what the method does — take, encode, return the batch text
//! or `null` — and nothing else.

use crate::fast::{check, finish};
use crate::guard::guard;
use crate::text::BatchText;
use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use sluice_core::codec::encode_js_deliveries;
use sluice_core::{Delivered, Error, Subscription};
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex};

/// What the function is bound to: the core subscription and a reused buffer of deliveries.
struct Taker {
    sub: Arc<Subscription>,
    got: Mutex<Vec<Delivered>>,
}

/// `takeDeliveries(max)` bound to one subscription, returned to JS as a function.
pub struct FastTake(pub Arc<Subscription>);

impl ToNapiValue for FastTake {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let data = Box::into_raw(Box::new(Taker { sub: val.0, got: Mutex::new(Vec::new()) })) as *mut c_void;
        let mut f = ptr::null_mut();
        let made = unsafe { sys::napi_create_function(env, c"takeDeliveries".as_ptr(), -1, Some(take_deliveries), data, &mut f) };
        if made != sys::Status::napi_ok {
            drop(unsafe { Box::from_raw(data as *mut Taker) });
            check(made)?;
        }
        check(unsafe { sys::napi_add_finalizer(env, f, data, Some(release), ptr::null_mut(), ptr::null_mut()) })?;
        Ok(f)
    }
}

unsafe extern "C" fn release(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    drop(unsafe { Box::from_raw(data as *mut Taker) });
}

/// `takeDeliveries(max: number): string | null` — see `NativeSubscription::take_deliveries`.
unsafe extern "C" fn take_deliveries(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let run = || -> napi::Result<sys::napi_value> {
        let mut argc = 1;
        let mut argv = [ptr::null_mut(); 1];
        let mut data = ptr::null_mut();
        check(unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), &mut data) })?;
        // The function owns its Taker until its finalizer runs, which cannot happen while it runs.
        let taker = unsafe { &*(data as *const Taker) };
        let mut max = 0u32;
        if argc < 1 || unsafe { sys::napi_get_value_uint32(env, argv[0], &mut max) } != sys::Status::napi_ok {
            return Err(crate::guard::to_js(Error::invalid("takeDeliveries: max must be a number")));
        }
        let text = guard(|| {
            let mut got = taker.got.lock().map_err(|_| Error::invalid("subscription poisoned"))?;
            got.clear();
            if taker.sub.take_deliveries(max.max(1) as usize, &mut got) == 0 {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(got.len() * 160);
            encode_js_deliveries(taker.sub.origin(), &got, &mut out);
            got.clear();
            BatchText::new(out).map(Some)
        })?;
        match text {
            Some(t) => unsafe { BatchText::to_napi_value(env, t) },
            None => {
                let mut null = ptr::null_mut();
                check(unsafe { sys::napi_get_null(env, &mut null) })?;
                Ok(null)
            }
        }
    };
    unsafe { finish(env, run()) }
}
