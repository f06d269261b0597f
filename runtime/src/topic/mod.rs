//! MQTT topic names, topic filters and the router that maps a topic to everything
//! subscribed to it. Pure code: no I/O, no clocks.

mod filter;
mod router;

pub use filter::{minimal_subscriptions, validate_topic_name, TopicError, TopicFilter};
pub use router::Router;
