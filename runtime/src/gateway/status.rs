//! One function's counters (written by the scheduler and the workers) and the
//! status copied from them for `edgefn functions` and the summary: in a file of
//! their own, which the control protocol reads without the gateway's insides.

use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

/// One function's counters: every job queued for it ends in exactly one of
/// `ok`, `failed`, `dropped_queue`, `dropped_shutdown`.
#[derive(Debug, Default)]
pub struct FunctionCounters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Dropped because it was behind (queue full, or queued events would wait too long).
    pub dropped_queue: AtomicU64,
    /// Dropped by its quota (`limits.invocations_per_s`).
    pub dropped_quota: AtomicU64,
    /// Log lines dropped by its quota (`limits.log_lines_per_s`) or past 32 in one invocation.
    pub logs_dropped: AtomicU64,
    /// Dropped because the function is quarantined.
    pub dropped_quarantine: AtomicU64,
    /// Failed invocations since the last success.
    pub failing_in_a_row: AtomicU64,
    /// Outcomes of the version running now (reset when a new one takes over).
    pub version_ok: AtomicU64,
    pub version_failed: AtomicU64,
    /// Still queued when the shutdown grace period ended.
    pub dropped_shutdown: AtomicU64,
    /// Written to its spool (QoS 1 events it would have kept waiting).
    pub spooled: AtomicU64,
    /// Refused by its spool (`gateway.spool_max_bytes` reached, or the disk failed).
    pub dropped_spool: AtomicU64,
    /// Left in its spool when the gateway stopped: run after the next start.
    pub spool_kept: AtomicU64,
}

/// A copy of [`FunctionCounters`], with the queue's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStatus {
    pub queued: u64,
    pub ok: u64,
    pub failed: u64,
    pub dropped_queue: u64,
    pub dropped_quota: u64,
    pub dropped_quarantine: u64,
    pub dropped_shutdown: u64,
    pub logs_dropped: u64,
    /// Events written to its spool, events its spool refused, events left in
    /// it at the stop, and events in it now.
    pub spooled: u64,
    pub dropped_spool: u64,
    pub spool_kept: u64,
    pub spool_depth: u64,
    /// Outcomes of the version running now.
    pub version_ok: u64,
    pub version_failed: u64,
    /// Failed `limits.quarantine_after` times in a row: its events are dropped
    /// until a new version is installed.
    pub quarantined: bool,
    /// A new version is queued behind the jobs for the one running now.
    pub updating: bool,
    /// Mean invocation time, in microseconds (recent invocations weigh most).
    pub mean_us: u64,
    pub behind: bool,
    /// Instances it runs on now (up to `limits.instances`).
    pub instances: u64,
}
