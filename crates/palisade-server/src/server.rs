//! The server: configuration, the accept loop, the handshake phase, handler supervision and
//! graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use palisade_conn::CloseHandle;
use palisade_error::{
    CloseCode, CloseFrame, Error, HandshakeError, InvalidMessage, NegotiationError, TimeoutPhase,
};
use palisade_proto::Role;
use palisade_proto::connection::Connection;
use palisade_proto::deflate::{Deflate, DeflateConfig, DeflateParams};
use palisade_proto::handshake::{
    AcceptOptions, HeadLimits, HeadReader, UpgradeRequest, parse_request, rejection, write_response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::{Instrument, Level};

use crate::decision::{Accept, Decision, Rejection};
use crate::handler::{BoxError, BoxFuture, ConnectionInfo, Handler, close_for};
use crate::origin::OriginPolicy;
use crate::request::HandshakeRequest;
use crate::transport::Transport;

type HandshakeHook = dyn Fn(HandshakeRequest) -> BoxFuture<Decision> + Send + Sync;
type HttpHook = dyn Fn(HandshakeRequest) -> BoxFuture<Option<Response<Bytes>>> + Send + Sync;

/// Builds a [`Server`]. Every setting has a safe default.
pub struct ServerBuilder {
    routes: Vec<(String, Arc<dyn Handler>)>,
    fallback: Option<Arc<dyn Handler>>,
    handshake_hook: Option<Arc<HandshakeHook>>,
    http_hook: Option<Arc<HttpHook>>,
    origins: Option<OriginPolicy>,
    subprotocols: Vec<String>,
    require_subprotocol: bool,
    max_connections: usize,
    max_connections_per_ip: usize,
    retry_after: u64,
    handshake_timeout: Duration,
    head_limits: HeadLimits,
    connection: palisade_conn::Config,
    compression: Option<DeflateConfig>,
    expose_handler_errors: bool,
    #[cfg(feature = "rustls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("routes", &self.routes.iter().map(|(p, _)| p).collect::<Vec<_>>())
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
            connection: palisade_conn::Config::default(),
            compression: None,
            expose_handler_errors: false,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl ServerBuilder {
    /// Serves WebSocket connections on `path` with `handler`. Requests for paths with no route
    /// (and no [`ServerBuilder::handler`]) get 404.
    pub fn route(mut self, path: impl Into<String>, handler: impl Handler) -> Self {
        self.routes.push((path.into(), Arc::new(handler)));
        self
    }

    /// Serves WebSocket connections on every path not routed with [`ServerBuilder::route`].
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// A hook that sees each upgrade request (path, query, headers, peer address) before the
    /// connection opens and decides: accept (with a subprotocol, response headers and data for
    /// the handler), reject with a full HTTP response, or accept and close at once with a code.
    /// It runs after the built-in checks (routing, origin, protocol validity).
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
    pub fn allowed_origins(mut self, policy: OriginPolicy) -> Self {
        self.origins = Some(policy);
        self
    }

    /// The subprotocols this server speaks, most preferred first. The first one the client
    /// also offered is selected.
    pub fn subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses (400) a client that offers none of [`ServerBuilder::subprotocols`].
    pub fn require_subprotocol(mut self, required: bool) -> Self {
        self.require_subprotocol = required;
        self
    }

    /// At most this many connections at once, handshakes included (default 25,000); more get
    /// 503 with `Retry-After`.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// At most this many connections from one IP address (default 1,000); more get 429 with
    /// `Retry-After`.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.max_connections_per_ip = n;
        self
    }

    /// The `Retry-After` seconds sent with 503 and 429 (default 5).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = seconds;
        self
    }

    /// How long a client has to send its complete upgrade request (default 10 s; the defence
    /// against slowloris). After it: 408 and close.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Limits on the request line and headers (defaults: 8 KiB lines, 64 headers, 16 KiB
    /// total); crossing them gets 414 or 431.
    pub fn head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// Settings of each connection (message size, keepalive, timeouts, write buffer, rate
    /// limit).
    pub fn connection_config(mut self, config: palisade_conn::Config) -> Self {
        self.connection = config;
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
    /// [`palisade_proto::Config::max_message_size`], so a decompression bomb fails with 1009.
    pub fn compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self
    }

    /// Sends the text of handler errors as close reasons (cut to 123 bytes). Off by default:
    /// internal error text goes to the log only.
    pub fn expose_handler_errors(mut self, expose: bool) -> Self {
        self.expose_handler_errors = expose;
        self
    }

    /// Serves `wss://` with this rustls configuration.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server { config: Arc::new(self) }
    }
}

