//! The `state_*` host functions: a function's key-value store (`crate::state`),
//! opened on its first state call, shared by its instances and versions.

use std::sync::Arc;
use std::time::Instant;

use wasmi::{Caller, Linker};

use super::abi::{abi, CallState, HostState, HostTrap, IMPORT_MODULE};
use super::guest_memory::{copy_out, guest_range};
use super::outcome::FailReason;
use super::tape::{Blob, Effect, Value};
use crate::state::{check_key, Refused, Store};

/// A change the store refused: over `limits.state_max_bytes`, or the disk failed.
pub const STATE_REFUSED: i32 = -4;
/// No state here: the gateway could not open the function's store, or the
/// function runs where none is kept (a one-off `edgefn invoke`).
pub const NO_STATE: i32 = -5;

/// Guest memory, the function's store (opened on first use) and the
/// invocation, after the deadline check every host call starts with; `None`
/// for the store: [`NO_STATE`].
type Parts<'a> = (&'a mut [u8], Option<Arc<Store>>, &'a mut CallState);

fn parts<'a>(caller: &'a mut Caller<'_, HostState>) -> Result<Parts<'a>, wasmi::Error> {
    let memory = caller.data().memory.ok_or_else(|| abi("the module exports no memory"))?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    let call = state.call.as_mut().ok_or_else(|| abi("host function called outside an invocation"))?;
    if Instant::now() > call.deadline {
        return Err(wasmi::Error::host(HostTrap(FailReason::Timeout)));
    }
    if state.state.is_none() {
        if let Some(stores) = &state.stores {
            match stores.open(&state.spec.name, state.spec.limits.state_max_bytes) {
                Ok(store) => state.state = Some(store),
                Err(e) => {
                    tracing::error!(function = %state.spec.name, error = %e, "function state could not be opened; state calls return -5");
                    // Not tried again by this instance: one line, not one a call.
                    state.stores = None;
                }
            }
        }
    }
    Ok((bytes, state.state.clone(), call))
}

/// A change's answer: `Ok(0)` or `Ok(1)` as the store says, or [`STATE_REFUSED`].
fn changed(store: &Store, result: Result<bool, Refused>) -> Value {
    Value::Int(result.map_or_else(|e| i64::from(refused(store, e)), i64::from))
}

/// The key at `ptr`/`len`: UTF-8, 1 to 256 bytes, no newline or NUL (else the call traps).
fn key<'m>(mem: &'m [u8], ptr: i32, len: i32, what: &'static str) -> Result<&'m str, wasmi::Error> {
    let range = guest_range(mem.len(), ptr, len, what)?;
    let key = std::str::from_utf8(&mem[range]).map_err(|_| abi(format!("{what}: key is not UTF-8")))?;
    check_key(key).map_err(|e| abi(format!("{what}: {e}")))?;
    Ok(key)
}

/// A value at `ptr`/`len`; a length of -1 means none (absent, or delete).
fn optional<'m>(mem: &'m [u8], ptr: i32, len: i32, what: &'static str) -> Result<Option<&'m [u8]>, wasmi::Error> {
    match len {
        -1 => Ok(None),
        _ => Ok(Some(&mem[guest_range(mem.len(), ptr, len, what)?])),
    }
}

fn refused(store: &Store, e: Refused) -> i32 {
    store.count_refused(&e);
    STATE_REFUSED
}

