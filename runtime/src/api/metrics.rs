//! The Prometheus text format of the gateway's counters, named and described by
//! their one declaration (`counters!`): the gateway's as `edgefn_*`, the
//! outbox's as `edgefn_outbox_*`, each function's as `edgefn_function_*` with a
//! `function` label. Pure: counters in, text out.

use std::fmt::Write;

use crate::control::FunctionRow;
use crate::counters::{Counter, Kind};
use crate::gateway::{FunctionStatus, StatsSnapshot};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(stats: &StatsSnapshot, functions: &[FunctionRow]) -> String {
    let mut out = String::with_capacity(16 << 10);
    for (counter, value) in stats.values() {
        family(&mut out, "edgefn_", counter);
        let _ = writeln!(out, "{} {value}", name("edgefn_", counter));
    }
    if let Some(outbox) = &stats.upstream {
        for (counter, value) in outbox.values() {
            family(&mut out, "edgefn_outbox_", counter);
            let _ = writeln!(out, "{} {value}", name("edgefn_outbox_", counter));
        }
    }
    for (i, counter) in FunctionStatus::COUNTERS.iter().enumerate() {
        family(&mut out, "edgefn_function_", counter);
        for f in functions {
            let value = f.status.values().nth(i).map_or(0, |(_, v)| v);
            let _ = writeln!(out, "{}{{function=\"{}\"}} {value}", name("edgefn_function_", counter), label(&f.name));
        }
    }
    let flags: [(&str, &str, Flag); 3] = [
        ("quarantined", "1 while the function is quarantined (its events dropped until a new version).", |s| {
            s.quarantined
        }),
        ("behind", "1 while the function drops its newest events until it has run all it queued.", |s| s.behind),
        ("updating", "1 while a new version waits behind the events queued for the one running.", |s| s.updating),
    ];
    for (flag, help, of) in flags {
        let _ = writeln!(out, "# HELP edgefn_function_{flag} {help}\n# TYPE edgefn_function_{flag} gauge");
        for f in functions {
            let _ =
                writeln!(out, "edgefn_function_{flag}{{function=\"{}\"}} {}", label(&f.name), u8::from(of(&f.status)));
        }
    }
    durations(&mut out, functions);
    out
}

/// Each function's invocation times, as a Prometheus histogram (seconds).
fn durations(out: &mut String, functions: &[FunctionRow]) {
    let _ = writeln!(
        out,
        "# HELP edgefn_function_invocation_seconds How long each invocation of the function took.\n\
         # TYPE edgefn_function_invocation_seconds histogram"
    );
    for f in functions {
        histogram(
            out,
            "edgefn_function_invocation_seconds",
            &format!("function=\"{}\"", label(&f.name)),
            &f.status.durations,
        );
    }
}

/// One series of a histogram in seconds: its buckets, `_sum` and `_count`,
/// each with `labels` (`function="fan"`).
fn histogram(out: &mut String, name: &str, labels: &str, d: &crate::counters::DurationsSnapshot) {
    let mut below = 0;
    for (i, bound) in crate::counters::DURATION_BOUNDS_US.iter().enumerate() {
        below += d.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {below}", *bound as f64 / 1e6);
    }
    let count = d.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", d.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// One route's requests: how many by status, and how long they took.
pub struct RouteServed {
    pub route: String,
    pub by_status: Vec<(u16, u64)>,
    pub durations: crate::counters::DurationsSnapshot,
}

/// The API's own requests: how many by route and status, and how long they
/// took by route (`route` is a function's route as written, `GET /rooms/{room}`,
/// or the API's path; `(none)` for one that matched nothing).
pub fn http(served: &[RouteServed]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP edgefn_http_requests_total Requests the HTTP API answered, by route and status.\n\
         # TYPE edgefn_http_requests_total counter"
    );
    for RouteServed { route, by_status, .. } in served {
        for (status, count) in by_status {
            let _ =
                writeln!(out, "edgefn_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}", label(route));
        }
    }
    let _ = writeln!(
        out,
        "# HELP edgefn_http_request_seconds How long the HTTP API took to answer, by route.\n\
         # TYPE edgefn_http_request_seconds histogram"
    );
    for RouteServed { route, durations, .. } in served {
        histogram(&mut out, "edgefn_http_request_seconds", &format!("route=\"{}\"", label(route)), durations);
    }
    out
}

