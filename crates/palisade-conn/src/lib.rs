//! # palisade-conn
//!
//! The tokio WebSocket connection shared by palisade's server and client runtimes: one
//! implementation of receiving, sending, keepalive, backpressure, rate limits and the close
//! handshake, over any `AsyncRead + AsyncWrite` transport (TCP, TLS, an in-memory duplex).
//!
//! ## Architecture invariants
//!
//! - No protocol logic lives here: this crate feeds bytes and time into
//!   [`palisade_proto::Connection`] and writes out what it produces. Every rule of RFC 6455 is
//!   enforced (and tested) in the sans-I/O core.
//! - No state lives in futures: `recv()` is cancel-safe, and a cancelled `send()` leaves its
//!   frame whole (queued, or not queued at all) — frames never interleave or tear.
//! - Memory is bounded whatever the peer does: reads stop while a message is unconsumed (the
//!   receive queue is the transport's own buffer plus at most one message), the write buffer
//!   has high/low water marks, and a peer that stops reading is dropped after the write
//!   timeout. Idle connections give their buffers back.
//! - Depends on palisade-proto, palisade-error and tokio only; never on the server or client.

mod config;
mod driver;
mod rate;
mod socket;
mod stream;

pub use config::{Config, RateLimit, RateLimitAction};
pub use driver::Stats;
pub use palisade_proto::message::{Message, Utf8Bytes};
pub use socket::{ConnectionId, ReadHalf, Sender, TrySendError, WeakSender, WebSocket, WriteHalf};
