//! How log lines are written: for people (tracing's own format) or as JSON
//! lines (`--log-format json`, for log shippers); and for the systemd journal:
//! when systemd connects stderr to the journal (`$JOURNAL_STREAM` is set), each
//! line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info,
//! `<7>` debug and trace), so `journalctl -p warning` shows warnings and errors.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr goes to the journal.
pub fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Wraps an event format with the `<N>` priority prefix when `enabled`. One type
/// for both cases, so the binary carries the formatting code once.
pub struct WithPriority<F> {
    pub enabled: bool,
    pub inner: F,
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for WithPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.enabled {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// One JSON object a line: `time` (RFC 3339, UTC), `level`, `target`,
/// `message`, the event's other fields by name, and `spans` (the spans it
/// happened in, outermost first, each `{"name": ..., and its fields}`) when
/// there are any.
pub struct JsonLines;

/// How spans' fields are kept for the lines: as tracing writes them for
/// people, or as a JSON object for [`JsonLines`].
pub struct SpanFields {
    pub json: bool,
}

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut writer = writer;
        match self.json {
            false => tracing_subscriber::fmt::format::DefaultFields::new().format_fields(writer, fields),
            true => {
                let mut values = JsonFields(serde_json::Map::new());
                fields.record(&mut values);
                write!(writer, "{}", serde_json::Value::Object(values.0))
            }
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut time = String::new();
        tracing_subscriber::fmt::time::FormatTime::format_time(
            &tracing_subscriber::fmt::time::SystemTime,
            &mut Writer::new(&mut time),
        )?;
        let meta = event.metadata();
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        // Written in this order (a map would sort them): what a reader scans first, first.
        let text = |v: &str| serde_json::Value::from(v).to_string();
        write!(
            writer,
            "{{\"time\":{},\"level\":{},\"target\":{}",
            text(&time),
            text(meta.level().as_str()),
            text(meta.target())
        )?;
        write!(writer, ",\"message\":{message}")?;
        for (name, value) in &fields.0 {
            // A field named like one of those above is kept under its own name, prefixed.
            let name = if ["time", "level", "target", "spans"].contains(&name.as_str()) {
                format!("field.{name}")
            } else {
                name.clone()
            };
            write!(writer, ",{}:{value}", text(&name))?;
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope
                .from_root()
                .map(|span| {
                    let mut fields = span
                        .extensions()
                        .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                        .and_then(|f| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(f).ok())
                        .unwrap_or_default();
                    fields.insert("name".into(), span.name().into());
                    serde_json::Value::Object(fields)
                })
                .collect();
            write!(writer, ",\"spans\":{}", serde_json::Value::from(spans))?;
        }
        writeln!(writer, "}}")
    }
}

/// An event's fields as JSON values: numbers and booleans as themselves,
/// anything else as its text.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or_else(|| value.to_string().into(), Into::into);
        self.0.insert(field.name().into(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The format `--log-format` chose: one type, so the layer is built once.
pub enum Lines<T> {
    Text(T),
    Json(JsonLines),
}

impl<S, N, T> FormatEvent<S, N> for Lines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        match self {
            Lines::Text(text) => text.format_event(ctx, writer, event),
            Lines::Json(json) => json.format_event(ctx, writer, event),
        }
    }
}

/// How many of the last warnings and errors [`Recent`] keeps.
pub const RECENT_PROBLEMS: usize = 20;

static RECENT: std::sync::Mutex<std::collections::VecDeque<Problem>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// A warning or an error the gateway logged, as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// When, in milliseconds since the epoch.
    pub time_ms: u64,
    pub level: &'static str,
    /// The line's message and its fields (`error=...`), as the text log has them.
    pub message: String,
    /// The function it is about, when the line names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// A layer that keeps the last [`RECENT_PROBLEMS`] warnings and errors in
/// memory, for `/api/status` and the status page ([`recent`]).
pub struct Recent;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Recent {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = ProblemText::default();
        event.record(&mut text);
        let problem = Problem {
            time_ms: crate::event::unix_ms(),
            level: level.as_str(),
            message: text.message + &text.fields,
            function: text.function,
        };
        let mut recent = crate::sync::lock(&RECENT);
        if recent.len() == RECENT_PROBLEMS {
            recent.pop_front();
        }
        recent.push_back(problem);
    }
}

/// The last warnings and errors, oldest first.
pub fn recent() -> Vec<Problem> {
    crate::sync::lock(&RECENT).iter().cloned().collect()
}

#[derive(Default)]
struct ProblemText {
    message: String,
    fields: String,
    function: Option<String>,
}

impl ProblemText {
    fn field(&mut self, name: &str, text: &str) {
        if name == "message" {
            self.message = text.to_owned();
            return;
        }
        if name == "function" {
            self.function = Some(text.trim_matches('"').to_owned());
        }
        use std::fmt::Write;
        let _ = write!(self.fields, " {name}={text}");
    }
}

impl Visit for ProblemText {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field.name(), &format!("{value:?}"));
    }
}
