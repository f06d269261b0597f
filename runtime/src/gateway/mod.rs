//! The running gateway: MQTT intake and timers -> routing -> wasm workers -> MQTT out.
//!
//! ```text
//! broker ──> intake connection ──(route, offer)──> function queues ──(fair turns)──> wasm workers
//!    ^          (waits while a queue is full)                                           │
//!    └──────────── output connection (publish) <────────────────────────────────────────┘
//! ```
//!
//! Two MQTT connections, so that intake may stop reading while workers are
//! behind without ever waiting on itself: workers publish on the output
//! connection, whose task waits on nothing but its poll.

mod change;
mod load;
mod operation;
mod quota;
pub mod recorder;
mod registry;
mod run;
mod scheduler;
mod spool;
pub mod stats;
pub mod status;
mod workers;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;

pub use load::{compile_source, load_each, read_source, Loaded};
use load::{install_all, refuse_if_strict};
pub use operation::{ChangeError, Operation};
pub use quota::TokenBucket;
pub use registry::{Entry, Registry, Step};
pub use run::run;
pub use stats::{Stats, StatsSnapshot};
pub use status::FunctionStatus;
pub use workers::emit_logs;

use crate::config::{BrokerMode, GatewayConfig};
use crate::host::Loader;
use crate::mqtt::{self, Acker, Backoff, ConnectionHandle};
use crate::outbox::Outbox;
use crate::sources::mqtt::{stall_after, Dispatcher, Routes};
use crate::sources::{Change, Source};
use crate::upstream::{spawn_sender, SenderHandle};
use scheduler::{Bounds, QueueLimits, Scheduler};
use workers::{spawn_worker, WorkerContext};

/// Requests a client may hold queued before publishers wait (PUBACKs do not
/// pass through it: the intake connection writes them itself, `mqtt/acks.rs`).
const CLIENT_QUEUE: usize = 1_024;
/// Appended to `broker.client_id` for the output connection.
const OUTPUT_CLIENT_SUFFIX: &str = "-out";
/// How long shutdown waits for the connection to flush its DISCONNECT.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// A started gateway. Dropping it without [`Gateway::shutdown`] leaves threads running.
pub struct Gateway {
    config: GatewayConfig,
    stats: Arc<Stats>,
    /// The PUBACKs intake owes the broker, sent as messages are done with.
    acker: Arc<Acker>,
    /// Publishes the MQTT connections dropped unsent.
    losses: Arc<mqtt::PublishLosses>,
    /// The intake and output connections' state.
    links: (Arc<mqtt::Link>, Arc<mqtt::Link>),
    intake: Connection,
    output: Connection,
    /// What functions published, waiting for the output connection.
    output_queue: mqtt::Outgoing,
    ready: watch::Receiver<bool>,
    abandon: Arc<AtomicBool>,
    workers_done: mpsc::Receiver<usize>,
    /// The outbox and its sender, when upstream delivery is configured.
    upstream: Option<(Outbox, SenderHandle)>,
    /// Every function, by name: what routing, subscriptions and placement derive from.
    registry: Registry,
    loader: Arc<Loader>,
    /// The functions' queues and instances, which the workers take turns at.
    scheduler: Arc<Scheduler>,
    /// New routing tables for the dispatcher, and the subscriptions they need.
    routes: mpsc::Sender<Arc<Routes>>,
    subscriptions: watch::Sender<Vec<String>>,
    /// Device command topics, for counting commands; replaced on reload.
    command_topics: Arc<std::sync::RwLock<Arc<std::collections::HashSet<String>>>>,
    /// Deployed versions in their first minutes, with the version they replaced
    /// kept to roll back to (`run::check_health`).
    probation: std::collections::HashMap<String, std::time::Instant>,
    /// Functions rolled back by themselves, and why (shown by `edgefn functions`).
    rolled_back: std::collections::HashMap<String, String>,
    /// Event sources besides MQTT intake (timers, HTTP), told of every registry step.
    sources: Vec<Box<dyn Source>>,
    /// Where the HTTP API offers requests on functions' routes.
    requests: crate::sources::http::Requests,
    /// The devices' availability and last seen.
    devices: crate::sources::devices::Devices,
    /// Devices announced on Home Assistant's discovery prefix, if read.
    discovery: Option<Arc<crate::sources::devices::discovery::Discovery>>,
    /// The ids of the devices discovered, and of those a configured id shadows, as last logged.
    discovered: Vec<String>,
    discovered_shadowed: Vec<String>,
    /// The functions whose invocations are being recorded (`edgefn record`).
    recordings: Arc<recorder::Recorders>,
}

