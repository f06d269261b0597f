//! Reading a number field of a JSON object without building a document.

use core::fmt;

use super::key::key_matches;
use super::{EXACT, POW10};
use crate::text::same_bytes;
use crate::utf8;

/// Deepest nesting of arrays and objects skipped over before giving up.
pub(super) const MAX_DEPTH: usize = 32;

/// Why [`number_field`] found no number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// The payload is not valid JSON (or not UTF-8).
    NotJson,
    /// The payload is JSON but not an object.
    NotAnObject,
    /// The object has no such field (at that path).
    Missing,
    /// The field holds something other than a number or boolean, or a number too
    /// large for an `f64`.
    NotANumber,
    /// The value is not a string without escapes, or a boolean ([`super::text_at`]).
    NotAText,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotJson => "payload is not JSON",
            Self::NotAnObject => "payload is not a JSON object",
            Self::Missing => "no such field",
            Self::NotANumber => "not a number or boolean",
            Self::NotAText => "not a string or boolean",
        })
    }
}

/// The top-level field `name` of the JSON object in `payload`, as a number:
/// booleans read as `1` (true) and `0` (false).
///
/// The whole payload is checked to be JSON; nested values are skipped, never
/// searched. When a name repeats, the last one wins.
///
/// ```
/// use edgefn_sdk::json::{number_field, FieldError};
/// let payload = br#"{"temperature": 21.5, "door": true, "id": "gh-1"}"#;
/// assert_eq!(number_field(payload, "temperature"), Ok(21.5));
/// assert_eq!(number_field(payload, "door"), Ok(1.0));
/// assert_eq!(number_field(payload, "id"), Err(FieldError::NotANumber));
/// assert_eq!(number_field(payload, "humidity"), Err(FieldError::Missing));
/// ```
pub fn number_field(payload: &[u8], name: &str) -> Result<f64, FieldError> {
    match top_level(payload, name)? {
        Scalar::Bool(flag) => Ok(if flag { 1.0 } else { 0.0 }),
        Scalar::Number(digits) => parse_number(digits).filter(|v| v.is_finite()).ok_or(FieldError::NotANumber),
        Scalar::Text(_) | Scalar::Other => Err(FieldError::NotANumber),
    }
}

/// The value of the top-level field `name` of the JSON object in `payload`.
pub(super) fn top_level<'a>(payload: &'a [u8], name: &str) -> Result<Scalar<'a>, FieldError> {
    // The payload is not run through `from_utf8` first: outside strings JSON is
    // ASCII, so any other byte there fails the grammar, and `Parser::string`
    // checks the UTF-8 inside strings. A payload that parses is valid UTF-8.
    let mut parser = Parser { bytes: payload, pos: 0, span: (0, 0) };
    parser.skip_ws();
    let is_object = parser.peek() == Some(b'{');
    let found = if is_object {
        parser.object(0, Some(name))?
    } else {
        parser.value(0)?;
        None
    };
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(FieldError::NotJson);
    }
    match found {
        _ if !is_object => Err(FieldError::NotAnObject),
        None => Err(FieldError::Missing),
        Some(found) => Ok(found),
    }
}

/// Parses a number that [`Parser::number`] validated, correctly rounded.
///
/// Telemetry numbers (`21.5`, `-3`, `1013.25`) take a short exact path: with at
/// most 2^53 as the digits and a power of ten up to 10^22, one IEEE multiply or
/// divide of two exact values is correctly rounded (Clinger's fast path). Anything
/// else goes to `core`'s parser, which is exact too but costs the interpreter
/// several times more.
pub(super) fn parse_number(spelling: &[u8]) -> Option<f64> {
    fast_number(spelling).or_else(|| slow_number(spelling))
}

/// The general path of [`parse_number`], kept out of line: the interpreter
/// charges a function's whole body on entry, taken branches or not.
#[inline(never)]
fn slow_number(spelling: &[u8]) -> Option<f64> {
    core::str::from_utf8(spelling).ok()?.parse().ok()
}

