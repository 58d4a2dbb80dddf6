//! Write-failure injection for tests (`fault-injection` feature). Without the feature this is a
//! zero-sized pass-through, so production builds carry no test hook.
//!
//! Real ENOSPC / EROFS are tested on a small tmpfs when the test runs as root; this hook covers
//! what a tmpfs cannot: a failure part-way through a write, a failing fsync, and non-root CI.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

#[cfg(feature = "fault-injection")]
use std::sync::Mutex;

/// The errno an injected failure reports.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    NoSpace,
    ReadOnly,
    Io,
}

#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
impl FaultKind {
    fn errno(self) -> i32 {
        match self {
            FaultKind::NoSpace => libc::ENOSPC,
            FaultKind::ReadOnly => libc::EROFS,
            FaultKind::Io => libc::EIO,
        }
    }
}

/// After `after_bytes` more bytes of record data are written, writes fail with `kind` (the write
/// that crosses the limit is applied partially first, as a kernel may do). With `fsync`, fsync
/// fails with EIO as well.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub after_bytes: u64,
    pub kind: FaultKind,
    pub fsync: bool,
}

#[derive(Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    plan: Mutex<Option<Fault>>,
}

impl Faults {
    #[cfg(feature = "fault-injection")]
    pub fn set(&self, f: Option<Fault>) {
        *self.plan.lock().unwrap() = f;
    }

    pub fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if let Some(f) = self.plan.lock().unwrap().as_mut() {
            if buf.len() as u64 > f.after_bytes {
                let part = f.after_bytes as usize;
                f.after_bytes = 0;
                file.write_all_at(&buf[..part], offset)?;
                return Err(io::Error::from_raw_os_error(f.kind.errno()));
            }
            f.after_bytes -= buf.len() as u64;
        }
        file.write_all_at(buf, offset)
    }

    pub fn sync_data(&self, file: &File) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if self.plan.lock().unwrap().as_ref().is_some_and(|f| f.fsync) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        file.sync_data()
    }
}
