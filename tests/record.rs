//! Record and replay (issue 24, item 5), as a user runs them: `edgefn record`
//! against a running gateway writes what reached a function, what the gateway
//! answered it and what it did; `edgefn replay` runs it again through the same
//! module (the same effects, exit 0) or a changed one (the difference side by
//! side, exit 1).

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use support::broker::TestBroker;
use support::gateway::{edgefn_command, GatewayProcess};
use support::probe::Probe;
use support::wasm::{counter, counter_by};

#[test]
fn a_recording_replays_exactly_and_a_changed_function_shows_where_it_differs() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    std::fs::write(dir.path().join("counter.wasm"), counter("")).unwrap();
    std::fs::write(dir.path().join("by-two.wasm"), counter_by(2, "")).unwrap();
    let config = format!(
        "[gateway]\nid = \"gw-rec\"\nmodules_dir = \"{}\"\ncontrol_socket = {socket:?}\n\n{}\n\
         [[functions]]\nname = \"counter\"\nmodule = \"counter.wasm\"\ntriggers = [\"tick/+\"]\n",
        dir.path().display(),
        broker.gateway_toml()
    );
    let gateway = GatewayProcess::start(dir.path(), &config);
    let probe = Probe::connect(broker.port, "rec-probe", &["count", "edgefn/gw-rec/status"]);
    probe.wait_online("gw-rec");
    // Three ticks before the recording: the state it starts from holds 3.
    for i in 0..3 {
        probe.publish(&format!("tick/{i}"), "");
    }
    probe.collect_until("the count to reach 3", |m| m.topic == "count" && m.payload == "3");

    let refused = edgefn_command()
        .args(["record", "nosuch", "-o", "x.jsonl", "--socket"])
        .arg(&socket)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("there is no function \"nosuch\""));

    // Recorded from a relative path, as a user in that directory types it.
    let mut record = edgefn_command()
        .args(["record", "counter", "-o", "ticks.jsonl", "--events", "5", "--socket"])
        .arg(&socket)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(record.stderr.take().unwrap()).lines();
    let started = progress.next().expect("a line when the recording starts").unwrap();
    assert!(started.contains("recording up to 5 invocations of counter"), "{started}");
    std::thread::spawn(move || progress.for_each(drop));
    for i in 0..5 {
        probe.publish(&format!("tick/{i}"), &format!("reading {i}"));
    }
    let recorded = record.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&recorded.stdout);
    assert!(recorded.status.success(), "{said}");
    let file = dir.path().join("ticks.jsonl");
    assert!(said.contains(&format!("recorded 5 invocations of counter into {}", file.display())), "{said}");

    // The file: a header, then each invocation with its event and effects.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines[0]["edgefn_recording"], 1);
    assert_eq!(lines[0]["function"], "counter");
    let published: Vec<&str> = lines[1..]
        .iter()
        .flat_map(|e| e["effects"].as_array().unwrap())
        .filter_map(|e| e["publish"]["payload"].as_str())
        .collect();
    assert_eq!(published, ["4", "5", "6", "7", "8"], "{text}");
    let payloads: Vec<&str> = lines[1..].iter().map(|e| e["event"]["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, ["reading 0", "reading 1", "reading 2", "reading 3", "reading 4"]);

    // The same module, with no state of its own: the recorded answers make it
    // count from 3 again, so every effect is the same.
    let same = edgefn_command().arg("replay").arg(&file).output().unwrap();
    let out = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{out}{}", String::from_utf8_lossy(&same.stderr));
    assert!(
        out.contains("replayed 5 invocations of counter through") && out.contains("5 the same, 0 different"),
        "{out}"
    );

    // A version that counts by two: each invocation differs, side by side.
    let changed =
        edgefn_command().arg("replay").arg(&file).arg("--module").arg(dir.path().join("by-two.wasm")).output().unwrap();
    let out = String::from_utf8_lossy(&changed.stdout);
    assert_eq!(changed.status.code(), Some(1), "{out}");
    assert!(out.contains("0 the same, 5 different"), "{out}");
    let first = out.lines().skip_while(|l| !l.starts_with("invocation 1 ")).take(4).collect::<Vec<_>>().join("\n");
    assert!(first.contains("message tick/0"), "{out}");
    assert!(
        first.lines().any(|l| l.starts_with("  !")
            && l.contains(r#"publish count "4" qos 1"#)
            && l.contains(r#"publish count "5" qos 1"#)),
        "{out}"
    );

    // Not a recording: named, with its line.
    let not = edgefn_command().arg("replay").arg(dir.path().join("gateway.toml")).output().unwrap();
    assert!(!not.status.success());
    assert!(String::from_utf8_lossy(&not.stderr).contains("gateway.toml:1: not a recording"));
    gateway.stop();
}
