//! The upstream sender: one task owns the upstream MQTT connection. It reads
//! batches from the outbox, publishes them at QoS 1, and moves the outbox's
//! acknowledged position as PUBACKs come back; which batch may go out and how
//! far a PUBACK moves the position is the pure [`Window`]. After every
//! (re)connect it starts again from the first unacknowledged record: rumqttc
//! forgets in-flight publishes on a clean-session reconnect, the outbox does not.
//! Every read, fsync, rename and delete runs on tokio's blocking pool, never on
//! the runtime threads that intake and output share.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use tokio::sync::watch;

use super::window::{linger, Next, Released, Resends, Window};
use super::wire;
use crate::config::UpstreamConfig;
use crate::mqtt::{client_options, Backoff};
use crate::outbox::{Cursor, Reader};

/// How often the acknowledged position is written to the state file while sending.
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// How long shutdown waits for the PUBACKs of batches in flight.
const DRAIN_ON_STOP: Duration = Duration::from_secs(2);

/// Stops the sender.
pub struct SenderHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SenderHandle {
    /// Persists the acknowledged position, disconnects and waits for the task.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Starts the sender task.
pub fn spawn_sender(cfg: UpstreamConfig, gateway_id: String, reader: Reader) -> SenderHandle {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(cfg, gateway_id, reader, stop_rx));
    SenderHandle { stop, task }
}

enum SessionEnd {
    Stop,
    Lost(String),
}

