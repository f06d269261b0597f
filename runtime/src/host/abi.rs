//! ABI v1's host functions (see `functions/ABI.md`), registered on a wasmi linker.
//!
//! Every function here checks each guest pointer and length through
//! `guest_memory` and turns a violation into a [`HostTrap`], which ends that one
//! invocation and never the host.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmi::{Caller, Linker, Memory, StoreLimits};

use super::guest_memory::{copy_out, guest_range, BoundsError};
use super::outcome::{FailReason, LogLevel, LogLine};
use super::tape::{Blob, Effect, Tape, Value};
use crate::config::FunctionSpec;
use crate::event::{unix_ms, Event, EventKind, Publish};
use crate::outbox::{Gate, Refusing};
use crate::topic::validate_topic_name;

/// The import module every ABI v1 function comes from.
pub const IMPORT_MODULE: &str = "edgefn";

/// Log lines one invocation may write; more are dropped and counted.
pub const MAX_LOGS_PER_INVOCATION: usize = 32;
/// Longer log messages are cut to this many bytes.
pub const MAX_LOG_BYTES: usize = 1024;
/// What `publish` and `upstream` return when the function's capabilities
/// (`[functions.allow]`) do not allow the call.
pub const DENIED: i32 = -2;
/// `command`: no such device, no profile, or an action its profile cannot do.
pub const CANNOT: i32 = -6;
/// What `upstream` returns while the outbox refuses records (full, or the
/// disk nearly full): nothing was recorded.
pub const OUTBOX_REFUSING: i32 = -3;

/// What the store carries for host functions: the function's settings and the
/// state of the invocation in progress.
pub struct HostState {
    /// Caps linear memory and tables (wasmi calls it on every grow).
    pub limits: StoreLimits,
    /// The instance's exported memory, cached after instantiation.
    pub memory: Option<Memory>,
    /// The function's configuration: its name, limits and `config_get` values.
    pub spec: Arc<FunctionSpec>,
    /// The invocation in progress; `None` between invocations.
    pub call: Option<CallState>,
    /// Whether this gateway has an upstream outbox (else `upstream` returns -1).
    pub upstream_enabled: bool,
    /// Whether that outbox refuses records now (then `upstream` returns -3).
    pub outbox_gate: Option<Gate>,
    /// Where the function's state store is opened from, on its first state call.
    pub stores: Option<Arc<crate::state::Stores>>,
    pub state: Option<Arc<crate::state::Store>>,
    /// The devices `command` reaches, by id.
    pub devices: Option<Arc<crate::profile::Directory>>,
}

/// Everything one invocation accumulates.
pub struct CallState {
    pub event: Arc<Event>,
    /// The trigger that fired, as written (`Trigger::text`); `None` while `init` runs.
    pub trigger: Option<Arc<str>>,
    pub deadline: Instant,
    pub publishes: Vec<Publish>,
    /// Records for the upstream outbox: (stream, payload).
    pub upstream: Vec<(String, Vec<u8>)>,
    /// Payload bytes of publishes and upstream records together.
    pub publish_bytes: usize,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u32,
    /// Calls the function's capabilities refused: "publish to T", "upstream to S".
    pub denied: Vec<String>,
    /// `upstream` calls answered [`OUTBOX_REFUSING`].
    pub outbox_refused: u32,
    /// The answer to an HTTP request, if the function gave one.
    pub reply: Option<crate::event::HttpReply>,
    /// `command_confirmed` calls, for the gateway to wait on once sent.
    pub confirmations: Vec<super::outcome::Confirm>,
    /// Recording or replaying (`crate::recording`): what the world answered
    /// and what the function did. `None` (the usual case) costs nothing.
    pub tape: Option<Tape>,
}

impl CallState {
    /// `live()`; on a tape, the tape's answer (recorded, or read back).
    pub(super) fn ask(&mut self, call: &str, key: &str, live: impl FnOnce() -> Value) -> Value {
        match &mut self.tape {
            None => live(),
            Some(tape) => tape.answer(call, key, live),
        }
    }

    /// [`Self::ask`] for a yes or no (a capability check, the outbox's gate).
    pub(super) fn ask_if(&mut self, call: &str, key: &str, live: impl FnOnce() -> bool) -> bool {
        self.ask(call, key, || Value::Int(i64::from(live()))).int() == Some(1)
    }

