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
        let mut options = MqttOptions::new(name, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 1_000);
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

    /// Waits until the gateway's retained status says `online`.
    pub fn wait_online(&self, gateway_id: &str) {
        let topic = format!("edgefn/{gateway_id}/status");
        self.wait_for("the gateway to come online", |m| m.topic == topic && m.payload == "online");
    }

    pub fn disconnect(self) {
        let _ = self.client.disconnect();
    }
}
