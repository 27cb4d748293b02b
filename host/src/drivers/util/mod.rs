//! What several drivers share, written once: the JSON payload of webhook and queue
//! destinations, and how an HTTP answer or a transport failure becomes a delivery error.

pub mod http;
pub mod payload;
