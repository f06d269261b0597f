//! What was deployed at run time, kept on disk so a restart brings it back:
//! `<modules_dir>/deployed/NAME.toml`, a `[[functions]]` table in the
//! configuration's own format, and `NAME.DIGEST.wasm`, its module. Files are
//! replaced atomically (temporary file, fsync, rename, fsync of the directory).
//! At a start (and a reload) the configuration is the file plus these tables,
//! validated as one; a deploy validates its table against the configuration in
//! force (`config::parse_function`, the same checks a configured function
//! meets) and hands the gateway a typed operation (`gateway::Operation`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError, GatewayConfig};

/// The deployed functions of one gateway.
pub struct Store {
    dir: PathBuf,
}

/// The configuration file plus every deployed function: what `edgefn run` and
/// a reload load.
pub fn load_config(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let file = config::load_file(path)?;
    let store = Store::of(&file);
    if store.tables().is_empty() {
        return Ok(file);
    }
    store.compose(path)
}

impl Store {
    pub fn of(config: &GatewayConfig) -> Store {
        Store { dir: config.gateway.modules_dir.join("deployed") }
    }

    /// Name and `[[functions]]` table of each deployed function, by name.
    fn tables(&self) -> BTreeMap<String, String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return BTreeMap::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?.strip_suffix(".toml")?.to_owned();
                Some((name, std::fs::read_to_string(&path).ok()?))
            })
            .collect()
    }

    /// The author's version of deployed function `name`, if its bundle gave one.
    pub fn version(&self, name: &str) -> Option<String> {
        let table = std::fs::read_to_string(self.table_path(name)).ok()?;
        version_of(&table).map(str::to_owned)
    }

    /// Whether `name` came from a deploy (not from the configuration file).
    pub fn holds(&self, name: &str) -> bool {
        self.table_path(name).exists()
    }

    /// The configuration file with every deployed function. A problem in a
    /// deployed table is located in that table's own file
    /// (`deployed/NAME.toml`), not at a line past the end of the configuration file.
    fn compose(&self, path: &Path) -> Result<GatewayConfig, ConfigError> {
        let mut text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: "(file)".into(),
            message: format!("cannot read it: {e}"),
        })?;
        let tables = self.tables();
        // The line each table starts at in the composed text, and its name.
        let mut starts = Vec::new();
        for (name, table) in &tables {
            text.push('\n');
            starts.push((text.matches('\n').count() + 1, name.as_str()));
            text.push_str(table);
        }
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        config::parse_str(&text, path, &base).map_err(|mut e| {
            match e.line.and_then(|line| starts.iter().rev().find(|(start, _)| line >= *start).map(|s| (line, s))) {
                Some((line, (start, name))) => {
                    e.file = self.table_path(name);
                    e.line = Some(line - start + 1);
                }
                None => e.message = format!("{} (with the functions deployed in {})", e.message, self.dir.display()),
            }
            e
        })
    }

    /// Whether `bytes` more fit beside the reserve the gateway keeps free for
    /// the records it has promised (`gateway.min_free_bytes`); an error says
    /// how short the disk is.
    pub fn room_for(&self, bytes: usize, reserve: u64) -> Result<(), String> {
        if reserve == 0 {
            return Ok(());
        }
        let dir = self.dir.ancestors().find(|d| d.exists()).unwrap_or(&self.dir);
        match crate::outbox::free_bytes(dir) {
            Ok(free) if free < reserve + bytes as u64 => Err(format!(
                "the disk is nearly full: {free} bytes free, and gateway.min_free_bytes keeps {reserve} for the \
                 records and events the gateway has accepted; the module needs {bytes}"
            )),
            _ => Ok(()),
        }
    }

    /// Where the `[[functions]]` table of deployed function `name` is kept.
    pub fn table_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// Writes a module where a table can point at it; returns its path.
    pub fn save_module(&self, name: &str, digest: u64, bytes: &[u8]) -> std::io::Result<PathBuf> {
        crate::durable::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{name}.{digest:016x}.wasm"));
        crate::durable::replace(&path, bytes)?;
        Ok(path)
    }

    /// Makes `table` the deployed function `name`. The version it replaces is
    /// kept as `NAME.toml.previous` with its module, for [`Store::previous`];
    /// older modules are deleted.
    pub fn commit(&self, name: &str, table: &str, module: &Path) -> std::io::Result<()> {
        let current = self.table_path(name);
        let previous = self.dir.join(format!("{name}.toml.previous"));
        let kept = match std::fs::read_to_string(&current) {
            Ok(old) if old != table => {
                crate::durable::replace(&previous, old.as_bytes())?;
                module_of(&old)
            }
            _ => std::fs::read_to_string(&previous).ok().and_then(|old| module_of(&old)),
        };
        crate::durable::replace(&current, table.as_bytes())?;
        self.delete_modules(name, &[Some(module), kept.as_deref()])
    }

    /// The table of the version `name` replaced, if it was deployed too.
    pub fn previous(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("{name}.toml.previous"))).ok()
    }

    /// Makes the previous version current again and forgets the one it replaced.
    pub fn roll_back(&self, name: &str) -> std::io::Result<()> {
        let previous = self.dir.join(format!("{name}.toml.previous"));
        let table = std::fs::read_to_string(&previous)?;
        crate::durable::replace(&self.table_path(name), table.as_bytes())?;
        std::fs::remove_file(&previous)?;
        self.delete_modules(name, &[module_of(&table).as_deref()])
    }

    /// Forgets the deployed function `name`.
    pub fn forget(&self, name: &str) -> std::io::Result<()> {
        std::fs::remove_file(self.table_path(name))?;
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.toml.previous")));
        self.delete_modules(name, &[])
    }

    /// Deletes `name`'s module files but those in `keep`.
    pub fn delete_modules(&self, name: &str, keep: &[Option<&Path>]) -> std::io::Result<()> {
        let prefix = format!("{name}.");
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if file.starts_with(&prefix) && file.ends_with(".wasm") && !keep.contains(&Some(path.as_path())) {
                // Exactly NAME.DIGEST.wasm, not another function whose name starts the same.
                if file[prefix.len()..].trim_end_matches(".wasm").len() == 16 {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        crate::durable::sync_dir(&self.dir)
    }
}

/// A function as a deploy describes it (from the command line, or a bundle's manifest).
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    pub name: String,
    pub triggers: Vec<crate::trigger::RawTrigger>,
    pub config: BTreeMap<String, String>,
    pub limits: BTreeMap<String, i64>,
    pub allow_publish: Option<Vec<String>>,
    pub allow_upstream: Option<Vec<String>>,
    /// The author's version, from a bundle.
    pub version: Option<String>,
}

