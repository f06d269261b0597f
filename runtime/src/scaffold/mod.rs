//! `edgefn new NAME --lang rust|c|assemblyscript`: a function project of its
//! own, outside this repository, that builds into a module with one command and
//! comes with a test that runs it through `edgefn invoke`.
//!
//! Each language's function is a file beside this one (`rust/lib.rs`,
//! `c/function.c`, `assemblyscript/index.ts`): the same function, the one the
//! README shows, which a test holds it to.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The languages `edgefn new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    #[value(name = "assemblyscript", alias = "as")]
    AssemblyScript,
}

/// The C header, shipped in the binary so a C project needs nothing else.
const EDGEFN_H: &str = include_str!("../../../functions/include/edgefn.h");

/// The AssemblyScript bindings, likewise.
const EDGEFN_TS: &str = include_str!("../../../functions/include/edgefn.ts");

/// The function in each language (the README shows them).
pub const RUST_FUNCTION: &str = include_str!("rust/lib.rs");
pub const C_FUNCTION: &str = include_str!("c/function.c");
pub const ASSEMBLYSCRIPT_FUNCTION: &str = include_str!("assemblyscript/index.ts");
const ASCONFIG: &str = include_str!("assemblyscript/asconfig.json");

/// The AssemblyScript compiler and its WASI shim, pinned (those of
/// functions/examples/json-summary/assemblyscript, which CI builds).
const ASSEMBLYSCRIPT_VERSION: &str = "0.28.20";
const WASI_SHIM_VERSION: &str = "0.1.0";

/// Where the Rust SDK is on this machine, when `--sdk` does not say: the first
/// of `EDGEFN_SDK`, the SDK installed beside the binary (`/usr/bin/edgefn` ->
/// `/usr/share/edgefn/sdk`, as the package installs it), and the checkout this
/// binary was built from, if it is still there (`cargo install --path runtime`,
/// `cargo run`). Never a path that only existed on the machine that built it.
///
/// Installed beside the binary rather than embedded in it: the SDK's sources
/// are about 130 KB, and the Pi binary has less than that left under its size line.
pub fn default_sdk() -> Option<PathBuf> {
    let from_env = std::env::var_os("EDGEFN_SDK").map(PathBuf::from);
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| Some(exe.parent()?.parent()?.join("share/edgefn/sdk")));
    let checkout = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/sdk"));
    [from_env, installed, checkout]
        .into_iter()
        .flatten()
        .find(|sdk| sdk.join("Cargo.toml").is_file())
        .map(|sdk| sdk.canonicalize().unwrap_or(sdk))
}

/// Creates `dir/NAME` for `lang`; returns the project's directory.
pub fn new_project(dir: &Path, name: &str, lang: Lang, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{name:?}: a function name is 1 to 64 letters, digits, '-' or '_'"
    );
    let root = dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists: pick another name or directory", root.display());
    let files: Vec<(&str, String)> = match lang {
        Lang::Rust => {
            let sdk = sdk.context(
                "the edgefn Rust SDK is not on this machine: the package installs it in \
                 /usr/share/edgefn/sdk, a checkout has it in functions/sdk. Pass --sdk PATH \
                 (or set EDGEFN_SDK)",
            )?;
            anyhow::ensure!(sdk.join("Cargo.toml").exists(), "--sdk {}: no Cargo.toml there", sdk.display());
            rust_files(name, sdk)
        }
        Lang::C => c_files(name),
        Lang::AssemblyScript => assemblyscript_files(name),
    };
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("inside the project"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(root)
}

fn rust_files(name: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let artifact = name.replace('-', "_");
    vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
edgefn-sdk = {{ path = {sdk:?} }}

# Small modules: the interpreter pays for every instruction.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A project of its own, even inside another workspace.
[workspace]
"#,
                sdk = sdk.display().to_string()
            ),
        ),
        (
            ".cargo/config.toml",
            r#"[build]
target = "wasm32-unknown-unknown"

# A 64 KiB stack keeps an instance at two or three pages of memory.
[target.wasm32-unknown-unknown]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#
            .into(),
        ),
        ("src/lib.rs", RUST_FUNCTION.into()),
        (
            "build.sh",
            build_script(&format!(
                "cargo build --release\ncp \"target/wasm32-unknown-unknown/release/{artifact}.wasm\" \"{name}.wasm\""
            )),
        ),
        ("test.sh", test_script(name)),
        ("bundle.sh", bundle_script(name)),
        ("README.md", readme(name, "cargo build --release (wasm32-unknown-unknown, set in .cargo/config.toml)")),
        (".gitignore", format!("/target\n/{name}.wasm\n/*.edgefn\n")),
    ]
}

