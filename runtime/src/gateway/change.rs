//! Changing the running gateway: a new configuration (a reload), or one
//! function's typed operation (a deploy, a remove, a rollback), planned by the
//! registry, loaded on the blocking pool and carried out in order: installs,
//! the routing table, removals.

use std::sync::Arc;

use super::load::{self, install_all, refuse_if_strict};
use super::operation::{ChangeError, Operation};
use super::stats::Stats;
use super::{command_topics_of, Gateway, Registry, Routes, Step};
use crate::config::GatewayConfig;
use crate::host::FunctionInstance;
use crate::sources::Change;

impl Gateway {
    /// Carries out one operation on one function, on the configuration in
    /// force (not the file on disk: an edit there waits for its reload).
    pub async fn operate(&mut self, op: Operation) -> Result<String, ChangeError> {
        let mut next = self.config.clone();
        match op {
            Operation::Put(spec) => {
                let name = spec.name.clone();
                match next.functions.iter_mut().find(|f| f.name == name) {
                    Some(running) => *running = *spec,
                    None => next.functions.push(*spec),
                }
                self.apply(next, Some(&name)).await
            }
            Operation::Remove(name) => {
                next.functions.retain(|f| f.name != name);
                self.apply(next, None).await
            }
        }
    }

    /// Moves the running gateway to `next`: installs new functions, replaces
    /// changed ones (a new module build, new limits, config or triggers) and
    /// removes those no longer there, while it keeps running. Every job queued
    /// before a replace runs on the old version and every later one on the new;
    /// nothing is lost or run twice. Devices and forward rules change too.
    /// `[gateway]`, `[broker]` and `[upstream]` need a restart: a change there
    /// is refused, and so is any module that fails to load. A refused change
    /// leaves everything as it was.
    /// Only functions whose spec or module bytes changed are compiled and
    /// instantiated, on the blocking pool. `must_load` names a function whose
    /// new version must load (a deploy's) or nothing changes.
    pub async fn apply(&mut self, next: GatewayConfig, must_load: Option<&str>) -> Result<String, ChangeError> {
        let upstream_settings = |c: &GatewayConfig| {
            c.upstream.clone().map(|mut u| {
                u.forward.clear();
                u
            })
        };
        for (section, same) in [
            ("[gateway]", self.config.gateway == next.gateway),
            ("[broker]", self.config.broker == next.broker),
            ("[upstream] settings", upstream_settings(&self.config) == upstream_settings(&next)),
            ("[api]", self.config.api == next.api),
            ("[homeassistant]", self.config.homeassistant == next.homeassistant),
        ] {
            if !same {
                return Err(ChangeError::NeedsRestart { section });
            }
        }
        let running: std::collections::HashMap<String, (crate::config::FunctionSpec, u64)> =
            self.registry.entries().map(|e| (e.name.to_string(), ((*e.spec).clone(), e.digest))).collect();
        let (loader, specs) = (self.loader.clone(), next.functions.clone());
        let loaded = tokio::task::spawn_blocking(move || load::load_changed(&loader, &specs, &running))
            .await
            .map_err(|e| ChangeError::Internal(format!("loading the modules: {e}")))?;
        if let Some((name, e)) = must_load.and_then(|name| loaded.failed.iter().find(|(n, _)| n == name)) {
            return Err(ChangeError::DoesNotLoad { function: name.clone(), error: e.to_string() });
        }
        let failed = refuse_if_strict(&next, &loaded.failed, "not changed")?;
        // A function whose new version does not load keeps running as it was.
        let mut versions: Vec<_> = loaded.instances.iter().map(|(i, digest)| ((**i.spec()).clone(), *digest)).collect();
        versions.extend(loaded.unchanged.iter().cloned());
        for (name, _) in &loaded.failed {
            if let Some(running) = self.registry.get(name) {
                versions.push(((*running.spec).clone(), running.digest));
            }
        }
        let (steps, after) = self.registry.plan(&versions);
        let wanted: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Install { name, .. } | Step::Replace { name, .. } => Some(&**name),
                Step::Remove { .. } => None,
            })
            .collect();
        let instances: Vec<FunctionInstance> =
            loaded.instances.into_iter().map(|(i, _)| i).filter(|i| wanted.contains(&i.spec().name.as_str())).collect();
        // New and replaced instances first (a replacement queues behind the jobs
        // its function has), then the table that sends events to them, then
        // removals (a job racing a removal is counted, not run).
        install_all(&self.scheduler, instances).await?;
        let (discovered, _) = self.discovered(&next);
        self.route(&next, &after, discovered);
        for step in &steps {
            for source in &mut self.sources {
                match step {
                    Step::Install { name } | Step::Replace { name } => {
                        if let Some(entry) = after.get(name) {
                            source.change(Change::Set(&entry.spec));
                        }
                    }
                    Step::Remove { name } => source.change(Change::Remove(name)),
                }
            }
            if let Step::Remove { name } = step {
                self.scheduler.remove(name);
            }
        }
        self.registry = after;
        self.config = next;
        Stats::set(&self.stats.functions_failed, failed as u64);
        Ok(describe_steps(&steps))
    }
}