impl Gateway {
    /// Loads every function, starts the embedded broker if configured, the
    /// workers and the MQTT connection. Must be called inside a tokio runtime.
    pub async fn start(config: GatewayConfig) -> anyhow::Result<Gateway> {
        let upstream = match &config.upstream {
            Some(u) => {
                let (outbox, recovery) = Outbox::open(u.outbox.clone())
                    .with_context(|| format!("opening the upstream outbox in {}", u.outbox.dir.display()))?;
                for problem in &recovery.problems {
                    tracing::warn!("outbox recovery: {problem}");
                }
                let status = outbox.status();
                tracing::info!(
                    dir = %u.outbox.dir.display(),
                    records = status.depth,
                    bytes = status.bytes_on_disk,
                    skipped_bytes = recovery.skipped_bytes,
                    "outbox opened"
                );
                let sender = spawn_sender(u.clone(), config.gateway.id.clone(), outbox.reader());
                Some((outbox, sender))
            }
            None => None,
        };
        let outbox = upstream.as_ref().map(|(o, _)| o.clone());
        let mut loader = Loader::new()
            .with_max_module_bytes(config.gateway.max_module_bytes)
            .with_state(Arc::new(crate::state::Stores::new(config.gateway.modules_dir.join("state"))))
            .with_devices(Arc::new(crate::profile::Directory::new(&config.devices)));
        if let Some(outbox) = &outbox {
            loader = loader.with_outbox(outbox.gate());
        }
        let loader = Arc::new(loader);
        let workers = config.gateway.workers.max(1);
        let loaded = load::load_each(&loader, &config.functions);
        let failed = refuse_if_strict(&config, &loaded.failed, "not started")?;
        let versions: Vec<_> = loaded.instances.iter().map(|(i, digest)| ((**i.spec()).clone(), *digest)).collect();
        let (_, registry) = Registry::default().plan(&versions);
        let instances: Vec<_> = loaded.instances.into_iter().map(|(i, _)| i).collect();
        if let BrokerMode::Embedded { listen } = config.broker.mode {
            mqtt::start_embedded_broker(listen, config.broker.max_packet_bytes)
                .with_context(|| format!("starting the embedded broker on {listen} (broker.listen)"))?;
        }
        let status_topic = config.gateway.status_topic.clone();
        let mut options = mqtt::client_options(&config.broker, &config.broker.client_id, Some(&status_topic))?;
        // With an external broker: a persistent session, acknowledged by hand, so
        // the broker keeps what the gateway has not finished with, across
        // reconnects and restarts. The embedded broker lives and dies with the
        // gateway, so holding acknowledgements back would protect nothing there
        // (and rumqttd 0.20 stops answering pings while 100 messages await theirs).
        let safe_acks = matches!(config.broker.mode, BrokerMode::External);
        options.set_clean_session(!safe_acks).set_manual_acks(safe_acks);
        let (intake_client, intake_loop) = mqtt::new_client(options, CLIENT_QUEUE);
        let acker = Acker::new(safe_acks);
        let output_id = format!("{}{OUTPUT_CLIENT_SUFFIX}", config.broker.client_id);
        let (client, output_loop) =
            mqtt::new_client(mqtt::client_options(&config.broker, &output_id, None)?, CLIENT_QUEUE);
        let backoff = Backoff::new(config.broker.reconnect_min, config.broker.reconnect_max);
        let losses = Arc::new(mqtt::PublishLosses::default());
        let links: (Arc<mqtt::Link>, Arc<mqtt::Link>) = Default::default();
        // What functions publish waits in the gateway's own queue, each publish
        // with its expiry (mqtt/outgoing.rs), not in the client's.
        let output_queue = mqtt::Outgoing::new(CLIENT_QUEUE);
        let output = Connection::start(mqtt::Drive {
            role: "output",
            eventloop: output_loop,
            client: client.clone(),
            subscriptions: watch::channel(Vec::new()).1,
            status_topic: None,
            backoff: backoff.clone(),
            acks: None,
            losses: losses.clone(),
            link: links.1.clone(),
            handler: mqtt::NoIntake,
            queue: Some(output_queue.clone()),
        });

        let stats = Arc::new(Stats::default());
        Stats::set(&stats.functions_failed, failed as u64);
        let abandon = Arc::new(AtomicBool::new(false));
        let (done_tx, workers_done) = mpsc::channel();
        let command_topics = Arc::new(std::sync::RwLock::new(command_topics_of(&config.devices)));
        let cx = WorkerContext {
            stats: stats.clone(),
            output: output_queue.clone(),
            command_topics: command_topics.clone(),
            outbox: outbox.clone(),
            abandon: abandon.clone(),
            done: done_tx,
            devices: None,
            recordings: Arc::default(),
        };
        let limits = QueueLimits {
            bounds: Bounds {
                capacity: config.gateway.queue_capacity,
                max_delay: config.gateway.queue_delay,
                stall_after: stall_after(config.broker.keep_alive),
            },
            scale_memory: config.gateway.scale_memory_bytes,
            // Only where someone waits for the acknowledgements: an external broker.
            spool: (safe_acks && config.gateway.spool_max_bytes > 0).then(|| spool::SpoolConfig {
                root: config.gateway.modules_dir.join("spool"),
                max_bytes: config.gateway.spool_max_bytes,
                max_event_bytes: config.broker.max_packet_bytes + 4096,
                min_free_bytes: config.gateway.min_free_bytes,
            }),
        };
        let limits_spool = limits.spool.clone();
        let scheduler = Scheduler::new(limits, workers, stats.clone()).context("spawning the spool reader")?;
        install_all(&scheduler, instances).await?;
        if let Some(cfg) = &limits_spool {
            spool::report_orphans(cfg, |name| registry.entries().any(|e| e.spec.name == name));
        }
        // The sources before the workers: a worker hands the device source the
        // commands that wait for confirmation. What a source offers before the
        // workers run waits in its function's queue.
        let crate::sources::Started { mut sources, requests, devices } =
            crate::sources::start(&config, scheduler.clone());
        for source in &mut sources {
            for entry in registry.entries() {
                source.change(Change::Set(&entry.spec));
            }
        }
        let cx = WorkerContext { devices: Some(devices.clone()), ..cx };
        let recordings = cx.recordings.clone();
        for index in 0..workers {
            spawn_worker(index, scheduler.clone(), cx.clone()).context("spawning a worker thread")?;
        }
        drop(cx);
        let table = Arc::new(Routes::build(&config, &config.devices, registry.entries().map(|e| (&e.name, &*e.spec))));
        let discovery = config
            .homeassistant
            .as_ref()
            .filter(|h| h.discovery)
            .map(|h| Arc::new(crate::sources::devices::discovery::Discovery::new(&h.prefix, &config.gateway.id)));
        let (routes, routes_rx) = mpsc::channel();
        let (subscriptions, wanted) = watch::channel(table.subscriptions.clone());
        let directory = loader.devices().cloned();
        let dispatcher =
            Dispatcher::new(&config, table, routes_rx, scheduler.clone(), outbox, devices.clone(), directory)
                .with_discovery(discovery.clone());
        let intake = Connection::start(mqtt::Drive {
            role: "intake",
            eventloop: intake_loop,
            client: intake_client,
            subscriptions: wanted,
            status_topic: Some(status_topic),
            backoff,
            acks: Some(acker.clone()),
            losses: losses.clone(),
            link: links.0.clone(),
            handler: Intake { acker: acker.clone(), dispatcher },
            queue: None,
        });
        devices.follow_link(intake.ready.clone());
        if let Some(h) = config.homeassistant.as_ref().filter(|h| !h.announce.is_empty()) {
            let messages = h
                .announce
                .iter()
                .map(|a| {
                    crate::profile::homeassistant::announcement(
                        &h.prefix,
                        &config.gateway.id,
                        &config.gateway.status_topic,
                        a,
                    )
                })
                .collect();
            crate::sources::devices::discovery::announce(intake.client.clone(), intake.ready.clone(), messages);
        }
        let ready = all_true(intake.ready.clone(), output.ready.clone());
        tracing::info!(
            gateway = %config.gateway.id,
            functions_loaded = config.functions.len() - failed,
            functions_failed = failed,
            workers,
            broker = %format!("{}:{}", config.broker.host, config.broker.port),
            "gateway started"
        );
        Ok(Gateway {
            config,
            stats,
            acker,
            losses,
            links,
            intake,
            output,
            output_queue,
            ready,
            abandon,
            workers_done,
            upstream,
            registry,
            loader,
            scheduler,
            routes,
            subscriptions,
            command_topics,
            probation: Default::default(),
            rolled_back: Default::default(),
            sources,
            requests,
            devices,
            discovery,
            discovered: Vec::new(),
            discovered_shadowed: Vec::new(),
            recordings,
        })
    }

