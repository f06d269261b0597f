//! `edgefn demo`: the gateway's main job on the embedded default. An embedded
//! broker, the built-in example functions (`device-configs/demo.toml`) and a
//! simulated office sensor replaying the UCI Occupancy Detection dataset.

pub mod dataset;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{self, BrokerMode, GatewayConfig};
use crate::gateway::{Gateway, StatsSnapshot};

/// The demo's configuration, the same file as `device-configs/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../../../device-configs/demo.toml");
/// The topic the simulated sensor publishes on.
pub const SENSOR_TOPIC: &str = "zigbee2mqtt/office-sensor";

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (or at the end of the dataset, or on Ctrl-C).
    pub duration: Duration,
    /// Replay speed: the dataset has one reading a minute, so 600 sends ten a second.
    pub speed: f64,
    /// Where the embedded broker listens; `None` picks a free loopback port.
    pub listen: Option<SocketAddr>,
}

/// What the demo saw, for its final summary.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub readings_sent: u64,
    pub commands_seen: u64,
    pub stats: StatsSnapshot,
}

/// Runs the demo until `duration`, the end of the dataset or `stop` completes.
pub async fn run(options: DemoOptions, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<DemoReport> {
    let readings = dataset::parse(dataset::UCI_OCCUPANCY)?;
    let listen = match options.listen {
        Some(addr) => addr,
        None => free_loopback_port().context("finding a free port for the embedded broker")?,
    };
    let mut config = config::parse_str(DEMO_CONFIG, Path::new("device-configs/demo.toml"), Path::new("."))?;
    point_at(&mut config, listen);
    let command_topics: Vec<String> = config.devices.iter().filter_map(|d| d.command_topic.clone()).collect();

    let gateway = Gateway::start(config).await?;
    let mut ready = gateway.ready();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .context("the gateway did not connect to its embedded broker within 10 s")??;
    println!(
        "edgefn demo: embedded broker on {listen}; watch it with `mosquitto_sub -h {} -p {} -t '#' -v`",
        listen.ip(),
        listen.port()
    );
    let period = Duration::from_secs_f64(60.0 / options.speed.max(0.001));
    println!(
        "replaying {} of the {} readings of the UCI Occupancy Detection dataset (CC BY 4.0) at {}x, {:.0} a second \
         for {:?}, onto {SENSOR_TOPIC}",
        planned(readings.len(), period, options.duration),
        readings.len(),
        options.speed,
        1.0 / period.as_secs_f64(),
        options.duration,
    );

    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("edgefn-demo-sensor", listen.ip().to_string(), listen.port()), 256);
    for topic in &command_topics {
        client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
    }
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut replay = tokio::time::interval(period);
    replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status = tokio::time::interval(if tty { Duration::from_millis(250) } else { Duration::from_secs(5) });
    let deadline = tokio::time::sleep(options.duration);
    tokio::pin!(deadline, stop);
    let (mut sent, mut commands, mut next) = (0u64, 0u64, 0usize);
    let mut subscribed = command_topics.is_empty();
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = &mut stop => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => subscribed = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    commands += 1;
                    let reading = readings.get(next.saturating_sub(1)).map(|r| r.time.as_str()).unwrap_or("");
                    clear_line(tty);
                    println!("[{reading}] command {} {}", p.topic, String::from_utf8_lossy(&p.payload));
                }
                Ok(_) => {}
                Err(e) => anyhow::bail!("demo sensor lost the embedded broker: {e}"),
            },
            _ = replay.tick(), if subscribed => {
                let Some(reading) = readings.get(next) else { break };
                client.try_publish(SENSOR_TOPIC, QoS::AtMostOnce, false, reading.to_zigbee2mqtt_json())?;
                next += 1;
                sent += 1;
            }
            _ = status.tick() => {
                let line = format!("{:>5.1}s  readings sent {sent} | {}", started.elapsed().as_secs_f64(), gateway.stats().snapshot().one_line());
                if tty { print!("\r\x1b[2K{line}"); let _ = std::io::stdout().flush(); } else { println!("{line}"); }
            }
        }
    }
    clear_line(tty);
    let _ = client.try_disconnect();
    let stats = gateway.shutdown().await;
    Ok(DemoReport { readings_sent: sent, commands_seen: commands, stats })
}

/// How many of `len` readings a replay at one every `period` sends within
/// `duration`: the first at once, then one a period, the dataset's end permitting.
fn planned(len: usize, period: Duration, duration: Duration) -> usize {
    let ticks = (duration.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
    ticks.clamp(1, len.max(1)).min(len)
}

fn point_at(config: &mut GatewayConfig, listen: SocketAddr) {
    config.broker.mode = BrokerMode::Embedded { listen };
    config.broker.host = listen.ip().to_string();
    config.broker.port = listen.port();
}

fn clear_line(tty: bool) {
    if tty {
        print!("\r\x1b[2K");
    }
}

/// A loopback port that was free a moment ago.
pub fn free_loopback_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_counts_the_readings_the_duration_lets_through_not_the_whole_dataset() {
        // The defaults: 60 s at 1200x is one reading every 50 ms.
        assert_eq!(planned(3000, Duration::from_millis(50), Duration::from_secs(60)), 1200);
        assert_eq!(planned(3000, Duration::from_millis(50), Duration::from_secs(1000)), 3000);
        assert_eq!(planned(3000, Duration::from_millis(50), Duration::from_millis(1)), 1);
        assert_eq!(planned(0, Duration::from_millis(50), Duration::from_secs(60)), 0);
    }
}
