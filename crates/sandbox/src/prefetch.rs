//! Cache prefetch hints for the worker's batch. An event is written on the publisher's core and
//! read on a worker's: in profiles of publish → trivial handler the worker's largest item was
//! the copy of the event's data into guest memory, stalled on those cross-core misses. A worker
//! that has a batch in hand asks for the next event's lines while the guest runs on this one.
//!
//! Hints only: they never fault and change no result, so other targets simply go without.

use sluice_core::Event;

/// Lines of an event's data fetched ahead: enough for typical small payloads; larger ones are
/// streamed by the copy itself, which the hardware prefetcher then follows.
const DATA_LINES: usize = 4;
const LINE: usize = 64;

/// The event's own fields (topic, id, deadline, the data pointer): read first by every step.
pub(crate) fn event_fields(ev: &Event) {
    let start = ev as *const Event as *const u8;
    for offset in (0..std::mem::size_of::<Event>()).step_by(LINE) {
        hint(start.wrapping_add(offset));
    }
}

/// The first lines of the event's data, which the guest's copy of the envelope reads.
pub(crate) fn event_data(ev: &Event) {
    let data = ev.data.as_ptr();
    for offset in (0..ev.data.len().min(DATA_LINES * LINE)).step_by(LINE) {
        hint(data.wrapping_add(offset));
    }
}

#[inline(always)]
fn hint(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
