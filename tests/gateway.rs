//! End to end: the real `edgefn` binary, a real broker (embedded by default,
//! Mosquitto with `EDGEFN_TEST_BROKER=mosquitto`), the real example functions,
//! and a probe publishing readings as a device would.

mod support;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::Probe;

/// A greenhouse: a Zigbee2MQTT climate sensor, a Tasmota fan plug, and the
/// threshold example switching the fan at 28 °C / 25 °C.
fn greenhouse(broker: &TestBroker, extra_functions: &str) -> String {
    format!(
        r#"
[gateway]
id = "gh-test"
workers = 2
shutdown_grace_ms = 5000

{broker}

[[devices]]
id = "climate"
telemetry = ["zigbee2mqtt/climate"]
format = "json"

[[devices]]
id = "fan"
telemetry = ["stat/fan/POWER"]
command_topic = "cmnd/fan/POWER"
format = "raw"

[[functions]]
name = "fan-control"
module = "builtin:threshold"
triggers = ["zigbee2mqtt/+"]
[functions.config]
field = "temperature"
above = 28
below = 25
command_topic = "cmnd/fan/POWER"

{extra_functions}
"#,
        broker = broker.gateway_toml()
    )
}

fn reading(temperature: f64) -> String {
    format!(r#"{{"temperature":{temperature},"humidity":61.5,"linkquality":120}}"#)
}

#[test]
fn readings_crossing_thresholds_become_exactly_the_right_fan_commands() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, ""));
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");

    // 24 -> OFF; 26, 27.9 inside the band: nothing; 29 -> ON; 28.5, 26: nothing;
    // 25 -> OFF; 31 -> ON; and 10 -> OFF as the last, awaited command.
    for t in [24.0, 26.0, 27.9, 29.0, 28.5, 26.0, 25.0, 31.0, 10.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
    }
    // Sensors send other things too: not JSON (counted as malformed), no field (ignored).
    probe.publish("zigbee2mqtt/climate", "not json");
    probe.publish("zigbee2mqtt/climate", r#"{"battery":97}"#);

    let mut commands = Vec::new();
    for _ in 0..5 {
        let (_, m) = probe.wait_for("a fan command", |m| m.topic == "cmnd/fan/POWER");
        commands.push(m.payload);
    }
    assert_eq!(commands, ["OFF", "ON", "OFF", "ON", "OFF"]);

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let summary = stopped.summary();
    assert_eq!(summary["commands_out"], 5, "summary: {summary}");
    assert_eq!(summary["events_malformed"], 1, "summary: {summary}");
    assert_eq!(summary["invocations_ok"], 10, "summary: {summary}");
    assert_eq!(summary["invocations_failed"], 0, "summary: {summary}");
    // Nothing was queued: shutdown did not have to wait out its grace period.
    assert!(!stopped.stderr.contains("grace period over"), "stderr:\n{}", stopped.stderr);
}

#[test]
fn hostile_functions_are_stopped_and_counted_while_a_good_one_keeps_answering() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let hostile = [
        ("spin", support::wasm::infinite_loop()),
        ("hog", support::wasm::memory_hog()),
        ("recurse", support::wasm::deep_recursion()),
        ("bad-pointer", support::wasm::out_of_bounds_publish()),
        // A loop without host calls and fuel for seconds (the most a file allows): its clock stops it.
        ("clock", support::wasm::infinite_loop()),
    ];
    let mut functions = String::new();
    for (name, wasm) in &hostile {
        std::fs::write(dir.path().join(format!("{name}.wasm")), wasm).unwrap();
        let limits = match *name {
            "clock" => "fuel = 10_000_000_000\ntimeout_ms = 50",
            _ => "fuel = 2_000_000",
        };
        functions.push_str(&format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{name}.wasm\"\ntriggers = [\"zigbee2mqtt/climate\"]\n\
             [functions.limits]\n{limits}\nmemory_bytes = 1_048_576\n\n"
        ));
    }
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, &functions));
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");

    // Each reading runs all five functions; the fan must still follow every one.
    let temperatures = [20.0, 30.0, 20.0, 30.0, 20.0, 30.0];
    for (i, t) in temperatures.iter().enumerate() {
        probe.publish("zigbee2mqtt/climate", &reading(*t));
        let (_, m) = probe.wait_for("the fan command after a reading", |m| m.topic == "cmnd/fan/POWER");
        assert_eq!(m.payload, if i % 2 == 0 { "OFF" } else { "ON" });
    }
    // The hostile ones run at their own pace (a slow one spools what it is
    // behind on): stop once each has failed on every reading, or what is still
    // spooled would be kept for the next start rather than counted here.
    let n = temperatures.len() as u64;
    let mut failures = std::collections::HashMap::<String, u64>::new();
    while failures.len() < hostile.len() || failures.values().any(|&f| f < n) {
        let line = gateway
            .wait_for_log("a failure of every hostile function on every reading", |l| l.contains("invocation failed"));
        let name = hostile.iter().map(|(name, _)| *name).find(|name| line.contains(&format!("function={name} ")));
        *failures.entry(name.expect("a failure names its function").to_owned()).or_default() += 1;
    }

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["invocations_ok"], n, "summary: {s}");
    assert_eq!(s["failed_out_of_fuel"], n, "summary: {s}");
    assert_eq!(s["failed_memory_limit"], n, "summary: {s}");
    assert_eq!(s["failed_stack_overflow"], n, "summary: {s}");
    assert_eq!(s["failed_abi_violation"], n, "summary: {s}");
    assert_eq!(s["failed_timeout"], n, "summary: {s}");
    assert_eq!(s["invocations_failed"], 5 * n, "summary: {s}");
    // Each failure is logged with the function, the topic and the reason.
    for (name, reason) in [
        ("spin", "out of fuel"),
        ("hog", "memory limit"),
        ("recurse", "stack overflow"),
        ("bad-pointer", "outside linear memory"),
        ("clock", "timed out"),
    ] {
        let logged = stopped.stderr.lines().any(|l| {
            l.contains("invocation failed")
                && l.contains(&format!("function={name}"))
                && l.contains("zigbee2mqtt/climate")
                && l.contains(reason)
        });
        assert!(logged, "no failure log for {name} ({reason}); stderr:\n{}", stopped.stderr);
    }
}

