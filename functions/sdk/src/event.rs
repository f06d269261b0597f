//! The event being handled: its topic, payload, device and trigger, read into
//! buffers the caller provides.
//!
//! Each reader fails with [`ErrorKind::Event`] when the value is larger than the
//! buffer; the matching `*_len` function tells the size needed beforehand.
//!
//! [`reading`] does the usual first step of a telemetry function in one call:
//! the device id, and one numeric field of the JSON payload.

use core::fmt;

use crate::json::{self, FieldError};
use crate::sys::{self, EventField};
use crate::utf8;
use crate::{Error, ErrorKind};

/// The device id [`reading`] reports when the event matched no configured device.
pub const UNKNOWN_DEVICE: &str = "unknown";

/// The MQTT topic the message arrived on.
pub fn topic(buf: &mut [u8]) -> Result<&str, Error> {
    text(EventField::Topic, buf)
}

/// The message payload, as raw bytes.
pub fn payload(buf: &mut [u8]) -> Result<&[u8], Error> {
    read(EventField::Payload, buf).map(|bytes| &*bytes)
}

/// The payload's length in bytes, to size a buffer for [`payload`].
pub fn payload_len() -> usize {
    sys::event_field(EventField::Payload, &mut [])
}

/// Runs `f` on the whole payload, however large (up to the gateway's
/// `broker.max_packet_bytes`): no buffer size to guess. The room is memory
/// the module grows once for the largest payload yet and reuses, so it costs
/// a copy, as [`payload`] does, and no allocator. Fails when the function's
/// memory limit (`limits.memory_bytes`) cannot hold it.
///
/// ```no_run
/// use edgefn_sdk::{event, json};
/// // A Things Stack uplink of any size, its decoded temperature.
/// let t = event::with_payload(|p| json::number_at(p, "uplink_message.decoded_payload.temperature").ok())?;
/// # Ok::<(), edgefn_sdk::Error>(())
/// ```
pub fn with_payload<R>(f: impl FnOnce(&[u8]) -> R) -> Result<R, Error> {
    let len = payload_len();
    if len == 0 {
        return Ok(f(&[]));
    }
    crate::whole::with_room(len, |buf| Ok(f(read(EventField::Payload, buf)?)))
}

/// Level `index` of the event's topic, from 0: of
/// `v3/greenhouse@ttn/devices/soil-7/up`, level 3 is `soil-7`. `None` past
/// the last level. [`crate::text::level`] does the same for any topic.
pub fn topic_level(index: usize, buf: &mut [u8]) -> Result<Option<&str>, Error> {
    Ok(crate::text::level(topic(buf)?, index))
}

/// The payload as the device's profile reads it: a flat JSON object
/// (`{"humidity":40.1,"on":true,"temperature":22.6}`), with the same field
/// names whatever the device's project; `None` when the device has no
/// profile or its profile could not read this payload. Read fields from it
/// with [`crate::json`].
pub fn normalised(buf: &mut [u8]) -> Result<Option<&[u8]>, Error> {
    read(EventField::Reading, buf).map(|bytes| (!bytes.is_empty()).then_some(&*bytes))
}

/// How a confirmed command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device's state echo showed it done.
    Confirmed,
    /// No echo within the timeout.
    TimedOut,
    /// The device went offline first.
    Offline,
}

/// A confirmed command's outcome: the id [`crate::command_confirmed`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// The id `command_confirmed` returned for the command.
    pub id: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// The outcome this event brings, when it is a [`Kind::Confirmation`];
/// `None` for any other event.
pub fn confirmation() -> Option<Confirmation> {
    if sys::event_kind() != 4 {
        return None;
    }
    let mut buf = [0u8; 128];
    let payload = payload(&mut buf).ok()?;
    let id = json::integer_at(payload, "id").ok()?;
    let outcome = match json::text_at(payload, "outcome").ok()? {
        "confirmed" => Outcome::Confirmed,
        "timed_out" => Outcome::TimedOut,
        _ => Outcome::Offline,
    };
    Some(Confirmation { id: u32::try_from(id).ok()?, outcome })
}

/// The id of the configured device whose telemetry topic matched, if one did.
pub fn device(buf: &mut [u8]) -> Result<Option<&str>, Error> {
    text(EventField::Device, buf).map(|id| (!id.is_empty()).then_some(id))
}

/// The trigger of this function that fired, as the configuration writes it:
/// the topic filter that matched, or a timer's table (`{ every = "10s" }`).
pub fn trigger(buf: &mut [u8]) -> Result<&str, Error> {
    text(EventField::Trigger, buf)
}

