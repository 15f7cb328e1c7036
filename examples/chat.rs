//! The chat: palisade's flagship example, a chat application with a page, served by axum with
//! palisade's server mounted at `/ws`. Run it:
//!
//! ```text
//! cargo run --release --example chat
//! ```
//!
//! and open the URL it prints (`http://127.0.0.1:8080/`) in two browser windows. Look at:
//! login with a signed, short-lived token (`POST /login`, JWT HS256) checked *before* the
//! upgrade (401 with a JSON body saying why; 4001 for the page); one session per name; rooms
//! with join and leave notices, private messages, who is online and who is typing; error
//! replies that keep the connection (an empty message, one longer than 500 characters); rate
//! limits (a burst gets `rate_limited`, a flood is closed with 1008); an inactivity timeout
//! (1000 "inactivity timeout"); the keepalive's round-trip time; the messages missed during a
//! dropped connection shown once it is back; and after Ctrl-C (1001 "server restarting") and a
//! restart, the page reconnecting by itself with backoff and jitter.
//!
//! The contract for tools: `POST /login` with `{"name": "alice"}` answers `{"token": "…"}`;
//! the WebSocket is at `/ws` with `Authorization: Bearer TOKEN` and the subprotocol
//! `palisade.json.v1`. The book's chapter "The chat" describes every message.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use palisade::conn::{RateLimit, RateLimitAction};
use palisade::json::typed::ProtocolPart;
use palisade::json::{AppCode, ErrorReply, SUBPROTOCOL};
use palisade::rooms::redis::{RedisBackend, RedisConfig};
use palisade::rooms::{
    Recovery, RoomOptions, Rooms, RoomsConfig, Session, SessionPolicy, SlowConsumer,
};
use palisade::server::{OriginPolicy, Server, rustls};
use palisade::{CloseCode, Config};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

#[path = "chat/auth.rs"]
mod auth;
#[path = "chat/session.rs"]
mod session;

use auth::{Name, Tokens};

#[path = "common/args.rs"]
mod args;

/// What every connection shares: the rooms, the token keys and the limits.
pub(crate) struct ChatState {
    pub(crate) rooms: Rooms,
    pub(crate) tokens: Tokens,
    pub(crate) inactivity: Duration,
    pub(crate) keepalive: Duration,
    /// Messages a user may post at once, then `per_sec`; beyond, `rate_limited`.
    pub(crate) burst: u32,
    pub(crate) per_sec: f64,
}

const USAGE: &str = "\
usage: chat [--addr HOST:PORT] [OPTIONS]

