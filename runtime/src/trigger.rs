//! What runs a function: a topic filter (an MQTT message), a timer (an
//! interval, a cron expression, or once at start) or an HTTP route. Pure: no
//! I/O, no clock; time comes in as milliseconds since the Unix epoch.
//!
//! One form names a trigger everywhere (the config, a bundle's manifest,
//! `edgefn deploy --trigger`, the control protocol): a string is a topic filter,
//! an (inline) table is a timer or an HTTP route:
//!
//! ```toml
//! triggers = ["sensors/+/temp", { every = "30s" }, { cron = "0 */5 * * * *" }, { start = true },
//!             { http = "GET /rooms/{room}/climate" }]
//! ```
//!
//! A trigger's [`Trigger::text`] is that form written back (`sensors/+/temp`,
//! `{ every = "30s" }`): what `event_trigger` returns, `edgefn functions` shows,
//! spools store and the timer state file is keyed by.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::sources::http::Route;
use crate::topic::TopicFilter;

/// Shortest `every` interval: shorter ones would only be a busy loop.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// A trigger as written, before validation: a topic filter, or the fields of
/// a timer. Serialized as it is written: a string for a topic filter alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawTrigger {
    pub topic: Option<String>,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub start: Option<bool>,
    pub timezone: Option<String>,
    pub jitter: Option<String>,
    pub missed: Option<String>,
    /// An HTTP route: `"GET /rooms/{room}/climate"`.
    pub http: Option<String>,
    /// A device's availability changes: its id, or `"*"` for every device.
    pub availability: Option<String>,
    /// An HTTP route's rate limit, for all callers together: requests a
    /// second, and how many may come at once (default: `rate_per_s`).
    pub rate_per_s: Option<u32>,
    pub burst: Option<u32>,
}

impl Serialize for RawTrigger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if let Some(topic) = self.only_topic() {
            return serializer.serialize_str(topic);
        }
        let RawTrigger { topic, every, cron, start, timezone, jitter, missed, http, availability, rate_per_s, burst } =
            self;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in
            [("topic", topic), ("every", every), ("cron", cron), ("http", http), ("availability", availability)]
        {
            if let Some(v) = value {
                map.serialize_entry(key, v)?;
            }
        }
        if let Some(start) = start {
            map.serialize_entry("start", start)?;
        }
        for (key, value) in [("rate_per_s", rate_per_s), ("burst", burst)] {
            if let Some(v) = value {
                map.serialize_entry(key, v)?;
            }
        }
        for (key, value) in [("timezone", timezone), ("jitter", jitter), ("missed", missed)] {
            if let Some(v) = value {
                map.serialize_entry(key, v)?;
            }
        }
        map.end()
    }
}

const FIELDS: &[&str] =
    &["topic", "every", "cron", "http", "availability", "start", "rate_per_s", "burst", "timezone", "jitter", "missed"];

