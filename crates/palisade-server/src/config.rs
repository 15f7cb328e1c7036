//! The server's settings: routes and their handlers, hooks, policies and limits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use palisade_proto::deflate::DeflateConfig;
use palisade_proto::handshake::HeadLimits;

use crate::decision::Decision;
use crate::handler::{BoxFuture, Erased, ErasedHandler, Handler, StateMap};
use crate::request::HandshakeRequest;
use crate::server::Server;
use palisade_proto::handshake::OriginPolicy;

pub(crate) type HandshakeHook = dyn Fn(HandshakeRequest) -> BoxFuture<Decision> + Send + Sync;
pub(crate) type HttpHook =
    dyn Fn(HandshakeRequest) -> BoxFuture<Option<Response<Bytes>>> + Send + Sync;

/// A route: a path pattern whose `{name}` segments match any one non-empty segment.
pub(crate) struct Route {
    pub(crate) pattern: Arc<str>,
    pub(crate) handler: Arc<dyn ErasedHandler>,
}

impl Route {
    /// The parameters if `path` matches.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut params = Vec::new();
        let mut want = self.pattern.split('/');
        let mut have = path.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return Some(params),
                (Some(w), Some(h)) => {
                    if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                        if h.is_empty() {
                            return None;
                        }
                        params.push((name.to_owned(), h.to_owned()));
                    } else if w != h {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }
}