/// When the gateway received the message (a timer run: when it was due), in
/// milliseconds since the Unix epoch.
pub fn time_ms() -> i64 {
    sys::event_time_ms()
}

/// What ran the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An MQTT message on one of its topic triggers.
    Message,
    /// One of its timer triggers (`every`, `cron`, `start`): no topic, no
    /// payload, no device; [`time_ms`] is when the run was due.
    Timer,
    /// An HTTP request on one of its routes: [`topic`] is its path, [`payload`]
    /// its body, and [`crate::http`] reads the rest and answers it.
    Http,
    /// A configured device went online or offline (an `{ availability = ".." }`
    /// trigger): [`payload`] is `online` or `offline`, [`device`] its id.
    Availability,
    /// A command this function sent with [`crate::command_confirmed`] came to
    /// its outcome: [`confirmation`] reads it, [`device`] is the device.
    Confirmation,
    /// A kind this SDK does not know (a newer gateway's).
    Other(i32),
}

/// What ran the function: a message, a timer, an HTTP request or a device's
/// availability change. [`trigger`]
/// tells which one.
pub fn kind() -> Kind {
    match sys::event_kind() {
        0 => Kind::Message,
        1 => Kind::Timer,
        2 => Kind::Http,
        3 => Kind::Availability,
        4 => Kind::Confirmation,
        other => Kind::Other(other),
    }
}

/// One numeric reading out of the current event: see [`reading`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading<'d> {
    /// The id of the device the event came from, or [`UNKNOWN_DEVICE`].
    pub device: &'d str,
    /// The field's value; booleans read as `1` and `0`.
    pub value: f64,
}

/// Reads the device id and the number (or boolean, or numeric string) at the
/// path `field` of the JSON payload, as [`json::number_at`] does: a top-level
/// name (`temperature`), or a path into nested objects and arrays
/// (`AM2301.Temperature`, `temperature:0.tC`); the empty path reads a payload
/// that is a bare number. When the device has a profile, its [`normalised`]
/// reading is looked in first, so `temperature` reads a Tasmota sensor's, a
/// Shelly's and an ESPHome node's alike.
///
/// Sensors send messages without the field too, so a payload that does not fit
/// `payload_buf`, is not JSON or lacks a numeric `field` is not an error: it is
/// logged as a warning naming the device (and the field) and gives `Ok(None)`,
/// which a handler usually answers with `return Ok(())`:
///
/// ```text
/// reading from `gh-1` skipped: event payload is 5000 bytes, the buffer holds 4096
/// reading from `gh-1` skipped, `temperature`: no such field
/// ```
///
/// The device id is read into `device_buf` (the returned [`Reading`] borrows it)
/// and is [`UNKNOWN_DEVICE`] when no configured device matched. An id that does
/// not fit `device_buf` or is not UTF-8 is an [`ErrorKind::Event`] error.
///
/// ```
/// use edgefn_sdk::{event, Error};
///
/// fn on_reading() -> Result<(), Error> {
///     let (mut device_buf, mut payload_buf) = ([0u8; 128], [0u8; 4096]);
///     let Some(reading) = event::reading("temperature", &mut device_buf, &mut payload_buf)?
///     else {
///         return Ok(()); // already logged
///     };
///     edgefn_sdk::info!("{} reads {}", reading.device, reading.value);
///     Ok(())
/// }
/// # assert_eq!(on_reading(), Ok(()));
/// ```
// Not inlined, and its warning kept apart: the interpreter charges a function's
// whole body on every call, so the path each reading takes is kept small.
#[inline(never)]
pub fn reading<'d>(
    field: &str,
    device_buf: &'d mut [u8],
    payload_buf: &mut [u8],
) -> Result<Option<Reading<'d>>, Error> {
    let device = device(device_buf)?.unwrap_or(UNKNOWN_DEVICE);
    // The device's profile's reading first (`temperature` whatever its
    // project), then the payload itself (a path into it, or no profile).
    if let Ok(Some(normalised)) = normalised(payload_buf) {
        if let Ok(value) = json::number_at(normalised, field) {
            return Ok(Some(Reading { device, value }));
        }
    }
    match parse_reading(payload(payload_buf), field) {
        Ok(value) => Ok(Some(Reading { device, value })),
        Err(skip) => {
            warn_skipped(device, skip);
            Ok(None)
        }
    }
}

