//! Guest ABI v1: names, status codes, return codes and the pointer/length check every host
//! function runs before it touches guest memory. `docs/abi.md` is the prose version of this file.

use std::ops::Range;

use crate::error::GuestMemoryFault;

/// Version of the guest ABI implemented here (also the envelope version).
pub const ABI_VERSION: u16 = 1;

/// Module name of every host import.
pub const IMPORT_MODULE: &str = "sluice";

pub const EXPORT_MEMORY: &str = "memory";
pub const EXPORT_ALLOC: &str = "sluice_alloc";
pub const EXPORT_HANDLE: &str = "sluice_handle";
pub const EXPORT_INIT: &str = "sluice_init";

pub const IMPORT_EMIT: &str = "emit";
pub const IMPORT_LOG: &str = "log";
pub const IMPORT_DEADLINE_MS: &str = "deadline_ms";
pub const IMPORT_CONFIG_LEN: &str = "config_len";
pub const IMPORT_CONFIG_READ: &str = "config_read";

/// Values `sluice_handle` returns. Anything else is reported as `ERR_HANDLER_STATUS`.
pub mod status {
    pub const ACK: i32 = 0;
    pub const RETRY: i32 = 1;
    pub const REJECT: i32 = 2;
}

/// Values `emit` returns to the guest. Refusals are policy decisions, the guest may go on;
/// bad pointers are not returned as a code: they trap with `ERR_GUEST_MEMORY`.
pub mod emit_code {
    /// Accepted; published if the handler acks.
    pub const OK: i32 = 0;
    /// The topic matches none of the deployment's `emits` patterns.
    pub const NOT_ALLOWED: i32 = -1;
    /// Topic or data longer than the per-emit caps.
    pub const TOO_LARGE: i32 = -2;
    /// Topic is not UTF-8 or not a concrete topic (empty segment, wildcard, whitespace).
    pub const BAD_TOPIC: i32 = -3;
    /// Too many emits, or too many emitted bytes, for this event.
    pub const QUOTA: i32 = -4;
}

/// Log levels accepted by `log`. Values outside 0..=4 are recorded as `Info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

impl LogLevel {
    pub fn from_i32(level: i32) -> LogLevel {
        match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

/// Checks a guest `(ptr, len)` pair against the memory size *now* and returns the byte range.
///
/// wasm32 pointers are unsigned, but the ABI passes them as i32 and only accepts 0..2^31: the
/// memory ceiling is below 2 GiB, so a negative value can never be a valid address, and
/// refusing it early keeps the arithmetic in one signed domain. Each check is separate so a
/// test can prove it is there.
pub fn check_guest_range(
    memory_size: usize,
    ptr: i32,
    len: i32,
) -> Result<Range<usize>, GuestMemoryFault> {
    if ptr < 0 {
        return Err(GuestMemoryFault::NegativePointer { ptr });
    }
    if len < 0 {
        return Err(GuestMemoryFault::NegativeLength { len });
    }
    let end = ptr
        .checked_add(len)
        .ok_or(GuestMemoryFault::Overflow { ptr, len })?;
    // Both are non-negative i32 here, so the casts are lossless.
    let (start, end) = (ptr as usize, end as usize);
    if end > memory_size {
        return Err(GuestMemoryFault::OutOfBounds {
            ptr,
            len,
            memory_size,
        });
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_in_bounds_and_empty_ranges() {
        assert_eq!(check_guest_range(100, 10, 20), Ok(10..30));
        assert_eq!(check_guest_range(100, 100, 0), Ok(100..100));
        assert_eq!(check_guest_range(100, 0, 100), Ok(0..100));
    }

    #[test]
    fn each_check_reports_its_own_fault() {
        assert_eq!(
            check_guest_range(100, -1, 1),
            Err(GuestMemoryFault::NegativePointer { ptr: -1 })
        );
        assert_eq!(
            check_guest_range(100, 0, -5),
            Err(GuestMemoryFault::NegativeLength { len: -5 })
        );
        assert_eq!(
            check_guest_range(usize::MAX, i32::MAX, 1),
            Err(GuestMemoryFault::Overflow {
                ptr: i32::MAX,
                len: 1
            })
        );
        assert_eq!(
            check_guest_range(100, 90, 11),
            Err(GuestMemoryFault::OutOfBounds {
                ptr: 90,
                len: 11,
                memory_size: 100
            })
        );
        assert_eq!(
            check_guest_range(100, 101, 0),
            Err(GuestMemoryFault::OutOfBounds {
                ptr: 101,
                len: 0,
                memory_size: 100
            })
        );
    }
}
