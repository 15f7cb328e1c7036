//! palisade-blocking over real TCP on 127.0.0.1: its server and its client against each other,
//! limits, timeouts, keepalive, refusals, compression, draining, and `wss://`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod refusals;
mod socket;
mod support;
#[cfg(feature = "rustls")]
mod tls;
