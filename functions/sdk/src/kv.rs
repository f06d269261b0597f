//! The function's kept state: a key-value store of its own that outlives the
//! instance, a restart of the gateway, a new version of the function and a
//! power cut (ABI.md, "State"), shared by all its instances.
//!
//! ```no_run
//! use edgefn_sdk::kv;
//! // Count events across restarts, safely beside other instances.
//! let mut buf = [0u8; 8];
//! loop {
//!     let old = kv::get("count", &mut buf).unwrap().map(|_| u64::from_le_bytes(buf));
//!     let new = old.unwrap_or(0) + 1;
//!     let old_bytes = old.map(u64::to_le_bytes);
//!     if kv::compare_and_set("count", old_bytes.as_ref().map(|b| &b[..]), Some(&new.to_le_bytes())).unwrap() {
//!         break;
//!     }
//! }
//! ```

use crate::{sys, Error, ErrorKind};

/// The error for a code the host answered: -4 refused, -5 no state here.
#[cold]
#[inline(never)]
fn failed(what: &str, key: &str, code: i32) -> Error {
    let why = match code {
        -4 => "was refused (past limits.state_max_bytes, or the disk failed)",
        -5 => "found no state here (the gateway keeps none for this run)",
        _ => "failed",
    };
    Error::format(ErrorKind::State, format_args!("state {what} of `{key}` {why} (code {code})"))
}

/// Reads the value under `key` into `buf`: `Some(len)` when there is one (copied
/// only if it fits: a `len` over `buf.len()` means read again with more room),
/// `None` when there is none.
pub fn get(key: &str, buf: &mut [u8]) -> Result<Option<usize>, Error> {
    match sys::kv::get(key, buf) {
        -1 => Ok(None),
        code if code < 0 => Err(failed("get", key, code)),
        len => Ok(Some(len as usize)),
    }
}

/// Sets `key` to `value`, at once, for every instance of the function.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    match sys::kv::set(key, value) {
        0 => Ok(()),
        code => Err(failed("set", key, code)),
    }
}

/// Deletes `key`; whether it was there.
pub fn delete(key: &str) -> Result<bool, Error> {
    match sys::kv::delete(key) {
        code if code < 0 => Err(failed("delete", key, code)),
        code => Ok(code == 1),
    }
}

/// Sets `key` to `value` (deletes it for `None`) only if it holds `expected` now
/// (`None`: absent), atomically across the function's instances; `false` when
/// it held something else: read it again and retry.
pub fn compare_and_set(key: &str, expected: Option<&[u8]>, value: Option<&[u8]>) -> Result<bool, Error> {
    match sys::kv::cas(key, expected, value) {
        code if code < 0 => Err(failed("compare-and-set", key, code)),
        code => Ok(code == 1),
    }
}

/// Writes the keys that start with `prefix` into `buf`, in order, each followed
/// by a newline, and returns their length (written only if it fits).
pub fn keys(prefix: &str, buf: &mut [u8]) -> Result<usize, Error> {
    match sys::kv::keys(prefix, buf) {
        code if code < 0 => Err(failed("keys", prefix, code)),
        len => Ok(len as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_wasm32_every_call_says_no_state_is_kept() {
        let err = set("k", b"v").unwrap_err();
        assert_eq!((err.kind(), err.code()), (ErrorKind::State, 7));
        assert!(err.message().contains("no state"), "{}", err.message());
        assert_eq!(get("k", &mut [0; 4]).unwrap_err().kind(), ErrorKind::State);
    }
}