impl<'de> Deserialize<'de> for RawTrigger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTrigger;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a topic filter (a string), a timer table such as { every = \"30s\" } or a route such as \
                     { http = \"GET /rooms/{room}\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTrigger, E> {
                Ok(RawTrigger { topic: Some(v.to_owned()), ..RawTrigger::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTrigger, A::Error> {
                let mut raw = RawTrigger::default();
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "start" => {
                            raw.start = Some(map.next_value()?);
                            continue;
                        }
                        "rate_per_s" => {
                            raw.rate_per_s = Some(map.next_value()?);
                            continue;
                        }
                        "burst" => {
                            raw.burst = Some(map.next_value()?);
                            continue;
                        }
                        "topic" => &mut raw.topic,
                        "every" => &mut raw.every,
                        "cron" => &mut raw.cron,
                        "http" => &mut raw.http,
                        "availability" => &mut raw.availability,
                        "timezone" => &mut raw.timezone,
                        "jitter" => &mut raw.jitter,
                        "missed" => &mut raw.missed,
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl RawTrigger {
    /// A topic filter.
    pub fn topic(filter: impl Into<String>) -> RawTrigger {
        RawTrigger { topic: Some(filter.into()), ..RawTrigger::default() }
    }

    /// `edgefn deploy --trigger` and `edgefn invoke`: a topic filter, or a
    /// timer as a TOML inline table (`{ every = "10s" }`).
    pub fn from_arg(arg: &str) -> Result<RawTrigger, String> {
        if !arg.trim_start().starts_with('{') {
            return Ok(RawTrigger::topic(arg));
        }
        let table: toml::Table =
            toml::from_str(&format!("t = {arg}")).map_err(|e| format!("{arg:?} is not a TOML inline table: {e}"))?;
        let value = table.get("t").cloned().unwrap_or(toml::Value::Boolean(false));
        value.try_into::<RawTrigger>().map_err(|e| format!("{arg:?}: {}", e.message()))
    }

    /// The trigger as a TOML value: a quoted filter, or an inline table.
    /// Fields in the order of [`FIELDS`], not sorted: `{ cron = "0 6 * * *", timezone = "local" }`.
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        if let Some(topic) = self.only_topic() {
            return quote(topic);
        }
        let RawTrigger { topic, every, cron, start, timezone, jitter, missed, http, availability, rate_per_s, burst } =
            self;
        let mut fields = Vec::new();
        for (key, value) in
            [("topic", topic), ("every", every), ("cron", cron), ("http", http), ("availability", availability)]
        {
            fields.extend(value.as_deref().map(|v| format!("{key} = {}", quote(v))));
        }
        fields.extend(start.map(|s| format!("start = {s}")));
        fields.extend(rate_per_s.map(|r| format!("rate_per_s = {r}")));
        fields.extend(burst.map(|b| format!("burst = {b}")));
        for (key, value) in [("timezone", timezone), ("jitter", jitter), ("missed", missed)] {
            fields.extend(value.as_deref().map(|v| format!("{key} = {}", quote(v))));
        }
        format!("{{ {} }}", fields.join(", "))
    }

    fn only_topic(&self) -> Option<&str> {
        let RawTrigger { topic, every, cron, start, timezone, jitter, missed, http, availability, rate_per_s, burst } =
            self;
        let others = every.is_some()
            || http.is_some()
            || rate_per_s.is_some()
            || burst.is_some()
            || availability.is_some()
            || cron.is_some()
            || start.is_some()
            || timezone.is_some()
            || jitter.is_some()
            || missed.is_some();
        topic.as_deref().filter(|_| !others)
    }
}

/// What runs a function.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// An MQTT message on a topic the filter matches.
    Topic(TopicFilter),
    /// A schedule.
    Timer(Timer),
    /// An HTTP request to the API (`[api]`) on this route.
    Http(Route),
    /// A configured device going online or offline: its id, or `*` for every
    /// device (`sources::devices`).
    Availability(String),
}

/// A timer trigger.
#[derive(Debug, Clone)]
pub struct Timer {
    pub schedule: Schedule,
    /// Each run is delayed by a random amount up to this (0: none), so a fleet
    /// of gateways does not run at the same instant.
    pub jitter: Duration,
    /// What a run missed while the gateway was down becomes.
    pub missed: Missed,
}

/// When a timer runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every interval, from when the function was installed (or its last run).
    Every(Duration),
    /// On a cron expression (seconds optional), read in `zone`.
    Cron { expression: String, cron: Box<croner::Cron>, zone: Zone },
    /// Once, when the function starts: at gateway start, and when it is
    /// installed or replaced while the gateway runs.
    Start,
}

/// The time zone a cron expression is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    /// The gateway's (`TZ`, else `/etc/localtime`); DST gaps and repeats
    /// handled as croner does: a time skipped by the change runs at the first
    /// instant after it, a repeated time runs once.
    Local,
}

/// What becomes of runs due while the gateway was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// None of them runs; the schedule goes on from now (the default).
    Skip,
    /// One run at start stands in for all of them.
    RunOnce,
}

impl PartialEq for Trigger {
    fn eq(&self, other: &Trigger) -> bool {
        self.text() == other.text()
    }
}

