//! The HTTP API (`[api]`, off unless configured, on loopback unless told
//! otherwise): `/healthz` and the status page (`/`, which holds no data) open
//! to all, `/metrics` (Prometheus), `/api/status` and `/api/functions` for
//! tokens with the `read` scope, and the functions' own
//! routes (`{ http = "GET /rooms/{room}" }` triggers) for tokens with the
//! `invoke` scope. It asks the gateway's run loop through the same commands the
//! control socket sends (`control::Command`), so both call the same operations;
//! a request on a function's route is offered by the HTTP source
//! (`sources::http`) to the function's queue like any other event.
//!
//! HTTP/1.1 with hyper, no router: a few routes matched by hand. Each
//! connection is a task; at most [`MAX_CONNECTIONS`] at once, and a client
//! must send its headers within [`HEADER_TIMEOUT`].

pub mod auth;
pub mod metrics;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use crate::config::{ApiConfig, Scope};
use crate::control::Command;

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the gateway's answer before a 503.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Largest request body a function's route takes (413 past it).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a request on a function's route waits for its answer before a 504.
pub const INVOKE_WITHIN: Duration = Duration::from_secs(30);

struct Api {
    cfg: ApiConfig,
    commands: mpsc::Sender<Command>,
    requests: crate::sources::http::Requests,
    /// Numbers the requests on functions' routes, for `X-Request-Id` and logs.
    next_id: std::sync::atomic::AtomicU64,
    /// Each rate-limited token's bucket, by name.
    buckets: std::sync::Mutex<std::collections::HashMap<String, crate::gateway::TokenBucket>>,
    /// Requests answered, by route: how many by status, and how long they took.
    served: std::sync::Mutex<std::collections::BTreeMap<String, Served>>,
    /// When the gateway started (its API with it), ms since the Unix epoch.
    started_ms: u64,
}

#[derive(Default)]
struct Served {
    by_status: std::collections::BTreeMap<u16, u64>,
    durations: crate::counters::Durations,
}

/// Listens on `cfg.listen` and serves until the task is aborted. Returns `None`
/// (with an error logged) when the address cannot be bound: the gateway runs
/// on without its API.
pub fn serve(
    cfg: ApiConfig,
    commands: mpsc::Sender<Command>,
    requests: crate::sources::http::Requests,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = match std::net::TcpListener::bind(cfg.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %cfg.listen, error = %e, "the HTTP API cannot listen there (api.listen); running without it");
            return None;
        }
    };
    let tls = match &cfg.tls {
        None => None,
        Some((cert, key)) => match tls::acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                tracing::error!(error = %e, "the HTTP API cannot use its certificate; running without it");
                return None;
            }
        },
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %cfg.listen, scheme, tokens = cfg.tokens.len(), "HTTP API ready: / (the status page), /healthz, /metrics, /api/status, /api/functions");
    let next_id = std::sync::atomic::AtomicU64::new(u64::from(std::process::id()) << 32);
    let buckets = Default::default();
    let started_ms = crate::event::unix_ms();
    let api = Arc::new(Api { cfg, commands, requests, next_id, buckets, served: Default::default(), started_ms });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Some(tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (api, tls) = (api.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(api, stream).await,
                    // The handshake, like the headers, within HEADER_TIMEOUT.
                    Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(api, stream).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "HTTP API: a TLS handshake failed"),
                        Err(_) => tracing::debug!("HTTP API: a TLS handshake took too long"),
                    },
                }
                drop(slot);
            });
        }
    }))
}

