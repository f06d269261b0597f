//! End to end: the real `edgefn` binary, a real broker (embedded by default,
//! Mosquitto with `EDGEFN_TEST_BROKER=mosquitto`), the real example functions
//! in each language, and a probe publishing readings as a device would.

mod support;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::Probe;
use support::scenario::{greenhouse, numbered_readings_echoed, press_line, reading};

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
    assert_eq!(stopped.ran_or_kept(), 10, "summary: {summary}");
    assert_eq!(summary["invocations_failed"], 0, "summary: {summary}");
    // Nothing was queued: shutdown did not have to wait out its grace period.
    assert!(!stopped.stderr.contains("grace period over"), "stderr:\n{}", stopped.stderr);
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
    assert_eq!(stopped.ran_or_kept(), 14, "summary: {}", stopped.summary());
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
    // Every reading has one outcome in each function: run, or (fan-control
    // only, whose readings the test does not wait for) kept in its spool for
    // after the restart, which a slow first invocation under load makes it do.
    let summary = stopped.summary();
    for function in ["fan-control".to_owned()].into_iter().chain(langs.iter().map(|l| format!("summary-{l}"))) {
        let f = &summary["functions"][&function];
        let outcomes = f["ok"].as_u64().unwrap() + f["spool_kept"].as_u64().unwrap();
        assert_eq!((outcomes, f["failed"].as_u64()), (3, Some(0)), "{function}: {f}\n{}", stopped.stderr);
    }
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

/// A function's own lines and its failure are written inside a span naming
/// the invocation (function, module, trigger kind, topic or route, device),
/// in the text log and in `--log-format json`.
#[test]
fn a_functions_lines_and_its_failure_are_logged_inside_its_invocations_span() {
    let broker = TestBroker::from_env();
    for json in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("talk.wasm"), support::wasm::logging_echo(1)).unwrap();
        std::fs::write(dir.path().join("trap.wasm"), support::wasm::always_traps()).unwrap();
        let config = format!(
            "[gateway]\nid = \"span-test\"\n\n{}\n\
             [[functions]]\nname = \"talk\"\nmodule = \"talk.wasm\"\ntriggers = [\"line/+/reading\"]\n\n\
             [[functions]]\nname = \"trap\"\nmodule = \"trap.wasm\"\ntriggers = [\"test/trap\"]\n",
            broker.gateway_toml()
        );
        let env: &[(&str, &std::path::Path)] =
            if json { &[("EDGEFN_LOG_FORMAT", std::path::Path::new("json"))] } else { &[] };
        let gateway = GatewayProcess::start_with_env(dir.path(), "gateway.toml", &config, env);
        let probe = Probe::connect(broker.port, "span-probe", &["edgefn/span-test/status"]);
        probe.wait_online("span-test");
        probe.publish("line/press-7/reading", "hello from press 7");
        let said = gateway.wait_for_log("the function's own line", |l| l.contains("hello from press 7"));
        probe.publish("test/trap", "x");
        let failed = gateway.wait_for_log("the failure", |l| l.contains("invocation failed"));
        match json {
            false => {
                assert!(said.contains("invocation{function=talk module="), "{said}");
                assert!(said.contains("trigger=message subject=line/press-7/reading"), "{said}");
                assert!(
                    failed.contains("invocation{function=trap module=") && failed.contains("subject=test/trap"),
                    "{failed}"
                );
            }
            true => {
                for (line, function, subject) in
                    [(&said, "talk", "line/press-7/reading"), (&failed, "trap", "test/trap")]
                {
                    let line: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                    let span = &line["spans"][0];
                    assert_eq!(span["name"], "invocation", "{line}");
                    assert_eq!(
                        (span["function"].as_str(), span["subject"].as_str()),
                        (Some(function), Some(subject)),
                        "{line}"
                    );
                    assert_eq!(span["trigger"], "message", "{line}");
                    assert!(
                        span["module"].as_str().is_some_and(|m| m.ends_with(&format!("{function}.wasm"))),
                        "{line}"
                    );
                }
            }
        }
        let stopped = gateway.stop();
        assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    }
}
