//! One running function: a module instantiated in its own store, invoked one
//! event at a time.

use std::sync::Arc;
use std::time::Instant;

use wasmi::{Store, StoreLimitsBuilder, TrapCode, TypedFunc, TypedResumableCall, WasmResults};

use super::abi::{CallState, HostState, HostTrap};
use super::loader::{LoadError, Loader, WasmModule};
use super::outcome::{FailReason, Failure, Invocation};
use super::tape::{Effect, Tape};
use crate::config::FunctionSpec;
use crate::event::Event;

/// Fuel for the one call to `edgefn_abi_version` at load.
const VERSION_FUEL: u64 = 10_000;

/// Fuel a call runs between two looks at the clock. The interpreter stops when
/// a slice is spent and the call resumes with the next, so `limits.timeout_ms`
/// holds for a loop that makes no host call (host calls look at the clock
/// themselves). About 0.3 ms of interpretation on an x86_64 core, a few ms on a
/// Raspberry Pi; one pause costs about a microsecond.
const FUEL_SLICE: u64 = 500_000;

/// A function ready to run. Its globals and linear memory persist between
/// invocations (that is where a function keeps state) until a trap, after which
/// the module is instantiated afresh.
pub struct FunctionInstance {
    loader: Arc<Loader>,
    module: WasmModule,
    spec: Arc<FunctionSpec>,
    /// `None` after a trap: the next invocation instantiates anew.
    live: Option<Live>,
}

struct Live {
    store: Store<HostState>,
    handle: TypedFunc<(), i32>,
}

impl FunctionInstance {
    /// The live instance's linear memory, for tests of what stays resident.
    #[cfg(test)]
    pub(super) fn memory_for_test(&mut self) -> &mut [u8] {
        let live = self.live.as_mut().expect("a live instance");
        let memory = live.store.data().memory.expect("the module exports its memory");
        memory.data_mut(&mut live.store)
    }

    /// Instantiates `module` for `spec`, checks its ABI version and runs its `init`.
    pub fn new(loader: Arc<Loader>, module: WasmModule, spec: Arc<FunctionSpec>) -> Result<Self, LoadError> {
        let live = instantiate(&loader, &module, &spec)?;
        Ok(FunctionInstance { loader, module, spec, live: Some(live) })
    }

    /// Another instance of the same module and spec, not instantiated yet: its
    /// first invocation instantiates it (and runs `init`) on the thread that
    /// runs it. State is not shared with this one.
    pub fn sibling(&self) -> FunctionInstance {
        FunctionInstance {
            loader: self.loader.clone(),
            module: self.module.clone(),
            spec: self.spec.clone(),
            live: None,
        }
    }

    /// The function's state store, if a state call has opened it: the worker
    /// syncs it before the invocation's output leaves the gateway.
    pub fn state(&self) -> Option<Arc<crate::state::Store>> {
        self.loader.stores.as_ref()?.get(&self.spec.name)
    }

    /// The module it runs, as logs name it: a path (a deployed version's
    /// holds its digest, `NAME.DIGEST.wasm`) or `builtin:NAME`.
    pub fn module_name(&self) -> &str {
        &self.module.name
    }

    /// The function's configuration.
    pub fn spec(&self) -> &Arc<FunctionSpec> {
        &self.spec
    }

    /// Drops the live instance; the next invocation instantiates the module afresh.
    pub fn reset(&mut self) {
        self.live = None;
    }

    /// Runs `handle` once on `event`, fired by `trigger` (its text: what `event_trigger` returns).
    pub fn invoke(&mut self, event: Arc<Event>, trigger: Arc<str>) -> Result<Invocation, Failure> {
        self.invoke_on_tape(event, trigger, None).0
    }

    /// [`Self::invoke`] with a tape (`crate::recording`): the host's answers
    /// recorded or read back, and the effects written down; the tape comes
    /// back with them (with the failure last, when it failed).
    pub fn invoke_on_tape(
        &mut self,
        event: Arc<Event>,
        trigger: Arc<str>,
        tape: Option<Tape>,
    ) -> (Result<Invocation, Failure>, Option<Tape>) {
        let result = self.run(event, trigger, tape);
        let (result, mut tape) = result;
        if let (Some(tape), Err(failure)) = (&mut tape, &result) {
            tape.effects.push(Effect::Failed { reason: failure.reason.to_string() });
        }
        (result, tape)
    }

