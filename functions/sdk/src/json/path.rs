//! Reading one value at a path in a JSON payload, nested as devices nest
//! them, without building a document: `AM2301.Temperature` (Tasmota),
//! `temperature:0.tC` (Shelly Gen2), `decoded_payload.pm25` (The Things
//! Network), `readings.2` (an array's third element), or the empty path for a
//! payload that is the value itself (ESPHome's `23.5`).
//!
//! A path is keys and array indices joined by `.`: a segment of digits indexes
//! an array, any other segment names an object's key (a key that holds `.`
//! cannot be named). The whole payload is checked to be JSON; when a key
//! repeats, the last one wins.

use super::key::key_matches;
use super::read::{parse_number, FieldError, Parser, Scalar, MAX_DEPTH};

/// The number at `path`: a JSON number, a string that spells one (an older
/// Zigbee2MQTT's `"battery":"100.00"`), or a boolean (1 or 0).
///
/// ```
/// use edgefn_sdk::json::{number_at, FieldError};
/// let tasmota = br#"{"Time":"2024-01-01T00:00:00","AM2301":{"Temperature":22.6,"Humidity":40.1}}"#;
/// assert_eq!(number_at(tasmota, "AM2301.Temperature"), Ok(22.6));
/// assert_eq!(number_at(br#"{"temperature:0":{"id":0,"tC":19.8}}"#, "temperature:0.tC"), Ok(19.8));
/// assert_eq!(number_at(br#"{"battery":"100.00"}"#, "battery"), Ok(100.0));
/// assert_eq!(number_at(b"23.5", ""), Ok(23.5));
/// assert_eq!(number_at(br#"{"v":[1,2,3]}"#, "v.2"), Ok(3.0));
/// assert_eq!(number_at(tasmota, "AM2301.Pressure"), Err(FieldError::Missing));
/// ```
pub fn number_at(payload: &[u8], path: &str) -> Result<f64, FieldError> {
    let number = match find(payload, path)? {
        Scalar::Bool(flag) => return Ok(if flag { 1.0 } else { 0.0 }),
        Scalar::Number(spelling) => spelling,
        Scalar::Text(text) => numeric(text).ok_or(FieldError::NotANumber)?,
        Scalar::Other => return Err(FieldError::NotANumber),
    };
    parse_number(number).filter(|v| v.is_finite()).ok_or(FieldError::NotANumber)
}

/// The integer at `path`, exactly, where an `f64` would round past 2^53 (a
/// counter, an id, a timestamp in nanoseconds): a JSON integer or a string
/// that spells one, with no fraction or exponent, within `i64`.
///
/// ```
/// use edgefn_sdk::json::{integer_at, FieldError};
/// assert_eq!(integer_at(br#"{"n":9007199254740993}"#, "n"), Ok(9_007_199_254_740_993));
/// assert_eq!(integer_at(br#"{"n":"-42"}"#, "n"), Ok(-42));
/// assert_eq!(integer_at(br#"{"n":1.5}"#, "n"), Err(FieldError::NotANumber));
/// ```
pub fn integer_at(payload: &[u8], path: &str) -> Result<i64, FieldError> {
    let spelling = match find(payload, path)? {
        Scalar::Number(spelling) => spelling,
        Scalar::Text(text) => numeric(text).ok_or(FieldError::NotANumber)?,
        _ => return Err(FieldError::NotANumber),
    };
    let (negative, digits) = match spelling.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, spelling),
    };
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return Err(FieldError::NotANumber); // a fraction or an exponent
        }
        let digit = i64::from(byte - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| if negative { v.checked_sub(digit) } else { v.checked_add(digit) })
            .ok_or(FieldError::NotANumber)?;
    }
    Ok(value)
}

/// The string at `path`, when it holds no escapes (device names, states such
/// as `"ON"`); a boolean reads as `true` or `false`.
///
/// ```
/// use edgefn_sdk::json::{text_at, FieldError};
/// assert_eq!(text_at(br#"{"POWER":"ON"}"#, "POWER"), Ok("ON"));
/// assert_eq!(text_at(br#"{"occupancy":true}"#, "occupancy"), Ok("true"));
/// assert_eq!(text_at(br#"{"a":1}"#, "a"), Err(FieldError::NotAText));
/// ```
pub fn text_at<'a>(payload: &'a [u8], path: &str) -> Result<&'a str, FieldError> {
    match find(payload, path)? {
        // The parser checked that strings are UTF-8.
        Scalar::Text(text) => core::str::from_utf8(text).map_err(|_| FieldError::NotJson),
        Scalar::Bool(true) => Ok("true"),
        Scalar::Bool(false) => Ok("false"),
        _ => Err(FieldError::NotAText),
    }
}

