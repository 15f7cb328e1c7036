//! # palisade
//!
//! A WebSocket framework (RFC 6455) whose errors say precisely what went wrong — the rule that
//! was broken, the close code owed to the peer, the HTTP status, whether retrying can help — and
//! whose defaults are the secure ones: bounded sizes, credentials kept out of error messages and
//! logs.
//!
//! This crate is the facade: it re-exports palisade's crates behind features, so that an
//! application depends on one crate at one version.
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | — | always | [`error`] (`palisade-error`): the error hierarchy; [`Error`], [`Result`], [`Category`], [`CloseCode`], [`CloseFrame`] at the root; [`http`], whose types the errors carry |
//! | `proto` | yes | [`proto`] (`palisade-proto`): the sans-I/O protocol core — frames, masking, UTF-8 validation, the handshake and the connection state machine, with no I/O of its own |
//! | `conn` | yes (with `server` or `client`) | [`conn`] (`palisade-conn`): the tokio connection both runtimes share — cancel-safe `recv`, halves, fan-out senders, `Stream`/`Sink`, keepalive, backpressure, rate limits |
//! | `server` | yes | [`server`] (`palisade-server`): reject before accept, origin/subprotocol/connection-limit policies, supervised handlers, graceful shutdown |
//! | `client` | yes | [`client`] (`palisade-client`): connect with precise errors, TLS, proxies, redirects, reconnect with backoff |
//! | `json` | yes | [`json`] (`palisade-json`): typed JSON messages — an envelope with events, requests and replies both ways, error replies with stable codes that keep the connection, size and depth limits, strikes |
//! | `macros` | yes | typed handlers: [`protocol`] (one trait → the server's dispatch, a typed pusher, a typed client, a description with JSON Schemas) and [`ReplyError`](derive@ReplyError) (an error enum's replies and close codes), from `palisade-macros` |
//! | `garde` | no | validation of JSON messages with `garde` |
//! | `msgpack` | no | the JSON envelope as MessagePack in binary frames |
//! | `blocking` | no | [`blocking`] (`palisade-blocking`): the blocking API — `connect` and `accept` over std's `TcpStream`, a thread per connection, the same core, errors and limits, no tokio in its tree |
//! | `hyper` | no | [`hyper`] (`palisade-hyper`): the server mounted on hyper 1 — `upgrade` answers a request inside `service_fn` with the server's decision (the 101, then the connection on the upgraded stream, or the complete refusal), with the same handlers, registry, limits and graceful shutdown |
//! | `axum` | no | [`axum`] (with `hyper`): the server mounted on axum 0.8 — the `PalisadeUpgrade` extractor and `mount`, a route for axum's `Router` |
//! | `http2` | no | WebSocket over HTTP/2 (RFC 8441) for the client: `Client::with_http2`, extended CONNECT with the `h2` crate, over TLS (ALPN `h2`) or cleartext with prior knowledge; the server side is `hyper::serve_connection` |
//! | `rooms` | no | [`rooms`] (`palisade-rooms`): rooms with an authorisation hook, broadcasts encoded once, bounded per-member queues with a slow-consumer policy, private messages, presence, recovery of missed messages |
//! | `redis` | no | `rooms::redis` (`palisade-redis`): the Redis backend of the rooms — pub/sub fan-out, Streams for recovery, presence and node heartbeats across nodes |
//! | `rustls` | no | `wss://` for the server and the client (the blocking client too, where enabled), with rustls |
//!
//! ## Crate map
//!
//! | crate | role | here as |
//! |---|---|---|
//! | `palisade-error` | every failure, with its close code, HTTP status, category and retry class; `CloseCode`, `CloseFrame` | [`error`], and the root |
//! | `palisade-proto` | the RFC 6455 protocol as a state machine: bytes in, events and bytes out | [`proto`] |
//! | `palisade-conn` | the tokio connection over any `AsyncRead + AsyncWrite` | [`conn`] |
//! | `palisade-server` | the tokio server: accept loop, handshake policies, lifecycle | [`server`] |
//! | `palisade-client` | the tokio client: URL checks, proxies, TLS, redirects, the handshake, reconnecting | [`client`] |
//! | `palisade-json` | typed JSON messages: the envelope, error replies, requests both ways | [`json`] |
//! | `palisade-blocking` | the blocking API: the core driven by std's sockets, one thread per connection | [`blocking`] |
//! | `palisade-macros` | `#[protocol]` and `#[derive(ReplyError)]`: typed handlers and a typed client | [`protocol`], [`ReplyError`](derive@ReplyError) |
//! | `palisade-hyper` | the server mounted on hyper 1 and axum 0.8: requests to the server's decision, upgraded streams to its connections | [`hyper`], [`axum`] |
//! | `palisade-rooms` | rooms, private messages, presence, recovery; a backend trait with the in-memory default | [`rooms`] |
//! | `palisade-redis` | the Redis backend of the rooms | `rooms::redis` |
//!
//! ## Architecture invariants
//!
//! - No logic of its own: only re-exports, so nothing here can behave differently from the
//!   crate it comes from.
//! - Examples and book listings use only `palisade`; the workspace's `examples/` are this
//!   crate's examples.
//!
//! ## Matching errors
//!
//! Coarsely, by category and retry class, or finely, by variant:
//!
//! ```
//! use palisade::error::{ProtocolError, TimeoutPhase};
//! use palisade::{Category, CloseCode, Error};
//!
//! let timeout = Error::timeout(TimeoutPhase::Keepalive);
//! assert_eq!(timeout.category(), Category::Timeout);
//! assert_eq!(timeout.close_code(), Some(CloseCode::INTERNAL_ERROR));
//! assert!(timeout.is_retryable());
//!
//! let violation = Error::from(ProtocolError::MaskedServerFrame);
//! assert!(matches!(violation, Error::Protocol(ProtocolError::MaskedServerFrame)));
//! assert_eq!(violation.close_code(), Some(CloseCode::PROTOCOL_ERROR));
//! assert!(!violation.is_retryable());
//! ```

