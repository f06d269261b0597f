//! The MQTT routing table: which functions a topic triggers (their topic
//! triggers; timers are the timer source's),
//! which device it comes from (or whose availability it tells), which upstream streams it is forwarded to. Built
//! from the configuration and the registry, immutable once built: a change
//! builds a new table and the dispatcher swaps it in between two messages.

use std::sync::Arc;

use crate::config::{Announcements, Device, FunctionSpec, GatewayConfig, PayloadFormat};
use crate::topic::{minimal_subscriptions, Router, TopicFilter};

/// Where a matched trigger sends its event.
#[derive(Debug, Clone)]
pub struct Target {
    pub function: Arc<str>,
    /// The topic trigger that matched, as written.
    pub trigger: Arc<str>,
}

pub struct Routes {
    /// Trigger filters -> index into `targets`.
    pub functions: Router<usize>,
    pub targets: Vec<Target>,
    /// Telemetry filters -> device index.
    pub devices: Router<usize>,
    pub device_ids: Vec<Arc<str>>,
    pub device_formats: Vec<PayloadFormat>,
    /// Each device's profile, if it has one: it reads the device's payloads.
    pub device_profiles: Vec<Option<Arc<crate::profile::Profile>>>,
    /// Availability topics -> device index.
    pub announcers: Router<usize>,
    /// How each device's availability payloads read (`None`: it has no topic).
    pub device_payloads: Vec<Option<Announcements>>,
    /// Forwarded topics -> stream index.
    pub forwards: Router<usize>,
    pub forward_streams: Vec<Arc<str>>,
    /// The broker subscriptions that cover every trigger and forward, without overlap.
    pub subscriptions: Vec<String>,
}

impl Routes {
    /// The table for `functions` (each with its name, as the registry holds
    /// it) and `devices` (the configured ones and those discovered).
    pub fn build<'a>(
        config: &GatewayConfig,
        devices: &[Device],
        functions: impl Iterator<Item = (&'a Arc<str>, &'a FunctionSpec)>,
    ) -> Routes {
        let functions: Vec<_> = functions.collect();
        let mut routes = Router::new();
        let mut targets = Vec::new();
        for (name, spec) in &functions {
            for filter in spec.triggers.iter().filter_map(|t| t.topic()) {
                routes.insert(filter, targets.len());
                targets.push(Target { function: Arc::clone(name), trigger: Arc::from(filter.as_str()) });
            }
        }
        let mut telemetry = Router::new();
        for (d, device) in devices.iter().enumerate() {
            for filter in &device.telemetry {
                telemetry.insert(filter, d);
            }
        }
        let mut announcers = Router::new();
        for (d, device) in devices.iter().enumerate() {
            if let Some(a) = &device.availability {
                announcers.insert(&a.topic, d);
            }
        }
        let mut forwards = Router::new();
        let mut forward_streams = Vec::new();
        for (i, f) in config.upstream.iter().flat_map(|u| &u.forward).enumerate() {
            for filter in &f.topics {
                forwards.insert(filter, i);
            }
            forward_streams.push(Arc::from(f.stream.as_str()));
        }
        // Home Assistant's discovery prefix, where devices announce themselves.
        let discovery: Vec<TopicFilter> = config
            .homeassistant
            .iter()
            .filter(|h| h.discovery)
            .flat_map(|h| crate::profile::homeassistant::subscriptions(&h.prefix))
            .filter_map(|f| TopicFilter::parse(&f).ok())
            .collect();
        let subscriptions = minimal_subscriptions(
            functions
                .iter()
                .flat_map(|(_, spec)| spec.triggers.iter().filter_map(|t| t.topic()))
                .chain(config.upstream.iter().flat_map(|u| u.forward.iter().flat_map(|f| &f.topics)))
                // Every device's topics: they tell when it was last seen.
                .chain(devices.iter().flat_map(|d| d.telemetry.iter().chain(d.availability.iter().map(|a| &a.topic))))
                .chain(&discovery),
        )
        .into_iter()
        .map(|f| f.as_str().to_owned())
        .collect();
        Routes {
            functions: routes,
            targets,
            devices: telemetry,
            device_ids: devices.iter().map(|d| Arc::from(d.id.as_str())).collect(),
            device_formats: devices.iter().map(|d| d.format).collect(),
            device_profiles: devices.iter().map(|d| d.profile.clone().map(Arc::new)).collect(),
            announcers,
            device_payloads: devices.iter().map(|d| d.availability.as_ref().map(|a| a.payloads.clone())).collect(),
            forwards,
            forward_streams,
            subscriptions,
        }
    }
}
