//! Compiling function modules and checking them against ABI v1 before anything runs.

use std::sync::Arc;

use wasmi::{CompilationMode, Config, EnforcedLimits, Engine, ExternType, FuncType, Linker, Module, ValType};

use super::abi::{self, HostState};
use crate::outbox::Gate;

/// Calls nested deeper than this trap with a stack overflow.
pub const MAX_RECURSION_DEPTH: usize = 1024;

/// Why a module was refused. Every variant names the module.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("module {module}: not valid WebAssembly: {reason}")]
    Invalid { module: String, reason: String },
    #[error("module {module}: imports {import_module}.{name}, which edgefn does not provide (ABI v1 provides edgefn.{{{}}}, and WASI preview 1 as wasi_snapshot_preview1)", super::abi_table::edgefn_names().join(", "))]
    UnknownImport { module: String, import_module: String, name: String },
    #[error("module {module}: imports {import_module}.{name} with type {found}, but it is defined as {expected}")]
    ImportType { module: String, import_module: String, name: String, found: String, expected: String },
    #[error("module {module}: does not export `{name}` ({what}); see functions/ABI.md")]
    MissingExport { module: String, name: &'static str, what: &'static str },
    #[error("module {module}: was built for ABI version {found}, this gateway speaks version 1; rebuild it with a current SDK")]
    AbiVersion { module: String, found: i32 },
    #[error("module {module}: could not be instantiated: {reason}")]
    Instantiate { module: String, reason: String },
    #[error("module {module}: init failed: {reason}")]
    Init { module: String, reason: String },
}

/// A module that compiled and has the shape ABI v1 requires.
#[derive(Clone)]
pub struct WasmModule {
    /// Names the module in errors and logs (a path or `builtin:NAME`).
    pub name: Arc<str>,
    pub(super) module: Module,
}

/// The wasm engine shared by every worker, with the ABI's host functions linked.
pub struct Loader {
    pub(super) engine: Engine,
    pub(super) linker: Linker<HostState>,
    /// Whether functions may emit upstream records (the gateway has an outbox).
    pub(super) upstream_enabled: bool,
    /// Whether the outbox refuses records now, asked by every `upstream` call.
    pub(super) outbox_gate: Option<Gate>,
    /// Largest module accepted (`gateway.max_module_bytes`).
    max_module_bytes: usize,
    /// Where functions keep state (`state_*` imports); `None`: they return -5.
    pub(super) stores: Option<Arc<crate::state::Stores>>,
    /// The devices functions command by name.
    pub(super) devices: Option<Arc<crate::profile::Directory>>,
}

/// `gateway.max_module_bytes` by default: a module's code and data are held in
/// memory compiled, and a 20 MB module took the gateway from 8 MB to 29 MB resident.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 8 << 20;

impl Loader {
    /// An engine that meters fuel, bounds recursion and parses untrusted modules strictly.
    pub fn new() -> Self {
        let mut config = Config::default();
        config
            .consume_fuel(true)
            .set_max_recursion_depth(MAX_RECURSION_DEPTH)
            .compilation_mode(CompilationMode::LazyTranslation)
            .enforced_limits(EnforcedLimits::strict());
        let engine = Engine::new(&config);
        let mut linker = Linker::new(&engine);
        // Cannot fail: each name is defined once, on a fresh linker.
        abi::define(&mut linker).expect("ABI host functions define cleanly");
        super::abi_state::define(&mut linker).expect("state host functions define cleanly");
        super::wasi::define(&mut linker).expect("WASI host functions define cleanly");
        Loader {
            engine,
            linker,
            upstream_enabled: false,
            outbox_gate: None,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            stores: None,
            devices: None,
        }
    }

    /// Where functions keep state, if anywhere.
    pub fn state(&self) -> Option<&crate::state::Stores> {
        self.stores.as_deref()
    }

    /// Lets functions command the devices of `directory` by name.
    pub fn with_devices(mut self, directory: Arc<crate::profile::Directory>) -> Self {
        self.devices = Some(directory);
        self
    }

    /// The devices functions command by name, if any.
    pub fn devices(&self) -> Option<&Arc<crate::profile::Directory>> {
        self.devices.as_ref()
    }

    /// Gives functions state kept in `stores` (one store per function name).
    pub fn with_state(mut self, stores: Arc<crate::state::Stores>) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Refuses modules larger than `bytes`.
    pub fn with_max_module_bytes(mut self, bytes: usize) -> Self {
        self.max_module_bytes = bytes;
        self
    }

