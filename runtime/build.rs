//! Builds the example functions in ../functions to wasm32 so that the binary can
//! carry them as `builtin:` modules: `edgefn demo` then works from a fresh clone
//! with nothing else built. Uses its own target directory under OUT_DIR.

use std::path::PathBuf;
use std::process::Command;

const EXAMPLES: &[(&str, &str)] = &[("threshold", "threshold"), ("window-average", "window_average")];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let functions = manifest.join("../functions");
    for path in
        ["sdk", "examples/threshold", "examples/window-average", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"]
    {
        println!("cargo:rerun-if-changed={}", functions.join(path).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.join("functions-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&functions)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // The outer build's flags are for the host or a cross target, never for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    for (package, _) in EXAMPLES {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("running cargo to build the example functions");
    if !status.success() {
        panic!(
            "building the example functions in functions/ failed (see above). \
             Is the wasm32 target installed? `rustup target add wasm32-unknown-unknown`"
        );
    }
    for (_, artifact) in EXAMPLES {
        let built = target_dir.join(format!("wasm32-unknown-unknown/release/{artifact}.wasm"));
        std::fs::copy(&built, out.join(format!("{artifact}.wasm")))
            .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
