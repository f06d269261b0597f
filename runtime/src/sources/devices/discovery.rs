//! Home Assistant discovery, the shell: the MQTT dispatcher hands it each
//! message on the discovery prefix, it keeps what was announced
//! ([`Discovered`], pure) and tells the gateway when the devices announced
//! changed; the gateway then routes them like configured ones.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::config::Device;
use crate::profile::homeassistant::{Discovered, Learnt};

pub struct Discovery {
    prefix: String,
    found: Mutex<Found>,
    /// Bumped at each change of the devices announced.
    changed: watch::Sender<u64>,
}

struct Found {
    discovered: Discovered,
    /// Announcements refused, for the pace of their log line.
    refused: u64,
}

impl Discovery {
    /// Reads announcements on `prefix`, but the gateway's own.
    pub fn new(prefix: &str, gateway_id: &str) -> Discovery {
        Discovery {
            prefix: prefix.to_owned(),
            found: Mutex::new(Found { discovered: Discovered::new(gateway_id), refused: 0 }),
            changed: watch::channel(0).0,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `topic` is on the discovery prefix.
    pub fn covers(&self, topic: &str) -> bool {
        topic.strip_prefix(self.prefix.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }

    /// One message on the discovery prefix (the dispatcher, on the I/O
    /// thread: no I/O here); false when it was refused.
    pub fn learn(&self, topic: &str, payload: &[u8]) -> bool {
        let mut found = crate::sync::lock(&self.found);
        match found.discovered.learn(&self.prefix, topic, payload) {
            Learnt::Changed => {
                self.changed.send_modify(|n| *n += 1);
                true
            }
            Learnt::Same => true,
            Learnt::Refused(why) => {
                found.refused += 1;
                if found.refused % 100 == 1 {
                    tracing::warn!(
                        topic,
                        refused = found.refused,
                        "Home Assistant discovery message not taken: {why} (counted in device_unreadable)"
                    );
                }
                false
            }
        }
    }

    /// The devices announced, but those a configured device's id shadows.
    pub fn devices(&self, configured: &[Device]) -> (Vec<Device>, Vec<String>) {
        crate::sync::lock(&self.found).discovered.devices(configured)
    }

    /// Changes whenever the devices announced do; seen as changed at once,
    /// for what was announced before it was made.
    pub fn watch(&self) -> watch::Receiver<u64> {
        let mut watch = self.changed.subscribe();
        watch.mark_changed();
        watch
    }
}

/// Announces `messages` (topic, payload), retained, each time the intake
/// connection is ready (subscribed), so a broker that lost its retained
/// messages has them again. Ends with the connection.
pub fn announce(client: rumqttc::AsyncClient, mut ready: watch::Receiver<bool>, messages: Vec<(String, Vec<u8>)>) {
    tokio::spawn(async move {
        loop {
            if ready.wait_for(|r| *r).await.is_err() {
                return;
            }
            for (topic, payload) in &messages {
                if let Err(e) = client.publish(topic.as_str(), rumqttc::QoS::AtLeastOnce, true, payload.clone()).await {
                    tracing::warn!(%topic, error = %e, "Home Assistant announcement not queued");
                }
            }
            tracing::info!(values = messages.len(), "values announced for Home Assistant discovery");
            if ready.wait_for(|r| !*r).await.is_err() {
                return;
            }
        }
    });
}