/// Logs why [`reading`] skipped a payload.
#[cold]
#[inline(never)]
fn warn_skipped(device: &str, skip: Skip<'_>) {
    crate::warn!("reading from `{device}` skipped{skip}");
}

/// Why [`reading`] skipped a payload; displays as the end of its warning.
#[derive(Debug, PartialEq)]
enum Skip<'f> {
    /// The payload could not be read (larger than the buffer).
    Payload(Error),
    /// The payload has no usable number in the named field.
    Field(&'f str, FieldError),
}

impl fmt::Display for Skip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Payload(err) => write!(f, ": {err}"),
            Self::Field(field, why) => write!(f, ", `{field}`: {why}"),
        }
    }
}

/// The value of `field` in a payload as [`payload`] returned it; no host calls.
fn parse_reading<'f>(payload: Result<&[u8], Error>, field: &'f str) -> Result<f64, Skip<'f>> {
    let payload = payload.map_err(Skip::Payload)?;
    json::number_at(payload, field).map_err(|why| Skip::Field(field, why))
}

/// Reads `field` and checks that it is UTF-8.
fn text(field: EventField, buf: &mut [u8]) -> Result<&str, Error> {
    let bytes = read(field, buf)?;
    // Not `core::str::from_utf8`: the same answer, for a fraction of the fuel.
    utf8::to_str(bytes).ok_or_else(|| not_utf8(field))
}

/// Copies `field` into `buf`, failing when it does not fit.
fn read(field: EventField, buf: &mut [u8]) -> Result<&mut [u8], Error> {
    let len = sys::event_field(field, buf);
    let cap = buf.len();
    buf.get_mut(..len).ok_or_else(|| too_large(field, len, cap))
}

/// The error for a field that is not UTF-8; out of line, as errors are rare.
#[cold]
#[inline(never)]
fn not_utf8(field: EventField) -> Error {
    Error::format(ErrorKind::Event, format_args!("event {} is not UTF-8", name(field)))
}

/// The error for a field of `len` bytes that does not fit a buffer of `cap`.
#[cold]
#[inline(never)]
fn too_large(field: EventField, len: usize, cap: usize) -> Error {
    Error::format(ErrorKind::Event, format_args!("event {} is {len} bytes, the buffer holds {cap}", name(field)))
}

/// The field's name in error messages.
fn name(field: EventField) -> &'static str {
    match field {
        EventField::Topic => "topic",
        EventField::Payload => "payload",
        EventField::Device => "device",
        EventField::Trigger => "trigger",
        EventField::Reading => "reading",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warning `reading` logs for a payload from `device`.
    fn warning(device: &str, payload: Result<&[u8], Error>, field: &str) -> std::string::String {
        let skip = parse_reading(payload, field).unwrap_err();
        std::format!("reading from `{device}` skipped{skip}")
    }

    #[test]
    fn reads_the_field() {
        let payload = br#"{"temperature":29.5,"humidity":60,"on":true}"#;
        assert_eq!(parse_reading(Ok(payload), "temperature"), Ok(29.5));
        assert_eq!(parse_reading(Ok(payload), "humidity"), Ok(60.0));
        assert_eq!(parse_reading(Ok(payload), "on"), Ok(1.0));
    }

    #[test]
    fn explains_skipped_payloads() {
        assert_eq!(
            parse_reading(Ok(br#"{"humidity":60}"#), "temperature"),
            Err(Skip::Field("temperature", FieldError::Missing))
        );
        assert_eq!(
            warning("gh-1", Ok(br#"{"humidity":60}"#), "temperature"),
            "reading from `gh-1` skipped, `temperature`: no such field"
        );
        assert_eq!(
            warning("unknown", Ok(b"ON"), "temperature"),
            "reading from `unknown` skipped, `temperature`: payload is not JSON"
        );
        let too_big =
            Error::format(ErrorKind::Event, format_args!("event payload is 5000 bytes, the buffer holds 4096"));
        assert_eq!(
            warning("gh-1", Err(too_big), "temperature"),
            "reading from `gh-1` skipped: event payload is 5000 bytes, the buffer holds 4096"
        );
    }

    #[test]
    fn reading_off_wasm_skips_the_empty_payload() {
        // Off wasm32 the event is empty: no device, and a payload that is not JSON.
        let (mut device_buf, mut payload_buf) = ([0u8; 16], [0u8; 64]);
        assert_eq!(device(&mut device_buf), Ok(None));
        assert_eq!(reading("t", &mut device_buf, &mut payload_buf), Ok(None));
    }
}
