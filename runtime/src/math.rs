//! The four C math functions the binary's dependencies call (`pow` in tokio's
//! scheduler statistics; `exp`, `log` and `log1p` in the embedded broker's
//! metrics), defined here from the `libm` crate, which the interpreter already
//! builds on. With no other symbol from glibc's libm in use, the linker's
//! `--as-needed` leaves `libm.so.6` out of the binary, and an idle gateway no
//! longer maps it: 0.59 MB of resident memory on x86_64 (BENCHMARKS.md, idle RSS).
//! Only the binary defines them; the library and its tests link glibc's as usual.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod c {
    #[unsafe(no_mangle)]
    extern "C" fn pow(x: f64, y: f64) -> f64 {
        libm::pow(x, y)
    }

    #[unsafe(no_mangle)]
    extern "C" fn exp(x: f64) -> f64 {
        libm::exp(x)
    }

    #[unsafe(no_mangle)]
    extern "C" fn log(x: f64) -> f64 {
        libm::log(x)
    }

    #[unsafe(no_mangle)]
    extern "C" fn log1p(x: f64) -> f64 {
        libm::log1p(x)
    }
}
