//! `edgefn new NAME --lang rust|c`: a function project of its own, outside this
//! repository, that builds into a module with one command and comes with a
//! test that runs it through `edgefn invoke`.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The languages `edgefn new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
}

/// The C header, shipped in the binary so a C project needs nothing else.
const EDGEFN_H: &str = include_str!("../../functions/include/edgefn.h");

/// Where this build's Rust SDK lives, when the binary runs from a checkout.
pub fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/sdk");
    sdk.join("Cargo.toml").exists().then(|| sdk.canonicalize().unwrap_or(sdk))
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
            let sdk =
                sdk.context("where is the edgefn Rust SDK? Pass --sdk PATH (functions/sdk in the edgefn repository)")?;
            anyhow::ensure!(sdk.join("Cargo.toml").exists(), "--sdk {}: no Cargo.toml there", sdk.display());
            rust_files(name, sdk)
        }
        Lang::C => c_files(name),
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
        (
            "src/lib.rs",
            r#"//! Publishes "ON" to `command_topic` whenever a reading's temperature exceeds `limit`.

#![no_std]

use edgefn_sdk::{config, event, json, publish, Error, QoS};

fn handle() -> Result<(), Error> {
    let limit: f64 = config::required("limit")?;
    let topic: edgefn_sdk::heapless::String<128> = config::required("command_topic")?;
    let mut buf = [0u8; 1024];
    match json::number_field(event::payload(&mut buf)?, "temperature") {
        Ok(t) if t > limit => publish(&topic, b"ON", QoS::AtLeastOnce, false),
        _ => Ok(()),
    }
}

edgefn_sdk::handler!(handle);
"#
            .into(),
        ),
        (
            "build.sh",
            build_script(&format!(
                "cargo build --release\ncp \"target/wasm32-unknown-unknown/release/{artifact}.wasm\" \"{name}.wasm\""
            )),
        ),
        ("test.sh", test_script(name)),
        ("README.md", readme(name, "cargo build --release (wasm32-unknown-unknown, set in .cargo/config.toml)")),
        (".gitignore", format!("/target\n/{name}.wasm\n")),
    ]
}

fn c_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("edgefn.h", EDGEFN_H.into()),
        (
            "function.c",
            r#"/* Publishes "ON" to config `command_topic` when a reading's payload holds "hot". */
#include "edgefn.h"

EDGEFN_ABI_VERSION_EXPORT

static char payload[1024];
static char topic[256];

static int contains(const char *text, int len, const char *word, int word_len) {
    for (int i = 0; i + word_len <= len; i++) {
        int j = 0;
        while (j < word_len && text[i + j] == word[j]) j++;
        if (j == word_len) return 1;
    }
    return 0;
}

EDGEFN_EXPORT("handle")
int handle(void) {
    int topic_len = edgefn_config_get("command_topic", 13, topic, sizeof topic);
    if (topic_len < 0 || topic_len > (int)sizeof topic) {
        edgefn_log(EDGEFN_LOG_ERROR, "config `command_topic` is required", 34);
        return 2;
    }
    int len = edgefn_event_payload(payload, sizeof payload);
    if (len > (int)sizeof payload) len = sizeof payload;
    if (contains(payload, len, "hot", 3)) {
        return edgefn_publish(topic, topic_len, "ON", 2, 1, 0) == 0 ? 0 : 3;
    }
    return 0;
}
"#
            .into(),
        ),
        (
            "build.sh",
            build_script(&format!(
            "\"${{CC:-clang}}\" --target=wasm32 -nostdlib -ffreestanding -mbulk-memory -O2 -Wall -Wextra -I . \\\n  \
             -Wl,--no-entry -Wl,--stack-first -Wl,--export=handle -Wl,--export=edgefn_abi_version \\\n  \
             -o \"{name}.wasm\" function.c"
        )),
        ),
        ("test.sh", test_script(name)),
        ("README.md", readme(name, "clang and wasm-ld, no libc (Debian: apt-get install clang lld)")),
        (".gitignore", format!("/{name}.wasm\n")),
    ]
}

fn build_script(commands: &str) -> String {
    format!("#!/usr/bin/env bash\n# Builds the module in this directory.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n{commands}\n")
}

fn test_script(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds the module and runs it once through `edgefn invoke`: a hot reading must
# command the fan on. Exits non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
out="$("${{EDGEFN:-edgefn}}" invoke --module {name}.wasm --topic zigbee2mqtt/greenhouse \
  --payload '{{"temperature":31,"state":"hot"}}' --set limit=28 --set command_topic=cmnd/fan/POWER)"
echo "$out"
grep -q 'cmnd/fan/POWER' <<<"$out" || {{ echo "FAIL: no command to cmnd/fan/POWER"; exit 1; }}
echo "ok: {name} commands the fan"
"#
    )
}

fn readme(name: &str, toolchain: &str) -> String {
    format!(
        "# {name}\n\nAn edgefn function. Build it ({toolchain}):\n\n```sh\n./build.sh     # -> {name}.wasm\n./test.sh      # builds, then runs it once through `edgefn invoke`\n```\n\n\
         Deploy it to a running gateway:\n\n```sh\nedgefn deploy {name}.wasm --name {name} --trigger 'zigbee2mqtt/+' --set limit=28 --set command_topic=cmnd/fan/POWER\n```\n"
    )
}
