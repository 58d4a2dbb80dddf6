use crate::guard::guard;
use crate::wake::unref_wake;
use napi::bindgen_prelude::Function;
use napi::Env;
use napi_derive::napi;
use sluice_core::observe::{encode_records, Interest, Record, Recorder};
use sluice_core::subscription::Origin;
use sluice_core::Error;
use std::sync::{Arc, Mutex};

/// The bus's lifecycle recorder, drained from JS in batches (see core `observe`).
#[napi]
pub struct NativeRecorder {
    rec: Arc<Recorder>,
    origin: Arc<Origin>,
    scratch: Mutex<Vec<Record>>,
}

impl NativeRecorder {
    pub(crate) fn new(rec: Arc<Recorder>, origin: Arc<Origin>) -> Self {
        NativeRecorder { rec, origin, scratch: Mutex::new(Vec::new()) }
    }
}

fn mask(v: f64) -> sluice_core::Result<u32> {
    if !(0.0..=u32::MAX as f64).contains(&v) || v.fract() != 0.0 {
        return Err(Error::invalid(format!("a kind mask is a 32-bit unsigned integer, got {v}")));
    }
    Ok(v as u32)
}

#[napi]
impl NativeRecorder {
    /// What to count (`counted`), record always (`every`) and record for sampled events only
    /// (`sampled`, 1 in `sampleEvery` without a traceparent); bit i = kind i. All zero = off.
    #[napi]
    pub fn set_interest(&self, counted: f64, every: f64, sampled: f64, sample_every: f64) -> napi::Result<()> {
        guard(|| {
            if !(sample_every >= 1.0) || sample_every.fract() != 0.0 {
                return Err(Error::invalid(format!("sampleEvery must be a whole number >= 1, got {sample_every}")));
            }
            self.rec.set_interest(Interest {
                counted: mask(counted)?,
                every: mask(every)?,
                sampled: mask(sampled)?,
                sample_every: sample_every as u64,
            });
            Ok(())
        })
    }

    /// Up to `max` records plus the cumulative per-kind counts and losses, as one JSON text.
    #[napi]
    pub fn drain(&self, max: u32) -> napi::Result<String> {
        guard(|| {
            let mut recs = self.scratch.lock().map_err(|_| Error::invalid("recorder poisoned"))?;
            recs.clear();
            self.rec.drain(max.max(1) as usize, &mut recs);
            let mut out = Vec::with_capacity(64 + recs.len() * 120);
            encode_records(&self.origin, &self.rec.counts(), &self.rec.lost(), &recs, &mut out);
            recs.clear();
            String::from_utf8(out).map_err(|_| Error::invalid("record is not UTF-8"))
        })
    }

    /// Installs the JS wake-up, called at most once per `arm()` when the ring passes a quarter
    /// full. It does not keep the event loop alive (JS also drains on a timer).
    #[napi]
    pub fn set_waker(&self, env: Env, wake: Function<(), ()>) -> napi::Result<()> {
        let installed = self.rec.set_waker(unref_wake(&env, wake)?);
        if !installed {
            return Err(napi::Error::from_reason("ERR_INVALID_ARG: this recorder already has a drainer"));
        }
        Ok(())
    }

    #[napi]
    pub fn arm(&self) {
        self.rec.arm();
    }

    /// Records waiting in the ring.
    #[napi(getter)]
    pub fn pending(&self) -> u32 {
        self.rec.len() as u32
    }

    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.rec.capacity() as u32
    }
}
