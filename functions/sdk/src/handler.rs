//! The `handler!` macro, which turns plain Rust functions into the exports the
//! gateway calls, and the code it expands to.

/// Exports `handle` (and optionally `init`) plus `edgefn_abi_version` for a module.
///
/// Each function has the signature `fn() -> Result<(), edgefn_sdk::Error>`. An
/// `Err` is logged at error level and turned into a non-zero return code
/// ([`Error::code`](crate::Error::code)), which fails the invocation (or, for
/// `init`, the load).
///
/// ```
/// fn on_event() -> Result<(), edgefn_sdk::Error> { Ok(()) }
/// fn check_config() -> Result<(), edgefn_sdk::Error> { Ok(()) }
/// edgefn_sdk::handler!(on_event, init = check_config);
/// ```
///
/// Any names will do, the exports' own among them:
///
/// ```
/// fn handle() -> Result<(), edgefn_sdk::Error> { Ok(()) }
/// fn init() -> Result<(), edgefn_sdk::Error> { Ok(()) }
/// edgefn_sdk::handler!(handle, init = init);
/// ```
#[macro_export]
macro_rules! handler {
    // The exports live in an anonymous const block under names of their own
    // (`export_name`), so a user's function may be called `handle` or `init`
    // without colliding with them.
    (@handle $handle:path) => {
        const _: () = {
            /// Reports the edgefn ABI version this module was built for.
            #[unsafe(export_name = "edgefn_abi_version")]
            extern "C" fn __edgefn_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            /// Handles one event: 0 on success, an error code otherwise.
            #[unsafe(export_name = "handle")]
            extern "C" fn __edgefn_handle() -> i32 {
                $crate::__private::run("", $handle)
            }
        };
    };
    ($handle:path $(,)?) => {
        $crate::handler!(@handle $handle);
    };
    ($handle:path, init = $init:path $(,)?) => {
        $crate::handler!(@handle $handle);

        const _: () = {
            /// Runs once per instantiation, before the first event.
            #[unsafe(export_name = "init")]
            extern "C" fn __edgefn_init() -> i32 {
                $crate::__private::run("init: ", $init)
            }
        };
    };
}

/// Runs a handler and maps its result to the ABI's return code, logging errors.
#[doc(hidden)]
pub fn run(context: &str, f: impl FnOnce() -> Result<(), crate::Error>) -> i32 {
    match f() {
        Ok(()) => 0,
        Err(err) => {
            crate::error!("{context}{err}");
            err.code()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, ErrorKind};

    #[test]
    fn maps_results_to_codes() {
        assert_eq!(super::run("", || Ok(())), 0);
        assert_eq!(super::run("", || Err(Error::msg("boom"))), 1);
        assert_eq!(super::run("init: ", || Err(Error::config("k", "is required"))), 2);
        assert_eq!(super::run("", || Err(Error::new(ErrorKind::Capacity, "full"))), 5);
    }
}
