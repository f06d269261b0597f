//! Counters for everything the gateway accepts, runs, drops and sends. Each bound
//! in the pipeline has one here, so an overload is visible rather than silent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::host::FailReason;

crate::counters::counters! {
    /// Live counters, shared by the connection task and the workers.
    pub struct Stats;
    /// A point-in-time copy of [`Stats`], printed as the final summary.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct StatsSnapshot {
        live {
            /// Functions of the configuration that failed to load and are not running.
            functions_failed: Gauge,
            /// Messages received on trigger topics while intake ran.
            events_in: Total,
            /// Messages from a `json` device whose payload was not JSON: not delivered.
            events_malformed: Dropped,
            /// Messages on a topic no function or forward rule wants (a subscription an
            /// earlier configuration left in the broker's persistent session).
            events_unrouted: Total,
            /// Messages larger than `broker.max_packet_bytes`: dropped, not delivered.
            events_oversized: Dropped,
            /// Timer runs offered to their function's queue (`sources::timer`).
            timer_runs: Total,
            /// Timer runs due while the timer's previous run was still queued or
            /// running: not queued (a slow function does not pile up timer events).
            timer_skipped: Total,
            /// HTTP requests on a function's route, offered to its queue (`sources::http`).
            requests_in: Total,
            /// Messages that only told about a device: its telemetry with no function
            /// or forward on the topic, or its availability topic (`sources::devices`).
            device_messages: Total,
            /// Devices going online or offline, each offered to the functions watching it.
            device_changes: Total,
            /// Payloads from or about a device that could not be read: by its profile
            /// (delivered raw, without a reading), or on its availability topic
            /// (saying neither online nor offline: nothing changed).
            device_unreadable: Total,
            /// Commands sent with `command_confirmed` that their device echoed in time.
            commands_confirmed: Total,
            /// Commands sent with `command_confirmed` that timed out, or whose device
            /// went offline first (the function is told which).
            commands_unconfirmed: Total,
            /// Events dropped because their function was behind (its queue full, or
            /// its queued events would wait too long): the newest are dropped.
            queue_full_dropped: Dropped,
            /// Events refused by their function's quota (`limits.invocations_per_s`).
            quota_dropped: Dropped,
            /// Events of quarantined functions (`limits.quarantine_after`).
            quarantine_dropped: Dropped,
            /// Events still queued when the shutdown grace period ran out.
            shutdown_dropped: Dropped,
            /// Events for a function removed while they were on their way.
            unknown_function_dropped: Dropped,
            /// QoS 1 events written to their function's spool (`gateway/spool.rs`).
            events_spooled: Total,
            /// Events a spool refused (`gateway.spool_max_bytes` reached, or the disk failed).
            spool_dropped: Dropped,
            /// Events left in spools when the gateway stopped: run after the next start.
            spool_kept: Total,
            /// Spooled events from before a restart that came by a trigger the
            /// function's version at the start no longer has: dropped, not run.
            spool_orphaned: Dropped,
            /// Invocations that ran to completion.
            invocations_ok: Total,
            /// Invocations that failed, for any of the reasons below.
            invocations_failed: Total,
            /// Failed: out of fuel (`limits.fuel`).
            failed_out_of_fuel: Total,
            /// Failed: grew its memory past `limits.memory_bytes`.
            failed_memory_limit: Total,
            /// Failed: overflowed its stack.
            failed_stack_overflow: Total,
            /// Failed: ran past `limits.timeout_ms`.
            failed_timeout: Total,
            /// Failed: broke the host interface's rules (a bad pointer or length).
            failed_abi_violation: Total,
            /// Failed: trapped (unreachable, a division by zero, a bad memory access).
            failed_trap: Total,
            /// Failed: returned an error code.
            failed_error_code: Total,
            /// Failed: could not be instantiated.
            failed_instantiate: Total,
            /// Failed after the outbox refused its records (`upstream` returned -3):
            /// counted here instead of under the reason, and never toward quarantine
            /// or rollback, since the disk failed, not the function.
            failed_outbox_refused: Total,
            /// Messages functions published that were handed to the MQTT client.
            publishes_out: Total,
            /// Of those, the ones sent to a configured device's command topic.
            commands_out: Total,
            /// Publishes the MQTT client refused (connection task gone).
            publish_errors: Total,
            /// Publishes not sent because their invocation's upstream records were refused.
            publishes_withheld: Total,
            /// Function log lines past the per-invocation budget or the function's quota.
            logs_dropped: Total,
            /// Host calls refused by a function's capabilities (`[functions.allow]`).
            capability_denied: Total,
        }
        copied {
            /// Publishes functions made that were not handed to the broker before
            /// they expired (`limits.publish_expiry_ms`): dropped, never sent late.
            commands_expired: Total,
            /// Publishes in flight or queued when a connection to the broker was lost,
            /// dropped as more than the next connection carries over (oldest first).
            publishes_dropped_reconnect: Total,
            /// Publishes not known to have reached the broker when a stop gave up on
            /// an unreachable one.
            publishes_dropped_stop: Total,
            /// QoS 1 messages acknowledged to the broker, each once the gateway was done with it.
            acks_sent: Total,
            /// QoS 1 messages left unacknowledged when their connection was lost or the
            /// gateway stopped before they were done: the broker sends them again.
            acks_left_to_broker: Total,
            /// Acknowledgements lost because the connection failed while they were
            /// being written: the broker sends those messages again.
            ack_errors: Total,
            /// 1 while the intake connection (subscriptions, acknowledgements) is connected to the broker.
            intake_connected: Gauge,
            /// Connections intake made to the broker: the first, then one per reconnect.
            intake_connects: Total,
            /// 1 while the output connection (what functions publish) is connected to the broker.
            output_connected: Gauge,
            /// Connections the output made to the broker: the first, then one per reconnect.
            output_connects: Total,
        }
        /// The outbox's status, when upstream delivery is configured.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub upstream: Option<crate::outbox::OutboxStatus>,
        /// Each function's queue and outcomes, by name.
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        pub functions: std::collections::BTreeMap<String, super::status::FunctionStatus>,
    }
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
        let mut snapshot = StatsSnapshot::default();
        self.load_into(&mut snapshot);
        snapshot
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

    /// Adds the MQTT connections' state.
    pub fn with_links(mut self, intake: &crate::mqtt::Link, output: &crate::mqtt::Link) -> Self {
        self.intake_connected = u64::from(intake.connected.load(Relaxed));
        self.intake_connects = intake.connects.load(Relaxed);
        self.output_connected = u64::from(output.connected.load(Relaxed));
        self.output_connects = output.connects.load(Relaxed);
        self
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
