//! Store-and-forward, end to end: the real `edgefn` binary, a local broker for
//! the devices, and Mosquitto as the upstream (cloud) broker. The gateway is
//! killed with SIGKILL, the upstream goes away, files are damaged: every record
//! the gateway accepted must still arrive upstream.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use support::broker::TestBroker;
use support::cloud::{records, upstream_and_ack};
use support::gateway::GatewayProcess;
use support::probe::{Message, Probe};

const MOSQUITTO: &[&str] = &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"];

fn have_mosquitto() -> bool {
    support::require_tool("mosquitto", MOSQUITTO).is_some()
}

/// A gateway that forwards `sensors/#` upstream as stream `readings`.
fn forwarding_gateway(local: &TestBroker, upstream: &str, data_dir: &Path, extra: &str) -> String {
    format!(
        r#"
[gateway]
id = "gw-up"
shutdown_grace_ms = 5000

{local}

[upstream]
url = "{upstream}"
data_dir = "{data}"
linger_ms = 5
batch_max_records = 50
{extra}

[[upstream.forward]]
topics = ["sensors/#"]
stream = "readings"
"#,
        local = local.gateway_toml(),
        data = data_dir.display()
    )
}

/// The upstream broker's consumer, with a persistent session so that the broker
/// keeps what arrives while it is away; returns once its subscription is in place.
fn cloud_consumer(upstream: &TestBroker) -> Probe {
    let cloud = Probe::connect_persistent(upstream.port, "cloud-consumer", &["edgefn/#"]);
    // Our own message coming back proves the subscription is in place.
    cloud.wait_subscribed("edgefn/subscribed");
    cloud
}