/// Serves one connection's requests (plain, or inside TLS).
async fn serve_connection<S>(api: Arc<Api>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(api.handle(req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP API connection ended early");
    }
}

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = std::time::Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        // What the metrics call the route: the path of the API's own, a
        // function's route as written, `(none)`: a bounded set of labels.
        let mut route = path.clone();
        let response = match path.as_str() {
            "/healthz" => match method {
                Method::GET | Method::HEAD => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
                _ => not_allowed("GET"),
            },
            "/" | "/status" => match method {
                Method::GET | Method::HEAD => status_page(),
                _ => not_allowed("GET"),
            },
            "/api/status" => match method {
                Method::GET => self.status_json(&req).await,
                _ => not_allowed("GET"),
            },
            "/metrics" => match method {
                Method::GET => self.read(&req, &path).await,
                _ => not_allowed("GET"),
            },
            "/api/devices" => match method {
                Method::GET => self.devices(&req).await,
                _ => not_allowed("GET"),
            },
            "/api/outbox" => match method {
                Method::GET => self.read(&req, &path).await,
                _ => not_allowed("GET"),
            },
            "/api/functions" => match method {
                Method::GET => self.read(&req, &path).await,
                Method::POST => self.deploy(req).await,
                _ => not_allowed("GET, POST"),
            },
            _ if path.starts_with("/api/functions/") => {
                route = "/api/functions/{name}".into();
                match method {
                    Method::DELETE => self.remove(&req, &path["/api/functions/".len()..]).await,
                    _ => not_allowed("DELETE"),
                }
            }
            _ => match self.requests.route(method.as_str(), &path) {
                Some(matched) => {
                    route = matched.route.clone();
                    self.invoke(req, matched).await
                }
                None => {
                    route = "(none)".into();
                    json_error(StatusCode::NOT_FOUND, &format!("no such route: {method} {path}"))
                }
            },
        };
        let mut served = crate::sync::lock(&self.served);
        let served = served.entry(route).or_default();
        *served.by_status.entry(response.status().as_u16()).or_default() += 1;
        served.durations.observe(started.elapsed());
        // Never the headers: they carry the tokens.
        tracing::debug!(%method, path, status = response.status().as_u16(), "HTTP API request");
        response
    }

    /// A request on a function's route, for tokens with the `invoke` scope: its
    /// function's answer, 204 when it gave none, 500 when it failed, 503 when
    /// its queue did not take the request, 504 past [`INVOKE_WITHIN`].
    async fn invoke(&self, req: Request<Incoming>, matched: crate::sources::http::Matched) -> Response<Full<Bytes>> {
        use crate::sources::http::Outcome;
        let id = format!("{:016x}", self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        let name = match self.grant(presented, Scope::Invoke) {
            Ok(name) => name,
            Err(refused) => return *refused,
        };
        let token = self.cfg.tokens.iter().find(|t| t.name == name);
        if let Some(routes) = token.and_then(|t| t.routes.as_ref()).filter(|r| !r.contains(&matched.route)) {
            let why = format!("token {name:?} may not call {} (its routes: {})", matched.route, routes.join(", "));
            return with_id(json_error(StatusCode::FORBIDDEN, &why), &id);
        }
        if let Some((rate, burst)) = matched.rate {
            let key = format!("route {}", matched.trigger);
            let what = format!("{} {}", req.method(), req.uri().path());
            if let Some(refused) =
                self.over(&key, rate, burst, &format!("route {what} is over its {rate} requests a second"))
            {
                return with_id(refused, &id);
            }
        }
        let method = req.method().as_str().to_owned();
        let (path, query) = (req.uri().path().to_owned(), req.uri().query().unwrap_or("").to_owned());
        let content_type =
            req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let headers = function_headers(req.headers());
        let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let why = format!("the body is over {MAX_BODY_BYTES} bytes");
                return with_id(json_error(StatusCode::PAYLOAD_TOO_LARGE, &why), &id);
            }
            Err(e) => return with_id(json_error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")), &id),
        };
        let function = matched.function.clone();
        let request = crate::event::HttpRequest {
            method,
            path,
            query,
            params: Vec::new(),
            content_type,
            headers,
            id: id.clone(),
        };
        let outcome = self.requests.offer(matched, request, body);
        let response = match tokio::time::timeout(INVOKE_WITHIN, outcome).await {
            Ok(Ok(Some(Outcome::Ran(Some(reply))))) => {
                let mut r = Response::new(Full::new(Bytes::from(reply.body)));
                *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
                if let Ok(ct) = hyper::header::HeaderValue::from_str(&reply.content_type) {
                    if !reply.content_type.is_empty() {
                        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
                    }
                }
                r
            }
            Ok(Ok(Some(Outcome::Ran(None)))) => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Ok(Ok(Some(Outcome::Failed(reason)))) => {
                tracing::debug!(function = %function, request = %id, "HTTP request: the function failed: {reason}");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("function {function} failed: {reason}"))
            }
            Ok(Ok(None) | Err(_)) => {
                let why = format!(
                    "function {function} did not take the request (behind, over its quota or quarantined); try again"
                );
                let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, &why);
                r.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
                r
            }
            Err(_) => json_error(StatusCode::GATEWAY_TIMEOUT, &format!("function {function} did not answer in time")),
        };
        with_id(response, &id)
    }

    /// A route for tokens with the `read` scope.
    async fn read(&self, req: &Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        let open = path == "/metrics" && self.cfg.open_metrics;
        if let Some(refused) = self.refusal(presented, Scope::Read).filter(|_| !open) {
            return refused;
        }
        let Some(status) = self.status().await else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the gateway did not answer in time");
        };
        match path {
            "/metrics" => {
                let stats = status.stats.as_deref().cloned().unwrap_or_default();
                let served: Vec<_> = crate::sync::lock(&self.served)
                    .iter()
                    .map(|(route, s)| metrics::RouteServed {
                        route: route.clone(),
                        by_status: s.by_status.iter().map(|(k, v)| (*k, *v)).collect(),
                        durations: s.durations.snapshot(),
                    })
                    .collect();
                let page = metrics::render(&stats, &status.functions)
                    + &metrics::http(&served)
                    + &metrics::process(self.started_ms);
                text(StatusCode::OK, metrics::CONTENT_TYPE, page)
            }
            "/api/outbox" => match status.stats.as_ref().and_then(|s| s.upstream.as_ref()) {
                Some(outbox) => text(StatusCode::OK, "application/json", serde_json::json!(outbox).to_string()),
                None => json_error(StatusCode::NOT_FOUND, "this gateway has no outbox: no [upstream] section"),
            },
            _ => match serde_json::to_string(&status.functions) {
                Ok(body) => text(StatusCode::OK, "application/json", body),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
        }
    }

    /// `GET /api/status`, for tokens with the `read` scope: what the status
    /// page shows, in one answer (the counters' line and all of them, every
    /// function's row, the devices, the last warnings and errors).
    async fn status_json(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        if let Some(refused) = self.refusal(presented, Scope::Read) {
            return refused;
        }
        let (Some(status), Some(devices)) =
            (self.status().await, self.ask(crate::control::Request::Devices, Vec::new(), ANSWER_WITHIN).await)
        else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the gateway did not answer in time");
        };
        let body = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": crate::event::unix_ms().saturating_sub(self.started_ms) / 1000,
            "summary": status.summary,
            "stats": status.stats,
            "functions": status.functions,
            "devices": devices.devices,
            "recent": crate::journal::recent(),
        });
        text(StatusCode::OK, "application/json", body.to_string())
    }

    /// `GET /api/devices`, for tokens with the `read` scope: every configured
    /// device's availability and last seen, as `edgefn devices` shows them.
    async fn devices(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        if let Some(refused) = self.refusal(presented, Scope::Read) {
            return refused;
        }
        let Some(answer) = self.ask(crate::control::Request::Devices, Vec::new(), ANSWER_WITHIN).await else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the gateway did not answer in time");
        };
        match serde_json::to_string(&answer.devices) {
            Ok(body) => text(StatusCode::OK, "application/json", body),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// `POST /api/functions` with a bundle (`edgefn bundle`) as the body, for
    /// tokens with the `deploy` scope: the control socket's deploy, with its
    /// checks (signatures under `gateway.trusted_keys`, the module loading).
    async fn deploy(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        if let Some(refused) = self.refusal(presented, Scope::Deploy) {
            return refused;
        }
        let limit = crate::control::MAX_MODULE_BYTES + (64 << 10);
        let bundle = match Limited::new(req.into_body(), limit).collect().await {
            Ok(body) => body.to_bytes().to_vec(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("a bundle is {limit} bytes at most"));
            }
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("reading the bundle: {e}")),
        };
        if !crate::bundle::is_bundle(&bundle) {
            return json_error(StatusCode::BAD_REQUEST, "the body is not a bundle (edgefn bundle makes one)");
        }
        let request = crate::control::Request::Deploy {
            name: String::new(),
            triggers: Vec::new(),
            config: Default::default(),
            limits: Default::default(),
            module_len: bundle.len(),
            bundle: true,
            file: String::new(),
        };
        self.operate(request, bundle).await
    }

    /// `DELETE /api/functions/NAME`, for tokens with the `deploy` scope.
    async fn remove(&self, req: &Request<Incoming>, name: &str) -> Response<Full<Bytes>> {
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        if let Some(refused) = self.refusal(presented, Scope::Deploy) {
            return refused;
        }
        self.operate(crate::control::Request::Remove { name: name.to_owned() }, Vec::new()).await
    }

    /// A registry operation through the run loop: 200 with what changed, or
    /// 409 with why nothing did (the control socket's own message).
    async fn operate(&self, request: crate::control::Request, module: Vec<u8>) -> Response<Full<Bytes>> {
        let Some(answer) = self.ask(request, module, Duration::from_secs(120)).await else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the gateway did not answer in time");
        };
        let body = serde_json::json!({ "ok": answer.ok, "message": answer.message }).to_string() + "\n";
        let status = if answer.ok { StatusCode::OK } else { StatusCode::CONFLICT };
        text(status, "application/json", body)
    }

    /// The functions and counters, from the gateway's run loop.
    async fn status(&self) -> Option<crate::control::Response> {
        self.ask(crate::control::Request::Status, Vec::new(), ANSWER_WITHIN).await
    }

    /// One request to the gateway's run loop, as the control socket sends them.
    async fn ask(
        &self,
        request: crate::control::Request,
        module: Vec<u8>,
        within: Duration,
    ) -> Option<crate::control::Response> {
        let (reply, answer) = oneshot::channel();
        let command = Command { request, module, reply };
        let asked = async {
            self.commands.send(command).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(within, asked).await.ok().flatten()
    }
}

