use crate::guard::guard;
use napi_derive::napi;
use sluice_core::{Context, Deadline, Error};
use std::time::Duration;

/// The Rust Context behind the TypeScript `Context`.
#[napi]
pub struct NativeContext {
    pub(crate) inner: Context,
}

fn millis(ms: f64, what: &str) -> sluice_core::Result<f64> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(Error::invalid(format!("{what} must be a finite number of milliseconds >= 0, got {ms}")));
    }
    Ok(ms)
}

#[napi]
impl NativeContext {
    #[napi(factory)]
    pub fn background() -> Self {
        NativeContext { inner: Context::background() }
    }

    #[napi]
    pub fn with_cancel(&self) -> napi::Result<NativeContext> {
        guard(|| Ok(NativeContext { inner: self.inner.with_cancel() }))
    }

    #[napi]
    pub fn with_timeout(&self, ms: f64) -> napi::Result<NativeContext> {
        guard(|| {
            let ms = millis(ms, "timeout")?;
            Ok(NativeContext { inner: self.inner.with_timeout(Duration::from_secs_f64(ms / 1000.0)) })
        })
    }

    #[napi]
    pub fn with_deadline(&self, unix_ms: f64) -> napi::Result<NativeContext> {
        guard(|| {
            let ms = millis(unix_ms, "deadline")?;
            Ok(NativeContext { inner: self.inner.with_deadline(Deadline::at_unix_ms(ms as u64)) })
        })
    }

    #[napi]
    pub fn with_value(&self, key: String, value: String) -> napi::Result<NativeContext> {
        guard(|| Ok(NativeContext { inner: self.inner.with_value(&key, &value) }))
    }

    #[napi]
    pub fn value(&self, key: String) -> Option<String> {
        self.inner.value(&key).map(|v| v.to_string())
    }

    #[napi]
    pub fn cancel(&self, reason: Option<String>) -> napi::Result<()> {
        guard(|| {
            self.inner.cancel(reason.as_deref());
            Ok(())
        })
    }

    /// `null` while live, else `ERR_CANCELED` or `ERR_DEADLINE_EXCEEDED`.
    #[napi]
    pub fn err_code(&self) -> Option<&'static str> {
        self.inner.err().map(|k| k.code())
    }

    #[napi]
    pub fn reason(&self) -> Option<String> {
        self.inner.reason()
    }

    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.inner.id() as f64
    }

    /// Wall-clock deadline in Unix milliseconds, if any.
    #[napi(getter)]
    pub fn deadline(&self) -> Option<f64> {
        self.inner.deadline().map(|d| d.unix_ms as f64)
    }

    /// Milliseconds left before the deadline, if any.
    #[napi]
    pub fn remaining_ms(&self) -> Option<f64> {
        self.inner.deadline().map(|d| d.remaining().as_secs_f64() * 1000.0)
    }
}