fn outbox_bytes(data_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(data_dir.join("outbox")) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn records_pile_up_on_disk_while_upstream_is_down_and_all_arrive_in_order_when_it_returns() {
    if !have_mosquitto() {
        return;
    }
    let local = TestBroker::from_env();
    let mut upstream = TestBroker::mosquitto_persistent();
    // A subscriber with a persistent session: the upstream broker keeps its
    // subscription across the outage and queues what arrives while it is away.
    let cloud = cloud_consumer(&upstream);
    cloud.disconnect();
    upstream.stop_mosquitto();

    let dir = tempfile::tempdir().unwrap();
    let config = forwarding_gateway(&local, &format!("mqtt://127.0.0.1:{}", upstream.port), dir.path(), "");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let device = Probe::connect(local.port, "device", &["edgefn/gw-up/status"]);
    device.wait_online("gw-up");
    let n = 300;
    for i in 1..=n {
        device.publish(&format!("sensors/room{}", i % 3), &format!(r#"{{"n":{i}}}"#));
    }
    // The records pile up on disk (each is at least 20 bytes framed).
    gateway.wait_for_log("the upstream outage", |l| l.contains("upstream connection failed"));
    let deadline = std::time::Instant::now() + support::probe::WAIT;
    while outbox_bytes(dir.path()) < 20 * n {
        assert!(std::time::Instant::now() < deadline, "outbox holds {} bytes", outbox_bytes(dir.path()));
        std::thread::yield_now();
    }

    upstream.start_mosquitto();
    let cloud = Probe::connect_persistent(upstream.port, "cloud-consumer", &["edgefn/#"]);
    let mut got: Vec<(String, u64, String)> = Vec::new();
    cloud.collect_until("every record upstream", |m| {
        got.extend(records(m));
        got.iter().map(|r| r.1).collect::<BTreeSet<_>>().len() as u64 >= n
    });
    let seqs: Vec<u64> = got.iter().map(|r| r.1).collect();
    let distinct: Vec<u64> = seqs.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(distinct, (1..=n).collect::<Vec<_>>(), "no gaps");
    let first_seen: Vec<u64> =
        seqs.iter().scan(BTreeSet::new(), |seen, s| Some(seen.insert(*s).then_some(*s))).flatten().collect();
    assert_eq!(first_seen, distinct, "in order");
    for (_, seq, payload) in &got {
        assert_eq!(payload, &format!(r#"{{"n":{seq}}}"#), "records carry the device payload in order");
    }

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["upstream"]["accepted"], n, "{s}");
    assert_eq!(s["upstream"]["acknowledged"], n, "{s}");
    assert_eq!(s["upstream"]["depth"], 0, "{s}");
    // The upstream broker came up after the gateway: it connected once it could.
    assert!(s["upstream"]["connects"].as_u64() >= Some(1), "{s}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn kill_9_at_random_moments_loses_no_accepted_record() {
    if !have_mosquitto() {
        return;
    }
    // The local broker must outlive the gateway: Mosquitto, not the embedded one.
    let local = TestBroker::mosquitto();
    let upstream = TestBroker::mosquitto();
    let cloud = Probe::connect(upstream.port, "cloud-consumer", &["edgefn/#"]);
    let device = Probe::connect(local.port, "device", &["test/ack", "edgefn/gw-up/status"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ack.wasm"), upstream_and_ack()).unwrap();
    let functions = "[[functions]]\nname = \"ack\"\nmodule = \"ack.wasm\"\ntriggers = [\"readings/#\"]\n";
    let config = forwarding_gateway(&local, &format!("mqtt://127.0.0.1:{}", upstream.port), dir.path(), "")
        .replace("[[upstream.forward]]\ntopics = [\"sensors/#\"]\nstream = \"readings\"\n", "")
        + functions;

    let (seed, mut next_random) = support::random_from_clock();
    eprintln!("kill -9 test seed {seed}");

    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let mut sent = 0u64;
    for round in 0..5 {
        let gateway = GatewayProcess::start(dir.path(), &config);
        device.wait_online("gw-up");
        // Kill after a random number of acknowledged readings, while readings keep coming.
        let kill_after = 10 + next_random(60);
        let mut acks_this_round = 0;
        while acks_this_round < kill_after {
            sent += 1;
            device.publish(&format!("readings/r{round}"), &format!(r#"{{"n":{sent}}}"#));
            let (_, ack) = device.wait_for("an ack", |m| m.topic == "test/ack");
            accepted.insert(ack.payload);
            acks_this_round += 1;
            // A few more in flight, so the kill lands mid-stream.
            for _ in 0..next_random(3) {
                sent += 1;
                device.publish(&format!("readings/r{round}"), &format!(r#"{{"n":{sent}}}"#));
            }
        }
        gateway.kill9();
    }
    // A last run to drain what the killed ones left on disk.
    let gateway = GatewayProcess::start(dir.path(), &config);
    device.wait_online("gw-up");

    let mut received: BTreeMap<String, u64> = BTreeMap::new();
    cloud.collect_until("every accepted record upstream", |m| {
        for (_, _, payload) in records(m) {
            *received.entry(payload).or_default() += 1;
        }
        accepted.iter().all(|a| received.contains_key(a))
    });
    let duplicates: u64 = received.values().map(|c| c - 1).sum();
    eprintln!(
        "accepted {} records (acked locally), received {} distinct upstream, {duplicates} duplicates",
        accepted.len(),
        received.len()
    );
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    for a in &accepted {
        assert!(received.contains_key(a), "accepted record {a} never arrived upstream");
    }
}

#[test]
#[cfg_attr(
    any(edgefn_missing_mosquitto, edgefn_missing_openssl),
    ignore = "needs mosquitto and openssl: apt-get install mosquitto openssl (bash .ci/run runs it)"
)]
fn upstream_over_mutual_tls_refuses_a_wrong_client_certificate_and_a_wrong_ca() {
    let tools = [("mosquitto", MOSQUITTO), ("openssl", &["/usr/bin/openssl"][..])];
    if tools.iter().any(|(name, paths)| support::require_tool(name, paths).is_none()) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    support::certs::ca(certs.path(), "ca");
    support::certs::leaf(certs.path(), "server", "ca");
    support::certs::leaf(certs.path(), "gateway", "ca");
    support::certs::ca(certs.path(), "rogue-ca");
    support::certs::leaf(certs.path(), "rogue", "rogue-ca");
    let (upstream, tls_port) = TestBroker::mosquitto_tls(certs.path(), true);
    let local = TestBroker::from_env();
    let cloud = Probe::connect(upstream.port, "cloud-consumer", &["edgefn/#"]);
    let c = |f: &str| certs.path().join(f).display().to_string();
    let tls_with = |ca: &str, client: &str| {
        let (cert, key) = (c(&format!("{client}.crt")), c(&format!("{client}.key")));
        format!("ca_file = \"{}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n", c(ca))
    };
    let tls = |client: &str| tls_with("ca.crt", client);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let gateway = GatewayProcess::start(dir.path(), &forwarding_gateway(&local, &url, dir.path(), &tls("gateway")));
    let device = Probe::connect(local.port, "device", &["edgefn/gw-up/status"]);
    device.wait_online("gw-up");
    for i in 1..=5 {
        device.publish("sensors/x", &format!(r#"{{"n":{i}}}"#));
    }
    let mut got = BTreeSet::new();
    cloud.collect_until("records over mutual TLS", |m| {
        got.extend(records(m).into_iter().map(|r| r.1));
        got.len() == 5
    });
    assert!(gateway.stop().status.success());

    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue =
        GatewayProcess::start(rogue_dir.path(), &forwarding_gateway(&local, &url, rogue_dir.path(), &tls("rogue")));
    let line =
        rogue.wait_for_log("the broker refusing the client certificate", |l| l.contains("upstream connection failed"));
    let lower = line.to_lowercase();
    assert!(lower.contains("certificate") || lower.contains("alert") || lower.contains("tls"), "unclear error: {line}");
    let stopped = rogue.stop();
    assert!(stopped.status.success());
    assert!(!stopped.stderr.contains("upstream connected"), "{}", stopped.stderr);

    // Trusting the wrong CA, the gateway refuses the broker's certificate itself.
    let wary_dir = tempfile::tempdir().unwrap();
    let wary_config = forwarding_gateway(&local, &url, wary_dir.path(), &tls_with("rogue-ca.crt", "gateway"));
    let wary = GatewayProcess::start(wary_dir.path(), &wary_config);
    let line = wary.wait_for_log("the server certificate refused", |l| l.contains("upstream connection failed"));
    assert!(line.to_lowercase().contains("certificate"), "unclear error: {line}");
    assert!(wary.stop().status.success());
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn tail_reports_duplicates_and_gaps_per_stream() {
    if !have_mosquitto() {
        return;
    }
    let upstream = TestBroker::mosquitto();
    let mut tail = support::gateway::edgefn_command()
        .args(["upstream", "tail", "--broker", &format!("mqtt://127.0.0.1:{}", upstream.port), "--count", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(tail.stderr.take().unwrap());
    let mut lines = std::io::BufRead::lines(stderr).map_while(Result::ok);
    assert!(lines.by_ref().any(|l| l.contains("subscribed to edgefn/#")), "tail did not subscribe");
    let probe = Probe::connect(upstream.port, "sender", &["edgefn/#"]);
    probe.wait_subscribed("edgefn/subscribed");
    let batch = |seqs: &[u64]| {
        let records: Vec<edgefn::outbox::Record> = seqs
            .iter()
            .map(|&seq| edgefn::outbox::Record {
                id: seq,
                stream: "s".into(),
                seq,
                accepted_ms: 1,
                payload: b"{}".to_vec(),
            })
            .collect();
        String::from_utf8(edgefn::upstream::encode(edgefn::upstream::Format::Json, "gw", &records)).unwrap()
    };
    probe.publish("edgefn/gw/s", &batch(&[1, 2]));
    probe.publish("edgefn/gw/s", &batch(&[2]));
    probe.publish("edgefn/gw/s", &batch(&[4]));
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success());
    let rest: Vec<String> = lines.collect();
    assert!(rest.iter().any(|l| l == "duplicate gw/s #2"), "{rest:?}");
    assert!(rest.iter().any(|l| l == "gap gw/s: #3..#3 not seen (yet)"), "{rest:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["gw/s"]["received"], 3, "{summary}");
    assert_eq!(summary["gw/s"]["duplicates"], 1, "{summary}");
    assert_eq!(summary["gw/s"]["missing"], 1, "{summary}");
    assert!(stdout.contains("gw/s #4 1 {}"), "{stdout}");
}

/// Readings [`fill_a_refusing_outbox`] sends: about 1 KB each, so the outbox is
/// full after some 60.
const REFUSING_READINGS: u64 = 150;

/// Starts a gateway in `dir` with `function` on `readings/#`, an unreachable
/// upstream and a 64 KiB outbox that refuses when full, and an echo of `done`;
/// then sends [`REFUSING_READINGS`] readings and "done". The echo of "done" says
/// intake has taken every reading (functions have queues of their own, so some
/// may still be queued: stop runs them).
fn fill_a_refusing_outbox(local: &TestBroker, device: &Probe, dir: &Path, function: &str) -> GatewayProcess {
    std::fs::write(dir.join("echo.wasm"), support::wasm::slow_echo(1)).unwrap();
    let upstream = format!("mqtt://127.0.0.1:{}", support::free_port());
    let config = forwarding_gateway(local, &upstream, dir, "max_bytes = 65536\noverflow = \"refuse\"\n")
        .replace("[[upstream.forward]]\ntopics = [\"sensors/#\"]\nstream = \"readings\"\n", "")
        + function
        + "\n[[functions]]\nname = \"echo\"\nmodule = \"echo.wasm\"\ntriggers = [\"done\"]\n";
    let gateway = GatewayProcess::start(dir, &config);
    device.wait_online("gw-up");
    for i in 0..REFUSING_READINGS {
        device.publish("readings/r", &format!(r#"{{"n":{i},"pad":"{}"}}"#, "p".repeat(1000)));
    }
    device.publish("done", "done");
    gateway
}

#[test]
fn a_full_outbox_withholds_the_commands_of_invocations_whose_records_it_refused() {
    let local = TestBroker::from_env();
    let device = Probe::connect(local.port, "device", &["test/ack", "test/refused", "echo", "edgefn/gw-up/status"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ack.wasm"), upstream_and_ack()).unwrap();
    let function = "[[functions]]\nname = \"ack\"\nmodule = \"ack.wasm\"\ntriggers = [\"readings/#\"]\n";
    let gateway = fill_a_refusing_outbox(&local, &device, dir.path(), function);
    const N: u64 = REFUSING_READINGS;
    // (acks, told): commands for accepted records, and invocations told of a refusal.
    let mut seen = (0u64, 0u64);
    let count = |seen: &mut (u64, u64), m: &Message| {
        seen.0 += (m.topic == "test/ack") as u64;
        seen.1 += (m.topic == "test/refused") as u64;
    };
    device.collect_until("the echo after the last reading", |m| {
        count(&mut seen, m);
        m.topic == "echo"
    });
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    let (accepted, refused) = (s["upstream"]["accepted"].as_u64().unwrap(), s["upstream"]["refused"].as_u64().unwrap());
    let withheld = s["publishes_withheld"].as_u64().unwrap();
    // What a loaded machine could not hand the broker within the stop's
    // flush is counted as dropped at stop, never seen: the rest must arrive.
    let dropped_at_stop = s["publishes_dropped_stop"].as_u64().unwrap();
    let sent = accepted + refused - withheld - dropped_at_stop;
    if seen.0 + seen.1 < sent {
        // Sent while the gateway drained its queues on the way out.
        device.collect_until(&format!("the messages sent while stopping ({seen:?} of {sent}; {s})"), |m| {
            count(&mut seen, m);
            seen.0 + seen.1 == sent
        });
    }
    let (acks, told) = seen;
    assert_eq!(accepted + refused, N, "{s}");
    assert!(refused > 0, "the outbox never filled: {s}");
    // Once full, the outbox says so to the function (upstream returns -3)...
    assert!(told > 0, "no invocation was told the outbox refuses records: {s}");
    // ...and the records refused after the function was told they were
    // buffered have their invocations' commands withheld: every command seen
    // locally stands for a record on disk, and no other.
    assert!(withheld + told <= refused && withheld + told + dropped_at_stop >= refused, "told {told}: {s}");
    assert_eq!(s["publishes_out"], accepted + told + 1, "{s}");
    // Every command seen stands for a record on disk; none is missing but
    // those counted as dropped at stop.
    assert!(acks <= accepted && acks + dropped_at_stop >= accepted, "acks seen locally: {acks}; {s}");
    assert_eq!(s["invocations_failed"], 0, "{s}");
    assert!(stopped.stderr.contains("outbox: full"), "the refusal was not logged:\n{}", stopped.stderr);
}

#[test]
#[cfg_attr(edgefn_missing_root, ignore = "needs root to mount a tmpfs (bash .ci/run runs it as root)")]
fn functions_are_told_while_the_disk_is_short_of_its_reserve_and_carry_on_when_space_returns() {
    let Some(disk) = support::tmpfs::Tmpfs::mount(32 << 20) else { return };
    let local = TestBroker::from_env();
    let device = Probe::connect(local.port, "device", &["test/#", "edgefn/gw-up/status"]);
    std::fs::write(disk.path().join("ack.wasm"), upstream_and_ack()).unwrap();
    // Upstream unreachable: records stay in the outbox, on the small disk.
    let upstream = format!("mqtt://127.0.0.1:{}", support::free_port());
    let config = forwarding_gateway(&local, &upstream, disk.path(), "")
        .replace("shutdown_grace_ms = 5000\n", "shutdown_grace_ms = 5000\nmin_free_bytes = 8388608\n")
        + "[[functions]]\nname = \"ack\"\nmodule = \"ack.wasm\"\ntriggers = [\"readings/#\"]\n";
    let gateway = GatewayProcess::start(disk.path(), &config);
    device.wait_online("gw-up");
    let reading = |n: u32| {
        device.publish("readings/r", &format!(r#"{{"n":{n}}}"#));
        device.wait_for("the function's answer", |m| m.topic == "test/ack" || m.topic == "test/refused").1
    };
    assert_eq!(reading(1).topic, "test/ack");

    // Something else fills the disk: the outbox sees it on its own (no record
    // has to be refused first) and says so once.
    let filler = disk.fill();
    gateway.wait_for_log("the reserve refusal", |l| l.contains("the disk is nearly full"));
    let told = reading(2);
    assert_eq!((told.topic.as_str(), told.payload.as_str()), ("test/refused", r#"{"n":2}"#));

    // Space returns: the outbox notices by itself, and the function's records are taken again.
    std::fs::remove_file(filler).unwrap();
    gateway.wait_for_log("space returning", |l| l.contains("disk space returned; accepting again"));
    assert_eq!(reading(3).topic, "test/ack");

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["upstream"]["accepted"], 2, "{s}");
    assert_eq!(s["upstream"]["refused"], 1, "{s}");
    assert_eq!(s["upstream"]["depth"], 2, "{s}");
    assert_eq!(s["publishes_withheld"], 0, "{s}");
    assert_eq!(s["invocations_failed"], 0, "{s}");
    assert_eq!(stopped.stderr.matches("the disk is nearly full").count(), 1, "{}", stopped.stderr);
}

#[test]
#[cfg_attr(
    any(edgefn_missing_mosquitto, edgefn_missing_root),
    ignore = "needs mosquitto and root to mount a tmpfs: apt-get install mosquitto, run as root (bash .ci/run does)"
)]
fn when_its_own_records_fill_the_disk_the_outbox_refuses_at_the_reserve_and_takes_records_again_once_upstream_drains_it(
) {
    if !have_mosquitto() {
        return;
    }
    let Some(disk) = support::tmpfs::Tmpfs::mount(12 << 20) else { return };
    let local = TestBroker::from_env();
    let mut upstream = TestBroker::mosquitto_persistent();
    let cloud = cloud_consumer(&upstream);
    cloud.disconnect();
    upstream.stop_mosquitto();

    let device = Probe::connect(local.port, "device", &["test/#", "edgefn/gw-up/status"]);
    std::fs::write(disk.path().join("ack.wasm"), upstream_and_ack()).unwrap();
    let config = forwarding_gateway(
        &local,
        &format!("mqtt://127.0.0.1:{}", upstream.port),
        disk.path(),
        // The default outbox size, and so its 16 MiB segments: more than the
        // disk, so upstream drains records out of the active segment.
        "reconnect_max_ms = 500",
    )
    .replace("shutdown_grace_ms = 5000\n", "shutdown_grace_ms = 5000\nmin_free_bytes = 4194304\n")
        + "[[functions]]\nname = \"ack\"\nmodule = \"ack.wasm\"\ntriggers = [\"readings/#\"]\n";
    let gateway = GatewayProcess::start(disk.path(), &config);
    device.wait_online("gw-up");
    // The function sends it upstream and echoes it: 2 x 24 KiB, within its 64 KiB per invocation.
    let padding = "x".repeat(24 << 10);
    // What became of a reading: the function's answer, or none when its records
    // were refused at the write (the gate was still open when the function
    // called `upstream`): then its answer is withheld, and the log says so.
    const WITHHELD: &str = "the same invocations' publishes are withheld";
    let reading = |n: u32| -> &'static str {
        let withheld = gateway.logged(WITHHELD);
        device.publish("readings/r", &format!(r#"{{"n":{n},"pad":"{padding}"}}"#));
        let deadline = std::time::Instant::now() + support::probe::WAIT;
        loop {
            match device.next_within(std::time::Duration::from_millis(10)) {
                Some(m) if m.topic == "test/ack" => return "accepted",
                Some(m) if m.topic == "test/refused" => return "told",
                _ if gateway.logged(WITHHELD) > withheld => return "withheld",
                _ => assert!(std::time::Instant::now() < deadline, "no outcome for reading {n}"),
            }
        }
    };

    // Upstream is down: the records fill the disk until only the reserve is left.
    let (mut accepted, mut withheld) = (0, 0);
    loop {
        match reading(accepted + withheld + 1) {
            "accepted" => accepted += 1,
            "withheld" => withheld += 1,
            _ => break,
        }
        assert!(accepted < 1_000, "12 MiB took 1,000 records of 24 KiB and was not full");
    }
    assert!(accepted > 100, "refused after {accepted} records");
    gateway.wait_for_log("the reserve refusal", |l| l.contains("the disk is nearly full"));

    // Upstream returns and drains the outbox; its segments go, and with them the refusal.
    upstream.start_mosquitto();
    gateway.wait_for_log("space returning", |l| l.contains("disk space returned; accepting again"));
    assert_eq!(reading(accepted + withheld + 2), "accepted");
    accepted += 1;

    let cloud = Probe::connect_persistent(upstream.port, "cloud-consumer", &["edgefn/#"]);
    let mut got = BTreeSet::new();
    cloud.collect_until("every accepted record upstream", |m| {
        got.extend(records(m).into_iter().map(|(_, seq, _)| seq));
        got.len() as u64 >= accepted as u64
    });
    assert_eq!(got, (1..=accepted as u64).collect::<BTreeSet<_>>(), "no gaps, no sequence number spent on a refusal");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["upstream"]["accepted"], accepted, "{s}");
    assert_eq!(s["upstream"]["refused"], withheld + 1, "{s}");
    assert_eq!(s["publishes_withheld"], withheld, "{s}");
    assert_eq!(s["invocations_failed"], 0, "{s}");
    assert_eq!(stopped.stderr.matches("refusing records until space returns").count(), 1, "{}", stopped.stderr);
    eprintln!(
        "{accepted} records of 24 KiB accepted on a 12 MiB disk with a 4 MiB reserve, {withheld} refused at the \
         write (answers withheld), 1 refused at the call; every accepted one delivered"
    );
}

#[test]
fn the_sender_outlives_a_broker_that_acknowledges_out_of_order_twice_for_nothing_or_never() {
    use support::fake_broker::{FakeBroker, Script};
    let fake = FakeBroker::start(vec![
        Script::ReversedThenRepeated,
        Script::Unsolicited,
        Script::Mute,
        Script::Oversized { len: 9 << 20 },
    ]);
    let local = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let config = forwarding_gateway(
        &local,
        &format!("mqtt://127.0.0.1:{}", fake.port),
        dir.path(),
        "keep_alive_s = 5\nmax_inflight = 4",
    );
    let gateway = GatewayProcess::start(dir.path(), &config);
    let device = Probe::connect(local.port, "device", &["edgefn/gw-up/status"]);
    device.wait_online("gw-up");
    let mut published = 0u64;
    let mut publish = |n: u64| {
        for _ in 0..n {
            published += 1;
            device.publish("sensors/line1", &format!(r#"{{"n":{published}}}"#));
        }
    };

    // PUBACKs in reverse order, then one of them again: rumqttc drops the
    // connection on the repeat. What was acknowledged before it leaves the outbox.
    publish(120);
    fake.wait_connections(2);
    let acked_first: u64 = fake
        .received()
        .iter()
        .filter(|r| r.connection == 1 && r.acked)
        .map(|r| edgefn::upstream::decode(&r.payload).unwrap().records.len() as u64)
        .sum();
    let first_failure =
        gateway.wait_for_log("the first connection's end", |l| l.contains("upstream connection failed"));
    assert!(first_failure.contains("unsolicited ack"), "{first_failure}");
    assert!(acked_first >= 2, "connection 1 acknowledged {acked_first} records");
    assert!(
        first_failure.ends_with(&format!("acknowledged={acked_first}")),
        "the {acked_first} records acknowledged out of order before the repeat were released: {first_failure}"
    );
    // A PUBACK for a packet never sent, on the first publish.
    publish(60);
    fake.wait_connections(3);
    // Silence: the keep-alive notices, and what was sent is sent again.
    fake.wait_connections(4);
    // A packet over the client's limit, right after CONNACK.
    fake.wait_connections(5);
    // Then a broker that behaves: everything arrives.
    publish(60);
    let seqs = |received: &[support::fake_broker::Received]| -> BTreeSet<u64> {
        received
            .iter()
            .filter(|r| r.acked)
            .flat_map(|r| edgefn::upstream::decode(&r.payload).unwrap().records)
            .map(|r| r.seq)
            .collect()
    };
    fake.wait_received("every record acknowledged", |r| seqs(r).len() as u64 >= published);
    assert_eq!(seqs(&fake.received()), (1..=published).collect::<BTreeSet<_>>());

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["upstream"]["accepted"], published, "{s}");
    assert_eq!(s["upstream"]["acknowledged"], published, "{s}");
    assert_eq!(s["upstream"]["depth"], 0, "{s}");
    let failures: Vec<&str> = stopped.stderr.lines().filter(|l| l.contains("upstream connection failed")).collect();
    assert!(failures.len() >= 4, "each misbehaving connection ends in a logged failure:\n{}", stopped.stderr);
    eprintln!("connections: {:?}\nfailures:\n{}", fake.connections(), failures.join("\n"));
    // Each connection that misbehaved was used: publishes arrived on it.
    let received = fake.received();
    for (n, script) in fake.connections().iter().enumerate().take(3) {
        assert!(
            received.iter().any(|r| r.connection == n + 1),
            "nothing was published on connection {} ({script:?})",
            n + 1
        );
    }
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn while_the_upstream_link_is_slow_flapping_or_half_open_local_control_keeps_answering_and_every_record_arrives() {
    if !have_mosquitto() {
        return;
    }
    let local = TestBroker::from_env();
    let upstream = TestBroker::mosquitto_persistent();
    let cloud = cloud_consumer(&upstream);
    let link = support::proxy::Proxy::start(upstream.port);
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        forwarding_gateway(&local, &format!("mqtt://127.0.0.1:{}", link.port), dir.path(), "keep_alive_s = 5");
    config.push_str(
        "\n[[functions]]\nname = \"fan-control\"\nmodule = \"builtin:threshold\"\ntriggers = [\"sensors/#\"]\n\
         [functions.config]\nfield = \"temperature\"\nabove = 28\nbelow = 25\ncommand_topic = \"cmnd/fan/POWER\"\n",
    );
    let gateway = GatewayProcess::start(dir.path(), &config);
    let device = Probe::connect(local.port, "device", &["cmnd/fan/POWER", "edgefn/gw-up/status"]);
    device.wait_online("gw-up");
    gateway.wait_for_log("the upstream connection", |l| l.contains("upstream connected"));

    // Each reading crosses the fan's threshold, so each must be answered with a
    // command on the local broker whatever the upstream link is doing.
    let mut n = 0u64;
    let mut readings_answered = |count: u64| {
        for _ in 0..count {
            n += 1;
            let (t, want) = if n % 2 == 0 { (20, "OFF") } else { (30, "ON") };
            device.publish("sensors/greenhouse", &format!(r#"{{"n":{n},"temperature":{t}}}"#));
            let (_, m) = device.wait_for("the fan command", |m| m.topic == "cmnd/fan/POWER");
            assert_eq!(m.payload, want, "reading {n}");
        }
        n
    };

    // Slow: 200 ms each way.
    link.delay(std::time::Duration::from_millis(200));
    readings_answered(20);
    link.delay(std::time::Duration::ZERO);
    // Flapping: reset three times, each noticed and reconnected.
    for _ in 0..3 {
        readings_answered(10);
        link.cut();
        gateway.wait_for_log("the cut", |l| l.contains("upstream connection failed"));
        readings_answered(10);
        link.restore();
        gateway.wait_for_log("the reconnect", |l| l.contains("upstream connected"));
    }
    // Half-open: nothing flows until the keep-alive gives up on the link, at
    // least 5 s on. Local control does not wait for that: all 20 readings are
    // answered before the link is given up on.
    let failures = gateway.logged("upstream connection failed");
    link.blackhole();
    readings_answered(20);
    assert_eq!(
        gateway.logged("upstream connection failed"),
        failures,
        "the local commands waited until the half-open upstream link was given up on"
    );
    gateway.wait_for_log("the half-open link noticed", |l| l.contains("upstream connection failed"));
    let total = readings_answered(10);
    link.restore();

    let mut got = BTreeSet::new();
    cloud.collect_until("every record upstream", |m| {
        got.extend(records(m).into_iter().map(|(_, seq, _)| seq));
        got.len() as u64 >= total
    });
    assert_eq!(got, (1..=total).collect::<BTreeSet<_>>());
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["upstream"]["accepted"], total, "{s}");
    assert_eq!(s["upstream"]["acknowledged"], total, "{s}");
    assert_eq!(s["publishes_out"], total, "{s}");
}

/// Sends each event's payload upstream on stream "readings" and fails (returns 7)
/// when that is refused, as a careful function does.
fn upstream_or_fail() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
            (import "edgefn" "upstream" (func $upstream (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "readings")
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            (func (export "handle") (result i32) (local $len i32)
                (local.set $len (call $payload (i32.const 1024) (i32.const 60000)))
                (if (i32.ne (call $upstream (i32.const 0) (i32.const 8) (i32.const 1024) (local.get $len)) (i32.const 0))
                    (then (return (i32.const 7))))
                i32.const 0))"#,
    )
    .unwrap()
}

#[test]
fn a_function_failing_because_the_outbox_refuses_is_never_quarantined() {
    let local = TestBroker::from_env();
    let device = Probe::connect(local.port, "device", &["echo", "edgefn/gw-up/status"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("careful.wasm"), upstream_or_fail()).unwrap();
    // Quarantined after 3 failures in a row, were they its own.
    let function = "[[functions]]\nname = \"careful\"\nmodule = \"careful.wasm\"\ntriggers = [\"readings/#\"]\n\
                    [functions.limits]\nquarantine_after = 3\n";
    let gateway = fill_a_refusing_outbox(&local, &device, dir.path(), function);
    const N: u64 = REFUSING_READINGS;
    device.wait_for("the echo after the last reading", |m| m.topic == "echo");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    // Every reading ran; those whose upstream call was answered -3 failed, far
    // more than 3 in a row, each counted as the outbox's refusal, not the function's.
    let careful = &s["functions"]["careful"];
    assert_eq!(careful["ok"].as_u64().unwrap() + careful["failed"].as_u64().unwrap(), N, "{s}");
    let told = s["failed_outbox_refused"].as_u64().unwrap();
    assert!(told > 3, "too few invocations were refused to tell: {s}");
    assert_eq!(s["invocations_failed"], told, "{s}");
    assert_eq!(careful["failed"], told, "{s}");
    assert_eq!(careful["version_failed"], 0, "a refusal counted toward a rollback: {s}");
    assert_eq!(s["failed_error_code"], 0, "{s}");
    assert_eq!(s["quarantine_dropped"], 0, "{s}");
    assert!(!stopped.stderr.contains("function quarantined"), "{}", stopped.stderr);
}
