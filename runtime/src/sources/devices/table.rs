//! Which devices are online: the pure core of the availability source. What
//! the devices said and when the gateway last heard them go in, with the time;
//! the changes a function may be told about come out. No I/O, no clock.
//!
//! The rules (README, "Device availability"):
//! - A device with an `availability` topic is what its last announcement
//!   there says (its own retained message, or the last will the broker sends
//!   for it). Its other traffic only tells when it was last seen.
//! - A device without one is online from its first message.
//! - With `offline_after`, a device not heard for that long is offline, and
//!   its next message (or announcement) brings it back. A device never heard
//!   counts from when the gateway started listening.
//! - While the gateway's own link to the broker is down, silence means nothing:
//!   no device goes offline for it, and the time without a link is not counted.
//! - A change from unknown is a change too: a function triggered on
//!   availability learns each device's first known state.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Announcements, Device};

/// What an availability payload says: online (`true`), offline, or nothing
/// this gateway understands (`None`). With the device's own payloads
/// configured, exactly those; else, trimmed and in any case, the forms the
/// projects publish: `online`/`offline` (Zigbee2MQTT, ESPHome, Tasmota's
/// `Online`/`Offline`, Home Assistant's default), `true`/`false` (Shelly),
/// `1`/`0`, and Zigbee2MQTT's JSON `{"state":"online"}`.
pub fn announcement(payload: &[u8], said: &Announcements) -> Option<bool> {
    if let Announcements::Exactly { online, offline } = said {
        return match payload {
            p if p == online.as_bytes() => Some(true),
            p if p == offline.as_bytes() => Some(false),
            _ => None,
        };
    }
    let text = std::str::from_utf8(payload).ok()?.trim();
    let word = |w: &str| match w.to_ascii_lowercase().as_str() {
        "online" | "true" | "1" => Some(true),
        "offline" | "false" | "0" => Some(false),
        _ => None,
    };
    if text.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Json<'a> {
            #[serde(borrow)]
            state: std::borrow::Cow<'a, str>,
        }
        return serde_json::from_str::<Json>(text).ok().and_then(|j| word(&j.state));
    }
    word(text)
}

/// What the gateway knows of a device's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing heard yet that decides it.
    Unknown,
    Online,
    Offline,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::Offline => "offline",
        }
    }
}

/// Something heard from or about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A message on one of its telemetry topics.
    Traffic,
    /// Its availability topic said online (`true`) or offline.
    Announced(bool),
}

/// A device's availability changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub device: Arc<str>,
    pub online: bool,
    /// When it changed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One line of `edgefn devices`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRow {
    pub id: String,
    pub state: State,
    /// Since when it is in that state (ms since the epoch); absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// When a message of its own last arrived (telemetry, or its availability
    /// topic saying online); absent when never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Messages heard from it since the gateway started.
    pub messages: u64,
    /// Of those, how many could not be read (by its profile, or on its
    /// availability topic).
    #[serde(default)]
    pub unreadable: u64,
    /// The last value of each field its profile read (`device_reading`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

#[derive(Debug)]
struct Entry {
    /// Whether it has an availability topic: then its announcements decide.
    announces: bool,
    offline_after_ms: Option<u64>,
    state: State,
    since_ms: Option<u64>,
    last_seen_ms: Option<u64>,
    messages: u64,
    /// What its availability topic last said.
    announced: Option<bool>,
    unreadable: u64,
}

impl Entry {
    /// When silence makes it offline, if it can: counted from its last
    /// message, or from when the gateway began listening when that is later.
    fn deadline(&self, listening_since_ms: u64) -> Option<u64> {
        let after = self.offline_after_ms?;
        if self.state == State::Offline {
            return None;
        }
        Some(self.last_seen_ms.unwrap_or(0).max(listening_since_ms).saturating_add(after))
    }

