//! The one error type of the SDK, which a function's handler returns as well.

use core::fmt;

use heapless::String;

use crate::text;

/// Longest error message kept, in bytes; longer messages are cut with `...`.
///
/// With a one-byte length this keeps an `Error` under 128 bytes, so a `Result`
/// carrying one stays cheap to return (and clippy's `result_large_err` quiet)
/// without needing an allocator to box it.
pub const MESSAGE_CAP: usize = 120;

/// Why an SDK call or a function failed: a kind to match on and a message to log.
///
/// The handler macro logs the message at error level and returns [`Error::code`] to
/// the gateway, which marks the invocation failed and sends none of its publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong, coarsely: callers match on this.
    kind: ErrorKind,
    /// What went wrong, for the log line: names the key, the field or the limit.
    message: String<MESSAGE_CAP, u8>,
}

/// The broad class of an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is missing or has the wrong shape.
    Config,
    /// Part of the event could not be read (larger than the buffer, not UTF-8).
    Event,
    /// A publish was refused before reaching the host (bad topic).
    Publish,
    /// An upstream record was refused before reaching the host (bad stream name).
    Upstream,
    /// Output did not fit its fixed-size buffer.
    Capacity,
    /// A change to the function's kept state was refused (past
    /// `limits.state_max_bytes`, or the disk failed), or no state is kept here.
    State,
    /// Anything else, typically raised by the function itself.
    Other,
}

impl Error {
    /// An error of `kind` with a fixed message.
    pub fn new(kind: ErrorKind, message: &str) -> Self {
        Self::format(kind, format_args!("{message}"))
    }

    /// An error of `kind` with a formatted message, e.g. `format_args!("bad {x}")`.
    pub fn format(kind: ErrorKind, message: fmt::Arguments<'_>) -> Self {
        let text: String<MESSAGE_CAP> = text::format(message);
        let mut short = String::new();
        // Same capacity, so this cannot fail.
        let _ = short.push_str(&text);
        Self { kind, message: short }
    }

    /// An [`ErrorKind::Other`] error: the usual way a function reports its own failure.
    pub fn msg(message: &str) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// A configuration error naming `key`, e.g. `Error::config("window", "must be 1..=64")`.
    pub fn config(key: &str, problem: impl fmt::Display) -> Self {
        Self::format(ErrorKind::Config, format_args!("config `{key}` {problem}"))
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The non-zero code `handle`/`init` return for this error: 1 other, 2 config,
    /// 3 event, 4 publish, 5 capacity, 6 upstream, 7 state.
    pub fn code(&self) -> i32 {
        match self.kind {
            ErrorKind::Other => 1,
            ErrorKind::Config => 2,
            ErrorKind::Event => 3,
            ErrorKind::Publish => 4,
            ErrorKind::Capacity => 5,
            ErrorKind::Upstream => 6,
            ErrorKind::State => 7,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key() {
        let err = Error::config("above", "is required (a number)");
        assert_eq!(err.message(), "config `above` is required (a number)");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.code(), 2);
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(500);
        let err = Error::msg(&long);
        assert_eq!(err.message().len(), MESSAGE_CAP);
        assert!(err.message().ends_with("..."));
    }
}