The chat: a page at http://HOST:PORT/, POST /login, the WebSocket at /ws.

  --addr HOST:PORT        where to listen (default 127.0.0.1:8080)
  --allow-origin ORIGIN   a page origin allowed to connect, besides this server's own
                          (http://HOST:PORT and http://localhost:PORT); repeatable
  --token-ttl SECS        how long a login token is valid (default 900)
  --inactivity SECS       close a connection after this long without a message from its
                          user, with 1000 \"inactivity timeout\" (default 600)
  --keepalive SECS        ping interval; the page is told the round trip (default 15)
  --burst N               messages a user may post at once before `rate_limited` (default 5)
  --rate N                messages per second a user may post after the burst (default 1)
  --flood N               incoming messages per second (N at once) beyond which the
                          connection is closed with 1008 (default 20)
  --redis URL             share rooms, presence, private messages and histories with the
                          other chat servers using this Redis (redis://HOST:PORT/)
  --tls-cert PEM          serve https:// and wss:// with this certificate chain...
  --tls-key PEM           ...and this private key (both PEM files)
  -h, --help              print this and exit

The token secret comes from CHAT_SECRET (at least 32 bytes), or is generated at start.
";

/// The command line.
struct Options {
    addr: String,
    origins: Vec<String>,
    token_ttl: f64,
    inactivity: f64,
    keepalive: f64,
    burst: u32,
    rate: f64,
    flood: f64,
    tls: Option<(String, String)>,
    redis: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        addr: "127.0.0.1:8080".to_owned(),
        origins: Vec::new(),
        token_ttl: 900.0,
        inactivity: 600.0,
        keepalive: 15.0,
        burst: 5,
        rate: 1.0,
        flood: 20.0,
        tls: None,
        redis: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut args = args::Args::new("chat", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => o.addr = args.value("--addr"),
            "--allow-origin" => o.origins.push(args.value("--allow-origin")),
            "--token-ttl" => o.token_ttl = args.parsed("--token-ttl"),
            "--inactivity" => o.inactivity = args.parsed("--inactivity"),
            "--keepalive" => o.keepalive = args.parsed("--keepalive"),
            "--burst" => o.burst = args.parsed("--burst"),
            "--rate" => o.rate = args.parsed("--rate"),
            "--flood" => o.flood = args.parsed("--flood"),
            "--redis" => o.redis = Some(args.value("--redis")),
            "--tls-cert" => cert = Some(args.value("--tls-cert")),
            "--tls-key" => key = Some(args.value("--tls-key")),
            other => args.unknown(other),
        }
    }
    for (name, value) in
        [("--token-ttl", o.token_ttl), ("--inactivity", o.inactivity), ("--keepalive", o.keepalive)]
    {
        if !(value.is_finite() && value > 0.0 && value < 1e9) {
            args.fail(&format!("`{name}` must be a positive number of seconds"));
        }
    }
    o.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => args.fail("`--tls-cert` and `--tls-key` go together"),
    };
    if !(o.rate.is_finite() && o.rate > 0.0 && o.flood.is_finite() && o.flood >= 1.0) {
        args.fail("`--rate` must be positive and `--flood` at least 1");
    }
    o
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    tracing_subscriber::fmt()
        .with_env_filter(
            // palisade-json logs each error reply it sends on its own at debug level.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,palisade_json=debug".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(options))
}

// ANCHOR: secret
/// The key tokens are signed with: `CHAT_SECRET`, so that a restarted server (or a second one)
/// accepts the tokens of the first; or 32 random bytes, said so, whose tokens end with the
/// process.
fn secret() -> Result<Vec<u8>, String> {
    match std::env::var("CHAT_SECRET") {
        Ok(secret) if secret.len() >= 32 => Ok(secret.into_bytes()),
        Ok(_) => Err("CHAT_SECRET must be at least 32 bytes long".to_owned()),
        Err(_) => {
            let mut secret = vec![0; 32];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
            eprintln!("chat: CHAT_SECRET is not set: generated a token secret for this run");
            Ok(secret)
        }
    }
}
// ANCHOR_END: secret

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = TcpListener::bind(&options.addr).await?;
    let addr = listener.local_addr()?;
    let chat = Arc::new(ChatState {
        rooms: rooms(options.redis.as_deref()).await?,
        tokens: Tokens::new(&secret()?, Duration::from_secs_f64(options.token_ttl))?,
        inactivity: Duration::from_secs_f64(options.inactivity),
        keepalive: Duration::from_secs_f64(options.keepalive),
        burst: options.burst,
        per_sec: options.rate,
    });
    let server = websocket_server(&chat, scheme, addr, &options);
    let app = routes(chat.clone(), server.clone());
    println!("chat on {scheme}://{addr}/");

    // ANCHOR: shutdown
    let accepting = tokio::spawn(accept(listener, tls, app));
    shutdown_signal().await?;
    accepting.abort();
    // Every connection hears why before palisade's own shutdown waits for the close
    // handshakes: 1001 tells the page to come back (with backoff), its reason says what
    // happens. The frames go out first (`start_close` does not wait for the answers), so
    // palisade's shutdown finds the connections closing and sends nothing of its own.
    for connection in server.connections().senders() {
        let _ = connection.start_close(CloseCode::GOING_AWAY, "server restarting").await;
    }
    let summary = server.shutdown(Duration::from_secs(5)).await;
    tracing::info!(closed = summary.closed, aborted = summary.aborted, "shut down");
    // ANCHOR_END: shutdown
    Ok(())
}

// ANCHOR: redis
/// The rooms in this process, or shared through Redis with every chat server given the same
/// `--redis` (and the same `CHAT_SECRET`, so that each accepts the others' tokens): a page on
/// one sees the messages and presence of a page on another, and histories outlive a restart.
async fn rooms(redis: Option<&str>) -> Result<Rooms, Box<dyn std::error::Error>> {
    let Some(url) = redis else { return Ok(Rooms::new(rooms_config())) };
    let backend = RedisBackend::connect(RedisConfig::new(url)).await?;
    Ok(Rooms::with_backend(rooms_config(), backend))
}
// ANCHOR_END: redis

// ANCHOR: rooms
/// The rooms: one session per name; a client may join rooms whose names follow the rule (the
/// refusal is an error reply); every room but `@online` keeps two minutes of history for
/// recovery; a member whose queue of 256 messages is full is closed with 1013.
fn rooms_config() -> RoomsConfig {
    RoomsConfig::default()
        .with_sessions(SessionPolicy::Refuse)
        .with_queue_capacity(256)
        .with_slow_consumer(SlowConsumer::Close(CloseCode::TRY_AGAIN_LATER))
        .with_max_rooms_per_session(16)
        .with_authorizer(|_member, room| {
            if session::valid_room(room) {
                return Ok(());
            }
            let code = AppCode::new("invalid_room").expect("snake_case, not built in");
            Err(ErrorReply::new(code, session::ROOM_RULE).with_path("data.room"))
        })
        .with_room_policy(|room| match room {
            session::ONLINE => RoomOptions::default(),
            _ => RoomOptions::default().with_recovery(Recovery::default()),
        })
}
// ANCHOR_END: rooms

