//! Writing small JSON objects into any `fmt::Write`, typically a `heapless::String`.

use core::fmt::{self, Write};

use super::{EXACT, POW10};
use crate::{utf8, Error, ErrorKind};

/// Builds one flat JSON object, field by field.
///
/// ```
/// use edgefn_sdk::{heapless::String, json::ObjectWriter};
/// let mut out: String<64> = String::new();
/// let mut object = ObjectWriter::new(&mut out)?;
/// object.string("device", "gh-1")?.number("avg", 21.25)?.integer("n", 4)?;
/// object.finish()?;
/// assert_eq!(out.as_str(), r#"{"device":"gh-1","avg":21.25,"n":4}"#);
/// # Ok::<(), edgefn_sdk::Error>(())
/// ```
pub struct ObjectWriter<'w, W: Write> {
    /// Where the text goes.
    out: &'w mut W,
    /// Whether the next field needs a separating comma.
    has_fields: bool,
}

impl<'w, W: Write> ObjectWriter<'w, W> {
    /// Opens the object (writes `{`).
    pub fn new(out: &'w mut W) -> Result<Self, Error> {
        out.write_str("{").map_err(full)?;
        Ok(Self { out, has_fields: false })
    }

    /// Adds a string field; the value is escaped as JSON requires.
    pub fn string(&mut self, key: &str, value: &str) -> Result<&mut Self, Error> {
        self.key(key)?;
        write_str(self.out, value).map_err(full)?;
        Ok(self)
    }

    /// Adds a number field; non-finite values are written as `null`.
    pub fn number(&mut self, key: &str, value: f64) -> Result<&mut Self, Error> {
        self.key(key)?;
        write_number(self.out, value).map_err(full)?;
        Ok(self)
    }

    /// Adds an integer field.
    pub fn integer(&mut self, key: &str, value: i64) -> Result<&mut Self, Error> {
        self.key(key)?;
        write_integer(self.out, value).map_err(full)?;
        Ok(self)
    }

    /// Adds a `true`/`false` field.
    pub fn boolean(&mut self, key: &str, value: bool) -> Result<&mut Self, Error> {
        self.key(key)?;
        self.out.write_str(if value { "true" } else { "false" }).map_err(full)?;
        Ok(self)
    }

    /// Closes the object (writes `}`).
    pub fn finish(self) -> Result<(), Error> {
        self.out.write_str("}").map_err(full)
    }

    fn key(&mut self, key: &str) -> Result<(), Error> {
        if self.has_fields {
            self.out.write_str(",").map_err(full)?;
        }
        self.has_fields = true;
        write_str(self.out, key).map_err(full)?;
        self.out.write_str(":").map_err(full)
    }
}

/// Writes `value` as a quoted, escaped JSON string.
pub fn write_str<W: Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    out.write_str("\"")?;
    let mut rest = value;
    loop {
        let at = plain_len(rest.as_bytes());
        // `at` is the end or an ASCII byte, so a character boundary.
        let (plain, tail) = rest.split_at_checked(at).unwrap_or((rest, ""));
        out.write_str(plain)?;
        let Some(&byte) = tail.as_bytes().first() else {
            break;
        };
        write_escape(out, byte)?;
        rest = tail.get(1..).unwrap_or("");
    }
    out.write_str("\"")
}

/// How many bytes at the start of `bytes` need no escape in a JSON string.
///
/// A function of its own: the interpreter charges every pass of a loop for the
/// whole loop body, and a function's whole body on entry, so both stay small.
#[inline(never)]
fn plain_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < b' ' {
            break;
        }
        at += 1;
    }
    at
}

/// Writes the escape of `byte`, a quote, a backslash or a control character.
#[cold]
#[inline(never)]
fn write_escape<W: Write + ?Sized>(out: &mut W, byte: u8) -> fmt::Result {
    match byte {
        b'"' => out.write_str("\\\""),
        b'\\' => out.write_str("\\\\"),
        b'\n' => out.write_str("\\n"),
        b'\r' => out.write_str("\\r"),
        b'\t' => out.write_str("\\t"),
        other => write!(out, "\\u{other:04x}"),
    }
}

/// Writes `value` in decimal, without going through `core::fmt`'s machinery.
pub fn write_integer<W: Write + ?Sized>(out: &mut W, value: i64) -> fmt::Result {
    write_digits(out, value < 0, value.unsigned_abs(), 0)
}

/// Writes `value` as a JSON number: whole numbers without a fraction, others in
/// the shortest form that reads back to the same `f64`, non-finite ones as `null`.
pub fn write_number<W: Write + ?Sized>(out: &mut W, value: f64) -> fmt::Result {
    if !value.is_finite() {
        return out.write_str("null");
    }
    let magnitude = value.abs();
    if magnitude <= EXACT && (value as i64) as f64 == value {
        // Every integer up to 2^53 is exact in an f64 and prints as one.
        return write_integer(out, value as i64);
    }
    // Short decimals (`21.5`, `1013.25`) without core's general algorithm: the
    // fewest fraction digits `k` whose rounded digits read back exactly. Reading
    // back is `digits / 10^k`, one correctly rounded division of exact values, so
    // it is what any correct parser returns for the text written.
    for (places, &power) in POW10.iter().enumerate().skip(1) {
        let scaled = magnitude * power;
        if scaled >= EXACT {
            break;
        }
        // Below 2^53 both the whole part and the fraction are exact.
        let whole = scaled as u64;
        let digits = whole + u64::from(scaled - whole as f64 >= 0.5);
        if digits as f64 / power == magnitude {
            return write_digits(out, value < 0.0, digits, places);
        }
    }
    write!(out, "{value}")
}