/// The fast path of [`parse_number`], or `None` when it does not apply.
fn fast_number(spelling: &[u8]) -> Option<f64> {
    let (negative, bytes) = match spelling.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, spelling),
    };
    let mut digits: u64 = 0;
    let mut scale: i32 = 0;
    let mut in_fraction = false;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'0'..=b'9' => {
                digits = digits * 10 + u64::from(byte - b'0');
                if digits > EXACT as u64 {
                    return None;
                }
                scale -= i32::from(in_fraction);
            }
            b'.' => in_fraction = true,
            _ => break, // `e` or `E`: the exponent follows
        }
        at += 1;
    }
    // What is left is the exponent part, if any: `e`, an optional sign, digits.
    if let Some(exponent) = bytes.get(at + 1..) {
        let (sign, magnitude) = match exponent {
            [b'-', magnitude @ ..] => (-1, magnitude),
            [b'+', magnitude @ ..] => (1, magnitude),
            magnitude => (1, magnitude),
        };
        if magnitude.len() > 3 {
            return None;
        }
        let value = magnitude.iter().fold(0, |acc, &byte| acc * 10 + i32::from(byte - b'0'));
        scale += sign * value;
    }
    let power = *POW10.get(scale.unsigned_abs() as usize)?;
    // `digits` is at most 2^53, so this conversion is exact.
    let magnitude = if scale < 0 { digits as f64 / power } else { digits as f64 * power };
    Some(if negative { -magnitude } else { magnitude })
}

/// A value, reduced to what the readers care about.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scalar<'a> {
    /// A number, as its validated JSON spelling (ASCII).
    Number(&'a [u8]),
    /// `true` or `false`.
    Bool(bool),
    /// A string without escapes, as its contents.
    Text(&'a [u8]),
    /// A string with escapes, `null`, an array or an object.
    Other,
}

/// The bytes that end a run of plain string contents: `"`, `\`, the control
/// characters (which JSON requires escaped) and every non-ASCII byte (whose
/// sequence is checked for UTF-8). A table, so the scan makes one test a byte.
static STRING_STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        stops[byte] = byte < 0x20 || byte >= 0x80 || byte == b'"' as usize || byte == b'\\' as usize;
        byte += 1;
    }
    stops
};

/// A cursor over a JSON text that validates as it skips.
///
/// Shaped for the interpreter, which charges a function's whole body when it
/// is entered, and a loop's whole body on every pass, whichever branches run:
/// the byte loops (`plain_run`, `digit_run`, `ws_run`) are functions of their
/// own, so their bodies hold nothing but the test of one byte, and the rarely
/// taken paths (escapes, non-ASCII, literals, nesting) are kept out of line.
pub(super) struct Parser<'a> {
    /// The whole payload; only strings may hold non-ASCII bytes.
    pub(super) bytes: &'a [u8],
    /// Index of the next unread byte.
    pub(super) pos: usize,
    /// Where the value a path search found starts and ends.
    pub(super) span: (usize, usize),
}

