//! Turns a raw configuration into a validated [`GatewayConfig`].

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::model::*;
use super::raw::*;
use crate::topic::{validate_topic_name, TopicFilter};

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
    let mut cx = Cx { file, text, base_dir, discovery: false };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (key, message) = super::syntax::describe(text, e.span(), e.message());
        ConfigError { file: file.to_owned(), line: e.span().map(|s| cx.line(s.start)), key, message }
    })?;
    cx.discovery = raw.homeassistant.as_ref().is_some_and(|h| h.get_ref().discovery != Some(false));
    let gateway = cx.gateway(&raw.gateway, base_dir)?;
    let broker = cx.broker(raw.broker.as_ref(), &gateway)?;
    let devices = cx.devices(&raw.devices)?;
    let functions =
        cx.functions(&raw.functions, &gateway.modules_dir, &gateway.status_topic, &devices, raw.api.is_some())?;
    let upstream = match &raw.upstream {
        Some(u) => Some(cx.upstream(u, &gateway, base_dir)?),
        None => None,
    };
    cx.reserve_fits(&raw.gateway, &gateway, upstream.as_ref())?;
    let api = match &raw.api {
        Some(a) => Some(cx.api(a)?),
        None => None,
    };
    let homeassistant = match &raw.homeassistant {
        Some(h) => Some(cx.homeassistant(h)?),
        None => None,
    };
    Ok(GatewayConfig { source: file.to_owned(), gateway, broker, devices, functions, upstream, api, homeassistant })
}

/// Validates one `[[functions]]` table (a deployed function's, in `file`) as
/// part of the running configuration `within`: its devices, status topic and
/// modules directory, and the names of its other functions, which it may
/// replace but not collide with. Errors are located in `file`.
pub fn parse_function(text: &str, file: &Path, within: &GatewayConfig) -> Result<FunctionSpec, ConfigError> {
    let discovery = within.homeassistant.as_ref().is_some_and(|h| h.discovery);
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let cx = Cx { file, text, base_dir, discovery };
    let raw: RawFunctions = toml::from_str(text).map_err(|e| {
        let (key, message) = super::syntax::describe(text, e.span(), e.message());
        ConfigError { file: file.to_owned(), line: e.span().map(|s| cx.line(s.start)), key, message }
    })?;
    let gateway = &within.gateway;
    let api = within.api.is_some();
    let mut functions =
        cx.functions(&raw.functions, &gateway.modules_dir, &gateway.status_topic, &within.devices, api)?;
    match functions.len() {
        1 => {
            let function = functions.remove(0);
            cx.routes_free(&function, &within.functions)?;
            Ok(function)
        }
        n => Err(ConfigError {
            file: file.to_owned(),
            line: None,
            key: "functions".into(),
            message: format!("holds {n} [[functions]] tables: a deployed function is exactly one"),
        }),
    }
}

/// What every check needs to point at the offending place.
pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    /// The configuration's directory (absolute): relative paths start there.
    pub(super) base_dir: &'a Path,
    /// Whether devices may come from Home Assistant discovery too, so that
    /// `{ availability = "*" }` may watch devices not configured.
    pub(super) discovery: bool,
}

impl Cx<'_> {
    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    pub(super) fn err(&self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: Some(self.line(span.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An optional integer within `[min, max]`, or `default` when absent.
    pub(super) fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
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
            summary_every: match &g.summary_every {
                None => Some(Duration::from_secs(60)),
                Some(t) if t.get_ref().trim() == "off" => None,
                Some(t) => {
                    let every = crate::trigger::parse_duration(t.get_ref())
                        .map_err(|e| self.err(t.span(), "gateway.summary_every", format!("{e}, or \"off\"")))?;
                    if every < Duration::from_secs(1) {
                        return Err(self.err(t.span(), "gateway.summary_every", "must be 1s or longer, or \"off\""));
                    }
                    Some(every)
                }
            },
            modules_dir,
            status_topic,
            strict: g.strict.as_ref().is_some_and(|s| *s.get_ref()),
            control_socket: g.control_socket.as_ref().map(|p| base_dir.join(p.get_ref())),
        })
    }

    pub(super) fn filter(&self, raw: &Spanned<String>, key: &str) -> Result<TopicFilter, ConfigError> {
        TopicFilter::parse(raw.get_ref())
            .map_err(|e| self.err(raw.span(), key, format!("topic filter {:?} {e}", raw.get_ref())))
    }
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

/// Longest `gateway.id`: it goes into the status topic and every client id.
const MAX_GATEWAY_ID: usize = 64;

impl Cx<'_> {
    /// An MQTT client id: 1 to 128 bytes (brokers may refuse more; MQTT 3.1.1
    /// only promises 23), and no NUL or control characters, which MQTT forbids.
    pub(super) fn client_id(&self, c: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
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
