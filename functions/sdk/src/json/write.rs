//! Writing small JSON objects into any `fmt::Write`, typically a `heapless::String`.

use core::fmt::{self, Write};

use crate::{Error, ErrorKind};

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
        out.write_char('{').map_err(full)?;
        Ok(Self {
            out,
            has_fields: false,
        })
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
        write!(self.out, "{value}").map_err(full)?;
        Ok(self)
    }

    /// Adds a `true`/`false` field.
    pub fn boolean(&mut self, key: &str, value: bool) -> Result<&mut Self, Error> {
        self.key(key)?;
        self.out
            .write_str(if value { "true" } else { "false" })
            .map_err(full)?;
        Ok(self)
    }

    /// Closes the object (writes `}`).
    pub fn finish(self) -> Result<(), Error> {
        self.out.write_char('}').map_err(full)
    }

    fn key(&mut self, key: &str) -> Result<(), Error> {
        if self.has_fields {
            self.out.write_char(',').map_err(full)?;
        }
        self.has_fields = true;
        write_str(self.out, key).map_err(full)?;
        self.out.write_char(':').map_err(full)
    }
}

/// Writes `value` as a quoted, escaped JSON string.
pub fn write_str<W: Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut rest = value;
    // Copy runs of plain characters at once; escape the rest one by one.
    while let Some(at) = rest.find(|ch: char| ch == '"' || ch == '\\' || ch < ' ') {
        out.write_str(&rest[..at])?;
        let ch = rest[at..].chars().next().unwrap_or_default();
        match ch {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            other => write!(out, "\\u{:04x}", u32::from(other))?,
        }
        rest = &rest[at + ch.len_utf8()..];
    }
    out.write_str(rest)?;
    out.write_char('"')
}

/// Writes `value` as a JSON number: whole numbers without a fraction, others in
/// the shortest form that reads back to the same `f64`, non-finite ones as `null`.
pub fn write_number<W: Write + ?Sized>(out: &mut W, value: f64) -> fmt::Result {
    // Every integer up to 2^53 is exact in an f64 and prints as one.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if !value.is_finite() {
        out.write_str("null")
    } else if value.abs() <= EXACT && (value as i64) as f64 == value {
        write!(out, "{}", value as i64)
    } else {
        write!(out, "{value}")
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
    }

    #[test]
    fn escapes_strings() {
        let mut out: String<64> = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out.as_str(), r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn objects() {
        let mut out: String<128> = String::new();
        let mut object = ObjectWriter::new(&mut out).unwrap();
        object
            .string("device", "gh-1")
            .unwrap()
            .boolean("on", true)
            .unwrap();
        object.integer("ts", 1_700_000_000_000).unwrap();
        object.finish().unwrap();
        assert_eq!(
            out.as_str(),
            r#"{"device":"gh-1","on":true,"ts":1700000000000}"#
        );

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
