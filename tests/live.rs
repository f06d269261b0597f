//! Live changes, end to end: reload on SIGHUP, deploy, replace under load,
//! rollback, signed bundles.

mod support;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::Probe;
use support::scenario::{greenhouse, reading};

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

    // An edit of the file waits for its reload: a deploy changes its own
    // function only, on the configuration in force.
    let edited = config.split("[[functions]]").next().unwrap().to_owned();
    std::fs::write(dir.path().join("gateway.toml"), &edited).unwrap();

    // Deploy: live as soon as the command returns.
    let (ok, said) = cli(&["deploy", &module("v1"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(ok && said.contains("installed echo"), "{said}");
    let deployed = std::time::Instant::now();
    probe.publish("line/press-1/status", "a");
    let (_, m) = probe.wait_for("the deployed function's echo", |m| m.topic == "v1");
    eprintln!("deploy returned -> first event handled by the new function: {:?}", deployed.elapsed());
    assert_eq!(m.payload, "a");
    // The gateway at a glance: its counters, then its functions.
    let (ok, status) = cli(&["status"]);
    assert!(ok && status.starts_with("events in 1 | invocations 1 ok, 0 failed"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("echo ") && l.contains("deployed")), "{status}");

    // Replace: later events go to the new version.
    let (ok, said) = cli(&["deploy", &module("v2"), "--name", "echo", "--trigger", "line/+/status"]);
    assert!(ok && said.contains("replaced echo"), "{said}");
    probe.publish("line/press-1/status", "b");
    let (_, m) = probe.wait_for("the new version's echo", |m| m.topic == "v2" || m.topic == "v1");
    assert_eq!((m.topic.as_str(), m.payload.as_str()), ("v2", "b"));
    let (ok, table) = cli(&["functions"]);
    assert!(ok && table.lines().any(|l| l.starts_with("echo ") && l.contains("deployed")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("fan-control ") && l.contains("config")), "{table}");
    std::fs::write(dir.path().join("gateway.toml"), &config).unwrap();

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
#[cfg_attr(edgefn_missing_root, ignore = "needs root to mount a tmpfs (bash .ci/run runs it as root)")]
fn a_deploy_that_would_eat_into_the_disk_reserve_is_refused_and_taken_once_space_returns() {
    let Some(disk) = support::tmpfs::Tmpfs::mount(16 << 20) else { return };
    let broker = TestBroker::from_env();
    let socket = disk.path().join("control.sock");
    let config = greenhouse(&broker, "")
        .replace("[gateway]\n", &format!("[gateway]\ncontrol_socket = {socket:?}\nmin_free_bytes = 8388608\n"));
    let gateway = GatewayProcess::start(disk.path(), &config);
    Probe::connect(broker.port, "test-probe", &["edgefn/gh-test/status"]).wait_online("gh-test");
    std::fs::write(disk.path().join("echo.wasm"), support::wasm::echo_to("v1")).unwrap();
    let deploy = || {
        let out = support::gateway::edgefn_command()
            .args(["deploy", disk.path().join("echo.wasm").to_str().unwrap(), "--name", "echo"])
            .args(["--trigger", "line/+/status", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), said)
    };
    // Another program leaves 6 MiB free, under the 8 MiB reserve.
    let filler = disk.fill();
    let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    f.set_len(f.metadata().unwrap().len() - (6 << 20)).unwrap();
    drop(f);
    let (ok, said) = deploy();
    assert!(!ok && said.contains("nothing changed") && said.contains("the disk is nearly full"), "{said}");
    assert!(!disk.path().join("deployed/echo.toml").exists(), "a refused deploy left its table");
    std::fs::remove_file(&filler).unwrap();
    let (ok, said) = deploy();
    assert!(ok && said.contains("installed echo"), "{said}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}

/// `edgefn status --watch`: the view comes again by itself, with the counters
/// moving as readings flow.
#[test]
fn status_watch_prints_the_view_again_as_the_counters_move() {
    use std::io::BufRead;
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = greenhouse(&broker, "").replace("[gateway]\n", &format!("[gateway]\ncontrol_socket = {socket:?}\n"));
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    let mut watch = support::gateway::edgefn_command()
        .args(["status", "--watch", "1", "--socket"])
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next_summary = || loop {
        let line = lines.next().expect("the view ended").unwrap();
        if line.starts_with("events in ") {
            return line;
        }
    };
    assert!(next_summary().starts_with("events in 0 |"));
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    probe.wait_for("the fan command", |m| m.topic == "cmnd/fan/POWER");
    // Each view comes a second after the last; the next ones show the reading.
    let shown = (0..30).map(|_| next_summary()).find(|l| l.starts_with("events in 1 | invocations 1 ok"));
    assert!(shown.is_some(), "the watched view never showed the reading");
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert!(gateway.stop().status.success());
}
