//! A subset of WASI preview 1 (`wasi_snapshot_preview1`), so that a module an
//! ordinary toolchain builds for `wasm32-wasip1` runs unchanged, under the same
//! fuel, memory, capability and accounting rules as any function:
//! - `fd_write` to stdout (fd 1) and stderr (fd 2) becomes the function's log,
//!   one line per line written (info and warn), under the same per-invocation
//!   and per-second budgets as `edgefn.log`; any other fd is `EBADF`;
//! - `fd_fdstat_get` describes fds 1 and 2 as write-only character devices,
//!   terminals to libc: C's stdio then flushes every line as it is written,
//!   instead of holding the output of one event until a later one fills a buffer;
//! - `clock_time_get` (realtime and monotonic), `clock_res_get`, `random_get`
//!   (the system's random numbers), `sched_yield`;
//! - `args_*` and `environ_*` describe empty lists;
//! - `proc_exit(0)` ends the invocation as a success, another code as a
//!   failure with that code (the instance is made afresh for the next event);
//! - every other preview 1 call returns `ENOSYS` (52): no files, no sockets.
//!
//! A reactor's `_initialize` (libc's constructors) runs once per instance,
//! before `init`.

use std::sync::OnceLock;
use std::time::Instant;

use wasmi::{Caller, FuncType, Linker, Val};

use super::abi::{HostState, MAX_LOGS_PER_INVOCATION, MAX_LOG_BYTES};
use super::guest_memory::guest_range;
use super::outcome::{FailReason, LogLevel, LogLine};
use super::tape::Value;

/// The import module of WASI preview 1.
pub const IMPORT_MODULE: &str = "wasi_snapshot_preview1";

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// `proc_exit` unwinds the guest with this, carried through wasmi as a trap.
#[derive(Debug)]
pub struct ProcExit(pub i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proc_exit({})", self.0)
    }
}

impl wasmi::errors::HostError for ProcExit {}

/// The type WASI preview 1 gives `name`, if it is one of its functions.
pub fn import_type(name: &str) -> Option<FuncType> {
    super::abi_table::wasi_type(name)
}

/// Guest memory and the invocation in progress (`None` during `_initialize`).
fn memory_and_call<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Option<(&'a mut [u8], Option<&'a mut super::abi::CallState>)> {
    let memory = caller.data().memory?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    Some((bytes, state.call.as_mut()))
}

