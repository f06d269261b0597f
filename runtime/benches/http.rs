//! HTTP-triggered functions (issue 24): the serverless hello world
//! (`GET /hello?name=Ada` -> `200 {"message":"Hello, Ada!"}`) served three
//! ways, side by side in one run, each as its own process on loopback:
//!
//! - **edgefn**: the gateway's API, a bearer token with the `invoke` scope, the
//!   route bound to `functions/examples/hello` (Rust SDK, wasm32), run by a
//!   worker under its limits like any other event;
//! - **axum**: a plain axum handler doing the same work natively (the query
//!   read, the JSON written, the same token checked), this bench's own binary
//!   started again as the server;
//! - **Node-RED**: an `http in` -> `function` -> `http response` flow doing the
//!   same (npm's `node-red`, installed once into `target/bench-node-red`; no
//!   token: its `http in` node has none).
//!
//! Each gets the same load from this process: C keep-alive connections, each
//! sending the next request when the last answer is read, every answer
//! checked. Printed: requests per second, p50 and p99 latency, and the
//! server's resident memory after the load (VmRSS) and at its peak (VmHWM).
//!
//!   cargo bench --bench http              4 connections, 20,000 requests a server, 3 rounds
//!   cargo bench --bench http -- --quick   4 connections, 3,000 requests, 1 round (CI)
//!
//! Nothing here asserts a time: it exits non-zero only when a server gives a
//! wrong answer or does not start.

#[path = "../../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::broker::TestBroker;
use support::gateway::GatewayProcess;

const TOKEN: &str = "bench-token-0123456789abcdef";
const EXPECTED: &str = r#"{"message":"Hello, Ada!"}"#;
const CONNECTIONS: usize = 4;

fn fail(message: &str) -> ! {
    eprintln!("http bench: {message}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-axum") {
        let port: u16 = args.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or_else(|| fail("--serve-axum PORT"));
        serve_axum(port);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (requests, rounds) = if quick { (3_000, 1) } else { (20_000, 3) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned();
    let hello = build_hello(&root);
    let node_red = install_node_red(&root);

    println!("HTTP-triggered function: GET /hello?name=Ada -> 200 {EXPECTED}");
    println!(
        "  {CONNECTIONS} keep-alive connections, {requests} requests per server and round, {rounds} round(s), \
         median round shown; load generator in this process; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  edgefn:   {} (module {})", support::gateway::edgefn_bin().display(), hello.display());
    println!("  axum:     {} --serve-axum (axum 0.8, tokio multi-thread)", std::env::current_exe().unwrap().display());
    match &node_red {
        Ok(dir) => println!("  Node-RED: {} (node {})", dir.display(), command_output("node", &["--version"])),
        Err(why) => println!("  Node-RED: SKIPPED ({why})"),
    }
    println!();

    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    rows.push(measure("edgefn", rounds, requests, || Server::edgefn(dir.path(), &hello)));
    rows.push(measure("axum", rounds, requests, Server::axum));
    if let Ok(node_red) = &node_red {
        rows.push(measure("Node-RED", rounds, requests, || Server::node_red(dir.path(), node_red)));
    }

    let axum = rows.iter().find(|r| r.name == "axum").map_or(1.0, |r| r.per_s);
    println!("server        req/s   vs axum    p50 ms    p99 ms   RSS MB  peak MB");
    for r in &rows {
        println!(
            "{:<10} {:>8.0}   {:>6.2}x  {:>8.3}  {:>8.3}  {:>7.1}  {:>7.1}",
            r.name,
            r.per_s,
            r.per_s / axum,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.rss_kb as f64 / 1024.0,
            r.peak_kb as f64 / 1024.0
        );
        if rounds > 1 {
            println!("           rounds: {:?}", r.rounds.iter().map(|v| v.round() as u64).collect::<Vec<_>>());
        }
    }
    println!(
        "\nreq/s = answers / wall time of the round; latency = request written -> answer read, over all requests \
         of the median round; RSS after the load, peak = VmHWM. edgefn's includes its MQTT connections and \
         embedded broker."
    );
}

/// The hello example, built for wasm32 with the SDK, as `edgefn new` users build theirs.
fn build_hello(root: &Path) -> PathBuf {
    let functions = root.join("functions");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "hello", "--target", "wasm32-unknown-unknown"])
        .current_dir(&functions)
        .status()
        .unwrap_or_else(|e| fail(&format!("cargo: {e}")));
    if !status.success() {
        fail("building functions/examples/hello failed (rustup target add wasm32-unknown-unknown)");
    }
    functions.join("target/wasm32-unknown-unknown/release/hello.wasm")
}