impl Gateway {
    /// Routes the devices of `config` with those discovered, and the functions
    /// of `registry`: the dispatcher's table and subscriptions, the devices'
    /// availability, the profiles commands go through, the command topics.
    fn route(&self, config: &GatewayConfig, registry: &Registry, discovered: Vec<crate::config::Device>) {
        let mut devices = config.devices.clone();
        devices.extend(discovered);
        let table = Arc::new(Routes::build(config, &devices, registry.entries().map(|e| (&e.name, &*e.spec))));
        self.devices.set_devices(&devices);
        if let Some(directory) = self.loader.devices() {
            directory.set(&devices);
        }
        *crate::sync::write(&self.command_topics) = command_topics_of(&devices);
        let _ = self.routes.send(table.clone());
        self.subscriptions.send_replace(table.subscriptions.clone());
    }

    /// The devices announced for discovery, but those a device of `config`
    /// shadows (their ids, second); none without discovery.
    fn discovered(&self, config: &GatewayConfig) -> (Vec<crate::config::Device>, Vec<String>) {
        self.discovery.as_ref().map(|d| d.devices(&config.devices)).unwrap_or_default()
    }

    /// The devices announced on Home Assistant's discovery prefix changed:
    /// they are routed like configured ones from the next message on.
    pub fn rediscover(&mut self) {
        let (found, shadowed) = self.discovered(&self.config);
        let ids: Vec<String> = found.iter().map(|d| d.id.clone()).collect();
        // Routed first: once the line is logged, the next message finds them.
        self.route(&self.config, &self.registry, found);
        if ids != self.discovered {
            tracing::info!(devices = %ids.join(", "), "devices announced on Home Assistant's discovery prefix");
            for id in shadowed.iter().filter(|id| !self.discovered_shadowed.contains(id)) {
                tracing::warn!(device = %id, "a device announced for discovery has the id of a configured device: the configured one is kept");
            }
            self.discovered = ids;
            self.discovered_shadowed = shadowed;
        }
    }
}

/// "installed a; replaced b; removed c", or "no change".
fn describe_steps(steps: &[Step]) -> String {
    let mut parts = Vec::new();
    for (verb, names) in [
        (
            "installed",
            steps
                .iter()
                .filter_map(|s| if let Step::Install { name, .. } = s { Some(name) } else { None })
                .collect::<Vec<_>>(),
        ),
        (
            "replaced",
            steps.iter().filter_map(|s| if let Step::Replace { name, .. } = s { Some(name) } else { None }).collect(),
        ),
        (
            "removed",
            steps.iter().filter_map(|s| if let Step::Remove { name, .. } = s { Some(name) } else { None }).collect(),
        ),
    ] {
        if !names.is_empty() {
            parts.push(format!("{verb} {}", names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")));
        }
    }
    if parts.is_empty() {
        "no function changed".into()
    } else {
        parts.join("; ")
    }
}