#[test]
#[cfg_attr(edgefn_missing_clang, ignore = "needs clang: apt-get install clang lld (bash .ci/run runs it)")]
fn the_c_function_runs_on_the_gateway() {
    let Some(clang) = support::require_tool("clang", &["/usr/bin/clang"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("counter.wasm");
    let script = support::repo_root().join("functions/examples/c-counter/build.sh");
    let out = std::process::Command::new("bash").arg(&script).arg(&wasm).env("CC", &clang).output().unwrap();
    assert!(out.status.success(), "building the C function failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let broker = TestBroker::from_env();
    let functions =
        "[[functions]]\nname = \"counter\"\nmodule = \"counter.wasm\"\ntriggers = [\"zigbee2mqtt/climate\"]\n\
                     [functions.config]\nevery = 3\ntopic = \"stats/climate/events\"\n";
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, functions));
    let probe = Probe::connect(broker.port, "test-probe", &["stats/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    for t in [20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
    }
    let (_, first) = probe.wait_for("the first count", |m| m.topic == "stats/climate/events");
    let (_, second) = probe.wait_for("the second count", |m| m.topic == "stats/climate/events");
    assert_eq!(first.payload, r#"{"events":3}"#);
    assert_eq!(second.payload, r#"{"events":6}"#);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert_eq!(stopped.summary()["invocations_ok"], 14);
}

/// Builds the json-summary example in `lang` to `out` with its `build.sh`.
fn build_json_summary(lang: &str, out: &std::path::Path) {
    let script = support::repo_root().join(format!("functions/examples/json-summary/{lang}/build.sh"));
    let built = std::process::Command::new("bash").arg(&script).arg(out).output().unwrap();
    assert!(
        built.status.success(),
        "building json-summary in {lang} failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
}

// The same function, functions/examples/json-summary, in Rust with std, in C with
// wasi-libc and in AssemblyScript: one test each, so that those whose toolchain is
// here run when another's is not.
#[test]
#[cfg_attr(edgefn_missing_wasm32_wasip1, ignore = "needs the wasm32-wasip1 target: rustup target add wasm32-wasip1")]
fn the_json_summary_function_in_rust_runs_on_the_gateway_through_wasi() {
    json_summary_runs_on_the_gateway("rust-std");
}

#[test]
#[cfg_attr(
    any(edgefn_missing_clang, edgefn_missing_wasi_libc),
    ignore = "needs clang and wasi-libc: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 (bash .ci/run runs it)"
)]
fn the_json_summary_function_in_c_runs_on_the_gateway_through_wasi() {
    json_summary_runs_on_the_gateway("c-wasi");
}

#[test]
#[cfg_attr(edgefn_missing_npm, ignore = "needs npm: apt-get install nodejs npm (bash .ci/run runs it)")]
fn the_json_summary_function_in_assemblyscript_runs_on_the_gateway_through_wasi() {
    json_summary_runs_on_the_gateway("assemblyscript");
}

/// Builds json-summary in `lang` (a directory of the example) and checks what it
/// publishes and logs on the gateway. Its toolchain is required in CI.
fn json_summary_runs_on_the_gateway(lang: &str) {
    let present = match lang {
        "rust-std" => support::require_rust_target("wasm32-wasip1"),
        "c-wasi" => support::require_wasi_libc(),
        _ => support::require_tool("npm", &["/usr/bin/npm"]).is_some(),
    };
    if !present {
        return;
    }
    let langs = [lang];
    let dir = tempfile::tempdir().unwrap();
    let mut functions = String::new();
    for lang in &langs {
        build_json_summary(lang, &dir.path().join(format!("{lang}.wasm")));
        functions += &format!(
            "[[functions]]\nname = \"summary-{lang}\"\nmodule = \"{lang}.wasm\"\ntriggers = [\"zigbee2mqtt/climate\"]\n\
             [functions.config]\ntopic = \"stats/summary/{lang}\"\n"
        );
    }

    let broker = TestBroker::from_env();
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, &functions));
    let probe = Probe::connect(broker.port, "test-probe", &["stats/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    // Numbers count; a string, a boolean and what is nested do not.
    let readings = [
        (r#"{"temperature":21.5,"humidity":40,"label":"x\"y","nested":{"a":1},"list":[2],"ok":true}"#, 2, 61.5),
        (r#"{"temperature":19.25,"humidity":38.5,"battery":97}"#, 3, 154.75),
        // A sum past the largest double: `null` in JSON (json! makes the same of infinity), `inf` in the log.
        (r#"{"a":1e308,"b":1e308}"#, 2, f64::INFINITY),
    ];
    for (reading, fields, sum) in readings {
        probe.publish("zigbee2mqtt/climate", reading);
        let mut summaries = std::collections::BTreeMap::new();
        probe.collect_until("a summary from each language", |m| {
            if let Some(lang) = m.topic.strip_prefix("stats/summary/") {
                summaries.insert(lang.to_owned(), m.payload.clone());
            }
            summaries.len() == langs.len()
        });
        for (lang, payload) in summaries {
            let summary: serde_json::Value = serde_json::from_str(&payload)
                .unwrap_or_else(|e| panic!("{lang}: summary {payload:?} is not JSON: {e}"));
            assert_eq!(summary, serde_json::json!({"device": "climate", "fields": fields, "sum": sum}), "{lang}");
        }
    }
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    // What each printed to stdout is its log line, every line (a C stdio that
    // buffered stdout would hold the second one back for good).
    for (_, fields, sum) in readings {
        let line = format!("climate: {fields} numeric fields, sum {sum}");
        for lang in &langs {
            let function = format!("function=\"summary-{lang}\"");
            assert!(
                stopped.stderr.lines().any(|l| l.contains(&line) && l.contains(&function)),
                "{lang} did not log {line:?}:\n{}",
                stopped.stderr
            );
        }
    }
    assert_eq!(stopped.summary()["invocations_ok"], 3 * (langs.len() as u64 + 1), "{}", stopped.stderr);
}

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

/// A press line sending numbered readings to one function that needs about
/// 0.2 ms each, with room for only `queue_capacity` events in its queue.
/// `extra` goes at the end of the `[broker]` section, and may start new ones.
fn press_line(broker: &TestBroker, queue_capacity: usize, extra: &str) -> String {
    format!(
        r#"
[gateway]
id = "line-test"
workers = 2
queue_capacity = {queue_capacity}
shutdown_grace_ms = 10000

{broker}
{extra}

[[functions]]
name = "slow-echo"
module = "slow-echo.wasm"
triggers = ["line/+/reading"]
[functions.limits]
fuel = 100_000_000
"#,
        broker = broker.gateway_toml()
    )
}

/// Publishes readings 0..n on `line/press-1/reading` as fast as the probe can,
/// and returns the numbers echoed on `echo`, in arrival order, once there are n.
fn numbered_readings_echoed(probe: &Probe, n: usize, what: &str) -> Vec<usize> {
    for i in 0..n {
        probe.publish("line/press-1/reading", &i.to_string());
    }
    let mut echoed = Vec::with_capacity(n);
    probe.collect_until(what, |m| {
        if m.topic == "echo" {
            echoed.push(m.payload.parse::<usize>().unwrap());
        }
        echoed.len() == n
    });
    echoed
}

#[test]
fn a_burst_far_bigger_than_the_worker_queue_reaches_the_function_whole_and_in_order() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(50_000)).unwrap();
    let gateway = GatewayProcess::start(dir.path(), &press_line(&broker, 4, ""));
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    // 500 readings as fast as the device can send them: 125 times the queue.
    const N: usize = 500;
    let echoed = numbered_readings_echoed(&probe, N, "every reading echoed");
    assert_eq!(echoed, (0..N).collect::<Vec<_>>(), "readings lost, duplicated or reordered");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["queue_full_dropped"], 0, "summary: {s}");
    assert_eq!(s["invocations_ok"], N as u64, "summary: {s}");
}

#[test]
fn a_function_that_cannot_keep_up_loses_its_own_events_not_everyone_elses() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    // About 0.3 s an event for one function; another, quick, on the other worker.
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(60_000_000)).unwrap();
    std::fs::write(dir.path().join("quick-echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    let quick = "[[functions]]\nname = \"quick-echo\"\nmodule = \"quick-echo.wasm\"\ntriggers = [\"line/+/status\"]\n";
    // keep_alive_s = 5: intake waits at most 2.5 s for a worker that is behind.
    let config = press_line(&broker, 2, &format!("keep_alive_s = 5\n\n{quick}"));
    let config = config.replace("fuel = 100_000_000", "fuel = 10_000_000_000\ntimeout_ms = 10000");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    // 100 readings need about 30 s of the slow function; status messages follow at once.
    const SLOW: usize = 100;
    for i in 0..SLOW {
        probe.publish("line/press-1/reading", &format!("r{i}"));
    }
    for i in 0..5 {
        probe.publish("line/press-2/status", &format!("s{i}"));
    }
    // Every status is echoed, and before the slow function got through its readings.
    let mut readings_before = 0;
    let mut statuses = Vec::new();
    probe.collect_until("the quick function's echoes", |m| {
        if m.payload.starts_with('r') {
            readings_before += 1;
        } else if m.payload.starts_with('s') {
            statuses.push(m.payload.clone());
        }
        statuses.len() == 5
    });
    assert_eq!(statuses, ["s0", "s1", "s2", "s3", "s4"]);
    assert!(readings_before < SLOW, "the quick function waited for all {SLOW} slow readings");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    let ran = s["invocations_ok"].as_u64().unwrap() - 5;
    let (dropped, kept) = (s["queue_full_dropped"].as_u64().unwrap(), s["spool_kept"].as_u64().unwrap());
    if broker.embedded {
        // Acknowledged on receipt: the slow function drops what it cannot run.
        assert!(dropped > 0, "nothing was dropped: summary: {s}");
        assert_eq!(ran + dropped, SLOW as u64, "summary: {s}");
        assert!(stopped.stderr.contains("function behind"), "stderr:\n{}", stopped.stderr);
    } else {
        // Acknowledged once safe: what it cannot run waits in its spool, for
        // after the next start, and nothing is dropped.
        assert_eq!(dropped + s["spool_dropped"].as_u64().unwrap(), 0, "summary: {s}");
        assert!(kept > 0, "summary: {s}");
        assert_eq!(ran + kept, SLOW as u64, "summary: {s}");
    }
    // Intake kept its connection all along: each of the two connected once.
    assert_eq!(stopped.stderr.matches("connected to MQTT broker").count(), 2, "stderr:\n{}", stopped.stderr);
    if broker.embedded {
        // The embedded broker accepts before the gateway first connects: no retry logged.
        assert!(!stopped.stderr.contains("MQTT connection failed"), "stderr:\n{}", stopped.stderr);
    }
}

/// Round-trip times of `n` readings sent one at a time at about 30 a second,
/// each waited for before the next: (p50, p99) in milliseconds.
fn paced_round_trips(probe: &Probe, from: usize, n: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for i in from..from + n {
        let sent = std::time::Instant::now();
        let payload = format!("w{i}");
        probe.publish("line/press-1/reading", &payload);
        probe.wait_for(&format!("the echo of {payload}"), |m| m.topic == "echo" && m.payload == payload);
        let took = sent.elapsed();
        times.push(took.as_secs_f64() * 1000.0);
        // Pacing a device's rate, not waiting for an event.
        std::thread::sleep(std::time::Duration::from_millis(33).saturating_sub(took));
    }
    times.sort_by(f64::total_cmp);
    (times[n / 2], times[n * 99 / 100])
}

#[test]
fn a_well_behaved_function_beside_two_that_burn_their_fuel_loses_nothing_and_keeps_its_latency() {
    beside_two_fuel_burners(&TestBroker::from_env(), false);
}

/// At QoS 1 each burner event the gateway held unacknowledged would hold the
/// acknowledgements of everything after it, and the broker's window of
/// unacknowledged messages (Mosquitto: 20) would fill with them: the burners'
/// events go to their spools instead, acknowledged once on disk.
#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn a_well_behaved_function_keeps_its_latency_beside_fuel_burners_flooded_at_qos1() {
    // Acknowledgements are held only for an external broker.
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    beside_two_fuel_burners(&TestBroker::mosquitto(), true);
}

fn beside_two_fuel_burners(broker: &TestBroker, qos1: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    std::fs::write(dir.path().join("burner.wasm"), support::wasm::infinite_loop()).unwrap();
    let burners = (1..=2)
        .map(|n| {
            // Slow, not broken: never quarantined.
            format!(
                "[[functions]]\nname = \"burner-{n}\"\nmodule = \"burner.wasm\"\ntriggers = [\"noise/{n}\"]\n\
                 [functions.limits]\nquarantine_after = 0\n"
            )
        })
        .collect::<String>();
    // Default fuel (10 M): every burner invocation runs it all out.
    let config = press_line(broker, 1024, &burners)
        .replace("name = \"slow-echo\"\nmodule = \"slow-echo.wasm\"", "name = \"echo\"\nmodule = \"echo.wasm\"")
        .replace("[functions.limits]\nfuel = 100_000_000\n", "");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    let (alone_p50, alone_p99) = paced_round_trips(&probe, 0, 100);
    // The neighbours wake up: a chatty stream for each burner, far more than
    // they can take, for as long as the well-behaved function is measured.
    let noisy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let noise_maker = Probe::connect(broker.port, "noise-maker", &[]);
    let noise = {
        let noisy = noisy.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while noisy.load(std::sync::atomic::Ordering::Relaxed) {
                for n in 1..=2 {
                    match qos1 {
                        true => noise_maker.publish(&format!("noise/{n}"), "x"),
                        false => noise_maker.publish_qos0(&format!("noise/{n}"), "x"),
                    }
                }
                sent += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            noise_maker.disconnect();
            sent
        })
    };
    // Until a burner's first invocation ends its speed is unknown, and at QoS 1
    // its first events hold the broker's acknowledgements (and so the others'
    // events) for up to that long: the first readings measure that onset.
    let (_, onset) = paced_round_trips(&probe, 100, 10);
    let (noisy_p50, noisy_p99) = paced_round_trips(&probe, 110, 200);
    noisy.store(false, std::sync::atomic::Ordering::Relaxed);
    let per_burner = noise.join().unwrap();
    eprintln!(
        "well-behaved function, round trip: alone p50 {alone_p50:.1} ms p99 {alone_p99:.1} ms; beside two fuel \
         burners sent {per_burner} events each at QoS {}: p50 {noisy_p50:.1} ms p99 {noisy_p99:.1} ms (slowest \
         of the first 10: {onset:.1} ms)",
        u8::from(qos1)
    );
    assert!(onset < 1000.0, "the first readings beside the burners took up to {onset:.1} ms");
    // Generous: a burner invocation is tens of milliseconds, and with two
    // workers the echo waits for at most one of them.
    assert!(noisy_p99 < alone_p99 + 250.0, "p99 {noisy_p99:.1} ms beside the burners, {alone_p99:.1} ms alone");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    let f = &s["functions"];
    let count = |function: &str, k: &str| f[function][k].as_u64().unwrap();
    assert_eq!(count("echo", "ok"), 310, "summary: {s}");
    assert_eq!(count("echo", "dropped_queue"), 0, "summary: {s}");
    let mut outcomes = count("echo", "ok");
    for burner in ["burner-1", "burner-2"] {
        assert_eq!(count(burner, "ok"), 0, "they ran out of fuel every time; summary: {s}");
        if qos1 {
            // Nothing dropped: what they could not run waits in their spools.
            assert!(count(burner, "spooled") > 0, "summary: {s}");
            assert!(count(burner, "spool_kept") > 0, "summary: {s}");
            assert_eq!(count(burner, "dropped_queue") + count(burner, "dropped_spool"), 0, "summary: {s}");
        } else {
            assert!(count(burner, "dropped_queue") > 0, "they were behind; summary: {s}");
        }
        outcomes += count(burner, "failed")
            + count(burner, "dropped_queue")
            + count(burner, "dropped_shutdown")
            + count(burner, "dropped_spool")
            + count(burner, "spool_kept");
    }
    // Each event matched one function and has exactly one outcome.
    assert_eq!(outcomes, s["events_in"].as_u64().unwrap(), "summary: {s}");
    if qos1 {
        // And at QoS 1 the gateway received every one.
        assert_eq!(s["events_in"].as_u64().unwrap(), 310 + 2 * per_burner, "summary: {s}");
    } else {
        // (QoS 0: the broker may have dropped some of the noise before the gateway saw it.)
        assert!(
            stopped.stderr.lines().any(|l| l.contains("function behind") && l.contains("burner-")),
            "the drops are not logged by name; stderr:\n{}",
            stopped.stderr
        );
    }
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
fn an_oversized_retained_message_is_dropped_and_named_without_stopping_intake() {
    // The embedded broker refuses such a message at the door; Mosquitto by default does not.
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    // 300 KB retained on a trigger topic, over the default 256 KiB limit: every
    // subscribe gets it again.
    let big = format!(r#"{{"temperature":30,"blob":"{}"}}"#, "x".repeat(300_000));
    probe.publish_retained("zigbee2mqtt/climate-camera", big.as_bytes());
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, ""));
    probe.wait_online("gh-test");
    gateway.wait_for_log("the oversized message named", |l| {
        l.contains("larger than broker.max_packet_bytes") && l.contains("zigbee2mqtt/climate-camera")
    });
    for t in [30.0, 20.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
    }
    let mut commands = Vec::new();
    for _ in 0..2 {
        let (_, m) = probe.wait_for("a fan command", |m| m.topic == "cmnd/fan/POWER");
        commands.push(m.payload);
    }
    assert_eq!(commands, ["ON", "OFF"]);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["events_oversized"], 1, "summary: {s}");
    assert_eq!(s["invocations_ok"], 2, "summary: {s}");
    // Intake never lost its connection over it.
    assert_eq!(stopped.stderr.matches("connected to MQTT broker").count(), 2, "stderr:\n{}", stopped.stderr);
}

