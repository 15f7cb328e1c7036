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
//! - Sends from every handle take turns in the order they asked; only two concurrent
//!   receivers are an error (`Error::Concurrency`).
//! - Handles name no transport: the transport is boxed once per connection, so a registry
//!   holds server, client and mounted connections alike. A `WeakSender` keeps nothing of an
//!   ended connection but a small header.
//! - A connection is driven by whoever receives, or by [`WebSocket::drive`] while nobody
//!   does: pings are answered, keepalive and deadlines run, the peer's close is noticed.
//! - Memory is bounded whatever the peer does: reads stop while messages are unconsumed (the
//!   receive queue is the transport's own buffer plus one message while a task receives, at
//!   most [`Config::max_queue`] messages and one message's worth of bytes while none does),
//!   the write buffer has high/low water marks, and a peer that stops reading is dropped after
//!   the write timeout. Idle connections give their buffers back.
//! - Depends on palisade-proto, palisade-error and tokio only; never on the server or client.

mod config;
mod driver;
mod head;
mod rate;
mod socket;
mod stream;

pub use config::{Config, RateLimit, RateLimitAction};
pub use driver::Stats;
pub use head::read_head;
pub use socket::{ConnectionId, ReadHalf, Sender, TrySendError, WeakSender, WebSocket, WriteHalf};