    /// Writes `effect` on the tape, if there is one.
    pub(super) fn did(&mut self, effect: impl FnOnce() -> Effect) {
        if let Some(tape) = &mut self.tape {
            tape.effects.push(effect());
        }
    }

    /// Keeps one of the function's log lines.
    pub(super) fn log(&mut self, line: LogLine) {
        self.did(|| Effect::Log { level: format!("{:?}", line.level).to_lowercase(), message: line.message.clone() });
        self.logs.push(line);
    }

    /// Replaying: the clock a call the recording lacks reads.
    pub(super) fn fixed_clock_ms(&self) -> Option<u64> {
        self.tape.as_ref().and_then(|t| t.fixed_clock_ms)
    }
}

/// The reason a host call ended the invocation, carried through wasmi as a trap.
#[derive(Debug)]
pub struct HostTrap(pub FailReason);

impl fmt::Display for HostTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl wasmi::errors::HostError for HostTrap {}

pub(super) fn abi(msg: impl Into<String>) -> wasmi::Error {
    wasmi::Error::host(HostTrap(FailReason::Abi(msg.into())))
}

impl From<BoundsError> for wasmi::Error {
    fn from(e: BoundsError) -> Self {
        abi(e.to_string())
    }
}

/// Splits the caller into its memory bytes and the invocation state, after the
/// deadline check every host call starts with.
fn parts<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Result<(&'a mut [u8], &'a Arc<FunctionSpec>, &'a mut CallState), wasmi::Error> {
    let (bytes, spec, call, _, _) = parts_with_upstream(caller)?;
    Ok((bytes, spec, call))
}

/// Guest memory, the function's spec, the invocation's state, and whether the
/// gateway has an upstream outbox.
type PartsWithUpstream<'a> = (&'a mut [u8], &'a Arc<FunctionSpec>, &'a mut CallState, bool, Option<&'a Gate>);

/// Like `parts`, also saying whether the gateway has an upstream outbox.
fn parts_with_upstream<'a>(caller: &'a mut Caller<'_, HostState>) -> Result<PartsWithUpstream<'a>, wasmi::Error> {
    let memory = caller.data().memory.ok_or_else(|| abi("the module exports no memory"))?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    let call = state.call.as_mut().ok_or_else(|| abi("host function called outside an invocation (from init?)"))?;
    if Instant::now() > call.deadline {
        return Err(wasmi::Error::host(HostTrap(FailReason::Timeout)));
    }
    Ok((bytes, &state.spec, call, state.upstream_enabled, state.outbox_gate.as_ref()))
}

/// `publish` and `publish_within`: `ranges` is topic, topic length, payload,
/// payload length; `expiry` the call's own (`Some(None)`: never), else the
/// function's `limits.publish_expiry_ms`.
fn publish(
    mut c: Caller<'_, HostState>,
    name: &str,
    [topic, topic_len, payload, payload_len]: [i32; 4],
    qos: i32,
    retain: i32,
    expiry: Option<Option<Duration>>,
) -> Result<i32, wasmi::Error> {
    let (mem, spec, call) = parts(&mut c)?;
    refuse_during_init(call, name)?;
    let topic = guest_range(mem.len(), topic, topic_len, "publish topic")?;
    let payload = guest_range(mem.len(), payload, payload_len, "publish payload")?;
    let topic = std::str::from_utf8(&mem[topic]).map_err(|_| abi(format!("{name}: topic is not UTF-8")))?;
    validate_topic_name(topic).map_err(|e| abi(format!("{name}: topic {topic:?} {e}")))?;
    let qos =
        u8::try_from(qos).ok().filter(|q| *q <= 2).ok_or_else(|| abi(format!("{name}: qos {qos} is not 0, 1 or 2")))?;
    let retain = match retain {
        0 => false,
        1 => true,
        other => return Err(abi(format!("{name}: retain {other} is not 0 or 1"))),
    };
    if !call.ask_if("may_publish", topic, || spec.allow.may_publish(topic)) {
        call.denied.push(format!("publish to {topic}"));
        return Ok(DENIED);
    }
    charge(spec, call, name, payload.len())?;
    let expires_ms =
        expiry.unwrap_or(spec.limits.publish_expiry).map(|e| crate::event::unix_ms() + e.as_millis() as u64);
    let publish = Publish { topic: topic.to_owned(), payload: mem[payload].to_vec(), qos, retain, expires_ms };
    call.did(|| Effect::Publish { topic: publish.topic.clone(), payload: Blob::of(&publish.payload), qos, retain });
    call.publishes.push(publish);
    Ok(0)
}

