//! Turns a raw configuration into a validated [`GatewayConfig`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::model::*;
use super::raw::*;
use crate::builtin;
use crate::topic::{validate_topic_name, TopicFilter};
use crate::trigger::Trigger;

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        key: "(file)".into(),
        message: format!("cannot read it: {e}. Pass the right file with --config FILE."),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError {
            file: path.to_owned(),
            line: Some(line),
            key: "(file)".into(),
            message: format!("is not UTF-8 at byte {at} (0x{:02x}): save the file as UTF-8", e.as_bytes()[at]),
        }
    })?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    parse_str(&text, path, &base)
}

/// Validates configuration text; relative paths are resolved against `base_dir`,
/// itself made absolute first (against the working directory), so every path in
/// the result is absolute: a path the gateway writes back (a deployed module's)
/// reads back the same whatever `--config` looked like.
pub fn parse_str(text: &str, file: &Path, base_dir: &Path) -> Result<GatewayConfig, ConfigError> {
    let base_dir = &std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_owned());
    let cx = Cx { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (key, message) = super::syntax::describe(text, e.span(), e.message());
        ConfigError { file: file.to_owned(), line: e.span().map(|s| cx.line(s.start)), key, message }
    })?;
    let gateway = cx.gateway(&raw.gateway, base_dir)?;
    let broker = cx.broker(raw.broker.as_ref(), &gateway)?;
    let devices = cx.devices(&raw.devices)?;
    let functions = cx.functions(&raw.functions, &gateway.modules_dir, &gateway.status_topic, &devices)?;
    let upstream = match &raw.upstream {
        Some(u) => Some(cx.upstream(u, &gateway, base_dir)?),
        None => None,
    };
    cx.reserve_fits(&raw.gateway, &gateway, upstream.as_ref())?;
    Ok(GatewayConfig { source: file.to_owned(), gateway, broker, devices, functions, upstream })
}

