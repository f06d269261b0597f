//! The only module that knows wasmi: loading function modules, checking them
//! against ABI v1 (`functions/ABI.md`), and running one invocation at a time
//! under fuel, memory, stack and time limits.

mod abi;
mod abi_state;
pub mod abi_table;
mod guest_memory;
mod instance;
mod loader;
mod outcome;
mod resident;
pub mod tape;
mod wasi;

pub use instance::FunctionInstance;
pub use loader::{LoadError, Loader, WasmModule, DEFAULT_MAX_MODULE_BYTES};
pub use outcome::{Confirm, FailReason, Failure, Invocation, LogLevel, LogLine};
pub use tape::Tape;

#[cfg(test)]
mod tests;
