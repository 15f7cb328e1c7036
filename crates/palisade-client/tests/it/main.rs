//! Integration tests of the client over real sockets on 127.0.0.1, against small servers
//! written here — most of them deliberately broken, one failure each.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod handshake;
mod proxy;
mod reconnect;
mod refusal;
mod support;
// `wss://` needs the `rustls` feature (`cargo test -p palisade-client --all-features`).
#[cfg(feature = "rustls")]
mod tls;
