//! Test support: brokers on free ports, the real `edgefn` binary as a child
//! process, and an MQTT probe that plays the devices and watches the actuators.
#![allow(dead_code)]

pub mod broker;
pub mod browser;
pub mod certs;
pub mod cloud;
pub mod fake_broker;
pub mod gateway;
pub mod http;
pub mod power;
pub mod probe;
pub mod proxy;
pub mod scenario;
pub mod tmpfs;
pub mod wasm;

use std::net::TcpListener;
use std::path::PathBuf;

/// A loopback port that was free a moment ago, for a server started later
/// (a broker, an embedded one in the gateway). It is taken below the kernel's
/// ephemeral range (32768-60999 on Linux), so that nothing bound to port 0 or
/// connecting meanwhile (a proxy, a probe, the gateway) can take it before that
/// server binds it: a proxy once did, and forwarded to itself until it ran out
/// of descriptors. Each test process starts at its own offset and walks on.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// True when running under CI, where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty() && v != "false").unwrap_or(false)
}

/// Whether the active toolchain has the standard library of `target`.
pub fn rust_target_installed(target: &str) -> bool {
    let libdir = std::process::Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    std::fs::read_dir(&libdir)
        .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
}

/// Whether rustup has the standard library of `target`; in CI a missing one
/// fails the test, elsewhere the test is skipped with a loud message.
pub fn require_rust_target(target: &str) -> bool {
    match rust_target_installed(target) {
        true => true,
        false if in_ci() => panic!("the {target} target is required in CI but is not installed (.ci/run adds it)"),
        false => {
            eprintln!("SKIPPED: the {target} target is not installed; `rustup target add {target}` or `bash .ci/run`");
            false
        }
    }
}

/// Whether clang and wasi-libc are here to build C for WASI (Debian's
/// `wasi-libc` and `libclang-rt-dev-wasm32`); in CI they must be.
pub fn require_wasi_libc() -> bool {
    let libc = ["/usr/lib/wasm32-wasi/libc.a", "/usr/share/wasi-sysroot/lib/wasm32-wasi/libc.a"];
    require_tool("clang", &["/usr/bin/clang"]).is_some() && require_tool("wasi-libc", &libc).is_some()
}

/// Finds an external tool; in CI a missing one fails the test, elsewhere the test is
/// skipped with a loud message. A test whose tool the build found missing is
/// `#[ignore]`d with the reason (runtime/build/test_tools.rs) and gets here only
/// under `cargo test -- --ignored`, or when the tool went after the build.
pub fn require_tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    });
    match found {
        Some(path) => Some(path),
        None if in_ci() => panic!("{name} is required in CI but is not installed (.ci/run installs it)"),
        None => {
            eprintln!("SKIPPED: {name} is not installed; `bash .ci/run` installs it and runs this test");
            None
        }
    }
}

/// A random number generator for tests that pick random moments (xorshift),
/// seeded from the clock: returns the seed, to print, and `below(n)`.
pub fn random_from_clock() -> (u64, impl FnMut(u64) -> u64) {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut state = seed | 1;
    let below = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    (seed, below)
}
