//! The HTTP source: requests to the API (`[api]`) on a function's route
//! (`{ http = "GET /rooms/{room}/climate" }`) become that function's events,
//! offered through the same sink, queues, limits and counters as every other,
//! and the function's reply (`http_respond`) becomes the response.

mod route;

pub use route::Route;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::oneshot;

use super::{Change, Job, Sink, Source};
use crate::event::{Event, EventKind, HttpReply, HttpRequest};

/// One function's route.
struct Entry {
    route: Route,
    function: Arc<str>,
    /// The trigger as written (`{ http = "GET /rooms/{room}" }`).
    trigger: Arc<str>,
}

/// The routes of the functions installed now; the API reads, registry steps write.
#[derive(Default)]
struct Table(RwLock<Vec<Entry>>);

/// The HTTP source: keeps the route table as functions come and go.
pub struct HttpSource {
    table: Arc<Table>,
}

/// What the HTTP API holds: the route table and where requests are offered.
#[derive(Clone)]
pub struct Requests {
    table: Arc<Table>,
    sink: Arc<dyn Sink>,
}

/// A request matched to a function's route.
pub struct Matched {
    pub function: Arc<str>,
    /// The trigger as written: the route's own rate limit is kept under it.
    pub trigger: Arc<str>,
    params: Vec<(String, String)>,
    /// The route's rate limit: requests a second, burst.
    pub rate: Option<(u32, u32)>,
    /// The route as written (`GET /rooms/{room}`), for tokens' `routes` and the metrics.
    pub route: String,
}

impl HttpSource {
    pub fn start(sink: Arc<dyn Sink>) -> (HttpSource, Requests) {
        let table = Arc::new(Table::default());
        (HttpSource { table: table.clone() }, Requests { table, sink })
    }
}

impl Source for HttpSource {
    fn change(&mut self, change: Change<'_>) {
        let mut table = crate::sync::write(&self.table.0);
        let name = match change {
            Change::Set(spec) => spec.name.as_str(),
            Change::Remove(name) => name,
        };
        table.retain(|e| &*e.function != name);
        if let Change::Set(spec) = change {
            let function: Arc<str> = Arc::from(spec.name.as_str());
            for trigger in &spec.triggers {
                if let Some(route) = trigger.http() {
                    let trigger = Arc::from(trigger.text());
                    table.push(Entry { route: route.clone(), function: function.clone(), trigger });
                }
            }
        }
    }

    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        crate::sync::write(&self.table.0).clear();
        Box::pin(async {})
    }
}

impl Requests {
    /// The function whose route `method path` is, if any.
    pub fn route(&self, method: &str, path: &str) -> Option<Matched> {
        let table = crate::sync::read(&self.table.0);
        table.iter().find_map(|e| {
            let params = e.route.matches(method, path)?;
            Some(Matched {
                function: e.function.clone(),
                trigger: e.trigger.clone(),
                params,
                rate: e.route.rate,
                route: e.route.to_string(),
            })
        })
    }

    /// Offers the request to its function's queue. The answer comes when the
    /// invocation's output has been handed on; `None` when the job was dropped
    /// unrun (a full queue, a quota, a quarantine: counted as every event is).
    /// The request's parameters are the route's, from `matched`.
    pub fn offer(
        &self,
        matched: Matched,
        mut request: HttpRequest,
        body: bytes::Bytes,
    ) -> oneshot::Receiver<Option<Outcome>> {
        request.params = matched.params;
        let event = Event {
            kind: EventKind::Http(Box::new(request)),
            payload: body,
            device: None,
            reading: None,
            received_ms: crate::event::unix_ms(),
        };
        let (answer, outcome) = Answer::new();
        let job = Job {
            function: matched.function,
            trigger: matched.trigger,
            event: Arc::new(event),
            delivery: Some(answer.clone()),
            spooled: false,
            answer: Some(answer),
        };
        self.sink.tally(super::Tally::RequestIn);
        // Never waits: a full queue drops it (counted) and the client hears 503.
        self.sink.offer_or_drop(job);
        outcome
    }
}

/// What became of a request's job.
#[derive(Debug)]
pub enum Outcome {
    /// The function ran; its answer, if it gave one.
    Ran(Option<HttpReply>),
    /// The function failed (the reason, as the log says it).
    Failed(String),
}

/// A request's answer on its way back: the worker sets the outcome, and it
/// goes to the client when the last holder drops it, once the invocation's
/// output has been handed on (it is the job's `delivery` too). Dropped with no
/// outcome set, the job was dropped unrun (its counter says why).
#[derive(Debug)]
pub struct Answer {
    outcome: Mutex<Option<Outcome>>,
    to: Mutex<Option<oneshot::Sender<Option<Outcome>>>>,
}

impl Answer {
    /// An answer, and where the client's task waits for it (`None`: dropped unrun).
    pub fn new() -> (Arc<Answer>, oneshot::Receiver<Option<Outcome>>) {
        let (to, from) = oneshot::channel();
        (Arc::new(Answer { outcome: Mutex::new(None), to: Mutex::new(Some(to)) }), from)
    }

    /// The invocation's outcome (the worker's).
    pub fn set(&self, outcome: Outcome) {
        *crate::sync::lock(&self.outcome) = Some(outcome);
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(to) = crate::sync::lock(&self.to).take() {
            let _ = to.send(crate::sync::lock(&self.outcome).take());
        }
    }
}
