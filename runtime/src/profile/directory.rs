//! The configured devices by id: their profiles, which every instance's
//! `command` calls use, and the last value of every field their profiles have
//! read, which `device_reading` returns. Replaced when a reload changes the
//! devices; the last values of the devices kept stay.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Action, Command, Profile, Reading};
use crate::config::Device;

/// Most fields a device's last values hold: a device sending ever new field
/// names (a counter in the name, say) cannot grow the gateway's memory.
pub const MAX_FIELDS: usize = 64;

/// What is known of each configured device.
#[derive(Default)]
pub struct Directory {
    devices: RwLock<HashMap<String, Option<Arc<Profile>>>>,
    last: std::sync::Mutex<HashMap<String, Reading>>,
}

impl Directory {
    pub fn new(devices: &[Device]) -> Directory {
        let directory = Directory::default();
        directory.set(devices);
        directory
    }

    /// The devices of the configuration in force.
    pub fn set(&self, devices: &[Device]) {
        let map: HashMap<_, _> = devices.iter().map(|d| (d.id.clone(), d.profile.clone().map(Arc::new))).collect();
        crate::sync::lock(&self.last).retain(|id, _| map.contains_key(id));
        *crate::sync::write(&self.devices) = map;
    }

    /// Keeps what a device's profile read from it as its last values, field
    /// by field; new fields past [`MAX_FIELDS`] are not kept.
    pub fn remember(&self, device: &str, reading: &Reading) {
        let mut last = crate::sync::lock(&self.last);
        let values = match last.get_mut(device) {
            Some(values) => values,
            None => last.entry(device.to_owned()).or_default(),
        };
        for (name, value) in &reading.0 {
            if values.0.len() < MAX_FIELDS || values.get(name).is_some() {
                values.set(name.clone(), value.clone());
            }
        }
    }

    /// Whether `device` was last seen on (its `on` field), if known.
    pub fn last_on(&self, device: &str) -> Option<bool> {
        match crate::sync::lock(&self.last).get(device)?.get("on")? {
            super::Value::Bool(on) => Some(*on),
            _ => None,
        }
    }

    /// The last value of each field read from `device`, as a flat JSON object.
    pub fn last(&self, device: &str) -> Option<Vec<u8>> {
        crate::sync::lock(&self.last).get(device).map(Reading::to_json)
    }

    /// `action` for `device`, encoded by its profile, or why not.
    pub fn command(&self, device: &str, action: Action) -> Result<Command, String> {
        let profile = match crate::sync::read(&self.devices).get(device) {
            None => return Err(format!("no device {device:?} in [[devices]]")),
            Some(None) => {
                return Err(format!("device {device:?} has no profile: give it one, or publish to its command topic"))
            }
            Some(Some(p)) => p.clone(),
        };
        // Home Assistant's entities take on and off only: a toggle is the
        // opposite of the state last read.
        let action = match (&profile.kind, action, self.last_on(device)) {
            (super::Kind::Homeassistant(_), Action::Toggle, Some(on)) => {
                if on {
                    Action::Off
                } else {
                    Action::On
                }
            }
            _ => action,
        };
        profile.encode(action).map_err(|e| format!("device {device:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Value;

    #[test]
    fn last_values_merge_field_by_field_are_bounded_and_forgotten_with_their_device() {
        let directory = Directory::default();
        let reading =
            |fields: &[(&str, f64)]| Reading(fields.iter().map(|(n, v)| (n.to_string(), Value::Number(*v))).collect());
        directory.remember("climate", &reading(&[("temperature", 22.5), ("humidity", 40.0)]));
        directory.remember("climate", &reading(&[("temperature", 23.0)]));
        assert_eq!(directory.last("climate").unwrap(), br#"{"humidity":40.0,"temperature":23.0}"#);
        assert_eq!(directory.last("fan"), None);
        let many: Vec<(String, f64)> = (0..100).map(|i| (format!("f{i}"), i as f64)).collect();
        let many: Vec<(&str, f64)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        directory.remember("noisy", &reading(&many));
        let kept: serde_json::Value = serde_json::from_slice(&directory.last("noisy").unwrap()).unwrap();
        assert_eq!(kept.as_object().unwrap().len(), MAX_FIELDS);
        directory.set(&[]);
        assert_eq!(directory.last("climate"), None, "a device removed by a reload is forgotten");
    }
}
