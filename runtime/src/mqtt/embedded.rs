//! The embedded broker: rumqttd in-process, so a gateway needs nothing else installed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Commit-log segment size per subscription filter. rumqttd keeps up to
/// `SEGMENT_BYTES * SEGMENT_COUNT` of messages in memory for every filter, and
/// moves a subscriber that falls further behind to the head, skipping what lay
/// between (see shared field notes). 1 MiB per filter holds about ten seconds of
/// 1,000 small messages a second while keeping a Pi gateway's memory flat: with
/// 8 MiB per filter, resident memory grew by 0.4 MB/s under load until the logs
/// filled (footprint bench).
const SEGMENT_BYTES: usize = 256 << 10;
const SEGMENT_COUNT: usize = 4;
/// Client connections the embedded broker accepts (devices, bridges, tools);
/// rumqttd preallocates its tables for this many.
const MAX_CONNECTIONS: usize = 256;

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
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: 200,
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
    if wait_until_accepting(listen, READY_WAIT) {
        tracing::info!(%listen, "embedded MQTT broker listening");
    } else {
        tracing::warn!(%listen, waited_ms = READY_WAIT.as_millis() as u64, "embedded MQTT broker not accepting yet");
    }
    Ok(())
}

/// How long start-up waits for rumqttd to accept connections.
const READY_WAIT: Duration = Duration::from_secs(5);

/// Connects (and hangs up) until the broker accepts, so the gateway's own first
/// connections do not fail and log a retry on every start. rumqttd binds in its
/// own thread and has no readiness signal; it logs the bare connect and close at
/// ERROR, as it logs ordinary disconnects. A wildcard address is probed on loopback.
fn wait_until_accepting(listen: SocketAddr, within: Duration) -> bool {
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(match listen {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_ok() {
            return true;
        }
        // Between attempts only: rumqttd is still starting its listener.
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// rumqttd's log lines that report one client's ordinary connection events at
/// ERROR, by callsite (rumqttd 0.20.0): a TCP connection closed before its
/// CONNECT (the start-up probe above, a port scan, a health check), a clean
/// DISCONNECT ("router-drop"), a closed socket ("disconnected", "connection-stop"),
/// and the router's "no-connection id N is already gone" when a client both
/// sends DISCONNECT and closes its socket. A gateway that starts, serves and
/// stops cleanly would otherwise log four ERROR lines. The gateway's log hides
/// them; a client it cannot admit ("Remote link error") still shows.
pub fn is_connection_chatter(meta: &tracing::Metadata<'_>) -> bool {
    const CALLSITES: [(&str, &str, &[u32]); 2] = [
        ("rumqttd::server::broker", "src/server/broker.rs", &[512, 577, 581, 592]),
        ("rumqttd::router::routing", "src/router/routing.rs", &[416, 436, 539]),
    ];
    *meta.level() == tracing::Level::ERROR
        && CALLSITES.iter().any(|(target, file, lines)| {
            meta.target() == *target
                && meta.file().is_some_and(|f| f.ends_with(file))
                && meta.line().is_some_and(|l| lines.contains(&l))
        })
}
