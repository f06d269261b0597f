//! QoS 1 durability and link faults, end to end: kill -9, spools, broker
//! restarts, TLS, cut and half-open links, lost sessions, reconnects.

mod support;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::Probe;
use support::scenario::{greenhouse, press_line, reading};

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn after_the_broker_restarts_the_gateway_resubscribes_and_keeps_working() {
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let mut broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, ""));
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    let (_, m) = probe.wait_for("ON before the restart", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "ON");

    // The restarted broker knows no subscriptions and no retained status: the
    // `online` below can only come from the gateway having reconnected and resubscribed.
    broker.restart_mosquitto();
    probe.wait_online("gh-test");
    probe.publish("zigbee2mqtt/climate", &reading(20.0));
    let (_, m) = probe.wait_for("OFF after the restart", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "OFF");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert!(stopped.stderr.contains("MQTT connection failed"), "the outage was not logged:\n{}", stopped.stderr);
    assert!(stopped.stderr.matches("connected to MQTT broker").count() >= 2, "{}", stopped.stderr);
}

#[test]
#[cfg_attr(
    any(edgefn_missing_mosquitto, edgefn_missing_openssl),
    ignore = "needs mosquitto and openssl: apt-get install mosquitto openssl (bash .ci/run runs it)"
)]
fn the_gateway_talks_tls_to_its_broker_and_refuses_one_it_cannot_verify() {
    let tools =
        [("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"][..]), ("openssl", &["/usr/bin/openssl"][..])];
    if tools.iter().any(|(name, paths)| support::require_tool(name, paths).is_none()) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    support::certs::ca(certs.path(), "ca");
    support::certs::leaf(certs.path(), "server", "ca");
    support::certs::ca(certs.path(), "other-ca");
    let (broker, tls_port) = TestBroker::mosquitto_tls(certs.path(), false);
    let tls_broker = |id: &str, ca: &str| {
        greenhouse(&broker, "")
            .replace("id = \"gh-test\"", &format!("id = \"{id}\""))
            .replace(&broker.gateway_toml(), &format!(
                "[broker]\nhost = \"127.0.0.1\"\nport = {tls_port}\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n[broker.tls]\nca_file = \"{}\"\n",
                certs.path().join(ca).display()
            ))
    };
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/+/status"]);

    let gateway = GatewayProcess::start_named(dir.path(), "good.toml", &tls_broker("gh-tls", "ca.crt"));
    probe.wait_online("gh-tls");
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    let (_, m) = probe.wait_for("ON over TLS", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "ON");
    assert!(gateway.stop().status.success());

    let untrusting =
        GatewayProcess::start_named(dir.path(), "wrong-ca.toml", &tls_broker("gh-wrong-ca", "other-ca.crt"));
    let line = untrusting.wait_for_log("a refused TLS handshake", |l| l.contains("MQTT connection failed"));
    assert!(line.to_lowercase().contains("certificate"), "the error should say what is wrong: {line}");
    let stopped = untrusting.stop();
    assert!(stopped.status.success());
    assert!(!stopped.stderr.contains("connected to MQTT broker"), "{}", stopped.stderr);
}

