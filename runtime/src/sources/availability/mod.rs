//! The availability source: configured devices going online and offline, as
//! events for the functions triggered by `{ availability = "<device>" }` (or
//! `"*"`), and each device's state and last seen for `edgefn devices` and
//! `/api/devices`. A shell around [`Table`] (which decides): the MQTT
//! dispatcher tells it what it hears ([`Devices::heard`]), one tokio task makes
//! silent devices offline at their deadline, and the intake connection's
//! readiness tells it when the gateway hears nothing at all.

mod table;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

pub use table::{announcement, DeviceRow, Heard, State};
use table::{Change, Table};

use super::{Job, Sink, Source, Tally};
use crate::config::Device;
use crate::event::{unix_ms, Event};

/// Longest the task sleeps between two looks at the clock: a wall clock that
/// steps is noticed within this.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What the source shares with the dispatcher and the status: cheap to clone.
#[derive(Clone)]
pub struct Devices {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Inner>,
    sink: Arc<dyn Sink>,
    /// A deadline may have moved earlier (a device heard, the link up).
    moved: Notify,
}

struct Inner {
    table: Table,
    /// Per function, its availability triggers.
    watchers: HashMap<Arc<str>, Vec<Watch>>,
}

/// An availability trigger: the device id (or `*`) and the trigger as written.
type Watch = (Arc<str>, Arc<str>);

impl Devices {
    /// Something heard from or about `device` now (the dispatcher, on the I/O
    /// thread). The expiry task is woken only by a change: a message that
    /// changes nothing only moves a deadline later.
    pub fn heard(&self, device: &str, heard: Heard) {
        let change = crate::sync::lock(&self.shared.state).table.heard(device, heard, unix_ms());
        if let Some(change) = change {
            self.offer(vec![change]);
            self.shared.moved.notify_one();
        }
    }

    /// A payload from or about `device` that could not be read.
    pub fn unreadable(&self, device: &str) {
        crate::sync::lock(&self.shared.state).table.unreadable(device);
    }

    /// Every device's state and last seen, in configuration order.
    pub fn rows(&self) -> Vec<DeviceRow> {
        crate::sync::lock(&self.shared.state).table.rows()
    }

    /// The devices of a reloaded configuration.
    pub fn set_devices(&self, devices: &[Device]) {
        crate::sync::lock(&self.shared.state).table.set_devices(devices);
        self.shared.moved.notify_one();
    }

    /// Follows the intake connection's readiness: while it is not ready the
    /// gateway hears no device, and silence makes none offline.
    pub fn follow_link(&self, mut ready: watch::Receiver<bool>) {
        let devices = self.clone();
        tokio::spawn(async move {
            loop {
                let up = *ready.borrow_and_update();
                crate::sync::lock(&devices.shared.state).table.link(up, unix_ms());
                devices.shared.moved.notify_one();
                if ready.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// One job per function watching each changed device.
    fn offer(&self, changes: Vec<Change>) {
        let mut jobs = Vec::new();
        {
            let inner = crate::sync::lock(&self.shared.state);
            for change in &changes {
                tracing::info!(
                    device = %change.device,
                    state = if change.online { "online" } else { "offline" },
                    "device availability changed"
                );
                let event = Arc::new(Event::availability(change.device.clone(), change.online, change.at_ms));
                for (function, watches) in &inner.watchers {
                    let matched = watches.iter().find(|(d, _)| &**d == "*" || *d == change.device);
                    if let Some((_, trigger)) = matched {
                        jobs.push(Job {
                            function: function.clone(),
                            trigger: trigger.clone(),
                            event: event.clone(),
                            delivery: None,
                            spooled: false,
                            answer: None,
                        });
                    }
                }
            }
        }
        for _ in &changes {
            self.shared.sink.tally(Tally::DeviceChange);
        }
        for job in jobs {
            self.shared.sink.offer_or_drop(job);
        }
    }
}

/// The running availability source.
pub struct AvailabilitySource {
    devices: Devices,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AvailabilitySource {
    /// Starts the source on the current tokio runtime.
    pub fn start(devices: &[Device], sink: Arc<dyn Sink>) -> AvailabilitySource {
        let shared = Arc::new(Shared {
            state: Mutex::new(Inner { table: Table::new(devices), watchers: HashMap::new() }),
            sink,
            moved: Notify::new(),
        });
        let devices = Devices { shared };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(expire(devices.clone(), stopped));
        AvailabilitySource { devices, stop, task }
    }

    /// The handle the dispatcher and the status use.
    pub fn devices(&self) -> Devices {
        self.devices.clone()
    }
}

/// Makes silent devices offline at their deadlines.
async fn expire(devices: Devices, mut stopped: watch::Receiver<bool>) {
    loop {
        let now = unix_ms();
        let (changes, next) = {
            let mut inner = crate::sync::lock(&devices.shared.state);
            (inner.table.expire(now), inner.table.next_deadline())
        };
        if !changes.is_empty() {
            devices.offer(changes);
        }
        let wait = next.map_or(LOOK_EVERY, |at| Duration::from_millis(at.saturating_sub(now)).min(LOOK_EVERY));
        tokio::select! {
            _ = stopped.changed() => break,
            _ = devices.shared.moved.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Source for AvailabilitySource {
    fn change(&mut self, change: super::Change<'_>) {
        let mut inner = crate::sync::lock(&self.devices.shared.state);
        match change {
            super::Change::Set(spec) => {
                let watches: Vec<_> = spec
                    .triggers
                    .iter()
                    .filter_map(|t| t.availability().map(|d| (Arc::from(d), Arc::from(t.text()))))
                    .collect();
                if watches.is_empty() {
                    inner.watchers.remove(spec.name.as_str());
                } else {
                    inner.watchers.insert(Arc::from(spec.name.as_str()), watches);
                }
            }
            super::Change::Remove(name) => {
                inner.watchers.remove(name);
            }
        }
    }

    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let AvailabilitySource { stop, task, .. } = *self;
        let _ = stop.send(true);
        Box::pin(async move {
            let _ = task.await;
        })
    }
}