    /// Changes each time the devices announced for discovery do (never, without `[homeassistant]`).
    pub fn discoveries(&self) -> Option<watch::Receiver<u64>> {
        self.discovery.as_ref().map(|d| d.watch())
    }

    /// Starts recording `function`'s invocations into `path` (`edgefn record`).
    pub fn record(
        &self,
        function: &str,
        path: &std::path::Path,
        max: u64,
        duration: Duration,
    ) -> Result<String, String> {
        let Some(entry) = self.registry.get(function) else {
            return Err(format!("there is no function {function:?} (edgefn functions lists them)"));
        };
        let limits = &entry.spec.limits;
        let header = crate::recording::Header {
            edgefn_recording: crate::recording::VERSION,
            function: function.to_owned(),
            module: entry.spec.module.to_string(),
            gateway: format!("edgefn {}", env!("CARGO_PKG_VERSION")),
            started_ms: crate::event::unix_ms(),
            fuel: limits.fuel,
            memory_bytes: limits.memory_bytes,
            timeout_ms: limits.timeout.as_millis() as u64,
        };
        self.recordings
            .start(&header, path, max, duration, std::time::Instant::now())
            .map_err(|e| format!("cannot record to {}: {e}", path.display()))?;
        tracing::info!(function, path = %path.display(), max, "recording invocations");
        Ok(format!("recording up to {max} invocations of {function} into {}", path.display()))
    }