impl Trigger {
    /// Validates a trigger; the error names the field at fault.
    pub fn parse(raw: &RawTrigger) -> Result<Trigger, String> {
        let RawTrigger { topic, every, cron, start, timezone, jitter, missed, http, availability, rate_per_s, burst } =
            raw;
        let kinds =
            [topic.is_some(), every.is_some(), cron.is_some(), start.is_some(), http.is_some(), availability.is_some()];
        match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(
                    "names no trigger: give a topic filter, or one of every, cron, start, http and availability".into(),
                )
            }
            1 => {}
            _ => {
                return Err(
                    "sets more than one of topic, every, cron, start, http and availability: one trigger each".into()
                )
            }
        }
        if http.is_none() {
            if let Some(extra) = [("rate_per_s", rate_per_s), ("burst", burst)].iter().find_map(|(k, v)| v.map(|_| k)) {
                return Err(format!("{extra} applies to an http route"));
            }
        }
        if let Some(device) = availability {
            if let Some(extra) = [("timezone", timezone), ("jitter", jitter), ("missed", missed)]
                .into_iter()
                .find_map(|(k, v)| v.as_ref().map(|_| k))
            {
                return Err(format!("{extra} applies to timers, not to availability"));
            }
            let device = device.trim();
            if device.is_empty() || (device != "*" && device.contains(['/', '+', '#', '*'])) {
                return Err(format!("availability: {device:?} is neither a device id nor \"*\" (every device)"));
            }
            return Ok(Trigger::Availability(device.to_owned()));
        }
        if let Some(route) = http {
            if let Some(extra) = [("timezone", timezone), ("jitter", jitter), ("missed", missed)]
                .into_iter()
                .find_map(|(k, v)| v.as_ref().map(|_| k))
            {
                return Err(format!("{extra} applies to timers, not to an http route"));
            }
            let mut route = Route::parse(route).map_err(|e| format!("http: {e}"))?;
            route.rate = match (rate_per_s, burst) {
                (None, Some(_)) => return Err("burst needs rate_per_s beside it".into()),
                (None, None) => None,
                (Some(rate), burst) => {
                    let burst = burst.unwrap_or(*rate);
                    if !(1..=100_000).contains(rate) || !(1..=1_000_000).contains(&burst) {
                        return Err(format!(
                            "rate_per_s {rate} and burst {burst}: 1 to 100000 requests a second, a burst of 1 to 1000000"
                        ));
                    }
                    Some((*rate, burst))
                }
            };
            return Ok(Trigger::Http(route));
        }
        if let Some(topic) = topic {
            if let Some(extra) = [("timezone", timezone), ("jitter", jitter), ("missed", missed)]
                .into_iter()
                .find_map(|(k, v)| v.as_ref().map(|_| k))
            {
                return Err(format!("{extra} applies to timers, not to a topic trigger"));
            }
            return TopicFilter::parse(topic).map(Trigger::Topic).map_err(|e| format!("topic filter {topic:?} {e}"));
        }
        let schedule = if let Some(every) = every {
            let d = parse_duration(every).map_err(|e| format!("every: {e}"))?;
            if d < MIN_EVERY {
                return Err(format!("every: {every:?} is shorter than the shortest interval, 100ms"));
            }
            Schedule::Every(d)
        } else if let Some(expression) = cron {
            let expression = expression.trim().to_owned();
            let cron = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .build()
                .parse(&expression)
                .map_err(|e| format!("cron: {expression:?} is not a cron expression: {e}"))?;
            let zone = match timezone.as_deref().map(str::trim) {
                None | Some("UTC") | Some("utc") => Zone::Utc,
                Some("local") => Zone::Local,
                Some(other) => return Err(format!("timezone: {other:?} is neither \"UTC\" nor \"local\"")),
            };
            Schedule::Cron { expression, cron: Box::new(cron), zone }
        } else {
            if *start != Some(true) {
                return Err("start: only `start = true` is a trigger".into());
            }
            if jitter.is_some() || missed.is_some() {
                return Err("jitter and missed apply to every and cron, not to start".into());
            }
            Schedule::Start
        };
        if timezone.is_some() && !matches!(schedule, Schedule::Cron { .. }) {
            return Err("timezone applies to cron expressions only".into());
        }
        let jitter = match jitter {
            None => Duration::ZERO,
            Some(j) => parse_duration(j).map_err(|e| format!("jitter: {e}"))?,
        };
        if let Schedule::Every(every) = schedule {
            if jitter >= every {
                return Err(format!(
                    "jitter: {} is not shorter than the interval ({}): runs would overtake each other",
                    format_duration(jitter),
                    format_duration(every)
                ));
            }
        }
        let missed = match missed.as_deref() {
            None | Some("skip") => Missed::Skip,
            Some("run_once") => Missed::RunOnce,
            Some(other) => return Err(format!("missed: {other:?} is neither \"skip\" nor \"run_once\"")),
        };
        Ok(Trigger::Timer(Timer { schedule, jitter, missed }))
    }

    /// The trigger in the form it is written in (filter, or inline table).
    pub fn text(&self) -> String {
        self.raw().only_topic().map(str::to_owned).unwrap_or_else(|| self.raw().to_toml())
    }

    /// The trigger as written, canonically (durations as `format_duration` writes them).
    pub fn raw(&self) -> RawTrigger {
        match self {
            Trigger::Topic(filter) => RawTrigger::topic(filter.as_str()),
            Trigger::Http(route) => RawTrigger {
                http: Some(route.to_string()),
                rate_per_s: route.rate.map(|(rate, _)| rate),
                burst: route.rate.map(|(_, burst)| burst),
                ..RawTrigger::default()
            },
            Trigger::Availability(device) => RawTrigger { availability: Some(device.clone()), ..RawTrigger::default() },
            Trigger::Timer(t) => {
                let mut raw = RawTrigger::default();
                match &t.schedule {
                    Schedule::Every(d) => raw.every = Some(format_duration(*d)),
                    Schedule::Cron { expression, zone, .. } => {
                        raw.cron = Some(expression.clone());
                        if *zone == Zone::Local {
                            raw.timezone = Some("local".into());
                        }
                    }
                    Schedule::Start => raw.start = Some(true),
                }
                if !t.jitter.is_zero() {
                    raw.jitter = Some(format_duration(t.jitter));
                }
                if t.missed == Missed::RunOnce {
                    raw.missed = Some("run_once".into());
                }
                raw
            }
        }
    }

    pub fn topic(&self) -> Option<&TopicFilter> {
        match self {
            Trigger::Topic(f) => Some(f),
            _ => None,
        }
    }

    pub fn timer(&self) -> Option<&Timer> {
        match self {
            Trigger::Timer(t) => Some(t),
            _ => None,
        }
    }

    /// The device id (or `*`) whose availability changes it runs on.
    pub fn availability(&self) -> Option<&str> {
        match self {
            Trigger::Availability(device) => Some(device),
            _ => None,
        }
    }

    pub fn http(&self) -> Option<&Route> {
        match self {
            Trigger::Http(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Timer {
    /// The first run the schedule has strictly after `after_ms` (`None` for
    /// `start`, and past the end of a cron expression's years).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.schedule {
            Schedule::Every(d) => Some(after_ms + d.as_millis() as u64),
            Schedule::Cron { cron, zone, .. } => cron_next(cron, *zone, after_ms),
            Schedule::Start => None,
        }
    }

    /// The last run the schedule has at or before `at_ms` (cron only).
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let Schedule::Cron { cron, zone, .. } = &self.schedule else { return None };
        let to_ms = |t: i64| u64::try_from(t).ok();
        let utc = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at_ms as i64)?;
        match zone {
            Zone::Utc => cron.find_previous_occurrence(&utc, true).ok().and_then(|t| to_ms(t.timestamp_millis())),
            Zone::Local => cron
                .find_previous_occurrence(&utc.with_timezone(&chrono::Local), true)
                .ok()
                .and_then(|t| to_ms(t.timestamp_millis())),
        }
    }
}

