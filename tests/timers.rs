//! Timer triggers, against the real gateway process and a real broker: a
//! function run on an interval, a cron expression and at start; a slow one
//! that must not pile up timer events; missed runs across a restart under each
//! policy; a timer function replaced and removed while the gateway runs.
//!
//! Every wait is for an event (a message, a log line, an exit); the clock the
//! assertions read is the gateway's own (`event_time_ms`, a run's due time).
//! Against Mosquitto, with the probe subscribed before the gateway starts: a
//! start trigger runs before an embedded broker would have a subscriber.

mod support;

use std::path::Path;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::{Message, Probe};
use support::wasm::module;

/// Publishes `"<kind> <due ms> <trigger>"` to `ticks/<name>` at QoS 1 for every
/// event (kind 1: a timer), then keeps busy for `busy_ms` of wall-clock time.
fn clock(name: &str, busy_ms: u64) -> Vec<u8> {
    let topic = format!("ticks/{name}");
    module(
        r#"(import "edgefn" "event_kind" (func $kind (result i32)))
           (import "edgefn" "event_time_ms" (func $time (result i64)))
           (import "edgefn" "event_trigger" (func $trigger (param i32 i32) (result i32)))
           (import "edgefn" "now_ms" (func $now (result i64)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        &format!(
            "(local $p i32) (local $n i32) (local $until i64)
             (local.set $p (call $dec (call $time) (i32.const 1000)))
             (local.set $p (i32.sub (local.get $p) (i32.const 2)))
             (i32.store8 (local.get $p) (i32.add (i32.const 48) (call $kind)))
             (i32.store8 (i32.add (local.get $p) (i32.const 1)) (i32.const 32))
             (i32.store8 (i32.const 1000) (i32.const 32))
             (local.set $n (call $trigger (i32.const 1001) (i32.const 512)))
             (drop (call $publish (i32.const 2048) (i32.const {len}) (local.get $p)
                   (i32.sub (i32.add (i32.const 1001) (local.get $n)) (local.get $p)) (i32.const 1) (i32.const 0)))
             (local.set $until (i64.add (call $now) (i64.const {busy_ms})))
             (loop $w (br_if $w (i64.lt_s (call $now) (local.get $until))))
             i32.const 0",
            len = topic.len()
        ),
        &format!(r#"(data (i32.const 2048) "{topic}") {dec}"#, dec = support::wasm::DECIMAL),
    )
}

/// One tick: the event's kind, its due time and the trigger that fired.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    kind: u8,
    due_ms: u64,
    trigger: String,
}

fn tick(m: &Message) -> Tick {
    let mut parts = m.payload.splitn(3, ' ');
    let kind = parts.next().unwrap().parse().unwrap();
    let due_ms = parts.next().unwrap().parse().unwrap();
    Tick { kind, due_ms, trigger: parts.next().unwrap_or_default().to_owned() }
}

/// A configuration with one function per `(name, triggers, busy_ms)`, each a
/// `clock` module written to `dir`.
fn config(broker: &TestBroker, dir: &Path, functions: &[(&str, &str, u64)]) -> String {
    let mut text = format!("[gateway]\nid = \"gw-timers\"\nworkers = 2\n\n{}\n", broker.gateway_toml());
    for (name, triggers, busy_ms) in functions {
        std::fs::write(dir.join(format!("{name}.wasm")), clock(name, *busy_ms)).unwrap();
        text += &format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{name}.wasm\"\ntriggers = {triggers}\n\
             [functions.limits]\nfuel = 1_000_000_000\ntimeout_ms = 5_000\n\n"
        );
    }
    text
}

/// Waits for a condition on disk, looking every 10 ms, for at most 30 s.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + support::probe::WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited {:?} for {what}", support::probe::WAIT);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Collects `name`'s ticks until `done` says enough.
fn ticks_until(probe: &Probe, name: &str, mut done: impl FnMut(&[Tick]) -> bool) -> Vec<Tick> {
    let mut ticks = Vec::new();
    let topic = format!("ticks/{name}");
    probe.collect_until(&format!("ticks of {name}"), |m| {
        if m.topic == topic {
            ticks.push(tick(m));
        }
        done(&ticks)
    });
    ticks
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn a_function_runs_on_an_interval_a_cron_expression_and_at_start() {
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(broker.port, "probe-timers", &["ticks/#"]);
    probe.wait_subscribed("ticks/probe");
    let triggers = r#"[{ start = true }, { every = "300ms" }, { cron = "* * * * * *" }]"#;
    let gateway = GatewayProcess::start(dir.path(), &config(&broker, dir.path(), &[("clock", triggers, 0)]));
    let every = "{ every = \"300ms\" }";
    let cron = "{ cron = \"* * * * * *\" }";
    let of = |ticks: &[Tick], trigger: &str| ticks.iter().filter(|t| t.trigger == trigger).cloned().collect::<Vec<_>>();
    let ticks = ticks_until(&probe, "clock", |ticks| of(ticks, every).len() >= 4 && of(ticks, cron).len() >= 3);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // Every run is a timer event naming the trigger that fired.
    assert!(ticks.iter().all(|t| t.kind == 1), "{ticks:?}");
    // Start ran first, once.
    assert_eq!(ticks[0].trigger, "{ start = true }", "{ticks:?}");
    assert_eq!(of(&ticks, "{ start = true }").len(), 1, "{ticks:?}");
    // The interval's runs are due on its 300 ms grid (lateness never drifts
    // it; a machine too busy to keep up skips runs, never shifts them).
    let every_due: Vec<u64> = of(&ticks, every).iter().map(|t| t.due_ms).collect();
    assert!(every_due.windows(2).all(|w| w[1] > w[0] && (w[1] - w[0]) % 300 == 0), "{every_due:?}");
    // The cron expression's runs are due on whole seconds.
    let cron_due: Vec<u64> = of(&ticks, cron).iter().map(|t| t.due_ms).collect();
    assert!(cron_due.iter().all(|d| d % 1000 == 0), "{cron_due:?}");
    assert!(cron_due.windows(2).all(|w| w[1] > w[0]), "{cron_due:?}");
    // Each run went through the queues and counters like any event.
    let summary = stopped.summary();
    let runs = summary["timer_runs"].as_u64().unwrap();
    assert!(runs >= ticks.len() as u64, "{summary}");
    assert_eq!(summary["invocations_ok"].as_u64().unwrap(), runs, "{summary}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn a_slow_timer_function_is_not_queued_again_while_its_run_is_pending() {
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(broker.port, "probe-slow-timer", &["ticks/#"]);
    probe.wait_subscribed("ticks/probe");
    // Due every 100 ms, busy 450 ms a run: about four of five runs are skipped.
    let text = config(&broker, dir.path(), &[("slow", r#"[{ every = "100ms" }]"#, 450)]);
    let gateway = GatewayProcess::start(dir.path(), &text);
    let ticks = ticks_until(&probe, "slow", |ticks| ticks.len() >= 4);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let summary = stopped.summary();
    // Nothing piled up: every run queued was run, none dropped at the stop,
    // and the runs due meanwhile were counted as skipped.
    let runs = summary["timer_runs"].as_u64().unwrap();
    assert_eq!(summary["invocations_ok"].as_u64().unwrap(), runs, "{summary}");
    assert_eq!(summary["shutdown_dropped"], 0, "{summary}");
    assert_eq!(summary["queue_full_dropped"], 0, "{summary}");
    assert!(summary["timer_skipped"].as_u64().unwrap() >= 3, "{summary}");
    // Consecutive runs are at least one run's length apart, on the 100 ms grid.
    let due: Vec<u64> = ticks.iter().map(|t| t.due_ms).collect();
    assert!(due.windows(2).all(|w| w[1] - w[0] >= 400 && (w[1] - w[0]) % 100 == 0), "{due:?}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn runs_missed_while_the_gateway_was_down_run_once_or_are_skipped_as_each_timer_says() {
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let hourly_once = r#"{ every = "1h", missed = "run_once" }"#;
    let hourly = r#"{ every = "1h" }"#;
    // Last run 90 minutes ago, as a gateway that was then powered off would have recorded.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let last = now - 90 * 60_000;
    let timers = dir.path().join("timers");
    std::fs::create_dir_all(&timers).unwrap();
    std::fs::write(timers.join("once.json"), serde_json::json!({ hourly_once: last }).to_string()).unwrap();
    std::fs::write(timers.join("skip.json"), serde_json::json!({ hourly: last }).to_string()).unwrap();
    let probe = Probe::connect(broker.port, "probe-missed", &["ticks/#"]);
    probe.wait_subscribed("ticks/probe");
    let text = config(
        &broker,
        dir.path(),
        &[("once", &format!("[{hourly_once}]"), 0), ("skip", &format!("[{hourly}, {{ start = true }}]"), 0)],
    );
    let gateway = GatewayProcess::start(dir.path(), &text);
    // The missed run, due an hour after the last one.
    let (_, m) = probe.wait_for("the missed run of `once`", |m| m.topic == "ticks/once");
    assert_eq!(tick(&m), Tick { kind: 1, due_ms: last + 3_600_000, trigger: hourly_once.into() });
    probe.wait_for("`skip` starting", |m| m.topic == "ticks/skip");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // Two runs in all: the missed one of `once`, the start of `skip`; `skip`
    // missed its hourly run and skipped it.
    let summary = stopped.summary();
    assert_eq!((summary["timer_runs"].as_u64(), summary["invocations_ok"].as_u64()), (Some(2), Some(2)), "{summary}");
    // The run is recorded for the next start; `skip` keeps its phase.
    let recorded = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(timers.join(format!("{f}.json"))).unwrap()).unwrap()
    };
    assert_eq!(recorded("once")[hourly_once], last + 3_600_000);
    assert_eq!(recorded("skip")[hourly], last);
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn a_timer_function_replaced_runs_on_its_new_schedule_and_removed_stops() {
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(broker.port, "probe-live-timers", &["ticks/#"]);
    probe.wait_subscribed("ticks/probe");
    let keep = ("keep", r#"[{ every = "200ms" }]"#, 0);
    let before = config(&broker, dir.path(), &[("f", r#"[{ every = "200ms" }]"#, 0), keep]);
    let gateway = GatewayProcess::start(dir.path(), &before);
    ticks_until(&probe, "f", |t| t.len() >= 2);
    let recorded = dir.path().join("timers/f.json");
    wait_until("f's first run recorded on disk", || recorded.exists());

    // Replaced: from its first run on the new schedule, none on the old.
    let after = config(&broker, dir.path(), &[("f", r#"[{ every = "250ms" }]"#, 0), keep]);
    gateway.reload(dir.path(), "gateway.toml", &after);
    let new = "{ every = \"250ms\" }";
    let ticks = ticks_until(&probe, "f", |t| t.iter().filter(|t| t.trigger == new).count() >= 3);
    let first_new = ticks.iter().position(|t| t.trigger == new).unwrap();
    assert!(ticks[first_new..].iter().all(|t| t.trigger == new), "{ticks:?}");

    // Removed: its recorded runs go with it; the other timer runs on.
    gateway.reload(dir.path(), "gateway.toml", &config(&broker, dir.path(), &[keep]));
    gateway.wait_for_log("the reload that removes f", |l| l.contains("reloaded: removed f"));
    wait_until("f's recorded runs deleted", || !recorded.exists());
    ticks_until(&probe, "keep", |t| t.len() >= 2);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(stopped.summary()["functions"].get("f").is_none(), "{}", stopped.summary());
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn a_timer_deployed_with_edgefn_deploy_runs_is_listed_as_written_and_survives_a_restart() {
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(broker.port, "probe-deployed-timer", &["ticks/#"]);
    probe.wait_subscribed("ticks/probe");
    let socket = dir.path().join("control.sock");
    let text = config(&broker, dir.path(), &[("other", r#"["never/here"]"#, 0)])
        .replace("[gateway]\n", &format!("[gateway]\ncontrol_socket = {socket:?}\n"));
    let gateway = GatewayProcess::start(dir.path(), &text);
    gateway.wait_for_log("the control socket", |l| l.contains("control socket ready"));
    let cli = |args: &[&str]| {
        let out = support::gateway::edgefn_command().args(args).arg("--socket").arg(&socket).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let module = dir.path().join("beat.wasm");
    std::fs::write(&module, clock("beat", 0)).unwrap();
    let module = module.display().to_string();
    // A bad timer is refused by the command line, naming what is wrong.
    let (ok, said) = cli(&["deploy", &module, "--name", "beat", "--trigger", r#"{ every = "5 parsecs" }"#]);
    assert!(!ok && said.contains("triggers[0]: every: \"5 parsecs\" is not a duration"), "{said}");
    let every = r#"{ every = "200ms", jitter = "50ms" }"#;
    let (ok, said) = cli(&["deploy", &module, "--name", "beat", "--trigger", every, "--trigger", "{ start = true }"]);
    assert!(ok && said.contains("installed beat"), "{said}");
    let ticks = ticks_until(&probe, "beat", |t| t.iter().filter(|t| t.trigger == every).count() >= 2);
    assert_eq!(ticks[0].trigger, "{ start = true }", "{ticks:?}");
    let (ok, said) = cli(&["functions"]);
    assert!(ok && said.contains(&format!("{every}, {{ start = true }}")), "{said}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // Restarted, the deployed table reads back with its timers.
    let gateway = GatewayProcess::start(dir.path(), &text);
    let ticks = ticks_until(&probe, "beat", |t| t.iter().any(|t| t.trigger == "{ start = true }"));
    assert!(ticks.iter().all(|t| t.kind == 1), "{ticks:?}");
    ticks_until(&probe, "beat", |t| t.iter().any(|t| t.trigger == every));
    assert!(gateway.stop().status.success());
}

#[test]
fn edgefn_invoke_runs_a_function_as_a_timer_would() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("beat.wasm");
    std::fs::write(&module, clock("beat", 0)).unwrap();
    let run = |args: &[&str]| {
        let out = support::gateway::edgefn_command().arg("invoke").args(args).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = run(&["--module", module.to_str().unwrap(), "--timer"]);
    assert!(ok && said.contains("publish  ticks/beat") && said.contains(" { start = true }"), "{said}");
    assert!(said.lines().any(|l| l.starts_with("publish") && l.contains(" 1 ")), "kind 1, a timer: {said}");
    // A bundle runs as its first timer; one with none says so.
    let bundle = |name: &str, trigger: &str| {
        let path = dir.path().join(format!("{name}.edgefn"));
        let out = support::gateway::edgefn_command()
            .args(["bundle", module.to_str().unwrap(), "--name", name, "--version", "1", "--trigger", trigger, "-o"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        path.display().to_string()
    };
    let (ok, said) = run(&["--module", &bundle("hourly", r#"{ cron = "0 * * * *" }"#), "--timer"]);
    assert!(ok && said.contains(r#"{ cron = "0 * * * *" }"#), "{said}");
    // `edgefn bundle` checks the triggers as a deploy would.
    let out = support::gateway::edgefn_command()
        .args([
            "bundle",
            module.to_str().unwrap(),
            "--name",
            "bad",
            "--version",
            "1",
            "--trigger",
            r#"{ every = "5 parsecs" }"#,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("triggers[0]: every: \"5 parsecs\" is not a duration"), "{said}");
    let (ok, said) = run(&["--module", &bundle("topical", "a/+"), "--timer"]);
    assert!(!ok && said.contains("--timer: the bundle has no timer trigger (a/+)"), "{said}");
}