/// `command(device, device_len, action, action_len)`: the device's profile
/// encodes the action; what it makes is published as `publish` does, QoS 1.
fn command(
    c: Caller<'_, HostState>,
    device: i32,
    device_len: i32,
    action: i32,
    action_len: i32,
) -> Result<i32, wasmi::Error> {
    Ok(match send_command(c, "command", [device, device_len, action, action_len], None)? {
        Ok(_) => 0,
        Err(code) => code,
    })
}

/// `command_confirmed(..., timeout_ms)`: `command`, and the function is told
/// in a later event whether the device confirmed it within `timeout_ms`.
fn command_confirmed(
    c: Caller<'_, HostState>,
    device: i32,
    device_len: i32,
    action: i32,
    action_len: i32,
    timeout_ms: i32,
) -> Result<i32, wasmi::Error> {
    if timeout_ms <= 0 {
        return Err(abi(format!("command_confirmed: timeout_ms {timeout_ms} is not positive")));
    }
    let timeout = Duration::from_millis(timeout_ms as u64);
    Ok(match send_command(c, "command_confirmed", [device, device_len, action, action_len], Some(timeout))? {
        Ok(id) => id,
        Err(code) => code,
    })
}

/// Numbers confirmed commands, gateway-wide, from 1 (within i32: the id is a return value).
static NEXT_CONFIRM: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Encodes and queues a command; with a timeout, also what confirms it.
/// `Ok(id)` (0 without a timeout), or `Err` with the ABI code to return.
fn send_command(
    mut c: Caller<'_, HostState>,
    name: &str,
    [device, device_len, action, action_len]: [i32; 4],
    confirm: Option<Duration>,
) -> Result<Result<i32, i32>, wasmi::Error> {
    let directory = c.data().devices.clone();
    let (mem, spec, call) = parts(&mut c)?;
    refuse_during_init(call, name)?;
    let device = guest_range(mem.len(), device, device_len, "command device")?;
    let action = guest_range(mem.len(), action, action_len, "command action")?;
    let device = std::str::from_utf8(&mem[device]).map_err(|_| abi(format!("{name}: device is not UTF-8")))?;
    let action = std::str::from_utf8(&mem[action]).map_err(|_| abi(format!("{name}: action is not UTF-8")))?;
    // The device's profile encodes the action: the topic, a newline, the payload.
    let encoded = call.ask("command", &format!("{device} {action}"), || {
        let encoded = crate::profile::Action::parse(action).and_then(|parsed| match directory.as_deref() {
            Some(d) => d.command(device, parsed),
            None => Err("this gateway has no devices".to_owned()),
        });
        match encoded {
            Ok(c) => Value::Bytes([c.topic.as_bytes(), b"\n", &c.payload].concat()),
            Err(why) => Value::Refused(why),
        }
    });
    let split = |bytes: &[u8]| {
        let at = bytes.iter().position(|b| *b == b'\n')?;
        Some((String::from_utf8(bytes[..at].to_vec()).ok()?, bytes[at + 1..].to_vec()))
    };
    let (topic, payload) = match encoded {
        Value::Bytes(bytes) => {
            split(&bytes).ok_or_else(|| abi(format!("{name}: the recording's encoding is broken")))?
        }
        other => {
            let why = match other {
                Value::Refused(why) => why,
                _ => "the recording has no such command".to_owned(),
            };
            if call.logs.len() < MAX_LOGS_PER_INVOCATION {
                let message = format!("{name} {device:?} {action:?} not sent: {why}");
                call.log(LogLine { level: LogLevel::Warn, message: truncate_utf8(&message, MAX_LOG_BYTES).to_owned() });
            }
            return Ok(Err(CANNOT));
        }
    };
    let parsed = crate::profile::Action::parse(action).map_err(|e| abi(format!("{name}: {e}")))?;
    let allowed = |spec: &FunctionSpec| spec.allow.may_publish(&topic) && spec.allow.may_command_device(device);
    if !call.ask_if("may_command", device, || allowed(spec)) {
        call.denied.push(format!("command {device} {action} (to {topic})"));
        return Ok(Err(DENIED));
    }
    charge(spec, call, name, payload.len())?;
    let expires_ms = spec.limits.publish_expiry.map(|e| crate::event::unix_ms() + e.as_millis() as u64);
    call.did(|| Effect::Command { device: device.to_owned(), action: action.to_owned() });
    call.publishes.push(Publish { topic, payload, qos: 1, retain: false, expires_ms });
    let was_on = directory.as_deref().and_then(|d| d.last_on(device));
    let Some(timeout) = confirm else { return Ok(Ok(0)) };
    let id = NEXT_CONFIRM.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0x7fff_ffff;
    let id = id.max(1);
    call.confirmations.push(super::outcome::Confirm {
        id: u64::from(id),
        device: device.to_owned(),
        action: parsed,
        was_on,
        timeout,
    });
    Ok(Ok(id as i32))
}

