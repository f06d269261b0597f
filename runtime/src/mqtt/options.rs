//! rumqttc client options from a validated [`BrokerConfig`].

use std::sync::Arc;

use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{BrokerConfig, TlsFiles};

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("TLS: cannot read {what} from {path}: {reason}")]
    TlsFile { what: &'static str, path: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// The largest packet a connection of ours reads. A packet over the client's
/// limit is a connection error, and a retained one comes back on every
/// resubscribe, which kept intake reconnecting for good. So the client reads up
/// to this, and the gateway drops (and counts, naming the topic) what is over
/// `broker.max_packet_bytes` itself. Brokers should refuse larger messages at
/// the door (Mosquitto: `message_size_limit`).
pub const READ_CEILING_BYTES: usize = 8 << 20;

/// Options for a client called `client_id`; with a `status_topic`, its will marks that topic offline.
pub fn client_options(
    cfg: &BrokerConfig,
    client_id: &str,
    status_topic: Option<&str>,
) -> Result<MqttOptions, MqttSetupError> {
    let mut options = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    options
        .set_keep_alive(cfg.keep_alive)
        .set_max_packet_size(cfg.max_packet_bytes.max(READ_CEILING_BYTES), cfg.max_packet_bytes)
        .set_clean_session(true);
    if let Some(status_topic) = status_topic {
        options.set_last_will(LastWill::new(status_topic, "offline", QoS::AtLeastOnce, true));
    }
    if let Some((user, pass)) = &cfg.credentials {
        options.set_credentials(user.clone(), pass.clone());
    }
    if let Some(tls) = &cfg.tls {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls_config(tls)?))));
    }
    Ok(options)
}

/// A client and its event loop, with the socket options every connection of
/// ours uses: Nagle off. Each MQTT packet is written and flushed on its own; with
/// Nagle on, a command published while the broker still owes an ACK waited for
/// the broker's next packet (about 1 ms at 1,000 readings a second, measured by
/// the pipeline benchmark). `capacity` bounds the client's request queue.
pub fn new_client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, capacity);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, MqttSetupError> {
    fn read_err<'p>(
        what: &'static str,
        path: &'p std::path::Path,
    ) -> impl Fn(rustls::pki_types::pem::Error) -> MqttSetupError + 'p {
        move |e| MqttSetupError::TlsFile { what, path: path.display().to_string(), reason: e.to_string() }
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca_file).map_err(read_err("CA certificates", &files.ca_file))? {
        let cert = cert.map_err(read_err("CA certificates", &files.ca_file))?;
        roots
            .add(cert)
            .map_err(|e| MqttSetupError::Tls(format!("CA certificate in {}: {e}", files.ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(MqttSetupError::TlsFile {
            what: "CA certificates",
            path: files.ca_file.display().to_string(),
            reason: "no certificate in it".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match &files.client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(read_err("client certificate", cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_err("client certificate", cert))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(read_err("client key", key))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| MqttSetupError::Tls(format!("client certificate or key: {e}")))
        }
    }
}
