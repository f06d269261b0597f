//! Writes the guest side of the host ABI from its one table
//! (`runtime/src/host/abi_table.rs`): the Rust SDK's extern block,
//! `functions/include/edgefn.h` and `edgefn.ts`, `functions/scripts/check-abi.py`'s
//! lists and `functions/ABI.md`'s import tables, each between its `BEGIN
//! GENERATED` and `END GENERATED` lines. A unit test fails while a checked-in
//! copy differs from what this writes.
//!
//!     cargo run --example generate-abi

use std::path::Path;

use edgefn::host::abi_table::{fill, generated};

fn main() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in generated() {
        let path = root.join(file.path);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let filled = fill(&text, &file)?;
        if filled == text {
            println!("unchanged {}", file.path);
        } else {
            std::fs::write(&path, filled).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("written   {}", file.path);
        }
    }
    Ok(())
}
