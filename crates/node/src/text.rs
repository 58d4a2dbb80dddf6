//! A batch's JSON text handed to JS. Nearly always ASCII (JSON escapes control characters, and
//! data is usually ASCII): then it becomes a one-byte string with `napi_create_string_latin1`, a
//! copy, instead of `napi_create_string_utf8`, which measures and decodes the UTF-8 first. Text
//! with other characters is checked as UTF-8 and created from it as before.

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use sluice_core::{Error, ErrorKind};
use std::ptr;

pub struct BatchText {
    bytes: Vec<u8>,
    ascii: bool,
}

impl BatchText {
    pub fn new(bytes: Vec<u8>) -> Result<BatchText, Error> {
        let ascii = bytes.is_ascii();
        if !ascii && std::str::from_utf8(&bytes).is_err() {
            return Err(Error::new(ErrorKind::Encode, "event data is not UTF-8 JSON"));
        }
        Ok(BatchText { bytes, ascii })
    }
}

impl ToNapiValue for BatchText {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let b = &val.bytes;
        let mut out = ptr::null_mut();
        let status = if val.ascii {
            unsafe { sys::napi_create_string_latin1(env, b.as_ptr().cast(), b.len() as isize, &mut out) }
        } else {
            unsafe { sys::napi_create_string_utf8(env, b.as_ptr().cast(), b.len() as isize, &mut out) }
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason(format!("ERR_INTERNAL: creating a string failed ({status})")));
        }
        Ok(out)
    }
}
