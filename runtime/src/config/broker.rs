//! Validating `[broker]` (and the connection settings `[upstream]` shares with
//! it: TLS files, broker URLs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::load::Cx;
use super::model::*;
use super::raw::*;

impl Cx<'_> {
    pub(super) fn broker(
        &self,
        raw: Option<&Spanned<RawBroker>>,
        gateway: &GatewaySettings,
    ) -> Result<BrokerConfig, ConfigError> {
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

    pub(super) fn tls(&self, raw: &Spanned<RawTls>) -> Result<TlsFiles, ConfigError> {
        let t = raw.get_ref();
        let file = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            // Relative to the configuration's directory, whatever the working directory.
            let path = self.base_dir.join(v.get_ref());
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
