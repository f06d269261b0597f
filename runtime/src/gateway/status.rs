//! One function's counters (written by the scheduler and the workers) and the
//! status copied from them for `edgefn functions` and the summary: in a file of
//! their own, which the control protocol reads without the gateway's insides.

use serde::{Deserialize, Serialize};

crate::counters::counters! {
    /// One function's counters: every job queued for it ends in exactly one of
    /// `ok`, `failed`, or a drop (the counters of kind `Dropped`).
    pub struct FunctionCounters;
    /// A copy of [`FunctionCounters`], with the queue's state.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FunctionStatus {
        live {
            /// Invocations that ran to completion.
            ok: Total,
            /// Invocations that failed.
            failed: Total,
            /// Dropped because it was behind (queue full, or queued events would wait too long).
            dropped_queue: Dropped,
            /// Dropped by its quota (`limits.invocations_per_s`).
            dropped_quota: Dropped,
            /// Log lines dropped by its quota (`limits.log_lines_per_s`) or past 32 in one invocation.
            logs_dropped: Total,
            /// Dropped because the function is quarantined.
            dropped_quarantine: Dropped,
            /// Failed invocations since the last success.
            failing_in_a_row: Gauge,
            /// Invocations of the version running now that ran to completion.
            version_ok: Total,
            /// Invocations of the version running now that failed.
            version_failed: Total,
            /// Still queued when the shutdown grace period ended.
            dropped_shutdown: Dropped,
            /// Written to its spool (QoS 1 events it would have kept waiting).
            spooled: Total,
            /// Refused by its spool (`gateway.spool_max_bytes` reached, or the disk failed).
            dropped_spool: Dropped,
            /// Left in its spool when the gateway stopped: run after the next start.
            spool_kept: Total,
            /// Spooled before a restart by a trigger its version at the start no longer has: not run.
            dropped_orphaned: Dropped,
            /// Fuel its invocations used, whether they ran to completion or not.
            fuel: Total,
        }
        copied {
            /// What it published that was not handed to the broker before it
            /// expired (`limits.publish_expiry_ms`, `publish_within`): dropped, not sent late.
            commands_expired: Total,
            /// State changes refused (past `limits.state_max_bytes`, or the disk failed).
            state_refused: Total,
            /// Bytes its state holds (of `limits.state_max_bytes`).
            state_bytes: Gauge,
            /// Events in its queue now.
            queued: Gauge,
            /// Events in its spool now.
            spool_depth: Gauge,
            /// Mean invocation time, in microseconds (recent invocations weigh most).
            mean_us: Gauge,
            /// Instances it runs on now (up to `limits.instances`).
            instances: Gauge,
        }
        /// Failed `limits.quarantine_after` times in a row: its events are dropped
        /// until a new version is installed.
        pub quarantined: bool,
        /// A new version is queued behind the jobs for the one running now.
        pub updating: bool,
        /// Dropping its newest events until it has run all it queued.
        pub behind: bool,
        /// How long its invocations took, in buckets.
        pub durations: crate::counters::DurationsSnapshot,
    }
}
