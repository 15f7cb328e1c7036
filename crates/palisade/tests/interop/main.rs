//! Interoperability with an independent implementation: Python `websockets`, pinned, in a venv
//! under `target/` that the first test creates. Every peer runs on 127.0.0.1 as a child process
//! that is killed when its handle drops and ends itself after a timeout.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod client;
mod deflate;
mod examples;
#[cfg(feature = "json")]
mod json;
mod server;
mod support;
