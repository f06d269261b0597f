//! Write edgefn functions in Rust: `no_std`, no allocator, small wasm.
//!
//! A function is a `wasm32-unknown-unknown` `cdylib` whose handler reads the
//! event, its configuration and whatever state it keeps, and may publish MQTT
//! messages and emit records for durable upstream delivery. This crate wraps the
//! host imports of ABI version 1 (`functions/ABI.md`): [`event`], [`config`],
//! [`publish()`], [`upstream()`], [`log`]; and adds what small functions
//! need without an allocator: a JSON field reader and object writer ([`json`]),
//! fixed-size text ([`text`], [`format!`]), per-instance [`State`], and the
//! [`handler!`] macro that exports `handle`, `edgefn_abi_version` and optionally
//! `init`.
//!
//! ```
//! use edgefn_sdk::{config, event, json, publish, Error, QoS};
//!
//! /// Sends "hot" to `alarm_topic` whenever a reading's `temperature` exceeds `limit`.
//! fn on_reading() -> Result<(), Error> {
//!     let limit: f64 = config::required("limit")?;
//!     let topic: edgefn_sdk::heapless::String<128> = config::required("alarm_topic")?;
//!     let mut buf = [0u8; 1024];
//!     match json::number_field(event::payload(&mut buf)?, "temperature") {
//!         Ok(t) if t > limit => publish(&topic, b"hot", QoS::AtLeastOnce, false),
//!         Ok(_) => Ok(()),
//!         Err(why) => Ok(edgefn_sdk::warn!("skipped a reading: {why}")),
//!     }
//! }
//! edgefn_sdk::handler!(on_reading);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown` and the
//! crate type `cdylib`. Off wasm32 (unit and doc tests) the host calls behave like
//! an empty event with no configuration, so pure logic can be tested on the host.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod config;
pub mod device;
pub mod event;
pub mod http;
pub mod json;
pub mod kv;
pub mod log;
pub mod text;

mod error;
mod handler;
#[cfg(all(target_arch = "wasm32", feature = "panic-handler", not(test)))]
mod panic;
mod publish;
mod state;
mod sys;
mod upstream;
mod utf8;
mod whole;

pub use error::{Error, ErrorKind, MESSAGE_CAP};
pub use publish::{check_topic, command, command_confirmed, publish, publish_within, QoS};
pub use state::State;
pub use upstream::{check_stream, upstream, Sent, MAX_STREAM_LEN};

/// The fixed-capacity collections the SDK's API uses, re-exported so functions
/// need no dependency of their own.
pub use heapless;

/// The host ABI version this SDK implements; `edgefn_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    sys::now_ms()
}

/// What [`handler!`] expands to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::handler::run;
}
