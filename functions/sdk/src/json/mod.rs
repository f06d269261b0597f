//! Just enough JSON for telemetry: read one value out of a payload, at the top
//! level or at a path as devices nest them, and write a small object into a
//! fixed-size string. Nothing allocates or builds a document.

mod key;
mod path;
mod read;
mod write;

pub use path::{integer_at, number_at, raw_at, text_at};
pub use read::{number_field, FieldError};
pub use write::{write_integer, write_number, write_str, Number, ObjectWriter};

/// 2^53: every integer up to it is exact in an `f64`, and none much beyond.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Exact powers of ten: every one up to 10^22 is representable in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// The payload as your own type, through serde without an allocator
/// (feature `serde`): strings borrow from the payload, unknown fields are
/// skipped, missing `Option` fields are `None`.
///
/// Costs more fuel than reading the few fields a function needs with
/// [`number_at`] and [`text_at`] (which build nothing); worth it when the
/// payload is a structure the function uses whole.
///
/// ```
/// use serde::Deserialize;
/// #[derive(Deserialize)]
/// struct Uplink<'a> {
///     #[serde(borrow)]
///     end_device_ids: Ids<'a>,
///     uplink_message: Message,
/// }
/// #[derive(Deserialize)]
/// struct Ids<'a> { device_id: &'a str }
/// #[derive(Deserialize)]
/// struct Message { f_cnt: u32 }
/// let payload = br#"{"end_device_ids":{"device_id":"soil-7"},"uplink_message":{"f_cnt":42,"f_port":2}}"#;
/// let up: Uplink = edgefn_sdk::json::typed(payload).unwrap();
/// assert_eq!((up.end_device_ids.device_id, up.uplink_message.f_cnt), ("soil-7", 42));
/// ```
#[cfg(feature = "serde")]
pub fn typed<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, crate::Error> {
    serde_json_core::from_slice(payload).map(|(value, _)| value).map_err(|e| {
        crate::Error::format(crate::ErrorKind::Event, format_args!("the payload does not read as the type: {e}"))
    })
}
