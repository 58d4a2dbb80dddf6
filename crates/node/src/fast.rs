//! Hand-written N-API callbacks for the calls JS makes once per event: `tryPublish`,
//! `tryPublishBatch` and `publish` on an interned topic, without a Context.
//!
//! Why not `#[napi]`: napi-rs v3 wraps every generated call in borrow bookkeeping (a scope
//! stack in TLS, a mutex-guarded map of borrowed objects, a read lock on its GC handle) and
//! takes a N-API reference on each typed-array argument. callgrind counted ~2 700 of the ~3 700
//! instructions of one `tryPublishBytesTo` there, against ~960 in the core. These callbacks do
//! what the generated ones do for our argument types — read the arguments, call the core once,
//! convert the result or throw `CODE: message` — and nothing else. Every other export, and
//! these two calls whenever a Context or attributes are involved, stay `#[napi]`.
//!
//! Each function is created per bus with the bus as its callback data, so no handle has to be
//! unwrapped per call; a finalizer drops that reference when the function is collected.

use crate::bus::{published, PublishResult};
use crate::guard::{guard, to_js};
use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use sluice_core::{BatchData, Bus, Encoding};
use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::Arc;

/// The per-bus fast publish functions, returned to JS as a plain object.
pub struct FastPublish(pub Arc<Bus>);

impl ToNapiValue for FastPublish {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let mut obj = ptr::null_mut();
        check(unsafe { sys::napi_create_object(env, &mut obj) })?;
        unsafe {
            bound(env, obj, c"tryPublish", try_publish, &val.0)?;
            bound(env, obj, c"tryPublishBatch", try_publish_batch, &val.0)?;
            bound(env, obj, c"publish", publish, &val.0)?;
        }
        Ok(obj)
    }
}

/// Sets `obj[name]` to a function calling `cb` with a strong reference to `bus` as its data.
unsafe fn bound(
    env: sys::napi_env,
    obj: sys::napi_value,
    name: &std::ffi::CStr,
    cb: unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value,
    bus: &Arc<Bus>,
) -> napi::Result<()> {
    let data = Arc::into_raw(bus.clone()) as *mut c_void;
    let mut f = ptr::null_mut();
    let made = unsafe { sys::napi_create_function(env, name.as_ptr(), -1, Some(cb), data, &mut f) };
    if made != sys::Status::napi_ok {
        drop(unsafe { Arc::from_raw(data as *const Bus) });
        return check(made);
    }
    check(unsafe { sys::napi_add_finalizer(env, f, data, Some(release_bus), ptr::null_mut(), ptr::null_mut()) })?;
    check(unsafe { sys::napi_set_named_property(env, obj, name.as_ptr(), f) })
}

unsafe extern "C" fn release_bus(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    drop(unsafe { Arc::from_raw(data as *const Bus) });
}

/// `tryPublish(topicId, data: string | Uint8Array): boolean` — a string is JSON text.
unsafe extern "C" fn try_publish(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let run = || -> napi::Result<sys::napi_value> {
        let (bus, topic, bytes, encoding) = unsafe { event_args(env, info) }?;
        let ok = guard(|| bus.try_publish_interned(topic, bytes, encoding, None))?;
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_get_boolean(env, ok, &mut out) })?;
        Ok(out)
    };
    unsafe { finish(env, run()) }
}

/// `publish(topicId, data: string | Uint8Array): NativePending | number | null` — as
/// `publishTo` / `publishBytesTo` without a Context: a number is the journal record whose fsync
/// is all that is left to wait for, `null` means done.
unsafe extern "C" fn publish(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let run = || -> napi::Result<sys::napi_value> {
        let (bus, topic, bytes, encoding) = unsafe { event_args(env, info) }?;
        let r = guard(|| bus.publish_event_ticketed(bus.make_interned(topic, bytes, encoding, None)?, None).map(published))?;
        unsafe { PublishResult::to_napi_value(env, r) }
    };
    unsafe { finish(env, run()) }
}

/// `tryPublishBatch(topicId, data: string, ends?: Uint32Array): number` — `data` is a JSON
/// array's text, or a `Uint8Array` of byte arrays packed end to end with `ends`.
unsafe extern "C" fn try_publish_batch(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let run = || -> napi::Result<sys::napi_value> {
        let (bus, [topic, data, ends]) = unsafe { args::<3>(env, info, 2) }?;
        let topic = unsafe { u32_arg(env, topic) }?;
        let n = match unsafe { typed_array(env, data) }? {
            None => {
                let json = unsafe { utf8_arg(env, data) }?;
                guard(|| bus.try_publish_batch(bus.make_batch_interned(topic, BatchData::Json(&json), None)?))?
            }
            Some(bytes) => {
                let bytes = unsafe { bytes.elements::<u8>(sys::TypedarrayType::uint8_array) }
                    .ok_or_else(|| encode_error("packed batch data must be a Uint8Array"))?;
                let ends = unsafe { typed_array(env, ends) }?
                    .and_then(|a| unsafe { a.elements::<u32>(sys::TypedarrayType::uint32_array) })
                    .ok_or_else(|| to_js(sluice_core::Error::invalid("a packed batch needs its end offsets (Uint32Array)")))?;
                guard(|| bus.try_publish_batch(bus.make_batch_interned(topic, BatchData::Packed { bytes, ends }, None)?))?
            }
        };
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_create_uint32(env, n, &mut out) })?;
        Ok(out)
    };
    unsafe { finish(env, run()) }
}