    fn run(
        &mut self,
        event: Arc<Event>,
        trigger: Arc<str>,
        tape: Option<Tape>,
    ) -> (Result<Invocation, Failure>, Option<Tape>) {
        let started = Instant::now();
        let limits = self.spec.limits;
        let live = match self.live.take() {
            Some(live) => self.live.insert(live),
            None => match instantiate(&self.loader, &self.module, &self.spec) {
                Ok(live) => self.live.insert(live),
                Err(e) => {
                    let reason = FailReason::Instantiate(e.to_string());
                    let elapsed = started.elapsed();
                    let failure = Failure {
                        reason,
                        logs: Vec::new(),
                        logs_dropped: 0,
                        fuel_used: 0,
                        elapsed,
                        denied: Vec::new(),
                        outbox_refused: 0,
                    };
                    return (Err(failure), tape);
                }
            },
        };
        let deadline = started + limits.timeout;
        let mut call = new_call(event, Some(trigger), deadline);
        call.tape = tape;
        live.store.data_mut().call = Some(call);
        let (result, fuel_used) = call_bounded(&live.handle, &mut live.store, limits.fuel, deadline);
        let mut call = live.store.data_mut().call.take().expect("call state set above");
        let tape = call.tape.take();
        let elapsed = started.elapsed();
        let fail = |reason| {
            Err(Failure {
                reason,
                logs: call.logs.clone(),
                logs_dropped: call.logs_dropped,
                fuel_used,
                elapsed,
                denied: call.denied.clone(),
                outbox_refused: call.outbox_refused,
            })
        };
        // A success is `handle` returning 0 or the program calling proc_exit(0).
        let outcome = match result {
            Ok(0) => Ok(()),
            Ok(code) => Err(FailReason::ErrorCode(code)),
            Err(e) => {
                // A trap may leave the guest's state half-written, and a
                // program that exited is done: never reuse it.
                self.live = None;
                match super::wasi::exit_outcome(&e) {
                    Some(exit) => exit.map_or(Ok(()), Err),
                    None => Err(classify(&e)),
                }
            }
        };
        let result = match outcome {
            Ok(()) if elapsed > limits.timeout => fail(FailReason::Timeout),
            Ok(()) => Ok(Invocation {
                reply: call.reply,
                publishes: call.publishes,
                upstream: call.upstream,
                logs: call.logs,
                logs_dropped: call.logs_dropped,
                denied: call.denied,
                confirmations: call.confirmations,
                fuel_used,
                elapsed,
            }),
            Err(reason) => fail(reason),
        };
        (result, tape)
    }
}

/// Calls `func` with `budget` fuel in all, handed out [`FUEL_SLICE`] at a time:
/// between slices it looks at the clock and stops the call at `deadline` with a
/// [`FailReason::Timeout`] trap, whether or not the guest calls the host.
/// Returns the result and the fuel used.
fn call_bounded<R: WasmResults>(
    func: &TypedFunc<(), R>,
    store: &mut Store<HostState>,
    budget: u64,
    deadline: Instant,
) -> (Result<R, wasmi::Error>, u64) {
    let mut given = budget.min(FUEL_SLICE);
    // Cannot fail: fuel metering is enabled on the loader's engine.
    store.set_fuel(given).expect("fuel metering is on");
    let mut used = 0;
    let mut step = func.call_resumable(&mut *store, ());
    loop {
        used += given - store.get_fuel().unwrap_or(0);
        let paused = match step {
            Ok(TypedResumableCall::Finished(results)) => return (Ok(results), used),
            // A host function's error (a trap of ours, or WASI's proc_exit) ends the call.
            Ok(TypedResumableCall::HostTrap(trap)) => return (Err(host_error(trap.host_error())), used),
            Ok(TypedResumableCall::OutOfFuel(paused)) => paused,
            Err(e) => return (Err(e), used),
        };
        let left = budget - used;
        if left < paused.required_fuel().max(1) {
            return (Err(wasmi::Error::from(TrapCode::OutOfFuel)), used);
        }
        if Instant::now() > deadline {
            return (Err(wasmi::Error::host(HostTrap(FailReason::Timeout))), used);
        }
        given = left.min(FUEL_SLICE.max(paused.required_fuel()));
        store.set_fuel(given).expect("fuel metering is on");
        step = paused.resume(&mut *store);
    }
}

/// The error a host function returned, as a plain call would have returned it
/// (a resumable call lends it; ours are a trap reason or WASI's exit code).
fn host_error(e: &wasmi::Error) -> wasmi::Error {
    if let Some(HostTrap(reason)) = e.downcast_ref::<HostTrap>() {
        return wasmi::Error::host(HostTrap(reason.clone()));
    }
    if let Some(super::wasi::ProcExit(code)) = e.downcast_ref::<super::wasi::ProcExit>() {
        return wasmi::Error::host(super::wasi::ProcExit(*code));
    }
    wasmi::Error::new(e.to_string())
}

