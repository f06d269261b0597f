//! Validating `[upstream]`: the cloud connection, its outbox and forward rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::broker::parse_broker_url;
use super::error::ConfigError;
use super::load::Cx;
use super::model::*;
use super::raw::*;
use crate::topic::validate_topic_name;

impl Cx<'_> {
    pub(super) fn upstream(
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
}
