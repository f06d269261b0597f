//! Just enough JSON for telemetry: read one top-level number out of a payload,
//! write a small object into a fixed-size string.

mod key;
mod read;
mod write;

pub use read::{number_field, FieldError};
pub use write::{write_number, write_str, ObjectWriter};
