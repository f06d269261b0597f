//! The running gateway: MQTT intake -> routing -> wasm workers -> MQTT out.
//!
//! ```text
//! broker ──> connection task ──(route, try_send)──> worker queue ──> wasm worker
//!    ^                                                                  │
//!    └──────────────── MQTT client (publish) <──────────────────────────┘
//! ```

mod dispatch;
mod load;
mod stats;
mod workers;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, ClientError, QoS, Request};
use tokio::sync::watch;

pub use load::{compile_source, instantiate_all};
pub use stats::{Stats, StatsSnapshot};
pub use workers::emit_logs;

use crate::config::{BrokerMode, GatewayConfig};
use crate::host::Loader;
use crate::mqtt::{self, Backoff, IntakeHandle};
use crate::outbox::Outbox;
use crate::topic::minimal_subscriptions;
use crate::upstream::{spawn_sender, SenderHandle};
use dispatch::{place, Dispatcher};
use workers::{spawn_worker, WorkerContext};

/// Requests the MQTT client may hold queued before publishers wait.
const CLIENT_QUEUE: usize = 1_024;
/// How long shutdown waits for the connection to flush its DISCONNECT.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// A started gateway. Dropping it without [`Gateway::shutdown`] leaves threads running.
pub struct Gateway {
    config: GatewayConfig,
    stats: Arc<Stats>,
    client: AsyncClient,
    intake: IntakeHandle,
    ready: watch::Receiver<bool>,
    connection: tokio::task::JoinHandle<()>,
    abandon: Arc<AtomicBool>,
    workers_done: mpsc::Receiver<usize>,
    /// The outbox and its sender, when upstream delivery is configured.
    upstream: Option<(Outbox, SenderHandle)>,
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
        let loader = Arc::new(Loader::new().with_upstream(outbox.is_some()));
        let instances = instantiate_all(&loader, &config.functions)?;
        if let BrokerMode::Embedded { listen } = config.broker.mode {
            mqtt::start_embedded_broker(listen, config.broker.max_packet_bytes)
                .with_context(|| format!("starting the embedded broker on {listen} (broker.listen)"))?;
        }
        let status_topic = config.gateway.status_topic.clone();
        let options = mqtt::client_options(&config.broker, &config.broker.client_id, Some(&status_topic))?;
        let (client, mut eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
        eventloop.set_network_options(mqtt::network_options());

        let stats = Arc::new(Stats::default());
        let abandon = Arc::new(AtomicBool::new(false));
        let (done_tx, workers_done) = mpsc::channel();
        let workers = config.gateway.workers.min(instances.len()).max(1);
        let placements = place(instances.len(), workers);
        let mut per_worker: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
        for (instance, p) in instances.into_iter().zip(&placements) {
            per_worker[p.worker].push(instance);
        }
        let runtime = tokio::runtime::Handle::current();
        let publish_client = client.clone();
        let publisher: workers::Publisher = Arc::new(move |p| {
            let qos = match p.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            // Queued without blocking when there is room (the usual case); when the
            // client's queue is full, wait for the connection task to drain it.
            match publish_client.try_publish(p.topic, qos, p.retain, p.payload) {
                Ok(()) => Ok(()),
                Err(ClientError::TryRequest(Request::Publish(p)) | ClientError::Request(Request::Publish(p))) => {
                    runtime
                        .block_on(publish_client.publish_bytes(p.topic, qos, p.retain, p.payload))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        });
        let command_topics = Arc::new(config.devices.iter().filter_map(|d| d.command_topic.clone()).collect());
        let cx = WorkerContext {
            stats: stats.clone(),
            publisher,
            command_topics,
            outbox: outbox.clone(),
            abandon: abandon.clone(),
            done: done_tx,
        };
        let mut queues = Vec::with_capacity(workers);
        for (index, instances) in per_worker.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(config.gateway.queue_capacity);
            spawn_worker(index, instances, rx, cx.clone()).context("spawning a worker thread")?;
            queues.push(tx);
        }
        drop(cx);

        let mut dispatcher = Dispatcher::new(&config, placements, queues, stats.clone(), outbox);
        let subscriptions = minimal_subscriptions(
            config
                .functions
                .iter()
                .flat_map(|f| &f.triggers)
                .chain(config.upstream.iter().flat_map(|u| u.forward.iter().flat_map(|f| &f.topics))),
        )
        .into_iter()
        .map(|f| f.as_str().to_owned())
        .collect();
        let backoff = Backoff::new(config.broker.reconnect_min, config.broker.reconnect_max);
        let (intake, events, connection) = mqtt::drive(mqtt::Drive {
            eventloop,
            client: client.clone(),
            subscriptions,
            status_topic,
            backoff,
            handler: move |p: rumqttc::Publish| dispatcher.dispatch(p.topic, &p.payload),
        });
        tracing::info!(
            gateway = %config.gateway.id,
            functions = config.functions.len(),
            workers,
            broker = %format!("{}:{}", config.broker.host, config.broker.port),
            "gateway started"
        );
        Ok(Gateway { config, stats, client, intake, ready: events.ready, connection, abandon, workers_done, upstream })
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Live counters with the outbox's status.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot();
        snapshot.upstream = self.upstream.as_ref().map(|(o, _)| o.status());
        snapshot
    }

    /// Becomes true once connected and subscribed (and false while disconnected).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Stops intake, lets queued and running invocations finish within the
    /// grace period, marks the gateway offline and disconnects.
    pub async fn shutdown(self) -> StatsSnapshot {
        tracing::info!("shutting down: intake stopped, draining workers");
        self.intake.stop_intake();
        let grace = self.config.gateway.shutdown_grace;
        let workers = self.workers_done;
        let abandon = self.abandon.clone();
        let drained = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + grace;
            // Each worker reports once; the channel closes when all have exited.
            loop {
                match workers.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                    Ok(_) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        abandon.store(true, std::sync::atomic::Ordering::Relaxed);
                        return false;
                    }
                }
            }
        })
        .await
        .unwrap_or(false);
        if !drained {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown grace period over; dropping what is still queued"
            );
        }
        // Everything the workers and intake queued is written before the outbox closes.
        let mut upstream_status = None;
        if let Some((outbox, sender)) = self.upstream {
            let closing = outbox.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            sender.stop().await;
            upstream_status = Some(outbox.status());
        }
        let _ = self.client.try_publish(&self.config.gateway.status_topic, QoS::AtLeastOnce, true, "offline");
        let _ = self.client.try_disconnect();
        let mut connection = self.connection;
        if tokio::time::timeout(DISCONNECT_WAIT, &mut connection).await.is_err() {
            self.intake.abort();
            let _ = connection.await;
        }
        let mut snapshot = self.stats.snapshot();
        snapshot.upstream = upstream_status;
        snapshot
    }
}

/// Runs the gateway until `shutdown` completes, then shuts it down cleanly.
pub async fn run(config: GatewayConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<StatsSnapshot> {
    let gateway = Gateway::start(config).await?;
    let report = async {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!("{}", gateway.snapshot().one_line());
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = report => {}
    }
    Ok(gateway.shutdown().await)
}
