//! The HTTP API (`[api]`, off unless configured, on loopback unless told
//! otherwise): `/healthz` open to all, `/metrics` (Prometheus) and
//! `/api/functions` for tokens with the `read` scope. It asks the gateway's run
//! loop through the same commands the control socket sends (`control::Command`),
//! so both call the same operations.
//!
//! HTTP/1.1 with hyper, no router: a few routes matched by hand. Each
//! connection is a task; at most [`MAX_CONNECTIONS`] at once, and a client
//! must send its headers within [`HEADER_TIMEOUT`].

pub mod auth;
pub mod metrics;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
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

struct Api {
    cfg: ApiConfig,
    commands: mpsc::Sender<Command>,
}

/// Listens on `cfg.listen` and serves until the task is aborted. Returns `None`
/// (with an error logged) when the address cannot be bound: the gateway runs
/// on without its API.
pub fn serve(cfg: ApiConfig, commands: mpsc::Sender<Command>) -> Option<tokio::task::JoinHandle<()>> {
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
    tracing::info!(listen = %cfg.listen, tokens = cfg.tokens.len(), "HTTP API ready: /healthz, /metrics, /api/functions");
    let api = Arc::new(Api { cfg, commands });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Some(tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let api = api.clone();
            tokio::spawn(async move {
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
                drop(slot);
            });
        }
    }))
}

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let response = match path.as_str() {
            "/healthz" => match method {
                Method::GET | Method::HEAD => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
                _ => not_allowed(),
            },
            "/metrics" | "/api/functions" => match method {
                Method::GET => self.read(&req, &path).await,
                _ => not_allowed(),
            },
            _ => json_error(StatusCode::NOT_FOUND, &format!("no such route: {method} {path}")),
        };
        // Never the headers: they carry the tokens.
        tracing::debug!(%method, path, status = response.status().as_u16(), "HTTP API request");
        response
    }

    /// A route for tokens with the `read` scope.
    async fn read(&self, req: &Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
        let presented = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        match auth::check(&self.cfg.tokens, presented, Scope::Read) {
            auth::Access::Granted(_) => {}
            auth::Access::Unauthorized => {
                let mut r = json_error(StatusCode::UNAUTHORIZED, "a bearer token of [[api.tokens]] is needed");
                r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, "Bearer".parse().expect("a valid header"));
                return r;
            }
            auth::Access::Forbidden(name) => {
                return json_error(StatusCode::FORBIDDEN, &format!("token {name:?} lacks the \"read\" scope"))
            }
        }
        let Some(status) = self.status().await else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the gateway did not answer in time");
        };
        match path {
            "/metrics" => {
                let stats = status.stats.as_deref().cloned().unwrap_or_default();
                text(StatusCode::OK, metrics::CONTENT_TYPE, metrics::render(&stats, &status.functions))
            }
            _ => match serde_json::to_string(&status.functions) {
                Ok(body) => text(StatusCode::OK, "application/json", body),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
        }
    }

    /// The functions and counters, from the gateway's run loop.
    async fn status(&self) -> Option<crate::control::Response> {
        let (reply, answer) = oneshot::channel();
        let command = Command { request: crate::control::Request::Status, module: Vec::new(), reply };
        let asked = async {
            self.commands.send(command).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(ANSWER_WITHIN, asked).await.ok().flatten()
    }
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

fn not_allowed() -> Response<Full<Bytes>> {
    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "this route takes GET");
    r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET"));
    r
}
