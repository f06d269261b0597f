//! Upstream records: data for durable delivery to the cloud, through the
//! gateway's store-and-forward outbox.
//!
//! See `ABI.md` ("Upstream") for the host's side and `UPSTREAM.md` at the root of
//! the repository for the wire format and delivery guarantees.

use crate::{sys, Error, ErrorKind};

/// Longest stream name, in bytes (all its characters are ASCII).
pub const MAX_STREAM_LEN: usize = 64;

/// What became of a record passed to [`upstream()`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// Buffered: the outbox gets it if this invocation succeeds.
    Buffered,
    /// This gateway has no `[upstream]` section: nothing was recorded. Not an
    /// error; the function decides whether that matters.
    NotConfigured,
    /// The outbox refuses records now (it is full, or the disk is nearly full):
    /// nothing was recorded, and the gateway counts it in `refused`. The
    /// function decides what follows: a command it publishes anyway still goes
    /// out, since no record of this invocation was refused at hand-off.
    Refused,
}

impl Sent {
    /// Whether the record was buffered for the outbox.
    pub fn is_buffered(self) -> bool {
        self == Self::Buffered
    }
}

/// Emits one record on `stream` for durable upstream delivery: the gateway's
/// store-and-forward outbox, then a cloud MQTT broker.
///
/// Like a publish, the record is buffered and handed to the outbox only if this
/// invocation succeeds, and it counts against the same per-invocation quotas
/// (`limits.max_publishes` messages and `limits.max_publish_bytes` payload bytes,
/// publishes and records together; exceeding them traps). The outbox stores the
/// records on disk before the invocation's publishes go out.
///
/// Returns [`Sent::NotConfigured`] when the gateway has no upstream and
/// [`Sent::Refused`] while its outbox refuses records, neither an error. A stream name [`check_stream`] refuses is an [`ErrorKind::Upstream`] error
/// here, rather than a trap in the host, whether or not an upstream is configured.
///
/// ```
/// use edgefn_sdk::{upstream, Sent};
///
/// // Off wasm32 (as in this test) there is never an upstream.
/// assert_eq!(upstream("climate", br#"{"t":21.5}"#), Ok(Sent::NotConfigured));
/// assert!(upstream("climate/raw", b"x").is_err());
/// ```
pub fn upstream(stream: &str, payload: &[u8]) -> Result<Sent, Error> {
    check_stream(stream)?;
    match sys::upstream(stream, payload) {
        0 => Ok(Sent::Buffered),
        -1 => Ok(Sent::NotConfigured),
        -3 => Ok(Sent::Refused),
        code => Err(Error::format(
            ErrorKind::Upstream,
            format_args!("upstream record on `{stream}` failed with code {code}"),
        )),
    }
}

/// Checks `stream` against the ABI's rules for stream names: 1 to 64 characters,
/// each an ASCII letter or digit, `-`, `_` or `.`. Useful to validate a configured
/// stream early.
pub fn check_stream(stream: &str) -> Result<(), Error> {
    let problem = if stream.is_empty() {
        "is empty"
    } else if stream.len() > MAX_STREAM_LEN {
        "is longer than 64 characters"
    } else if !stream.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')) {
        // Any non-ASCII character has bytes >= 0x80, so a byte scan refuses it too.
        "may hold only letters, digits, `-`, `_` and `.`"
    } else {
        return Ok(());
    };
    Err(Error::format(ErrorKind::Upstream, format_args!("upstream stream `{stream}` {problem}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_stream_names_the_host_accepts() {
        let longest = "s".repeat(MAX_STREAM_LEN);
        for good in ["climate", "greenhouse.climate-1", "A_b.9", "-", &longest] {
            assert_eq!(check_stream(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn refuses_stream_names_the_host_would_trap_on() {
        let too_long = "s".repeat(MAX_STREAM_LEN + 1);
        for bad in ["", "a/b", "a+", "a#", "a b", "caf\u{e9}", "a\0", &too_long] {
            let err = upstream(bad, b"x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Upstream, "{bad:?}");
            assert_eq!(err.code(), 6);
            assert!(err.message().starts_with("upstream stream `"), "{err}");
        }
    }

    #[test]
    fn off_wasm32_there_is_no_upstream() {
        let sent = upstream("climate", b"{\"t\":1}").unwrap();
        assert_eq!(sent, Sent::NotConfigured);
        assert!(!sent.is_buffered());
        assert!(Sent::Buffered.is_buffered());
    }
}