/// npm's `node-red`, installed once into `target/bench-node-red`.
fn install_node_red(root: &Path) -> Result<PathBuf, String> {
    let dir = root.join("target/bench-node-red");
    if dir.join("node_modules/node-red/red.js").exists() {
        return Ok(dir);
    }
    if Command::new("npm").arg("--version").output().is_err() {
        return Err("npm is not installed: apt-get install nodejs npm".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    eprintln!("http bench: npm install node-red@4 into {} (once)", dir.display());
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&dir)
        .arg("node-red@4")
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("npm install node-red failed".into());
    }
    Ok(dir)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

struct Row {
    name: &'static str,
    per_s: f64,
    rounds: Vec<f64>,
    p50: Duration,
    p99: Duration,
    rss_kb: u64,
    peak_kb: u64,
}

/// Starts the server afresh for each round, loads it, and keeps the median round.
fn measure(name: &'static str, rounds: usize, requests: usize, start: impl Fn() -> Server) -> Row {
    let mut results = Vec::new();
    for round in 1..=rounds {
        eprintln!("http bench: {name} (round {round}/{rounds})");
        let server = start();
        // Warm up: connections made, code paths translated and cached.
        load(server.port, server.token, 200);
        let (wall, latencies) = load(server.port, server.token, requests);
        let (rss_kb, peak_kb) = memory_kb(server.pid());
        results.push((requests as f64 / wall.as_secs_f64(), latencies, rss_kb, peak_kb));
        drop(server);
    }
    let per_round: Vec<f64> = results.iter().map(|r| r.0).collect();
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (per_s, mut latencies, rss_kb, peak_kb) = results.swap_remove(results.len() / 2);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Row { name, per_s, rounds: per_round, p50: at(0.50), p99: at(0.99), rss_kb, peak_kb }
}

/// `total` requests over [`CONNECTIONS`] connections: the wall time and each request's latency.
fn load(port: u16, token: Option<&'static str>, total: usize) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let n = total / CONNECTIONS + usize::from(i < total % CONNECTIONS);
            std::thread::spawn(move || connection(port, token, n))
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for t in threads {
        latencies.extend(t.join().unwrap_or_else(|_| fail("a load thread panicked")));
    }
    (started.elapsed(), latencies)
}

/// One keep-alive connection sending `n` requests, one after another.
fn connection(port: u16, token: Option<&str>, n: usize) -> Vec<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| fail(&format!("connect: {e}")));
    stream.set_nodelay(true).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET /hello?name=Ada HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    let mut buf = Vec::with_capacity(1024);
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).unwrap_or_else(|e| fail(&format!("write: {e}")));
        let (status, body) = read_answer(&mut stream, &mut buf);
        latencies.push(sent.elapsed());
        if status != 200 || body != EXPECTED.as_bytes() {
            fail(&format!("port {port}: answered {status} {:?}", String::from_utf8_lossy(&body)));
        }
    }
    latencies
}