async fn run(cfg: UpstreamConfig, gateway_id: String, reader: Reader, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(cfg.broker.reconnect_min, cfg.broker.reconnect_max);
    let broker = format!("{}:{}", cfg.broker.host, cfg.broker.port);
    // Records an earlier run left unacknowledged may have been sent by it:
    // sending them again counts as resent too.
    let mut resends = Resends::new(reader.durable_end());
    let mut disk_errors = DiskErrors::default();
    loop {
        let options = match client_options(&cfg.broker, &cfg.broker.client_id, None) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%broker, error = %e, "upstream: cannot set up the connection; not sending");
                let _ = stop.changed().await;
                return;
            }
        };
        let end = Session::new(&cfg, &gateway_id, &reader, options, &mut resends, &mut disk_errors)
            .run(&mut stop, &mut backoff)
            .await;
        let persisted = disk(&reader, |r| r.persist_state()).await;
        disk_errors.outcome(persisted.map_err(|e| format!("could not persist the outbox state: {e}")));
        reader.stats().connected.store(0, Relaxed);
        match end {
            SessionEnd::Stop => return,
            SessionEnd::Lost(error) => {
                let delay = backoff.next_delay(crate::mqtt::random_unit());
                let status = reader.stats().acknowledged.load(Relaxed);
                tracing::warn!(%broker, %error, retry_in_ms = delay.as_millis() as u64, acknowledged = status, "upstream connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// One connection: the MQTT client, the window of batches in flight on it, and
/// the outbox position the next batch is read from.
struct Session<'a> {
    cfg: &'a UpstreamConfig,
    gateway_id: &'a str,
    reader: &'a Reader,
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    resends: &'a mut Resends,
    connected: bool,
    cursor: Cursor,
    window: Window,
    /// When to look again for a partial batch (linger) or for tokens.
    wake_at: Option<Instant>,
    last_persist: Instant,
    disk_errors: &'a mut DiskErrors,
}

/// The outbox's disk errors, logged when they begin and when they end rather
/// than at every attempt: a full disk fails every acknowledgement's state
/// write and every reconnect's.
#[derive(Default)]
struct DiskErrors {
    /// Attempts failed in a row.
    failing: u64,
}

impl DiskErrors {
    fn outcome(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) if self.failing > 0 => {
                tracing::info!(failed = self.failing, "upstream: the outbox's state is written again");
                self.failing = 0;
            }
            Ok(()) => {}
            Err(e) => {
                if self.failing == 0 {
                    tracing::error!(
                        "upstream: {e}; trying again with each acknowledgement (told once more when it works)"
                    );
                }
                self.failing += 1;
            }
        }
    }
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a UpstreamConfig,
        gateway_id: &'a str,
        reader: &'a Reader,
        options: rumqttc::MqttOptions,
        resends: &'a mut Resends,
        disk_errors: &'a mut DiskErrors,
    ) -> Self {
        let (client, eventloop) = crate::mqtt::new_client(options, cfg.max_inflight * 2 + 8);
        Session {
            cfg,
            gateway_id,
            reader,
            client,
            eventloop,
            resends,
            connected: false,
            cursor: reader.acked(),
            window: Window::new(cfg.max_inflight, cfg.batch_max_records, cfg.drain_rate, Instant::now()),
            wake_at: None,
            last_persist: Instant::now(),
            disk_errors,
        }
    }

    async fn run(mut self, stop: &mut watch::Receiver<bool>, backoff: &mut Backoff) -> SessionEnd {
        loop {
            if self.connected {
                if let Err(e) = self.fill().await {
                    return SessionEnd::Lost(format!("reading the outbox: {e}"));
                }
            }
            let wake = self.wake_at.map(tokio::time::Instant::from_std);
            let released = tokio::select! {
                biased;
                _ = stop.changed() => {
                    self.drain_and_disconnect().await;
                    return SessionEnd::Stop;
                }
                event = self.eventloop.poll() => match event {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        tracing::info!(broker = %format!("{}:{}", self.cfg.broker.host, self.cfg.broker.port), "upstream connected");
                        backoff.reset();
                        self.connected = true;
                        self.reader.stats().connects.fetch_add(1, Relaxed);
                        self.reader.stats().connected.store(1, Relaxed);
                        self.cursor = self.reader.acked();
                        None
                    }
                    Ok(event) => self.track(&event),
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
                _ = self.reader.durable(), if self.connected => None,
                _ = sleep_until(wake), if wake.is_some() => { self.wake_at = None; None }
            };
            if let Some(released) = released {
                self.release(released).await;
            }
        }
    }

    /// On shutdown: sends nothing new, waits (bounded) for the PUBACKs of what is
    /// in flight so that a restart resends as little as possible, then disconnects.
    async fn drain_and_disconnect(&mut self) {
        let _ = tokio::time::timeout(DRAIN_ON_STOP, async {
            while self.connected && self.window.in_flight() > 0 {
                match self.eventloop.poll().await {
                    Ok(event) => {
                        if let Some(released) = self.track(&event) {
                            self.release(released).await;
                        }
                    }
                    Err(_) => return,
                }
            }
        })
        .await;
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(ev) = self.eventloop.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Publishes batches while the in-flight window and the drain rate allow.
    async fn fill(&mut self) -> std::io::Result<()> {
        loop {
            let max = match self.window.next(Instant::now()) {
                Next::Full => return Ok(()),
                Next::WaitUntil(at) => {
                    self.wake_at = Some(at);
                    return Ok(());
                }
                Next::Send { max_records } => max_records,
            };
            if self.cursor.id >= self.reader.durable_end() {
                // Caught up: no read (and no trip to the blocking pool) until more is durable.
                return Ok(());
            }
            let (from, max_bytes) = (self.cursor, self.cfg.batch_max_bytes);
            let (records, next) = disk(self.reader, move |r| r.read_batch(from, max, max_bytes)).await?;
            if records.is_empty() {
                if next != self.cursor {
                    // Only expired records: skip them, and acknowledge them if nothing is ahead.
                    self.cursor = next;
                    if self.window.in_flight() == 0 {
                        disk(self.reader, move |r| r.ack_to(next)).await?;
                    }
                    continue;
                }
                return Ok(());
            }
            let newest = records.last().map(|r| r.accepted_ms).unwrap_or(0);
            let age = Duration::from_millis(crate::event::unix_ms().saturating_sub(newest));
            if let Some(wait) = linger(records.len(), max, age, self.cfg.linger) {
                self.wake_at = Some(Instant::now() + wait);
                return Ok(());
            }
            let topic = wire::topic(&self.cfg.topic_prefix, self.gateway_id, &records[0].stream);
            let payload = wire::encode(self.cfg.format, self.gateway_id, &records);
            if self.client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
                return Ok(());
            }
            let n = records.len() as u64;
            let stats = self.reader.stats();
            stats.sent.fetch_add(n, Relaxed);
            stats.resent.fetch_add(self.resends.sent(records.iter().map(|r| r.id)), Relaxed);
            self.window.sent(n, next);
            self.cursor = next;
        }
    }

    /// Follows a publish through rumqttc: its packet id, then its PUBACK.
    fn track(&mut self, event: &Event) -> Option<Released> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.window.published(*pkid);
                None
            }
            Event::Incoming(Incoming::PubAck(ack)) => self.window.acknowledged(ack.pkid),
            _ => None,
        }
    }

    /// Moves the outbox's acknowledged position (deleting the segments it
    /// empties) and, at most every `PERSIST_EVERY`, writes it to the state file.
    async fn release(&mut self, released: Released) {
        self.reader.stats().acknowledged.fetch_add(released.records, Relaxed);
        let persist = self.last_persist.elapsed() >= PERSIST_EVERY;
        if persist {
            self.last_persist = Instant::now();
        }
        let result = disk(self.reader, move |r| {
            let context = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
            r.ack_to(released.to).map_err(|e| context("could not record acknowledgements", e))?;
            if persist {
                r.persist_state().map_err(|e| context("could not persist the outbox state", e))?;
            }
            Ok(())
        })
        .await;
        self.disk_errors.outcome(result.map_err(|e| e.to_string()));
    }
}

/// Runs outbox I/O (reads, fsyncs, renames, deletes) on tokio's blocking pool,
/// so that the runtime threads keep serving intake and output meanwhile.
async fn disk<T: Send + 'static>(
    reader: &Reader,
    io: impl FnOnce(&Reader) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let reader = reader.clone();
    match tokio::task::spawn_blocking(move || io(&reader)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(std::io::Error::other("the runtime is shutting down")),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