/// Every QoS 1 message this gateway process read has one fate on the broker's
/// side: acknowledged, left to the broker (to come again), or its PUBACK lost
/// with a connection that failed while writing it (to come again too).
#[track_caller]
fn assert_every_delivery_acknowledged_or_left_to_the_broker(s: &serde_json::Value) {
    let n = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} missing: {s}"));
    assert_eq!(n("acks_sent") + n("acks_left_to_broker") + n("ack_errors"), n("events_in"), "summary: {s}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn qos1_readings_survive_a_kill_9_and_the_time_the_gateway_is_down() {
    // Without a spool the readings a kill -9 finds queued and running are
    // unacknowledged: the broker sends them again.
    survive_a_kill_9(false);
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn qos1_readings_a_slow_function_spooled_survive_a_kill_9() {
    // With one (the default) they wait in the function's spool, acknowledged
    // once on disk; after the kill -9 the spool has them.
    survive_a_kill_9(true);
}

fn survive_a_kill_9(spooled: bool) {
    // The broker must outlive the gateway, so this one is always Mosquitto.
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    // Tens of milliseconds an event, so that a kill -9 finds readings queued and running.
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(1_000_000)).unwrap();
    let mut config = press_line(&broker, 1024, "");
    if !spooled {
        config = config.replace("[gateway]\n", "[gateway]\nspool_max_bytes = 0\n");
    }
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    let mut seen = vec![0u32; 300];
    let note = |seen: &mut Vec<u32>, m: &support::probe::Message| {
        if m.topic == "echo" {
            seen[m.payload.parse::<usize>().unwrap()] += 1;
        }
    };
    for i in 0..200 {
        probe.publish("line/press-1/reading", &i.to_string());
    }
    // Power cut while most of them are still queued or running.
    let mut echoed = 0;
    probe.collect_until("the first echoes", |m| {
        note(&mut seen, m);
        echoed += (m.topic == "echo") as usize;
        echoed == 20
    });
    gateway.kill9();
    // Readings keep coming while the gateway is down.
    for i in 200..300 {
        probe.publish("line/press-1/reading", &i.to_string());
    }
    let gateway = GatewayProcess::start(dir.path(), &config);
    probe.collect_until("every reading echoed at least once", |m| {
        note(&mut seen, m);
        seen.iter().all(|&n| n > 0)
    });
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    assert_every_delivery_acknowledged_or_left_to_the_broker(&s);
    assert_eq!(
        stopped.stderr.contains("spooled events from before the restart"),
        spooled,
        "stderr:\n{}",
        stopped.stderr
    );
    assert_eq!(s["events_spooled"].as_u64().unwrap() > 0, spooled, "summary: {s}");
    let duplicates: u32 = seen.iter().map(|n| n - 1).sum();
    eprintln!(
        "300 readings, a kill -9 in the middle, {}: none lost, {duplicates} handled twice (at least once)",
        if spooled { "spooled" } else { "no spool" }
    );
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn the_spool_of_a_function_no_longer_configured_is_named_at_start() {
    // Spools exist only where acknowledgements are held: an external broker.
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    // What a removed function "press-2" left behind, and an empty one.
    let ghost = dir.path().join("spool/press-2");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(ghost.join("00000000000000000000.seg"), [1u8; 64]).unwrap();
    std::fs::create_dir_all(dir.path().join("spool/empty")).unwrap();
    let gateway = GatewayProcess::start(dir.path(), &press_line(&broker, 1024, ""));
    gateway.wait_for_log("the orphaned spool named", |l| l.contains("not installed") && l.contains("press-2"));
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert!(!stopped.stderr.lines().any(|l| l.contains("not installed") && l.contains("empty")), "{}", stopped.stderr);
    // Left as it was: the operator decides.
    assert!(ghost.join("00000000000000000000.seg").exists());
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn qos1_readings_published_while_the_link_to_the_broker_is_cut_or_half_open_are_all_handled() {
    // The broker must hold the readings for the gateway's session: Mosquitto.
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let link = support::proxy::Proxy::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    // The gateway reaches the broker through the proxy; the devices (the probe) directly.
    let config = press_line(&broker, 1024, "")
        .replace(&format!("port = {}\n", broker.port), &format!("port = {}\nkeep_alive_s = 5\n", link.port));
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    let mut seen = vec![0u32; 300];
    let mut publish_and_see = |range: std::ops::Range<usize>, before: &dyn Fn()| {
        for i in range.clone() {
            probe.publish("line/press-1/reading", &i.to_string());
        }
        before();
        probe.collect_until("every reading echoed", |m| {
            if m.topic == "echo" {
                seen[m.payload.parse::<usize>().unwrap()] += 1;
            }
            seen[..range.end].iter().all(|&n| n > 0)
        });
    };
    publish_and_see(0..100, &|| {});

    // The link is reset: the gateway sees it at once. Readings published
    // meanwhile wait in the broker for its session.
    link.cut();
    gateway.wait_for_log("the cut", |l| l.contains("MQTT connection failed"));
    publish_and_see(100..200, &|| {
        link.restore();
    });
    // Both connections back (a late failure line of the cut would otherwise
    // pass for the half-open link's below).
    let mut back = (false, false);
    while back != (true, true) {
        let line = gateway.wait_for_log("both connections back", |l| {
            l.contains("subscribed; gateway ready") || l.contains("connected to MQTT broker")
        });
        back.0 |= line.contains("subscribed; gateway ready");
        back.1 |= line.contains("connection=\"output\"");
    }

    // Half-open: the connection stays up and nothing flows until the keepalive
    // (5 s) gives up on it; the broker's unacknowledged readings come again on
    // the next connection.
    link.blackhole();
    publish_and_see(200..300, &|| {
        gateway.wait_for_log("the half-open link noticed", |l| l.contains("MQTT connection failed"));
        link.restore();
    });

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let s = stopped.summary();
    assert_every_delivery_acknowledged_or_left_to_the_broker(&s);
    let duplicates: u32 = seen.iter().map(|n| n - 1).sum();
    eprintln!("300 readings across a cut and a half-open link: none lost, {duplicates} handled twice");
}

#[test]
fn a_broker_that_lost_the_gateways_session_is_named_in_a_warning_and_subscribed_again() {
    use support::fake_broker::{FakeBroker, Script};
    let fake = FakeBroker::start_for(
        "gh-intake",
        vec![Script::CloseAfterSubscribe, Script::CloseAfterSubscribe, Script::Resume],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[gateway]\nid = \"gh-test\"\n\n[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {}\n\
         client_id = \"gh-intake\"\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n\n\
         [[functions]]\nname = \"fan-control\"\nmodule = \"builtin:threshold\"\ntriggers = [\"zigbee2mqtt/+\"]\n\
         [functions.config]\nfield = \"temperature\"\nabove = 28\nbelow = 25\n\
         command_topic = \"cmnd/fan/POWER\"\n",
        fake.port
    );
    let gateway = GatewayProcess::start(dir.path(), &config);
    // The first connect: no session yet, as on any first start.
    let first = fake.wait_subscribed(1);
    assert!(first.contains(&"zigbee2mqtt/+".to_owned()), "{first:?}");
    gateway.wait_for_log("the first connect", |l| l.contains("holds no session for us"));
    // The broker drops the connection and answers the reconnect without the
    // session it should have kept: the gateway warns and subscribes again.
    assert_eq!(fake.wait_subscribed(2), first);
    let warning = gateway.wait_for_log("the warning", |l| l.contains("kept no session for us"));
    assert!(warning.contains("WARN") && warning.contains("intake"), "{warning}");
    // A broker that kept the session: no warning.
    assert_eq!(fake.wait_subscribed(3), first);

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let warnings = stopped.stderr.lines().filter(|l| l.contains("kept no session for us")).count();
    assert_eq!(warnings, 1, "{}", stopped.stderr);
    assert_eq!(fake.connections(), [Script::CloseAfterSubscribe, Script::CloseAfterSubscribe, Script::Resume]);
}

#[test]
fn publishes_in_flight_when_the_output_connection_is_lost_are_sent_again_on_the_next() {
    use support::fake_broker::{FakeBroker, Script};
    // The output connection's first broker reads every publish and answers
    // nothing (no PUBACK, no PINGRESP): the echoes stay in flight until the
    // keep-alive gives up on it. The next connection has no session (the output
    // uses a clean one), so only the gateway can send them again.
    let fake = FakeBroker::start_for("line-test-out", vec![Script::Mute, Script::Behave]);
    for i in 0..5 {
        fake.send_to_subscribers("line/press-1/reading", i.to_string().as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    let config = format!(
        "[gateway]\nid = \"line-test\"\n\n[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {}\n\
         client_id = \"line-test\"\nkeep_alive_s = 5\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n\n\
         [[functions]]\nname = \"slow-echo\"\nmodule = \"slow-echo.wasm\"\ntriggers = [\"line/+/reading\"]\n",
        fake.port
    );
    let gateway = GatewayProcess::start(dir.path(), &config);
    let echoes_on = |r: &[support::fake_broker::Received], connection: usize| {
        r.iter()
            .filter(|m| m.topic == "echo" && m.connection == connection)
            .map(|m| m.payload.clone())
            .collect::<Vec<_>>()
    };
    fake.wait_received("the five echoes on the mute connection", |r| echoes_on(r, 1).len() == 5);
    fake.wait_received("the five echoes again on the next", |r| echoes_on(r, 2).len() == 5);
    let line = gateway.wait_for_log("the resend named", |l| l.contains("are sent again"));
    assert!(line.contains("output") && line.contains("publishes=5"), "{line}");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let received = fake.received();
    assert_eq!(echoes_on(&received, 2), echoes_on(&received, 1), "the same echoes, in the same order");
    assert!(received.iter().filter(|m| m.connection == 2).all(|m| m.acked), "{received:?}");
    let s = stopped.summary();
    assert_eq!(s["publishes_out"], 5, "{s}");
    assert_eq!(s["publishes_dropped_reconnect"], 0, "{s}");
    assert_eq!(s["publishes_dropped_stop"], 0, "{s}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn qos1_readings_in_flight_when_a_persistent_broker_restarts_and_published_during_its_outage_are_all_handled() {
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let mut broker = TestBroker::mosquitto_persistent();
    let dir = tempfile::tempdir().unwrap();
    // The function logs each reading it handles: the evidence, whatever becomes of its echo.
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::logging_echo(200_000)).unwrap();
    let config =
        press_line(&broker, 1024, "").replace("fuel = 100_000_000\n", "fuel = 100_000_000\nlog_lines_per_s = 100000\n");
    let gateway = GatewayProcess::start(dir.path(), &config);
    // Whoever reads the echoes keeps a persistent session too, as a cloud bridge would.
    let cloud = Probe::connect_persistent(broker.port, "cloud", &["echo", "edgefn/line-test/status"]);
    cloud.wait_online("line-test");
    // A device that holds what it publishes while the broker is away: a
    // persistent session, so its client keeps its unacknowledged publishes.
    let device = Probe::connect_persistent(broker.port, "press-1", &[]);

    let (before, during) = (300, 100);
    for i in 0..before {
        device.publish("line/press-1/reading", &i.to_string());
    }
    let mut handled = vec![0u32; before + during];
    let wait_handled = |handled: &mut [u32], what: &str, done: &dyn Fn(&[u32]) -> bool| {
        while !done(handled) {
            let line = gateway.wait_for_log(what, |l| l.contains("function=\"slow-echo\""));
            let n = line.split("edgefn::function: ").nth(1).and_then(|rest| rest.split(' ').next());
            handled[n.and_then(|n| n.parse::<usize>().ok()).unwrap_or_else(|| panic!("{line}"))] += 1;
        }
    };
    wait_handled(&mut handled, "the first reading handled", &|h| h.iter().any(|&n| n > 0));
    let handled_early = handled.iter().filter(|&&n| n > 0).count();
    // SIGTERM: Mosquitto saves the sessions, the gateway's with the readings it
    // has not acknowledged, and stops. The device's client holds what it
    // publishes meanwhile and sends it once the broker is back. (A device with a
    // clean session loses those: rumqttc clears them on the reconnect.)
    broker.stop_mosquitto();
    for i in before..before + during {
        device.publish("line/press-1/reading", &i.to_string());
    }
    broker.start_mosquitto();
    wait_handled(&mut handled, "every reading handled", &|h| h.iter().all(|&n| n > 0));

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let summary = stopped.summary();
    assert_every_delivery_acknowledged_or_left_to_the_broker(&summary);
    assert!(stopped.stderr.contains("MQTT connection failed"), "the outage was not logged:\n{}", stopped.stderr);
    // The echoes: the gateway has stopped, so a marker published now reaches the
    // cloud after every echo that will ever arrive.
    device.publish("echo", "marker");
    let mut echoed = std::collections::BTreeSet::new();
    cloud.collect_until("the marker after the echoes", |m| {
        if m.topic == "echo" && m.payload != "marker" {
            echoed.insert(m.payload.parse::<usize>().unwrap());
        }
        m.payload == "marker"
    });
    let duplicates: u32 = handled.iter().map(|n| n - 1).sum();
    // An echo in flight when the broker went away is carried over to the output
    // connection's next session and sent again: none is lost, none dropped.
    let missing: Vec<_> = (0..before + during).filter(|i| !echoed.contains(i)).collect();
    assert!(missing.is_empty(), "echoes never arrived: {missing:?}; {summary}");
    assert_eq!(summary["publishes_dropped_reconnect"], 0, "{summary}");
    eprintln!(
        "{} readings across a broker restart ({handled_early} handled when it stopped): none lost, {duplicates} handled \
         twice; every echo arrived",
        before + during,
    );
}

#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
#[test]
fn a_local_broker_back_after_an_outage_is_reconnected_to_within_a_second() {
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    // Mosquitto without persistence on this machine, and the gateway's default
    // reconnect settings (the tests' own short ones taken out).
    let mut broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let config = greenhouse(&broker, "").replace("reconnect_min_ms = 20\nreconnect_max_ms = 200\n", "");
    assert!(!config.contains("reconnect_"), "{config}");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");

    // Down long enough for the backoff to reach its ceiling on both connections:
    // seven failed attempts each (30 s ceiling before: 6.4 s waits by then).
    broker.stop_mosquitto();
    let mut delays = Vec::new();
    while delays.len() < 14 {
        let line = gateway.wait_for_log("failed reconnects", |l| l.contains("MQTT connection failed"));
        let ms =
            line.split("retry_in_ms=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
        delays.push(ms.unwrap_or_else(|| panic!("no retry_in_ms in {line}")));
    }
    assert!(delays.iter().all(|&d| d <= 1_000), "a local broker waited longer than a second: {delays:?} ms");

    let back = std::time::Instant::now();
    broker.start_mosquitto();
    probe.wait_online("gh-test");
    eprintln!("broker back -> gateway online again: {:?} (retry delays {delays:?} ms)", back.elapsed());
    // Subscribed again: a reading published now is handled.
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    let (_, m) = probe.wait_for("the fan on after the outage", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "ON");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}