    fn change_to(&mut self, id: &Arc<str>, next: State, now_ms: u64) -> Option<Change> {
        if next == self.state {
            return None;
        }
        self.state = next;
        self.since_ms = Some(now_ms);
        Some(Change { device: id.clone(), online: next == State::Online, at_ms: now_ms })
    }
}

/// Every configured device's availability.
#[derive(Debug)]
pub struct Table {
    entries: HashMap<Arc<str>, Entry>,
    /// The devices in configuration order, for the rows.
    order: Vec<Arc<str>>,
    /// Since when the gateway hears the broker; `None` while the link is down.
    listening_since_ms: Option<u64>,
}

impl Table {
    /// A table for `devices`; the link to the broker is down until [`Table::link`] says otherwise.
    pub fn new(devices: &[Device]) -> Table {
        let mut table = Table { entries: HashMap::new(), order: Vec::new(), listening_since_ms: None };
        table.set_devices(devices);
        table
    }

    /// The devices of a reloaded configuration: those kept keep what is known
    /// of them, new ones start unknown, removed ones are forgotten.
    pub fn set_devices(&mut self, devices: &[Device]) {
        let mut entries = HashMap::with_capacity(devices.len());
        for device in devices {
            let (id, mut entry) = match self.entries.remove_entry(device.id.as_str()) {
                Some(kept) => kept,
                None => (
                    Arc::from(device.id.as_str()),
                    Entry {
                        announces: false,
                        offline_after_ms: None,
                        state: State::Unknown,
                        since_ms: None,
                        last_seen_ms: None,
                        messages: 0,
                        announced: None,
                        unreadable: 0,
                    },
                ),
            };
            entry.announces = device.availability.is_some();
            entry.offline_after_ms = device.offline_after.map(|d| d.as_millis() as u64);
            entries.insert(id, entry);
        }
        self.order =
            devices.iter().filter_map(|d| entries.get_key_value(d.id.as_str()).map(|(k, _)| k.clone())).collect();
        self.entries = entries;
    }