/// A WebSocket server. Build it with [`Server::builder`], then [`Server::bind`].
#[derive(Debug, Clone)]
pub struct Server {
    config: Arc<ServerBuilder>,
}

impl Server {
    /// A builder with safe defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Binds `addr` (port 0 picks a free port) and starts accepting in the background.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> std::io::Result<Running> {
        let listener = TcpListener::bind(addr).await?;
        self.serve([listener])
    }

    /// Starts accepting on listeners bound by the caller (several addresses, say).
    pub fn serve(
        &self,
        listeners: impl IntoIterator<Item = TcpListener>,
    ) -> std::io::Result<Running> {
        let state = Arc::new(State {
            config: self.config.clone(),
            next_id: AtomicU64::new(1),
            registry: Mutex::new(Registry::default()),
            shutting_down: AtomicBool::new(false),
            drained: Notify::new(),
        });
        let mut addrs = Vec::new();
        let mut loops = Vec::new();
        for listener in listeners {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            tracing::info!(%addr, "listening");
            loops.push(tokio::spawn(accept_loop(listener, state.clone())).abort_handle());
        }
        Ok(Running { state, addrs, loops })
    }
}

#[derive(Default)]
struct Registry {
    conns: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    ip: IpAddr,
    close: Option<CloseHandle<Transport>>,
    abort: Option<AbortHandle>,
}

struct State {
    config: Arc<ServerBuilder>,
    next_id: AtomicU64,
    registry: Mutex<Registry>,
    shutting_down: AtomicBool,
    drained: Notify,
}

impl State {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection in, or says which limit refuses it.
    fn admit(&self, id: u64, ip: IpAddr) -> Result<(), Box<Rejection>> {
        let mut reg = self.registry();
        if reg.conns.len() >= self.config.max_connections {
            return Err(Box::new(
                Rejection::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_retry_after(self.config.retry_after)
                    .with_text("Server is at its connection limit; try again later.\n")
                    .with_log_reason("connection limit reached"),
            ));
        }
        let per_ip = reg.per_ip.entry(ip).or_insert(0);
        if *per_ip >= self.config.max_connections_per_ip {
            return Err(Box::new(
                Rejection::new(StatusCode::TOO_MANY_REQUESTS)
                    .with_retry_after(self.config.retry_after)
                    .with_text("Too many connections from your address; try again later.\n")
                    .with_log_reason("per-IP connection limit reached"),
            ));
        }
        *per_ip += 1;
        reg.conns.insert(id, Entry { ip, close: None, abort: None });
        Ok(())
    }

    fn release(&self, id: u64) {
        let mut reg = self.registry();
        if let Some(entry) = reg.conns.remove(&id)
            && let Some(n) = reg.per_ip.get_mut(&entry.ip)
        {
            *n -= 1;
            if *n == 0 {
                reg.per_ip.remove(&entry.ip);
            }
        }
        if reg.conns.is_empty() {
            self.drained.notify_waiters();
        }
    }
}

/// Counts a connection out when its task ends, however it ends.
struct Admitted {
    state: Arc<State>,
    id: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.release(self.id);
    }
}