fn new_call(event: Arc<Event>, trigger: Option<Arc<str>>, deadline: Instant) -> CallState {
    CallState {
        event,
        trigger,
        deadline,
        publishes: Vec::new(),
        upstream: Vec::new(),
        publish_bytes: 0,
        logs: Vec::new(),
        logs_dropped: 0,
        denied: Vec::new(),
        outbox_refused: 0,
        reply: None,
        confirmations: Vec::new(),
        tape: None,
    }
}

fn instantiate(loader: &Loader, module: &WasmModule, spec: &Arc<FunctionSpec>) -> Result<Live, LoadError> {
    let name = || module.name.to_string();
    let limits = StoreLimitsBuilder::new()
        .memory_size(spec.limits.memory_bytes)
        .memories(1)
        .tables(4)
        .table_elements(100_000)
        .instances(1)
        .trap_on_grow_failure(true)
        .build();
    let state = HostState {
        limits,
        memory: None,
        spec: spec.clone(),
        call: None,
        upstream_enabled: loader.upstream_enabled,
        outbox_gate: loader.outbox_gate.clone(),
        stores: loader.stores.clone(),
        devices: loader.devices.clone(),
        state: None,
    };
    let mut store = Store::new(&loader.engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_fuel(spec.limits.fuel).expect("fuel metering is on");
    let instance = loader
        .linker
        .instantiate_and_start(&mut store, &module.module)
        .map_err(|e| LoadError::Instantiate { module: name(), reason: classify(&e).to_string() })?;
    let memory = instance.get_memory(&store, "memory");
    if let Some(memory) = memory {
        // wasmi wrote every byte of it: only what the function uses stays resident.
        super::resident::release_zero_pages(memory.data_mut(&mut store));
    }
    store.data_mut().memory = memory;
    // A WASI reactor's constructors (libc's, a language runtime's) run first.
    if let Ok(initialize) = instance.get_typed_func::<(), ()>(&store, "_initialize") {
        initialize
            .call(&mut store, ())
            .map_err(|e| LoadError::Instantiate { module: name(), reason: format!("_initialize: {}", classify(&e)) })?;
    }
    // The loader checked these exports' types, so the lookups cannot fail.
    let version: TypedFunc<(), i32> =
        instance.get_typed_func(&store, "edgefn_abi_version").expect("checked at compile");
    let handle: TypedFunc<(), i32> = instance.get_typed_func(&store, "handle").expect("checked at compile");
    store.set_fuel(VERSION_FUEL).expect("fuel metering is on");
    match version.call(&mut store, ()) {
        Ok(1) => {}
        Ok(found) => return Err(LoadError::AbiVersion { module: name(), found }),
        Err(e) => {
            return Err(LoadError::Instantiate {
                module: name(),
                reason: format!("edgefn_abi_version: {}", classify(&e)),
            })
        }
    }
    if let Ok(init) = instance.get_typed_func::<(), i32>(&store, "init") {
        // During init the event is empty; config_get, log and now_ms work as usual.
        let mut empty = Event::message(String::new(), Vec::new(), None);
        empty.received_ms = 0;
        let empty = Arc::new(empty);
        let deadline = Instant::now() + spec.limits.timeout;
        store.data_mut().call = Some(new_call(empty, None, deadline));
        let (result, _) = call_bounded(&init, &mut store, spec.limits.fuel, deadline);
        let call = store.data_mut().call.take().expect("call state set above");
        let logs = call.logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>().join("; ");
        match result {
            Ok(0) => {}
            Ok(code) => {
                return Err(LoadError::Init { module: name(), reason: format!("returned {code}; it logged: {logs}") })
            }
            Err(e) => return Err(LoadError::Init { module: name(), reason: classify(&e).to_string() }),
        }
    }
    Ok(Live { store, handle })
}

/// Maps a wasmi error to the reason we count it under.
fn classify(e: &wasmi::Error) -> FailReason {
    if let Some(HostTrap(reason)) = e.downcast_ref::<HostTrap>() {
        return reason.clone();
    }
    match e.as_trap_code() {
        Some(TrapCode::OutOfFuel) => FailReason::OutOfFuel,
        Some(TrapCode::GrowthOperationLimited) => FailReason::MemoryLimit,
        Some(TrapCode::StackOverflow) => FailReason::StackOverflow,
        Some(code) => FailReason::Trap(code.to_string()),
        None => FailReason::Trap(e.to_string()),
    }
}
