//! Commands that cannot arrive late (issue 23, item 4), against the real
//! gateway process and Mosquitto: what a function publishes while the link to
//! the broker is down waits in the gateway with its expiry, and is dropped and
//! counted, never sent, once that has passed.
//!
//! The gateway reaches the broker through a proxy the test cuts; the probe
//! (the plug) is subscribed to the broker directly. Every command carries the
//! time the function made it (`now_ms` at the call), on the same clock the test
//! reads.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::Probe;
use support::wasm::module;

/// On every event, publishes the time of the call (decimal ms) to `topic` at
/// QoS 1: with `publish`, or with `publish_within` and `expiry_ms` when given.
fn commander(topic: &str, expiry_ms: Option<u32>) -> Vec<u8> {
    let (import, call) = match expiry_ms {
        None => (
            r#"(import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#.to_owned(),
            String::new(),
        ),
        Some(ms) => (
            r#"(import "edgefn" "publish_within" (func $publish (param i32 i32 i32 i32 i32 i32 i32) (result i32)))"#
                .to_owned(),
            format!("(i32.const {ms})"),
        ),
    };
    module(
        &format!(r#"(import "edgefn" "now_ms" (func $now (result i64))) {import}"#),
        &format!(
            "(local $p i32)
             (local.set $p (call $dec (call $now) (i32.const 1000)))
             (drop (call $publish (i32.const 2048) (i32.const {len}) (local.get $p)
                   (i32.sub (i32.const 1000) (local.get $p)) (i32.const 1) (i32.const 0) {call}))
             i32.const 0",
            len = topic.len()
        ),
        &format!(r#"(data (i32.const 2048) "{topic}") {dec}"#, dec = support::wasm::DECIMAL),
    )
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn a_command_made_while_the_broker_is_out_of_reach_is_never_sent_after_its_expiry() {
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    const EXPIRY_MS: u64 = 1_000;
    let broker = TestBroker::mosquitto();
    let link = support::proxy::Proxy::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    // `fan` publishes with its function's expiry (limits.publish_expiry_ms);
    // `pump` with `publish_within` and 0, which never expires.
    std::fs::write(dir.path().join("fan.wasm"), commander("plug/fan/cmnd", None)).unwrap();
    std::fs::write(dir.path().join("pump.wasm"), commander("plug/pump/cmnd", Some(0))).unwrap();
    let config = format!(
        "[gateway]\nid = \"gw-commands\"\n\n{}\n\
         [[functions]]\nname = \"fan\"\nmodule = \"fan.wasm\"\ntriggers = [{{ every = \"100ms\" }}]\n\
         [functions.limits]\npublish_expiry_ms = {EXPIRY_MS}\n\
         [[functions]]\nname = \"pump\"\nmodule = \"pump.wasm\"\ntriggers = [{{ every = \"100ms\" }}]\n",
        broker.gateway_toml()
    )
    .replace(&format!("port = {}\n", broker.port), &format!("port = {}\n", link.port));
    let probe = Probe::connect(broker.port, "plug", &["plug/#"]);
    probe.wait_subscribed("plug/probe");
    let gateway = GatewayProcess::start(dir.path(), &config);
    // Commands reach the plug while the link is up.
    probe.collect_until("a command of each function", {
        let mut seen = (false, false);
        move |m| {
            seen.0 |= m.topic == "plug/fan/cmnd";
            seen.1 |= m.topic == "plug/pump/cmnd";
            seen == (true, true)
        }
    });

    link.cut();
    // From here on, nothing either function decides can get through until the restore.
    let cut = now_ms();
    gateway.wait_for_log("the cut", |l| l.contains("MQTT connection failed"));
    // The outage outlasts the expiry: what `fan` decided in its first part is stale.
    std::thread::sleep(Duration::from_millis(2 * EXPIRY_MS + 500));
    let restored = now_ms();
    link.restore();

    // Until each function's first command made after the link came back: the
    // output connection writes in order, so everything carried over is in by then.
    let mut fan = Vec::new();
    let mut pump = Vec::new();
    probe.collect_until("a command of each function made after the restore", |m| {
        let made = || m.payload.parse::<u64>().unwrap();
        match m.topic.as_str() {
            "plug/fan/cmnd" => fan.push(made()),
            "plug/pump/cmnd" => pump.push(made()),
            _ => {}
        }
        fan.last().is_some_and(|t| *t > restored) && pump.last().is_some_and(|t| *t > restored)
    });
    let summary = gateway.stop().summary();

    // No fan command made during the outage more than its expiry before the
    // restore was sent: it could only have been written after the restore.
    let stale: Vec<_> = fan.iter().filter(|&&t| t >= cut && t + EXPIRY_MS < restored).collect();
    assert!(
        stale.is_empty(),
        "fan commands sent after their expiry (made at ms {stale:?}; cut {cut}, restored {restored})"
    );
    let expired = summary["functions"]["fan"]["commands_expired"].as_u64().unwrap();
    assert!(expired >= 5, "fan made a command every 100 ms of a {} ms outage; expired: {expired}", restored - cut);
    assert_eq!(summary["commands_expired"].as_u64(), Some(expired), "{summary}");
    // The pump's commands never expire: those made during the outage arrive after it.
    assert!(
        pump.iter().filter(|&&t| t >= cut && t < restored).count() >= 5,
        "{pump:?}; cut {cut}, restored {restored}"
    );
    assert_eq!(summary["functions"]["pump"]["commands_expired"].as_u64(), Some(0), "{summary}");
}