    /// The gateway's link to the broker came up (`true`) or went down.
    pub fn link(&mut self, up: bool, now_ms: u64) {
        self.listening_since_ms = match (up, self.listening_since_ms) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(now_ms),
            (false, _) => None,
        };
    }

    /// Something was heard from or about `device` at `now_ms`: the change it
    /// makes, if any. An unknown device is ignored.
    pub fn heard(&mut self, device: &str, heard: Heard, now_ms: u64) -> Option<Change> {
        let id = self.entries.get_key_value(device)?.0.clone();
        let entry = self.entries.get_mut(device)?;
        let next = match heard {
            Heard::Traffic => {
                entry.messages += 1;
                entry.last_seen_ms = Some(now_ms);
                match (entry.announces, entry.state) {
                    // Its announcements decide; but one gone offline for its
                    // silence, not by saying so, is back.
                    (true, State::Offline) if entry.announced != Some(false) => State::Online,
                    (true, state) => state,
                    (false, _) => State::Online,
                }
            }
            Heard::Announced(online) => {
                entry.messages += 1;
                if online {
                    entry.last_seen_ms = Some(now_ms);
                }
                if online {
                    State::Online
                } else {
                    State::Offline
                }
            }
        };
        entry.announced = match heard {
            Heard::Announced(online) => Some(online),
            Heard::Traffic => entry.announced,
        };
        entry.change_to(&id, next, now_ms)
    }

    /// Counts a payload from or about `device` that could not be read.
    pub fn unreadable(&mut self, device: &str) {
        if let Some(e) = self.entries.get_mut(device) {
            e.unreadable += 1;
        }
    }

    /// Devices not heard for their `offline_after` by `now_ms` go offline.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Change> {
        let Some(listening) = self.listening_since_ms else { return Vec::new() };
        let mut changes = Vec::new();
        for id in &self.order {
            let Some(entry) = self.entries.get_mut(id) else { continue };
            if let Some(deadline) = entry.deadline(listening) {
                if now_ms >= deadline {
                    changes.extend(entry.change_to(id, State::Offline, now_ms));
                }
            }
        }
        changes
    }

    /// When [`Table::expire`] next has something to do; `None`: never until
    /// something is heard or the link comes up.
    pub fn next_deadline(&self) -> Option<u64> {
        let listening = self.listening_since_ms?;
        self.entries.values().filter_map(|e| e.deadline(listening)).min()
    }

    /// Every device, in configuration order.
    pub fn rows(&self) -> Vec<DeviceRow> {
        self.order
            .iter()
            .filter_map(|id| {
                let e = self.entries.get(id)?;
                Some(DeviceRow {
                    id: id.to_string(),
                    state: e.state,
                    since_ms: e.since_ms,
                    last_seen_ms: e.last_seen_ms,
                    messages: e.messages,
                    unreadable: e.unreadable,
                    values: None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AvailabilityTopic, PayloadFormat};
    use std::time::Duration;

    fn device(id: &str, announces: bool, offline_after_ms: Option<u64>) -> Device {
        Device {
            id: id.into(),
            telemetry: Vec::new(),
            command_topic: None,
            format: PayloadFormat::Json,
            availability: announces.then(|| AvailabilityTopic {
                topic: crate::topic::TopicFilter::parse(&format!("tele/{id}/LWT")).unwrap(),
                payloads: Announcements::Usual,
            }),
            offline_after: offline_after_ms.map(Duration::from_millis),
            profile: None,
        }
    }

    fn change(id: &str, online: bool, at_ms: u64) -> Option<Change> {
        Some(Change { device: id.into(), online, at_ms })
    }

    #[test]
    fn the_usual_payloads_of_each_project_are_understood_and_nothing_else_is() {
        let usual = Announcements::Usual;
        for (payload, said) in [
            ("online", Some(true)),
            ("Offline", Some(false)),
            (" Online\n", Some(true)),
            ("true", Some(true)),
            ("false", Some(false)),
            ("1", Some(true)),
            ("0", Some(false)),
            (r#"{"state":"online"}"#, Some(true)),
            (r#"{"state":"offline","extra":1}"#, Some(false)),
            (r#"{"state":3}"#, None),
            ("maybe", None),
            ("", None),
        ] {
            assert_eq!(announcement(payload.as_bytes(), &usual), said, "{payload:?}");
        }
        assert_eq!(announcement(&[0xff, 0xfe], &usual), None);
        let own = Announcements::Exactly { online: "up".into(), offline: "down".into() };
        assert_eq!(announcement(b"up", &own), Some(true));
        assert_eq!(announcement(b"down", &own), Some(false));
        assert_eq!(announcement(b"online", &own), None, "only the configured payloads");
    }

    #[test]
    fn a_device_without_an_availability_topic_is_online_from_its_first_message() {
        let mut table = Table::new(&[device("s", false, None)]);
        table.link(true, 0);
        assert_eq!(table.rows()[0].state, State::Unknown);
        assert_eq!(table.heard("s", Heard::Traffic, 10), change("s", true, 10));
        assert_eq!(table.heard("s", Heard::Traffic, 20), None, "no change, no event");
        let row = &table.rows()[0];
        assert_eq!((row.state, row.since_ms, row.last_seen_ms, row.messages), (State::Online, Some(10), Some(20), 2));
        assert_eq!(table.next_deadline(), None, "without offline_after, silence decides nothing");
    }

    #[test]
    fn a_device_with_a_topic_is_what_it_last_announced_and_its_traffic_only_tells_last_seen() {
        let mut table = Table::new(&[device("plug", true, None)]);
        table.link(true, 0);
        assert_eq!(table.heard("plug", Heard::Traffic, 5), None, "traffic does not decide for it");
        assert_eq!(table.rows()[0].state, State::Unknown);
        assert_eq!(table.heard("plug", Heard::Announced(true), 10), change("plug", true, 10));
        assert_eq!(table.heard("plug", Heard::Announced(true), 11), None, "a retained repeat is no change");
        assert_eq!(table.heard("plug", Heard::Announced(false), 20), change("plug", false, 20));
        assert_eq!(table.heard("plug", Heard::Traffic, 30), None, "said offline: stays so until it says online");
        let row = &table.rows()[0];
        assert_eq!(row.last_seen_ms, Some(30), "the last will is the broker's, not the device's: not seen at 20");
        assert_eq!(table.heard("plug", Heard::Announced(true), 40), change("plug", true, 40));
    }

    #[test]
    fn silence_past_offline_after_makes_a_device_offline_and_its_next_message_brings_it_back() {
        let mut table = Table::new(&[device("s", false, Some(1_000))]);
        table.link(true, 0);
        assert_eq!(table.next_deadline(), Some(1_000), "never heard: counted from when the gateway began listening");
        assert_eq!(table.heard("s", Heard::Traffic, 500), change("s", true, 500));
        assert_eq!(table.next_deadline(), Some(1_500));
        assert_eq!(table.expire(1_499), vec![]);
        assert_eq!(table.expire(1_500), vec![Change { device: "s".into(), online: false, at_ms: 1_500 }]);
        assert_eq!(table.next_deadline(), None, "offline: nothing more to expire");
        assert_eq!(table.expire(9_000), vec![], "once");
        assert_eq!(table.heard("s", Heard::Traffic, 9_100), change("s", true, 9_100));
    }

    #[test]
    fn a_device_never_heard_goes_from_unknown_to_offline_after_its_silence() {
        let mut table = Table::new(&[device("s", true, Some(1_000))]);
        table.link(true, 100);
        assert_eq!(table.expire(1_100), vec![Change { device: "s".into(), online: false, at_ms: 1_100 }]);
    }

    #[test]
    fn a_device_that_announced_online_then_fell_silent_is_back_with_its_next_message() {
        let mut table = Table::new(&[device("z", true, Some(1_000))]);
        table.link(true, 0);
        table.heard("z", Heard::Announced(true), 0);
        assert_eq!(table.expire(1_000).len(), 1);
        assert_eq!(
            table.heard("z", Heard::Traffic, 1_200),
            change("z", true, 1_200),
            "offline by silence, not by saying so"
        );
    }

    #[test]
    fn while_the_gateway_hears_nothing_no_device_goes_offline_for_its_silence() {
        let mut table = Table::new(&[device("s", false, Some(1_000))]);
        table.link(true, 0);
        table.heard("s", Heard::Traffic, 0);
        table.link(false, 500);
        assert_eq!(table.next_deadline(), None);
        assert_eq!(table.expire(5_000), vec![], "the link was down: silence means nothing");
        table.link(true, 5_000);
        assert_eq!(table.next_deadline(), Some(6_000), "counted again from the reconnect, not from the last message");
        assert_eq!(table.heard("s", Heard::Traffic, 5_100), None, "still online");
        assert_eq!(table.next_deadline(), Some(6_100));
    }

    #[test]
    fn a_reload_keeps_what_is_known_of_kept_devices_and_forgets_removed_ones() {
        let mut table = Table::new(&[device("a", false, None), device("b", false, None)]);
        table.link(true, 0);
        table.heard("a", Heard::Traffic, 10);
        table.heard("b", Heard::Traffic, 10);
        table.set_devices(&[device("c", false, None), device("a", true, None)]);
        let rows = table.rows();
        assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["c", "a"]);
        assert_eq!((rows[1].state, rows[1].messages), (State::Online, 1));
        assert_eq!(table.heard("b", Heard::Traffic, 20), None, "removed: ignored");
        assert_eq!(table.heard("a", Heard::Traffic, 20), None, "now has a topic: traffic no longer decides");
    }
}
