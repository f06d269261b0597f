//! Finds which of the tools the tests need are missing here, and sets
//! `edgefn_missing_<tool>` for each one, so that a test needing it is built as
//! `#[ignore = "needs ..."]` and `cargo test` shows and counts it as ignored
//! instead of a pass. Nothing is set under CI (`CI` set and not "false"): there
//! every test runs, and one whose tool is missing fails.
//!
//! It looks where the tests' `support::require_*` look, and reruns when a tool may
//! have come or gone: PATH or CI changing, a PATH directory or a library path
//! changing, rustup adding or removing a target.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every cfg this can set, `edgefn_missing_` and one of these.
const CFGS: &[&str] = &[
    "mosquitto",
    "clang",
    "wasi_libc",
    "npm",
    "openssl",
    "prometheus",
    "wasm32_unknown_unknown",
    "wasm32_wasip1",
    "root",
];
/// Tools found on PATH or at one of these paths, as `support::require_tool` finds them.
const TOOLS: &[(&str, &[&str])] = &[
    ("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]),
    ("clang", &["/usr/bin/clang"]),
    ("npm", &["/usr/bin/npm"]),
    ("openssl", &["/usr/bin/openssl"]),
    ("prometheus", &["/usr/bin/prometheus"]),
];
/// Where `support::require_wasi_libc` looks for wasi-libc (Debian's `wasi-libc`).
const WASI_LIBC: &[&str] = &["/usr/lib/wasm32-wasi/libc.a", "/usr/share/wasi-sysroot/lib/wasm32-wasi/libc.a"];
/// Rust targets the tests build functions for.
const RUST_TARGETS: &[&str] = &["wasm32-unknown-unknown", "wasm32-wasip1"];

pub fn detect() {
    for cfg in CFGS {
        println!("cargo::rustc-check-cfg=cfg(edgefn_missing_{cfg})");
    }
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    // sudo changes USER (and often PATH): a build as root may mount a tmpfs.
    println!("cargo:rerun-if-env-changed=USER");
    // With it set, the wasm32 test must run (.ci/run), never be ignored.
    println!("cargo:rerun-if-env-changed=EDGEFN_REQUIRE_WASM32");
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        return;
    }
    let missing = |cfg: &str| println!("cargo::rustc-cfg=edgefn_missing_{cfg}");
    let mut watched = BTreeSet::new();

    let path_dirs = path_dirs();
    watched.extend(path_dirs.iter().cloned());
    for (tool, candidates) in TOOLS {
        watched.extend(candidates.iter().filter_map(|c| Path::new(c).parent().map(Path::to_path_buf)));
        let found =
            candidates.iter().any(|c| Path::new(c).is_file()) || path_dirs.iter().any(|d| d.join(tool).is_file());
        if !found {
            missing(tool);
        }
    }

    if !WASI_LIBC.iter().any(|p| Path::new(p).is_file()) {
        missing("wasi_libc");
    }
    for path in WASI_LIBC {
        watched.extend(watch_for(Path::new(path)));
    }

    let sysroot = rustc_print(&["sysroot"]).map(PathBuf::from);
    for target in RUST_TARGETS {
        let libdir = rustc_print(&["target-libdir", "--target", target]).map(PathBuf::from);
        let installed = libdir.as_ref().is_some_and(|dir| {
            std::fs::read_dir(dir)
                .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        });
        let required = *target == "wasm32-unknown-unknown" && std::env::var_os("EDGEFN_REQUIRE_WASM32").is_some();
        if !installed && !required {
            missing(&target.replace('-', "_"));
        }
        // rustup rewrites lib/rustlib/components when it adds or removes a target.
        let components = sysroot.as_ref().map(|s| s.join("lib/rustlib/components"));
        match (components, libdir) {
            (Some(file), _) if file.is_file() => watched.insert(file),
            (_, Some(dir)) if dir.is_dir() => watched.insert(dir),
            _ => false,
        };
    }

    let uid = Command::new("id").arg("-u").output().ok().filter(|o| o.status.success());
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        missing("root");
    }

    for path in watched {
        // Only paths that exist: cargo reruns a build script every time for one that does not.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// The absolute directories of PATH that exist, each once, leaving out any in
/// this workspace (its target/ changes with every build).
fn path_dirs() -> Vec<PathBuf> {
    let workspace = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let mut dirs = Vec::new();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if !dir.is_absolute() {
            continue;
        }
        let Ok(dir) = dir.canonicalize() else { continue };
        if dir.is_dir() && !dir.starts_with(&workspace) && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// What to watch for `path` to appear or go: the path itself when it exists, or
/// its nearest existing directory. Cargo reads a watched directory whole, every
/// build, so where that would be /usr/lib or another top-level tree (tens of
/// thousands of files) the package database stands in: a Debian package puts
/// these libraries there.
fn watch_for(path: &Path) -> Option<PathBuf> {
    let nearest = path.ancestors().find(|p| p.exists())?;
    if nearest == path || nearest.components().count() > 3 {
        return Some(nearest.to_path_buf());
    }
    Some(PathBuf::from("/var/lib/dpkg/status")).filter(|status| status.is_file())
}

/// One line that `rustc --print ...` prints, or None when it fails.
fn rustc_print(args: &[&str]) -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc).arg("--print").args(args).output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned()).filter(|_| output.status.success())
}