impl<'a> Parser<'a> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace; compact payloads have none, so that case is tested
    /// here and only a run of it costs a call.
    #[inline(always)]
    pub(super) fn skip_ws(&mut self) {
        if is_ws(self.peek()) {
            self.pos = ws_run(self.bytes, self.pos);
        }
    }

    pub(super) fn eat(&mut self, byte: u8) -> Result<(), FieldError> {
        self.skip_ws();
        if self.peek() != Some(byte) {
            return Err(FieldError::NotJson);
        }
        self.pos += 1;
        Ok(())
    }

    /// Walks an object and returns the value of its last field called `name`
    /// (when a name is given: only the top level is searched).
    fn object(&mut self, depth: usize, name: Option<&str>) -> Result<Option<Scalar<'a>>, FieldError> {
        self.eat(b'{')?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(None);
        }
        let mut found = None;
        loop {
            let (key, escaped) = self.string()?;
            self.eat(b':')?;
            let value = self.value(depth + 1)?;
            if name.is_some_and(|name| key_matches(key, escaped, name)) {
                found = Some(value);
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(found);
                }
                _ => return Err(FieldError::NotJson),
            }
        }
    }

    #[inline(never)]
    fn array(&mut self, depth: usize) -> Result<(), FieldError> {
        self.eat(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(FieldError::NotJson),
            }
        }
    }

    /// Parses any value; compound values are validated and skipped.
    #[inline(never)]
    pub(super) fn value(&mut self, depth: usize) -> Result<Scalar<'a>, FieldError> {
        self.skip_ws();
        match self.peek().ok_or(FieldError::NotJson)? {
            b'"' => self.string().map(|(raw, escaped)| if escaped { Scalar::Other } else { Scalar::Text(raw) }),
            b'-' | b'0'..=b'9' => self.number().map(Scalar::Number),
            _ => self.other_value(depth),
        }
    }

    /// The values telemetry seldom holds: literals, arrays and objects.
    #[inline(never)]
    fn other_value(&mut self, depth: usize) -> Result<Scalar<'a>, FieldError> {
        if depth > MAX_DEPTH {
            return Err(FieldError::NotJson);
        }
        match self.peek().ok_or(FieldError::NotJson)? {
            b'{' => self.object(depth, None).map(|_| Scalar::Other),
            b'[' => self.array(depth).map(|()| Scalar::Other),
            b't' => self.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Scalar::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Scalar::Other),
            _ => Err(FieldError::NotJson),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), FieldError> {
        let end = self.pos + word.len();
        match self.bytes.get(self.pos..end) {
            Some(found) if same_bytes(found, word) => {
                self.pos = end;
                Ok(())
            }
            _ => Err(FieldError::NotJson),
        }
    }

    /// Parses a string and returns its raw contents, escapes still escaped, and
    /// whether it holds any escape.
    #[inline(never)]
    pub(super) fn string(&mut self) -> Result<(&'a [u8], bool), FieldError> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos = plain_run(self.bytes, self.pos);
            match self.peek().ok_or(FieldError::NotJson)? {
                b'"' => break,
                b'\\' => {
                    self.escape()?;
                    escaped = true;
                }
                0x80.. => self.utf8_sequence()?,
                // A control character, which JSON requires escaped.
                _ => return Err(FieldError::NotJson),
            }
        }
        let raw = self.bytes.get(start..self.pos).ok_or(FieldError::NotJson)?;
        self.pos += 1;
        Ok((raw, escaped))
    }

    /// Skips the escape at `pos` (its backslash included).
    #[inline(never)]
    fn escape(&mut self) -> Result<(), FieldError> {
        self.pos += 1;
        match self.peek().ok_or(FieldError::NotJson)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
            b'u' => {
                let hex = self.bytes.get(self.pos + 1..self.pos + 5).ok_or(FieldError::NotJson)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(FieldError::NotJson);
                }
                self.pos += 5;
            }
            _ => return Err(FieldError::NotJson),
        }
        Ok(())
    }

    /// Skips the non-ASCII character at `pos` if it is well-formed UTF-8.
    #[inline(never)]
    fn utf8_sequence(&mut self) -> Result<(), FieldError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        self.pos += utf8::sequence_len(rest).ok_or(FieldError::NotJson)?;
        Ok(())
    }

    /// Parses a number per the JSON grammar and returns its spelling.
    #[inline(never)]
    pub(super) fn number(&mut self) -> Result<&'a [u8], FieldError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.pos = digit_run(self.bytes, self.pos),
            _ => return Err(FieldError::NotJson),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        self.bytes.get(start..self.pos).ok_or(FieldError::NotJson)
    }

    fn required_digits(&mut self) -> Result<(), FieldError> {
        let end = digit_run(self.bytes, self.pos);
        if end == self.pos {
            return Err(FieldError::NotJson);
        }
        self.pos = end;
        Ok(())
    }
}

/// The end of the run of plain string bytes (none of [`STRING_STOPS`]) at `at`.
#[inline(never)]
fn plain_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&byte) = bytes.get(at) {
        if STRING_STOPS[usize::from(byte)] {
            break;
        }
        at += 1;
    }
    at
}

/// Whether `byte` is JSON whitespace.
fn is_ws(byte: Option<u8>) -> bool {
    matches!(byte, Some(b' ' | b'\t' | b'\n' | b'\r'))
}

/// The end of the run of whitespace at `at`.
#[inline(never)]
fn ws_run(bytes: &[u8], mut at: usize) -> usize {
    while is_ws(bytes.get(at).copied()) {
        at += 1;
    }
    at
}

