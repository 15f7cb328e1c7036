//! # palisade-proto
//!
//! The sans-I/O WebSocket protocol core under palisade's server and client runtimes: bytes in,
//! events and bytes out (RFC 6455, and RFC 7692 permessage-deflate).
//!
//! - [`frame`]: frame headers, decoded incrementally from input in arbitrary pieces, and encoded.
//! - [`mask`]: applying and removing the client-to-server mask, the hot path.
//! - [`utf8`]: incremental UTF-8 validation that fails as soon as the bytes so far cannot be valid.
//! - [`handshake`]: the HTTP/1.1 upgrade for both roles, with header limits.
//! - [`deflate`]: permessage-deflate negotiation and the bomb-proof codec, on `flate2` with
//!   the pure-Rust `zlib-rs` backend (window-bits control, no C compiler).
//! - [`Connection`]: the state machine for one connection after the handshake — messages,
//!   fragmentation, control frames, limits and the close handshake.
//!
//! ## Architecture invariants
//!
//! - No I/O, no async runtime, no clock, no randomness. Time comes in as a `now` argument; mask
//!   keys and handshake keys come from a source the caller injects. Everything here is
//!   deterministic and testable without a socket.
//! - Peer input never panics and never allocates beyond the configured limits: sizes are checked
//!   from frame headers before anything is buffered.
//! - After a fatal error the connection discards further input (RFC 6455 §7.1.7) and owes the
//!   peer exactly one close frame, which it queues itself.
//! - The only state shared between connections is a few zlib compressors per thread
//!   ([`deflate`]), handed out reset unless they continue the same connection's stream: what a
//!   connection sends never depends on another's data.
//! - `unsafe` appears only in [`mask`], where a benchmark shows it pays.

pub mod close;
pub mod connection;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;

pub use connection::{Connection, Event, Extension, MaskSource, ProtocolConfig};
pub use frame::{FrameHeader, OpCode};
pub use message::{Message, Utf8Bytes};
pub use palisade_error as error;

/// Which end of the connection this is. Clients mask what they send; servers must not, and
/// each side refuses frames masked the wrong way (RFC 6455 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that accepted the connection.
    Server,
    /// The end that opened it.
    Client,
}
