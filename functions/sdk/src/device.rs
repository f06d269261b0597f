//! What the gateway knows of its configured devices, beyond the current event.

use crate::{sys, Error, ErrorKind};

/// The last value of every field `device`'s profile has read from it since
/// the gateway started, as a flat JSON object (`{"humidity":40.1,"temperature":
/// 22.6}`), read into `buf`; `None` when nothing is known of it yet. Read its
/// fields with [`crate::json`].
///
/// Fails with [`ErrorKind::Event`] when the values do not fit `buf`, and with
/// [`ErrorKind::Other`] when the function may not read that device
/// (`[functions.allow] read_devices`).
pub fn last<'b>(device: &str, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Error> {
    let cap = buf.len();
    match sys::device_reading(device, buf) {
        -1 => Ok(None),
        -2 => Err(Error::format(ErrorKind::Other, format_args!("device `{device}`: not allowed to read it"))),
        len => {
            let len = usize::try_from(len).unwrap_or(0);
            buf.get(..len).map(Some).ok_or_else(|| {
                Error::format(
                    ErrorKind::Event,
                    format_args!("device `{device}`'s values are {len} bytes, the buffer holds {cap}"),
                )
            })
        }
    }
}