/// The spelling of the JSON number `text` holds, if it holds exactly one.
fn numeric(text: &[u8]) -> Option<&[u8]> {
    let mut parser = Parser { bytes: text, pos: 0, span: (0, 0) };
    let spelling = parser.number().ok()?;
    (parser.pos == text.len()).then_some(spelling)
}

/// The JSON text of the value at `path`, an object or array too: to read
/// several fields of one part of a large payload, find the part once and read
/// the fields in it (each reader checks all of what it is given).
///
/// ```
/// use edgefn_sdk::json::{number_at, raw_at};
/// let uplink = br#"{"uplink_message":{"decoded_payload":{"t":21.3,"rh":41},"rx_metadata":[{"rssi":-72}]}}"#;
/// let decoded = raw_at(uplink, "uplink_message.decoded_payload").unwrap();
/// assert_eq!(decoded, br#"{"t":21.3,"rh":41}"#);
/// assert_eq!(number_at(decoded, "rh"), Ok(41.0));
/// ```
pub fn raw_at<'a>(payload: &'a [u8], path: &str) -> Result<&'a [u8], FieldError> {
    let (_, (start, end)) = find_spanned(payload, path)?;
    let raw = payload.get(start..end).ok_or(FieldError::NotJson)?;
    let blank = raw.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
    Ok(&raw[blank..])
}

/// The value at `path` in the whole of `payload`, which must be JSON.
fn find<'a>(payload: &'a [u8], path: &str) -> Result<Scalar<'a>, FieldError> {
    find_spanned(payload, path).map(|(found, _)| found)
}

/// [`find`], with where the value lies.
fn find_spanned<'a>(payload: &'a [u8], path: &str) -> Result<(Scalar<'a>, (usize, usize)), FieldError> {
    let mut parser = Parser { bytes: payload, pos: 0, span: (0, 0) };
    let found = parser.find(0, path)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(FieldError::NotJson);
    }
    found.map(|f| (f, parser.span)).ok_or(FieldError::Missing)
}

