//! Log lines, written under the function's name by the gateway.
//!
//! The gateway cuts lines over 1,024 bytes and drops lines past 32 per invocation.
//! For formatted lines use the [`error!`](crate::error), [`warn!`](crate::warn),
//! [`info!`](crate::info), [`debug!`](crate::debug) and [`trace!`](crate::trace) macros.

use core::fmt;

use crate::{sys, text};

/// Longest formatted line the macros build, in bytes; longer lines end in `...`.
pub const LINE_CAP: usize = 256;

/// Severity of a log line, numbered as the ABI numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something is off but the function carries on.
    Warn = 1,
    /// Normal, noteworthy events.
    Info = 2,
    /// Detail for whoever debugs the function.
    Debug = 3,
    /// Even more detail.
    Trace = 4,
}

/// Writes `msg` at `level`.
pub fn write(level: Level, msg: &str) {
    sys::log(level as u8, msg);
}

/// Formats `args` (cut at [`LINE_CAP`] bytes) and writes it at `level`.
pub fn write_fmt(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(msg) => write(level, msg),
        None => write(level, &text::format::<LINE_CAP>(args)),
    }
}

/// Writes `msg` at error level.
pub fn error(msg: &str) {
    write(Level::Error, msg);
}

/// Writes `msg` at warn level.
pub fn warn(msg: &str) {
    write(Level::Warn, msg);
}

/// Writes `msg` at info level.
pub fn info(msg: &str) {
    write(Level::Info, msg);
}

/// Writes `msg` at debug level.
pub fn debug(msg: &str) {
    write(Level::Debug, msg);
}

/// Writes `msg` at trace level.
pub fn trace(msg: &str) {
    write(Level::Trace, msg);
}

/// Logs a formatted line at error level: `error!("bad value {}", v)`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::write_fmt($crate::log::Level::Error, ::core::format_args!($($arg)+)) };
}

/// Logs a formatted line at warn level: `warn!("no field {}", name)`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::write_fmt($crate::log::Level::Warn, ::core::format_args!($($arg)+)) };
}

/// Logs a formatted line at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::write_fmt($crate::log::Level::Info, ::core::format_args!($($arg)+)) };
}

/// Logs a formatted line at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::write_fmt($crate::log::Level::Debug, ::core::format_args!($($arg)+)) };
}

/// Logs a formatted line at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::write_fmt($crate::log::Level::Trace, ::core::format_args!($($arg)+)) };
}
