//! The upstream sender: one task owns the upstream MQTT connection. It reads
//! batches from the outbox, publishes them at QoS 1, matches every PUBACK to its
//! batch by packet id, and moves the outbox's acknowledged position only over a
//! contiguous run of acknowledged batches. After every (re)connect it starts
//! again from the first unacknowledged record: rumqttc forgets in-flight
//! publishes on a clean-session reconnect, the outbox does not.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use tokio::sync::watch;

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

/// One publish awaiting its PUBACK.
struct InFlight {
    /// Numbers batches in send order.
    number: u64,
    /// Outbox position after its last record.
    end: Cursor,
    records: u64,
    acked: bool,
}

enum SessionEnd {
    Stop,
    Lost(String),
}

async fn run(cfg: UpstreamConfig, gateway_id: String, reader: Reader, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(cfg.broker.reconnect_min, cfg.broker.reconnect_max);
    let broker = format!("{}:{}", cfg.broker.host, cfg.broker.port);
    // Highest record id ever handed to a publish, to count resends. Records an
    // earlier run left unacknowledged may have been sent by it: sending them
    // again counts as resent too.
    let mut highest_sent = reader.durable_end();
    loop {
        let options = match client_options(&cfg.broker, &cfg.broker.client_id, None) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%broker, error = %e, "upstream: cannot set up the connection; not sending");
                let _ = stop.changed().await;
                return;
            }
        };
        let end =
            Session::new(&cfg, &gateway_id, &reader, options, &mut highest_sent).run(&mut stop, &mut backoff).await;
        if let Err(e) = disk(|| reader.persist_state()) {
            tracing::error!(error = %e, "upstream: could not persist the outbox state");
        }
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

struct Session<'a> {
    cfg: &'a UpstreamConfig,
    gateway_id: &'a str,
    reader: &'a Reader,
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    highest_sent: &'a mut u64,
    connected: bool,
    cursor: Cursor,
    inflight: VecDeque<InFlight>,
    /// Batches published but whose packet id rumqttc has not reported yet, in order.
    awaiting_pkid: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
    next_number: u64,
    tokens: f64,
    refilled: Instant,
    /// When to look again for a partial batch (linger) or for tokens.
    wake_at: Option<Instant>,
    last_persist: Instant,
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a UpstreamConfig,
        gateway_id: &'a str,
        reader: &'a Reader,
        options: rumqttc::MqttOptions,
        highest_sent: &'a mut u64,
    ) -> Self {
        let (client, eventloop) = crate::mqtt::new_client(options, cfg.max_inflight * 2 + 8);
        Session {
            cfg,
            gateway_id,
            reader,
            client,
            eventloop,
            highest_sent,
            connected: false,
            cursor: reader.acked(),
            inflight: VecDeque::new(),
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            next_number: 0,
            tokens: cfg.batch_max_records as f64,
            refilled: Instant::now(),
            wake_at: None,
            last_persist: Instant::now(),
        }
    }

    async fn run(mut self, stop: &mut watch::Receiver<bool>, backoff: &mut Backoff) -> SessionEnd {
        loop {
            if self.connected {
                if let Err(e) = self.fill() {
                    return SessionEnd::Lost(format!("reading the outbox: {e}"));
                }
            }
            let wake = self.wake_at.map(tokio::time::Instant::from_std);
            tokio::select! {
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
                        self.cursor = self.reader.acked();
                    }
                    Ok(event) => self.track(&event),
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
                _ = self.reader.durable(), if self.connected => {}
                _ = sleep_until(wake), if wake.is_some() => { self.wake_at = None; }
            }
        }
    }

    /// On shutdown: sends nothing new, waits (bounded) for the PUBACKs of what is
    /// in flight so that a restart resends as little as possible, then disconnects.
    async fn drain_and_disconnect(&mut self) {
        let _ = tokio::time::timeout(DRAIN_ON_STOP, async {
            while self.connected && !self.inflight.is_empty() {
                match self.eventloop.poll().await {
                    Ok(event) => self.track(&event),
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
    fn fill(&mut self) -> std::io::Result<()> {
        let rate = self.cfg.drain_rate as f64;
        let burst = self.cfg.batch_max_records as f64;
        self.tokens = (self.tokens + self.refilled.elapsed().as_secs_f64() * rate).min(burst);
        self.refilled = Instant::now();
        while self.inflight.len() < self.cfg.max_inflight {
            if self.tokens < 1.0 {
                self.wake_at = Some(Instant::now() + Duration::from_secs_f64((1.0 - self.tokens) / rate));
                return Ok(());
            }
            let max = (self.tokens as usize).clamp(1, self.cfg.batch_max_records);
            let (records, next) = disk(|| self.reader.read_batch(self.cursor, max, self.cfg.batch_max_bytes))?;
            if records.is_empty() {
                if next != self.cursor {
                    // Only expired records: skip them, and acknowledge them if nothing is ahead.
                    self.cursor = next;
                    if self.inflight.is_empty() {
                        disk(|| self.reader.ack_to(next))?;
                    }
                    continue;
                }
                return Ok(());
            }
            let newest = records.last().map(|r| r.accepted_ms).unwrap_or(0);
            let age = Duration::from_millis(crate::event::unix_ms().saturating_sub(newest));
            if records.len() < max && age < self.cfg.linger {
                self.wake_at = Some(Instant::now() + (self.cfg.linger - age));
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
            let resent = records.iter().filter(|r| r.id < *self.highest_sent).count() as u64;
            stats.resent.fetch_add(resent, Relaxed);
            *self.highest_sent = (*self.highest_sent).max(records.last().map(|r| r.id + 1).unwrap_or(0));
            self.tokens -= n as f64;
            let number = self.next_number;
            self.next_number += 1;
            self.awaiting_pkid.push_back(number);
            self.inflight.push_back(InFlight { number, end: next, records: n, acked: false });
            self.cursor = next;
        }
        Ok(())
    }

    /// Follows a publish through rumqttc: its packet id, then its PUBACK.
    fn track(&mut self, event: &Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(number) = self.awaiting_pkid.pop_front() {
                    self.by_pkid.insert(*pkid, number);
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => self.acknowledged(ack.pkid),
            _ => {}
        }
    }

    /// A PUBACK: mark its batch, then release every acknowledged batch at the front.
    fn acknowledged(&mut self, pkid: u16) {
        let Some(number) = self.by_pkid.remove(&pkid) else { return };
        if let Some(batch) = self.inflight.iter_mut().find(|b| b.number == number) {
            batch.acked = true;
        }
        let mut released = None;
        while self.inflight.front().is_some_and(|b| b.acked) {
            let batch = self.inflight.pop_front().expect("front exists");
            self.reader.stats().acknowledged.fetch_add(batch.records, Relaxed);
            released = Some(batch.end);
        }
        if let Some(end) = released {
            if let Err(e) = disk(|| self.reader.ack_to(end)) {
                tracing::error!(error = %e, "upstream: could not record acknowledgements");
            }
            if self.last_persist.elapsed() >= PERSIST_EVERY {
                self.last_persist = Instant::now();
                if let Err(e) = disk(|| self.reader.persist_state()) {
                    tracing::error!(error = %e, "upstream: could not persist the outbox state");
                }
            }
        }
    }
}

/// Runs the outbox's disk I/O (reads, fsyncs, renames, deletes) off the async
/// runtime's turn: on a multi-threaded runtime its other tasks (intake, output)
/// move to another thread meanwhile.
fn disk<T>(io: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(io),
        _ => io(),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
