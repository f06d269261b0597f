//! The device source: configured devices going online and offline, as
//! events for the functions triggered by `{ availability = "<device>" }` (or
//! `"*"`); confirmed commands' outcomes, as events for the functions that sent
//! them; and each device's state and last seen for `edgefn devices` and
//! `/api/devices`. A shell around two pure cores, [`Table`] (availability) and
//! [`confirm::Confirmations`]: the MQTT dispatcher tells it what it hears
//! ([`Devices::heard`], [`Devices::read`]), the workers which commands wait
//! ([`Devices::expect`]), one tokio task ends what is past its deadline, and the
//! intake connection's readiness tells it when the gateway hears nothing at all.

pub mod confirm;
pub mod discovery;
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

/// What `event_trigger` returns for a confirmed command's outcome (no trigger
/// of the function's brought it: the function's own command did).
pub const CONFIRMATION_TRIGGER: &str = "confirmation";

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
    /// Commands waiting for their device's echo.
    confirms: confirm::Confirmations,
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

    /// Commands `function` sent with `command_confirmed`, now on their way
    /// (a worker, once the invocation's publishes are handed on).
    pub fn expect(&self, function: &Arc<str>, confirms: Vec<crate::host::Confirm>) {
        if confirms.is_empty() {
            return;
        }
        let now = unix_ms();
        let mut refused = Vec::new();
        {
            let mut inner = crate::sync::lock(&self.shared.state);
            for c in confirms {
                let pending = confirm::Pending {
                    id: c.id,
                    function: function.clone(),
                    device: Arc::from(c.device.as_str()),
                    action: c.action,
                    expect: confirm::Expect::of(c.action, c.was_on),
                    deadline_ms: now + c.timeout.as_millis() as u64,
                };
                if let Err(pending) = inner.confirms.add(pending) {
                    refused.push(confirm::Resolved { pending, outcome: confirm::Outcome::TimedOut, at_ms: now });
                }
            }
        }
        if !refused.is_empty() {
            tracing::warn!(
                %function,
                refused = refused.len(),
                "more than {} commands wait for confirmation: these are told timed_out at once",
                confirm::MAX_PENDING
            );
            self.resolve(refused);
        }
        self.shared.moved.notify_one();
    }

    /// `device`'s profile read `reading` from it: the commands it confirms.
    pub fn read(&self, device: &str, reading: &crate::profile::Reading) {
        let resolved = {
            let mut inner = crate::sync::lock(&self.shared.state);
            if !inner.confirms.waits_on(device) {
                return;
            }
            inner.confirms.read(device, reading, unix_ms())
        };
        self.resolve(resolved);
    }

    /// Tells each resolved command's function its outcome.
    fn resolve(&self, resolved: Vec<confirm::Resolved>) {
        for r in resolved {
            let p = &r.pending;
            let tally = if r.outcome == confirm::Outcome::Confirmed {
                Tally::CommandConfirmed
            } else {
                Tally::CommandUnconfirmed
            };
            self.shared.sink.tally(tally);
            tracing::debug!(function = %p.function, device = %p.device, action = %p.action, outcome = r.outcome.as_str(), "confirmed command");
            let event = Event::confirmation(p.device.clone(), p.id, &p.action.to_string(), r.outcome.as_str(), r.at_ms);
            self.shared.sink.offer_or_drop(Job {
                function: p.function.clone(),
                trigger: Arc::from(CONFIRMATION_TRIGGER),
                event: Arc::new(event),
                delivery: None,
                spooled: false,
                answer: None,
            });
        }
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

    /// One job per function watching each changed device; a device gone
    /// offline ends the commands waiting on it.
    fn offer(&self, changes: Vec<Change>) {
        let mut jobs = Vec::new();
        let mut unconfirmed = Vec::new();
        {
            let mut inner = crate::sync::lock(&self.shared.state);
            for change in changes.iter().filter(|c| !c.online) {
                unconfirmed.extend(inner.confirms.offline(&change.device, change.at_ms));
            }
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
        self.resolve(unconfirmed);
    }
}

/// The running availability source.
pub struct DeviceSource {
    devices: Devices,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DeviceSource {
    /// Starts the source on the current tokio runtime.
    pub fn start(devices: &[Device], sink: Arc<dyn Sink>) -> DeviceSource {
        let shared = Arc::new(Shared {
            state: Mutex::new(Inner {
                table: Table::new(devices),
                confirms: confirm::Confirmations::default(),
                watchers: HashMap::new(),
            }),
            sink,
            moved: Notify::new(),
        });
        let devices = Devices { shared };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(expire(devices.clone(), stopped));
        DeviceSource { devices, stop, task }
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
        let (changes, timed_out, next) = {
            let mut inner = crate::sync::lock(&devices.shared.state);
            let next = [inner.table.next_deadline(), inner.confirms.next_deadline()].into_iter().flatten().min();
            (inner.table.expire(now), inner.confirms.expire(now), next)
        };
        if !changes.is_empty() {
            devices.offer(changes);
        }
        devices.resolve(timed_out);
        let wait = next.map_or(LOOK_EVERY, |at| Duration::from_millis(at.saturating_sub(now)).min(LOOK_EVERY));
        tokio::select! {
            _ = stopped.changed() => break,
            _ = devices.shared.moved.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Source for DeviceSource {
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
        let DeviceSource { stop, task, .. } = *self;
        let _ = stop.send(true);
        Box::pin(async move {
            let _ = task.await;
        })
    }
}