#[test]
fn sighup_applies_a_changed_configuration_and_refuses_a_broken_one() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    let before = greenhouse(&broker, "");
    // Started as systemd would (Type=notify): it says when it is ready and when it reloads.
    let notify_path = dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    systemd.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let notified = || {
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let gateway =
        GatewayProcess::start_with_env(dir.path(), "gateway.toml", &before, &[("NOTIFY_SOCKET", &notify_path)]);
    assert_eq!(notified(), "READY=1\nSTATUS=subscribed to the broker");
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "echo", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    let (_, m) = probe.wait_for("the fan on", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "ON");

    // New thresholds for fan-control (a replace), and a new function on a topic
    // nobody subscribed to yet (an install and a new subscription).
    let echo = "[[functions]]\nname = \"echo\"\nmodule = \"echo.wasm\"\ntriggers = [\"line/+/status\"]\n";
    let after = greenhouse(&broker, echo).replace("above = 28\nbelow = 25", "above = 35\nbelow = 32");
    gateway.reload(dir.path(), "gateway.toml", &after);
    gateway.wait_for_log("the reload", |l| l.contains("reloaded: installed echo; replaced fan-control"));
    assert!(notified().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(notified(), "READY=1");
    // 31 is below the new lower threshold: the new version turns the fan off
    // (the old one would have kept it on and said nothing).
    probe.publish("zigbee2mqtt/climate", &reading(31.0));
    let (_, m) = probe.wait_for("the fan off", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "OFF");
    probe.publish("line/press-1/status", "hello");
    let (_, m) = probe.wait_for("the new function's echo", |m| m.topic == "echo");
    assert_eq!(m.payload, "hello");

    // A broken file is refused with what `edgefn check` says, and the set keeps serving.
    let broken = after.replace("triggers = [\"line/+/status\"]", "triggers = [\"line/#/status\"]");
    gateway.reload(dir.path(), "gateway.toml", &broken);
    let refused = gateway.wait_for_log("the refusal", |l| l.contains("reload refused"));
    assert!(refused.contains("functions[1].triggers[0]") && refused.contains("'#'"), "{refused}");
    probe.publish("zigbee2mqtt/climate", &reading(36.0));
    let (_, m) = probe.wait_for("the fan on again", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "ON");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["invocations_ok"], 4, "summary: {s}");
    assert_eq!(s["unknown_function_dropped"], 0, "summary: {s}");
    // One process all along: each connection connected once.
    assert_eq!(stopped.stderr.matches("connected to MQTT broker").count(), 2, "stderr:\n{}", stopped.stderr);
}

