//! The event being handled: its topic, payload, device and trigger, read into
//! buffers the caller provides.
//!
//! Each reader fails with [`ErrorKind::Event`] when the value is larger than the
//! buffer; the matching `*_len` function tells the size needed beforehand.

use crate::sys::{self, EventField};
use crate::{Error, ErrorKind};

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

/// The id of the configured device whose telemetry topic matched, if one did.
pub fn device(buf: &mut [u8]) -> Result<Option<&str>, Error> {
    text(EventField::Device, buf).map(|id| (!id.is_empty()).then_some(id))
}

/// The trigger (topic filter) of this function that matched the message.
pub fn trigger(buf: &mut [u8]) -> Result<&str, Error> {
    text(EventField::Trigger, buf)
}

/// When the gateway received the message, in milliseconds since the Unix epoch.
pub fn time_ms() -> i64 {
    sys::event_time_ms()
}

/// Reads `field` and checks that it is UTF-8.
fn text(field: EventField, buf: &mut [u8]) -> Result<&str, Error> {
    let bytes = read(field, buf)?;
    core::str::from_utf8(bytes).map_err(|_| {
        Error::format(
            ErrorKind::Event,
            format_args!("event {} is not UTF-8", name(field)),
        )
    })
}

/// Copies `field` into `buf`, failing when it does not fit.
fn read(field: EventField, buf: &mut [u8]) -> Result<&mut [u8], Error> {
    let len = sys::event_field(field, buf);
    if len > buf.len() {
        return Err(Error::format(
            ErrorKind::Event,
            format_args!(
                "event {} is {len} bytes, the buffer holds {}",
                name(field),
                buf.len()
            ),
        ));
    }
    Ok(&mut buf[..len])
}

/// The field's name in error messages.
fn name(field: EventField) -> &'static str {
    match field {
        EventField::Topic => "topic",
        EventField::Payload => "payload",
        EventField::Device => "device",
        EventField::Trigger => "trigger",
    }
}
