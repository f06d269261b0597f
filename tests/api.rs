//! The HTTP API as its users meet it: a health check anyone may call, metrics
//! and the functions' table behind bearer tokens, scraped by a real Prometheus.

mod support;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::http::get;
use support::probe::Probe;
use support::scenario::{greenhouse, reading};

const READER: &str = "reader-token-0123456789";
const CALLER: &str = "caller-token-0123456789";
const LIMITED: &str = "limited-token-0123456789";
const DEPLOYER: &str = "deployer-token-0123456789";
const DELETER: &str = "deleter-token-0123456789";

fn sha256(token: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// The greenhouse with an API on `port` and five tokens: "grafana" may
/// read, "ci" may only deploy, "app" may invoke, "dashboard" may read once a
/// second (two at once), "cleaner" may invoke one route only; and `extra`
/// functions.
fn greenhouse_with_api(broker: &TestBroker, port: u16, extra: &str) -> String {
    format!(
        "{}\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n[[api.tokens]]\nname = \"grafana\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n\
         [[api.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"deploy\"]\n\n\
         [[api.tokens]]\nname = \"app\"\nsha256 = \"{}\"\nscopes = [\"invoke\"]\n\n\
         [[api.tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nscopes = [\"read\"]\nrate_per_s = 1\nburst = 2\n\n\
         [[api.tokens]]\nname = \"cleaner\"\nsha256 = \"{}\"\nscopes = [\"invoke\"]\n\
         routes = [\"DELETE /rooms/{{room}}/note\"]\n",
        greenhouse(broker, extra),
        sha256(READER),
        sha256(DEPLOYER),
        sha256(CALLER),
        sha256(LIMITED),
        sha256(DELETER)
    )
}

/// The greenhouse with its API, running, and a probe on its broker.
struct Running {
    _broker: TestBroker,
    dir: tempfile::TempDir,
    port: u16,
    gateway: GatewayProcess,
    probe: Probe,
}

impl Running {
    fn start() -> Running {
        Self::with("", |_| {})
    }

    /// With `extra` functions, their modules written by `prepare` first.
    fn with(extra: &str, prepare: impl FnOnce(&std::path::Path)) -> Running {
        let broker = TestBroker::from_env();
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let port = support::free_port();
        let gateway = GatewayProcess::start(dir.path(), &greenhouse_with_api(&broker, port, extra));
        let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
        probe.wait_online("gh-test");
        gateway.wait_for_log("the API listening", |l| l.contains("HTTP API ready"));
        Running { _broker: broker, dir, port, gateway, probe }
    }
}

/// The value of one sample of a Prometheus text page, if present.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn health_is_open_and_metrics_and_functions_need_a_token_with_the_read_scope() {
    let Running { _broker, dir: _dir, port, gateway, probe } = Running::start();

    let health = get(port, "/healthz", None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let anonymous = get(port, "/metrics", None);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert_eq!(get(port, "/metrics", Some("not-a-token")).status, 401);
    let wrong_scope = get(port, "/api/functions", Some(DEPLOYER));
    assert_eq!(wrong_scope.status, 403, "{wrong_scope:?}");
    let error: serde_json::Value = serde_json::from_str(&wrong_scope.body).unwrap();
    assert_eq!(error["error"], "token \"ci\" lacks the \"read\" scope");
    assert_eq!(get(port, "/nowhere", Some(READER)).status, 404);
    let post = support::http::request(port, "POST", "/metrics", Some(READER)).unwrap();
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));

    // Two readings: the fan goes on, then off.
    for t in [30.0, 20.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
        probe.wait_for("a fan command", |m| m.topic == "cmnd/fan/POWER");
    }
    // Counted once the invocation has ended, which may be just after its command.
    let deadline = std::time::Instant::now() + support::probe::WAIT;
    let page = loop {
        let metrics = get(port, "/metrics", Some(READER));
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        if sample(&metrics.body, "edgefn_function_ok_total{function=\"fan-control\"}") == Some(2.0) {
            break metrics.body;
        }
        assert!(std::time::Instant::now() < deadline, "the metrics never showed 2 invocations:\n{}", metrics.body);
    };
    assert_eq!(sample(&page, "edgefn_events_in_total"), Some(2.0), "{page}");
    assert_eq!(sample(&page, "edgefn_invocations_ok_total"), Some(2.0), "{page}");
    assert_eq!(sample(&page, "edgefn_commands_out_total"), Some(2.0), "{page}");
    assert_eq!(sample(&page, "edgefn_function_quarantined{function=\"fan-control\"}"), Some(0.0), "{page}");
    assert!(page.contains("# TYPE edgefn_events_in_total counter\n"), "{page}");
    // The process itself: a few megabytes resident, a few descriptors open.
    let rss = sample(&page, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!((1e6..200e6).contains(&rss), "resident {rss}: {page}");
    assert!(sample(&page, "process_open_fds").is_some_and(|n| n >= 3.0), "{page}");
    // Started before this test asked, and not before the test began.
    let began = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 600.0;
    let start = sample(&page, "process_start_time_seconds").unwrap_or(0.0);
    assert!(start > began && start <= began + 600.0 + 1.0, "start {start}: {page}");

    let functions = get(port, "/api/functions", Some(READER));
    assert_eq!((functions.status, functions.header("content-type")), (200, Some("application/json")));
    let rows: serde_json::Value = serde_json::from_str(&functions.body).unwrap();
    assert_eq!(rows[0]["name"], "fan-control", "{rows}");
    assert_eq!(rows[0]["ok"], 2, "{rows}");

    // The devices: the climate sensor was heard twice (no availability topic:
    // its first reading made it online); the fan never spoke.
    let devices = get(port, "/api/devices", Some(READER));
    assert_eq!((devices.status, devices.header("content-type")), (200, Some("application/json")));
    let devices: serde_json::Value = serde_json::from_str(&devices.body).unwrap();
    assert_eq!(
        (devices[0]["id"].as_str(), devices[0]["state"].as_str()),
        (Some("climate"), Some("online")),
        "{devices}"
    );
    assert_eq!(devices[0]["messages"], 2, "{devices}");
    assert!(devices[0]["last_seen_ms"].as_u64().is_some(), "{devices}");
    assert_eq!((devices[1]["id"].as_str(), devices[1]["state"].as_str()), (Some("fan"), Some("unknown")), "{devices}");
    assert_eq!(get(port, "/api/devices", Some(DEPLOYER)).status, 403);

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert_eq!(stopped.summary()["invocations_ok"], 2);
    assert!(!stopped.stderr.contains(READER) && !stopped.stderr.contains(DEPLOYER), "a token was logged");
}