/// A server that is accepting connections.
#[derive(Debug)]
pub struct Running {
    state: Arc<State>,
    addrs: Vec<SocketAddr>,
    loops: Vec<AbortHandle>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// What a graceful shutdown achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownSummary {
    /// Connections that ended within the grace period.
    pub closed: usize,
    /// Connections aborted when the grace period ran out.
    pub aborted: usize,
}

impl Running {
    /// The bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Connections open now, handshakes included.
    pub fn connections(&self) -> usize {
        self.state.registry().conns.len()
    }

    /// Graceful shutdown: stop accepting, send 1001 Going Away to every connection, wait up to
    /// `grace` for them to end, then abort the rest.
    pub async fn shutdown(self, grace: Duration) -> ShutdownSummary {
        self.state.shutting_down.store(true, Ordering::Release);
        for l in &self.loops {
            l.abort();
        }
        let (total, handles): (usize, Vec<CloseHandle<Transport>>) = {
            let reg = self.state.registry();
            (reg.conns.len(), reg.conns.values().filter_map(|e| e.close.clone()).collect())
        };
        tracing::info!(connections = total, "shutting down");
        for handle in handles {
            tokio::spawn(async move {
                let _ = handle.close(CloseCode::GOING_AWAY, "server shutting down").await;
            });
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let drained = self.state.drained.notified();
            if self.state.registry().conns.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                break;
            }
        }
        let aborted = {
            let reg = self.state.registry();
            for entry in reg.conns.values() {
                if let Some(a) = &entry.abort {
                    a.abort();
                }
            }
            reg.conns.len()
        };
        let summary = ShutdownSummary { closed: total.saturating_sub(aborted), aborted };
        tracing::info!(closed = summary.closed, aborted = summary.aborted, "shut down");
        summary
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(err) => {
                // EMFILE, ENFILE, ENOBUFS …: the listener is fine, the process is out of
                // something. Back off instead of spinning, and keep serving.
                tracing::warn!(error = %err, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if state.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        let admitted = state.admit(id, peer.ip());
        let span = tracing::info_span!(
            "ws",
            id,
            %peer,
            path = tracing::field::Empty,
            subprotocol = tracing::field::Empty
        );
        let task = tokio::spawn(
            connection_task(state.clone(), admitted, stream, peer, id).instrument(span),
        );
        if let Some(entry) = state.registry().conns.get_mut(&id) {
            entry.abort = Some(task.abort_handle());
        }
    }
}

/// The task of one accepted connection. Its future is what every connection keeps in memory for
/// its whole life, so whatever is large and only needed for a moment (the handshake, the
/// refusals) is boxed and freed when done; `connection_task_stays_small` checks the size.
async fn connection_task(
    state: Arc<State>,
    admitted: Result<(), Box<Rejection>>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
) {
    match admitted {
        Ok(()) => {
            let _admitted = Admitted { state: state.clone(), id };
            serve_connection(state, stream, peer, id).await;
        }
        // Boxed: its drain buffer would otherwise sit in every connection's task.
        Err(rejection) => Box::pin(refuse_over_limit(stream, rejection)).await,
    }
}

async fn refuse_over_limit(mut stream: TcpStream, rejection: Box<Rejection>) {
    tracing::info!(status = rejection.status.as_u16(), reason = %rejection.reason, "connection refused");
    let bytes = encode_rejection(&rejection);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
        // Closing with the request still unread would make the kernel send a reset, which can
        // destroy the response before the client reads it: drain (bounded) until the client
        // closes its side.
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

async fn serve_connection(state: Arc<State>, tcp: TcpStream, peer: SocketAddr, id: u64) {
    let config = state.config.clone();
    let opened = Instant::now();
    // Boxed: everything before the handler runs once, and an unboxed part would keep its room
    // in this task's future for the connection's life (`connection_task_stays_small`).
    let Some((handle, handler)) = Box::pin(establish(&state, &config, tcp, peer, id, opened)).await
    else {
        return;
    };
    let result = AssertUnwindSafe(handler).catch_unwind().await;
    let result: Result<(), BoxError> = match result {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            tracing::error!(panic = %what, "handler panicked; closing with 1011");
            Err(Box::new(crate::handler::CloseWith::new(
                CloseCode::INTERNAL_ERROR,
                "internal error",
            )))
        }
    };
    if let Err(err) = &result {
        let closed = err.downcast_ref::<Error>().and_then(Error::connection_closed).is_some();
        if !closed && err.downcast_ref::<crate::handler::CloseWith>().is_none() {
            tracing::warn!(error = %err, "handler failed");
        }
    }
    if let Some(frame) = close_for(&result, config.expose_handler_errors) {
        // Finish the close handshake (bounded by the close timeout) so the close is clean and
        // the peer's reply is not met with a reset. If a task the handler spawned is still
        // receiving, it sees the end instead.
        if let Err(Error::Concurrency(_)) =
            Box::pin(handle.close_and_wait(frame.code(), frame.reason())).await
        {
            let _ = Box::pin(handle.close(frame.code(), frame.reason())).await;
        }
    }
    log_close(&handle, opened, "handler returned");
}

/// The TLS and WebSocket handshakes, then the connection and its handler's future, not yet
/// polled. `None` when there is nothing more to do: the handshake failed (and was answered), or
/// the handshake hook asked to close at once (and the close was done).
async fn establish(
    state: &State,
    config: &ServerBuilder,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    opened: Instant,
) -> Option<(CloseHandle<Transport>, BoxFuture<Result<(), BoxError>>)> {
    let mut stream = open_transport(config, tcp).await?;
    let upgraded =
        tokio::time::timeout(config.handshake_timeout, handshake(config, &mut stream, peer, id))
            .await;
    let (info, handler, leftover, close_now) = match upgraded {
        Ok(Ok(Some(upgraded))) => upgraded,
        Ok(Ok(None)) => return None,
        Ok(Err(err)) => {
            refuse(&mut stream, &err).await;
            return None;
        }
        Err(_) => {
            let err = Error::timeout(TimeoutPhase::Handshake);
            tracing::debug!("handshake timed out");
            refuse(&mut stream, &err).await;
            return None;
        }
    };
    let socket = open_socket(config, info.compression, stream, &leftover);
    let handle = socket.close_handle();
    if let Some(entry) = state.registry().conns.get_mut(&id) {
        entry.close = Some(handle.clone());
    }
    tracing::info!(subprotocol = info.subprotocol.as_deref().unwrap_or(""), "connection open");

    if let Some(frame) = close_now {
        drop(socket);
        let _ = handle.close_and_wait(frame.code(), frame.reason()).await;
        log_close(&handle, opened, "closed by the handshake hook");
        return None;
    }
    Some((handle, handler.call(socket, info)))
}

/// The connection over `stream` once the handshake agreed on `compression`. Not inlined into
/// the task: the protocol state would be built in the task's future (rustc keeps room there for
/// a local moved out before an await) and then moved to the heap, doubling its cost.
fn open_socket(
    config: &ServerBuilder,
    compression: Option<DeflateParams>,
    stream: Transport,
    leftover: &[u8],
) -> palisade_conn::WebSocket<Transport> {
    let mut conn = Connection::server(
        config.connection.protocol.clone(),
        tokio::time::Instant::now().into_std(),
    );
    if let (Some(params), Some(deflate)) = (compression, &config.compression) {
        conn.set_extension(Box::new(Deflate::new(Role::Server, params, deflate)));
    }
    palisade_conn::WebSocket::from_parts(stream, conn, config.connection.clone(), leftover)
}

fn log_close(handle: &CloseHandle<Transport>, opened: Instant, why: &str) {
    let info = handle.close_info();
    let stats = handle.stats();
    let code = info.code();
    let level_info =
        matches!(code, CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS);
    macro_rules! close_event {
        ($lvl:expr) => {
            tracing::event!(
                $lvl,
                code = code.0,
                reason = info.reason(),
                duration_ms = opened.elapsed().as_millis() as u64,
                messages_in = stats.messages_in,
                messages_out = stats.messages_out,
                bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out,
                why,
                "connection closed"
            )
        };
    }
    if level_info {
        close_event!(Level::INFO);
    } else {
        close_event!(Level::WARN);
    }
}

#[cfg(feature = "rustls")]
async fn open_transport(config: &ServerBuilder, tcp: TcpStream) -> Option<Transport> {
    let Some(acceptor) = &config.tls else { return Some(Transport::Plain(tcp)) };
    match tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Transport::Tls(Box::new(tls))),
        Ok(Err(err)) => {
            tracing::info!(error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

#[cfg(not(feature = "rustls"))]
async fn open_transport(_config: &ServerBuilder, tcp: TcpStream) -> Option<Transport> {
    Some(Transport::Plain(tcp))
}

type Upgraded = (ConnectionInfo, Arc<dyn Handler>, BytesMut, Option<CloseFrame>);

/// Reads and judges the upgrade request. `Ok(None)`: answered already (plain HTTP hook).
async fn handshake(
    config: &ServerBuilder,
    stream: &mut Transport,
    peer: SocketAddr,
    id: u64,
) -> Result<Option<Upgraded>, Error> {
    let (head, request, leftover) = read_request(stream, &config.head_limits).await?;
    let request = HandshakeRequest::from_head(head, config.head_limits, request, peer);
    tracing::Span::current().record("path", request.path());

    if let Some(hook) = &config.http_hook
        && let Some(response) = hook(request.clone()).await
    {
        tracing::debug!(status = response.status().as_u16(), "answered by the HTTP hook");
        let mut out = Vec::new();
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        parts.headers.insert(CONNECTION, HeaderValue::from_static("close"));
        write_response(&Response::from_parts(parts, ()), &body, &mut out);
        stream.write_all(&out).await.map_err(Error::io)?;
        let _ = stream.shutdown().await;
        return Ok(None);
    }

    let upgrade = UpgradeRequest::from_request(request.as_http().clone())?;
    let handler = config
        .routes
        .iter()
        .find(|(path, _)| path == request.path())
        .map(|(_, h)| h.clone())
        .or_else(|| config.fallback.clone())
        .ok_or_else(|| HandshakeError::Rejected {
            status: StatusCode::NOT_FOUND,
            reason: "no route for this path".into(),
        })?;
    if let Some(policy) = &config.origins
        && !policy.allows(request.origin())
    {
        return Err(
            HandshakeError::InvalidOrigin { origin: request.origin().map(str::to_owned) }.into()
        );
    }
    let offered = request.subprotocols();
    let mut subprotocol =
        config.subprotocols.iter().find(|p| offered.contains(&p.as_str())).cloned();
    if subprotocol.is_none() && config.require_subprotocol {
        return Err(NegotiationError::NoCommonSubprotocol.into());
    }

    let decision = match &config.handshake_hook {
        Some(hook) => hook(request.clone()).await,
        None => Decision::Accept(Accept::new()),
    };
    let (accept, close_now) = match decision {
        Decision::Accept(accept) => (accept, None),
        Decision::Close(frame) => (Accept::new(), Some(frame)),
        Decision::Reject(rejection) => {
            tracing::info!(
                status = rejection.status.as_u16(),
                reason = %rejection.reason,
                "handshake rejected by hook"
            );
            stream.write_all(&encode_rejection(&rejection)).await.map_err(Error::io)?;
            let _ = stream.shutdown().await;
            return Ok(None);
        }
    };
    if let Some(chosen) = accept.subprotocol {
        if !offered.contains(&chosen.as_str()) {
            // Answering with a protocol the client did not offer makes it fail the
            // connection (RFC 6455 §4.1); refuse here instead, with a status it can read.
            tracing::error!(protocol = %chosen, "handshake hook chose a subprotocol the client did not offer");
            return Err(NegotiationError::NoCommonSubprotocol.into());
        }
        subprotocol = Some(chosen);
    }
    let mut options = AcceptOptions::default();
    if let Some(p) = &subprotocol {
        options = options.with_subprotocol(p.clone());
    }
    for (name, value) in &accept.headers {
        options = options.with_header(name.clone(), value.clone());
    }
    let mut compression: Option<DeflateParams> = None;
    if let Some(deflate) = &config.compression
        && let Some(accepted) = deflate.accept(upgrade.extensions())
    {
        options = options.with_extensions(vec![accepted.response]);
        compression = Some(accepted.params);
    }
    let response = upgrade.accept(options)?;
    let mut out = Vec::with_capacity(256);
    write_response(&response, &[], &mut out);
    stream.write_all(&out).await.map_err(Error::io)?;
    if let Some(p) = &subprotocol {
        tracing::Span::current().record("subprotocol", p.as_str());
    }
    let info = ConnectionInfo {
        id,
        request: request.compact(),
        subprotocol,
        data: Arc::new(accept.data),
        compression,
    };
    Ok(Some((info, handler, leftover, close_now)))
}

/// Reads the request head within the limits; returns its bytes (in an allocation of their own),
/// the request parsed from them, and any bytes read past it.
async fn read_request(
    stream: &mut Transport,
    limits: &HeadLimits,
) -> Result<(Bytes, http::Request<()>, BytesMut), Error> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut reader = HeadReader::new(*limits);
    loop {
        if let Some(head_len) = reader.feed(&buf)? {
            let request = parse_request(&buf[..head_len], limits)?;
            let head = Bytes::copy_from_slice(&buf[..head_len]);
            let rest = buf.split_off(head_len);
            return Ok((head, request, rest));
        }
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await.map_err(Error::io)? == 0 {
            return Err(InvalidMessage::Incomplete.into());
        }
    }
}

/// Answers a failed handshake with its HTTP status and closes.
async fn refuse(stream: &mut Transport, err: &Error) {
    let status = err.http_status().map_or(0, |s| s.as_u16());
    match err.category() {
        palisade_error::Category::Security => {
            tracing::warn!(status, error = %err, "handshake refused")
        }
        palisade_error::Category::Transport => {
            tracing::debug!(error = %err, "connection lost during handshake");
            return;
        }
        _ => tracing::info!(status, error = %err, "handshake refused"),
    }
    let response = rejection(err);
    let mut out = Vec::new();
    let (parts, body) = response.into_parts();
    write_response(&Response::from_parts(parts, ()), &body, &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn encode_rejection(rejection: &Rejection) -> Vec<u8> {
    let mut builder = Response::builder().status(rejection.status);
    for (name, value) in &rejection.headers {
        builder = builder.header(name, value);
    }
    let mut response = builder.body(()).unwrap_or_default();
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(rejection.body.len()));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    if rejection.status == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(RETRY_AFTER)
    {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(5u64));
    }
    let mut out = Vec::with_capacity(128 + rejection.body.len());
    write_response(&response, &rejection.body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open connection holds its task's future; boxing the parts that run once keeps it
    /// small (it was 4.5 KB while the refusal's 4 KiB drain buffer and the protocol state,
    /// built in place before being moved to the heap, had room in it).
    #[tokio::test]
    async fn connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let builder = Server::builder()
            .handler(|_ws: crate::ServerSocket, _info| async { Ok::<(), Error>(()) });
        let state = Arc::new(State {
            config: Arc::new(builder),
            next_id: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            shutting_down: AtomicBool::new(false),
            drained: Notify::new(),
        });
        let task = connection_task(state, Ok(()), stream, peer, 0);
        let size = std::mem::size_of_val(&task);
        // 392 bytes when this was written, down from 4,512.
        assert!(size <= 512, "the connection task's future is {size} bytes");
    }
}
