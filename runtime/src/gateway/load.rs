//! From function specs to ready instances: read each module once, compile it
//! once, instantiate it per function, and note the digest of its bytes (the
//! registry's version of a module). A function that does not load costs only itself.

use std::collections::HashMap;
use std::sync::Arc;

use super::registry::module_digest;
use crate::builtin;
use crate::config::{FunctionSpec, ModuleSource};
use crate::host::{FunctionInstance, LoadError, Loader, WasmModule};

/// The bytes of a module; a file over the loader's size limit is refused unread.
pub fn read_source(loader: &Loader, source: &ModuleSource) -> Result<Vec<u8>, LoadError> {
    let cannot_read =
        |e: std::io::Error| LoadError::Invalid { module: source.to_string(), reason: format!("cannot read: {e}") };
    match source {
        // Validation checked the name exists; an unknown one reads as invalid wasm.
        ModuleSource::Builtin(name) => Ok(builtin::module(name).unwrap_or(&[]).to_vec()),
        ModuleSource::File(path) => {
            loader.check_size(&source.to_string(), std::fs::metadata(path).map_err(cannot_read)?.len())?;
            std::fs::read(path).map_err(cannot_read)
        }
    }
}

/// Reads and compiles a module.
pub fn compile_source(loader: &Loader, source: &ModuleSource) -> Result<WasmModule, LoadError> {
    loader.compile(&source.to_string(), &read_source(loader, source)?)
}

/// Every function of `specs` that loads, with its module digest, and every one
/// that does not, with why: one bad module costs its own function, not the others.
pub struct Loaded {
    pub instances: Vec<(FunctionInstance, u64)>,
    pub failed: Vec<(String, LoadError)>,
}

/// Reads, compiles and instantiates each function on its own, each distinct
/// module once.
pub fn load_each(loader: &Arc<Loader>, specs: &[FunctionSpec]) -> Loaded {
    let mut modules: HashMap<&ModuleSource, Result<(u64, WasmModule), LoadError>> = HashMap::new();
    let mut loaded = Loaded { instances: Vec::new(), failed: Vec::new() };
    for spec in specs {
        let module = modules.entry(&spec.module).or_insert_with(|| {
            let bytes = read_source(loader, &spec.module)?;
            Ok((module_digest(&bytes), loader.compile(&spec.module.to_string(), &bytes)?))
        });
        let result = match module {
            Ok((digest, module)) => FunctionInstance::new(loader.clone(), module.clone(), Arc::new(spec.clone()))
                .map(|instance| (instance, *digest)),
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok(done) => loaded.instances.push(done),
            Err(e) => loaded.failed.push((spec.name.clone(), e)),
        }
    }
    loaded
}