    /// Where `function`'s latest recording stands.
    pub fn recording(&self, function: &str) -> Option<recorder::RecordingStatus> {
        self.recordings.status(function, std::time::Instant::now())
    }

    /// The functions as registered now.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn function_rows(&self, store: &crate::control::Store) -> Vec<crate::control::FunctionRow> {
        let mut status = function_status(&self.scheduler, &self.output_queue, self.loader.state());
        self.registry
            .entries()
            .map(|e| crate::control::FunctionRow {
                name: e.name.to_string(),
                version: store.version(&e.name).unwrap_or_else(|| format!("{:016x}", e.digest)),
                module: e.spec.module.to_string(),
                triggers: e.spec.triggers.iter().map(|t| t.text()).collect(),
                status: status.remove(&e.name).unwrap_or_default(),
                note: self.rolled_back.get(&*e.name).cloned().unwrap_or_default(),
                source: if store.holds(&e.name) { "deployed" } else { "config" }.into(),
            })
            .collect()
    }

    /// Every configured device's availability and last seen.
    pub fn device_rows(&self) -> Vec<crate::sources::devices::DeviceRow> {
        let mut rows = self.devices.rows();
        if let Some(directory) = self.loader.devices() {
            for row in &mut rows {
                row.values = directory.last(&row.id).and_then(|v| serde_json::from_slice(&v).ok());
            }
        }
        rows
    }

    /// Where the HTTP API offers requests on functions' routes.
    pub fn requests(&self) -> crate::sources::http::Requests {
        self.requests.clone()
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Live counters with the outbox's status.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut snapshot = self
            .stats
            .snapshot()
            .with_acks(&self.acker.stats)
            .with_losses(&self.losses)
            .with_links(&self.links.0, &self.links.1);
        snapshot.commands_expired = self.output_queue.expired().total();
        snapshot.upstream = self.upstream.as_ref().map(|(o, _)| o.status());
        snapshot.functions = function_status(&self.scheduler, &self.output_queue, self.loader.state())
            .into_iter()
            .map(|(name, s)| (name.to_string(), s))
            .collect();
        snapshot
    }

    /// Becomes true once both connections are up and intake is subscribed (and
    /// false while either is down).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Stops intake, lets queued and running invocations finish within the
    /// grace period, marks the gateway offline and disconnects.
    pub async fn shutdown(self) -> StatsSnapshot {
        tracing::info!("shutting down: intake stopped, draining workers");
        self.intake.handle.stop_intake();
        for source in self.sources {
            source.stop().await;
        }
        // No more jobs: each worker exits once nothing is left to run.
        self.scheduler.close();
        let grace = self.config.gateway.shutdown_grace;
        let workers = self.workers_done;
        let abandon = self.abandon.clone();
        let acker = self.acker.clone();
        // After the grace period, workers drop (and count) what is still queued
        // without running it, which is quick; an invocation already running ends
        // within its timeout (checked at host calls) or its fuel. Waiting for that
        // too keeps every job counted and every publish queued before the output
        // connection closes.
        let finish_running =
            self.registry.entries().map(|e| e.spec.limits.timeout).max().unwrap_or_default() + Duration::from_secs(1);
        let (drained, all_exited) = tokio::task::spawn_blocking(move || {
            let all_exited_by = |deadline: std::time::Instant| loop {
                match workers.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                    Ok(_) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                    Err(mpsc::RecvTimeoutError::Timeout) => return false,
                }
            };
            let now = std::time::Instant::now();
            if all_exited_by(now + grace) {
                return (true, true);
            }
            // What is abandoned stays unacknowledged: the broker delivers it
            // again after the restart.
            acker.close();
            abandon.store(true, std::sync::atomic::Ordering::Relaxed);
            (false, all_exited_by(std::time::Instant::now() + finish_running))
        })
        .await
        .unwrap_or((false, false));
        // What spools hold (or were still writing) is kept for the next start.
        let scheduler = self.scheduler.clone();
        let _ = tokio::task::spawn_blocking(move || scheduler.close_spools()).await;
        if !drained {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                dropped = self.stats.shutdown_dropped.load(std::sync::atomic::Ordering::Relaxed),
                "shutdown grace period over; what was still queued was dropped (shutdown_dropped)"
            );
        }
        if !all_exited {
            tracing::error!("a worker is still inside an invocation past its timeout; its queued jobs are not counted");
        }
        // Everything the workers and intake queued is written before the outbox closes.
        let mut upstream_status = None;
        if let Some((outbox, sender)) = self.upstream {
            let closing = outbox.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            sender.stop().await;
            upstream_status = Some(outbox.status());
        }
        // What workers published goes out before the output connection closes
        // (requests are sent in order), and before the gateway says it is offline.
        self.output.disconnect(Some(&self.output_queue)).await;
        // The acknowledgements of everything done are queued before the DISCONNECT.
        self.acker.close();
        let _ = self.intake.client.try_publish(&self.config.gateway.status_topic, QoS::AtLeastOnce, true, "offline");
        self.intake.disconnect(None).await;
        let mut snapshot = self
            .stats
            .snapshot()
            .with_acks(&self.acker.stats)
            .with_losses(&self.losses)
            .with_links(&self.links.0, &self.links.1);
        snapshot.commands_expired = self.output_queue.expired().total();
        snapshot.upstream = upstream_status;
        snapshot.functions = function_status(&self.scheduler, &self.output_queue, self.loader.state())
            .into_iter()
            .map(|(name, s)| (name.to_string(), s))
            .collect();
        snapshot
    }
}

