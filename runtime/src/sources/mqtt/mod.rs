//! The MQTT source: messages on topic triggers. The gateway's intake
//! connection (`mqtt/`) reads them and hands each to the [`Dispatcher`], which
//! matches it against the [`Routes`] (built from the functions' topic triggers,
//! the devices and the forward rules) and offers one job per matching function
//! to the sink, or makes the connection wait while a queue is full.

mod dispatch;
mod routes;

pub use dispatch::{stall_after, Dispatcher};
pub use routes::Routes;
