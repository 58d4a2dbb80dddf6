use crate::guard::guard;
use crate::wake::unref_wake;
use napi::bindgen_prelude::{Float64Array, Function};
use napi::Env;
use napi_derive::napi;
use sluice_core::{Bus, Error};
use std::sync::Arc;

/// The bus's audit gate (core `audit`): WASM handler runs whose verdicts wait for audit
/// observers. JS takes them in batches, writes them, and releases them once durable.
#[napi]
pub struct NativeAuditGate {
    bus: Arc<Bus>,
}

impl NativeAuditGate {
    pub(crate) fn new(bus: Arc<Bus>) -> Self {
        NativeAuditGate { bus }
    }
}

#[napi]
impl NativeAuditGate {
    /// Holds worker-thread verdicts for audit (`true`) or settles them at once (`false`).
    #[napi]
    pub fn set_on(&self, on: bool) -> napi::Result<()> {
        guard(|| {
            self.bus.audit_gate().set_on(&self.bus, on);
            Ok(())
        })
    }

    /// Up to `max` held runs as one JSON array (see core `audit::encode_held`).
    #[napi]
    pub fn take(&self, max: u32) -> napi::Result<String> {
        guard(|| {
            let mut out = Vec::with_capacity(256);
            self.bus.audit_gate().take(self.bus.origin(), max.max(1) as usize, &mut out);
            String::from_utf8(out).map_err(|_| Error::invalid("held run is not UTF-8"))
        })
    }

    /// These tickets' audit records are durable: settle their runs. Returns how many.
    #[napi]
    pub fn release(&self, tickets: Float64Array) -> napi::Result<u32> {
        guard(|| {
            let tickets: Vec<u64> = tickets.iter().map(|&t| t as u64).collect();
            Ok(self.bus.audit_gate().release(&self.bus, &tickets) as u32)
        })
    }

    /// Runs held: waiting to be taken plus being written.
    #[napi(getter)]
    pub fn pending(&self) -> u32 {
        let (waiting, taken) = self.bus.audit_gate().pending();
        (waiting + taken) as u32
    }

    /// Installs the JS wake-up, called at most once per `arm()` when a run is held. It does not
    /// keep the event loop alive.
    #[napi]
    pub fn set_waker(&self, env: Env, wake: Function<(), ()>) -> napi::Result<()> {
        let installed = self.bus.audit_gate().set_waker(unref_wake(&env, wake)?);
        if !installed {
            return Err(napi::Error::from_reason("ERR_INVALID_ARG: this audit gate already has a writer"));
        }
        Ok(())
    }

    #[napi]
    pub fn arm(&self) {
        self.bus.audit_gate().arm();
    }
}