pub use palisade_error as error;
pub use palisade_error::{Category, CloseCode, CloseFrame, Error, Result};

#[cfg(feature = "proto")]
pub use palisade_proto as proto;

#[cfg(feature = "proto")]
pub use palisade_proto::message::{Message, Utf8Bytes};

#[cfg(feature = "conn")]
pub use palisade_conn as conn;

/// One connection, server or client, over any transport; its configuration.
#[cfg(feature = "conn")]
pub use palisade_conn::{Config, WebSocket};

#[cfg(feature = "server")]
pub use palisade_server as server;

#[cfg(feature = "client")]
pub use palisade_client as client;

#[cfg(feature = "json")]
pub use palisade_json as json;

#[cfg(feature = "blocking")]
pub use palisade_blocking as blocking;

#[cfg(feature = "macros")]
pub use palisade_macros::{ReplyError, protocol};

#[cfg(feature = "hyper")]
pub use palisade_hyper as hyper;

#[cfg(feature = "axum")]
pub use palisade_hyper::axum;

/// Rooms over the JSON layer (`palisade-rooms`); with feature `redis`, its Redis backend as
/// `rooms::redis`.
#[cfg(feature = "rooms")]
pub mod rooms {
    pub use palisade_rooms::*;

    /// The Redis backend (`palisade-redis`): several nodes share rooms, presence and
    /// histories.
    #[cfg(feature = "redis")]
    pub use palisade_redis as redis;
}

pub use http;

/// The names most programs use, for `use palisade::prelude::*;`.
pub mod prelude {
    pub use palisade_error::{CloseCode, CloseFrame, Error, Result};

    #[cfg(feature = "proto")]
    pub use palisade_proto::message::Message;

    #[cfg(feature = "conn")]
    pub use palisade_conn::{Config, ConnectionId, Sender, WeakSender, WebSocket};

    #[cfg(feature = "server")]
    pub use palisade_server::{
        Accept, CloseWith, ConnectionInfo, Connections, Decision, HandlerError, Handshake,
        HandshakeRequest, Path, PathParams, Rejection, Server, State,
    };

    #[cfg(feature = "client")]
    pub use palisade_client::Client;

    #[cfg(feature = "json")]
    pub use palisade_json::{ErrorReply, Incoming, JsonSender, JsonSocket, ReplyError};
}

/// What code generated by `palisade-macros` names, and nothing else may rely on: its contents
/// change with the macros, without notice.
#[doc(hidden)]
pub mod __private {
    pub use palisade_error::{ApplicationError, CloseCode, CloseFrame, Error};

    #[cfg(feature = "proto")]
    pub use palisade_proto::message::Message;

    #[cfg(feature = "conn")]
    pub use palisade_conn::{Sender, WebSocket};

    #[cfg(feature = "server")]
    pub use palisade_server::{
        Closing, ConnectionInfo, FromConnection, Handler, HandlerError, HandlerParts, IntoEnding,
        Rejection,
    };

    #[cfg(feature = "macros")]
    pub use palisade_conn::ConnectionId;
    #[cfg(feature = "macros")]
    pub use palisade_error::ConnectionClosed;
    #[cfg(feature = "macros")]
    pub use palisade_json::describe::{
        DescribeErrors, ErrorDescription, MessageDescription, ProtocolDescription,
    };
    #[cfg(feature = "macros")]
    pub use palisade_json::route::Routed;
    #[cfg(feature = "macros")]
    pub use palisade_json::typed::{
        self, CallError, Context, EventResult, FromReply, ProtocolPart, Pushes, RequestResult,
    };
    #[cfg(feature = "macros")]
    pub use palisade_json::{
        ErrorReply, Incoming, Invalid, JsonConfig, JsonSender, JsonSocket, Outcome, ReplyError,
        Validate,
    };
    #[cfg(feature = "macros")]
    pub use {serde, serde_json};
}