fn cron_next(cron: &croner::Cron, zone: Zone, after_ms: u64) -> Option<u64> {
    let utc = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms as i64)?;
    let next = match zone {
        Zone::Utc => cron.find_next_occurrence(&utc, false).ok()?.timestamp_millis(),
        Zone::Local => cron.find_next_occurrence(&utc.with_timezone(&chrono::Local), false).ok()?.timestamp_millis(),
    };
    u64::try_from(next).ok()
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`, or several (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("is empty: write a duration such as \"30s\", \"5m\" or \"1h30m\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_end = rest[digits..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| digits + i);
        let (number, unit) = (&rest[..digits], rest[digits..unit_end].trim());
        let bad =
            || format!("{text:?} is not a duration such as \"500ms\", \"30s\", \"5m\", \"2h\", \"1d\" or \"1h30m\"");
        let n: u64 = number.parse().map_err(|_| bad())?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total += Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// A duration as [`parse_duration`] reads it, largest units first (`1h30m`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && (ms % 1_000 == 0 || size > 1_000) {
            out += &format!("{}{unit}", ms / size);
            ms %= size;
        }
    }
    if ms > 0 {
        out += &format!("{ms}ms");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(toml_table: &str) -> Result<Trigger, String> {
        Trigger::parse(&RawTrigger::from_arg(toml_table)?)
    }

    #[test]
    fn a_string_is_a_topic_filter_and_a_table_a_timer() {
        assert_eq!(Trigger::parse(&RawTrigger::topic("a/+/b")).unwrap().text(), "a/+/b");
        let every = timer(r#"{ every = "90s", jitter = "1500ms", missed = "run_once" }"#).unwrap();
        assert_eq!(every.text(), r#"{ every = "1m30s", jitter = "1500ms", missed = "run_once" }"#);
        // The text reads back as the same trigger.
        assert_eq!(timer(&every.text()).unwrap(), every);
        assert_eq!(timer("{ start = true }").unwrap().text(), "{ start = true }");
        let cron = timer(r#"{ cron = "0 */5 * * * *", timezone = "local" }"#).unwrap();
        assert_eq!(cron.text(), r#"{ cron = "0 */5 * * * *", timezone = "local" }"#);
        let availability = timer(r#"{ availability = "fan-plug" }"#).unwrap();
        assert_eq!(availability.text(), r#"{ availability = "fan-plug" }"#);
        assert_eq!(availability.availability(), Some("fan-plug"));
        assert_eq!(timer(r#"{ availability = "*" }"#).unwrap().availability(), Some("*"));
        // A route's own rate limit; the burst is the rate unless given.
        let limited = timer(r#"{ http = "GET /hdr", rate_per_s = 5 }"#).unwrap();
        assert_eq!(limited.http().unwrap().rate, Some((5, 5)));
        assert_eq!(limited.text(), r#"{ http = "GET /hdr", rate_per_s = 5, burst = 5 }"#);
        assert_eq!(timer(&limited.text()).unwrap(), limited);
        assert_eq!(timer(r#"{ http = "GET /hdr" }"#).unwrap().http().unwrap().rate, None);
    }

    #[test]
    fn bad_triggers_name_the_field_at_fault() {
        for (text, says) in [
            ("{ every = \"10\" }", "every: \"10\" is not a duration"),
            ("{ every = \"50ms\" }", "shorter than the shortest interval"),
            ("{ every = \"1s\", cron = \"* * * * *\" }", "more than one"),
            ("{ cron = \"61 * * * *\" }", "cron: \"61 * * * *\" is not a cron expression"),
            ("{ cron = \"* * * * *\", timezone = \"Europe/Paris\" }", "timezone: \"Europe/Paris\""),
            ("{ every = \"10s\", timezone = \"local\" }", "timezone applies to cron"),
            ("{ every = \"10s\", jitter = \"10s\" }", "not shorter than the interval"),
            ("{ every = \"10s\", missed = \"later\" }", "missed: \"later\""),
            ("{ start = false }", "only `start = true`"),
            ("{ jitter = \"1s\" }", "names no trigger"),
            ("{ topic = \"a/b\", jitter = \"1s\" }", "jitter applies to timers"),
            ("{ topic = \"a/#/b\" }", "\"a/#/b\""),
            ("{ availability = \"a/b\" }", "neither a device id nor"),
            ("{ availability = \"plug\", jitter = \"1s\" }", "jitter applies to timers, not to availability"),
            ("{ availability = \"plug\", every = \"1s\" }", "more than one"),
            ("{ topic = \"a/b\", rate_per_s = 5 }", "rate_per_s applies to an http route"),
            ("{ http = \"GET /a\", burst = 5 }", "burst needs rate_per_s"),
            ("{ http = \"GET /a\", rate_per_s = 0 }", "1 to 100000 requests a second"),
        ] {
            let e = timer(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = RawTrigger::from_arg("{ evry = \"1s\" }").unwrap_err();
        assert!(e.contains("unknown field `evry`"), "{e}");
    }

    #[test]
    fn durations_read_and_write_alike() {
        for (text, ms) in [("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("1h30m", 5_400_000), ("1d", 86_400_000)] {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_millis(ms), "{text}");
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
        }
        assert_eq!(format_duration(Duration::from_millis(61_500)), "1m1500ms");
        assert_eq!(parse_duration("1m1500ms").unwrap(), Duration::from_millis(61_500));
        for bad in ["", "s", "10", "10x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cron_expression_runs_on_its_seconds_or_minutes_in_utc() {
        // 2026-12-07T10:00:00Z
        let t0 = 1_796_637_600_000;
        let every_5s = timer("{ cron = \"*/5 * * * * *\" }").unwrap();
        let every_5s = every_5s.timer().unwrap();
        assert_eq!(every_5s.next_after(t0), Some(t0 + 5_000));
        assert_eq!(every_5s.next_after(t0 + 1), Some(t0 + 5_000));
        // Five fields: minutes, seconds at 0.
        let hourly = timer("{ cron = \"30 * * * *\" }").unwrap();
        let hourly = hourly.timer().unwrap();
        assert_eq!(hourly.next_after(t0), Some(t0 + 30 * 60_000));
        assert_eq!(hourly.last_at_or_before(t0 + 45 * 60_000), Some(t0 + 30 * 60_000));
    }
}