impl Api {
    /// The 401, 403 or 429 for credentials that do not grant `needs` now;
    /// `None` when they do.
    fn refusal(&self, presented: Option<&[u8]>, needs: Scope) -> Option<Response<Full<Bytes>>> {
        self.grant(presented, needs).err().map(|r| *r)
    }

    /// The name of the token that grants `needs` now, or the 401, 403 or 429.
    fn grant(&self, presented: Option<&[u8]>, needs: Scope) -> Result<String, Box<Response<Full<Bytes>>>> {
        match auth::check(&self.cfg.tokens, presented, needs) {
            auth::Access::Granted(name) => match self.over_rate(&name) {
                Some(refused) => Err(Box::new(refused)),
                None => Ok(name),
            },
            auth::Access::Unauthorized => {
                let mut r = json_error(StatusCode::UNAUTHORIZED, "a bearer token of [[api.tokens]] is needed");
                r.headers_mut()
                    .insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
                Err(Box::new(r))
            }
            auth::Access::Forbidden(name) => {
                let scope = match needs {
                    Scope::Read => "read",
                    Scope::Invoke => "invoke",
                    Scope::Deploy => "deploy",
                };
                Err(Box::new(json_error(StatusCode::FORBIDDEN, &format!("token {name:?} lacks the \"{scope}\" scope"))))
            }
        }
    }