pub fn define(linker: &mut Linker<HostState>) -> Result<(), wasmi::Error> {
    linker.func_wrap(
        IMPORT_MODULE,
        "state_get",
        |mut c: Caller<'_, HostState>, k: i32, k_len: i32, buf: i32, cap: i32| {
            let (mem, store, call) = parts(&mut c)?;
            if store.is_none() && call.tape.is_none() {
                return Ok(NO_STATE);
            }
            let key = key(mem, k, k_len, "state_get")?.to_owned();
            let live = || match store {
                None => Value::Int(NO_STATE.into()),
                Some(store) => store.with(&key, |v| v.map_or(Value::Absent, |v| Value::Bytes(v.to_vec()))),
            };
            match call.ask("state_get", &key, live) {
                Value::Bytes(value) => Ok(copy_out(mem, buf, cap, &value, "state_get buffer")?),
                Value::Int(code) => Ok(code as i32),
                _ => {
                    guest_range(mem.len(), buf, cap, "state_get buffer")?;
                    Ok(-1)
                }
            }
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_set",
        |mut c: Caller<'_, HostState>, k: i32, k_len: i32, value: i32, value_len: i32| {
            let (mem, store, call) = parts(&mut c)?;
            if store.is_none() && call.tape.is_none() {
                return Ok(NO_STATE);
            }
            let key = key(mem, k, k_len, "state_set")?;
            let value = &mem[guest_range(mem.len(), value, value_len, "state_set value")?];
            call.did(|| Effect::StateSet { key: key.to_owned(), value: Blob::of(value) });
            let live = || match store {
                None => Value::Int(NO_STATE.into()),
                Some(store) => changed(&store, store.set(key, value).map(|()| false)),
            };
            Ok(call.ask("state_set", key, live).int().unwrap_or(NO_STATE.into()) as i32)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "state_delete", |mut c: Caller<'_, HostState>, k: i32, k_len: i32| {
        let (mem, store, call) = parts(&mut c)?;
        if store.is_none() && call.tape.is_none() {
            return Ok(NO_STATE);
        }
        let key = key(mem, k, k_len, "state_delete")?;
        call.did(|| Effect::StateDelete { key: key.to_owned() });
        let live = || match store {
            None => Value::Int(NO_STATE.into()),
            Some(store) => changed(&store, store.delete(key)),
        };
        Ok(call.ask("state_delete", key, live).int().unwrap_or(NO_STATE.into()) as i32)
    })?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_cas",
        |mut c: Caller<'_, HostState>, k: i32, k_len: i32, old: i32, old_len: i32, new: i32, new_len: i32| {
            let (mem, store, call) = parts(&mut c)?;
            if store.is_none() && call.tape.is_none() {
                return Ok(NO_STATE);
            }
            let key = key(mem, k, k_len, "state_cas")?;
            let old = optional(mem, old, old_len, "state_cas expected")?;
            let new = optional(mem, new, new_len, "state_cas value")?;
            call.did(|| Effect::StateCas {
                key: key.to_owned(),
                expected: old.map(Blob::of),
                value: new.map(Blob::of),
            });
            let live = || match store {
                None => Value::Int(NO_STATE.into()),
                Some(store) => changed(&store, store.compare_and_set(key, old, new)),
            };
            Ok(call.ask("state_cas", key, live).int().unwrap_or(NO_STATE.into()) as i32)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_keys",
        |mut c: Caller<'_, HostState>, prefix: i32, prefix_len: i32, buf: i32, cap: i32| {
            let (mem, store, call) = parts(&mut c)?;
            if store.is_none() && call.tape.is_none() {
                return Ok(NO_STATE);
            }
            let range = guest_range(mem.len(), prefix, prefix_len, "state_keys prefix")?;
            let prefix = std::str::from_utf8(&mem[range]).map_err(|_| abi("state_keys: prefix is not UTF-8"))?;
            let live = || match store {
                None => Value::Int(NO_STATE.into()),
                Some(store) => {
                    let mut listed = Vec::new();
                    for key in store.keys(prefix) {
                        listed.extend_from_slice(key.as_bytes());
                        listed.push(b'\n');
                    }
                    Value::Bytes(listed)
                }
            };
            match call.ask("state_keys", prefix, live) {
                Value::Bytes(listed) => Ok(copy_out(mem, buf, cap, &listed, "state_keys buffer")?),
                other => Ok(other.int().unwrap_or(NO_STATE.into()) as i32),
            }
        },
    )?;
    Ok(())
}