fn put_u32(mem: &mut [u8], ptr: i32, value: u32) -> Result<(), i32> {
    let range = guest_range(mem.len(), ptr, 4, "wasi result").map_err(|_| EFAULT)?;
    mem[range].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

fn put_u64(mem: &mut [u8], ptr: i32, value: u64) -> Result<(), i32> {
    let range = guest_range(mem.len(), ptr, 8, "wasi result").map_err(|_| EFAULT)?;
    mem[range].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// `fd_fdstat_get` for stdout and stderr: a character device (filetype 2) with
/// only the right to write (`fd_write`, bit 6), neither seekable nor tellable,
/// which is what libc's `isatty` looks for.
fn fd_fdstat_get(caller: &mut Caller<'_, HostState>, fd: i32, at: i32) -> i32 {
    if !(1..=2).contains(&fd) {
        return EBADF;
    }
    let Some((mem, _)) = memory_and_call(caller) else { return EFAULT };
    let Ok(range) = guest_range(mem.len(), at, 24, "fd_fdstat_get result") else { return EFAULT };
    let stat = &mut mem[range];
    stat.fill(0);
    stat[0] = 2; // filetype: character device; flags (2..4) none
    stat[8..16].copy_from_slice(&(1u64 << 6).to_le_bytes()); // rights: fd_write; inheriting: none
    SUCCESS
}

fn errno(result: Result<(), i32>) -> i32 {
    result.err().unwrap_or(SUCCESS)
}

/// `fd_write`: the bytes of every iovec, as log lines for fds 1 and 2.
fn fd_write(caller: &mut Caller<'_, HostState>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Warn,
        _ => return EBADF,
    };
    let Some((mem, call)) = memory_and_call(caller) else { return EFAULT };
    let Ok(vec) = guest_range(mem.len(), iovs, iovs_len.saturating_mul(8), "fd_write iovs") else { return EFAULT };
    let mut text = Vec::new();
    for iov in mem[vec].chunks_exact(8) {
        let ptr = i32::from_le_bytes(iov[..4].try_into().expect("4 bytes"));
        let len = i32::from_le_bytes(iov[4..].try_into().expect("4 bytes"));
        let Ok(range) = guest_range(mem.len(), ptr, len, "fd_write buffer") else { return EFAULT };
        text.extend_from_slice(&mem[range]);
    }
    let written = text.len() as u32;
    if let Some(call) = call {
        let text = String::from_utf8_lossy(&text);
        for line in text.trim_end_matches('\n').split('\n').filter(|l| !l.is_empty()) {
            if call.logs.len() >= MAX_LOGS_PER_INVOCATION {
                call.logs_dropped += 1;
                continue;
            }
            let mut end = line.len().min(MAX_LOG_BYTES);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            call.log(LogLine { level, message: line[..end].to_owned() });
        }
    }
    errno(put_u32(mem, nwritten, written))
}

/// Registers every preview 1 import on `linker`.
pub fn define(linker: &mut Linker<HostState>) -> Result<(), wasmi::Error> {
    linker.func_wrap(
        IMPORT_MODULE,
        "fd_write",
        |mut c: Caller<'_, HostState>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| {
            fd_write(&mut c, fd, iovs, iovs_len, nwritten)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "fd_fdstat_get", |mut c: Caller<'_, HostState>, fd: i32, at: i32| {
        fd_fdstat_get(&mut c, fd, at)
    })?;
    linker.func_wrap(IMPORT_MODULE, "clock_time_get", |mut c: Caller<'_, HostState>, id: i32, _: i64, at: i32| {
        let live = |fixed_ms: Option<u64>| match (id, fixed_ms) {
            (0 | 1, Some(ms)) => Some(ms * 1_000_000),
            (0, None) => Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
            ),
            (1, None) => Some(process_start().elapsed().as_nanos() as u64),
            _ => None,
        };
        let Some((mem, call)) = memory_and_call(&mut c) else { return EFAULT };
        let now = match call {
            Some(call) => {
                let fixed = call.fixed_clock_ms();
                call.ask("clock_time_get", &id.to_string(), || {
                    live(fixed).map_or(Value::Absent, |n| Value::Int(n as i64))
                })
                .int()
                .map(|n| n as u64)
            }
            None => live(None),
        };
        let Some(now) = now else { return EINVAL };
        errno(put_u64(mem, at, now))
    })?;
    linker.func_wrap(IMPORT_MODULE, "clock_res_get", |mut c: Caller<'_, HostState>, id: i32, at: i32| {
        if !(0..=1).contains(&id) {
            return EINVAL;
        }
        let Some((mem, _)) = memory_and_call(&mut c) else { return EFAULT };
        errno(put_u64(mem, at, 1_000))
    })?;
    linker.func_wrap(IMPORT_MODULE, "random_get", |mut c: Caller<'_, HostState>, buf: i32, len: i32| {
        use ring::rand::SecureRandom;
        let Some((mem, call)) = memory_and_call(&mut c) else { return EFAULT };
        let Ok(range) = guest_range(mem.len(), buf, len, "random_get buffer") else { return EFAULT };
        let Some(call) = call.filter(|c| c.tape.is_some()) else {
            return match ring::rand::SystemRandom::new().fill(&mut mem[range]) {
                Ok(()) => SUCCESS,
                Err(_) => ENOSYS,
            };
        };
        // Recorded, or read back; a replay's call the recording lacks gets zeros.
        let zeros = call.tape.as_ref().is_some_and(|t| t.replaying_now());
        let mut bytes = vec![0; range.len()];
        let answer = call.ask("random_get", "", || {
            if zeros || ring::rand::SystemRandom::new().fill(&mut bytes).is_ok() {
                Value::Bytes(bytes)
            } else {
                Value::Absent
            }
        });
        match answer {
            Value::Bytes(b) if b.len() == range.len() => {
                mem[range].copy_from_slice(&b);
                SUCCESS
            }
            Value::Bytes(_) => EINVAL,
            _ => ENOSYS,
        }
    })?;
    // Empty argument and environment lists: counts and sizes are 0.
    for sizes in ["args_sizes_get", "environ_sizes_get"] {
        linker.func_wrap(IMPORT_MODULE, sizes, |mut c: Caller<'_, HostState>, count: i32, size: i32| {
            let Some((mem, _)) = memory_and_call(&mut c) else { return EFAULT };
            errno(put_u32(mem, count, 0).and_then(|()| put_u32(mem, size, 0)))
        })?;
    }
    for get in ["args_get", "environ_get"] {
        linker.func_wrap(IMPORT_MODULE, get, |_: Caller<'_, HostState>, _: i32, _: i32| SUCCESS)?;
    }
    linker.func_wrap(IMPORT_MODULE, "sched_yield", |_: Caller<'_, HostState>| SUCCESS)?;
    linker.func_wrap(
        IMPORT_MODULE,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> Result<(), wasmi::Error> { Err(wasmi::Error::host(ProcExit(code))) },
    )?;
    // The rest: no files, no sockets, no signals.
    let defined = [
        "fd_write",
        "fd_fdstat_get",
        "clock_time_get",
        "clock_res_get",
        "random_get",
        "args_sizes_get",
        "environ_sizes_get",
        "args_get",
        "environ_get",
        "sched_yield",
        "proc_exit",
    ];
    for (name, _, _) in super::abi_table::WASI.iter().filter(|(n, _, _)| !defined.contains(n)) {
        let ty = import_type(name).expect("listed");
        linker.func_new(IMPORT_MODULE, name, ty, |_, _: &[Val], results: &mut [Val]| {
            results[0] = Val::I32(ENOSYS);
            Ok(())
        })?;
    }
    Ok(())
}

/// What the monotonic clock counts from.
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Why an invocation that called `proc_exit` ended: `None` for a success.
pub fn exit_outcome(e: &wasmi::Error) -> Option<Option<FailReason>> {
    let ProcExit(code) = e.downcast_ref::<ProcExit>()?;
    Some(match code {
        0 => None,
        code => Some(FailReason::ErrorCode(*code)),
    })
}