/// `http_param` and `http_header`: the value `find` gives for the name at
/// `name`/`name_len`, copied out; -1 when there is none (or no request).
fn http_lookup(
    mut c: Caller<'_, HostState>,
    what: &'static str,
    [name, name_len, buf, cap]: [i32; 4],
    find: impl Fn(&crate::event::HttpRequest, &str) -> Option<String>,
) -> Result<i32, wasmi::Error> {
    let (mem, _, call) = parts(&mut c)?;
    let name = guest_range(mem.len(), name, name_len, "http name")?;
    let name = std::str::from_utf8(&mem[name]).map_err(|_| abi(format!("{what}: name is not UTF-8")))?;
    let value = match &call.event.kind {
        EventKind::Http(request) => find(request, name),
        _ => None,
    };
    match value {
        Some(v) => Ok(copy_out(mem, buf, cap, v.as_bytes(), what)?),
        None => Ok(-1),
    }
}

/// Checks the per-invocation quota shared by publishes and upstream records.
fn charge(spec: &FunctionSpec, call: &mut CallState, what: &str, bytes: usize) -> Result<(), wasmi::Error> {
    let limits = &spec.limits;
    if call.publishes.len() + call.upstream.len() >= limits.max_publishes {
        let max = limits.max_publishes;
        return Err(abi(format!("{what}: more than {max} messages in one invocation (limits.max_publishes)")));
    }
    if call.publish_bytes + bytes > limits.max_publish_bytes {
        let max = limits.max_publish_bytes;
        return Err(abi(format!("{what}: more than {max} payload bytes in one invocation (limits.max_publish_bytes)")));
    }
    call.publish_bytes += bytes;
    Ok(())
}

/// `init` runs at every instantiation (after a trap too): what it sent would be
/// sent again each time, so sending from it fails the load with this reason.
fn refuse_during_init(call: &CallState, what: &str) -> Result<(), wasmi::Error> {
    if call.trigger.is_none() {
        return Err(abi(format!(
            "{what} during init: init runs again at every instantiation, so what it sends would repeat; \
             send from handle"
        )));
    }
    Ok(())
}

