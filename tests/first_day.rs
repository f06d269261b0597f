//! A newcomer's first day, as README leads them: the gateway started with the
//! README's relative `--config`, and `edgefn deploy` typed as README shows it,
//! from another directory, with no socket flag.

mod support;

use std::path::{Path, PathBuf};

use support::broker::TestBroker;
use support::gateway::{edgefn_command, GatewayProcess};
use support::probe::Probe;

/// `device-configs/greenhouse.toml` as shipped, its `[broker]` section swapped
/// for the test broker's (the only change a user makes: where their broker is).
fn shipped_greenhouse(broker: &TestBroker) -> String {
    let shipped = std::fs::read_to_string(support::repo_root().join("device-configs/greenhouse.toml")).unwrap();
    let start = shipped.find("[broker]\n").expect("greenhouse.toml has a [broker] section");
    let end = start + shipped[start..].find("\n[[").expect("a section follows [broker]") + 1;
    format!("{}{}\n{}", &shipped[..start], broker.gateway_toml(), &shipped[end..])
}

/// An `edgefn` client command run in `cwd`, as a user types it; (success, what it printed).
fn edgefn_in(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> (bool, String) {
    let out = edgefn_command()
        .current_dir(cwd)
        .args(args)
        .env_remove("EDGEFN_SOCKET")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_readme_deploy_works_on_a_gateway_started_with_a_relative_config_and_no_socket_flag() {
    let broker = TestBroker::from_env();
    let root = tempfile::tempdir().unwrap();
    let site = root.path().join("site");
    let laptop = root.path().join("laptop");
    let runtime_dir = root.path().join("xdg");
    for dir in [&site.join("device-configs"), &laptop, &runtime_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(site.join("device-configs/greenhouse.toml"), shipped_greenhouse(&broker)).unwrap();
    std::fs::create_dir_all(laptop.join("my-function")).unwrap();
    std::fs::write(laptop.join("my-function/my-function.wasm"), support::wasm::echo_to("fan-2/echo")).unwrap();
    std::fs::write(laptop.join("broken.wasm"), b"not wasm").unwrap();
    // No /run/edgefn for this user on a development machine: the session's runtime directory.
    let env: &[(&str, &Path)] = &[("XDG_RUNTIME_DIR", &runtime_dir)];
    let config = Path::new("device-configs/greenhouse.toml");

    // As README: `edgefn run --config device-configs/greenhouse.toml`, in the checkout.
    let gateway = GatewayProcess::start_in(&site, config, env);
    let ready = gateway.wait_for_log("its control socket", |l| l.contains("control socket ready"));
    assert!(ready.contains(&runtime_dir.join("edgefn/control.sock").display().to_string()), "{ready}");
    let probe = Probe::connect(broker.port, "first-day-probe", &["fan-2/echo", "edgefn/greenhouse-1/status"]);
    probe.wait_online("greenhouse-1");

    // As README, from another directory: `edgefn deploy my-function/my-function.wasm --name fan-control-2 ...`.
    let deploy = [
        "deploy",
        "my-function/my-function.wasm",
        "--name",
        "fan-control-2",
        "--trigger",
        "zigbee2mqtt/+",
        "--set",
        "limit=28",
        "--set",
        "command_topic=cmnd/greenhouse-fan/POWER",
    ];
    let (ok, said) = edgefn_in(&laptop, env, &deploy);
    assert!(ok && said.contains("installed fan-control-2"), "{said}");
    probe.publish("zigbee2mqtt/greenhouse-climate", r#"{"temperature":29.5}"#);
    let (_, echo) = probe.wait_for("the deployed function's publish", |m| m.topic == "fan-2/echo");
    assert_eq!(echo.payload, r#"{"temperature":29.5}"#);
    let (ok, table) = edgefn_in(&laptop, env, &["functions"]);
    assert!(ok && table.lines().any(|l| l.starts_with("fan-control-2 ") && l.contains("deployed")), "{table}");

    // Refusals name what the user gave, not the gateway's copy or its composed file.
    let (ok, said) = edgefn_in(&laptop, env, &["deploy", "broken.wasm", "--name", "fan-control-2", "--trigger", "a"]);
    assert!(!ok && said.contains("nothing changed") && said.contains("broken.wasm"), "{said}");
    assert!(!said.contains("deployed/"), "names the gateway's copy: {said}");
    let bad_trigger = ["deploy", "my-function/my-function.wasm", "--name", "fan-control-3", "--trigger", "a/#/b"];
    let (ok, said) = edgefn_in(&laptop, env, &bad_trigger);
    assert!(!ok && said.contains("triggers[0]: topic filter \"a/#/b\""), "{said}");
    assert!(!said.contains("functions[") && !said.contains("greenhouse.toml:"), "{said}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert!(!runtime_dir.join("edgefn/control.sock").exists(), "the socket outlived the gateway");

    // A restart from another directory, the config relative to it, and the
    // socket named by EDGEFN_SOCKET: the deployed function comes back.
    let socket = root.path().join("elsewhere.sock");
    let gateway = GatewayProcess::start_in(
        &laptop,
        &PathBuf::from("../site/device-configs/greenhouse.toml"),
        &[("XDG_RUNTIME_DIR", &runtime_dir), ("EDGEFN_SOCKET", &socket)],
    );
    gateway.wait_for_log("its control socket", |l| l.contains("control socket ready"));
    probe.wait_online("greenhouse-1");
    probe.publish("zigbee2mqtt/greenhouse-climate", r#"{"temperature":30.0}"#);
    let (_, echo) = probe.wait_for("the deployed function after the restart", |m| m.topic == "fan-2/echo");
    assert_eq!(echo.payload, r#"{"temperature":30.0}"#);
    let (ok, said) = edgefn_in(&laptop, env, &["remove", "fan-control-2", "--socket", socket.to_str().unwrap()]);
    assert!(ok && said.contains("removed fan-control-2"), "{said}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}
