//! Delivery settings from JS (`deliveryGuarantee`, `retry`, `deadLetter`, `ordering`, `key`,
//! `dedupe`), copied field by field into the core's `DeliverySpec`, which applies the rules.

use napi_derive::napi;
use sluice_core::delivery::{DeliveryOptions, DeliverySpec};

#[napi(object)]
pub struct DeliveryInit {
    pub guarantee: Option<String>,
    pub max_attempts: Option<f64>,
    pub backoff: Option<String>,
    pub initial_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub jitter: Option<f64>,
    pub dead_letter: Option<String>,
    pub ordering: Option<String>,
    pub key: Option<String>,
    pub dedupe_window_ms: Option<f64>,
    pub dedupe_size: Option<f64>,
}

pub(crate) fn delivery_options(init: Option<DeliveryInit>) -> sluice_core::Result<DeliveryOptions> {
    let Some(d) = init else { return Ok(DeliveryOptions::default()) };
    DeliverySpec {
        guarantee: d.guarantee,
        max_attempts: d.max_attempts,
        backoff: d.backoff,
        initial_ms: d.initial_ms,
        max_ms: d.max_ms,
        jitter: d.jitter,
        dead_letter: d.dead_letter,
        ordering: d.ordering,
        key: d.key,
        dedupe_window_ms: d.dedupe_window_ms,
        dedupe_size: d.dedupe_size,
    }
    .build()
}
