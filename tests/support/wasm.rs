//! Hostile and minimal functions written as WAT, for sandboxing tests.

/// The exports every ABI v1 module needs, around a `handle` body.
pub fn module(imports: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            {imports}
            (memory (export "memory") 1)
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            {extra}
            (func (export "handle") (result i32) {body}))"#
    );
    wat::parse_str(&text).unwrap()
}

/// Loops forever: only fuel stops it.
pub fn infinite_loop() -> Vec<u8> {
    module("", "(loop $l (br $l)) i32.const 0", "")
}

/// Grows its memory a page at a time until something says no.
pub fn memory_hog() -> Vec<u8> {
    module("", "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) i32.const 0", "")
}

/// Recurses without end.
pub fn deep_recursion() -> Vec<u8> {
    module("", "call $recurse i32.const 0", "(func $recurse call $recurse)")
}

/// Hands `publish` a topic pointer far outside its one page of memory.
pub fn out_of_bounds_publish() -> Vec<u8> {
    module(
        r#"(import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(call $publish (i32.const 1000000) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
        "",
    )
}
