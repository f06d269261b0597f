//! The function's configuration: the key/value settings the gateway holds for
//! this function, read by key.
//!
//! The host hands every value over as text, numbers and booleans in their TOML
//! spelling (`28.5`, `1_000`, `true`). Readers return `Ok(None)` for an unset key
//! and an [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the key for
//! a value of the wrong shape, so a handler can write
//! `let above: f64 = config::required("above")?;`.

use heapless::{String, Vec};

use crate::{sys, Error, QoS};

/// Longest number or boolean value accepted, in bytes.
const SCALAR_CAP: usize = 64;

/// A type a configuration value can be read as.
pub trait Value: Sized {
    /// What a valid value looks like, for error messages: "a number".
    const EXPECTED: &'static str;

    /// Reads `key`: `Ok(None)` when it is unset, an error naming it when invalid.
    fn read(key: &str) -> Result<Option<Self>, Error>;
}

/// The raw text of `key`, copied into `buf`; an error if it does not fit or is not UTF-8.
pub fn get<'b>(key: &str, buf: &'b mut [u8]) -> Result<Option<&'b str>, Error> {
    let Some(len) = sys::config_get(key, buf) else {
        return Ok(None);
    };
    if len > buf.len() {
        let cap = buf.len();
        return Err(Error::config(key, format_args!("is {len} bytes, longer than the {cap} allowed")));
    }
    match core::str::from_utf8(&buf[..len]) {
        Ok(text) => Ok(Some(text)),
        Err(_) => Err(Error::config(key, "is not UTF-8")),
    }
}

/// `key` read as `T`, `Ok(None)` when unset.
pub fn value<T: Value>(key: &str) -> Result<Option<T>, Error> {
    T::read(key)
}

/// `key` read as `T`; unset is an error that names the key and what it expects.
pub fn required<T: Value>(key: &str) -> Result<T, Error> {
    T::read(key)?.ok_or_else(|| Error::config(key, format_args!("is required ({})", T::EXPECTED)))
}

/// `key` as a finite number.
pub fn number(key: &str) -> Result<Option<f64>, Error> {
    value(key)
}

/// `key` as a whole number (`10`, also `10.0`).
pub fn integer(key: &str) -> Result<Option<i64>, Error> {
    value(key)
}

/// `key` as `true` or `false`.
pub fn boolean(key: &str) -> Result<Option<bool>, Error> {
    value(key)
}

/// `key` as a string of at most `N` bytes.
pub fn string<const N: usize>(key: &str) -> Result<Option<String<N>>, Error> {
    value(key)
}

/// Reads a short value and parses it with `parse`, or explains what was expected.
fn scalar<T: Value>(key: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>, Error> {
    let mut buf = [0u8; SCALAR_CAP];
    let len = match sys::config_get(key, &mut buf) {
        None => return Ok(None),
        Some(len) => len,
    };
    let parsed = buf.get(..len).and_then(|bytes| core::str::from_utf8(bytes).ok()).map(str::trim);
    match parsed.and_then(parse) {
        Some(value) => Ok(Some(value)),
        None => {
            let shown = parsed.unwrap_or("<too long>");
            Err(Error::config(key, format_args!("must be {}, not `{shown}`", T::EXPECTED)))
        }
    }
}

/// Parses a TOML-style number: digits may be grouped with `_`; must be finite.
fn parse_number(text: &str) -> Option<f64> {
    let mut digits: String<SCALAR_CAP> = String::new();
    for ch in text.chars().filter(|&ch| ch != '_') {
        digits.push(ch).ok()?;
    }
    digits.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// Parses a whole number, spelled as an integer or as an integral float.
fn parse_integer(text: &str) -> Option<i64> {
    let value = parse_number(text)?;
    // Beyond 2^53 a float no longer holds every integer; refuse rather than round.
    let exact = value.abs() <= 9_007_199_254_740_992.0 && (value as i64) as f64 == value;
    exact.then_some(value as i64)
}

impl Value for f64 {
    const EXPECTED: &'static str = "a number";

    fn read(key: &str) -> Result<Option<Self>, Error> {
        scalar(key, parse_number)
    }
}

impl Value for i64 {
    const EXPECTED: &'static str = "a whole number";

    fn read(key: &str) -> Result<Option<Self>, Error> {
        scalar(key, parse_integer)
    }
}

impl Value for bool {
    const EXPECTED: &'static str = "`true` or `false`";

    fn read(key: &str) -> Result<Option<Self>, Error> {
        scalar(key, |text| match text {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }
}

impl Value for QoS {
    const EXPECTED: &'static str = "a QoS of 0, 1 or 2";

    fn read(key: &str) -> Result<Option<Self>, Error> {
        scalar(key, |text| parse_integer(text).and_then(QoS::from_level))
    }
}

impl<const N: usize> Value for String<N> {
    const EXPECTED: &'static str = "a string";

    fn read(key: &str) -> Result<Option<Self>, Error> {
        let mut bytes: Vec<u8, N> = Vec::new();
        // Cannot fail: the new length is exactly the capacity.
        let _ = bytes.resize_default(N);
        let Some(text) = get(key, &mut bytes)? else {
            return Ok(None);
        };
        let len = text.len();
        bytes.truncate(len);
        // `get` checked these bytes are UTF-8.
        String::from_utf8(bytes).map(Some).map_err(|_| Error::config(key, "is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_numbers() {
        assert_eq!(parse_number("28.5"), Some(28.5));
        assert_eq!(parse_number("-3"), Some(-3.0));
        assert_eq!(parse_number("+1e3"), Some(1000.0));
        assert_eq!(parse_number("1_000"), Some(1000.0));
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("nan"), None);
        assert_eq!(parse_number("warm"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn parses_whole_numbers() {
        assert_eq!(parse_integer("10"), Some(10));
        assert_eq!(parse_integer("10.0"), Some(10));
        assert_eq!(parse_integer("-2"), Some(-2));
        assert_eq!(parse_integer("10.5"), None);
        assert_eq!(parse_integer("1e300"), None);
    }

    #[test]
    fn unset_keys_read_as_none_off_wasm() {
        // Off wasm32 the host shim has no configuration at all.
        assert_eq!(number("above"), Ok(None));
        assert_eq!(string::<8>("topic"), Ok(None));
        let err = required::<f64>("above").unwrap_err();
        assert_eq!(err.message(), "config `above` is required (a number)");
    }
}
