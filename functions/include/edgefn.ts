// edgefn.ts: the edgefn host ABI, version 1, for AssemblyScript (functions/ABI.md
// is the contract). Every import of module "edgefn" with its exact signature,
// and a few helpers that speak strings. Pointers are `usize` (i32 in wasm32),
// lengths `i32`, text UTF-8. AssemblyScript imports only what a program calls.
//
// The entry file re-exports the version: `export { edgefn_abi_version } from "./edgefn";`
// Build with the WASI shim (npm @assemblyscript/wasi-shim, for abort and
// console.log) and `exportStart: "_initialize"`: see `edgefn new --lang assemblyscript`.

/** Returns the ABI version this module is built for. */
export function edgefn_abi_version(): i32 {
  return 1;
}

/** Log levels for `log`. */
export const enum Level { Error = 0, Warn = 1, Info = 2, Debug = 3, Trace = 4 }

// The event. Each copies its value to [buf, buf + len) when cap >= len and
// returns len either way: call with cap = 0 to learn the size.

@external("edgefn", "event_topic")
export declare function event_topic(buf: usize, cap: i32): i32;

@external("edgefn", "event_payload")
export declare function event_payload(buf: usize, cap: i32): i32;

/** The configured device whose telemetry topic matched; length 0 when none did. */
@external("edgefn", "event_device")
export declare function event_device(buf: usize, cap: i32): i32;

@external("edgefn", "event_trigger")
export declare function event_trigger(buf: usize, cap: i32): i32;

/** When the gateway received the message (a timer run: when it was due), milliseconds since the Unix epoch. */
@external("edgefn", "event_time_ms")
export declare function event_time_ms(): i64;

/** What ran the function: EVENT_MESSAGE (an MQTT message) or EVENT_TIMER (a timer trigger). */
@external("edgefn", "event_kind")
export declare function event_kind(): i32;
export const EVENT_MESSAGE: i32 = 0;
export const EVENT_TIMER: i32 = 1;

/**
 * Publishes an MQTT message once the invocation succeeds. qos 0, 1 or 2;
 * retain 0 or 1. Returns 0, or -2 when [functions.allow] does not allow the topic.
 */
@external("edgefn", "publish")
export declare function publish(
  topic: usize, topic_len: i32, payload: usize, payload_len: i32, qos: i32, retain: i32
): i32;

/**
 * Records a payload for durable upstream delivery on `stream`. Returns 0, -1 when
 * the gateway has no [upstream], -2 when [functions.allow] does not allow the
 * stream, -3 while the outbox refuses records (full, or the disk nearly full).
 */
@external("edgefn", "upstream")
export declare function upstream(stream: usize, stream_len: i32, payload: usize, payload_len: i32): i32;

/** Logs a line under the function's name. */
@external("edgefn", "log")
export declare function log(level: i32, msg: usize, msg_len: i32): void;

/** The configuration value for `key` (the copy rule above); -1 when it is not set. */
@external("edgefn", "config_get")
export declare function config_get(key: usize, key_len: i32, buf: usize, cap: i32): i32;

/** Wall-clock time, milliseconds since the Unix epoch. */
@external("edgefn", "now_ms")
export declare function now_ms(): i64;

// Helpers that speak strings (they allocate: fine for most functions).

/** Reads a value with one of the event functions above into a string. */
function read(copy: (buf: usize, cap: i32) => i32): string {
  let len = copy(0, 0);
  let bytes = new ArrayBuffer(len);
  copy(changetype<usize>(bytes), len);
  return String.UTF8.decode(bytes);
}

/** The message payload, as text. */
export function payloadText(): string {
  return read(event_payload);
}

/** The id of the configured device the message came from, or "". */
export function deviceId(): string {
  return read(event_device);
}

/** The function's configuration value for `key`, or null when it is not set. */
export function configText(key: string): string | null {
  let name = String.UTF8.encode(key);
  let len = config_get(changetype<usize>(name), name.byteLength, 0, 0);
  if (len < 0) return null;
  let value = new ArrayBuffer(len);
  config_get(changetype<usize>(name), name.byteLength, changetype<usize>(value), len);
  return String.UTF8.decode(value);
}

/** Publishes `payload` to `topic` (see `publish`). */
export function publishText(topic: string, payload: string, qos: i32 = 0, retain: bool = false): i32 {
  let t = String.UTF8.encode(topic);
  let p = String.UTF8.encode(payload);
  return publish(changetype<usize>(t), t.byteLength, changetype<usize>(p), p.byteLength, qos, retain ? 1 : 0);
}

/** Logs `message` at `level`. */
export function logText(level: Level, message: string): void {
  let bytes = String.UTF8.encode(message);
  log(level, changetype<usize>(bytes), bytes.byteLength);
}
