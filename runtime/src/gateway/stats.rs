//! Counters for everything the gateway accepts, runs, drops and sends. Each bound
//! in the pipeline has one here, so an overload is visible rather than silent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::host::FailReason;

/// Live counters, shared by the connection task and the workers.
#[derive(Debug, Default)]
pub struct Stats {
    /// Functions of the configuration that failed to load and are not running.
    pub functions_failed: AtomicU64,
    /// Messages received on trigger topics while intake ran.
    pub events_in: AtomicU64,
    /// Messages from a `json` device whose payload was not JSON: not delivered.
    pub events_malformed: AtomicU64,
    /// Messages on a topic no function or forward rule wants (a subscription an
    /// earlier configuration left in the broker's persistent session).
    pub events_unrouted: AtomicU64,
    /// Messages larger than `broker.max_packet_bytes`: dropped, not delivered.
    pub events_oversized: AtomicU64,
    /// Timer runs offered to their function's queue (`sources::timer`).
    pub timer_runs: AtomicU64,
    /// Timer runs due while the timer's previous run was still queued or
    /// running: not queued (a slow function does not pile up timer events).
    pub timer_skipped: AtomicU64,
    /// Jobs refused because the worker's queue was full (policy: drop the newest).
    pub queue_full_dropped: AtomicU64,
    /// Jobs refused by their function's quota (`limits.invocations_per_s`).
    pub quota_dropped: AtomicU64,
    /// Jobs of quarantined functions (`limits.quarantine_after`).
    pub quarantine_dropped: AtomicU64,
    /// Jobs still queued when the shutdown grace period ran out.
    pub shutdown_dropped: AtomicU64,
    /// Jobs for a function their worker did not hold (a gateway bug if ever non-zero).
    pub unknown_function_dropped: AtomicU64,
    /// QoS 1 events written to their function's spool (`gateway/spool.rs`).
    pub events_spooled: AtomicU64,
    /// Events a spool refused (`gateway.spool_max_bytes` reached, or the disk failed).
    pub spool_dropped: AtomicU64,
    /// Events left in spools when the gateway stopped: run after the next start.
    pub spool_kept: AtomicU64,
    pub invocations_ok: AtomicU64,
    pub invocations_failed: AtomicU64,
    pub failed_out_of_fuel: AtomicU64,
    pub failed_memory_limit: AtomicU64,
    pub failed_stack_overflow: AtomicU64,
    pub failed_timeout: AtomicU64,
    pub failed_abi_violation: AtomicU64,
    pub failed_trap: AtomicU64,
    pub failed_error_code: AtomicU64,
    pub failed_instantiate: AtomicU64,
    /// Failed after the outbox refused its records (`upstream` returned -3):
    /// counted here instead of under the reason, and never toward quarantine
    /// or rollback, since the disk failed, not the function.
    pub failed_outbox_refused: AtomicU64,
    /// Messages functions published that were handed to the MQTT client.
    pub publishes_out: AtomicU64,
    /// Of those, the ones sent to a configured device's command topic.
    pub commands_out: AtomicU64,
    /// Publishes the MQTT client refused (connection task gone).
    pub publish_errors: AtomicU64,
    /// Publishes not sent because their invocation's upstream records were refused.
    pub publishes_withheld: AtomicU64,
    /// Function log lines past the per-invocation budget.
    pub logs_dropped: AtomicU64,
    /// Host calls refused by a function's capabilities (`[functions.allow]`).
    pub capability_denied: AtomicU64,
}

