//! Sources: where the events functions run on come from. Each source turns
//! the triggers of its kind into jobs and offers them to one [`Sink`] (the
//! scheduler's queues, with their limits, quotas and counters), whatever the
//! kind: a new source is a module here, a trigger kind (`trigger.rs`), an event
//! kind (`event.rs`) and its ABI entries, nothing else.
//!
//! - [`mqtt`]: messages on topic triggers, driven by the gateway's intake connection;
//! - [`timer`]: intervals, cron expressions, once at start;
//! - [`http`]: requests to the HTTP API on a function's route;
//! - [`devices`]: configured devices going online and offline, and the
//!   outcomes of confirmed commands.
//!
//! A source learns which functions it serves from the gateway's registry
//! steps ([`Change`]): set when a function is installed or replaced, removed
//! when it goes. It never blocks the I/O thread.

pub mod devices;
pub mod http;
mod job;
pub mod mqtt;
pub mod timer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{FunctionSpec, GatewayConfig};
pub use job::{Job, Receipt};
pub use timer::TimerSource;

/// What the sink did with an offered job.
pub enum Offer {
    Queued,
    /// The queue is full: wait on the notification, at most the given time,
    /// then offer the job again.
    Full(Job, Arc<Notify>, Duration),
    /// Dropped and counted.
    Dropped,
}

/// Where sources hand their jobs: the scheduler.
pub trait Sink: Send + Sync + 'static {
    /// Queues a job for its function, or says why not. Never blocks.
    fn offer(&self, job: Job) -> Offer;
    /// Queues a job, or drops it (counted as its function being behind) when
    /// its queue is full: for sources that have nothing to hold back.
    fn offer_or_drop(&self, job: Job);
    /// Counts an event a source made, or one it did not offer, and why.
    fn tally(&self, tally: Tally);
    /// A source waited this long for room in `function`'s full queue.
    fn waited(&self, function: &str, waited: Duration);
    /// Holds back worker wake-ups while a burst is offered...
    fn hold_wakes(&self);
    /// ...and gives the workers the wake-ups owed for it.
    fn release_wakes(&self);
}

/// A source's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// A message on a trigger or forwarded topic.
    MessageIn,
    /// A message on a topic nothing wants (a subscription left in the broker's session).
    MessageUnrouted,
    /// A message over `broker.max_packet_bytes`: dropped.
    MessageOversized,
    /// A message from a `json` device that is not JSON: dropped.
    MessageMalformed,
    /// A timer ran: its job was offered.
    TimerRun,
    /// A timer was due while its previous run was still queued or running:
    /// not queued again (its outcome).
    TimerSkipped,
    /// An HTTP request on a function's route, offered to its queue.
    RequestIn,
    /// A message that only told about a device (its telemetry, with no
    /// function or forward on the topic, or its availability topic).
    DeviceMessage,
    /// A device went online or offline.
    DeviceChange,
    /// A payload from or about a device that could not be read.
    DeviceUnreadable,
    /// A confirmed command's device echoed it.
    CommandConfirmed,
    /// A confirmed command timed out, or its device went offline first.
    CommandUnconfirmed,
}

/// A change of the functions installed, in the registry's order.
pub enum Change<'a> {
    /// Installed or replaced: serve its triggers as they are now.
    Set(&'a FunctionSpec),
    /// Removed: nothing more for it.
    Remove(&'a str),
}

/// Starts every source but MQTT intake (which the gateway's connections drive),
/// on the current tokio runtime: a new source is started here.
pub fn start(config: &GatewayConfig, sink: Arc<dyn Sink>) -> Started {
    let (http, requests) = http::HttpSource::start(sink.clone());
    let devices = devices::DeviceSource::start(&config.devices, sink.clone());
    let timers = TimerSource::start(sink, config.gateway.modules_dir.join("timers"));
    Started { devices: devices.devices(), sources: vec![Box::new(timers), Box::new(http), Box::new(devices)], requests }
}

/// The sources started, and the handles others need.
pub struct Started {
    pub sources: Vec<Box<dyn Source>>,
    /// The HTTP API's way to its functions' routes.
    pub requests: http::Requests,
    /// The MQTT dispatcher's and the status's way to the devices' availability.
    pub devices: devices::Devices,
}

/// A source of events.
pub trait Source: Send {
    fn change(&mut self, change: Change<'_>);
    /// Stops producing; done once nothing more will be offered and what the
    /// source keeps (a timer's last runs) is on disk.
    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
