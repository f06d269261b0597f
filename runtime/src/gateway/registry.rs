//! The function registry: every function by its name, with the digest of its
//! module and the worker it lives on. Routing, subscriptions and worker
//! placement are derived from it. A change (a reload today; deploy and remove
//! next) is planned here as steps, purely, and carried out by the gateway in an
//! order that loses and repeats nothing (see `Gateway::apply`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::FunctionSpec;

/// One registered function.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Arc<str>,
    pub spec: Arc<FunctionSpec>,
    /// Digest of the module's bytes: a new build under the same path is a new version.
    pub digest: u64,
    pub worker: usize,
}

/// What to do to go from the registered set to a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A function that was not there: install it on `worker`.
    Install { name: Arc<str>, worker: usize },
    /// A function whose module, limits, config or triggers changed: replace its
    /// instance on the worker it lives on.
    Replace { name: Arc<str>, worker: usize },
    /// A function no longer in the set.
    Remove { name: Arc<str>, worker: usize },
}

#[derive(Debug, Default)]
pub struct Registry {
    entries: BTreeMap<Arc<str>, Entry>,
    workers: usize,
}

impl Registry {
    pub fn new(workers: usize) -> Registry {
        Registry { entries: BTreeMap::new(), workers: workers.max(1) }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The steps from the registered set to `next` (specs with their module
    /// digests), and the registry as it will be after them. New functions go to
    /// the worker with the fewest functions, in the order given.
    pub fn plan(&self, next: &[(FunctionSpec, u64)]) -> (Vec<Step>, Registry) {
        let mut after = Registry { entries: BTreeMap::new(), workers: self.workers };
        let mut load: Vec<usize> = vec![0; self.workers];
        let mut steps = Vec::new();
        for (spec, _) in next {
            if let Some(old) = self.entries.get(spec.name.as_str()) {
                load[old.worker] += 1;
            }
        }
        for (spec, digest) in next {
            let (name, worker) = match self.entries.get(spec.name.as_str()) {
                Some(old) => {
                    if *old.spec != *spec || old.digest != *digest {
                        steps.push(Step::Replace { name: old.name.clone(), worker: old.worker });
                    }
                    (old.name.clone(), old.worker)
                }
                None => {
                    let worker = (0..self.workers).min_by_key(|&w| (load[w], w)).unwrap_or(0);
                    load[worker] += 1;
                    let name: Arc<str> = Arc::from(spec.name.as_str());
                    steps.push(Step::Install { name: name.clone(), worker });
                    (name, worker)
                }
            };
            let entry = Entry { name: name.clone(), spec: Arc::new(spec.clone()), digest: *digest, worker };
            after.entries.insert(name, entry);
        }
        for old in self.entries.values() {
            if !after.entries.contains_key(&old.name) {
                steps.push(Step::Remove { name: old.name.clone(), worker: old.worker });
            }
        }
        (steps, after)
    }
}

/// FNV-1a (64 bit) of a module's bytes: enough to tell one build from another.
pub fn module_digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, ModuleSource};

    fn spec(name: &str, trigger: &str) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            module: ModuleSource::Builtin("threshold".into()),
            triggers: vec![crate::topic::TopicFilter::parse(trigger).unwrap()],
            limits: Limits::default(),
            config: Default::default(),
            allow: Default::default(),
        }
    }

    fn names(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Install { name, worker } => format!("install {name}@{worker}"),
                Step::Replace { name, worker } => format!("replace {name}@{worker}"),
                Step::Remove { name, worker } => format!("remove {name}@{worker}"),
            })
            .collect()
    }

    #[test]
    fn new_functions_spread_over_the_least_loaded_workers() {
        let (steps, reg) =
            Registry::new(2).plan(&[(spec("a", "t/a"), 1), (spec("b", "t/b"), 1), (spec("c", "t/c"), 1)]);
        assert_eq!(names(&steps), ["install a@0", "install b@1", "install c@0"]);
        assert_eq!(reg.len(), 3);
    }

    #[test]
    fn only_what_changed_is_replaced_and_what_went_is_removed() {
        let (_, reg) = Registry::new(2).plan(&[(spec("a", "t/a"), 1), (spec("b", "t/b"), 1), (spec("c", "t/c"), 1)]);
        // a unchanged, b has a new module build, c gone, d new (onto the worker c left).
        let (steps, after) = reg.plan(&[(spec("a", "t/a"), 1), (spec("b", "t/b"), 2), (spec("d", "t/d"), 1)]);
        assert_eq!(names(&steps), ["replace b@1", "install d@0", "remove c@0"]);
        assert_eq!(after.get("d").unwrap().worker, 0);
        // A changed trigger is a replace too.
        let (steps, _) = after.plan(&[(spec("a", "t/other"), 1), (spec("b", "t/b"), 2), (spec("d", "t/d"), 1)]);
        assert_eq!(names(&steps), ["replace a@0"]);
    }
}