/// The bus and the `(topicId, data)` arguments of `tryPublish` / `publish`: a `Uint8Array` is
/// binary data, a string JSON text.
unsafe fn event_args<'a>(env: sys::napi_env, info: sys::napi_callback_info) -> napi::Result<(&'a Bus, u32, Vec<u8>, Encoding)> {
    let (bus, [topic, data]) = unsafe { args::<2>(env, info, 2) }?;
    let topic = unsafe { u32_arg(env, topic) }?;
    let (bytes, encoding) = match unsafe { bytes_arg(env, data) }? {
        Some(bytes) => (bytes, Encoding::Binary),
        None => (unsafe { utf8_arg(env, data) }?, Encoding::Json),
    };
    Ok((bus, topic, bytes, encoding))
}

/// The bus bound to this function and its first `N` arguments, of which the first `required`
/// must be given (missing ones are `undefined`).
unsafe fn args<'a, const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    required: usize,
) -> napi::Result<(&'a Bus, [sys::napi_value; N])> {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    let mut data = ptr::null_mut();
    check(unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), &mut data) })?;
    if argc < required {
        return Err(to_js(sluice_core::Error::invalid(format!("expected {required} arguments, got {argc}"))));
    }
    // The function holds a strong reference until its finalizer runs, which cannot happen
    // while the function is executing.
    Ok((unsafe { &*(data as *const Bus) }, argv))
}

unsafe fn u32_arg(env: sys::napi_env, v: sys::napi_value) -> napi::Result<u32> {
    let mut n = 0;
    match unsafe { sys::napi_get_value_uint32(env, v, &mut n) } {
        sys::Status::napi_ok => Ok(n),
        _ => Err(to_js(sluice_core::Error::invalid("topic id must be a number"))),
    }
}

/// A typed array's elements, borrowed for the duration of the call.
struct TypedArray {
    kind: sys::napi_typedarray_type,
    data: *const c_void,
    len: usize,
}

impl TypedArray {
    /// The elements as `T`, if the array is of type `kind`.
    /// SAFETY: `T` must be the element type of `kind`; the slice must not outlive the call.
    unsafe fn elements<'a, T>(&self, kind: sys::napi_typedarray_type) -> Option<&'a [T]> {
        if self.kind != kind {
            return None;
        }
        // An empty view may have a dangling or null data pointer.
        Some(if self.len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(self.data.cast(), self.len) } })
    }
}

/// `v` as a typed array, or `None` if it is not one.
unsafe fn typed_array(env: sys::napi_env, v: sys::napi_value) -> napi::Result<Option<TypedArray>> {
    // No separate napi_is_typedarray: get_typedarray_info refuses anything else with
    // napi_invalid_arg, and its own checks are what we need.
    let (mut kind, mut len, mut data) = (0, 0usize, ptr::null_mut());
    let status =
        unsafe { sys::napi_get_typedarray_info(env, v, &mut kind, &mut len, &mut data, ptr::null_mut(), ptr::null_mut()) };
    if status == sys::Status::napi_invalid_arg {
        return Ok(None);
    }
    check(status)?;
    Ok(Some(TypedArray { kind, data, len }))
}

/// The bytes of a `Uint8Array` (copied: the event outlives the call), or `None` if `v` is not a
/// typed array.
unsafe fn bytes_arg(env: sys::napi_env, v: sys::napi_value) -> napi::Result<Option<Vec<u8>>> {
    let Some(array) = unsafe { typed_array(env, v) }? else { return Ok(None) };
    let bytes = unsafe { array.elements::<u8>(sys::TypedarrayType::uint8_array) }
        .ok_or_else(|| encode_error("binary data must be a Uint8Array"))?;
    Ok(Some(bytes.to_vec()))
}

fn encode_error(message: &str) -> napi::Error {
    to_js(sluice_core::Error::new(sluice_core::ErrorKind::Encode, message))
}

/// The UTF-8 bytes of a JS string. Asking N-API for the UTF-8 length first makes V8 walk the
/// string an extra time (~150 instructions for a small event), while its UTF-16 length is a field
/// read; three bytes per UTF-16 unit always suffice (a surrogate pair is two units and four
/// bytes), and with that much room V8 also takes its faster write path. Small strings (events
/// are mostly small) are converted that way in one pass; large ones are measured first, so a big
/// event never allocates three times its size (a 256-event batch is a few thousand units).
unsafe fn utf8_arg(env: sys::napi_env, v: sys::napi_value) -> napi::Result<Vec<u8>> {
    const ONE_PASS_UNITS: usize = 64 << 10;
    let mut units = 0usize;
    if unsafe { sys::napi_get_value_string_utf16(env, v, ptr::null_mut(), 0, &mut units) } != sys::Status::napi_ok {
        return Err(encode_error("data must be a string or a Uint8Array"));
    }
    let room = if units <= ONE_PASS_UNITS {
        units * 3 + 1
    } else {
        let mut len = 0usize;
        check(unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) })?;
        len + 1
    };
    let mut buf = Vec::<u8>::with_capacity(room);
    let mut written = 0usize;
    check(unsafe { sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), room, &mut written) })?;
    // SAFETY: N-API wrote `written` bytes (plus a NUL we do not keep).
    unsafe { buf.set_len(written) };
    Ok(buf)
}

pub(crate) fn check(status: sys::napi_status) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::new(napi::Status::GenericFailure, format!("ERR_INTERNAL: N-API call failed ({status})")))
    }
}

/// Returns the value, or throws the error (unless N-API already has an exception pending).
pub(crate) unsafe fn finish(env: sys::napi_env, r: napi::Result<sys::napi_value>) -> sys::napi_value {
    match r {
        Ok(v) => v,
        Err(e) => {
            let mut pending = false;
            unsafe { sys::napi_is_exception_pending(env, &mut pending) };
            if !pending {
                let msg = CString::new(e.reason.replace('\0', " ")).unwrap_or_default();
                unsafe { sys::napi_throw_error(env, ptr::null(), msg.as_ptr()) };
            }
            ptr::null_mut()
        }
    }
}
