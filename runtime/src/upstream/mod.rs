//! Upstream delivery: the sender that drains the outbox to the cloud broker
//! (at-least-once, FIFO per stream, a record leaves the outbox only once its
//! publish is PUBACKed), the wire format, and the `tail` checker.

mod sender;
pub mod tail;
mod window;
mod wire;

pub use sender::{spawn_sender, SenderHandle};
pub use wire::{decode, encode, topic, Batch, Format, WireRecord};
