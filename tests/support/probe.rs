//! An MQTT client for tests: publishes as a device would and collects what
//! arrives on the topics it watches.

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long a test waits for an expected message before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// A message the probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
}

pub struct Probe {
    client: Client,
    messages: Receiver<Message>,
}

impl Probe {
    /// Connects to the broker on `port` (retrying until it accepts) and
    /// subscribes to `filters` after every connect.
    pub fn connect(port: u16, name: &str, filters: &[&str]) -> Probe {
        Self::connect_with(port, name, filters, true)
    }

    /// Like `connect`, with a persistent session: the broker keeps the
    /// subscriptions and queues messages while the probe is away.
    pub fn connect_persistent(port: u16, name: &str, filters: &[&str]) -> Probe {
        Self::connect_with(port, name, filters, false)
    }

    fn connect_with(port: u16, name: &str, filters: &[&str], clean: bool) -> Probe {
        let mut options = MqttOptions::new(name, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5)).set_clean_session(clean).set_max_packet_size(1 << 24, 1 << 24);
        let (client, mut connection) = Client::new(options, 1_000);
        // As the gateway's own connections: a lone message must not wait for Nagle.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        connection.eventloop.set_network_options(network);
        let (tx, messages) = mpsc::channel();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let subscriber = client.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            subscriber.try_subscribe(f.clone(), QoS::AtLeastOnce).unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    // The broker may not be listening yet: rumqttc reconnects on the
                    // next iteration; this pause only paces those attempts.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Probe { client, messages }
    }

    /// Publishes as a device would, at QoS 1.
    pub fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).unwrap();
    }

    /// Publishes at QoS 0, as a chatty sensor stream would.
    pub fn publish_qos0(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtMostOnce, false, payload.as_bytes().to_vec()).unwrap();
    }

    /// Publishes a retained message at QoS 1, as a device announcing its state would.
    pub fn publish_retained(&self, topic: &str, payload: &[u8]) {
        self.client.publish(topic, QoS::AtLeastOnce, true, payload.to_vec()).unwrap();
    }

    /// Waits for the next message matching `pred`, returning every message
    /// received before it (those that did not match) and the match.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Message) -> bool) -> (Vec<Message>, Message) {
        let deadline = Instant::now() + WAIT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m) if pred(&m) => return (before, m),
                Ok(m) => before.push(m),
                Err(_) => panic!("waited {WAIT:?} for {what}; received meanwhile: {before:?}"),
            }
        }
    }

    /// The next message, if one arrives within `within`.
    pub fn next_within(&self, within: Duration) -> Option<Message> {
        self.messages.recv_timeout(within).ok()
    }

    /// Waits until the probe's subscription covering `topic` is in place, by
    /// publishing to `topic` until its own message comes back.
    pub fn wait_subscribed(&self, topic: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.publish(topic, "?");
            if let Ok(m) = self.messages.recv_timeout(Duration::from_millis(200)) {
                if m.topic == topic {
                    return;
                }
            }
        }
        panic!("the subscription covering {topic} never took effect");
    }

    /// Waits until the gateway's retained status says `online`.
    pub fn wait_online(&self, gateway_id: &str) {
        let topic = format!("edgefn/{gateway_id}/status");
        self.wait_for("the gateway to come online", |m| m.topic == topic && m.payload == "online");
    }

    /// Disconnects cleanly and waits until the connection thread has finished,
    /// so that the broker has seen the DISCONNECT.
    pub fn disconnect(self) {
        let _ = self.client.disconnect();
        // The channel closes when the connection thread ends.
        while self.messages.recv_timeout(WAIT).is_ok() {}
    }

    /// Every message that arrives within the next `WAIT`, until `done` says enough.
    pub fn collect_until(&self, what: &str, mut done: impl FnMut(&Message) -> bool) {
        let deadline = Instant::now() + WAIT * 4;
        loop {
            match self.messages.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) if done(&m) => return,
                Ok(_) => {}
                Err(_) => panic!("waited {:?} for {what}", WAIT * 4),
            }
        }
    }
}
