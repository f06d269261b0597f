//! The raw host imports of ABI version 1 and thin, safe shims over them.
//!
//! This is the only module that declares or calls the `edgefn` imports; everything
//! else in the SDK goes through the shims below. Off wasm32 (host unit tests, doc
//! tests) the shims behave like an empty event with no configuration on a gateway
//! without an upstream.

/// Which part of the current event an `event_*` import copies.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EventField {
    Topic,
    Payload,
    Device,
    Trigger,
}

/// Converts a length the host returned; negative lengths never happen in ABI v1.
fn length(raw: i32) -> usize {
    usize::try_from(raw).unwrap_or(0)
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "edgefn")]
    extern "C" {
        pub fn event_topic(buf: *mut u8, cap: i32) -> i32;
        pub fn event_payload(buf: *mut u8, cap: i32) -> i32;
        pub fn event_device(buf: *mut u8, cap: i32) -> i32;
        pub fn event_trigger(buf: *mut u8, cap: i32) -> i32;
        pub fn event_time_ms() -> i64;
        pub fn event_kind() -> i32;
        pub fn publish(
            topic: *const u8,
            topic_len: i32,
            payload: *const u8,
            payload_len: i32,
            qos: i32,
            retain: i32,
        ) -> i32;
        pub fn upstream(stream: *const u8, stream_len: i32, payload: *const u8, payload_len: i32) -> i32;
        pub fn log(level: i32, msg: *const u8, msg_len: i32);
        pub fn config_get(key: *const u8, key_len: i32, buf: *mut u8, cap: i32) -> i32;
        pub fn now_ms() -> i64;
    }
}

// On wasm32 a slice length is at most `isize::MAX == i32::MAX`, so every
// `len() as i32` below is lossless.

/// Copies `field` into `buf` if it fits and returns its full length.
#[cfg(target_arch = "wasm32")]
pub(crate) fn event_field(field: EventField, buf: &mut [u8]) -> usize {
    let (ptr, cap) = (buf.as_mut_ptr(), buf.len() as i32);
    // SAFETY: the host writes at most `cap` bytes at `ptr`, which `buf` owns.
    let raw = unsafe {
        match field {
            EventField::Topic => imports::event_topic(ptr, cap),
            EventField::Payload => imports::event_payload(ptr, cap),
            EventField::Device => imports::event_device(ptr, cap),
            EventField::Trigger => imports::event_trigger(ptr, cap),
        }
    };
    length(raw)
}

/// When the gateway received the current message, in Unix milliseconds.
#[cfg(target_arch = "wasm32")]
pub(crate) fn event_time_ms() -> i64 {
    // SAFETY: no arguments, no memory access.
    unsafe { imports::event_time_ms() }
}

/// What ran the function: 0 a message, 1 a timer.
#[cfg(target_arch = "wasm32")]
pub(crate) fn event_kind() -> i32 {
    // SAFETY: no arguments, no memory access.
    unsafe { imports::event_kind() }
}

/// Queues a publish; the host traps on arguments ABI.md forbids.
#[cfg(target_arch = "wasm32")]
pub(crate) fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool) -> i32 {
    // SAFETY: the host only reads the two ranges, which the slices own.
    unsafe {
        imports::publish(
            topic.as_ptr(),
            topic.len() as i32,
            payload.as_ptr(),
            payload.len() as i32,
            i32::from(qos),
            i32::from(retain),
        )
    }
}

/// Queues an upstream record: 0 buffered, -1 no upstream configured; the host
/// traps on arguments ABI.md forbids.
#[cfg(target_arch = "wasm32")]
pub(crate) fn upstream(stream: &str, payload: &[u8]) -> i32 {
    // SAFETY: the host only reads the two ranges, which the slices own.
    unsafe { imports::upstream(stream.as_ptr(), stream.len() as i32, payload.as_ptr(), payload.len() as i32) }
}

/// Writes one log line at `level` (0 error .. 4 trace).
#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: u8, msg: &str) {
    // SAFETY: the host only reads `msg`, which is valid UTF-8.
    unsafe { imports::log(i32::from(level), msg.as_ptr(), msg.len() as i32) }
}

/// Copies the value of `key` into `buf` if it fits; `None` when the key is unset.
#[cfg(target_arch = "wasm32")]
pub(crate) fn config_get(key: &str, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: the host reads `key` and writes at most `buf.len()` bytes into `buf`.
    let raw = unsafe { imports::config_get(key.as_ptr(), key.len() as i32, buf.as_mut_ptr(), buf.len() as i32) };
    (raw >= 0).then(|| length(raw))
}

/// Wall-clock time in Unix milliseconds.
#[cfg(target_arch = "wasm32")]
pub(crate) fn now_ms() -> i64 {
    // SAFETY: no arguments, no memory access.
    unsafe { imports::now_ms() }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use host::*;

/// Stand-ins for builds that are not wasm32: an empty event, no configuration,
/// publishes and logs dropped, no upstream configured, time zero.
#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::EventField;

    pub(crate) fn event_field(_field: EventField, _buf: &mut [u8]) -> usize {
        super::length(0)
    }

    pub(crate) fn event_time_ms() -> i64 {
        0
    }

    pub(crate) fn event_kind() -> i32 {
        0
    }

    pub(crate) fn publish(_topic: &str, _payload: &[u8], _qos: u8, _retain: bool) -> i32 {
        0
    }

    /// -1: like a gateway without an `[upstream]` section.
    pub(crate) fn upstream(_stream: &str, _payload: &[u8]) -> i32 {
        -1
    }

    pub(crate) fn log(_level: u8, _msg: &str) {}

    pub(crate) fn config_get(_key: &str, _buf: &mut [u8]) -> Option<usize> {
        None
    }

    pub(crate) fn now_ms() -> i64 {
        0
    }
}