#[test]
fn a_port_already_taken_leaves_the_gateway_running_without_its_api_and_says_so() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let gateway = GatewayProcess::start(dir.path(), &greenhouse_with_api(&broker, port, ""));
    let probe = Probe::connect(broker.port, "test-probe", &["cmnd/#", "edgefn/gh-test/status"]);
    probe.wait_online("gh-test");
    gateway.wait_for_log("the API's refusal", |l| l.contains("the HTTP API cannot listen there (api.listen)"));
    probe.publish("zigbee2mqtt/climate", &reading(30.0));
    probe.wait_for("a fan command", |m| m.topic == "cmnd/fan/POWER");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}

#[test]
#[cfg_attr(edgefn_missing_prometheus, ignore = "needs prometheus: apt-get install prometheus (bash .ci/run does)")]
fn prometheus_scrapes_the_gateway_with_its_token_and_reads_the_invocations() {
    let Some(prometheus) = support::require_tool("prometheus", &["/usr/bin/prometheus"]) else { return };
    // The readings also go upstream, to a broker that is not there: they wait
    // in the outbox, whose depth Prometheus then reads.
    let away = support::free_port();
    let upstream = format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{away}\"\ndata_dir = \"data\"\n\
         [[upstream.forward]]\ntopics = [\"zigbee2mqtt/climate\"]\nstream = \"climate\"\n"
    );
    let Running { _broker, dir, port, gateway, probe } = Running::with(&upstream, |_| {});
    for t in [30.0, 20.0, 31.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
        probe.wait_for("a fan command", |m| m.topic == "cmnd/fan/POWER");
    }

    // Prometheus as a gateway owner sets it up: a scrape job with the token in a file.
    std::fs::write(dir.path().join("token"), READER).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: edgefn\n    authorization:\n      \
         credentials_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        dir.path().join("token").display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let web = support::free_port();
    let server = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);

    // Prometheus answers queries once it has scraped: ask until the sample is in.
    let query = "/api/v1/query?query=edgefn_function_ok_total%7Bfunction%3D%22fan-control%22%7D";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let value = loop {
        let answer = support::http::request(web, "GET", query, None);
        if let Some(answer) = answer.as_ref().ok().filter(|a| a.status == 200) {
            let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            if let Some(v) = json["data"]["result"][0]["value"][1].as_str() {
                break v.to_owned();
            }
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "Prometheus never had the sample ({answer:?}); its log:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(value, "3");
    // The invocation-time histogram, as PromQL reads it: its count, and a p99
    // within its buckets (each invocation takes well under a second).
    let try_ask = |promql: &str| {
        let q: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let answer = support::http::request(web, "GET", &format!("/api/v1/query?query={q}"), None).unwrap();
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        json["data"]["result"][0]["value"][1].as_str().map(str::to_owned).ok_or(json)
    };
    let ask = |promql: &str| try_ask(promql).unwrap_or_else(|json| panic!("{promql}: {json}"));
    assert_eq!(ask("edgefn_function_invocation_seconds_count{function=\"fan-control\"}"), "3");
    let p99: f64 = ask("histogram_quantile(0.99, edgefn_function_invocation_seconds_bucket{function=\"fan-control\"})")
        .parse()
        .unwrap();
    assert!(p99 > 0.0 && p99 <= 1.0, "p99 {p99} s");
    assert_eq!(ask("edgefn_outbox_depth"), "3");
    let outbox = get(port, "/api/outbox", Some(READER));
    let outbox: serde_json::Value = serde_json::from_str(&outbox.body).unwrap();
    assert_eq!((outbox["depth"].as_u64(), outbox["connected"].as_u64()), (Some(3), Some(0)), "{outbox}");
    // The invocation rate: readings while Prometheus scrapes, until it sees them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        probe.publish("zigbee2mqtt/climate", &reading(26.0));
        // No result until two scrapes fall in the window.
        let rate = try_ask("rate(edgefn_function_ok_total{function=\"fan-control\"}[1m])");
        if rate.is_ok_and(|r| r.parse::<f64>().unwrap() > 0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the invocation rate stayed 0");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // The target is up: its scrapes were authorized.
    let up = support::http::request(web, "GET", "/api/v1/query?query=up%7Bjob%3D%22edgefn%22%7D", None).unwrap();
    let json: serde_json::Value = serde_json::from_str(&up.body).unwrap();
    assert_eq!(json["data"]["result"][0]["value"][1], "1", "{json}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}

#[test]
fn a_function_on_an_http_route_answers_requests_through_the_same_queues_and_counters() {
    let room = "[[functions]]\nname = \"room\"\nmodule = \"room.wasm\"\n\
                triggers = [{ http = \"POST /rooms/{room}/note\" }, { http = \"DELETE /rooms/{room}/note\" }]\n";
    let Running { _broker, dir: _dir, port, gateway, probe: _probe } =
        Running::with(room, |dir| std::fs::write(dir.join("room.wasm"), support::wasm::http_echo()).unwrap());
    let post = |path: &str, token: Option<&str>, body: &str| {
        support::http::request_with_body(port, "POST", path, token, body.as_bytes()).unwrap()
    };

    let answer = post("/rooms/kitchen/note", Some(CALLER), r#"{"note":"window open"}"#);
    assert_eq!((answer.status, answer.body.as_str()), (201, r#"kitchen:{"note":"window open"}"#), "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.header("x-request-id").map(str::len), Some(16), "{answer:?}");
    // Only a token with the invoke scope calls it.
    assert_eq!(post("/rooms/kitchen/note", None, "x").status, 401);
    assert_eq!(post("/rooms/kitchen/note", Some(READER), "x").status, 403);
    // No answer from the function: 204. A trap: 500, naming the function.
    let deleted = support::http::request(port, "DELETE", "/rooms/kitchen/note", Some(CALLER)).unwrap();
    assert_eq!((deleted.status, deleted.body.as_str()), (204, ""), "{deleted:?}");
    // A token limited to some routes calls those and no other.
    let cleaned = support::http::request(port, "DELETE", "/rooms/hall/note", Some(DELETER)).unwrap();
    assert_eq!(cleaned.status, 204, "{cleaned:?}");
    let not_its = post("/rooms/hall/note", Some(DELETER), "x");
    assert_eq!(not_its.status, 403, "{not_its:?}");
    assert!(not_its.body.contains(r#"token \"cleaner\" may not call POST /rooms/{room}/note"#), "{}", not_its.body);
    let failed = post("/rooms/kitchen/note?fail", Some(CALLER), "x");
    assert_eq!(failed.status, 500, "{failed:?}");
    assert!(failed.body.contains("function room failed") && failed.body.contains("unreachable"), "{}", failed.body);
    // A route nobody has, and a body over the limit.
    assert_eq!(post("/rooms/kitchen", Some(CALLER), "x").status, 404);
    let big = "x".repeat((1 << 20) + 1);
    assert_eq!(post("/rooms/kitchen/note", Some(CALLER), &big).status, 413);

    // The requests by route and status, their latency, the fuel the function
    // used, and the connections' state, in the metrics.
    let metrics = get(port, "/metrics", Some(READER)).body;
    let value = |series: &str| {
        let line = metrics.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("no {series} in:\n{metrics}")).rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    let note = r#"route="POST /rooms/{room}/note""#;
    assert_eq!(value(&format!("edgefn_http_requests_total{{{note},status=\"201\"}}")), 1.0);
    assert_eq!(value(&format!("edgefn_http_requests_total{{{note},status=\"500\"}}")), 1.0);
    assert_eq!(value(&format!("edgefn_http_requests_total{{{note},status=\"413\"}}")), 1.0);
    assert_eq!(value(&format!("edgefn_http_requests_total{{{note},status=\"403\"}}")), 2.0);
    assert_eq!(value(r#"edgefn_http_requests_total{route="(none)",status="404"}"#), 1.0);
    assert_eq!(value(&format!("edgefn_http_requests_total{{{note},status=\"401\"}}")), 1.0);
    // 201, 401, 403 twice, 500 and 413: six in all.
    assert_eq!(value(&format!("edgefn_http_request_seconds_count{{{note}}}")), 6.0);
    assert_eq!(value(&format!("edgefn_http_request_seconds_bucket{{{note},le=\"+Inf\"}}")), 6.0);
    assert!(value(r#"edgefn_function_fuel_total{function="room"}"#) > 0.0);
    assert_eq!(value("edgefn_intake_connected"), 1.0);
    assert_eq!(value("edgefn_output_connects_total"), 1.0);
    // No [upstream]: no outbox to show.
    assert_eq!(get(port, "/api/outbox", Some(READER)).status, 404);

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    let s = stopped.summary();
    assert_eq!(s["requests_in"], 4, "{s}");
    assert_eq!(
        (s["functions"]["room"]["ok"].as_u64(), s["functions"]["room"]["failed"].as_u64()),
        (Some(3), Some(1)),
        "{s}"
    );
    assert_eq!(s["failed_trap"], 1, "{s}");
}

#[test]
fn a_request_its_functions_full_queue_cannot_take_is_answered_503_at_once() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    // A handler that spins for a second or more: the requests pile up behind it.
    std::fs::write(dir.path().join("slow.wasm"), support::wasm::slow_echo(30_000_000)).unwrap();
    let slow = "[[functions]]\nname = \"slow\"\nmodule = \"slow.wasm\"\ntriggers = [{ http = \"POST /slow\" }]\n\
                [functions.limits]\nfuel = 2000000000\ntimeout_ms = 120000\n";
    let port = support::free_port();
    let config = greenhouse_with_api(&broker, port, slow).replace("[gateway]\n", "[gateway]\nqueue_capacity = 2\n");
    let gateway = GatewayProcess::start(dir.path(), &config);
    gateway.wait_for_log("the API listening", |l| l.contains("HTTP API ready"));
    // Twelve at once: one runs, two wait in its queue, the others hear 503 at once.
    let asks: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                support::http::request_with_headers(port, "POST", "/slow", Some(CALLER), &[], b"x").unwrap()
            })
        })
        .collect();
    let answers: Vec<_> = asks.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    let served = answers.iter().filter(|a| a.status == 204).count();
    assert!(!refused.is_empty() && served >= 1, "{answers:?}");
    assert_eq!(refused.len() + served, 12, "{answers:?}");
    for r in &refused {
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        assert!(r.body.contains("function slow did not take the request"), "{}", r.body);
    }
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    // Each refusal is the function's drop, counted as such.
    let s = stopped.summary();
    assert_eq!(s["functions"]["slow"]["dropped_queue"].as_u64(), Some(refused.len() as u64), "{s}");
    assert_eq!(s["functions"]["slow"]["ok"].as_u64(), Some(served as u64), "{s}");
}

#[test]
fn a_route_over_its_own_rate_is_told_to_wait_and_its_function_reads_headers_but_never_credentials() {
    let hdr = "[[functions]]\nname = \"hdr\"\nmodule = \"hdr.wasm\"\n\
               triggers = [{ http = \"GET /hdr\", rate_per_s = 1, burst = 2 }]\n";
    let Running { _broker, dir: _dir, port, gateway, probe: _probe } =
        Running::with(hdr, |dir| std::fs::write(dir.join("hdr.wasm"), support::wasm::http_header_echo()).unwrap());
    let ask = || {
        let headers = [("X-Room", "kitchen"), ("Cookie", "session=1")];
        support::http::request_with_headers(port, "GET", "/hdr", Some(CALLER), &headers, b"").unwrap()
    };
    // A burst of two, then one a second, whoever calls: of six requests in a
    // row, at most two plus one per second since the first are served.
    let began = std::time::Instant::now();
    let answers: Vec<_> = (0..6).map(|_| ask()).collect();
    let served: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert!(served.len() >= 2 && served.len() as u64 <= 3 + began.elapsed().as_secs(), "{answers:?}");
    for a in &served {
        // The header it was given, by a name in another case; neither the
        // token nor the cookie (the function traps on either: a 500).
        assert_eq!(a.body, "kitchen", "{a:?}");
    }
    let refused: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(!refused.is_empty(), "six requests in {:?} were all served", began.elapsed());
    for r in &refused {
        assert_eq!((r.status, r.header("retry-after")), (429, Some("1")), "{r:?}");
        assert!(r.body.contains("route GET /hdr is over its 1 requests a second"), "{}", r.body);
        assert_eq!(r.header("x-request-id").map(str::len), Some(16), "{r:?}");
    }
    // The bucket refills at one a second: asked again, it is served again.
    let waiting = std::time::Instant::now();
    let again = loop {
        let answer = ask();
        if answer.status != 429 {
            break answer;
        }
        assert!(waiting.elapsed() < support::probe::WAIT, "still refused after {:?}", waiting.elapsed());
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!((again.status, again.body.as_str()), (200, "kitchen"), "{again:?}");
    // No header of that name: an empty answer.
    let bare = support::http::request(port, "GET", "/hdr", Some(CALLER)).unwrap();
    assert!(matches!(bare.status, 200 | 429), "{bare:?}");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    // Refused requests never reached the function's queue.
    assert_eq!(stopped.summary()["functions"]["hdr"]["failed"], 0);
}

#[test]
fn a_bundle_is_deployed_and_removed_over_http_by_a_token_with_the_deploy_scope() {
    let Running { _broker, dir, port, gateway, probe: _p } = Running::start();
    let probe = Probe::connect(_broker.port, "echo-probe", &["v1"]);
    let module = dir.path().join("echo.wasm");
    std::fs::write(&module, support::wasm::echo_to("v1")).unwrap();
    let bundle = dir.path().join("echo.edgefn");
    let out = support::gateway::edgefn_command()
        .args(["bundle", module.to_str().unwrap(), "--name", "echo", "--version", "1.0.0"])
        .args(["--trigger", "line/+/status", "--allow-publish", "v1", "-o", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&bundle).unwrap();
    let call = |method: &str, path: &str, token: &str, body: &[u8]| {
        let answer = support::http::request_with_body(port, method, path, Some(token), body).unwrap();
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        (answer.status, json["message"].as_str().or(json["error"].as_str()).unwrap_or("").to_owned())
    };

    assert_eq!(call("POST", "/api/functions", READER, &bytes).0, 403);
    assert_eq!(call("POST", "/api/functions", DEPLOYER, b"not a bundle").0, 400);
    let (status, said) = call("POST", "/api/functions", DEPLOYER, &bytes);
    assert_eq!(status, 200, "{said}");
    assert!(said.contains("installed echo") && said.contains("version 1.0.0"), "{said}");
    // Live at once: its trigger runs it.
    probe.publish("line/press-1/status", "hello");
    let (_, m) = probe.wait_for("the deployed function's echo", |m| m.topic == "v1");
    assert_eq!(m.payload, "hello");
    let listed = get(port, "/api/functions", Some(READER));
    assert!(
        listed.body.contains("\"name\":\"echo\"") && listed.body.contains("\"source\":\"deployed\""),
        "{}",
        listed.body
    );

    let (status, said) = call("DELETE", "/api/functions/fan-control", DEPLOYER, b"");
    assert_eq!(status, 409, "{said}");
    assert!(said.contains("defined in"), "{said}");
    let (status, said) = call("DELETE", "/api/functions/echo", DEPLOYER, b"");
    assert_eq!((status, said.contains("removed echo")), (200, true), "{said}");
    assert_eq!(call("DELETE", "/api/functions/echo", DEPLOYER, b"").0, 409);
    assert!(!get(port, "/api/functions", Some(READER)).body.contains("\"name\":\"echo\""));

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}

#[test]
fn a_token_past_its_rate_is_told_to_wait_and_the_others_are_not() {
    let Running { _broker, dir: _dir, port, gateway, probe: _p } = Running::start();
    // A burst of two, then one a second: of twelve requests in a row, at most
    // two plus one per second since the first are served, the rest told to wait.
    let began = std::time::Instant::now();
    let answers: Vec<_> = (0..12).map(|_| get(port, "/metrics", Some(LIMITED))).collect();
    let served = answers.iter().filter(|a| a.status == 200).count() as u64;
    assert!(served >= 2 && served <= 3 + began.elapsed().as_secs(), "{served} served");
    let refused: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(!refused.is_empty(), "twelve requests in {:?} were all served", began.elapsed());
    for r in refused {
        assert_eq!((r.status, r.header("retry-after")), (429, Some("1")), "{r:?}");
        assert!(r.body.contains("dashboard"), "{}", r.body);
    }
    // Another token is not held back by it.
    assert_eq!(get(port, "/metrics", Some(READER)).status, 200);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}

/// A device's last reading over HTTP (functions/examples/c-http/device.c): a
/// Zigbee2MQTT sensor's values once it has spoken, 404 before, 403 for a
/// device the function may not show.
#[test]
#[cfg_attr(edgefn_missing_clang, ignore = "needs clang: apt-get install clang lld (bash .ci/run runs it)")]
fn a_function_answers_a_devices_last_reading_over_http() {
    let Some(clang) = support::require_tool("clang", &["/usr/bin/clang"]) else { return };
    let extra = "[[functions]]\nname = \"device-api\"\nmodule = \"device.wasm\"\n\
                 triggers = [{ http = \"GET /devices/{device}\" }]\n[functions.allow]\nread_devices = [\"office\"]\n\n\
                 [[devices]]\nid = \"office\"\nprofile = \"zigbee2mqtt\"\ntopic = \"office-sensor\"\n\n\
                 [[devices]]\nid = \"hall\"\nprofile = \"zigbee2mqtt\"\n";
    let Running { _broker, dir: _dir, port, gateway, probe } = Running::with(extra, |dir| {
        let script = support::repo_root().join("functions/examples/c-http/build.sh");
        let out = std::process::Command::new("bash").arg(&script).arg(dir).env("CC", &clang).output().unwrap();
        assert!(out.status.success(), "building the C functions failed:\n{}", String::from_utf8_lossy(&out.stderr));
    });
    let ask = |device: &str| get(port, &format!("/devices/{device}"), Some(CALLER));
    let before = ask("office");
    assert_eq!((before.status, before.body.as_str()), (404, r#"{"error":"nothing read from this device yet"}"#));
    // Warm enough for the greenhouse's fan-control to command the fan: once it
    // has, the gateway has read the message, and kept its values before that.
    let office = r#"{"battery":"100.00","humidity":41.5,"linkquality":96,"temperature":29.25}"#;
    probe.publish("zigbee2mqtt/office-sensor", office);
    probe.wait_for("the fan commanded on", |m| m.topic == "cmnd/fan/POWER" && m.payload == "ON");
    let answer = ask("office");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["device"], "office", "{json}");
    assert_eq!(
        (json["values"]["temperature"].as_f64(), json["values"]["battery"].as_f64()),
        (Some(29.25), Some(100.0)),
        "{json}"
    );
    // Hall's values are known too, but not this function's to show.
    probe.publish("zigbee2mqtt/hall", r#"{"temperature":19.0}"#);
    probe.wait_for("the fan commanded off", |m| m.topic == "cmnd/fan/POWER" && m.payload == "OFF");
    let hall = ask("hall");
    assert_eq!((hall.status, hall.body.as_str()), (403, r#"{"error":"this device is not this function's to show"}"#));
    gateway.stop();
}

#[test]
fn the_status_page_shows_live_counters_and_a_failing_function_in_chromium() {
    let extra = "[[functions]]\nname = \"trap\"\nmodule = \"trap.wasm\"\ntriggers = [\"test/trap\"]\n";
    let running =
        Running::with(extra, |dir| std::fs::write(dir.join("trap.wasm"), support::wasm::always_traps()).unwrap());
    let Running { _broker, dir: _dir, port, gateway, probe } = running;
    // The page itself is open and holds no data; the token travels in the
    // fragment, which the browser never sends.
    let page = get(port, "/", None);
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(page.header("content-security-policy").is_some_and(|p| p.contains("default-src 'none'")), "{page:?}");
    assert_eq!(get(port, "/api/status", None).status, 401);
    assert_eq!(get(port, "/api/status", Some(DEPLOYER)).status, 403);

    let Some(mut browser) = support::browser::Browser::open(&format!("http://127.0.0.1:{port}/#token={READER}")) else {
        return;
    };
    let ok_cell = r#"document.querySelector('tr[data-function="fan-control"] td.ok')?.textContent ?? null"#;
    let first = browser.wait_until("the functions' table", ok_cell, |v| v.is_string());
    assert_eq!(first, "0");
    assert_eq!(browser.eval("location.hash"), "", "the token stays in the address bar");
    assert_eq!(browser.eval("document.getElementById('version').textContent"), env!("CARGO_PKG_VERSION"));

    // Readings flow: the counter moves on the page.
    for t in [30.0, 20.0, 31.0] {
        probe.publish("zigbee2mqtt/climate", &reading(t));
        probe.wait_for("a fan command", |m| m.topic == "cmnd/fan/POWER");
    }
    browser.wait_until("three invocations on the page", ok_cell, |v| v == "3");
    let seen = r#"document.querySelector('tr[data-device="climate"]')?.cells[3].textContent ?? null"#;
    browser.wait_until("the sensor's three messages", seen, |v| v == "3");

    // A function that fails shows as failing, and its failure among the problems.
    probe.publish("test/trap", "boom");
    let failed = r#"document.querySelector('tr[data-function="trap"] td.failed')?.textContent ?? null"#;
    browser.wait_until("the trap's failure counted", failed, |v| v == "1");
    let problem =
        r#"[...document.querySelectorAll('#problems li[data-function="trap"]')].map(li => li.textContent).join("\n")"#;
    let text =
        browser.wait_until("the trap among the problems", problem, |v| v.as_str().is_some_and(|t| !t.is_empty()));
    assert!(text.as_str().unwrap().contains("failed"), "{text}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("status page screenshot: {}", shot.display());
    drop(browser);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
    assert!(!stopped.stderr.contains(READER), "a token was logged");
}

#[test]
#[cfg_attr(edgefn_missing_openssl, ignore = "needs openssl: apt-get install openssl (bash .ci/run runs it)")]
fn the_api_speaks_https_with_its_certificate_and_plain_http_gets_no_answer() {
    if support::require_tool("openssl", &["/usr/bin/openssl"]).is_none() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    support::certs::ca(certs.path(), "ca");
    support::certs::leaf(certs.path(), "api", "ca");
    support::certs::ca(certs.path(), "other-ca");
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    // Relative to the configuration's directory, as every path in it.
    std::fs::copy(certs.path().join("api.crt"), dir.path().join("api.crt")).unwrap();
    std::fs::copy(certs.path().join("api.key"), dir.path().join("api.key")).unwrap();
    let config = greenhouse_with_api(&broker, port, "")
        .replace("[api]\n", "[api]\ncert_file = \"api.crt\"\nkey_file = \"api.key\"\n");
    let gateway = GatewayProcess::start(dir.path(), &config);
    let ready = gateway.wait_for_log("the API listening", |l| l.contains("HTTP API ready"));
    assert!(ready.contains("https"), "{ready}");

    let ca = certs.path().join("ca.crt");
    let health = support::http::https_get(port, &ca, "/healthz", None).unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let status = support::http::https_get(port, &ca, "/api/status", Some(READER)).unwrap();
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(support::http::https_get(port, &ca, "/api/status", None).unwrap().status, 401);
    // A client that trusts another CA refuses the gateway's certificate.
    let wary = support::http::https_get(port, &certs.path().join("other-ca.crt"), "/healthz", None);
    assert!(wary.is_err_and(|e| e.to_string().to_lowercase().contains("certificate")));
    // Plain HTTP on the HTTPS port: no HTTP answer, and the gateway serves on.
    let plain = support::http::request(port, "GET", "/healthz", None);
    assert!(plain.as_ref().map_or(true, |a| a.status == 0), "{plain:?}");
    assert_eq!(support::http::https_get(port, &ca, "/healthz", None).unwrap().status, 200);

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "stderr:\n{}", stopped.stderr);
}

#[test]
fn an_api_certificate_without_its_key_or_a_missing_file_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::embedded();
    let check = |config: &str| {
        std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
        let out =
            support::gateway::edgefn_command().arg("check").arg(dir.path().join("gateway.toml")).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let base = greenhouse_with_api(&broker, support::free_port(), "");
    std::fs::write(dir.path().join("api.crt"), "").unwrap();
    let (ok, said) = check(&base.replace("[api]\n", "[api]\ncert_file = \"api.crt\"\n"));
    assert!(!ok && said.contains("cert_file and key_file go together"), "{said}");
    let (ok, said) = check(&base.replace("[api]\n", "[api]\ncert_file = \"api.crt\"\nkey_file = \"nowhere.key\"\n"));
    assert!(!ok && said.contains("api.key_file") && said.contains("nowhere.key"), "{said}");
}
