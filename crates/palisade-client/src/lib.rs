//! # palisade-client
//!
//! palisade's WebSocket client on tokio: it opens connections (`ws://`, `wss://`, through
//! proxies, following redirects) and hands back the same [`WebSocket`](palisade_conn::WebSocket) type the server uses.
//!
//! ```no_run
//! use palisade_proto::Message;
//!
//! # async fn run() -> Result<(), palisade_error::Error> {
//! let ws = palisade_client::connect("ws://127.0.0.1:9001/echo").await?;
//! ws.send(Message::text("hello")).await?;
//! let reply = ws.recv().await?;
//! # Ok(()) }
//! ```
//!
//! [`connect`] uses the defaults; [`Client`] is the builder (open timeout, headers, `Origin`,
//! subprotocols, user agent, [`Config`](palisade_conn::Config), proxy, TLS roots, redirects), and
//! [`Client::reconnecting`] gives a [`Reconnecting`] client with backoff.
//!
//! ## Reading errors
//!
//! Every failure is one variant of [`Error`]: match it coarsely with
//! [`Error::category`] and [`Error::is_retryable`], or finely by variant — the table is on
//! [`Client::connect`]. A refusal (any status but 101) is
//! [`palisade_error::HandshakeError::InvalidStatus`], which keeps the status, the headers
//! (without cookies) and the start of the body, so the JSON of a 401 can be read.
//!
//! ## Architecture invariants
//!
//! - Depends on palisade-conn, palisade-proto and palisade-error; **never on the server**.
//!   The handshake's rules live in `palisade_proto::handshake` and the connection in
//!   `palisade_conn`; this crate only does I/O around them.
//! - A URL is checked completely before any I/O: a bad scheme, host, port or a fragment
//!   fails without a DNS query.
//! - Nothing a server sends is trusted for size: the response head is read under
//!   [`HeadLimits`], a refusal's body up to [`Client::with_max_body`], redirects up to
//!   [`Client::with_max_redirects`], all under one open deadline.
//! - No secret reaches a log or an error: `Authorization`, cookies, proxy credentials, URL
//!   user-info and query strings are redacted (`palisade_error::redact`), and credential
//!   headers are not forwarded across a redirect to another origin.
//! - Handshake keys and masking keys come from a CSPRNG (RFC 6455 §4.1, §5.3), seeded per
//!   connection from the thread-local generator, which the OS seeds.
//! - A `wss://` URL is never downgraded: a redirect to `ws://` is refused.
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `rustls` | no | `wss://` with rustls (ring provider), webpki roots, custom CAs, [`TlsRoots`] |
//! | `http2` | no | WebSocket over HTTP/2 (RFC 8441) with the `h2` crate: [`Client::with_http2`] |
//! | `native-roots` | no | [`TlsRoots::Native`]: the platform's root store |
//!
//! Without `rustls`, connecting to a `wss://` URL fails with
//! [`palisade_error::TransportError::Tls`].

mod body;
mod client;
#[cfg(feature = "http2")]
mod http2;
mod proxy;
mod reconnect;
mod stream;
#[cfg(feature = "rustls")]
mod tls;
mod url;

pub use client::{Client, Connected, DEFAULT_USER_AGENT};
use palisade_error::Error;
pub use palisade_proto::deflate::{DeflateConfig, DeflateParams};
pub use palisade_proto::handshake::{ExtensionOffer, HeadLimits};
pub use proxy::{Proxy, ProxyKind};
pub use reconnect::{Attempt, Backoff, Gap, Reconnecting, STABLE_AFTER};
/// The rustls crate this one is built with, for [`Client::with_tls_config`].
#[cfg(feature = "rustls")]
pub use rustls;
pub use stream::ClientStream;
#[cfg(feature = "rustls")]
pub use tls::TlsRoots;

/// Opens a connection to `url` with the default [`Client`].
///
/// # Errors
///
/// See [`Client::connect`].
pub async fn connect(url: &str) -> Result<Connected, Error> {
    Client::new().connect(url).await
}