#[test]
fn a_function_publishes_only_where_it_is_allowed_and_sees_the_refusal() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reach.wasm"), support::wasm::overreaching_publisher()).unwrap();
    let reach = "[[functions]]\nname = \"reach\"\nmodule = \"reach.wasm\"\ntriggers = [\"line/+/status\"]\n\
                 [functions.allow]\npublish = [\"allowed/#\", \"edgefn/#\"]\n";
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, reach));
    let probe = Probe::connect(broker.port, "test-probe", &["#"]);
    probe.wait_online("gh-test");
    probe.publish("line/press-1/status", "go");
    let (before, m) = probe.wait_for("the allowed publish", |m| m.topic == "allowed/x");
    assert_eq!(m.payload, "offline");
    for m in &before {
        assert!(m.topic != "$SYS/x" && m.topic != "secret/x", "a denied publish went out: {m:?}");
        assert!(!(m.topic == "edgefn/gh-test/status" && m.payload == "offline"), "the status was overwritten");
    }
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    // The function saw -2 three times (else it returns non-zero and fails).
    assert_eq!(s["invocations_ok"], 1, "summary: {s}");
    assert_eq!(s["capability_denied"], 3, "summary: {s}");
    assert_eq!(s["publishes_out"], 1, "summary: {s}");
    let logged = stopped.stderr.lines().any(|l| {
        l.contains("call refused") && l.contains("function=reach") && l.contains("publish to edgefn/gh-test/status")
    });
    assert!(logged, "stderr:\n{}", stopped.stderr);
}

