//! From function specs to ready instances: read each module once, compile it
//! once, instantiate it per function.

use std::collections::HashMap;
use std::sync::Arc;

use crate::builtin;
use crate::config::{FunctionSpec, ModuleSource};
use crate::host::{FunctionInstance, LoadError, Loader, WasmModule};

/// Reads and compiles a module.
pub fn compile_source(loader: &Loader, source: &ModuleSource) -> Result<WasmModule, LoadError> {
    let name = source.to_string();
    match source {
        ModuleSource::Builtin(builtin_name) => {
            // Validation checked the name exists; an unknown one reads as invalid wasm.
            let bytes = builtin::module(builtin_name).unwrap_or(&[]);
            loader.compile(&name, bytes)
        }
        ModuleSource::File(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| LoadError::Invalid { module: name.clone(), reason: format!("cannot read: {e}") })?;
            loader.compile(&name, &bytes)
        }
    }
}

/// Instantiates every function, compiling each distinct module once.
pub fn instantiate_all(loader: &Arc<Loader>, specs: &[FunctionSpec]) -> Result<Vec<FunctionInstance>, LoadError> {
    let mut compiled: HashMap<&ModuleSource, WasmModule> = HashMap::new();
    let mut instances = Vec::with_capacity(specs.len());
    for spec in specs {
        let module = match compiled.get(&spec.module) {
            Some(m) => m.clone(),
            None => {
                let m = compile_source(loader, &spec.module)?;
                compiled.insert(&spec.module, m.clone());
                m
            }
        };
        instances.push(FunctionInstance::new(loader.clone(), module, Arc::new(spec.clone()))?);
    }
    Ok(instances)
}
