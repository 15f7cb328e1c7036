//! # palisade-blocking
//!
//! palisade's blocking WebSocket API: [`connect`] and [`accept`] over [`std::net::TcpStream`]
//! (and rustls' blocking `StreamOwned` for `wss://`, feature `rustls`), one thread per
//! connection, no async runtime. It drives the same sans-I/O core as palisade's tokio crates
//! ([`palisade_proto::connection::Connection`]), so errors, close codes, size limits, head
//! limits and keepalive follow the same rules.
//!
//! ```no_run
//! use palisade_blocking::Message;
//!
//! # fn run() -> Result<(), palisade_error::Error> {
//! let mut ws = palisade_blocking::connect("ws://127.0.0.1:9001/")?;
//! ws.send(Message::text("hello"))?;
//! let reply = ws.recv()?;
//! println!("{reply:?}");
//! ws.close(palisade_error::CloseCode::NORMAL, "done")?;
//! # Ok(()) }
//! ```
//!
//! ## How time passes
//!
//! There is no background thread. The thread inside [`WebSocket::recv`] or
//! [`WebSocket::recv_timeout`] answers pings, sends keepalive pings, enforces the pong
//! deadline (1011), the idle limit and the close timeout: the socket's read timeout is set from
//! the core's next deadline before every read. A connection nobody reads from answers nothing;
//! a thread that must send while waiting waits with `recv_timeout` and sends between waits.
//!
//! ## Architecture invariants
//!
//! - It sits on `palisade-proto` and `palisade-error` only: **no tokio in its dependency
//!   tree** (`cargo xtask ci deps` checks it).
//! - No protocol logic here: every frame, limit and close rule is the core's; this crate
//!   reads, writes and keeps time.
//! - A failure is reported after its close frame is written (or after the close timeout);
//!   after a failure on the peer's input, what the peer still sends is drained (at most
//!   64 MiB, within the close timeout) on a short-lived thread before TCP is closed.
//! - No unsafe code, no panics on peer input.
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `rustls` | no | `wss://` for [`Client`] with rustls (ring, webpki roots); [`Transport`] for rustls' blocking `StreamOwned`, client and server side |

mod client;
mod config;
mod head;
mod server;
mod socket;
#[cfg(feature = "rustls")]
mod tls;
mod transport;
mod url;

pub use client::{Client, DEFAULT_USER_AGENT};
pub use config::Config;
pub use palisade_error::{CloseCode, CloseFrame, ConnectionClosed, Error};
pub use palisade_proto::connection::ProtocolConfig;
pub use palisade_proto::deflate::{DeflateConfig, DeflateParams};
pub use palisade_proto::handshake::HeadLimits;
pub use palisade_proto::handshake::OriginPolicy;
pub use palisade_proto::message::{Message, Utf8Bytes};
pub use server::Acceptor;
pub use socket::{Incoming, WebSocket};
pub use transport::Transport;

/// rustls, whose `StreamOwned` and configurations a `wss://` server or client builds.
#[cfg(feature = "rustls")]
pub use rustls;

/// Opens a connection to `url` with [`Client::default`]'s settings.
///
/// # Errors
///
/// As [`Client::connect`].
pub fn connect(url: &str) -> Result<WebSocket, Error> {
    Client::new().connect(url)
}

/// Runs the server's opening handshake on `stream` with [`Acceptor::default`]'s settings.
///
/// # Errors
///
/// As [`Acceptor::accept`]: refusals are answered with their HTTP response before the error is
/// returned.
pub fn accept<S: Transport + 'static>(stream: S) -> Result<WebSocket, Error> {
    Acceptor::new().accept(stream)
}
