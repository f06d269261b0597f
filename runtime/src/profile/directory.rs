//! The configured devices' profiles by id, shared by every instance's
//! `command` calls and replaced when a reload changes the devices.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Action, Command, Profile};
use crate::config::Device;

/// The devices a function may command by name.
#[derive(Default)]
pub struct Directory {
    devices: RwLock<HashMap<String, Option<Arc<Profile>>>>,
}

impl Directory {
    pub fn new(devices: &[Device]) -> Directory {
        let directory = Directory::default();
        directory.set(devices);
        directory
    }

    /// The devices of the configuration in force.
    pub fn set(&self, devices: &[Device]) {
        let map = devices.iter().map(|d| (d.id.clone(), d.profile.clone().map(Arc::new))).collect();
        *crate::sync::write(&self.devices) = map;
    }

    /// `action` for `device`, encoded by its profile, or why not.
    pub fn command(&self, device: &str, action: &str) -> Result<Command, String> {
        let action = Action::parse(action)?;
        let profile = match crate::sync::read(&self.devices).get(device) {
            None => return Err(format!("no device {device:?} in [[devices]]")),
            Some(None) => {
                return Err(format!("device {device:?} has no profile: give it one, or publish to its command topic"))
            }
            Some(Some(p)) => p.clone(),
        };
        profile.encode(action).map_err(|e| format!("device {device:?}: {e}"))
    }
}
