//! What an invocation produced: its publishes and logs, or why it failed.

use std::fmt;
use std::time::Duration;

use crate::event::Publish;

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Messages to publish, in the order the function asked for them.
    pub publishes: Vec<Publish>,
    /// Records for the upstream outbox, as (stream, payload), in order.
    pub upstream: Vec<(String, Vec<u8>)>,
    pub logs: Vec<LogLine>,
    /// Log lines past the per-invocation budget, dropped.
    pub logs_dropped: u32,
    /// Calls its capabilities refused ("publish to T", "upstream to S"): each returned -2.
    pub denied: Vec<String>,
    pub fuel_used: u64,
    pub elapsed: Duration,
    /// Its answer to the HTTP request it ran on, if it gave one (`http_respond`).
    pub reply: Option<crate::event::HttpReply>,
    /// Commands it sent with `command_confirmed`, whose outcome it is told in a
    /// later event once they leave with its publishes.
    pub confirmations: Vec<Confirm>,
}

/// A command waiting to be confirmed, as the host hands it to the gateway.
#[derive(Debug, Clone)]
pub struct Confirm {
    pub id: u64,
    pub device: String,
    pub action: crate::profile::Action,
    /// The device's state when the command was made (a toggle is confirmed by its opposite).
    pub was_on: Option<bool>,
    pub timeout: Duration,
}

/// A failed invocation: it published nothing.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: FailReason,
    /// Logs written before it failed are still worth seeing.
    pub logs: Vec<LogLine>,
    /// Log lines past the per-invocation budget, dropped.
    pub logs_dropped: u32,
    pub fuel_used: u64,
    pub elapsed: Duration,
    /// Calls its capabilities refused before it failed.
    pub denied: Vec<String>,
    /// `upstream` calls answered -3 (the outbox refusing) before it failed: a
    /// failure that follows one is the disk's, not the function's.
    pub outbox_refused: u32,
}

/// Why an invocation failed. Each variant is counted separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// Used up its fuel: too much computation, or an endless loop.
    OutOfFuel,
    /// Tried to grow memory past its limit.
    MemoryLimit,
    /// Nested calls deeper than the gateway allows.
    StackOverflow,
    /// Ran past `limits.timeout_ms`.
    Timeout,
    /// Broke the ABI: a bad pointer, an invalid topic, a quota exceeded.
    Abi(String),
    /// Any other WebAssembly trap (unreachable, division by zero, a Rust panic, ...).
    Trap(String),
    /// `handle` returned this non-zero code.
    ErrorCode(i32),
    /// The module could not be (re)instantiated.
    Instantiate(String),
}

impl FailReason {
    /// A short stable name, used for counters and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            FailReason::OutOfFuel => "out_of_fuel",
            FailReason::MemoryLimit => "memory_limit",
            FailReason::StackOverflow => "stack_overflow",
            FailReason::Timeout => "timeout",
            FailReason::Abi(_) => "abi_violation",
            FailReason::Trap(_) => "trap",
            FailReason::ErrorCode(_) => "error_code",
            FailReason::Instantiate(_) => "instantiate",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::OutOfFuel => write!(f, "out of fuel (raise limits.fuel if the work is legitimate)"),
            FailReason::MemoryLimit => write!(f, "memory limit reached (limits.memory_bytes)"),
            FailReason::StackOverflow => write!(f, "stack overflow (calls nested too deep)"),
            FailReason::Timeout => write!(f, "timed out (limits.timeout_ms)"),
            FailReason::Abi(msg) => write!(f, "ABI violation: {msg}"),
            FailReason::Trap(msg) => write!(f, "trap: {msg}"),
            FailReason::ErrorCode(code) => write!(f, "handle returned error code {code}"),
            FailReason::Instantiate(msg) => write!(f, "could not instantiate: {msg}"),
        }
    }
}

/// Severity of a function's log line, as ABI v1 numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn from_abi(level: i32) -> Self {
        match level {
            i32::MIN..=0 => LogLevel::Error,
            1 => LogLevel::Warn,
            2 => LogLevel::Info,
            3 => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }
}

/// One line a function logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}