/// Builds a [`Server`]. Every setting has a safe default; settings are `with_*`, as on the
/// client.
pub struct ServerBuilder {
    pub(crate) routes: Vec<Route>,
    pub(crate) fallback: Option<Route>,
    pub(crate) state: StateMap,
    pub(crate) handshake_hook: Option<Arc<HandshakeHook>>,
    pub(crate) http_hook: Option<Arc<HttpHook>>,
    pub(crate) origins: Option<OriginPolicy>,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) require_subprotocol: bool,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) retry_after: u64,
    pub(crate) handshake_timeout: Duration,
    pub(crate) head_limits: HeadLimits,
    pub(crate) connection: Arc<palisade_conn::Config>,
    pub(crate) compression: Option<DeflateConfig>,
    pub(crate) expose_handler_errors: bool,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("routes", &self.routes.iter().map(|r| &*r.pattern).collect::<Vec<_>>())
            .field("origins", &self.origins)
            .field("subprotocols", &self.subprotocols)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            fallback: None,
            state: StateMap::default(),
            handshake_hook: None,
            http_hook: None,
            origins: None,
            subprotocols: Vec::new(),
            require_subprotocol: false,
            max_connections: 25_000,
            max_connections_per_ip: 1_000,
            retry_after: 5,
            handshake_timeout: Duration::from_secs(10),
            head_limits: HeadLimits::default(),
            connection: Arc::new(palisade_conn::Config::default()),
            compression: None,
            expose_handler_errors: false,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl ServerBuilder {
    /// Serves WebSocket connections on `path` with `handler`. `{name}` segments match any one
    /// segment and are read with [`crate::Path`] or [`crate::PathParams`]
    /// (`/rooms/{room}`). Routes are tried in the order given; requests for paths no route
    /// matches (with no [`ServerBuilder::fallback`]) get 404.
    pub fn route<H, Args>(mut self, path: impl Into<String>, handler: H) -> Self
    where
        H: Handler<Args>,
        Args: 'static,
    {
        let pattern: String = path.into();
        self.routes
            .push(Route { pattern: pattern.into(), handler: Arc::new(Erased::new(handler)) });
        self
    }

    /// Serves WebSocket connections on every path no [`ServerBuilder::route`] matches.
    pub fn fallback<H, Args>(mut self, handler: H) -> Self
    where
        H: Handler<Args>,
        Args: 'static,
    {
        self.fallback =
            Some(Route { pattern: "*".into(), handler: Arc::new(Erased::new(handler)) });
        self
    }

    /// Application state, given once and handed by type to every handler that takes a
    /// [`crate::State<T>`] argument. Call it once per type.
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// A hook that sees each upgrade request (path, query, headers, peer address) before the
    /// connection opens and decides: accept (with a subprotocol, response headers and a value
    /// for the handler), reject with a full HTTP response, or accept and close at once with a
    /// code. It runs after the built-in checks (routing, origin, protocol validity).
    pub fn on_handshake<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        self.handshake_hook = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// A hook that sees every request first, upgrade or not, and may answer it with a plain
    /// HTTP response (health checks, a static page) — like Python websockets'
    /// `process_request`. Returning `None` carries on with the upgrade.
    pub fn on_http<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Response<Bytes>>> + Send + 'static,
    {
        self.http_hook = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// Allows only these origins (403 and an `InvalidOrigin` log line otherwise). Off by
    /// default; turn it on for any server that browsers reach with cookies.
    pub fn with_allowed_origins(mut self, policy: OriginPolicy) -> Self {
        self.origins = Some(policy);
        self
    }

    /// The subprotocols this server speaks, most preferred first. The first one the client
    /// also offered is selected.
    pub fn with_subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses (400) a client that offers none of [`ServerBuilder::with_subprotocols`].
    pub fn require_subprotocol(mut self, required: bool) -> Self {
        self.require_subprotocol = required;
        self
    }

    /// At most this many connections at once, handshakes included (default 25,000); more get
    /// 503 with `Retry-After`.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// At most this many connections from one IP address (default 1,000); more get 429 with
    /// `Retry-After`.
    pub fn with_max_connections_per_ip(mut self, n: usize) -> Self {
        self.max_connections_per_ip = n;
        self
    }

    /// The `Retry-After` seconds sent with 503 and 429 (default 5).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = seconds;
        self
    }

    /// How long a client has to send its complete upgrade request (default 10 s; the defence
    /// against slowloris). After it: 408 and close.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Limits on the request line and headers (defaults: 8 KiB lines, 64 headers, 16 KiB
    /// total); crossing them gets 414 or 431.
    pub fn with_head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// Settings of each connection (message size, keepalive, timeouts, write buffer, rate
    /// limit).
    pub fn with_config(mut self, config: palisade_conn::Config) -> Self {
        self.connection = Arc::new(config);
        self
    }

    /// Sets the largest message accepted (default 1 MiB); see
    /// [`palisade_conn::Config::with_max_message_size`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.connection = Arc::new((*self.connection).clone().with_max_message_size(bytes));
        self
    }

    /// Sets the keepalive ping interval and pong timeout (default 20 s and 20 s; `None`
    /// disables either).
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.connection = Arc::new((*self.connection).clone().with_keepalive(interval, timeout));
        self
    }

    /// Sets how long to wait for the peer's side of the close handshake (default 10 s; `None`:
    /// no deadline).
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connection = Arc::new((*self.connection).clone().with_close_timeout(timeout));
        self
    }

    /// Accepts permessage-deflate (RFC 7692) from clients that offer it, within `config`'s
    /// limits: the first acceptable offer wins, and a client that offers none connects
    /// uncompressed. Off by default: with context takeover each connection holds about
    /// 350 KiB of zlib state once it has compressed a message (against under 4 KiB for an idle
    /// uncompressed connection), compressing costs CPU on every message, and compressing
    /// secrets next to attacker-chosen text in one context leaks them (CRIME). Browsers offer
    /// it; turn it on for text-heavy traffic, with [`DeflateConfig::lean`] for many mostly
    /// idle connections. Inflated messages are held to
    /// [`palisade_proto::ProtocolConfig::max_message_size`], so a decompression bomb fails with 1009.
    pub fn with_compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self
    }

    /// Sends the text of handler errors as close reasons (cut to 123 bytes). Off by default:
    /// internal error text goes to the log only.
    pub fn with_expose_handler_errors(mut self, expose: bool) -> Self {
        self.expose_handler_errors = expose;
        self
    }

    /// Serves `wss://` with this rustls configuration.
    #[cfg(feature = "rustls")]
    pub fn with_tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server::from_config(self)
    }
}