#[test]
fn a_function_that_does_not_load_costs_only_itself_unless_strict() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm at all").unwrap();
    let broken = "[[functions]]\nname = \"broken\"\nmodule = \"broken.wasm\"\ntriggers = [\"line/#\"]\n";
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, broken));
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    let (_, m) = probe.wait_for("the fan on", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(m.payload, "ON");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    assert_eq!(stopped.summary()["functions_failed"], 1, "{}", stopped.summary());
    let started = stopped.stderr.lines().find(|l| l.contains("gateway started")).expect("a start-up line");
    assert!(started.contains("functions_loaded=1 functions_failed=1"), "{started}");
    assert!(
        stopped
            .stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("function broken: module") && l.contains("not started")),
        "stderr:\n{}",
        stopped.stderr
    );

    // With gateway.strict, the same file does not start at all, and says why.
    let strict = greenhouse(&broker, broken).replace("[gateway]\n", "[gateway]\nstrict = true\n");
    let out = support::gateway::edgefn_command()
        .args(["run", "--config"])
        .arg({
            let p = dir.path().join("strict.toml");
            std::fs::write(&p, strict).unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("function broken: module") && err.contains("gateway.strict = true"), "{err}");
}

#[test]
fn a_short_grace_shutdown_counts_every_event_and_sends_every_publish() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    // A few milliseconds an event: most of a 300-reading burst is still queued at the stop.
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(1_000_000)).unwrap();
    let config = press_line(&broker, 1024, "").replace("shutdown_grace_ms = 10000", "shutdown_grace_ms = 300");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");
    for i in 0..300 {
        probe.publish("line/press-1/reading", &i.to_string());
    }
    probe.wait_for("the first echo", |m| m.topic == "echo");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    // Every event taken in ends in exactly one counted outcome.
    let outcomes = n("invocations_ok")
        + n("invocations_failed")
        + n("queue_full_dropped")
        + n("shutdown_dropped")
        + n("spool_dropped")
        + n("spool_kept");
    assert_eq!(outcomes, n("events_in"), "summary: {s}");
    if broker.embedded {
        // The gateway took the whole burst (the embedded broker is acknowledged on receipt).
        assert!(n("shutdown_dropped") > 0, "the grace period did not cut anything short: {s}");
    } else {
        // The stop cut the burst short: part of it was never taken in, kept in
        // the function's spool or dropped from the queue (how much of each
        // depends on how fast the gateway read). Acknowledged only when safe:
        // handled, or on disk in the spool; every reading dropped at the stop
        // was left unacknowledged, so Mosquitto sends it again.
        assert!(n("invocations_ok") + n("invocations_failed") < 300, "summary: {s}");
        assert!(n("acks_left_to_broker") >= n("shutdown_dropped"), "summary: {s}");
        assert!(n("acks_sent") <= n("invocations_ok") + n("invocations_failed") + n("spool_kept"), "summary: {s}");
    }
    // Every successful invocation's publish was handed on, and (with a broker
    // that outlives the gateway) arrives.
    assert_eq!(n("publishes_out"), n("invocations_ok"), "summary: {s}");
    if !broker.embedded {
        let mut echoes = 1;
        probe.collect_until("every echo the gateway counted", |m| {
            echoes += (m.topic == "echo") as u64;
            echoes == n("publishes_out")
        });
    }
}

