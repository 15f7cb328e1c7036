//! Interoperability with independent implementations: Python `websockets`, `websocket-client`
//! and `aiohttp`, pinned, in a venv under `target/` that the first test creates, and Node `ws`. Every peer runs on 127.0.0.1 as a child process
//! that is killed when its handle drops and ends itself after a timeout.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod aiohttp;
#[cfg(feature = "blocking")]
mod blocking;
#[cfg(feature = "json")]
mod chat;
mod client;
mod deflate;
mod examples;
mod faults;
#[cfg(all(feature = "http2", feature = "hyper", feature = "rustls"))]
mod http2;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "axum")]
mod mount;
#[cfg(feature = "rooms")]
mod rooms;
mod server;
mod support;
#[cfg(feature = "macros")]
mod typed;
mod websocket_client;
