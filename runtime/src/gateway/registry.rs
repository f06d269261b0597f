//! The function registry: every function by its name, with the digest of its
//! module. Routing and subscriptions are derived from it, and the scheduler
//! holds a queue for each. A change (a reload today; deploy and remove
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
}

/// What to do to go from the registered set to a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A function that was not there.
    Install { name: Arc<str> },
    /// A function whose module, limits, config or triggers changed.
    Replace { name: Arc<str> },
    /// A function no longer in the set.
    Remove { name: Arc<str> },
}

#[derive(Debug, Default)]
pub struct Registry {
    entries: BTreeMap<Arc<str>, Entry>,
}

impl Registry {
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
    /// digests), and the registry as it will be after them.
    pub fn plan(&self, next: &[(FunctionSpec, u64)]) -> (Vec<Step>, Registry) {
        let mut after = Registry::default();
        let mut steps = Vec::new();
        for (spec, digest) in next {
            let name = match self.entries.get(spec.name.as_str()) {
                Some(old) => {
                    if *old.spec != *spec || old.digest != *digest {
                        steps.push(Step::Replace { name: old.name.clone() });
                    }
                    old.name.clone()
                }
                None => {
                    let name: Arc<str> = Arc::from(spec.name.as_str());
                    steps.push(Step::Install { name: name.clone() });
                    name
                }
            };
            let entry = Entry { name: name.clone(), spec: Arc::new(spec.clone()), digest: *digest };
            after.entries.insert(name, entry);
        }
        for old in self.entries.values() {
            if !after.entries.contains_key(&old.name) {
                steps.push(Step::Remove { name: old.name.clone() });
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
            triggers: vec![crate::trigger::Trigger::Topic(crate::topic::TopicFilter::parse(trigger).unwrap())],
            limits: Limits::default(),
            config: Default::default(),
            allow: Default::default(),
        }
    }

    fn names(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Install { name } => format!("install {name}"),
                Step::Replace { name } => format!("replace {name}"),
                Step::Remove { name } => format!("remove {name}"),
            })
            .collect()
    }

    #[test]
    fn only_what_changed_is_replaced_and_what_went_is_removed() {
        let (steps, reg) =
            Registry::default().plan(&[(spec("a", "t/a"), 1), (spec("b", "t/b"), 1), (spec("c", "t/c"), 1)]);
        assert_eq!(names(&steps), ["install a", "install b", "install c"]);
        assert_eq!(reg.len(), 3);
        // a unchanged, b has a new module build, c gone, d new.
        let (steps, after) = reg.plan(&[(spec("a", "t/a"), 1), (spec("b", "t/b"), 2), (spec("d", "t/d"), 1)]);
        assert_eq!(names(&steps), ["replace b", "install d", "remove c"]);
        assert_eq!(after.get("b").unwrap().digest, 2);
        // A changed trigger is a replace too.
        let (steps, _) = after.plan(&[(spec("a", "t/other"), 1), (spec("b", "t/b"), 2), (spec("d", "t/d"), 1)]);
        assert_eq!(names(&steps), ["replace a"]);
    }
}