/// The process's own gauges, by the names Prometheus' client libraries use:
/// when it started (`started_ms`), resident memory and open file descriptors
/// (Linux's /proc; absent elsewhere).
pub fn process(started_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
        started_ms as f64 / 1e3
    );
    // statm counts 4 KiB pages on every Linux the gateway targets.
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()));
    if let Some(pages) = resident {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            pages * 4096
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    out
}

/// A yes-or-no state of a function, shown as a 0 or 1 gauge.
type Flag = fn(&FunctionStatus) -> bool;

/// The metric's name: counts end in `_total`, as Prometheus names them.
fn name(prefix: &str, counter: &Counter) -> String {
    match counter.kind {
        Kind::Total | Kind::Dropped => format!("{prefix}{}_total", counter.name),
        Kind::Gauge => format!("{prefix}{}", counter.name),
    }
}

fn family(out: &mut String, prefix: &str, counter: &Counter) {
    let name = name(prefix, counter);
    let kind = if counter.kind == Kind::Gauge { "gauge" } else { "counter" };
    // HELP text escapes backslashes and line breaks.
    let help = counter.help().replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: backslash, double quote and line feed escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxStatus;

    fn row(name: &str, ok: u64, queued: u64) -> FunctionRow {
        let status = FunctionStatus { ok, queued, quarantined: true, ..FunctionStatus::default() };
        FunctionRow {
            name: name.into(),
            version: String::new(),
            module: String::new(),
            triggers: Vec::new(),
            status,
            note: String::new(),
            source: "config".into(),
        }
    }

    /// Every sample line parsed back: (name, labels, value).
    fn samples(text: &str) -> Vec<(String, String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
                (name.to_owned(), labels.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn every_declared_counter_is_a_described_family_with_its_value() {
        let stats = StatsSnapshot {
            events_in: 7,
            functions_failed: 1,
            upstream: Some(OutboxStatus { depth: 3, accepted: 9, ..OutboxStatus::default() }),
            ..StatsSnapshot::default()
        };
        let mut fan = row("fan-control", 5, 2);
        let durations = crate::counters::Durations::default();
        for us in [300, 400, 2_000, 9_000_000] {
            durations.observe(std::time::Duration::from_micros(us));
        }
        fan.status.durations = durations.snapshot();
        let text = render(&stats, &[fan, row("we\"ird\\name", 0, 0)]);
        let samples = samples(&text);
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("{name}{{{labels}}}:\n{text}"))
        };
        assert_eq!(value("edgefn_events_in_total", ""), 7.0);
        assert_eq!(value("edgefn_functions_failed", ""), 1.0, "a gauge has no _total");
        assert_eq!(value("edgefn_outbox_depth", ""), 3.0);
        assert_eq!(value("edgefn_outbox_accepted_total", ""), 9.0);
        assert_eq!(value("edgefn_function_ok_total", "function=\"fan-control\""), 5.0);
        assert_eq!(value("edgefn_function_queued", "function=\"fan-control\""), 2.0);
        assert_eq!(value("edgefn_function_quarantined", "function=\"fan-control\""), 1.0);
        assert_eq!(value("edgefn_function_ok_total", r#"function="we\"ird\\name""#), 0.0);
        // The histogram's buckets are cumulative, up to +Inf, which is the count.
        let bucket = |le: &str| {
            value("edgefn_function_invocation_seconds_bucket", &format!("function=\"fan-control\",le=\"{le}\""))
        };
        assert_eq!(
            (bucket("0.00025"), bucket("0.0005"), bucket("0.0025"), bucket("5"), bucket("+Inf")),
            (0.0, 2.0, 3.0, 3.0, 4.0)
        );
        assert_eq!(value("edgefn_function_invocation_seconds_count", "function=\"fan-control\""), 4.0);
        assert_eq!(value("edgefn_function_invocation_seconds_sum", "function=\"fan-control\""), 9.0027);
        let families =
            StatsSnapshot::COUNTERS.len() + OutboxStatus::COUNTERS.len() + FunctionStatus::COUNTERS.len() + 3 + 1;
        assert_eq!(text.matches("# TYPE ").count(), families);
        assert_eq!(text.matches("# HELP ").count(), families);
        assert!(text.contains("# HELP edgefn_events_in_total Messages received on trigger topics while intake ran.\n"));
        assert!(text.contains("# TYPE edgefn_queue_full_dropped_total counter\n"));
        // Each family's samples follow its TYPE line, as the format asks.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside its family {family}");
            }
        }
    }
}
