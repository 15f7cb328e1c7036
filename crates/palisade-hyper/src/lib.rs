//! # palisade-hyper
//!
//! palisade's WebSocket server mounted on another HTTP server: hyper 1 (with `hyper_util`'s
//! tokio I/O) and, with the `axum` feature, axum 0.8. The HTTP server owns the listener and
//! reads the requests; palisade decides each upgrade with every policy of its own accept loop
//! (connection limits, head limits, the HTTP hook, routing, origin, subprotocols, the
//! handshake hook, the handler's arguments), answers refusals with the same complete response
//! (status, headers, body), and serves accepted connections with the same handlers, close
//! codes, keepalive, registry ([`Server::connections`]) and graceful shutdown
//! ([`Server::shutdown`]).
//!
//! [`Server::connections`]: palisade_server::Server::connections
//! [`Server::shutdown`]: palisade_server::Server::shutdown
//! [`Server::decide`]: palisade_server::Server::decide
//!
//! With hyper, inside `service_fn`:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use hyper::service::service_fn;
//! use hyper_util::rt::TokioIo;
//! use palisade_server::Server;
//!
//! # async fn run(server: Server) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (tcp, peer) = listener.accept().await?;
//! let service = service_fn(move |request| {
//!     let server = server.clone();
//!     async move { Ok::<_, Infallible>(palisade_hyper::upgrade(&server, request, peer).await) }
//! });
//! let connection = hyper::server::conn::http1::Builder::new()
//!     .serve_connection(TokioIo::new(tcp), service)
//!     // Without it hyper cannot hand the connection over: palisade answers 500.
//!     .with_upgrades();
//! # let _ = connection.await;
//! # Ok(()) }
//! ```
//!
//! [`serve_connection`] does all of that for one accepted connection, TCP or TLS: HTTP/1.1
//! with upgrades, or HTTP/2 with extended CONNECT enabled, so that WebSockets open over HTTP/2
//! too (RFC 8441: a `CONNECT` with `:protocol websocket`, answered with 200).
//!
//! With axum, [`axum::mount`] is a route (`Router::new().route("/ws", mount(server))`), and
//! [`axum::PalisadeUpgrade`] the extractor it is made of, for handlers that run axum
//! extractors first.
//!
//! ## The peer's address
//!
//! The connection limits per IP address, the logs and [`palisade_server::ConnectionInfo`] use
//! the peer's address, which only the listener knows: [`upgrade`] takes it as an argument
//! (from the `accept` that gave the stream), and the axum extractor reads axum's
//! `ConnectInfo<SocketAddr>` (serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()`). Without it every request is refused
//! with 500 and an error log line that says so, rather than counting every client under one
//! made-up address; `PalisadeUpgrade::with_peer` supplies one (a proxy's `X-Forwarded-For`,
//! say).
//!
//! ## Architecture invariants
//!
//! - Depends on palisade-server (and palisade-error) only: no protocol or policy rule lives
//!   here. This crate carries a request to [`Server::decide`] and the upgraded stream to
//!   [`palisade_server::PendingConnection::serve`], nothing more.
//! - A refusal goes out exactly as palisade decided it; nothing from the request reaches a
//!   response.
//! - A connection waiting for hyper to hand over its stream holds its place under the
//!   connection limits, and gives it back if the hand-over fails.
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `axum` | no | [`axum`]: the `PalisadeUpgrade` extractor and `mount`, a route for axum 0.8's `Router` |

#[cfg(feature = "axum")]
pub mod axum;
mod mount;

pub use mount::{serve_connection, upgrade};