/// Reads one answer: its status and body (by Content-Length, or chunked).
fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| fail(&format!("read: {e}")));
        if n == 0 {
            fail("the server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()));
    let body = if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < head_end + len {
            let n = stream.read(&mut chunk).unwrap_or_else(|e| fail(&format!("read: {e}")));
            if n == 0 {
                fail("the server closed the connection mid-answer");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        body
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = head_end;
        loop {
            let line_end = loop {
                if let Some(p) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + p;
                }
                let n = stream.read(&mut chunk).unwrap_or_else(|e| fail(&format!("read: {e}")));
                buf.extend_from_slice(&chunk[..n]);
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[at..line_end]).trim(), 16).unwrap_or(0);
            while buf.len() < line_end + 2 + size + 2 {
                let n = stream.read(&mut chunk).unwrap_or_else(|e| fail(&format!("read: {e}")));
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            at = line_end + 2 + size + 2;
            if size == 0 {
                break;
            }
        }
        buf.drain(..at);
        body
    } else {
        fail(&format!("an answer with neither a length nor chunks: {head}"))
    };
    (status, body)
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    (field("VmRSS:").unwrap_or(0), field("VmHWM:").unwrap_or(0))
}

/// A server under load, stopped when dropped.
struct Server {
    port: u16,
    token: Option<&'static str>,
    process: Process,
}

enum Process {
    /// The broker is kept for as long as the gateway runs.
    Gateway(Option<GatewayProcess>, #[allow(dead_code)] TestBroker),
    Child(Child),
}

impl Server {
    fn pid(&self) -> u32 {
        match &self.process {
            Process::Gateway(g, _) => g.as_ref().expect("running").pid(),
            Process::Child(c) => c.id(),
        }
    }

    fn edgefn(dir: &Path, hello: &Path) -> Server {
        let broker = TestBroker::embedded();
        let port = support::free_port();
        let hash = command_output("sh", &["-c", &format!("printf %s {TOKEN} | sha256sum | cut -d' ' -f1")]);
        let config = format!(
            "[gateway]\nid = \"gw-http-bench\"\nmodules_dir = \"{}\"\n\n{}\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[api.tokens]]\nname = \"bench\"\nsha256 = \"{hash}\"\nscopes = [\"invoke\"]\n\n\
             [[functions]]\nname = \"hello\"\nmodule = \"{}\"\ntriggers = [{{ http = \"GET /hello\" }}]\n",
            dir.join("modules").display(),
            broker.gateway_toml(),
            hello.display()
        );
        let gateway = GatewayProcess::start(dir, &config);
        gateway.wait_for_log("the API listening", |l| l.contains("HTTP API ready"));
        Server { port, token: Some(TOKEN), process: Process::Gateway(Some(gateway), broker) }
    }

    fn axum() -> Server {
        let port = support::free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--serve-axum", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("starting the axum server: {e}")));
        wait_until_answering(port, Some(TOKEN), "axum");
        Server { port, token: Some(TOKEN), process: Process::Child(child) }
    }

    fn node_red(dir: &Path, install: &Path) -> Server {
        let port = support::free_port();
        let user_dir = dir.join("node-red");
        std::fs::create_dir_all(&user_dir).unwrap();
        std::fs::write(user_dir.join("flows.json"), NODE_RED_FLOW).unwrap();
        let child = Command::new("node")
            .arg(install.join("node_modules/node-red/red.js"))
            .args(["--port", &port.to_string(), "--userDir"])
            .arg(&user_dir)
            .arg("flows.json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("starting Node-RED: {e}")));
        wait_until_answering(port, None, "Node-RED");
        Server { port, token: None, process: Process::Child(child) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Gateway(g, _) => {
                if let Some(g) = g.take() {
                    g.stop();
                }
            }
            Process::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Asks until the server gives the expected answer (it is starting: a refused
/// connection or a 404 while its flows deploy).
fn wait_until_answering(port: u16, token: Option<&str>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answered = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            s.write_all(format!("GET /hello?name=Ada HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes()).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut buf = Vec::new();
            let (status, body) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_answer(&mut s, &mut buf))).ok()?;
            Some(status == 200 && body == EXPECTED.as_bytes())
        });
        if answered == Some(true) {
            return;
        }
        if Instant::now() > deadline {
            fail(&format!("{what} did not answer GET /hello on port {port} within 120 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same work in Node-RED: `http in` -> `function` -> `http response`.
const NODE_RED_FLOW: &str = r#"[
  {"id": "bench", "type": "tab", "label": "bench"},
  {"id": "in", "z": "bench", "type": "http in", "url": "/hello", "method": "get", "wires": [["hello"]]},
  {"id": "hello", "z": "bench", "type": "function", "outputs": 1, "wires": [["out"]],
   "func": "const name = msg.req.query.name;\nif (!name) {\n  msg.statusCode = 400;\n  msg.payload = { error: 'give a name: /hello?name=Ada' };\n} else {\n  msg.payload = { message: 'Hello, ' + name + '!' };\n}\nreturn msg;"},
  {"id": "out", "z": "bench", "type": "http response", "statusCode": "", "headers": {}, "wires": []}
]"#;

/// The axum server: the hello world as a plain handler, checking the same
/// bearer token (compared in constant time, as the gateway does).
fn serve_axum(port: u16) -> ! {
    use axum::extract::RawQuery;
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::routing::get;

    async fn hello(
        headers: HeaderMap,
        RawQuery(query): RawQuery,
    ) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
        let json = [(header::CONTENT_TYPE, "application/json")];
        let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
        let wanted = format!("Bearer {TOKEN}");
        let same =
            given.len() == wanted.len() && given.iter().zip(wanted.as_bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0;
        if !same {
            return (StatusCode::UNAUTHORIZED, json, r#"{"error":"a bearer token is needed"}"#.to_owned());
        }
        let name =
            query.as_deref().unwrap_or("").split('&').find_map(|p| p.strip_prefix("name=")).filter(|n| !n.is_empty());
        match name {
            Some(name) => {
                let mut body = String::from(r#"{"message":"Hello, "#);
                for c in name.chars() {
                    match c {
                        '"' => body.push_str("\\\""),
                        '\\' => body.push_str("\\\\"),
                        c if (c as u32) < 0x20 => body.push_str(&format!("\\u{:04x}", c as u32)),
                        c => body.push(c),
                    }
                }
                body.push_str(r#"!"}"#);
                (StatusCode::OK, json, body)
            }
            None => (StatusCode::BAD_REQUEST, json, r#"{"error":"give a name: /hello?name=Ada"}"#.to_owned()),
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| fail(&format!("bind: {e}")));
        let app = axum::Router::new().route("/hello", get(hello));
        axum::serve(listener, app).await.unwrap_or_else(|e| fail(&format!("axum: {e}")));
    });
    std::process::exit(0)
}
