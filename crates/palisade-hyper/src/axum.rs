//! palisade on axum 0.8: the [`PalisadeUpgrade`] extractor, and [`mount`], a route made of it.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::Router;
//! use axum::routing::get;
//! use palisade_server::Server;
//!
//! # async fn run(server: Server) -> std::io::Result<()> {
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route("/ws", palisade_hyper::axum::mount(server.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // The peer's address comes from `ConnectInfo`: without it palisade answers 500.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! palisade sees the request as the axum handler does: with a nested router, the path without
//! the nest's prefix. Its own routes are matched against that path; a server built with
//! `fallback` only serves every path it is mounted on.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::Response;
use axum::routing::{MethodRouter, any};
use http::Request;
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use palisade_server::Server;

use crate::mount::{internal_error, respond};

/// An upgrade request, for palisade to decide: the request head, the means to take over the
/// connection, and the peer's address from axum's `ConnectInfo<SocketAddr>` when the router is
/// served with it.
///
/// It never rejects: a request that is no valid upgrade is answered by palisade's decision
/// (426, 400, 405 …) in [`PalisadeUpgrade::serve`], so that every refusal has the same
/// response as from palisade's own accept loop.
///
/// ```no_run
/// use axum::extract::State;
/// use axum::response::Response;
/// use palisade_hyper::axum::PalisadeUpgrade;
/// use palisade_server::Server;
///
/// // Runs after whatever axum middleware and extractors come first.
/// async fn ws(State(server): State<Server>, upgrade: PalisadeUpgrade) -> Response {
///     upgrade.serve(&server).await
/// }
/// ```
#[derive(Debug)]
pub struct PalisadeUpgrade {
    head: Request<()>,
    on_upgrade: Option<OnUpgrade>,
    peer: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for PalisadeUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The head is copied, so that extractors after this one still see it; the upgrade is
        // taken, as only one party can take over the connection.
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        // HTTP/2's extended CONNECT (RFC 8441): its `:protocol`, for the decision.
        if let Some(protocol) = parts.extensions.get::<hyper::ext::Protocol>() {
            head.extensions_mut().insert(protocol.clone());
        }
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        Ok(Self { head, on_upgrade, peer })
    }
}

impl PalisadeUpgrade {
    /// The peer's address: from `ConnectInfo`, or the one [`PalisadeUpgrade::with_peer`] set.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Sets the peer's address palisade counts and logs the connection under (the client's
    /// address from a trusted proxy's header, say), replacing `ConnectInfo`'s.
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Runs `server`'s decision and returns the response for axum to send: the 101 of an
    /// accepted upgrade, whose connection is served once axum hands over the stream, or the
    /// complete refusal. Without a peer address (no `ConnectInfo<SocketAddr>` and no
    /// [`PalisadeUpgrade::with_peer`]) it answers 500 and logs why, deciding nothing.
    pub async fn serve(self, server: &Server) -> Response {
        let Some(peer) = self.peer else {
            tracing::error!(
                "no peer address for a WebSocket upgrade: serve the router with \
                 `into_make_service_with_connect_info::<SocketAddr>()`, or set one with \
                 `PalisadeUpgrade::with_peer`; answering 500"
            );
            return internal_error().map(Body::from);
        };
        let mut request = self.head;
        if let Some(on_upgrade) = self.on_upgrade {
            request.extensions_mut().insert(on_upgrade);
        }
        respond(server, request, peer).await.map(Body::from)
    }
}

/// A route that hands every request to `server` (any method: palisade answers 405 to those
/// that cannot upgrade): `Router::new().route("/ws", mount(server))`.
pub fn mount<S>(server: Server) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    any(move |upgrade: PalisadeUpgrade| {
        let server = server.clone();
        async move { upgrade.serve(&server).await }
    })
}