    /// The 429 for a token past its `rate_per_s`, if it is.
    fn over_rate(&self, name: &str) -> Option<Response<Full<Bytes>>> {
        let (rate, burst) = self.cfg.tokens.iter().find(|t| t.name == name)?.rate?;
        self.over(
            &format!("token {name}"),
            rate,
            burst,
            &format!("token {name:?} is over its {rate} requests a second"),
        )
    }

    /// The 429 (with `why`) when the bucket kept under `key` (a token's, a
    /// route's) has no request left now.
    fn over(&self, key: &str, rate: u32, burst: u32, why: &str) -> Option<Response<Full<Bytes>>> {
        let now = std::time::Instant::now();
        let mut buckets = crate::sync::lock(&self.buckets);
        let bucket = buckets
            .entry(key.to_owned())
            .or_insert_with(|| crate::gateway::TokenBucket::new(f64::from(rate), f64::from(burst), now));
        if bucket.take(now) {
            return None;
        }
        let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, why);
        let wait = (1.0 / f64::from(rate)).ceil().max(1.0) as u64;
        if let Ok(value) = hyper::header::HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, value);
        }
        Some(r)
    }
}

/// What a function may read of a request's headers (`http_header`): all but
/// the credentials, and only values that are text.
fn function_headers(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    use hyper::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
    headers
        .iter()
        .filter(|(name, _)| ![AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION].contains(name))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect()
}

fn with_id(mut response: Response<Full<Bytes>>, id: &str) -> Response<Full<Bytes>> {
    if let Ok(value) = hyper::header::HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The status page: one file, no build step, no outside resources. It holds
/// no data: it asks `/api/status` with the token it is given.
fn status_page() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, "text/html; charset=utf-8", include_str!("status.html").to_owned());
    let headers = r.headers_mut();
    use hyper::header::HeaderValue;
    headers.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(hyper::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    text(status, "application/json", serde_json::json!({ "error": message }).to_string() + "\n")
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, &format!("this route takes {allow}"));
    r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    r
}