impl From<crate::bundle::Manifest> for Deployed {
    fn from(m: crate::bundle::Manifest) -> Deployed {
        Deployed {
            name: m.name,
            triggers: m.triggers,
            config: m.config,
            limits: m.limits,
            allow_publish: m.allow_publish,
            allow_upstream: m.allow_upstream,
            version: Some(m.version),
        }
    }
}

/// The function a deploy of `spec` would run, checked as the gateway checks
/// it (names, triggers, limits, allow lists), with its module left as
/// `builtin:threshold`: for `edgefn invoke`, which runs a bundle's module itself.
pub fn function_of(spec: &Deployed) -> Result<crate::config::FunctionSpec, ConfigError> {
    let text = format!("[gateway]\nid = \"invoke\"\n\n{}", table(spec, Path::new("builtin:threshold")));
    let mut parsed = config::parse_str(&text, Path::new("(bundle manifest)"), Path::new("."))?;
    Ok(parsed.functions.remove(0))
}

/// The version a deployed table records (`edgefn bundle --version`), if any.
pub fn version_of(table: &str) -> Option<&str> {
    table.lines().find_map(|l| l.strip_prefix("# version "))
}

/// The module path a deployed table points at (the line [`table`] writes).
fn module_of(table: &str) -> Option<PathBuf> {
    let line = table.lines().find_map(|l| l.strip_prefix("module = "))?;
    let value: toml::Value = toml::from_str(&format!("v = {line}")).ok()?;
    Some(PathBuf::from(value.get("v")?.as_str()?))
}

/// The `[[functions]]` table of a deploy, in the configuration's own format.
pub fn table(spec: &Deployed, module: &Path) -> String {
    let Deployed { name, triggers, config, limits, .. } = spec;
    let list = |items: &[String]| format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "));
    let mut t = format!("# Deployed with `edgefn deploy`; `edgefn remove {name}` takes it away.\n");
    if let Some(version) = &spec.version {
        t += &format!("# version {}\n", version.replace(['\n', '\r'], " "));
    }
    t += "[[functions]]\n";
    t += &format!("name = {}\nmodule = {}\n", quote(name), quote(&module.display().to_string()));
    t += &format!("triggers = [{}]\n", triggers.iter().map(|t| t.to_toml()).collect::<Vec<_>>().join(", "));
    if spec.allow_publish.is_some() || spec.allow_upstream.is_some() {
        t += "[functions.allow]\n";
        if let Some(publish) = &spec.allow_publish {
            t += &format!("publish = {}\n", list(publish));
        }
        if let Some(upstream) = &spec.allow_upstream {
            t += &format!("upstream = {}\n", list(upstream));
        }
    }
    if !limits.is_empty() {
        t += "[functions.limits]\n";
        for (k, v) in limits {
            t += &format!("{} = {v}\n", quote(k));
        }
    }
    if !config.is_empty() {
        t += "[functions.config]\n";
        for (k, v) in config {
            t += &format!("{} = {}\n", quote(k), quote(v));
        }
    }
    t
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A function name that is safe as a file name (the configuration's own rule).
pub fn valid_name(name: &str) -> bool {
    crate::config::valid_function_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployed_table_reads_back_as_the_function_it_describes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, "[gateway]\nid = \"g\"\n").unwrap();
        let store = Store::of(&config::load_file(&file).unwrap());
        let module = store.save_module("echo", 7, b"\0asm").unwrap();
        let spec = Deployed {
            name: "echo".into(),
            triggers: vec![crate::trigger::RawTrigger::topic("line/+/status")],
            config: BTreeMap::from([("say \"hi\"".into(), "a\nb".into())]),
            limits: BTreeMap::from([("fuel".into(), 5_000)]),
            allow_publish: Some(vec!["out/#".into()]),
            allow_upstream: None,
            version: Some("1.2.0".into()),
        };
        let t = table(&spec, &module);
        assert_eq!(version_of(&t), Some("1.2.0"));
        let running = config::load_file(&file).unwrap();
        let f = &config::parse_function(&t, &store.table_path("echo"), &running).unwrap();
        assert_eq!((f.name.as_str(), f.triggers[0].text().as_str(), f.limits.fuel), ("echo", "line/+/status", 5_000));
        assert_eq!(f.config["say \"hi\""], "a\nb");
        assert!(f.allow.may_publish("out/x") && !f.allow.may_publish("elsewhere"));
        store.commit("echo", &t, &module).unwrap();
        assert_eq!(load_config(&file).unwrap().functions.len(), 1);
        store.forget("echo").unwrap();
        assert!(load_config(&file).unwrap().functions.is_empty());
        assert!(!module.exists());
    }
}
