//! From function specs to ready instances: read each module once, compile it
//! once, instantiate it per function, and note the digest of its bytes (the
//! registry's version of a module). A function that does not load costs only itself.

use std::collections::HashMap;
use std::sync::Arc;

use super::operation::ChangeError;
use super::registry::module_digest;
use super::scheduler::Scheduler;
use crate::builtin;
use crate::config::{FunctionSpec, GatewayConfig, ModuleSource};
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
    /// Functions running already as they are asked for (the same spec and
    /// module digest): not compiled, not instantiated again.
    pub unchanged: Vec<(FunctionSpec, u64)>,
}

/// Reads, compiles and instantiates each function on its own, each distinct
/// module once.
pub fn load_each(loader: &Arc<Loader>, specs: &[FunctionSpec]) -> Loaded {
    load_changed(loader, specs, &HashMap::new())
}

/// Like [`load_each`], leaving out the functions `running` has already as
/// `specs` asks for them (by name: the spec and the digest of the module's
/// bytes): a reload or a deploy compiles only what changed. Reads every
/// module, to see whether it changed; blocks on the disk and the compiler,
/// so the gateway runs it on the blocking pool.
pub fn load_changed(
    loader: &Arc<Loader>,
    specs: &[FunctionSpec],
    running: &HashMap<String, (FunctionSpec, u64)>,
) -> Loaded {
    let mut bytes: HashMap<&ModuleSource, Result<(u64, Vec<u8>), LoadError>> = HashMap::new();
    let mut modules: HashMap<&ModuleSource, Result<WasmModule, LoadError>> = HashMap::new();
    let mut loaded = Loaded { instances: Vec::new(), failed: Vec::new(), unchanged: Vec::new() };
    for spec in specs {
        let read = bytes.entry(&spec.module).or_insert_with(|| {
            let b = read_source(loader, &spec.module)?;
            Ok((module_digest(&b), b))
        });
        let result = match read {
            Ok((digest, _)) if running.get(&spec.name).is_some_and(|(s, d)| s == spec && d == digest) => {
                loaded.unchanged.push((spec.clone(), *digest));
                continue;
            }
            Ok((digest, b)) => {
                let digest = *digest;
                let module = modules.entry(&spec.module).or_insert_with(|| loader.compile(&spec.module.to_string(), b));
                match module {
                    Ok(module) => FunctionInstance::new(loader.clone(), module.clone(), Arc::new(spec.clone()))
                        .map(|instance| (instance, digest)),
                    Err(e) => Err(e.clone()),
                }
            }
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok(done) => loaded.instances.push(done),
            Err(e) => loaded.failed.push((spec.name.clone(), e)),
        }
    }
    loaded
}

/// With `gateway.strict`, any function that failed to load is an error naming
/// every one; otherwise each is logged and the count returned.
pub(super) fn refuse_if_strict(
    config: &GatewayConfig,
    failed: &[(String, crate::host::LoadError)],
    what_happens: &str,
) -> Result<usize, ChangeError> {
    if failed.is_empty() {
        return Ok(0);
    }
    let problems: Vec<String> = failed.iter().map(|(name, e)| format!("function {name}: {e}")).collect();
    if config.gateway.strict {
        return Err(ChangeError::Strict(problems.join("; ")));
    }
    for problem in &problems {
        tracing::error!("{problem}; {what_happens}, the other functions run (gateway.strict = true would refuse)");
    }
    Ok(failed.len())
}

/// Installs functions in the scheduler on the blocking pool: a function new
/// there reads the spool it may have left on disk, never on the I/O thread.
pub(super) async fn install_all(
    scheduler: &Arc<Scheduler>,
    instances: Vec<FunctionInstance>,
) -> Result<(), ChangeError> {
    if instances.is_empty() {
        return Ok(());
    }
    let scheduler = scheduler.clone();
    tokio::task::spawn_blocking(move || instances.into_iter().for_each(|i| scheduler.install(i)))
        .await
        .map_err(|e| ChangeError::Internal(format!("installing the functions: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicFilter;
    use crate::trigger::Trigger;

    fn spec(name: &str, above: &str) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            module: ModuleSource::Builtin("threshold".into()),
            triggers: vec![Trigger::Topic(TopicFilter::parse("t/#").unwrap())],
            limits: Default::default(),
            config: [("field", "t"), ("above", above), ("below", "1"), ("command_topic", "c")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            allow: Default::default(),
        }
    }

    #[test]
    fn a_change_compiles_and_instantiates_only_the_functions_that_changed() {
        let loader = Arc::new(Loader::new());
        let first = load_each(&loader, &[spec("a", "30"), spec("b", "30")]);
        assert_eq!((first.instances.len(), first.unchanged.len()), (2, 0));
        let running: HashMap<String, (FunctionSpec, u64)> =
            first.instances.iter().map(|(i, d)| (i.spec().name.clone(), ((**i.spec()).clone(), *d))).collect();
        // b's config changed, a is as it runs, c is new.
        let next = load_changed(&loader, &[spec("a", "30"), spec("b", "35"), spec("c", "30")], &running);
        let made: Vec<&str> = next.instances.iter().map(|(i, _)| i.spec().name.as_str()).collect();
        assert_eq!(made, ["b", "c"]);
        assert_eq!(next.unchanged.iter().map(|(s, _)| s.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(next.failed.is_empty());
    }
}