/// What every check needs to point at the offending place.
struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn err(&self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: Some(self.line(span.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An optional integer within `[min, max]`, or `default` when absent.
    fn int(&self, v: &Option<Spanned<i64>>, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if (min..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err(
                s.span(),
                key,
                format!("{} is out of range: use a value from {min} to {max} (default {default})", s.get_ref()),
            )),
        }
    }

    fn gateway(&self, raw: &Spanned<RawGateway>, base_dir: &Path) -> Result<GatewaySettings, ConfigError> {
        let g = raw.get_ref();
        let id = g.id.get_ref().trim();
        if id.is_empty() || id.len() > MAX_GATEWAY_ID || id.contains(['/', '+', '#']) || id.contains(char::is_control) {
            return Err(self.err(
                g.id.span(),
                "gateway.id",
                format!(
                    "must be 1 to {MAX_GATEWAY_ID} bytes with no '/', '+', '#' or control characters: it is used in \
                     topics and MQTT client ids"
                ),
            ));
        }
        let modules_dir = match &g.modules_dir {
            Some(dir) => base_dir.join(dir.get_ref()),
            None => base_dir.to_owned(),
        };
        if modules_dir.exists() && !modules_dir.is_dir() {
            let span = g.modules_dir.as_ref().map_or(raw.span(), Spanned::span);
            return Err(self.err(
                span,
                "gateway.modules_dir",
                format!("{} is not a directory: name the directory modules are kept in", modules_dir.display()),
            ));
        }
        let status_topic = match &g.status_topic {
            Some(t) => {
                validate_topic_name(t.get_ref())
                    .map_err(|e| self.err(t.span(), "gateway.status_topic", format!("{e}")))?;
                t.get_ref().clone()
            }
            None => format!("edgefn/{id}/status"),
        };
        Ok(GatewaySettings {
            id: id.to_owned(),
            workers: self.int(&g.workers, "gateway.workers", default_workers(), 1, 64)? as usize,
            queue_capacity: self.int(&g.queue_capacity, "gateway.queue_capacity", 1024, 1, 1 << 20)? as usize,
            queue_delay: Duration::from_millis(self.int(
                &g.queue_delay_ms,
                "gateway.queue_delay_ms",
                5_000,
                1,
                600_000,
            )? as u64),
            trusted_keys: g
                .trusted_keys
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, k)| match crate::bundle::valid_public_key(k.get_ref()) {
                    true => Ok(k.get_ref().trim().to_owned()),
                    false => Err(self.err(
                        k.span(),
                        format!("gateway.trusted_keys[{i}]"),
                        "is not a public key as `edgefn keygen` writes it (64 hex digits, the KEY.pub file)",
                    )),
                })
                .collect::<Result<_, _>>()?,
            scale_memory_bytes: self.int(&g.scale_memory_bytes, "gateway.scale_memory_bytes", 64 << 20, 0, 4 << 30)?
                as usize,
            spool_max_bytes: self.int(&g.spool_max_bytes, "gateway.spool_max_bytes", 64 << 20, 0, 1 << 40)? as u64,
            min_free_bytes: self.int(&g.min_free_bytes, "gateway.min_free_bytes", 64 << 20, 0, 1 << 40)? as u64,
            max_module_bytes: self.int(
                &g.max_module_bytes,
                "gateway.max_module_bytes",
                crate::host::DEFAULT_MAX_MODULE_BYTES as i64,
                1024,
                256 << 20,
            )? as usize,
            shutdown_grace: Duration::from_millis(self.int(
                &g.shutdown_grace_ms,
                "gateway.shutdown_grace_ms",
                5_000,
                0,
                600_000,
            )? as u64),
            modules_dir,
            status_topic,
            strict: g.strict.as_ref().is_some_and(|s| *s.get_ref()),
            control_socket: g.control_socket.as_ref().map(|p| base_dir.join(p.get_ref())),
        })
    }

    fn broker(&self, raw: Option<&Spanned<RawBroker>>, gateway: &GatewaySettings) -> Result<BrokerConfig, ConfigError> {
        let empty = RawBroker {
            mode: None,
            listen: None,
            host: None,
            port: None,
            client_id: None,
            username: None,
            password: None,
            keep_alive_s: None,
            max_packet_bytes: None,
            reconnect_min_ms: None,
            reconnect_max_ms: None,
            tls: None,
        };
        let b = raw.map(Spanned::get_ref).unwrap_or(&empty);
        let mode = match b.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("external", _)) => BrokerMode::External,
            Some(("embedded", _)) => {
                let listen = b.listen.as_ref().map(|l| (l.get_ref().as_str(), l.span()));
                let (text, span) = listen.unwrap_or(("127.0.0.1:1883", 0..0));
                let addr: SocketAddr = text.parse().map_err(|_| {
                    self.err(
                        span,
                        "broker.listen",
                        format!("{text:?} is not an address: write it as \"127.0.0.1:1883\""),
                    )
                })?;
                BrokerMode::Embedded { listen: addr }
            }
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    "broker.mode",
                    format!("{other:?} is not a mode: use \"external\" or \"embedded\""),
                ))
            }
        };
        if let (BrokerMode::External, Some(l)) = (&mode, &b.listen) {
            return Err(self.err(
                l.span(),
                "broker.listen",
                "only applies to mode = \"embedded\": remove it or set the mode",
            ));
        }
        let tls = match &b.tls {
            None => None,
            Some(t) => Some(self.tls(t)?),
        };
        let host = match (&mode, &b.host) {
            (BrokerMode::Embedded { listen }, _) if listen.ip().is_unspecified() => "127.0.0.1".to_owned(),
            (BrokerMode::Embedded { listen }, _) => listen.ip().to_string(),
            (BrokerMode::External, Some(h)) if super::disk::valid_host(h.get_ref().trim()) => {
                h.get_ref().trim().to_owned()
            }
            (BrokerMode::External, Some(h)) if h.get_ref().trim().is_empty() => {
                return Err(self.err(h.span(), "broker.host", "is empty: name the broker's host"))
            }
            (BrokerMode::External, Some(h)) => {
                return Err(self.err(
                    h.span(),
                    "broker.host",
                    format!(
                        "{:?} is not a host name or address: give the name alone (the port goes in broker.port, \
                         TLS in [broker.tls])",
                        h.get_ref()
                    ),
                ))
            }
            (BrokerMode::External, None) => "localhost".to_owned(),
        };
        let default_port = match (&mode, &tls) {
            (BrokerMode::Embedded { listen }, _) => listen.port() as i64,
            (_, Some(_)) => 8883,
            _ => 1883,
        };
        let credentials = match (&b.username, &b.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (Some(u), None) => Some((u.clone(), String::new())),
            (None, Some(_)) => {
                let span = raw.map(Spanned::span).unwrap_or(0..0);
                return Err(self.err(span, "broker.password", "is set without broker.username: set both"));
            }
            (None, None) => None,
        };
        let reconnect_min = self.int(&b.reconnect_min_ms, "broker.reconnect_min_ms", 100, 1, 60_000)?;
        // A broker on this machine costs nothing to try again: a refused connect
        // is a few microseconds, and readings published while the gateway waits
        // are lost to it when the broker kept no session. One on the network
        // gets a longer ceiling, not to hammer it when it comes back.
        let default_max = if is_loopback(&host) { LOCAL_RECONNECT_MAX_MS } else { 30_000 };
        let reconnect_max =
            self.int(&b.reconnect_max_ms, "broker.reconnect_max_ms", default_max, reconnect_min, 3_600_000)?;
        let client_id = match &b.client_id {
            Some(c) => self.client_id(c, "broker.client_id")?,
            None => format!("edgefn-{}", gateway.id),
        };
        Ok(BrokerConfig {
            port: self.int(&b.port, "broker.port", default_port, 1, 65_535)? as u16,
            host,
            mode,
            client_id,
            credentials,
            tls,
            keep_alive: Duration::from_secs(self.int(&b.keep_alive_s, "broker.keep_alive_s", 30, 5, 3_600)? as u64),
            max_packet_bytes: self.int(&b.max_packet_bytes, "broker.max_packet_bytes", 256 << 10, 1 << 10, 256 << 20)?
                as usize,
            reconnect_min: Duration::from_millis(reconnect_min as u64),
            reconnect_max: Duration::from_millis(reconnect_max as u64),
        })
    }

    fn upstream(
        &self,
        raw: &Spanned<RawUpstream>,
        gateway: &GatewaySettings,
        base_dir: &Path,
    ) -> Result<UpstreamConfig, ConfigError> {
        use crate::outbox::{Durability, OutboxConfig, Overflow, Role};
        let u = raw.get_ref();
        let url = u.url.get_ref();
        let (tls, host, port) = parse_broker_url(url).map_err(|e| self.err(u.url.span(), "upstream.url", e))?;
        let host = host.as_str();
        let tls_files =
            RawTls { ca_file: u.ca_file.clone(), cert_file: u.cert_file.clone(), key_file: u.key_file.clone() };
        let tls_files = match tls {
            true => Some(self.tls(&Spanned::new(raw.span(), tls_files)).map_err(|mut e| {
                e.key = e.key.replace("broker.tls.", "upstream.");
                e
            })?),
            false if u.ca_file.is_some() || u.cert_file.is_some() => {
                return Err(self.err(
                    u.url.span(),
                    "upstream.url",
                    "TLS files are set but the url is mqtt://: use mqtts://",
                ))
            }
            false => None,
        };
        let max_packet = self.int(&u.max_packet_bytes, "upstream.max_packet_bytes", 128 << 10, 4 << 10, 256 << 20)?;
        let reconnect_min = self.int(&u.reconnect_min_ms, "upstream.reconnect_min_ms", 200, 1, 60_000)?;
        let reconnect_max =
            self.int(&u.reconnect_max_ms, "upstream.reconnect_max_ms", 60_000, reconnect_min, 3_600_000)?;
        let broker = BrokerConfig {
            mode: BrokerMode::External,
            host: host.to_owned(),
            port,
            client_id: match &u.client_id {
                Some(c) => self.client_id(c, "upstream.client_id")?,
                None => format!("edgefn-{}-upstream", gateway.id),
            },
            credentials: u.username.clone().map(|name| (name, u.password.clone().unwrap_or_default())),
            tls: tls_files,
            // A dead link is noticed within about twice the keep-alive: keep that under a minute.
            keep_alive: Duration::from_secs(self.int(&u.keep_alive_s, "upstream.keep_alive_s", 20, 5, 30)? as u64),
            max_packet_bytes: max_packet as usize,
            reconnect_min: Duration::from_millis(reconnect_min as u64),
            reconnect_max: Duration::from_millis(reconnect_max as u64),
        };
        let choice = |v: &Option<Spanned<String>>, key: &str, options: &[&str]| -> Result<usize, ConfigError> {
            match v {
                None => Ok(0),
                Some(s) => options.iter().position(|o| o == s.get_ref()).ok_or_else(|| {
                    self.err(s.span(), key, format!("{:?} is not one of {}", s.get_ref(), options.join(", ")))
                }),
            }
        };
        let format = [crate::upstream::Format::Json, crate::upstream::Format::Postcard]
            [choice(&u.format, "upstream.format", &["json", "postcard"])?];
        let durability = match choice(&u.durability, "upstream.durability", &["batch", "interval"])? {
            0 => Durability::Batch,
            _ => Durability::Interval {
                every: Duration::from_millis(self.int(
                    &u.fsync_interval_ms,
                    "upstream.fsync_interval_ms",
                    1000,
                    1,
                    60_000,
                )? as u64),
            },
        };
        let overflow = [Overflow::DropOldest, Overflow::Refuse]
            [choice(&u.overflow, "upstream.overflow", &["drop_oldest", "refuse"])?];
        let max_bytes = self.int(&u.max_bytes, "upstream.max_bytes", 256 << 20, 64 << 10, 1 << 40)? as u64;
        let batch_max_bytes = self.int(
            &u.batch_max_bytes,
            "upstream.batch_max_bytes",
            (max_packet / 2).min(64 << 10),
            1 << 10,
            max_packet / 2,
        )?;
        let data_dir = match &u.data_dir {
            Some(d) => base_dir.join(d.get_ref()),
            None => PathBuf::from("/var/lib/edgefn"),
        };
        if let Some(why) = super::disk::unusable_dir(&data_dir) {
            let span = u.data_dir.as_ref().map_or(raw.span(), Spanned::span);
            return Err(self.err(span, "upstream.data_dir", format!("{why} (the outbox is kept there)")));
        }
        let topic_prefix = match &u.topic_prefix {
            Some(p) => {
                validate_topic_name(p.get_ref())
                    .map_err(|e| self.err(p.span(), "upstream.topic_prefix", e.to_string()))?;
                p.get_ref().trim_end_matches('/').to_owned()
            }
            None => "edgefn".to_owned(),
        };
        let mut forward = Vec::new();
        for (i, f) in u.forward.iter().enumerate() {
            let f = f.get_ref();
            let key = |k: &str| format!("upstream.forward[{i}].{k}");
            if !crate::outbox::valid_stream(f.stream.get_ref()) {
                return Err(self.err(
                    f.stream.span(),
                    key("stream"),
                    "must be 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if f.topics.get_ref().is_empty() {
                return Err(self.err(f.topics.span(), key("topics"), "is empty: list the topic filters to forward"));
            }
            let topics = f
                .topics
                .get_ref()
                .iter()
                .enumerate()
                .map(|(j, t)| self.filter(t, &key(&format!("topics[{j}]"))))
                .collect::<Result<_, _>>()?;
            forward.push(Forward { topics, stream: f.stream.get_ref().clone() });
        }
        Ok(UpstreamConfig {
            broker,
            topic_prefix,
            format,
            outbox: OutboxConfig {
                role: Role::Upstream,
                dir: data_dir.join("outbox"),
                durability,
                max_bytes,
                segment_bytes: (max_bytes / 16).clamp(16 << 10, 16 << 20),
                ttl: Duration::from_secs(
                    self.int(&u.ttl_s, "upstream.ttl_s", 7 * 24 * 3600, 1, 365 * 24 * 3600)? as u64
                ),
                overflow,
                queue: 4096,
                // Room for the batch's JSON envelope and the topic.
                max_record_bytes: max_packet as usize / 2,
                commit_window: Duration::from_millis(self.int(
                    &u.commit_window_ms,
                    "upstream.commit_window_ms",
                    5,
                    0,
                    1_000,
                )? as u64),
                min_free_bytes: gateway.min_free_bytes,
            },
            batch_max_records: self.int(&u.batch_max_records, "upstream.batch_max_records", 100, 1, 10_000)? as usize,
            batch_max_bytes: batch_max_bytes as usize,
            linger: Duration::from_millis(self.int(&u.linger_ms, "upstream.linger_ms", 20, 0, 60_000)? as u64),
            drain_rate: self.int(&u.drain_rate, "upstream.drain_rate", 2_000, 1, 10_000_000)? as u32,
            max_inflight: self.int(&u.max_inflight, "upstream.max_inflight", 16, 1, 1_000)? as usize,
            forward,
        })
    }

    fn tls(&self, raw: &Spanned<RawTls>) -> Result<TlsFiles, ConfigError> {
        let t = raw.get_ref();
        let file = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            let path = PathBuf::from(v.get_ref());
            if !path.is_file() {
                return Err(self.err(v.span(), key, format!("{} does not exist or is not a file", path.display())));
            }
            Ok(Some(path))
        };
        let ca_file = file(&t.ca_file, "broker.tls.ca_file")?.ok_or_else(|| {
            self.err(
                raw.span(),
                "broker.tls.ca_file",
                "is missing: name the PEM file of the CA that signed the broker's certificate",
            )
        })?;
        let client_auth = match (file(&t.cert_file, "broker.tls.cert_file")?, file(&t.key_file, "broker.tls.key_file")?)
        {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(self.err(
                    raw.span(),
                    "broker.tls",
                    "cert_file and key_file go together: set both for mutual TLS, or neither",
                ))
            }
        };
        Ok(TlsFiles { ca_file, client_auth })
    }

    fn devices(&self, raw: &[Spanned<RawDevice>]) -> Result<Vec<Device>, ConfigError> {
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
            let telemetry = d
                .telemetry
                .iter()
                .enumerate()
                .map(|(j, t)| self.filter(t, &key(&format!("telemetry[{j}]"))))
                .collect::<Result<Vec<_>, _>>()?;
            let command_topic = match &d.command_topic {
                Some(t) => {
                    validate_topic_name(t.get_ref())
                        .map_err(|e| self.err(t.span(), key("command_topic"), format!("{:?} {e}", t.get_ref())))?;
                    Some(t.get_ref().clone())
                }
                None => None,
            };
            let format = match d.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
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
            devices.push(Device { id, telemetry, command_topic, format });
        }
        Ok(devices)
    }

    fn filter(&self, raw: &Spanned<String>, key: &str) -> Result<TopicFilter, ConfigError> {
        TopicFilter::parse(raw.get_ref())
            .map_err(|e| self.err(raw.span(), key, format!("topic filter {:?} {e}", raw.get_ref())))
    }

    fn functions(
        &self,
        raw: &[Spanned<RawFunction>],
        modules_dir: &Path,
        status_topic: &str,
        devices: &[Device],
    ) -> Result<Vec<FunctionSpec>, ConfigError> {
        let mut seen = HashSet::new();
        let mut functions = Vec::new();
        for (i, f) in raw.iter().enumerate() {
            let f = f.get_ref();
            let key = |k: &str| format!("functions[{i}].{k}");
            let name = f.name.get_ref().trim().to_owned();
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(self.err(f.name.span(), key("name"), "must be 1 to 64 letters, digits, '-', '_' or '.'"));
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
                    Trigger::parse(t.get_ref()).map_err(|e| self.err(t.span(), key(&format!("triggers[{j}]")), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
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

    fn allow(
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
            for (j, d) in list.get_ref().iter().enumerate() {
                if !devices.iter().any(|known| known.id == *d.get_ref()) {
                    let known: Vec<&str> = devices.iter().map(|k| k.id.as_str()).collect();
                    return Err(self.err(
                        d.span(),
                        format!("{key}.devices[{j}]"),
                        format!("there is no [[devices]] {:?} (configured: {})", d.get_ref(), known.join(", ")),
                    ));
                }
            }
            let may = |id: &str| list.get_ref().iter().any(|d| d.get_ref() == id);
            allow.reserved.extend(devices.iter().filter(|d| !may(&d.id)).filter_map(|d| d.command_topic.clone()));
        }
        Ok(allow)
    }

    fn module(&self, raw: &Spanned<String>, key: &str, modules_dir: &Path) -> Result<ModuleSource, ConfigError> {
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

    fn limits(&self, l: &RawLimits, key: &str) -> Result<Limits, ConfigError> {
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

    fn function_config(&self, raw: &Spanned<toml::Table>, key: &str) -> Result<BTreeMap<String, String>, ConfigError> {
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

/// Splits `mqtt://host[:port]` or `mqtts://host[:port]` into (tls, host, port).
pub fn parse_broker_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = match url.split_once("://") {
        Some(("mqtt", rest)) => (false, rest),
        Some(("mqtts", rest)) => (true, rest),
        _ => return Err(format!("{url:?} must start with mqtt:// or mqtts://")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("port {p:?} in {url:?} is not a number"))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    // An IPv6 address in a URL is bracketed: mqtt://[fd00::1]:1883.
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if !super::disk::valid_host(host) {
        return Err(format!("{host:?} in {url:?} is not a host name or address"));
    }
    Ok((tls, host.to_owned(), port))
}

impl Cx<'_> {
    /// `gateway.min_free_bytes` must leave room on the filesystems it guards:
    /// the outbox's (upstream.data_dir) and the spools' (gateway.modules_dir).
    fn reserve_fits(
        &self,
        raw: &Spanned<RawGateway>,
        gateway: &GatewaySettings,
        upstream: Option<&UpstreamConfig>,
    ) -> Result<(), ConfigError> {
        let reserve = gateway.min_free_bytes;
        let guarded = upstream.map(|u| u.outbox.dir.as_path()).into_iter().chain([gateway.modules_dir.as_path()]);
        for dir in guarded {
            match super::disk::filesystem_bytes(dir) {
                Some(size) if reserve > 0 && reserve >= size => {
                    let span = raw.get_ref().min_free_bytes.as_ref().map_or(raw.span(), Spanned::span);
                    return Err(self.err(
                        span,
                        "gateway.min_free_bytes",
                        format!(
                            "{reserve} bytes is more than the whole filesystem of {} ({size} bytes): nothing could \
                             ever be written there; lower it",
                            dir.display()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The reconnect ceiling for a broker on this machine (`broker.reconnect_max_ms`'s
/// default when `broker.host` is a loopback name or address).
const LOCAL_RECONNECT_MAX_MS: i64 = 1_000;

/// Whether `host` names this machine: `localhost` (and `*.localhost`), or a
/// loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Longest `gateway.id`: it goes into the status topic and every client id.
const MAX_GATEWAY_ID: usize = 64;

impl Cx<'_> {
    /// An MQTT client id: 1 to 128 bytes (brokers may refuse more; MQTT 3.1.1
    /// only promises 23), and no NUL or control characters, which MQTT forbids.
    fn client_id(&self, c: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let id = c.get_ref();
        if id.is_empty() || id.len() > 128 || id.contains(char::is_control) {
            return Err(self.err(c.span(), key, "must be 1 to 128 bytes with no NUL or control characters"));
        }
        Ok(id.clone())
    }
}

fn default_workers() -> i64 {
    std::thread::available_parallelism().map(|n| n.get().min(4) as i64).unwrap_or(1)
}