fn c_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("edgefn.h", EDGEFN_H.into()),
        ("function.c", C_FUNCTION.into()),
        (
            "build.sh",
            build_script(&format!(
                r#"CC="${{CC:-clang}}"
# clang alone cannot build for WASI: it needs wasi-libc and wasm-ld. Say so before its own errors do.
if ! command -v "$CC" >/dev/null; then
  echo "build.sh: $CC not found. Debian/Ubuntu: sudo apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
  exit 1
fi
if ! echo '#include <stdlib.h>' | "$CC" --target=wasm32-wasi -fsyntax-only -x c - 2>/dev/null; then
  echo "build.sh: $CC has no wasi-libc (the C library for wasm32-wasi). Debian/Ubuntu: sudo apt-get install wasi-libc" >&2
  echo "  lld libclang-rt-dev-wasm32; elsewhere the WASI SDK: CC=/opt/wasi-sdk/bin/clang ./build.sh" >&2
  exit 1
fi
"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -I . -Wl,--strip-all \
  -o "{name}.wasm" function.c"#
            )),
        ),
        ("test.sh", test_script(name)),
        ("bundle.sh", bundle_script(name)),
        (
            "README.md",
            readme(
                name,
                "clang, wasm-ld and wasi-libc; Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32",
            ),
        ),
        (".gitignore", format!("/{name}.wasm\n/*.edgefn\n")),
    ]
}

fn assemblyscript_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "package.json",
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "scripts": {{
    "build": "asc assembly/index.ts --target release -o {name}.wasm"
  }},
  "devDependencies": {{
    "@assemblyscript/wasi-shim": "{WASI_SHIM_VERSION}",
    "assemblyscript": "{ASSEMBLYSCRIPT_VERSION}"
  }}
}}
"#
            ),
        ),
        ("asconfig.json", ASCONFIG.into()),
        ("assembly/edgefn.ts", EDGEFN_TS.into()),
        ("assembly/index.ts", ASSEMBLYSCRIPT_FUNCTION.into()),
        (
            "build.sh",
            build_script(
                "# The compiler comes from the npm registry, once.
                 [ -d node_modules ] || npm install --no-audit --no-fund
                 npm run --silent build",
            ),
        ),
        ("test.sh", test_script(name)),
        ("bundle.sh", bundle_script(name)),
        ("README.md", readme(name, "Node.js and npm; `npm install` fetches the AssemblyScript compiler")),
        (".gitignore", format!("/node_modules\n/{name}.wasm\n/*.edgefn\n")),
    ]
}

fn build_script(commands: &str) -> String {
    format!("#!/usr/bin/env bash\n# Builds the module in this directory.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n{commands}\n")
}

fn test_script(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds and bundles the function, then runs the bundle through `edgefn invoke`
# as a gateway would run it once deployed (its triggers, config, limits and
# allow list): a hot reading must command the fan on, a cool one nothing.
# Exits non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")"
./bundle.sh >/dev/null
bundle={name}-${{VERSION:-0.1.0}}.edgefn
[ -s "$bundle" ] || {{ echo "FAIL: bundle.sh made no $bundle"; exit 1; }}
invoke() {{
  "${{EDGEFN:-edgefn}}" invoke --module "$bundle" --topic zigbee2mqtt/greenhouse \
    --payload "{{\"temperature\":$1,\"humidity\":40}}"
}}
out="$(invoke 31.5)"
echo "$out"
grep -q '^publish  cmnd/fan/POWER .* ON$' <<<"$out" || {{ echo "FAIL: 31.5 sent no ON to cmnd/fan/POWER"; exit 1; }}
out="$(invoke 21)"
grep -q '^publish  (nothing)$' <<<"$out" || {{ echo "FAIL: 21 sent something:"; echo "$out"; exit 1; }}
echo "ok: {name} commands the fan"
"#
    )
}

/// What the function is deployed with: its triggers, configuration and the
/// topic it may publish to, kept in one place for bundle.sh (and so for test.sh,
/// which runs the bundle).
fn bundle_script(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds the module and packs it with its manifest into {name}-$VERSION.edgefn,
# ready for `edgefn deploy`. Sign it with `--sign KEY` (from `edgefn keygen`).
#   ./bundle.sh [extra `edgefn bundle` options]
set -euo pipefail
cd "$(dirname "$0")"
VERSION="${{VERSION:-0.1.0}}"
# What runs it, what it reads with config_get, and where it may publish: the
# command topic it is configured with, and nothing else. Publish elsewhere and
# add that topic here, or the gateway denies it (test.sh shows `denied`).
TRIGGER='zigbee2mqtt/+'
COMMAND_TOPIC='cmnd/fan/POWER'
./build.sh
"${{EDGEFN:-edgefn}}" bundle {name}.wasm --name {name} --version "$VERSION" \
  --trigger "$TRIGGER" --set limit=28 --set command_topic="$COMMAND_TOPIC" \
  --allow-publish "$COMMAND_TOPIC" "$@"
"#
    )
}

fn readme(name: &str, toolchain: &str) -> String {
    format!(
        "# {name}\n\nAn edgefn function. Build it ({toolchain}):\n\n```sh\n./build.sh     # -> {name}.wasm\n./test.sh      # builds, runs it through `edgefn invoke` (hot and cool readings), bundles it\n```\n\n\
         Deploy it to a running gateway, as a bundle that carries its triggers,\n\
         configuration and the topics it may publish to (edit them in bundle.sh):\n\n\
         ```sh\n./bundle.sh    # -> {name}-0.1.0.edgefn\nedgefn deploy {name}-0.1.0.edgefn\n```\n"
    )
}
