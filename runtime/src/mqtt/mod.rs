//! MQTT connections: client options (TLS, credentials, will), reconnect backoff,
//! the embedded broker, and the task that owns and polls an event loop.
//! Only this module and `demo` open network connections.

mod acks;
mod backoff;
mod carry;
mod connection;
mod embedded;
mod options;
mod outgoing;

pub use acks::{AckOrder, AckStats, Acker, Delivery, Ticket};
pub use backoff::Backoff;
pub use connection::{
    drive, random_unit, Backpressure, ConnectionEvents, ConnectionHandle, Drive, Handler, Link, NoIntake, PublishLosses,
};
pub use embedded::{is_connection_chatter, start_embedded_broker};
pub use options::{client_options, new_client, MqttSetupError, READ_CEILING_BYTES};
pub use outgoing::{Expired, Outgoing, Tag};
