//! # palisade-server
//!
//! A WebSocket server on tokio that answers the questions of every WebSocket error-handling
//! guide out of the box:
//!
//! - **Reject before accept**: a hook sees each upgrade request and can refuse it with a full
//!   HTTP response (401 with `WWW-Authenticate` and a JSON body, say) — no connection opens.
//!   Or accept and close at once with 3000/3003/4xxx, for browsers, which cannot read a
//!   refused handshake's status.
//! - **Built-in policies** with safe defaults: origin allow-list, subprotocol selection,
//!   routing (404), connection limits in total and per IP (503/429 with `Retry-After`),
//!   handshake timeout (slowloris), header limits (414/431), and plain HTTP answers for what is
//!   not a valid upgrade (405, 505, 426, 400).
//! - **Supervised handlers**: a handler's error becomes the right close code with a generic
//!   reason; a panic closes that connection with 1011 and the server lives on.
//! - **Graceful shutdown**: stop accepting, 1001 to everyone, a grace period, then abort.
//! - `tracing`: one span per connection (id, peer, path, subprotocol), an event at open and at
//!   close (code, reason, duration, bytes and messages each way), and one per rejection.
//!
//! ## Architecture invariants
//!
//! - Depends on palisade-conn, palisade-proto and palisade-error; never on the client.
//! - No protocol rule is implemented here: the handshake is validated by
//!   `palisade_proto::handshake`, connections run in `palisade_conn`.
//! - Nothing a client sends reaches a response body or close reason: rejection bodies are the
//!   user's or generic, and logs redact credentials.
//!
//! ## Features
//!
//! - `rustls`: `wss://` with [`ServerBuilder::with_tls`].
//! - `anyhow`: handlers may return `anyhow::Result<()>`; the close frame is chosen along the
//!   error's chain ([`find_closing`]).

mod accept;
pub mod auth;
mod config;
mod connection;
mod decide;
mod decision;
mod handler;
mod registry;
mod request;
mod server;
mod transport;

pub use config::ServerBuilder;
pub use decide::{Accepted, PendingConnection, Upgrade};
pub use decision::{Accept, Decision, Rejection, close_unauthorized};
pub use handler::{
    BoxError, CloseWith, Closing, ConnectionInfo, Ending, FromConnection, Handler, HandlerError,
    HandlerParts, Handshake, IntoEnding, Path, PathParams, Prepared, State, find_closing,
};
pub use palisade_proto::deflate::{DeflateConfig, DeflateParams};
pub use palisade_proto::handshake::{ExtendedConnect, OriginPolicy};
pub use registry::Connections;
pub use request::HandshakeRequest;
pub use server::{Running, Server, ShutdownSummary};
pub use transport::Transport;

/// The rustls version [`ServerBuilder::with_tls`] takes its configuration from.
#[cfg(feature = "rustls")]
pub use tokio_rustls::rustls;
