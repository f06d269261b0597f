//! The example functions from `functions/examples`, compiled to wasm by build.rs
//! and carried in the binary, so configurations can say `module = "builtin:threshold"`.

const BUILTINS: &[(&str, &[u8])] = &[
    ("threshold", include_bytes!(concat!(env!("OUT_DIR"), "/threshold.wasm"))),
    ("window-average", include_bytes!(concat!(env!("OUT_DIR"), "/window_average.wasm"))),
];

/// The wasm of built-in function `name`.
pub fn module(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of all built-in functions.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    /// The prebuilt copies in runtime/builtin/ stand in for the examples wherever the
    /// wasm32 target is missing (runtime/build.rs): they must be built from today's sources.
    #[test]
    fn prebuilt_builtins_are_built_from_the_current_sources() {
        let recorded = include_str!("../builtin/SOURCES").trim();
        assert_eq!(
            recorded,
            env!("EDGEFN_FUNCTIONS_DIGEST"),
            "runtime/builtin/ is stale: run `bash functions/scripts/update-builtins.sh` and commit the result"
        );
    }
}
