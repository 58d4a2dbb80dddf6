//! Panic and error mapping shared by every export.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Maps a core error to a JS error. The message is `CODE: message`; the TypeScript layer turns
/// it into the matching `SluiceError` subclass with `code` set.
pub fn to_js(e: sluice_core::Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("{}: {}", e.code(), e.message()))
}

/// Runs `f`, turning a core error or a panic into a JS error (`ERR_INTERNAL`).
pub fn guard<T>(f: impl FnOnce() -> sluice_core::Result<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_js),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(napi::Error::new(napi::Status::GenericFailure, format!("ERR_INTERNAL: sluice panicked: {what}")))
        }
    }
}