/// Registers every ABI v1 import on `linker`.
pub fn define(linker: &mut Linker<HostState>) -> Result<(), wasmi::Error> {
    linker.func_wrap(IMPORT_MODULE, "event_topic", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        Ok(copy_out(mem, buf, cap, call.event.subject().as_bytes(), "event_topic")?)
    })?;
    linker.func_wrap(IMPORT_MODULE, "event_payload", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        Ok(copy_out(mem, buf, cap, &call.event.payload, "event_payload")?)
    })?;
    linker.func_wrap(IMPORT_MODULE, "event_device", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        let device = call.event.device.as_deref().unwrap_or("");
        Ok(copy_out(mem, buf, cap, device.as_bytes(), "event_device")?)
    })?;
    linker.func_wrap(IMPORT_MODULE, "event_reading", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        let reading = call.event.reading.as_deref().unwrap_or_default();
        Ok(copy_out(mem, buf, cap, reading, "event_reading")?)
    })?;
    linker.func_wrap(IMPORT_MODULE, "command", command)?;
    linker.func_wrap(IMPORT_MODULE, "command_confirmed", command_confirmed)?;
    linker.func_wrap(
        IMPORT_MODULE,
        "device_reading",
        |mut c: Caller<'_, HostState>, device: i32, device_len: i32, buf: i32, cap: i32| {
            let directory = c.data().devices.clone();
            let (mem, spec, call) = parts(&mut c)?;
            let range = guest_range(mem.len(), device, device_len, "device_reading device")?;
            let device = std::str::from_utf8(&mem[range]).map_err(|_| abi("device_reading: device is not UTF-8"))?;
            if !call.ask_if("may_read_device", device, || spec.allow.may_read_device(device)) {
                call.denied.push(format!("device_reading {device}"));
                return Ok(DENIED);
            }
            let last = directory.and_then(|d| d.last(device));
            match call.ask("device_reading", device, || last.map_or(Value::Absent, Value::Bytes)) {
                Value::Bytes(values) => Ok(copy_out(mem, buf, cap, &values, "device_reading")?),
                _ => Ok(-1),
            }
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "event_trigger", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        let trigger = call.trigger.clone().unwrap_or_default();
        Ok(copy_out(mem, buf, cap, trigger.as_bytes(), "event_trigger")?)
    })?;
    linker.func_wrap(IMPORT_MODULE, "event_time_ms", |mut c: Caller<'_, HostState>| {
        let (_, _, call) = parts(&mut c)?;
        Ok(call.event.received_ms as i64)
    })?;
    linker.func_wrap(IMPORT_MODULE, "event_kind", |mut c: Caller<'_, HostState>| {
        let (_, _, call) = parts(&mut c)?;
        Ok(call.event.kind.code())
    })?;
    linker.func_wrap(IMPORT_MODULE, "http_method", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        let method = match &call.event.kind {
            EventKind::Http(request) => request.method.as_bytes(),
            _ => &[],
        };
        Ok(copy_out(mem, buf, cap, method, "http_method")?)
    })?;
    linker.func_wrap(IMPORT_MODULE, "http_query", |mut c: Caller<'_, HostState>, buf: i32, cap: i32| {
        let (mem, _, call) = parts(&mut c)?;
        let query = match &call.event.kind {
            EventKind::Http(request) => request.query.as_bytes(),
            _ => &[],
        };
        Ok(copy_out(mem, buf, cap, query, "http_query")?)
    })?;
    linker.func_wrap(
        IMPORT_MODULE,
        "http_param",
        |c: Caller<'_, HostState>, name: i32, name_len: i32, buf: i32, cap: i32| {
            http_lookup(c, "http_param", [name, name_len, buf, cap], |request, name| {
                request.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "http_header",
        |c: Caller<'_, HostState>, name: i32, name_len: i32, buf: i32, cap: i32| {
            http_lookup(c, "http_header", [name, name_len, buf, cap], |request, name| {
                request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "http_respond",
        |mut c: Caller<'_, HostState>, status: i32, ct: i32, ct_len: i32, body: i32, body_len: i32| {
            let (mem, spec, call) = parts(&mut c)?;
            refuse_during_init(call, "http_respond")?;
            let ct = guest_range(mem.len(), ct, ct_len, "http_respond content type")?;
            let body = guest_range(mem.len(), body, body_len, "http_respond body")?;
            if !matches!(call.event.kind, EventKind::Http(_)) {
                return Ok(-1i32);
            }
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| abi(format!("http_respond: status {status} is not 100 to 599")))?;
            let content_type = std::str::from_utf8(&mem[ct])
                .ok()
                .filter(|t| t.len() <= 256 && t.bytes().all(|b| (b' '..=b'~').contains(&b)))
                .ok_or_else(|| abi("http_respond: the content type is not printable ASCII of 256 bytes at most"))?
                .to_owned();
            let earlier = call.reply.as_ref().map_or(0, |r| r.body.len());
            call.publish_bytes -= earlier;
            charge(spec, call, "http_respond", body.len())?;
            let reply = crate::event::HttpReply { status, content_type, body: mem[body].to_vec() };
            call.did(|| Effect::Reply {
                status,
                content_type: reply.content_type.clone(),
                body: Blob::of(&reply.body),
            });
            call.reply = Some(reply);
            Ok(0)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "now_ms", |mut c: Caller<'_, HostState>| {
        let (_, _, call) = parts(&mut c)?;
        let fixed = call.fixed_clock_ms();
        Ok(call.ask("now_ms", "", || Value::Int(fixed.unwrap_or_else(unix_ms) as i64)).int().unwrap_or(0))
    })?;
    linker.func_wrap(
        IMPORT_MODULE,
        "config_get",
        |mut c: Caller<'_, HostState>, key: i32, key_len: i32, buf: i32, cap: i32| {
            let (mem, spec, call) = parts(&mut c)?;
            let key = guest_range(mem.len(), key, key_len, "config_get key")?;
            let key = std::str::from_utf8(&mem[key]).map_err(|_| abi("config_get: key is not UTF-8"))?;
            let live = || spec.config.get(key).map_or(Value::Absent, |v| Value::Bytes(v.clone().into_bytes()));
            match call.ask("config_get", key, live) {
                Value::Bytes(value) => Ok(copy_out(mem, buf, cap, &value, "config_get buffer")?),
                _ => {
                    guest_range(mem.len(), buf, cap, "config_get buffer")?;
                    Ok(-1)
                }
            }
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "publish",
        |c: Caller<'_, HostState>,
         topic: i32,
         topic_len: i32,
         payload: i32,
         payload_len: i32,
         qos: i32,
         retain: i32| { publish(c, "publish", [topic, topic_len, payload, payload_len], qos, retain, None) },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "publish_within",
        |c: Caller<'_, HostState>,
         topic: i32,
         topic_len: i32,
         payload: i32,
         payload_len: i32,
         qos: i32,
         retain: i32,
         expiry_ms: i32| {
            let expiry = match expiry_ms {
                0 => Some(None),
                ms if ms > 0 => Some(Some(Duration::from_millis(ms as u64))),
                _ => None,
            };
            let Some(expiry) = expiry else {
                return Err(abi(format!("publish_within: expiry_ms {expiry_ms} is negative (0: never expires)")));
            };
            publish(c, "publish_within", [topic, topic_len, payload, payload_len], qos, retain, Some(expiry))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "upstream",
        |mut c: Caller<'_, HostState>, stream: i32, stream_len: i32, payload: i32, payload_len: i32| {
            let (mem, spec, call, enabled, gate) = parts_with_upstream(&mut c)?;
            refuse_during_init(call, "upstream")?;
            let stream = guest_range(mem.len(), stream, stream_len, "upstream stream")?;
            let payload = guest_range(mem.len(), payload, payload_len, "upstream payload")?;
            if !call.ask_if("upstream_enabled", "", || enabled) {
                return Ok(-1i32);
            }
            let stream = std::str::from_utf8(&mem[stream]).map_err(|_| abi("upstream: stream name is not UTF-8"))?;
            if !crate::outbox::valid_stream(stream) {
                return Err(abi(format!(
                    "upstream: stream {stream:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
                )));
            }
            if !call.ask_if("may_upstream", stream, || spec.allow.may_upstream(stream)) {
                call.denied.push(format!("upstream to {stream}"));
                return Ok(DENIED);
            }
            if call.ask_if("outbox_refusing", "", || gate.is_some_and(|g| g.refusing() != Refusing::No)) {
                if let Some(gate) = gate {
                    gate.count_refused();
                }
                call.outbox_refused += 1;
                return Ok(OUTBOX_REFUSING);
            }
            charge(spec, call, "upstream", payload.len())?;
            let record = (stream.to_owned(), mem[payload].to_vec());
            call.did(|| Effect::Upstream { stream: record.0.clone(), payload: Blob::of(&record.1) });
            call.upstream.push(record);
            Ok(0)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "log", |mut c: Caller<'_, HostState>, level: i32, msg: i32, msg_len: i32| {
        let (mem, _, call) = parts(&mut c)?;
        let range = guest_range(mem.len(), msg, msg_len, "log message")?;
        if call.logs.len() >= MAX_LOGS_PER_INVOCATION {
            call.logs_dropped += 1;
            return Ok(());
        }
        let bytes = &mem[range];
        let message = std::str::from_utf8(bytes).map_err(|_| abi("log: message is not UTF-8"))?;
        let message = truncate_utf8(message, MAX_LOG_BYTES).to_owned();
        call.log(LogLine { level: LogLevel::from_abi(level), message });
        Ok(())
    })?;
    Ok(())
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate_utf8;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