// ANCHOR: server
/// palisade's server for `/ws`: the token checked before accepting, the subprotocol, the
/// origin allow-list, the flood limit and the keepalive.
fn websocket_server(
    chat: &Arc<ChatState>,
    scheme: &str,
    addr: SocketAddr,
    options: &Options,
) -> Server {
    let port = addr.port();
    let mut origins = vec![format!("{scheme}://{addr}"), format!("{scheme}://localhost:{port}")];
    origins.extend(options.origins.iter().cloned());
    let flood = RateLimit::messages(options.flood)
        .with_action(RateLimitAction::Close(CloseCode::POLICY_VIOLATION));
    let keepalive = Duration::from_secs_f64(options.keepalive);
    let config = Config::default()
        .with_max_message_size(64 * 1024)
        .with_keepalive(Some(keepalive), Some(keepalive * 2))
        .with_rate_limit(Some(flood));
    let hook_chat = chat.clone();
    Server::builder()
        .route("/ws", session::session)
        .with_state(chat.clone())
        .with_subprotocols([SUBPROTOCOL])
        .require_subprotocol(true)
        .with_allowed_origins(OriginPolicy::new(origins))
        .with_config(config)
        .on_handshake(move |request| {
            let chat = hook_chat.clone();
            async move { auth::decide(&request, &chat.tokens, &chat.rooms).await }
        })
        .build()
}
// ANCHOR_END: server

// ANCHOR: routes
/// The HTTP side: the page, its scripts, the login, and palisade mounted at `/ws`.
fn routes(chat: Arc<ChatState>, server: Server) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html", include_str!("chat/static/index.html")) }))
        .route(
            "/chat.css",
            get(|| async { asset("text/css", include_str!("chat/static/chat.css")) }),
        )
        .route(
            "/chat.js",
            get(|| async { asset("text/javascript", include_str!("chat/static/chat.js")) }),
        )
        .route(
            "/palisade.js",
            get(|| async { asset("text/javascript", include_str!("chat/static/palisade.js")) }),
        )
        .route("/protocol.json", get(|| async { protocol_description() }))
        .route("/login", post(login).layer(DefaultBodyLimit::max(1024)))
        .route("/ws", palisade::axum::mount(server))
        .with_state(chat)
}
// ANCHOR_END: routes

// ANCHOR: description
/// `GET /protocol.json`: everything `/ws` speaks — the chat's messages and the room protocol
/// served beside them — with the JSON Schema of each payload and the codes of its error
/// replies. palisade.js reads it before it connects.
fn protocol_description() -> Response {
    let description = <Session as ProtocolPart>::describe(session::ChatProtocol::describe());
    match serde_json::to_string(&description) {
        Ok(json) => {
            let mut response = json.into_response();
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(err) => {
            tracing::error!(%err, "the protocol's description does not serialise");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
// ANCHOR_END: description

/// A file of the page, embedded in the binary.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Scripts and styles from this server only, connections to it only.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
    );
    response
}

// ANCHOR: login
/// `POST /login` with `{"name": "alice"}`: `{"token": "…"}`, or 400/409 with a JSON error.
async fn login(
    State(chat): State<Arc<ChatState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        name: String,
    }
    // Over `DefaultBodyLimit` (1 KiB), or a body that could not be read.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            tracing::info!(status = status.as_u16(), "login refused: the body could not be read");
            return json_error(
                status,
                "invalid_body",
                "send {\"name\": \"…\"} as JSON, at most 1 KiB",
            );
        }
    };
    let Ok(Login { name }) = serde_json::from_slice::<Login>(&body) else {
        tracing::info!("login refused: the body is not {{\"name\": \"…\"}}");
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "send {\"name\": \"…\"} as JSON",
        );
    };
    let Some(name) = Name::parse(&name) else {
        tracing::info!("login refused: invalid name");
        return json_error(StatusCode::BAD_REQUEST, "invalid_name", Name::RULE);
    };
    if chat.rooms.user_sessions(&name.to_string()).await.unwrap_or(0) > 0 {
        tracing::info!(%name, "login refused: name in use");
        return json_error(StatusCode::CONFLICT, "name_in_use", "this name has a session already");
    }
    tracing::info!(%name, "login");
    json(StatusCode::OK, &serde_json::json!({ "token": chat.tokens.issue(&name) }))
}
// ANCHOR_END: login

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": code, "message": message }))
}

// ANCHOR: tls
/// TLS from PEM files: the certificate chain and the private key; HTTP/1.1 only (a WebSocket
/// upgrade is an HTTP/1.1 request).
fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{cert}: {err}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| format!("{key}: {err}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
// ANCHOR_END: tls

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on each accepted connection (over TLS when given; with upgrades, which
/// palisade takes over), telling the router the peer's address.
async fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let Some(tls) = tls.clone() else {
            tokio::spawn(serve_http(tcp, peer, app));
            continue;
        };
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(stream, peer, app).await,
                Ok(Err(err)) => tracing::info!(%peer, %err, "TLS handshake failed"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// One HTTP/1.1 connection, plain or TLS.
async fn serve_http<S>(io: S, peer: SocketAddr, app: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(request).await.into_response()) }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(err) = http.await {
        tracing::debug!(%peer, %err, "HTTP connection ended with an error");
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