/// The end of the run of ASCII digits at `at`.
#[inline(never)]
fn digit_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b'0'..=b'9') = bytes.get(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(payload: &str, name: &str, expected: Result<f64, FieldError>) {
        assert_eq!(number_field(payload.as_bytes(), name), expected, "{payload} . {name}");
    }

    #[test]
    fn reads_numbers() {
        check(r#"{"t":21.5}"#, "t", Ok(21.5));
        check(r#" { "t" : -3 , "u": 1e2 } "#, "t", Ok(-3.0));
        check(r#"{"t":-3,"u":1E+2}"#, "u", Ok(100.0));
        check(r#"{"t":0,"u":0.25e-1}"#, "u", Ok(0.025));
        check("{\n\t\"t\": 7\r\n}", "t", Ok(7.0));
        check(r#"{"t":1e400}"#, "t", Err(FieldError::NotANumber));
        check(r#"{"t":-1e-400}"#, "t", Ok(-0.0));
    }

    #[test]
    fn parses_numbers_exactly() {
        for spelling in [
            "0",
            "-0",
            "1",
            "-3",
            "21.5",
            "0.1",
            "0.3",
            "1013.25",
            "-40.125",
            "29.95",
            "0.025",
            "123456789.987654321",
            "9007199254740992",
            "9007199254740993",
            "18446744073709551616",
            "1e22",
            "1e23",
            "1.5e-7",
            "2.5E+3",
            "1e-22",
            "1e-23",
            "4.9e-324",
            "1.7976931348623157e308",
            "1e309",
            "0.000000000000000000000000001",
            "3.141592653589793238462643383279",
            "1e0001",
            "12e-1000",
        ] {
            let expected: f64 = spelling.parse().unwrap();
            let parsed = parse_number(spelling.as_bytes()).unwrap();
            assert_eq!(parsed.to_bits(), expected.to_bits(), "{spelling}");
        }
        // The fast path covers the usual telemetry and steps aside for the rest.
        assert_eq!(fast_number(b"21.5"), Some(21.5));
        assert_eq!(fast_number(b"-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(fast_number(b"9007199254740993"), None);
        assert_eq!(fast_number(b"1e23"), None);
        assert_eq!(fast_number(b"1e0001"), None);
    }

    #[test]
    fn reads_booleans_as_one_and_zero() {
        check(r#"{"on":true}"#, "on", Ok(1.0));
        check(r#"{"on":false}"#, "on", Ok(0.0));
    }

    #[test]
    fn skips_nested_values_and_strings() {
        let payload = r#"{"meta":{"t":99,"list":[1,{"t":2},[]]},"s":"a \"t\": 5 }","t":4}"#;
        check(payload, "t", Ok(4.0));
        check(r#"{"meta":{"t":99}}"#, "t", Err(FieldError::Missing));
    }

    #[test]
    fn last_duplicate_wins() {
        check(r#"{"t":1,"t":2}"#, "t", Ok(2.0));
    }

    #[test]
    fn matches_escaped_keys() {
        check(r#"{"te\u006dp":3}"#, "temp", Ok(3.0));
        check(r#"{"a\"b":3}"#, "a\"b", Ok(3.0));
        check(r#"{"\ud83c\udf21":3}"#, "🌡", Ok(3.0));
        check(r#"{"temp\n":3}"#, "temp", Err(FieldError::Missing));
        check(r#"{"\u0074":3}"#, "tt", Err(FieldError::Missing));
    }

    #[test]
    fn other_values_are_not_numbers() {
        check(r#"{"t":"21.5"}"#, "t", Err(FieldError::NotANumber));
        check(r#"{"t":null}"#, "t", Err(FieldError::NotANumber));
        check(r#"{"t":[1]}"#, "t", Err(FieldError::NotANumber));
        check(r#"{"t":1e999}"#, "t", Err(FieldError::NotANumber));
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        check("[1,2]", "t", Err(FieldError::NotAnObject));
        check("42", "t", Err(FieldError::NotAnObject));
        check(r#""t""#, "t", Err(FieldError::NotAnObject));
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            "",
            "ON",
            "{",
            r#"{"t":1"#,
            r#"{"t":1,}"#,
            r#"{"t" 1}"#,
            r#"{"t":01}"#,
            r#"{"t":1.}"#,
            r#"{"t":.5}"#,
            r#"{"t":+1}"#,
            r#"{"t":1} x"#,
            r#"{"t":tru}"#,
            r#"{"t":"\x"}"#,
            "{\"t\":\"a\nb\"}",
            r#"{t:1}"#,
            r#"{"t":[1,]}"#,
            "21.5 degrees",
        ] {
            check(bad, "t", Err(FieldError::NotJson));
        }
        assert_eq!(number_field(b"{\"t\":\xff}", "t"), Err(FieldError::NotJson));
    }

    #[test]
    fn checks_utf8_inside_strings() {
        check(r#"{"é":1,"s":"温室 🌡","t":2}"#, "é", Ok(1.0));
        check(r#"{"s":"温室 🌡","t":2}"#, "t", Ok(2.0));
        for bad in [
            &b"{\"s\":\"\xff\",\"t\":1}"[..],
            b"{\"s\":\"\xc3\",\"t\":1}",
            b"{\"s\":\"\xed\xa0\x80\",\"t\":1}",
            b"{\"\xe9\":1,\"t\":1}",
            b"{\"t\":1}\xc3",
        ] {
            assert!(core::str::from_utf8(bad).is_err());
            assert_eq!(number_field(bad, "t"), Err(FieldError::NotJson), "{bad:x?}");
        }
    }

    #[test]
    fn limits_nesting() {
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        check(&format!(r#"{{"x":{deep},"t":1}}"#), "t", Err(FieldError::NotJson));
        let fine = "[".repeat(8) + &"]".repeat(8);
        check(&format!(r#"{{"x":{fine},"t":1}}"#), "t", Ok(1.0));
    }
}