#[test]
fn deploy_replace_and_remove_on_a_running_gateway_and_deployed_functions_survive_a_restart() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = greenhouse(&broker, "").replace("[gateway]\n", &format!("[gateway]\ncontrol_socket = {socket:?}\n"));
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["v1", "v2", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    let cli = |args: &[&str]| {
        let out = support::gateway::edgefn_command().args(args).arg("--socket").arg(&socket).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    std::fs::write(dir.path().join("v1.wasm"), support::wasm::echo_to("v1")).unwrap();
    std::fs::write(dir.path().join("v2.wasm"), support::wasm::echo_to("v2")).unwrap();
    let module = |v: &str| dir.path().join(format!("{v}.wasm")).display().to_string();

    // Deploy: live as soon as the command returns.
    let (ok, said) = cli(&["deploy", &module("v1"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(ok && said.contains("installed echo"), "{said}");
    let deployed = std::time::Instant::now();
    probe.publish("line/press-1/status", "a");
    let (_, m) = probe.wait_for("the deployed function's echo", |m| m.topic == "v1");
    eprintln!("deploy returned -> first event handled by the new function: {:?}", deployed.elapsed());
    assert_eq!(m.payload, "a");

    // Replace: later events go to the new version.
    let (ok, said) = cli(&["deploy", &module("v2"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(ok && said.contains("replaced echo"), "{said}");
    probe.publish("line/press-1/status", "b");
    let (_, m) = probe.wait_for("the new version's echo", |m| m.topic == "v2" || m.topic == "v1");
    assert_eq!((m.topic.as_str(), m.payload.as_str()), ("v2", "b"));
    let (ok, table) = cli(&["functions"]);
    assert!(ok && table.lines().any(|l| l.starts_with("echo ") && l.contains("deployed")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("fan-control ") && l.contains("config")), "{table}");

    // A function from the configuration file is not the CLI's to change, and a broken module is refused.
    let (ok, said) = cli(&["remove", "fan-control"]);
    assert!(!ok && said.contains("defined in"), "{said}");
    std::fs::write(dir.path().join("bad.wasm"), b"not wasm").unwrap();
    let (ok, said) = cli(&["deploy", &module("bad"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(!ok && said.contains("nothing changed"), "{said}");

    // A restart brings the deployed version back.
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let gateway = GatewayProcess::start(dir.path(), &config);
    probe.wait_online("gh-test");
    probe.publish("line/press-1/status", "c");
    let (_, m) = probe.wait_for("the echo after a restart", |m| m.topic == "v2" || m.topic == "v1");
    assert_eq!((m.topic.as_str(), m.payload.as_str()), ("v2", "c"));

    // Remove: gone from the table, and gone for good.
    let (ok, said) = cli(&["remove", "echo"]);
    assert!(ok && said.contains("removed echo"), "{said}");
    let (_, table) = cli(&["functions"]);
    assert!(!table.lines().any(|l| l.starts_with("echo ")), "{table}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert!(!dir.path().join("deployed/echo.toml").exists());
}

#[test]
fn a_replace_under_steady_load_loses_nothing_and_runs_nothing_twice() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = greenhouse(&broker, "").replace("[gateway]\n", &format!("[gateway]\ncontrol_socket = {socket:?}\n"));
    std::fs::write(dir.path().join("v1.wasm"), support::wasm::echo_to("v1")).unwrap();
    std::fs::write(dir.path().join("v2.wasm"), support::wasm::echo_to("v2")).unwrap();
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["v1", "v2", "edgefn/gh-test/status"]);
    let device = Probe::connect(broker.port, "device", &[]);
    probe.wait_online("gh-test");
    let deploy = |v: &str| {
        let module = dir.path().join(format!("{v}.wasm"));
        let out = support::gateway::edgefn_command()
            .args(["deploy", module.to_str().unwrap(), "--name", "echo", "--trigger", "line/+/status", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    deploy("v1");

    // 2,000 readings at about 2,000 a second, the replace halfway through.
    const N: usize = 2_000;
    let sender = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        for i in 0..N {
            device.publish("line/press-1/status", &i.to_string());
            // Pace the device; the gateway is not waited on here.
            let due = start + std::time::Duration::from_micros(500 * i as u64);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        device
    });
    let mut seen: Vec<(String, usize)> = Vec::with_capacity(N);
    let mut replaced = false;
    probe.collect_until("every reading echoed", |m| {
        if m.topic == "v1" || m.topic == "v2" {
            seen.push((m.topic.clone(), m.payload.parse().unwrap()));
        }
        if !replaced && seen.len() == N / 2 {
            deploy("v2");
            replaced = true;
        }
        seen.len() >= N
    });
    let _device = sender.join().unwrap();
    let mut numbers: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..N).collect::<Vec<_>>(), "a reading lost or handled twice");
    // One switch: every v1 echo comes before every v2 echo, in reading order.
    let first_v2 = seen.iter().position(|(t, _)| t == "v2").expect("the new version handled something");
    assert!(seen[first_v2..].iter().all(|(t, _)| t == "v2"), "v1 ran after v2 had started");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "echoes out of order");
    eprintln!("replace under load: v1 handled {first_v2}, v2 handled {}", N - first_v2);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert_eq!(stopped.summary()["unknown_function_dropped"], 0);
}

#[test]
fn functions_form_a_chain_through_the_topics_they_publish_and_subscribe_to() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stage-1.wasm"), support::wasm::echo_to("line/stage-1/out")).unwrap();
    std::fs::write(dir.path().join("stage-2.wasm"), support::wasm::echo_to("echo")).unwrap();
    let stages = "[[functions]]\nname = \"stage-1\"\nmodule = \"stage-1.wasm\"\ntriggers = [\"line/+/reading\"]\n\n\
                  [[functions]]\nname = \"stage-2\"\nmodule = \"stage-2.wasm\"\ntriggers = [\"line/stage-1/out\"]\n";
    let config = press_line(&broker, 1024, stages);
    // Only the two stages: press_line's own function is left out.
    let config = config[..config.rfind("[[functions]]\nname = \"slow-echo\"").unwrap()].to_owned();
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    const N: usize = 300;
    let echoed = numbered_readings_echoed(&probe, N, "every reading through both stages");
    assert_eq!(echoed, (0..N).collect::<Vec<_>>(), "readings lost, duplicated or reordered on the way");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    // Counted on both sides: each stage ran every reading once, and the second
    // stage's events are the first stage's publishes.
    assert_eq!(s["functions"]["stage-1"]["ok"], N as u64, "summary: {s}");
    assert_eq!(s["functions"]["stage-2"]["ok"], N as u64, "summary: {s}");
    assert_eq!(s["events_in"], 2 * N as u64, "summary: {s}");
    assert_eq!(s["publishes_out"], 2 * N as u64, "summary: {s}");
}

#[test]
fn quotas_drop_a_functions_excess_events_and_log_lines_and_count_them() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    std::fs::write(dir.path().join("chatty.wasm"), support::wasm::chatty_logger(40, true)).unwrap();
    let functions = "[[functions]]\nname = \"rated\"\nmodule = \"echo.wasm\"\ntriggers = [\"line/+/reading\"]\n\
                     [functions.limits]\ninvocations_per_s = 1\nburst = 10\n\n\
                     [[functions]]\nname = \"chatty\"\nmodule = \"chatty.wasm\"\ntriggers = [\"line/+/reading\"]\n\
                     [functions.limits]\nlog_lines_per_s = 5\nquarantine_after = 0\n";
    let config = press_line(&broker, 1024, functions);
    let config = config[..config.rfind("[[functions]]\nname = \"slow-echo\"").unwrap()].to_owned();
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    const N: u64 = 100;
    for i in 0..N {
        probe.publish("line/press-1/reading", &i.to_string());
    }
    // The burst of 10 goes through at once; the last reading marks the end of the run.
    probe.publish("line/end/reading", "end");
    let mut echoed = Vec::new();
    probe.collect_until("the burst's echoes", |m| {
        echoed.push(m.payload.clone());
        echoed.len() == 10
    });
    gateway.wait_for_log("the chatty function's last invocation", |l| {
        l.contains("line/end/reading") && l.contains("chatty")
    });
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let s = stopped.summary();
    let f = &s["functions"];
    let count = |function: &str, k: &str| f[function][k].as_u64().unwrap();
    // The first ten at once, then about one a second: every event has one outcome.
    assert!(count("rated", "ok") >= 10 && count("rated", "ok") < 20, "summary: {s}");
    assert_eq!(count("rated", "ok") + count("rated", "dropped_quota"), N + 1, "summary: {s}");
    assert_eq!(s["quota_dropped"].as_u64().unwrap(), count("rated", "dropped_quota"), "summary: {s}");
    // 101 failing invocations of 40 lines each: 32 an invocation are kept, and
    // of those the quota lets about 10 through (a burst of 2 x 5, then 5 a second).
    assert_eq!(count("chatty", "failed"), N + 1, "summary: {s}");
    let written =
        stopped.stderr.lines().filter(|l| l.contains("edgefn::function") && l.contains("chatty")).count() as u64;
    assert!((10..40).contains(&written), "{written} chatty lines written; stderr:\n{}", stopped.stderr);
    assert_eq!(written + count("chatty", "logs_dropped"), 40 * (N + 1), "summary: {s}");
    assert_eq!(s["logs_dropped"], count("chatty", "logs_dropped"), "summary: {s}");
    assert!(stopped.stderr.contains("over its quota (limits.invocations_per_s)"), "stderr:\n{}", stopped.stderr);
}

#[test]
fn a_deployed_version_that_fails_is_rolled_back_by_itself_and_stays_rolled_back() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = greenhouse(&broker, "").replace("[gateway]\n", &format!("[gateway]\ncontrol_socket = {socket:?}\n"));
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["v1", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    let cli = |args: &[&str]| {
        let out = support::gateway::edgefn_command().args(args).arg("--socket").arg(&socket).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    std::fs::write(dir.path().join("v1.wasm"), support::wasm::echo_to("v1")).unwrap();
    std::fs::write(dir.path().join("broken.wasm"), support::wasm::always_traps()).unwrap();
    let module = |v: &str| dir.path().join(format!("{v}.wasm")).display().to_string();
    let (ok, said) = cli(&["deploy", &module("v1"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(ok, "{said}");
    let (ok, said) = cli(&["deploy", &module("broken"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(ok && said.contains("replaced echo"), "{said}");

    // The broken version fails its first events; then the one before is back.
    for i in 0..12 {
        probe.publish("line/press-1/status", &format!("early {i}"));
    }
    gateway.wait_for_log("the rollback", |l| l.contains("rolled back by itself") && l.contains("echo"));
    probe.publish("line/press-1/status", "after");
    let (_, m) = probe.wait_for("the echo of the version rolled back to", |m| m.topic == "v1" && m.payload == "after");
    assert_eq!(m.payload, "after");
    let (ok, table) = cli(&["functions"]);
    assert!(ok && table.contains("rolled back from version") && table.contains("of its first"), "{table}");

    // It stays rolled back after a restart.
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let gateway = GatewayProcess::start(dir.path(), &config);
    probe.wait_online("gh-test");
    probe.publish("line/press-1/status", "restarted");
    probe.wait_for("the echo after a restart", |m| m.topic == "v1" && m.payload == "restarted");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert_eq!(stopped.summary()["invocations_failed"], 0);
}

#[test]
fn a_function_that_keeps_failing_is_quarantined_and_its_events_counted() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), support::wasm::always_traps()).unwrap();
    let broken = "[[functions]]\nname = \"broken\"\nmodule = \"broken.wasm\"\ntriggers = [\"zigbee2mqtt/+\"]\n\
                  [functions.limits]\nquarantine_after = 5\n";
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, broken));
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    for t in [30.0, 31.0, 32.0, 33.0, 34.0, 35.0, 36.0, 20.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
    }
    // Its neighbour on the same trigger still switches the fan on and off.
    let (_, on) = probe.wait_for("the fan on", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(on.payload, "ON");
    let (_, off) = probe.wait_for("the fan off", |m| m.topic == "cmnd/fan/POWER");
    assert_eq!(off.payload, "OFF");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let s = stopped.summary();
    let f = &s["functions"]["broken"];
    assert_eq!(
        (f["failed"].as_u64(), f["dropped_quarantine"].as_u64(), f["quarantined"].as_bool()),
        (Some(5), Some(3), Some(true)),
        "summary: {s}"
    );
    assert_eq!(s["quarantine_dropped"], 3, "summary: {s}");
    assert_eq!(stopped.stderr.matches("function quarantined: it failed").count(), 1, "stderr:\n{}", stopped.stderr);
}

#[test]
fn a_gateway_with_trusted_keys_deploys_only_bundles_they_signed() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = support::gateway::edgefn_command().args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (ok, said) = run(&["keygen", &path("team.key")]);
    assert!(ok, "{said}");
    let (ok, _) = run(&["keygen", &path("stranger.key")]);
    assert!(ok);
    let (ok, said) = run(&["keygen", &path("team.key")]);
    assert!(!ok && said.contains("never overwritten"), "{said}");
    let public = std::fs::read_to_string(path("team.key.pub")).unwrap();

    std::fs::write(path("echo.wasm"), support::wasm::echo_to("v1")).unwrap();
    let bundle = |out: &str, extra: &[&str]| {
        let module = path("echo.wasm");
        let mut args = vec!["bundle", &module[..], "--name", "echo", "--version", "1.0.0"];
        args.extend(["--trigger", "line/+/status", "--allow-publish", "v1", "-o"]);
        let out = path(out);
        args.push(&out);
        args.extend(extra);
        let (ok, said) = run(&args);
        assert!(ok, "{said}");
    };
    let team_key = path("team.key");
    let stranger_key = path("stranger.key");
    bundle("signed.edgefn", &["--sign", &team_key]);
    bundle("unsigned.edgefn", &[]);
    bundle("stranger.edgefn", &["--sign", &stranger_key]);
    // The module swapped after signing: the manifest's SHA-256 no longer matches.
    let mut swapped = std::fs::read(path("signed.edgefn")).unwrap();
    let module_end = swapped.len() - 4 - 64;
    swapped[module_end - 1] ^= 1;
    std::fs::write(path("swapped.edgefn"), swapped).unwrap();

    let socket = dir.path().join("control.sock");
    let config = greenhouse(&broker, "").replace(
        "[gateway]\n",
        &format!("[gateway]\ncontrol_socket = {socket:?}\ntrusted_keys = [\"{}\"]\n", public.trim()),
    );
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["v1", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    let deploy = |file: &str, extra: &[&str]| {
        let socket = socket.display().to_string();
        let file = path(file);
        let mut args = vec!["deploy", &file[..], "--socket", &socket];
        args.extend(extra);
        run(&args)
    };
    for (file, why) in [
        ("unsigned.edgefn", "it is not signed"),
        ("stranger.edgefn", "does not verify with any of gateway.trusted_keys"),
        ("swapped.edgefn", "does not match its manifest"),
    ] {
        let (ok, said) = deploy(file, &[]);
        assert!(!ok && said.contains("bundle refused, nothing changed") && said.contains(why), "{file}: {said}");
    }
    let (ok, said) = deploy("echo.wasm", &["--name", "echo", "--trigger", "line/+/status"]);
    assert!(!ok && said.contains("only bundles signed"), "{said}");
    let (ok, said) = deploy("signed.edgefn", &["--name", "other"]);
    assert!(!ok && said.contains("come from its manifest"), "{said}");

    let (ok, said) = deploy("signed.edgefn", &[]);
    assert!(ok && said.contains("installed echo") && said.contains("version 1.0.0"), "{said}");
    probe.publish("line/press-1/status", "hello");
    let (_, m) = probe.wait_for("the signed function's echo", |m| m.topic == "v1");
    assert_eq!(m.payload, "hello");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    // Its manifest's capabilities are in force: it may publish on v1 and nowhere else.
    let table = std::fs::read_to_string(dir.path().join("deployed/echo.toml")).unwrap();
    assert!(table.contains("publish = [\"v1\"]") && table.contains("# version 1.0.0"), "{table}");
}

#[test]
fn a_scaled_out_function_keeps_each_devices_readings_in_order_and_loses_none() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    // About a millisecond an event: a backlog builds, and the lanes share it.
    std::fs::write(dir.path().join("slow-echo.wasm"), support::wasm::slow_echo(500_000)).unwrap();
    let config = press_line(&broker, 1024, "").replace("fuel = 100_000_000", "fuel = 100_000_000\ninstances = 4");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["echo", "edgefn/line-test/status"]);
    probe.wait_online("line-test");

    const PER_DEVICE: usize = 100;
    for n in 0..PER_DEVICE {
        for press in 0..4 {
            probe.publish(&format!("line/press-{press}/reading"), &format!("{press}:{n}"));
        }
    }
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); 4];
    let mut total = 0;
    probe.collect_until("every reading echoed", |m| {
        if m.topic == "echo" {
            let (press, n) = m.payload.split_once(':').unwrap();
            seen[press.parse::<usize>().unwrap()].push(n.parse().unwrap());
            total += 1;
        }
        total == 4 * PER_DEVICE
    });
    for (press, numbers) in seen.iter().enumerate() {
        assert_eq!(numbers, &(0..PER_DEVICE).collect::<Vec<_>>(), "press-{press}: lost, repeated or reordered");
    }
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let s = stopped.summary();
    let f = &s["functions"]["slow-echo"];
    assert_eq!(f["ok"], 4 * PER_DEVICE as u64, "summary: {s}");
    assert!(f["instances"].as_u64().unwrap() > 1, "it never scaled out: summary: {s}");
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

#[test]
fn the_embedded_broker_logs_no_error_for_clients_that_come_and_go() {
    let broker = TestBroker::embedded();
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::start(dir.path(), &greenhouse(&broker, ""));
    let probe = Probe::connect(broker.port, "test-probe", &["edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    // A client that closes its socket before CONNECT (a port scan, a health
    // check), one that disconnects cleanly, and the gateway's own two at the stop.
    drop(std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap());
    probe.disconnect();
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "gateway exited with {}; stderr:\n{}", stopped.status, stopped.stderr);
    let errors: Vec<&str> = stopped.stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "ordinary connections logged as errors:\n{}", errors.join("\n"));
    assert!(stopped.stderr.contains("stopped:"), "stderr:\n{}", stopped.stderr);
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