impl<'a> Parser<'a> {
    /// Parses the value here and returns what lies at `path` inside it.
    #[inline(never)]
    fn find(&mut self, depth: usize, path: &str) -> Result<Option<Scalar<'a>>, FieldError> {
        if path.is_empty() {
            // Whitespace before it included: `raw_at` trims it, no one else pays.
            let start = self.pos;
            let found = self.value(depth)?;
            self.span = (start, self.pos);
            return Ok(Some(found));
        }
        if depth > MAX_DEPTH {
            return Err(FieldError::NotJson);
        }
        let (segment, rest) = path.split_once('.').unwrap_or((path, ""));
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.find_in_object(depth, segment, rest),
            Some(b'[') => self.find_in_array(depth, segment, rest),
            // A number, string or literal has nothing inside.
            _ => self.value(depth).map(|_| None),
        }
    }

    #[inline(never)]
    fn find_in_object(&mut self, depth: usize, key: &str, rest: &str) -> Result<Option<Scalar<'a>>, FieldError> {
        self.eat(b'{')?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(None);
        }
        let mut found = None;
        loop {
            let (raw, escaped) = self.string()?;
            self.eat(b':')?;
            if key_matches(raw, escaped, key) {
                found = self.find(depth + 1, rest)?;
            } else {
                self.value(depth + 1)?;
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
    fn find_in_array(&mut self, depth: usize, index: &str, rest: &str) -> Result<Option<Scalar<'a>>, FieldError> {
        let index: Option<usize> = index.parse().ok();
        self.eat(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(None);
        }
        let mut found = None;
        let mut at = 0;
        loop {
            if index == Some(at) {
                found = self.find(depth + 1, rest)?;
            } else {
                self.value(depth + 1)?;
            }
            at += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(found);
                }
                _ => return Err(FieldError::NotJson),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads as the projects document them.
    #[test]
    fn reads_the_devices_own_payloads() {
        let tasmota = br#"{"Time":"2024-03-01T10:00:00","AM2301":{"Temperature":22.6,"Humidity":40.1},"TempUnit":"C"}"#;
        assert_eq!(number_at(tasmota, "AM2301.Temperature"), Ok(22.6));
        let shelly = br#"{"id":0,"temperature:0":{"id":0,"tC":19.8,"tF":67.6}}"#;
        assert_eq!(number_at(shelly, "temperature:0.tC"), Ok(19.8));
        let ttn = br#"{"end_device_ids":{"device_id":"air-1"},"uplink_message":{"decoded_payload":{"pm25":12}}}"#;
        assert_eq!(number_at(ttn, "uplink_message.decoded_payload.pm25"), Ok(12.0));
        assert_eq!(number_at(br#"{"battery":"100.00","linkquality":81}"#, "battery"), Ok(100.0));
        assert_eq!(number_at(b" 23.5 ", ""), Ok(23.5));
        let z2m = br#"{"occupancy":true,"illuminance_lux":310}"#;
        assert_eq!(number_at(z2m, "occupancy"), Ok(1.0));
        assert_eq!(text_at(z2m, "occupancy"), Ok("true"));
    }

    #[test]
    fn indexes_arrays_and_nests_without_limit_but_depth() {
        assert_eq!(number_at(br#"{"a":[{"b":[0,7]}]}"#, "a.0.b.1"), Ok(7.0));
        assert_eq!(number_at(br#"[5,6]"#, "1"), Ok(6.0));
        assert_eq!(number_at(br#"{"a":[1]}"#, "a.3"), Err(FieldError::Missing));
        assert_eq!(number_at(br#"{"a":[1]}"#, "a.x"), Err(FieldError::Missing));
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert_eq!(number_at(deep.as_bytes(), "0.0"), Err(FieldError::NotJson));
    }

    #[test]
    fn the_whole_payload_must_be_json_and_the_last_repeated_key_wins() {
        assert_eq!(number_at(br#"{"a":{"b":1}"#, "a.b"), Err(FieldError::NotJson));
        assert_eq!(number_at(br#"{"a":{"b":1}} x"#, "a.b"), Err(FieldError::NotJson));
        assert_eq!(number_at(br#"{"a":{"b":1},"a":{"b":2}}"#, "a.b"), Ok(2.0));
        assert_eq!(number_at(br#"{"a":"1e2x"}"#, "a"), Err(FieldError::NotANumber));
        assert_eq!(number_at(br#"{"a":null}"#, "a"), Err(FieldError::NotANumber));
        assert_eq!(number_at(br#"{"a":1}"#, "a.b"), Err(FieldError::Missing));
    }

    #[test]
    fn the_raw_value_at_a_path_is_its_text_without_the_space_around_it() {
        let payload = br#"{ "a" : { "b" : [1, 2] } , "c": "x" }"#;
        assert_eq!(raw_at(payload, "a"), Ok(&br#"{ "b" : [1, 2] }"#[..]));
        assert_eq!(raw_at(payload, "a.b.1"), Ok(&b"2"[..]));
        assert_eq!(raw_at(payload, "c"), Ok(&br#""x""#[..]));
        assert_eq!(raw_at(payload, "d"), Err(FieldError::Missing));
        assert_eq!(raw_at(br#"{"a":{"b":1}"#, "a"), Err(FieldError::NotJson));
    }

    #[test]
    fn integers_stay_exact_past_two_to_the_53() {
        assert_eq!(integer_at(br#"{"n":9007199254740993}"#, "n"), Ok(9_007_199_254_740_993));
        assert_eq!(integer_at(br#"{"n":-9223372036854775808}"#, "n"), Ok(i64::MIN));
        assert_eq!(integer_at(br#"{"n":9223372036854775808}"#, "n"), Err(FieldError::NotANumber));
        assert_eq!(integer_at(br#"{"n":"17"}"#, "n"), Ok(17));
        assert_eq!(integer_at(br#"{"n":1e3}"#, "n"), Err(FieldError::NotANumber));
    }
}
