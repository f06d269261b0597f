//! Validating `[[devices]]` and `[[functions]]`: modules, triggers, limits,
//! configuration values and capabilities.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::load::Cx;
use super::model::*;
use super::raw::*;
use crate::builtin;
use crate::topic::{validate_topic_name, TopicFilter};
use crate::trigger::Trigger;

/// Shortest `offline_after`: devices report every few seconds at the fastest.
const MIN_OFFLINE_AFTER: Duration = Duration::from_secs(1);

impl Cx<'_> {
    pub(super) fn devices(&self, raw: &[Spanned<RawDevice>]) -> Result<Vec<Device>, ConfigError> {
        let mut seen = HashSet::new();
        let mut devices = Vec::new();
        for (i, d) in raw.iter().enumerate() {
            let d = d.get_ref();
            let key = |k: &str| format!("devices[{i}].{k}");
            let id = d.id.get_ref().trim().to_owned();
            if id.is_empty() || id.contains(['/', '+', '#']) {
                return Err(self.err(d.id.span(), key("id"), "must be non-empty and hold no '/', '+' or '#'"));
            }
            if !seen.insert(id.clone()) {
                return Err(self.err(
                    d.id.span(),
                    key("id"),
                    format!("{id:?} is used by an earlier device: ids must be unique"),
                ));
            }
            let profile = self.profile(d, &id, &key)?;
            let mut telemetry = d
                .telemetry
                .iter()
                .enumerate()
                .map(|(j, t)| self.filter(t, &key(&format!("telemetry[{j}]"))))
                .collect::<Result<Vec<_>, _>>()?;
            if telemetry.is_empty() {
                // The profile's, from a name checked to hold no wildcard.
                for t in profile.iter().flat_map(|p| p.telemetry()) {
                    telemetry.push(TopicFilter::parse(&t).map_err(|e| {
                        self.err(d.id.span(), key("topic"), format!("makes telemetry topic {t:?}, which {e}"))
                    })?);
                }
            }
            let command_topic = match &d.command_topic {
                Some(t) => {
                    validate_topic_name(t.get_ref())
                        .map_err(|e| self.err(t.span(), key("command_topic"), format!("{:?} {e}", t.get_ref())))?;
                    Some(t.get_ref().clone())
                }
                None => None,
            };
            let format = match d.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
                // A profile reads its own payloads, plain-text ones too.
                None if profile.is_some() => PayloadFormat::Raw,
                None | Some(("json", _)) => PayloadFormat::Json,
                Some(("raw", _)) => PayloadFormat::Raw,
                Some((other, span)) => {
                    return Err(self.err(
                        span,
                        key("format"),
                        format!("{other:?} is not a format: use \"json\" or \"raw\""),
                    ))
                }
            };
            let availability = match &d.availability {
                Some(t) => {
                    validate_topic_name(t.get_ref())
                        .map_err(|e| self.err(t.span(), key("availability"), format!("{:?} {e}", t.get_ref())))?;
                    Some(AvailabilityTopic {
                        topic: self.filter(t, &key("availability"))?,
                        payloads: self.payloads(d, &key)?,
                    })
                }
                None => {
                    if let Some(p) = d.online_payload.as_ref().or(d.offline_payload.as_ref()) {
                        return Err(self.err(
                            p.span(),
                            key(if d.online_payload.is_some() { "online_payload" } else { "offline_payload" }),
                            "applies to an availability topic: set `availability` too",
                        ));
                    }
                    match profile.as_ref().and_then(|p| p.availability()) {
                        Some((topic, payloads)) => Some(AvailabilityTopic {
                            topic: TopicFilter::parse(&topic).map_err(|e| {
                                self.err(
                                    d.id.span(),
                                    key("topic"),
                                    format!("makes availability topic {topic:?}, which {e}"),
                                )
                            })?,
                            payloads,
                        }),
                        None => None,
                    }
                }
            };
            let offline_after = match &d.offline_after {
                None => None,
                Some(raw) => {
                    let after = crate::trigger::parse_duration(raw.get_ref())
                        .map_err(|e| self.err(raw.span(), key("offline_after"), e))?;
                    if after < MIN_OFFLINE_AFTER {
                        return Err(self.err(
                            raw.span(),
                            key("offline_after"),
                            format!("{:?} is shorter than the shortest, 1s", raw.get_ref()),
                        ));
                    }
                    Some(after)
                }
            };
            devices.push(Device { id, telemetry, command_topic, format, availability, offline_after, profile });
        }
        Ok(devices)
    }

    /// A device's `profile`, with its `topic` (the device's name in its
    /// project) and, for `generic`, its `fields` and `commands`.
    fn profile(
        &self,
        d: &RawDevice,
        id: &str,
        key: &dyn Fn(&str) -> String,
    ) -> Result<Option<crate::profile::Profile>, ConfigError> {
        let generic_only = [("fields", d.fields.as_ref()), ("commands", d.commands.as_ref())];
        let given = generic_only.iter().find_map(|(k, t)| t.map(|t| (*k, t)));
        let Some(raw) = &d.profile else {
            if let Some((k, t)) = given {
                return Err(self.err(t.span(), key(k), "applies to profile = \"generic\""));
            }
            if let Some(t) = &d.topic {
                return Err(self.err(
                    t.span(),
                    key("topic"),
                    "names the device in its profile's topics: set `profile` too",
                ));
            }
            return Ok(None);
        };
        let name = raw.get_ref().trim();
        if let Some((k, t)) = given.filter(|_| name != "generic") {
            return Err(self.err(t.span(), key(k), format!("applies to profile = \"generic\", not {name:?}")));
        }
        let table = |t: Option<&Spanned<toml::Table>>, what: &str| -> Result<Vec<(String, String)>, ConfigError> {
            let Some(t) = t else { return Ok(Vec::new()) };
            t.get_ref()
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(v) => Ok((k.clone(), v.to_owned())),
                    None => Err(self.err(t.span(), key(&format!("{what}.{k}")), format!("is {v}: give a string"))),
                })
                .collect()
        };
        let commands = table(d.commands.as_ref(), "commands")?;
        if let Some((action, _)) =
            commands.iter().find(|(a, _)| !["on", "off", "toggle", "brightness"].contains(&a.as_str()))
        {
            let span = d.commands.as_ref().map_or(raw.span(), |c| c.span());
            return Err(self.err(
                span,
                key(&format!("commands.{action}")),
                "is not an action: on, off, toggle or brightness",
            ));
        }
        let generic = crate::profile::Generic {
            command_topic: d.command_topic.as_ref().map(|t| t.get_ref().clone()),
            fields: table(d.fields.as_ref(), "fields")?,
            commands,
        };
        let kind = crate::profile::Kind::parse(name, generic).ok_or_else(|| {
            self.err(
                raw.span(),
                key("profile"),
                format!("{name:?} is not a profile: use one of {}", crate::profile::NAMES.join(", ")),
            )
        })?;
        let (own, span) =
            d.topic.as_ref().map_or((id.to_owned(), d.id.span()), |t| (t.get_ref().trim().to_owned(), t.span()));
        let esphome = matches!(kind, crate::profile::Kind::Esphome);
        let levels = own.split('/').count();
        if own.is_empty()
            || own.contains(['+', '#'])
            || own.split('/').any(str::is_empty)
            || (!esphome && levels > 1)
            || (esphome && levels != 1 && levels != 3)
        {
            let why = if esphome {
                "must be the node's name, or node/<component>/<object id> to name the entity commands go to"
            } else {
                "must be one topic level: no '/', '+' or '#'"
            };
            return Err(self.err(span, key("topic"), format!("{own:?} {why}")));
        }
        Ok(Some(crate::profile::Profile { kind, name: own }))
    }

    /// A device's `online_payload` and `offline_payload`: both or neither, and different.
    fn payloads(&self, d: &RawDevice, key: &dyn Fn(&str) -> String) -> Result<Announcements, ConfigError> {
        match (&d.online_payload, &d.offline_payload) {
            (None, None) => Ok(Announcements::Usual),
            (Some(on), Some(off)) if on.get_ref() == off.get_ref() => Err(self.err(
                off.span(),
                key("offline_payload"),
                format!("{:?} is also the online_payload: they must differ", off.get_ref()),
            )),
            (Some(on), Some(off)) => {
                Ok(Announcements::Exactly { online: on.get_ref().clone(), offline: off.get_ref().clone() })
            }
            (Some(one), None) | (None, Some(one)) => Err(self.err(
                one.span(),
                key(if d.online_payload.is_some() { "online_payload" } else { "offline_payload" }),
                "give both online_payload and offline_payload, or neither (then the usual forms are read: \
                 online/offline, true/false, 1/0, {\"state\":\"online\"})",
            )),
        }
    }

    pub(super) fn functions(
        &self,
        raw: &[Spanned<RawFunction>],
        modules_dir: &Path,
        status_topic: &str,
        devices: &[Device],
        api: bool,
    ) -> Result<Vec<FunctionSpec>, ConfigError> {
        let mut seen = HashSet::new();
        let mut functions: Vec<FunctionSpec> = Vec::new();
        for (i, f) in raw.iter().enumerate() {
            let f = f.get_ref();
            let key = |k: &str| format!("functions[{i}].{k}");
            let name = f.name.get_ref().trim().to_owned();
            if !valid_function_name(&name) {
                return Err(self.err(
                    f.name.span(),
                    key("name"),
                    "must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(self.err(
                    f.name.span(),
                    key("name"),
                    format!("{name:?} is used by an earlier function: names must be unique"),
                ));
            }
            let module = self.module(&f.module, &key("module"), modules_dir)?;
            if f.triggers.get_ref().is_empty() {
                return Err(self.err(
                    f.triggers.span(),
                    key("triggers"),
                    "is empty: list the topic filters (and timers) that run this function",
                ));
            }
            let triggers = f
                .triggers
                .get_ref()
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    let key = key(&format!("triggers[{j}]"));
                    let trigger = Trigger::parse(t.get_ref()).map_err(|e| self.err(t.span(), &key, e))?;
                    if let Some(device) = trigger.availability() {
                        let watched: Vec<&Device> =
                            devices.iter().filter(|d| device == "*" || d.id == device).collect();
                        if device == "*" && self.discovery {
                            // Discovered devices will be watched as they come.
                        } else if watched.is_empty() {
                            return Err(self.err(
                                t.span(),
                                key,
                                format!("availability: no device {device:?} in [[devices]]"),
                            ));
                        } else if !watched.iter().any(|d| d.availability.is_some() || d.offline_after.is_some()) {
                            return Err(self.err(
                                t.span(),
                                key,
                                if device == "*" {
                                    "availability: no device has an availability topic or offline_after, so none can \
                                     ever go offline: give the devices one"
                                        .to_owned()
                                } else {
                                    format!(
                                        "availability: device {device:?} has neither an availability topic nor \
                                         offline_after, so it can never go offline: give it one"
                                    )
                                },
                            ));
                        }
                    }
                    if let Some(route) = trigger.http() {
                        if !api {
                            return Err(self.err(
                                t.span(),
                                key,
                                "http routes are served by the HTTP API: add an [api] section",
                            ));
                        }
                        let earlier = functions.iter().map(|f| (f.name.as_str(), &f.triggers));
                        if let Some(other) = route_taken(route, earlier) {
                            return Err(self.err(
                                t.span(),
                                key,
                                format!("{route} overlaps a route of function {other}"),
                            ));
                        }
                    }
                    Ok(trigger)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut own = triggers.iter().filter_map(Trigger::http);
            while let Some(route) = own.next() {
                if own.clone().any(|r| r.overlaps(route)) {
                    return Err(self.err(
                        f.triggers.span(),
                        key("triggers"),
                        format!("{route} overlaps another of its routes"),
                    ));
                }
            }
            let limits = match &f.limits {
                None => Limits::default(),
                Some(l) => self.limits(l.get_ref(), &key("limits"))?,
            };
            let config = match &f.config {
                None => BTreeMap::new(),
                Some(c) => self.function_config(c, &key("config"))?,
            };
            let allow = self.allow(f.allow.as_ref().map(Spanned::get_ref), &key("allow"), status_topic, devices)?;
            functions.push(FunctionSpec { name, module, triggers, limits, config, allow });
        }
        Ok(functions)
    }

    pub(super) fn allow(
        &self,
        raw: Option<&RawAllow>,
        key: &str,
        status_topic: &str,
        devices: &[Device],
    ) -> Result<Allow, ConfigError> {
        let mut allow = Allow { reserved: vec![status_topic.to_owned()], ..Allow::default() };
        let Some(raw) = raw else { return Ok(allow) };
        if let Some(list) = &raw.publish {
            allow.publish = Vec::new();
            for (j, f) in list.get_ref().iter().enumerate() {
                let k = format!("{key}.publish[{j}]");
                if f.get_ref().starts_with('$') {
                    return Err(self.err(f.span(), k, "functions never publish to $-topics (the broker's own)"));
                }
                allow.publish.push(self.filter(f, &k)?);
            }
        }
        if let Some(list) = &raw.upstream {
            let mut streams = Vec::new();
            for (j, s) in list.get_ref().iter().enumerate() {
                if !crate::outbox::valid_stream(s.get_ref()) {
                    return Err(self.err(
                        s.span(),
                        format!("{key}.upstream[{j}]"),
                        "a stream name is 1 to 64 letters, digits, '-', '_' or '.'",
                    ));
                }
                streams.push(s.get_ref().clone());
            }
            allow.upstream = Some(streams);
        }
        if let Some(list) = &raw.devices {
            self.known_devices(list, &format!("{key}.devices"), devices)?;
            let may = |id: &str| list.get_ref().iter().any(|d| d.get_ref() == id);
            allow.reserved.extend(devices.iter().filter(|d| !may(&d.id)).flat_map(Device::command_topics));
            allow.devices = Some(list.get_ref().iter().map(|d| d.get_ref().clone()).collect());
        }
        if let Some(list) = &raw.read_devices {
            self.known_devices(list, &format!("{key}.read_devices"), devices)?;
            allow.read_devices = Some(list.get_ref().iter().map(|d| d.get_ref().clone()).collect());
        }
        Ok(allow)
    }

    /// Every id in `list` names a configured device.
    fn known_devices(
        &self,
        list: &Spanned<Vec<Spanned<String>>>,
        key: &str,
        devices: &[Device],
    ) -> Result<(), ConfigError> {
        for (j, d) in list.get_ref().iter().enumerate() {
            if !devices.iter().any(|known| known.id == *d.get_ref()) {
                let known: Vec<&str> = devices.iter().map(|k| k.id.as_str()).collect();
                return Err(self.err(
                    d.span(),
                    format!("{key}[{j}]"),
                    format!("there is no [[devices]] {:?} (configured: {})", d.get_ref(), known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn module(
        &self,
        raw: &Spanned<String>,
        key: &str,
        modules_dir: &Path,
    ) -> Result<ModuleSource, ConfigError> {
        let text = raw.get_ref();
        if let Some(name) = text.strip_prefix("builtin:") {
            if builtin::module(name).is_none() {
                let known = builtin::names().join(", ");
                return Err(self.err(
                    raw.span(),
                    key,
                    format!("there is no built-in function {name:?}: built in are {known}"),
                ));
            }
            return Ok(ModuleSource::Builtin(name.to_owned()));
        }
        let path = modules_dir.join(text);
        if !path.is_file() {
            return Err(self.err(
                raw.span(),
                key,
                format!("module file {} does not exist: build it, fix the path (relative to gateway.modules_dir), or use a builtin: module", path.display()),
            ));
        }
        Ok(ModuleSource::File(path))
    }

    pub(super) fn limits(&self, l: &RawLimits, key: &str) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let k = |name: &str| format!("{key}.{name}");
        let invocations_per_s = match &l.invocations_per_s {
            Some(_) => Some(self.int(&l.invocations_per_s, &k("invocations_per_s"), 1, 1, 1_000_000)? as u32),
            None => None,
        };
        Ok(Limits {
            fuel: self.int(&l.fuel, &k("fuel"), d.fuel as i64, 1_000, 10_000_000_000)? as u64,
            memory_bytes: self.int(&l.memory_bytes, &k("memory_bytes"), d.memory_bytes as i64, 64 << 10, 1 << 30)?
                as usize,
            timeout: Duration::from_millis(self.int(
                &l.timeout_ms,
                &k("timeout_ms"),
                d.timeout.as_millis() as i64,
                1,
                600_000,
            )? as u64),
            max_publishes: self.int(&l.max_publishes, &k("max_publishes"), d.max_publishes as i64, 0, 10_000)? as usize,
            max_publish_bytes: self.int(
                &l.max_publish_bytes,
                &k("max_publish_bytes"),
                d.max_publish_bytes as i64,
                0,
                256 << 20,
            )? as usize,
            publish_expiry: match self.int(
                &l.publish_expiry_ms,
                &k("publish_expiry_ms"),
                d.publish_expiry.map_or(0, |e| e.as_millis() as i64),
                0,
                86_400_000,
            )? {
                0 => None,
                ms => Some(Duration::from_millis(ms as u64)),
            },
            state_max_bytes: self.int(
                &l.state_max_bytes,
                &k("state_max_bytes"),
                d.state_max_bytes as i64,
                0,
                64 << 20,
            )? as usize,
            invocations_per_s,
            burst: match &l.burst {
                Some(_) => self.int(&l.burst, &k("burst"), 1, 1, 1_000_000)? as u32,
                // A second's worth.
                None => invocations_per_s.unwrap_or(0),
            },
            log_lines_per_s: self.int(
                &l.log_lines_per_s,
                &k("log_lines_per_s"),
                d.log_lines_per_s as i64,
                0,
                100_000,
            )? as u32,
            quarantine_after: self.int(
                &l.quarantine_after,
                &k("quarantine_after"),
                d.quarantine_after as i64,
                0,
                1_000_000,
            )? as u32,
            instances: self.int(&l.instances, &k("instances"), 1, 1, 16)? as u32,
        })
    }

    pub(super) fn function_config(
        &self,
        raw: &Spanned<toml::Table>,
        key: &str,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        raw.get_ref()
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(x) => x.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(self.err(
                            raw.span(),
                            format!("{key}.{k}"),
                            "must be a string, number or boolean (functions read config values as strings)",
                        ))
                    }
                };
                Ok((k.clone(), text))
            })
            .collect()
    }
}

impl Cx<'_> {
    /// Refuses a deployed `function` whose routes overlap another's of `running`.
    pub(super) fn routes_free(&self, function: &FunctionSpec, running: &[FunctionSpec]) -> Result<(), ConfigError> {
        let others: Vec<_> =
            running.iter().filter(|f| f.name != function.name).map(|f| (f.name.as_str(), &f.triggers)).collect();
        for route in function.triggers.iter().filter_map(Trigger::http) {
            if let Some(other) = route_taken(route, others.iter().copied()) {
                return Err(ConfigError {
                    file: self.file.to_owned(),
                    line: None,
                    key: "triggers".into(),
                    message: format!("{route} overlaps a route of function {other}"),
                });
            }
        }
        Ok(())
    }
}

/// The first of `functions` with a route overlapping `route`, if any.
fn route_taken<'a>(
    route: &crate::sources::http::Route,
    functions: impl Iterator<Item = (&'a str, &'a Vec<Trigger>)>,
) -> Option<&'a str> {
    functions
        .filter(|(_, triggers)| triggers.iter().filter_map(Trigger::http).any(|r| r.overlaps(route)))
        .map(|(name, _)| name)
        .next()
}