/// A point-in-time copy of [`Stats`], printed as the final summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub functions_failed: u64,
    pub events_in: u64,
    pub events_malformed: u64,
    pub events_unrouted: u64,
    pub events_oversized: u64,
    pub timer_runs: u64,
    pub timer_skipped: u64,
    pub queue_full_dropped: u64,
    pub quota_dropped: u64,
    pub quarantine_dropped: u64,
    pub shutdown_dropped: u64,
    pub unknown_function_dropped: u64,
    pub events_spooled: u64,
    pub spool_dropped: u64,
    pub spool_kept: u64,
    pub invocations_ok: u64,
    pub invocations_failed: u64,
    pub failed_out_of_fuel: u64,
    pub failed_memory_limit: u64,
    pub failed_stack_overflow: u64,
    pub failed_timeout: u64,
    pub failed_abi_violation: u64,
    pub failed_trap: u64,
    pub failed_error_code: u64,
    pub failed_instantiate: u64,
    pub failed_outbox_refused: u64,
    pub publishes_out: u64,
    pub commands_out: u64,
    pub publish_errors: u64,
    pub publishes_withheld: u64,
    pub logs_dropped: u64,
    pub capability_denied: u64,
    /// Publishes in flight or queued when a connection to the broker was lost,
    /// dropped as more than the next connection carries over (oldest first).
    pub publishes_dropped_reconnect: u64,
    /// Publishes not known to have reached the broker when a stop gave up on
    /// an unreachable one.
    pub publishes_dropped_stop: u64,
    /// QoS 1 messages acknowledged to the broker, each once the gateway was done with it.
    pub acks_sent: u64,
    /// QoS 1 messages left unacknowledged when their connection was lost or the
    /// gateway stopped before they were done: the broker sends them again.
    pub acks_left_to_broker: u64,
    /// Acknowledgements lost because the connection failed while they were
    /// being written: the broker sends those messages again.
    pub ack_errors: u64,
    /// The outbox's status, when upstream delivery is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::outbox::OutboxStatus>,
    /// Each function's queue and outcomes, by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub functions: std::collections::BTreeMap<String, super::FunctionStatus>,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// For gauges, such as `functions_failed`.
    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Relaxed);
    }

    /// Counts one failed invocation under its reason.
    pub fn failed(&self, reason: &FailReason) {
        Self::add(&self.invocations_failed, 1);
        let counter = match reason {
            FailReason::OutOfFuel => &self.failed_out_of_fuel,
            FailReason::MemoryLimit => &self.failed_memory_limit,
            FailReason::StackOverflow => &self.failed_stack_overflow,
            FailReason::Timeout => &self.failed_timeout,
            FailReason::Abi(_) => &self.failed_abi_violation,
            FailReason::Trap(_) => &self.failed_trap,
            FailReason::ErrorCode(_) => &self.failed_error_code,
            FailReason::Instantiate(_) => &self.failed_instantiate,
        };
        Self::add(counter, 1);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            functions_failed: self.functions_failed.load(Relaxed),
            events_in: self.events_in.load(Relaxed),
            events_malformed: self.events_malformed.load(Relaxed),
            events_unrouted: self.events_unrouted.load(Relaxed),
            events_oversized: self.events_oversized.load(Relaxed),
            timer_runs: self.timer_runs.load(Relaxed),
            timer_skipped: self.timer_skipped.load(Relaxed),
            queue_full_dropped: self.queue_full_dropped.load(Relaxed),
            quota_dropped: self.quota_dropped.load(Relaxed),
            quarantine_dropped: self.quarantine_dropped.load(Relaxed),
            shutdown_dropped: self.shutdown_dropped.load(Relaxed),
            unknown_function_dropped: self.unknown_function_dropped.load(Relaxed),
            events_spooled: self.events_spooled.load(Relaxed),
            spool_dropped: self.spool_dropped.load(Relaxed),
            spool_kept: self.spool_kept.load(Relaxed),
            invocations_ok: self.invocations_ok.load(Relaxed),
            invocations_failed: self.invocations_failed.load(Relaxed),
            failed_out_of_fuel: self.failed_out_of_fuel.load(Relaxed),
            failed_memory_limit: self.failed_memory_limit.load(Relaxed),
            failed_stack_overflow: self.failed_stack_overflow.load(Relaxed),
            failed_timeout: self.failed_timeout.load(Relaxed),
            failed_abi_violation: self.failed_abi_violation.load(Relaxed),
            failed_trap: self.failed_trap.load(Relaxed),
            failed_error_code: self.failed_error_code.load(Relaxed),
            failed_instantiate: self.failed_instantiate.load(Relaxed),
            failed_outbox_refused: self.failed_outbox_refused.load(Relaxed),
            publishes_out: self.publishes_out.load(Relaxed),
            commands_out: self.commands_out.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
            publishes_withheld: self.publishes_withheld.load(Relaxed),
            logs_dropped: self.logs_dropped.load(Relaxed),
            capability_denied: self.capability_denied.load(Relaxed),
            publishes_dropped_reconnect: 0,
            publishes_dropped_stop: 0,
            acks_sent: 0,
            acks_left_to_broker: 0,
            ack_errors: 0,
            upstream: None,
            functions: Default::default(),
        }
    }
}

impl StatsSnapshot {
    /// Adds the intake connection's acknowledgement counters.
    pub fn with_acks(mut self, acks: &crate::mqtt::AckStats) -> Self {
        self.acks_sent = acks.acknowledged.load(Relaxed);
        self.acks_left_to_broker = acks.left_to_broker.load(Relaxed);
        self.ack_errors = acks.ack_errors.load(Relaxed);
        self
    }

    /// Adds the publishes the MQTT connections dropped unsent.
    pub fn with_losses(mut self, losses: &crate::mqtt::PublishLosses) -> Self {
        self.publishes_dropped_reconnect = losses.reconnect.load(Relaxed);
        self.publishes_dropped_stop = losses.stop.load(Relaxed);
        self
    }

    /// Everything that was received but not run to completion, for any reason.
    pub fn dropped(&self) -> u64 {
        self.events_malformed
            + self.events_oversized
            + self.queue_full_dropped
            + self.quota_dropped
            + self.quarantine_dropped
            + self.shutdown_dropped
            + self.unknown_function_dropped
            + self.spool_dropped
    }

    /// One human line: what came in, what ran, what went out, what went wrong.
    pub fn one_line(&self) -> String {
        let upstream = match &self.upstream {
            Some(u) => format!(
                " | upstream: {} queued ({} bytes, oldest {} s), {} accepted, {} acknowledged, {} resent, {} dropped, {} expired, {} refused",
                u.depth,
                u.bytes_on_disk,
                u.oldest_age_ms / 1000,
                u.accepted,
                u.acknowledged,
                u.resent,
                u.dropped,
                u.expired,
                u.refused
            ),
            None => String::new(),
        };
        format!(
            "events in {}{} | invocations {} ok, {} failed | commands out {} | published {} | dropped {}{upstream}",
            self.events_in,
            if self.timer_runs + self.timer_skipped > 0 {
                format!(", timer runs {}, skipped {}", self.timer_runs, self.timer_skipped)
            } else {
                String::new()
            },
            self.invocations_ok,
            self.invocations_failed,
            self.commands_out,
            self.publishes_out,
            self.dropped()
        )
    }
}
