//! `edgefn replay`: a recording's events run again, in order, through one
//! instance of a module, each with the answers the gateway gave when it was
//! recorded; its effects are compared with the recorded ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Effect, Entry, Header};
use crate::config::{FunctionSpec, Limits, ModuleSource};
use crate::host::{FunctionInstance, Loader, Tape};

/// What a replay found.
pub struct Replayed {
    pub header: Header,
    pub invocations: usize,
    /// The invocations whose effects differ: (entry, effects replayed).
    pub differ: Vec<(Entry, Vec<Effect>)>,
    /// Fuel per invocation, recorded and replayed, in the order they ran.
    pub fuel_recorded: Vec<u64>,
    pub fuel_replayed: Vec<u64>,
}

/// Runs the recording at `path` through `module` (a .wasm file, a bundle's
/// module, or `builtin:NAME`) under the recorded limits.
pub fn replay(path: &Path, module: &ModuleSource) -> anyhow::Result<Replayed> {
    let (header, entries) = super::read(path)?;
    // Every call the recording answered is answered from it; the rest see a
    // host with an outbox and nothing else (no state, no devices).
    let loader = Arc::new(Loader::new().with_upstream(true));
    let compiled = match crate::invoke::bundle_in(&loader, module)? {
        Some(bundle) => loader.compile(&module.to_string(), &bundle.module)?,
        None => crate::gateway::compile_source(&loader, module)?,
    };
    let limits = Limits {
        fuel: header.fuel,
        memory_bytes: header.memory_bytes,
        timeout: Duration::from_millis(header.timeout_ms),
        ..Limits::default()
    };
    let spec = FunctionSpec {
        name: header.function.clone(),
        module: module.clone(),
        triggers: Vec::new(),
        limits,
        config: BTreeMap::new(),
        allow: Default::default(),
    };
    let mut instance = FunctionInstance::new(loader, compiled, Arc::new(spec))?;
    let mut replayed =
        Replayed { header, invocations: 0, differ: Vec::new(), fuel_recorded: Vec::new(), fuel_replayed: Vec::new() };
    for entry in entries {
        let event =
            entry.event.event().map_err(|e| anyhow::anyhow!("{}: invocation {}: {e}", path.display(), entry.n))?;
        let tape = Tape::replaying(&entry.answers, event.received_ms);
        let (result, tape) = instance.invoke_on_tape(Arc::new(event), Arc::from(entry.trigger.as_str()), Some(tape));
        let effects = tape.map(|t| t.effects).unwrap_or_default();
        replayed.invocations += 1;
        replayed.fuel_recorded.push(entry.fuel);
        replayed.fuel_replayed.push(match &result {
            Ok(done) => done.fuel_used,
            Err(failure) => failure.fuel_used,
        });
        if effects != entry.effects {
            replayed.differ.push((entry, effects));
        }
    }
    Ok(replayed)
}

impl Replayed {
    /// The report: each invocation that differs, recorded and replayed side by
    /// side, then a line for the whole.
    pub fn report(&self, module: &str) -> String {
        let mut out = String::new();
        for (entry, effects) in &self.differ {
            let subject = if entry.event.subject.is_empty() { &entry.event.kind } else { &entry.event.subject };
            let _ =
                writeln!(out, "invocation {} ({} {subject}, trigger {}):", entry.n, entry.event.kind, entry.trigger);
            let left: Vec<String> = entry.effects.iter().map(Effect::to_string).collect();
            let right: Vec<String> = effects.iter().map(Effect::to_string).collect();
            let width = left.iter().map(|l| l.chars().count()).max().unwrap_or(0).clamp(8, 60);
            let _ = writeln!(out, "    {:<width$} | replayed", "recorded");
            for i in 0..left.len().max(right.len()) {
                let l = left.get(i).map_or("-", String::as_str);
                let r = right.get(i).map_or("-", String::as_str);
                let mark = if l == r { ' ' } else { '!' };
                let _ = writeln!(out, "  {mark} {:<width$} | {r}", cut(l, width));
            }
        }
        let same = self.invocations - self.differ.len();
        // Medians: an instance's first call also pays for translating the
        // code it runs, on either side.
        let fuel = match (median(&self.fuel_recorded), median(&self.fuel_replayed)) {
            (0, _) => String::new(),
            (before, after) => format!(
                "; fuel per invocation (median) {before} recorded, {after} replayed ({:+.1}%)",
                (after as f64 - before as f64) * 100.0 / before as f64
            ),
        };
        let _ = writeln!(
            out,
            "replayed {} invocation{} of {} through {module}: {same} the same, {} different{fuel}",
            self.invocations,
            if self.invocations == 1 { "" } else { "s" },
            self.header.function,
            self.differ.len(),
        );
        out
    }
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// `text` in at most `width` characters (an ellipsis when cut).
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}