    /// Refuses a module of `len` bytes if it is over the limit, before anything reads it.
    pub fn check_size(&self, name: &str, len: u64) -> Result<(), LoadError> {
        if len > self.max_module_bytes as u64 {
            return Err(LoadError::Invalid {
                module: name.to_owned(),
                reason: format!(
                    "it is {len} bytes, over gateway.max_module_bytes ({}): build it in release mode and strip it \
                     (wasm-opt -Oz, or `strip = true` in the release profile), or raise the limit",
                    self.max_module_bytes
                ),
            });
        }
        Ok(())
    }

    /// Lets functions emit upstream records: their `upstream` calls return 0, not -1.
    pub fn with_upstream(mut self, enabled: bool) -> Self {
        self.upstream_enabled = enabled;
        self
    }

    /// Lets functions emit upstream records into this outbox, and tells them
    /// (`upstream` returns -3) while it refuses records.
    pub fn with_outbox(mut self, gate: Gate) -> Self {
        self.upstream_enabled = true;
        self.outbox_gate = Some(gate);
        self
    }

    /// Validates and compiles `bytes`, and checks its imports and exports against ABI v1.
    /// The ABI version itself is checked when the module is first instantiated.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<WasmModule, LoadError> {
        self.check_size(name, bytes.len() as u64)?;
        let module = Module::new(&self.engine, bytes).map_err(|e| LoadError::Invalid {
            module: name.to_owned(),
            reason: invalid_reason(bytes, &e.to_string()),
        })?;
        for import in module.imports() {
            let unknown = || LoadError::UnknownImport {
                module: name.to_owned(),
                import_module: import.module().to_owned(),
                name: import.name().to_owned(),
            };
            let expected = match import.module() {
                abi::IMPORT_MODULE => super::abi_table::edgefn_type(import.name()),
                super::wasi::IMPORT_MODULE => super::wasi::import_type(import.name()),
                _ => None,
            };
            let Some(expected) = expected else { return Err(unknown()) };
            match import.ty() {
                ExternType::Func(found) if *found == expected => {}
                found => {
                    return Err(LoadError::ImportType {
                        module: name.to_owned(),
                        import_module: import.module().to_owned(),
                        name: import.name().to_owned(),
                        found: describe_extern(found),
                        expected: signature(&expected),
                    })
                }
            }
        }
        let i32_result = FuncType::new([], [ValType::I32]);
        let needs = [
            ("memory", "the linear memory"),
            ("handle", "func () -> i32, called per event"),
            ("edgefn_abi_version", "func () -> i32 returning 1"),
        ];
        for (export, what) in needs {
            let ok = match (export, module.get_export(export)) {
                ("memory", Some(ExternType::Memory(_))) => true,
                (_, Some(ExternType::Func(f))) => f == i32_result,
                _ => false,
            };
            if !ok {
                return Err(LoadError::MissingExport { module: name.to_owned(), name: export, what });
            }
        }
        if let Some(init) = module.get_export("init") {
            if !matches!(init, ExternType::Func(f) if f == i32_result) {
                return Err(LoadError::MissingExport {
                    module: name.to_owned(),
                    name: "init",
                    what: "optional, but if present func () -> i32",
                });
            }
        }
        Ok(WasmModule { name: name.into(), module })
    }
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

/// Why wasmi refused a module, in one line a person can act on.
fn invalid_reason(bytes: &[u8], wasmi_says: &str) -> String {
    if !bytes.starts_with(b"\0asm") {
        return "it does not start with the WebAssembly header (\\0asm): is this the .wasm your build wrote?".into();
    }
    // wasmi's messages can span lines and quote byte arrays: keep the first line.
    let first = wasmi_says.lines().next().unwrap_or(wasmi_says).trim_end_matches([' ', '=', '[']);
    format!("{first}; rebuild it for wasm32-unknown-unknown or wasm32-wasip1 (see functions/ABI.md)")
}

/// `(i32, i32) -> i32`, as ABI.md writes signatures.
fn signature(ty: &FuncType) -> String {
    let list = |types: &[ValType]| types.iter().map(|t| format!("{t:?}").to_lowercase()).collect::<Vec<_>>().join(", ");
    match ty.results() {
        [] => format!("({})", list(ty.params())),
        [one] => format!("({}) -> {}", list(ty.params()), format!("{one:?}").to_lowercase()),
        many => format!("({}) -> ({})", list(ty.params()), list(many)),
    }
}

fn describe_extern(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => signature(f),
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Global(_) => "a global".into(),
    }
}