/// Each function's queue and counters, with what its publishes lost to expiry.
fn function_status(
    scheduler: &Scheduler,
    output: &mqtt::Outgoing,
    stores: Option<&crate::state::Stores>,
) -> std::collections::HashMap<Arc<str>, FunctionStatus> {
    let mut status = scheduler.status();
    for (name, s) in status.iter_mut() {
        s.commands_expired = output.expired().of(name);
        if let Some(state) = stores.and_then(|stores| stores.get(name)) {
            s.state_refused = state.refused();
            s.state_bytes = state.usage().0 as u64;
        }
    }
    status
}

fn command_topics_of(devices: &[crate::config::Device]) -> Arc<std::collections::HashSet<String>> {
    Arc::new(devices.iter().flat_map(crate::config::Device::command_topics).collect())
}

/// What the intake connection hands its publishes to: each gets its
/// acknowledgement duty, then is routed.
struct Intake {
    acker: Arc<Acker>,
    dispatcher: Dispatcher,
}

impl mqtt::Handler for Intake {
    fn publish(&mut self, p: rumqttc::Publish) -> Option<mqtt::Backpressure> {
        let delivery = self.acker.arrive(&p);
        self.dispatcher.dispatch(p.topic, &p.payload, delivery)
    }

    fn caught_up(&mut self) {
        self.dispatcher.caught_up();
    }
}

/// One MQTT connection and the task that polls it.
struct Connection {
    client: AsyncClient,
    handle: ConnectionHandle,
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn start<H: mqtt::Handler>(parts: mqtt::Drive<H>) -> Connection {
        let client = parts.client.clone();
        let (handle, events, task) = mqtt::drive(parts);
        Connection { client, handle, ready: events.ready, task }
    }

    /// Sends DISCONNECT after every queued request (for the output: once its
    /// queue is written); ends the task if that takes too long.
    async fn disconnect(mut self, queue: Option<&mqtt::Outgoing>) {
        match queue {
            Some(queue) => queue.close(),
            None => drop(self.client.try_disconnect()),
        }
        if tokio::time::timeout(DISCONNECT_WAIT, &mut self.task).await.is_err() {
            self.handle.abort();
            let _ = self.task.await;
        }
    }
}

/// A flag that is true while both `a` and `b` are (false once either sender is gone).
fn all_true(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tx.send_replace(*a.borrow_and_update() && *b.borrow_and_update());
            let changed = tokio::select! {
                r = a.changed() => r,
                r = b.changed() => r,
                () = tx.closed() => return,
            };
            if changed.is_err() {
                tx.send_replace(false);
                return;
            }
        }
    });
    rx
}
