//! Typed journal errors with stable codes. The bus maps these 1:1 onto JS errors, so the codes are
//! part of the public contract: add new ones, never rename.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub enum JournalError {
    /// Any other I/O failure (EIO, a failed fsync, ...). `op` says what we were doing.
    Io { op: &'static str, path: PathBuf, source: Arc<io::Error> },
    /// The file system is full (ENOSPC, EDQUOT). Nothing acknowledged before is lost.
    Full { op: &'static str, path: PathBuf, source: Arc<io::Error> },
    /// The directory or file system does not let us write (EROFS, EACCES, EPERM).
    ReadOnly { op: &'static str, path: PathBuf, source: Arc<io::Error> },
    /// A checksum or structure check failed somewhere a crash cannot explain (not the torn tail
    /// of the last segment). Never skipped silently: the operator decides.
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// Another process (or another `Journal` in this one) holds the directory lock.
    Locked { path: PathBuf },
    /// `close()` was called, or an earlier failed fsync made the journal unusable until reopened.
    Closed { reason: String },
    UnknownConsumer { name: String },
    Invalid { reason: String },
}

impl JournalError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            JournalError::Io { .. } => "ERR_JOURNAL_IO",
            JournalError::Full { .. } => "ERR_JOURNAL_FULL",
            JournalError::ReadOnly { .. } => "ERR_JOURNAL_READONLY",
            JournalError::Corrupt { .. } => "ERR_JOURNAL_CORRUPT",
            JournalError::Locked { .. } => "ERR_JOURNAL_LOCKED",
            JournalError::Closed { .. } => "ERR_JOURNAL_CLOSED",
            JournalError::UnknownConsumer { .. } => "ERR_JOURNAL_UNKNOWN_CONSUMER",
            JournalError::Invalid { .. } => "ERR_JOURNAL_INVALID",
        }
    }

    /// Classifies an OS error by errno, so disk-full and read-only are never reported as a
    /// generic I/O error.
    pub(crate) fn io(op: &'static str, path: &Path, e: io::Error) -> JournalError {
        let path = path.to_path_buf();
        let source = Arc::new(e);
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => JournalError::Full { op, path, source },
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                JournalError::ReadOnly { op, path, source }
            }
            _ => JournalError::Io { op, path, source },
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> JournalError {
        JournalError::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> JournalError {
        JournalError::Invalid { reason: reason.into() }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        match self {
            JournalError::Io { op, path, source }
            | JournalError::Full { op, path, source }
            | JournalError::ReadOnly { op, path, source } => {
                write!(f, "{code}: {op} {}: {source}", path.display())
            }
            JournalError::Corrupt { path, offset, reason } => {
                write!(f, "{code}: {} at byte {offset}: {reason}", path.display())
            }
            JournalError::Locked { path } => {
                write!(f, "{code}: {} is locked by another journal", path.display())
            }
            JournalError::Closed { reason } => write!(f, "{code}: {reason}"),
            JournalError::UnknownConsumer { name } => {
                write!(f, "{code}: consumer '{name}' is not registered")
            }
            JournalError::Invalid { reason } => write!(f, "{code}: {reason}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. }
            | JournalError::Full { source, .. }
            | JournalError::ReadOnly { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
