//! From function specs to ready instances: read each module once, compile it
//! once, instantiate it per function, and note the digest of its bytes (the
//! registry's version of a module).

use std::collections::HashMap;
use std::sync::Arc;

use super::registry::module_digest;
use crate::builtin;
use crate::config::{FunctionSpec, ModuleSource};
use crate::host::{FunctionInstance, LoadError, Loader, WasmModule};

/// The bytes of a module.
pub fn read_source(source: &ModuleSource) -> Result<Vec<u8>, LoadError> {
    match source {
        // Validation checked the name exists; an unknown one reads as invalid wasm.
        ModuleSource::Builtin(name) => Ok(builtin::module(name).unwrap_or(&[]).to_vec()),
        ModuleSource::File(path) => std::fs::read(path)
            .map_err(|e| LoadError::Invalid { module: source.to_string(), reason: format!("cannot read: {e}") }),
    }
}

/// Reads and compiles a module.
pub fn compile_source(loader: &Loader, source: &ModuleSource) -> Result<WasmModule, LoadError> {
    loader.compile(&source.to_string(), &read_source(source)?)
}

/// Each distinct module of `specs`, read once: its digest, and its bytes.
pub fn read_all(specs: &[FunctionSpec]) -> Result<HashMap<ModuleSource, (u64, Vec<u8>)>, LoadError> {
    let mut modules = HashMap::new();
    for spec in specs {
        if !modules.contains_key(&spec.module) {
            let bytes = read_source(&spec.module)?;
            modules.insert(spec.module.clone(), (module_digest(&bytes), bytes));
        }
    }
    Ok(modules)
}

/// Instantiates the functions of `specs`, compiling each distinct module of
/// `modules` (from [`read_all`]) once.
pub fn instantiate(
    loader: &Arc<Loader>,
    specs: &[&FunctionSpec],
    modules: &HashMap<ModuleSource, (u64, Vec<u8>)>,
) -> Result<Vec<FunctionInstance>, LoadError> {
    let mut compiled: HashMap<&ModuleSource, WasmModule> = HashMap::new();
    let mut instances = Vec::with_capacity(specs.len());
    for spec in specs {
        let module = match compiled.get(&spec.module) {
            Some(m) => m.clone(),
            None => {
                let (_, bytes) = &modules[&spec.module];
                let m = loader.compile(&spec.module.to_string(), bytes)?;
                compiled.insert(&spec.module, m.clone());
                m
            }
        };
        instances.push(FunctionInstance::new(loader.clone(), module, Arc::new((*spec).clone()))?);
    }
    Ok(instances)
}

/// Instantiates every function, compiling each distinct module once.
pub fn instantiate_all(loader: &Arc<Loader>, specs: &[FunctionSpec]) -> Result<Vec<FunctionInstance>, LoadError> {
    instantiate(loader, &specs.iter().collect::<Vec<_>>(), &read_all(specs)?)
}