/// Writes `digits / 10^places` in plain decimal, e.g. `(2150, 2)` as `21.5`.
fn write_digits<W: Write + ?Sized>(out: &mut W, negative: bool, mut digits: u64, mut places: usize) -> fmt::Result {
    // Trailing zeros of the fraction are not written.
    while places > 0 && digits % 10 == 0 {
        digits /= 10;
        places -= 1;
    }
    // A sign, 20 digits of a u64, a point, and the zeros of `0.000…`: `places`
    // is at most 22 and `digits` has at most 16 digits whenever it is non-zero.
    let mut text = [0u8; 48];
    let mut at = text.len();
    // Right to left: the fraction's digits and its point, then the whole part,
    // at least one digit. Two plain loops, as the interpreter charges every
    // pass for the whole loop body.
    if places > 0 {
        for _ in 0..places {
            at -= 1;
            text[at] = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
        at -= 1;
        text[at] = b'.';
    }
    loop {
        at -= 1;
        text[at] = b'0' + (digits % 10) as u8;
        digits /= 10;
        if digits == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        text[at] = b'-';
    }
    // Only ASCII digits, a point and a minus sign were written, so this is
    // never `None`; `utf8::to_str` costs the interpreter less than `from_utf8`.
    match text.get(at..).and_then(utf8::to_str) {
        Some(number) => out.write_str(number),
        None => Err(fmt::Error),
    }
}

/// Displays an `f64` as [`write_number`] writes it: `21.5`, `21`, `null`.
///
/// For finite values other than `-0` (written `0`) this is the text `{}` of the
/// `f64` gives, but for short decimals it costs the interpreter far less, so it
/// suits log lines: `info!("t={}", json::Number(t))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number(pub f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_number(f, self.0)
    }
}

/// The error for output that outgrew its buffer.
fn full(_: fmt::Error) -> Error {
    Error::new(ErrorKind::Capacity, "JSON output does not fit its buffer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapless::String;

    #[track_caller]
    fn check_number(value: f64, expected: &str) {
        let mut out: String<64> = String::new();
        write_number(&mut out, value).unwrap();
        assert_eq!(out.as_str(), expected);
    }

    #[test]
    fn numbers() {
        check_number(21.0, "21");
        check_number(-0.0, "0");
        check_number(21.25, "21.25");
        check_number(0.1 + 0.2, "0.30000000000000004");
        check_number(-1.5e-7, "-0.00000015");
        check_number(1e20, "100000000000000000000");
        check_number(f64::NAN, "null");
        check_number(f64::INFINITY, "null");
        check_number(0.025, "0.025");
        check_number(-40.125, "-40.125");
        check_number(1013.25, "1013.25");
        check_number(21.435000000000002, "21.435000000000002");
        check_number(9_007_199_254_740_992.0, "9007199254740992");
    }

    #[test]
    fn numbers_read_back_and_match_display() {
        // Short decimals, averages, tiny and huge values, both signs.
        let mut values = vec![0.1, 0.5, 21.37, 99.99, 1e-7, 123456.789, 1e15 + 0.5, 4.35, 1.005];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bits = f64::from_bits(seed);
            let decimal = (seed % 2_000_001) as f64 / [1.0, 10.0, 100.0, 1000.0][(seed >> 60) as usize % 4];
            values.extend([bits, decimal, decimal / 7.0, -decimal]);
        }
        for value in values.into_iter().filter(|v| v.is_finite()) {
            let mut out: String<400> = String::new();
            write_number(&mut out, value).unwrap();
            assert_eq!(out.parse::<f64>().unwrap(), value, "{out}");
            let shown = std::format!("{}", Number(value));
            assert_eq!(shown.as_str(), out.as_str());
            if value != 0.0 {
                assert_eq!(shown, std::format!("{value}"), "{value:e}");
            }
        }
    }

    #[test]
    fn integers() {
        for value in [0, 7, -7, 1_700_000_000_000, i64::MAX, i64::MIN] {
            let mut out: String<32> = String::new();
            write_integer(&mut out, value).unwrap();
            assert_eq!(out.as_str(), std::format!("{value}"));
        }
    }

    #[test]
    fn escapes_strings() {
        let mut out: String<64> = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out.as_str(), r#""a\"b\\c\nd\u0001é""#);
        let mut plain: String<64> = String::new();
        write_str(&mut plain, "").unwrap();
        write_str(&mut plain, "gh-1 é\t").unwrap();
        assert_eq!(plain.as_str(), r#""""gh-1 é\t""#);
    }

    #[test]
    fn objects() {
        let mut out: String<128> = String::new();
        let mut object = ObjectWriter::new(&mut out).unwrap();
        object.string("device", "gh-1").unwrap().boolean("on", true).unwrap();
        object.integer("ts", 1_700_000_000_000).unwrap();
        object.finish().unwrap();
        assert_eq!(out.as_str(), r#"{"device":"gh-1","on":true,"ts":1700000000000}"#);

        let mut empty: String<8> = String::new();
        ObjectWriter::new(&mut empty).unwrap().finish().unwrap();
        assert_eq!(empty.as_str(), "{}");
    }

    #[test]
    fn overflow_is_a_capacity_error() {
        let mut out: String<8> = String::new();
        let mut object = ObjectWriter::new(&mut out).unwrap();
        let err = object.string("device", "gh-1").map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Capacity);
    }
}
