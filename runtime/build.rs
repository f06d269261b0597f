//! Gives the binary the example functions of ../functions as `builtin:` modules, so
//! `edgefn demo` works from a fresh clone with nothing else built.
//!
//! Where the `wasm32-unknown-unknown` target is installed they are built from
//! source with their own target directory under OUT_DIR. Where it is not (a fresh
//! toolchain with `RUSTUP_AUTO_INSTALL=0`, which never installs the targets that
//! rust-toolchain.toml lists), the prebuilt copies in runtime/builtin/ are used,
//! but only while runtime/builtin/SOURCES still names the digest of the sources
//! they were built from; otherwise the build stops at once with the one line that
//! fixes it. `EDGEFN_UPDATE_BUILTINS=1 cargo check -p edgefn` refreshes the
//! prebuilt copies (functions/scripts/update-builtins.sh), and a unit test of
//! `builtin` fails while they are stale.
//!
//! It also tells the tests which tools they need are missing (build/test_tools.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, artifact file stem) of every example carried as a builtin.
const EXAMPLES: &[(&str, &str)] = &[("threshold", "threshold"), ("window-average", "window_average")];
/// What the examples are built from, relative to functions/: files, or directories read whole.
const SOURCES: &[&str] =
    &["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "sdk", "examples/threshold", "examples/window-average"];
const WASM_TARGET: &str = "wasm32-unknown-unknown";

#[path = "build/test_tools.rs"]
mod test_tools;

fn main() {
    test_tools::detect();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let functions = manifest.join("../functions");
    let prebuilt = manifest.join("builtin");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for path in SOURCES {
        println!("cargo:rerun-if-changed={}", functions.join(path).display());
    }
    println!("cargo:rerun-if-changed={}", prebuilt.display());
    println!("cargo:rerun-if-env-changed=EDGEFN_UPDATE_BUILTINS");

    let digest = sources_digest(&functions);
    println!("cargo:rustc-env=EDGEFN_FUNCTIONS_DIGEST={digest}");

    if wasm_target_installed() {
        build_from_source(&functions, &out);
        if std::env::var_os("EDGEFN_UPDATE_BUILTINS").is_some() {
            for (_, artifact) in EXAMPLES {
                copy(&out.join(format!("{artifact}.wasm")), &prebuilt.join(format!("{artifact}.wasm")));
            }
            std::fs::write(prebuilt.join("SOURCES"), format!("{digest}\n")).expect("writing runtime/builtin/SOURCES");
        }
        return;
    }
    let recorded = std::fs::read_to_string(prebuilt.join("SOURCES")).unwrap_or_default();
    if recorded.trim() != digest {
        fail(&format!(
            "functions/ has changed since runtime/builtin/ was built, and the {WASM_TARGET} target \
             needed to rebuild it is not installed. Fix: rustup target add {WASM_TARGET}"
        ));
    }
    for (_, artifact) in EXAMPLES {
        copy(&prebuilt.join(format!("{artifact}.wasm")), &out.join(format!("{artifact}.wasm")));
    }
}

/// True when rustc has a standard library for wasm32 (`rustup target add` installs it).
fn wasm_target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).args(["--print", "target-libdir", "--target", WASM_TARGET]).output() else {
        return false;
    };
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    output.status.success()
        && std::fs::read_dir(&libdir)
            .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
}

fn build_from_source(functions: &Path, out: &Path) {
    let target_dir = out.join("functions-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(functions)
        .args(["build", "--release", "--target", WASM_TARGET])
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
        fail("building the example functions in functions/ failed (see the errors above)");
    }
    for (_, artifact) in EXAMPLES {
        copy(&target_dir.join(format!("{WASM_TARGET}/release/{artifact}.wasm")), &out.join(format!("{artifact}.wasm")));
    }
}

/// A digest of every source file the examples are built from: FNV-1a (64 bit) over
/// each file's path relative to functions/ and its bytes, in path order. It only has
/// to notice change, not resist forgery: the prebuilt modules are our own.
fn sources_digest(functions: &Path) -> String {
    let mut files = Vec::new();
    for source in SOURCES {
        collect_files(&functions.join(source), &mut files);
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for file in files {
        let relative = file.strip_prefix(functions).unwrap_or(&file);
        let bytes = std::fs::read(&file).unwrap_or_else(|e| fail(&format!("reading {}: {e}", file.display())));
        feed(relative.to_string_lossy().replace('\\', "/").as_bytes());
        feed(&[0]);
        feed(&(bytes.len() as u64).to_le_bytes());
        feed(&bytes);
    }
    format!("fnv1a64:{hash:016x}")
}

/// Every file under `path` (or `path` itself), leaving out build output.
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return };
    for entry in entries.flatten() {
        if entry.file_name() != "target" {
            collect_files(&entry.path(), files);
        }
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        fail(&format!("copying {} to {}: {e}", from.display(), to.display()));
    }
}

/// Stops the build with one line that says what is wrong, not a build-script backtrace.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
