//! The embedded broker: rumqttd in-process, so a gateway needs nothing else installed.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Commit-log segment size per subscription filter. rumqttd moves a subscriber
/// that falls further behind than `SEGMENT_BYTES * SEGMENT_COUNT` to the head and
/// skips what lay between (see shared field notes): these bound the burst we absorb.
const SEGMENT_BYTES: usize = 1 << 20;
const SEGMENT_COUNT: usize = 8;

/// Starts rumqttd listening on `listen` in background threads and returns once
/// the address is known to be free. The broker lives as long as the process.
pub fn start_embedded_broker(listen: SocketAddr, max_packet_bytes: usize) -> std::io::Result<()> {
    // rumqttd only logs a failed bind from its own thread; check the address
    // here so that "address in use" is an error the user sees.
    drop(TcpListener::bind(listen)?);
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_packet_bytes,
        max_inflight_count: 256,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server =
        ServerSettings { name: "edgefn-embedded".into(), listen, tls: None, next_connection_delay_ms: 1, connections };
    let router = RouterConfig {
        max_connections: 1_000,
        max_outgoing_packet_count: 1_000,
        max_segment_size: SEGMENT_BYTES,
        max_segment_count: SEGMENT_COUNT,
        ..RouterConfig::default()
    };
    let config = Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new().name("embedded-broker".into()).spawn(move || {
        let mut broker = Broker::new(config);
        if let Err(e) = broker.start() {
            tracing::error!(error = %e, "embedded broker stopped");
        }
    })?;
    tracing::info!(%listen, "embedded MQTT broker listening");
    Ok(())
}
