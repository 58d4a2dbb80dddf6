//! One error type for the whole core. Every variant has a stable `code` that the binding passes to
//! JavaScript unchanged, so users can branch on `err.code` without parsing messages.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A subscription with the `error` overflow policy was full.
    QueueFull,
    /// The Context was canceled.
    Canceled,
    /// The Context's deadline passed.
    DeadlineExceeded,
    /// The bus or subscription was closed.
    Closed,
    /// Bad input from the caller: capacity, pattern, policy, filter, topic.
    InvalidArg,
    /// A feature that needs a component that is not configured (e.g. `spill` without a journal).
    Unsupported,
    /// Event data that could not be encoded or decoded.
    Encode,
    /// The local journal failed; carries the journal's own stable code (`ERR_JOURNAL_FULL`,
    /// `ERR_JOURNAL_READONLY`, `ERR_JOURNAL_IO`, `ERR_JOURNAL_LOCKED`, `ERR_JOURNAL_CORRUPT`, …).
    Journal(&'static str),
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::QueueFull => "ERR_QUEUE_FULL",
            ErrorKind::Canceled => "ERR_CANCELED",
            ErrorKind::DeadlineExceeded => "ERR_DEADLINE_EXCEEDED",
            ErrorKind::Closed => "ERR_CLOSED",
            ErrorKind::InvalidArg => "ERR_INVALID_ARG",
            ErrorKind::Unsupported => "ERR_UNSUPPORTED",
            ErrorKind::Encode => "ERR_ENCODE",
            ErrorKind::Journal(code) => code,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArg, message)
    }
    pub fn closed(what: &str) -> Self {
        Error::new(ErrorKind::Closed, format!("{what} is closed"))
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<sluice_journal::JournalError> for Error {
    fn from(e: sluice_journal::JournalError) -> Self {
        let code = e.code();
        let text = e.to_string();
        // The journal's Display starts with its code; keep the message without it.
        let message = text.strip_prefix(code).and_then(|m| m.strip_prefix(": ")).unwrap_or(&text).to_string();
        Error::new(ErrorKind::Journal(code), message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
