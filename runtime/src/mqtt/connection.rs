//! The task that owns and polls one MQTT event loop.
//!
//! Incoming publishes go to a synchronous handler. When the handler has no room
//! for more, it returns a [`Backpressure`] future and the task reads nothing
//! more until that completes, so the backlog waits in the broker. Apart from
//! that wait (and, while disconnected, the backoff delay) the task awaits only
//! the poll; subscriptions and status messages are queued with `try_*` calls.
//! Waiting is safe only because nothing the handler waits for ever needs this
//! connection: the gateway publishes on a second connection of its own.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, PubAck, QoS, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::watch;

use super::acks::Acker;
use super::backoff::Backoff;
use super::carry::CarryOver;
use super::outgoing::Outgoing as OutputQueue;

/// Returned by a handler that cannot take more yet: the connection reads no
/// further packet until it completes.
pub type Backpressure = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the connection hands incoming publishes to. Must not block.
pub trait Handler: Send + 'static {
    /// One incoming publish; returns a future to wait for when there is no
    /// room for the next one.
    fn publish(&mut self, publish: rumqttc::Publish) -> Option<Backpressure>;

    /// Every publish read off the socket so far has been handed over, or the
    /// connection is about to wait for the handler's [`Backpressure`]. Packets
    /// arrive in bursts (one socket read yields many): a handler may hold work
    /// it would hand on per message (waking a worker) until here, once per burst.
    fn caught_up(&mut self) {}
}

/// A connection that takes no publishes (it subscribes to nothing).
pub struct NoIntake;

impl Handler for NoIntake {
    fn publish(&mut self, _: rumqttc::Publish) -> Option<Backpressure> {
        None
    }
}

/// Lets the owner of the connection stop intake and end the task.
pub struct ConnectionHandle {
    phase: watch::Sender<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Incoming publishes are no longer handed on; the connection stays up so
    /// in-flight invocations can still publish.
    IntakeStopped,
    /// End the task now, whatever is pending.
    Abort,
}

impl ConnectionHandle {
    /// Stops handing incoming publishes to the handler (which is dropped).
    pub fn stop_intake(&self) {
        self.phase.send_replace(Phase::IntakeStopped);
    }

    /// Ends the task at once.
    pub fn abort(&self) {
        self.phase.send_replace(Phase::Abort);
    }
}

/// What the connection task reports to the rest of the gateway.
#[derive(Clone)]
pub struct ConnectionEvents {
    /// True while connected with every subscription acknowledged.
    pub ready: watch::Receiver<bool>,
}

/// Publishes a connection was handed and dropped unsent, by reason. Counted by
/// what rumqttc holds for the connection: the QoS 1 publishes in flight and the
/// requests still queued when the connection fails. (A QoS 0 publish already
/// written is gone with the socket: at most once.)
#[derive(Debug, Default)]
pub struct PublishLosses {
    /// In flight or queued when the connection was lost, past the
    /// [`CARRY_MAX`](super::carry::CARRY_MAX) carried over to the next connection.
    pub reconnect: AtomicU64,
    /// Still in flight or queued when the gateway stopped waiting for the
    /// connection (the broker unreachable at the stop).
    pub stop: AtomicU64,
}

/// One connection's state, for the metrics.
#[derive(Debug, Default)]
pub struct Link {
    /// True while connected (from the CONNACK to the connection's loss).
    pub connected: std::sync::atomic::AtomicBool,
    /// Connections made: the first, then one per reconnect.
    pub connects: AtomicU64,
}

/// The parts `drive` needs, set up by the caller.
pub struct Drive<H> {
    /// Names the connection in logs ("intake", "output").
    pub role: &'static str,
    pub eventloop: EventLoop,
    pub client: AsyncClient,
    /// Filters subscribed after every (re)connect, at QoS 1. When the value
    /// changes, the difference is subscribed and unsubscribed at once.
    pub subscriptions: watch::Receiver<Vec<String>>,
    /// Where `online` is published (retained) once subscribed, if anywhere.
    pub status_topic: Option<String>,
    pub backoff: Backoff,
    /// The acknowledgements this connection owes (manual acks), told when it is lost.
    pub acks: Option<std::sync::Arc<Acker>>,
    /// Where publishes dropped unsent are counted.
    pub losses: Arc<PublishLosses>,
    /// Whether it is connected, and how often it connected.
    pub link: Arc<Link>,
    /// Gets every incoming publish while intake runs.
    pub handler: H,
    /// The output connection's queue (`outgoing.rs`): its publishes are taken
    /// from there as the in-flight window has room, each written only before
    /// it expires. Closing it ends the connection once what waits is written.
    /// `None`: publishes go through the client's own queue.
    pub queue: Option<OutputQueue>,
}

/// Spawns the task that polls the event loop until a clean disconnect or `abort`.
pub fn drive<H>(parts: Drive<H>) -> (ConnectionHandle, ConnectionEvents, tokio::task::JoinHandle<()>)
where
    H: Handler,
{
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (ready_tx, ready_rx) = watch::channel(false);
    let task = tokio::spawn(run(parts, phase_rx, ready_tx));
    (ConnectionHandle { phase: phase_tx }, ConnectionEvents { ready: ready_rx }, task)
}

async fn run<H: Handler>(parts: Drive<H>, phase: watch::Receiver<Phase>, ready: watch::Sender<bool>) {
    let Drive {
        role,
        mut eventloop,
        client,
        subscriptions: mut wanted,
        status_topic,
        mut backoff,
        acks,
        losses,
        link,
        handler,
        queue,
    } = parts;
    // Sent once the output queue is closed and everything in it written.
    let mut disconnecting = false;
    // What is subscribed (or asked for), and the filters of each SUBSCRIBE not yet
    // acknowledged, in order, to name a refused one.
    let mut subscriptions: Vec<String> = wanted.borrow_and_update().clone();
    let mut awaiting_suback: std::collections::VecDeque<Vec<String>> = Default::default();
    let mut connected = false;
    let mut connected_before = false;
    let persistent = !eventloop.mqtt_options.clean_session();
    let status_topic = status_topic.as_deref();
    let mut handler = Some(handler);
    // What is still owed when the task ends stays the broker's, and is counted so.
    let _owed = acks.clone().map(OwedAtExit);
    let broker = format!("{}:{}", eventloop.mqtt_options.broker_address().0, eventloop.mqtt_options.broker_address().1);
    // One future waits for the next phase change across loop turns: making a
    // fresh `changed()` every turn would register and drop a waiter per packet.
    let mut next = Box::pin(next_phase(phase));
    let mut updates_open = true;
    // Whether publishes were handed over since the handler was last told it
    // has caught up.
    let mut handed_over = false;
    // PUBACKs are written in batches, with one flush, as they become ready.
    let mut acks_ready = wait_for_acks(&acks);
    let mut ack_batch = Vec::new();
    // A failure to write PUBACKs while waiting on the handler, handled after the wait.
    let mut failed = None;
    // What rumqttc held when the connection was lost, for the next connection.
    let mut carry = CarryOver::default();
    // Set when the task is told to end now, rather than after a DISCONNECT.
    let mut aborted = false;
    'run: loop {
        // Publishes carried over from the lost connection go out before anything
        // newer; then the output queue's, as far as the in-flight window has room.
        if connected && failed.is_none() {
            if let Some(queue) = &queue {
                queue.take(carry.room(&eventloop), carry.queue());
            }
            if !carry.is_empty() {
                failed = carry.write(&mut eventloop, queue.as_ref().map(|q| q.expired())).await.err();
            }
            // More waiting comes on the next turn: each write leaves rumqttc an
            // outgoing event, which its poll hands back at once (QoS 0 brings no
            // acknowledgement that would).
            if let Some(queue) = queue.as_ref().filter(|q| !disconnecting && q.closing()) {
                if queue.is_empty() && carry.is_empty() {
                    disconnecting = true;
                    let _ = client.try_disconnect();
                }
            }
        }
        // What one socket read brought is handed over packet by packet; once
        // none is left, the next poll waits for the network.
        if handed_over && eventloop.state.events.is_empty() {
            handed_over = false;
            if let Some(handle) = handler.as_mut() {
                handle.caught_up();
            }
        }
        let event = if let Some(e) = failed.take() {
            Err(e)
        } else {
            tokio::select! {
                biased;
                (now, phase) = &mut next => {
                    if ends(now, &mut handler) {
                        aborted = true;
                        break 'run;
                    }
                    next = Box::pin(next_phase(phase));
                    continue;
                }
                // Only while connected: this branch firing drops the poll, and a
                // connect cut short is a connection the broker saw and we lost
                // (the output's sender is gone at once, racing its first connect).
                // The CONNACK reads what changed meanwhile.
                changed = wanted.changed(), if updates_open && connected => {
                    match changed {
                        Ok(()) => {
                            let now = wanted.borrow_and_update().clone();
                            change_subscriptions(&client, &subscriptions, &now, &mut awaiting_suback);
                            subscriptions = now;
                        }
                        Err(_) => updates_open = false,
                    }
                    continue;
                }
                () = &mut acks_ready => {
                    acks_ready = wait_for_acks(&acks);
                    match write_acks(&mut eventloop, acks.as_deref(), &mut ack_batch).await {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                event = eventloop.poll() => event,
                // Last: a steady stream of publishes never keeps the network unread.
                () = async { queue.as_ref().expect("checked").notified().await },
                    if connected && queue.is_some() && carry.room(&eventloop) > 0 => continue,
            }
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Some(handle) = handler.as_mut() else { continue };
                handed_over = true;
                let Some(mut wait) = handle.publish(publish) else { continue };
                // Whatever the handler held back may be what frees the room.
                handle.caught_up();
                handed_over = false;
                // Read nothing more until the handler has room; the broker holds
                // the backlog meanwhile. Stopping intake does not cut the wait
                // short (the handler bounds it); only an abort does.
                loop {
                    tokio::select! {
                        biased;
                        (now, phase) = &mut next => {
                            if ends(now, &mut handler) {
                                aborted = true;
                                break 'run;
                            }
                            next = Box::pin(next_phase(phase));
                        }
                        () = &mut acks_ready, if failed.is_none() => {
                            acks_ready = wait_for_acks(&acks);
                            failed = write_acks(&mut eventloop, acks.as_deref(), &mut ack_batch).await.err();
                        }
                        () = &mut wait => break,
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(%broker, connection = role, "connected to MQTT broker");
                link.connects.fetch_add(1, Ordering::Relaxed);
                link.connected.store(true, Ordering::Relaxed);
                if persistent && !ack.session_present {
                    session_not_kept(&broker, role, connected_before);
                }
                let (carried, dropped) = carry.connected(&mut eventloop, ack.session_present);
                if carried > 0 {
                    tracing::info!(%broker, connection = role, publishes = carried, "publishes in flight or queued when the connection was lost are sent again");
                }
                if dropped > 0 {
                    losses.reconnect.fetch_add(dropped as u64, Ordering::Relaxed);
                    tracing::warn!(
                        %broker,
                        connection = role,
                        dropped,
                        "publishes waiting since the connection was lost were dropped, the oldest first: more than {} \
                         (counted in publishes_dropped_reconnect)",
                        super::carry::CARRY_MAX
                    );
                }
                connected_before = true;
                backoff.reset();
                connected = true;
                awaiting_suback.clear();
                subscriptions = wanted.borrow_and_update().clone();
                if subscriptions.is_empty() {
                    announce_online(&client, status_topic, &ready);
                } else {
                    subscribe(&client, &subscriptions, &mut awaiting_suback);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let filters = awaiting_suback.pop_front().unwrap_or_default();
                for (code, filter) in ack.return_codes.iter().zip(&filters) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        tracing::error!(%filter, "broker refused subscription (check its ACL)");
                    }
                }
                if !*ready.borrow() {
                    announce_online(&client, status_topic, &ready);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tracing::info!(%broker, connection = role, "disconnected from MQTT broker");
                break 'run;
            }
            Ok(_) => {}
            Err(e) => {
                ready.send_replace(false);
                connected = false;
                link.connected.store(false, Ordering::Relaxed);
                if let Some(acks) = &acks {
                    acks.connection_lost();
                }
                // rumqttc has moved what was in flight, and what was queued, to `pending`.
                carry.lost(&mut eventloop);
                let delay = backoff.next_delay(random_unit());
                tracing::warn!(%broker, connection = role, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    (now, phase) = &mut next => {
                        if ends(now, &mut handler) {
                            aborted = true;
                            break 'run;
                        }
                        next = Box::pin(next_phase(phase));
                    }
                }
            }
        }
    }
    // After a DISCONNECT everything before it was written. Told to end now (the
    // stop gave up waiting, the broker away), whatever rumqttc still holds, in
    // flight or queued, is not known to have reached the broker.
    if !aborted {
        return;
    }
    eventloop.clean();
    carry.lost(&mut eventloop);
    let left = carry.left() + queue.as_ref().map_or(0, |q| q.abandon());
    if left > 0 {
        losses.stop.fetch_add(left as u64, Ordering::Relaxed);
        tracing::warn!(%broker, connection = role, dropped = left, "publishes not sent before the stop (counted in publishes_dropped_stop)");
    }
}

/// Tells the acker, when the connection task ends, that its connection is gone.
struct OwedAtExit(std::sync::Arc<Acker>);

impl Drop for OwedAtExit {
    fn drop(&mut self) {
        self.0.connection_lost();
    }
}

/// Completes when PUBACKs are ready to be written (never, without manual acks).
fn wait_for_acks(acks: &Option<std::sync::Arc<Acker>>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    match acks.clone() {
        Some(acks) => Box::pin(async move { acks.ready().await }),
        None => Box::pin(std::future::pending()),
    }
}

/// Writes every PUBACK that is ready, in order, with one flush: the client
/// would write and flush each on its own. A failure drops the connection (the
/// broker sends the unacknowledged messages again); the caller handles it as
/// any connection error.
async fn write_acks(
    eventloop: &mut EventLoop,
    acks: Option<&Acker>,
    batch: &mut Vec<u16>,
) -> Result<(), ConnectionError> {
    let Some(acks) = acks else { return Ok(()) };
    acks.take_ready(batch);
    let n = batch.len();
    if n == 0 {
        return Ok(());
    }
    let timeout = Duration::from_secs(eventloop.network_options.connection_timeout());
    let Some(network) = eventloop.network.as_mut() else {
        // Not connected: these were for a connection already lost.
        acks.not_written(n);
        batch.clear();
        return Ok(());
    };
    let written = async {
        for pkid in batch.drain(..) {
            network.write(Packet::PubAck(PubAck::new(pkid))).await?;
        }
        network.flush().await
    };
    let result = match tokio::time::timeout(timeout, written).await {
        Ok(Ok(())) => {
            acks.written(n);
            return Ok(());
        }
        Ok(Err(e)) => ConnectionError::MqttState(e),
        Err(_) => ConnectionError::FlushTimeout,
    };
    batch.clear();
    acks.not_written(n);
    eventloop.clean();
    Err(result)
}

/// The broker answered a persistent connect without our session: what it
/// queued for us while we were away, if anything, is gone. After a reconnect of
/// this process that is a broker losing state (restarted without persistence,
/// or the session expired); on the first connect it may just be the first start.
fn session_not_kept(broker: &str, role: &str, reconnect: bool) {
    if reconnect {
        tracing::warn!(%broker, connection = role,
            "the broker kept no session for us: messages published while we were away are lost at the broker \
             (give it persistence and a queue: README, \"What a device's reading gets\"); subscribing again");
    } else {
        tracing::info!(%broker, connection = role, "the broker holds no session for us (first start, or it lost it)");
    }
}

/// Queues a SUBSCRIBE for `filters` (at QoS 1) and remembers them for its SUBACK.
fn subscribe(client: &AsyncClient, filters: &[String], awaiting: &mut std::collections::VecDeque<Vec<String>>) {
    let request = filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
    match client.try_subscribe_many(request) {
        Ok(()) => awaiting.push_back(filters.to_vec()),
        Err(e) => tracing::error!(error = %e, "could not queue subscriptions"),
    }
}

/// Subscribes what `now` has and `before` had not, and unsubscribes the reverse.
fn change_subscriptions(
    client: &AsyncClient,
    before: &[String],
    now: &[String],
    awaiting: &mut std::collections::VecDeque<Vec<String>>,
) {
    let added: Vec<String> = now.iter().filter(|f| !before.contains(f)).cloned().collect();
    if !added.is_empty() {
        tracing::info!(filters = ?added, "subscribing");
        subscribe(client, &added, awaiting);
    }
    for filter in before.iter().filter(|f| !now.contains(f)) {
        tracing::info!(%filter, "unsubscribing");
        if let Err(e) = client.try_unsubscribe(filter.clone()) {
            tracing::error!(%filter, error = %e, "could not queue an unsubscribe");
        }
    }
}

/// Applies a new phase; true when the task must end now.
fn ends<H: Handler>(now: Phase, handler: &mut Option<H>) -> bool {
    match now {
        Phase::Abort => return true,
        Phase::IntakeStopped => {
            if let Some(mut handler) = handler.take() {
                handler.caught_up();
            }
        }
        Phase::Running => {}
    }
    false
}

/// Waits for the phase to change and returns the new one (`Abort` once the
/// handle is gone), with the receiver for the next wait.
async fn next_phase(mut phase: watch::Receiver<Phase>) -> (Phase, watch::Receiver<Phase>) {
    let now = match phase.changed().await {
        Ok(()) => *phase.borrow_and_update(),
        Err(_) => Phase::Abort,
    };
    (now, phase)
}

fn announce_online(client: &AsyncClient, status_topic: Option<&str>, ready: &watch::Sender<bool>) {
    if let Some(status_topic) = status_topic {
        if let Err(e) = client.try_publish(status_topic, QoS::AtLeastOnce, true, "online") {
            tracing::warn!(error = %e, "could not queue online status");
        }
        tracing::info!("subscribed; gateway ready");
    }
    ready.send_replace(true);
}

/// A random number in `[0, 1)` for backoff jitter, from std's randomly keyed hasher.
pub fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Subscriptions that change while a connect waits for its CONNACK are
    /// subscribed on that connection: the connect is not cut short and redone
    /// (a connection the broker saw, lost for nothing).
    #[tokio::test]
    async fn subscriptions_changed_during_a_connect_are_subscribed_on_that_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (client, eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("test", "127.0.0.1", port), 10);
        let (wanted, subscriptions) = watch::channel(vec!["before/+".to_owned()]);
        let (handle, _events, task) = drive(Drive {
            role: "test",
            eventloop,
            client,
            subscriptions,
            status_topic: None,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(10)),
            acks: None,
            losses: Default::default(),
            link: Default::default(),
            handler: NoIntake,
            queue: None,
        });
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0 && buf[0] >> 4 == 1, "expected CONNECT, read {:?}", &buf[..n]);
        // The change and the CONNACK are both waiting when the task next runs.
        wanted.send_replace(vec!["after/+".to_owned()]);
        socket.write_all(&[0x20, 2, 0, 0]).await.unwrap();
        let n = socket.read(&mut buf).await.unwrap_or(0);
        assert!(n > 0, "the connection was closed after its CONNACK");
        assert_eq!(buf[0] >> 4, 8, "expected SUBSCRIBE, read {:?}", &buf[..n]);
        let packet = String::from_utf8_lossy(&buf[..n]);
        assert!(packet.contains("after/+") && !packet.contains("before/+"), "{packet:?}");
        handle.abort();
        task.await.unwrap();
    }

    /// Reads one MQTT packet off `socket`: its type and its body.
    async fn packet(socket: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
        let kind = socket.read_u8().await.unwrap() >> 4;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = socket.read_u8().await.unwrap();
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        socket.read_exact(&mut body).await.unwrap();
        (kind, body)
    }

    /// More QoS 0 publishes queued at once than the in-flight window holds all
    /// go out at once: none waits for a later publish or a keepalive to wake the
    /// connection (QoS 0 brings no acknowledgement that would; the outgoing
    /// events rumqttc keeps for what was written bring the task round again).
    #[tokio::test]
    async fn a_burst_of_qos0_publishes_larger_than_the_window_all_go_out_without_a_later_wake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut options = rumqttc::MqttOptions::new("test", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(60)).set_inflight(10);
        let (client, eventloop) = AsyncClient::new(options, 10);
        let queue = OutputQueue::new(1_000);
        let (handle, _events, task) = drive(Drive {
            role: "test",
            eventloop,
            client,
            subscriptions: watch::channel(Vec::new()).1,
            status_topic: None,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(10)),
            acks: None,
            losses: Default::default(),
            link: Default::default(),
            handler: NoIntake,
            queue: Some(queue.clone()),
        });
        let (mut socket, _) = listener.accept().await.unwrap();
        assert_eq!(packet(&mut socket).await.0, 1, "expected CONNECT");
        socket.write_all(&[0x20, 2, 0, 0]).await.unwrap();
        let publishes =
            (0..95).map(|i| (rumqttc::Publish::new("t", QoS::AtMostOnce, vec![i as u8]), Default::default()));
        let pusher = std::thread::spawn(move || queue.push_all(publishes));
        // Waits for each: a task that took only one window would leave the 11th
        // for the keepalive, a minute away, and the test would time out.
        let mut seen = 0;
        while seen < 95 {
            let (kind, _) = tokio::time::timeout(Duration::from_secs(30), packet(&mut socket))
                .await
                .unwrap_or_else(|_| panic!("stalled after {seen} of 95 publishes"));
            if kind == 3 {
                seen += 1;
            }
        }
        assert_eq!(pusher.join().unwrap(), 0);
        handle.abort();
        task.await.unwrap();
    }
}
