//! The client: settings, and the opening of one connection (transport, handshake, redirects).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use palisade_conn::{Config, WebSocket};
use palisade_error::{
    CloseCode, Error, HandshakeError, InvalidHeader, InvalidStatus, NegotiationError, TimeoutPhase,
    redact,
};
use palisade_proto::Role;
use palisade_proto::connection::{Connection, MaskSource};
use palisade_proto::deflate::{Deflate, DeflateConfig, DeflateParams};
use palisade_proto::handshake::{
    ClientHandshake, ExtensionOffer, HeadLimits, Negotiated, ResponseOutcome,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::proxy::{self, Proxy};
use crate::stream::ClientStream;
use crate::url::WsUrl;

/// The `User-Agent` sent unless another is set.
pub const DEFAULT_USER_AGENT: &str = concat!("palisade/", env!("CARGO_PKG_VERSION"));

/// Produces headers afresh for each connection attempt (a new token, not a stale one).
type HeaderFn = Arc<dyn Fn() -> HeaderMap + Send + Sync>;

/// A WebSocket client: settings, reusable for any number of connections. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use palisade_client::Client;
/// use palisade_proto::Message;
///
/// # async fn run() -> Result<(), palisade_error::Error> {
/// let client = Client::new()
///     .with_open_timeout(Some(Duration::from_secs(5)))
///     .with_subprotocols(["chat.v1"])
///     .with_origin("https://app.example");
/// let ws = client.connect("wss://example.com/chat").await?;
/// ws.send(Message::text("hello")).await?;
/// # Ok(()) }
/// ```
///
/// Defaults: open timeout 10 s; `User-Agent: palisade/<version>`; no `Origin`, no
/// subprotocol; [`Config::default`] for limits, keepalive and the close timeout (the same as the
/// server's); responses heads limited by [`HeadLimits::default`]; refusal bodies kept up to
/// 64 KiB; up to 5 redirects; proxies from the environment; webpki roots for `wss://`.
#[derive(Clone)]
pub struct Client {
    open_timeout: Option<Duration>,
    headers: HeaderMap,
    header_fn: Option<HeaderFn>,
    origin: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// A header value given as text that is not a valid header value: reported at connect.
    invalid_header: Option<(&'static str, String)>,
    subprotocols: Vec<String>,
    compression: Option<DeflateConfig>,
    require_compression: bool,
    config: Config,
    head_limits: HeadLimits,
    max_body: usize,
    max_redirects: u8,
    proxy: ProxySetting,
    #[cfg(feature = "rustls")]
    tls: crate::tls::TlsSettings,
    /// WebSocket over HTTP/2 (RFC 8441) where the server speaks it.
    #[cfg(feature = "http2")]
    http2: bool,
}

/// Where a client's proxy comes from.
#[derive(Clone, Debug, Default)]
enum ProxySetting {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read at each connection.
    #[default]
    Environment,
    /// No proxy, whatever the environment says.
    Off,
    /// This proxy for every connection.
    Use(Proxy),
}

impl Default for Client {
    fn default() -> Self {
        Self {
            open_timeout: Some(Duration::from_secs(10)),
            headers: HeaderMap::new(),
            header_fn: None,
            origin: None,
            user_agent: Some(HeaderValue::from_static(DEFAULT_USER_AGENT)),
            invalid_header: None,
            subprotocols: Vec::new(),
            compression: None,
            require_compression: false,
            config: Config::default(),
            head_limits: HeadLimits::default(),
            max_body: 64 * 1024,
            max_redirects: 5,
            proxy: ProxySetting::default(),
            #[cfg(feature = "rustls")]
            tls: crate::tls::TlsSettings::default(),
            #[cfg(feature = "http2")]
            http2: false,
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    redact::header_value(k.as_str(), &String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect();
        let mut d = f.debug_struct("Client");
        d.field("open_timeout", &self.open_timeout)
            .field("headers", &headers)
            .field("header_fn", &self.header_fn.is_some())
            .field("origin", &self.origin)
            .field("user_agent", &self.user_agent)
            .field("subprotocols", &self.subprotocols.len())
            .field("config", &self.config)
            .field("head_limits", &self.head_limits)
            .field("max_body", &self.max_body)
            .field("max_redirects", &self.max_redirects)
            .field("proxy", &self.proxy);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

impl Client {
    /// A client with the defaults listed on the type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the deadline for opening a connection: DNS, TCP, proxy, TLS, the handshake and
    /// every redirect together. `None` waits forever. Default 10 s. Crossing it fails with
    /// [`Error::Timeout`] (retryable), whose [`TimeoutPhase`] says the step the time ran out in:
    /// `Connect`, `Tls` or `Response`.
    pub fn with_open_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Adds a header to every handshake request (appended, so a name may repeat; `Host`
    /// replaces the one derived from the URL). Headers the handshake sets itself (`Upgrade`,
    /// `Connection`, `Sec-WebSocket-*`, `Content-Length`, `Transfer-Encoding`) fail the
    /// connection with [`HandshakeError::InvalidHeader`].
    ///
    /// Credential headers (`Authorization`, `Cookie` …) are never logged, and are not sent on
    /// after a redirect to another origin.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets a function called before each connection attempt (reconnections included) whose
    /// headers are added to the request, replacing those of [`Client::with_header`] with the
    /// same name: for a token that must be fresh.
    pub fn with_headers_fn(mut self, f: impl Fn() -> HeaderMap + Send + Sync + 'static) -> Self {
        self.header_fn = Some(Arc::new(f));
        self
    }

    /// Sets the `Origin` header (servers check it against cross-site WebSocket hijacking).
    /// A value that is not a valid header value fails each connection with
    /// [`HandshakeError::InvalidHeader`].
    pub fn with_origin(mut self, origin: &str) -> Self {
        match HeaderValue::from_str(origin) {
            Ok(v) => self.origin = Some(v),
            Err(_) => self.invalid_header = Some(("origin", origin.to_owned())),
        }
        self
    }

    /// Sets the `User-Agent` header, or removes it with `None`. Default
    /// [`DEFAULT_USER_AGENT`].
    pub fn with_user_agent(mut self, user_agent: Option<&str>) -> Self {
        match user_agent.map(HeaderValue::from_str) {
            None => self.user_agent = None,
            Some(Ok(v)) => self.user_agent = Some(v),
            Some(Err(_)) => {
                self.invalid_header =
                    Some(("user-agent", user_agent.unwrap_or_default().to_owned()))
            }
        }
        self
    }

    /// Offers these subprotocols, in order of preference (RFC 6455 §4.1). The one the server
    /// picks is [`Connected::subprotocol`]; one it picks that was not offered fails the
    /// connection with [`palisade_error::NegotiationError::UnofferedSubprotocol`].
    pub fn with_subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Offers permessage-deflate (RFC 7692) with `config`'s parameters. A server that declines
    /// gives an uncompressed connection; an answer that breaks the offer fails the handshake
    /// with the [`palisade_error::NegotiationError`] naming the parameter. The agreed
    /// parameters are [`Connected::compression`]. Inflated messages are held to the
    /// connection's `max_message_size` (a decompression bomb fails with 1009). Off by default.
    pub fn with_compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self
    }

    /// Offers permessage-deflate as [`Client::with_compression`] does, and refuses a server
    /// that declines it: the connection is closed with 1010 (RFC 6455 §7.4.1, "mandatory
    /// extension") and connecting fails with
    /// [`palisade_error::NegotiationError::MissingExtension`]. For links where uncompressed
    /// traffic would cost more than no connection.
    pub fn require_compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self.require_compression = true;
        self
    }

    /// Sets the connection's settings: message and frame size limits, keepalive, close
    /// timeout, write buffer, rate limits.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the largest message accepted (default 1 MiB).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.config = self.config.with_max_message_size(bytes);
        self
    }

    /// Sets the keepalive ping interval and pong timeout (`None` disables either).
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.config = self.config.with_keepalive(interval, timeout);
        self
    }

    /// Sets how long to wait for the server's side of the close handshake.
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config = self.config.with_close_timeout(timeout);
        self
    }

    /// Sets the limits on the server's response head; crossing one fails with
    /// [`HandshakeError::Security`].
    pub fn with_head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// Sets how much of a refusal's body is kept in [`InvalidStatus::body`] (default 64 KiB);
    /// the rest is not read.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Opens connections over HTTP/2 (RFC 8441's extended CONNECT, with the `h2` crate) where
    /// the server speaks it (default off: HTTP/1.1, RFC 6455). `wss://` offers `h2` and
    /// `http/1.1` by ALPN and goes on with whichever the server picks; `ws://` speaks HTTP/2
    /// with prior knowledge (RFC 9113 §3.3), so only to servers known to. An HTTP/2 server that
    /// does not enable extended CONNECT (`SETTINGS_ENABLE_CONNECT_PROTOCOL`) fails the open
    /// with [`palisade_error::InvalidMessage::Unexpected`]. One TCP connection per WebSocket:
    /// streams are not shared between connections. Redirects are followed as over HTTP/1.1.
    #[cfg(feature = "http2")]
    pub fn with_http2(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }

    /// Sets how many redirects (301, 302, 303, 307, 308) are followed (default 5). One more
    /// fails with [`HandshakeError::TooManyRedirects`]; with 0, a redirect is reported as the
    /// [`InvalidStatus`] it is.
    pub fn with_max_redirects(mut self, max: u8) -> Self {
        self.max_redirects = max;
        self
    }

    /// Connects through `proxy`, whatever the environment says.
    pub fn with_proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxySetting::Use(proxy);
        self
    }

    /// Connects directly, whatever the environment says.
    pub fn without_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Off;
        self
    }

    /// Takes the proxy from the environment at each connection (the default): for `wss://`
    /// `https_proxy`/`HTTPS_PROXY`, for `ws://` `http_proxy`/`HTTP_PROXY`, then
    /// `all_proxy`/`ALL_PROXY`; hosts listed in `no_proxy`/`NO_PROXY` (names, domain
    /// suffixes, IPs, CIDR blocks, `*`) and loopback hosts are reached directly.
    pub fn with_proxy_from_env(mut self) -> Self {
        self.proxy = ProxySetting::Environment;
        self
    }

    /// Chooses the root certificates trusted for `wss://` (default [`crate::TlsRoots::WebPki`]).
    #[cfg(feature = "rustls")]
    pub fn with_tls_roots(mut self, roots: crate::TlsRoots) -> Self {
        self.tls.set_roots(roots);
        self
    }

    /// Trusts `cert` (a private CA, DER) in addition to the roots.
    #[cfg(feature = "rustls")]
    pub fn with_root_certificate(
        mut self,
        cert: rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        self.tls.add_root(cert);
        self
    }

    /// Trusts the certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks) in addition
    /// to the roots.
    ///
    /// # Errors
    ///
    /// [`TransportError::Tls`](palisade_error::TransportError::Tls) if a block does not parse.
    #[cfg(feature = "rustls")]
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.tls.add_roots_pem(pem)?;
        Ok(self)
    }

    /// Uses this rustls configuration for `wss://` as it is (roots, client certificates,
    /// ALPN), instead of building one.
    #[cfg(feature = "rustls")]
    pub fn with_tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls.set_config(config);
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Opens a connection to `url` (`ws://` or `wss://`).
    ///
    /// # Errors
    ///
    /// Each failure is its own variant:
    ///
    /// | failure | error | retryable |
    /// |---|---|---|
    /// | bad scheme, host, port, fragment (before any I/O) | [`Error::InvalidUri`] | no |
    /// | DNS, refused, reset, EOF before an answer | [`Error::Transport`] | yes |
    /// | deadline ([`Client::with_open_timeout`]) | [`Error::Timeout`] | yes |
    /// | proxy refused, or not speaking its protocol | [`Error::Proxy`] | 5xx/429 only |
    /// | certificate expired, unknown issuer, wrong host | [`SecurityError::Certificate`](palisade_error::SecurityError::Certificate) | no |
    /// | other TLS failure | [`TransportError::Tls`](palisade_error::TransportError::Tls) | no |
    /// | answer other than 101 | [`HandshakeError::InvalidStatus`] with status, headers, body | 408, 429, 5xx |
    /// | redirect `wss` → `ws` | [`SecurityError::InsecureRedirect`](palisade_error::SecurityError::InsecureRedirect) | no |
    /// | too many redirects | [`HandshakeError::TooManyRedirects`] | no |
    /// | missing `Upgrade`/`Connection` | [`HandshakeError::InvalidUpgrade`] | no |
    /// | wrong or missing `Sec-WebSocket-Accept` | [`HandshakeError::InvalidHeader`] | no |
    /// | subprotocol or extension not offered | [`HandshakeError::Negotiation`] | no |
    /// | response head over a limit | [`HandshakeError::Security`] | no |
    /// | response not HTTP/1.1, or cut short | [`HandshakeError::InvalidMessage`] | no |
    pub async fn connect(&self, url: &str) -> Result<Connected, Error> {
        let url = WsUrl::parse(url)?;
        self.connect_url(url).await
    }

    pub(crate) async fn connect_url(&self, url: WsUrl) -> Result<Connected, Error> {
        let headers = self.request_headers(&url)?;
        let deadline = self.open_timeout.map(|t| Instant::now() + t);
        let step = Step::default();
        let open = self.follow_redirects(url, headers, deadline, &step);
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, open)
                .await
                .map_err(|_| Error::timeout(step.phase()))?,
            None => open.await,
        }
    }

    /// The headers for one attempt: fixed ones, then fresh ones, then the defaults not set.
    fn request_headers(&self, url: &WsUrl) -> Result<HeaderMap, Error> {
        if let Some((name, value)) = &self.invalid_header {
            let pos = value.bytes().position(|b| b < 0x20 && b != b'\t' || b == 0x7f).unwrap_or(0);
            return Err(InvalidHeader::bad_format(name, value, pos).into());
        }
        let mut headers = self.headers.clone();
        if let Some(f) = &self.header_fn {
            headers.extend(f());
        }
        if let Some(origin) = &self.origin {
            headers.entry(header::ORIGIN).or_insert_with(|| origin.clone());
        }
        if let Some(ua) = &self.user_agent {
            headers.entry(header::USER_AGENT).or_insert_with(|| ua.clone());
        }
        // User-info in the URL is HTTP basic authentication (as Python websockets reads it);
        // it is never sent in the request line.
        if let Some((user, password)) = url.credentials()
            && !headers.contains_key(header::AUTHORIZATION)
        {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let value = HeaderValue::try_from(format!("Basic {token}"))
                .expect("base64 after an ASCII prefix is a valid header value");
            headers.insert(header::AUTHORIZATION, value);
        }
        Ok(headers)
    }

    async fn follow_redirects(
        &self,
        mut url: WsUrl,
        mut headers: HeaderMap,
        deadline: Option<Instant>,
        step: &Step,
    ) -> Result<Connected, Error> {
        let mut redirects = 0u8;
        loop {
            let follow = self.max_redirects > 0;
            match self.open_once(&url, &headers, follow, deadline, step).await? {
                Opened::Open(mut connected) => {
                    connected.url = url;
                    connected.redirects = redirects;
                    return Ok(*connected);
                }
                Opened::Redirect(location) => {
                    if redirects >= self.max_redirects {
                        return Err(
                            HandshakeError::TooManyRedirects { max: self.max_redirects }.into()
                        );
                    }
                    redirects += 1;
                    let next = url.redirect(&location)?;
                    if !next.same_origin(&url) {
                        // Credentials were meant for the origin they were set for.
                        let sensitive: Vec<HeaderName> = headers
                            .keys()
                            .filter(|k| redact::is_sensitive_header(k.as_str()))
                            .cloned()
                            .collect();
                        for name in sensitive {
                            headers.remove(name);
                        }
                    }
                    tracing::debug!(from = %url, to = %next, redirects, "following redirect");
                    url = next;
                }
            }
        }
    }

    /// The transport to `url`: TCP (directly or through a proxy), then TLS for `wss://`.
    async fn transport(&self, url: &WsUrl, step: &Step) -> Result<ClientStream, Error> {
        step.set(TimeoutPhase::Connect);
        let proxy = match &self.proxy {
            ProxySetting::Off => None,
            ProxySetting::Use(p) => Some(p.clone()),
            ProxySetting::Environment if is_loopback(url.host()) => None,
            ProxySetting::Environment => proxy::from_env(url, |name| std::env::var(name).ok())?,
        };
        let tcp = match &proxy {
            Some(p) => proxy::tunnel(p, url.host(), url.port()).await?,
            None => proxy::tcp_connect(url.host(), url.port()).await?,
        };
        if !url.is_secure() {
            return Ok(ClientStream::plain(tcp));
        }
        #[cfg(feature = "rustls")]
        {
            step.set(TimeoutPhase::Tls);
            #[cfg(feature = "http2")]
            let h2 = self.http2;
            #[cfg(not(feature = "http2"))]
            let h2 = false;
            crate::tls::connect(&self.tls, url.host(), tcp, h2).await
        }
        #[cfg(not(feature = "rustls"))]
        {
            drop(tcp);
            Err(palisade_error::TransportError::Tls {
                message: "wss:// needs palisade-client's `rustls` feature".to_owned(),
                source: None,
            }
            .into())
        }
    }

    /// One handshake on a new transport.
    async fn open_once(
        &self,
        url: &WsUrl,
        headers: &HeaderMap,
        follow_redirects: bool,
        deadline: Option<Instant>,
        step: &Step,
    ) -> Result<Opened, Error> {
        tracing::debug!(url = %url, "connecting");
        let mut io = self.transport(url, step).await?;

        let mut rng = StdRng::from_rng(&mut rand::rng());
        #[cfg(feature = "http2")]
        if self.http2 && (!io.is_tls() || io.is_h2()) {
            step.set(TimeoutPhase::Response);
            let handshake = self.offers(ClientHandshake::extended_connect(url.uri())?, headers)?;
            return crate::http2::open(self, url, io, handshake, rng, follow_redirects, deadline)
                .await;
        }
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let handshake = self.offers(ClientHandshake::new(url.uri(), key)?, headers)?;
        let mut request = Vec::with_capacity(512);
        handshake.write_request(&mut request);
        step.set(TimeoutPhase::Response);
        io.write_all(&request).await?;
        io.flush().await?;

        let (mut buf, head_len) = palisade_conn::read_head(&mut io, self.head_limits).await?;
        match handshake.read_response(&buf, &self.head_limits)? {
            ResponseOutcome::Upgraded(negotiated) => {
                let leftover = buf.split_off(head_len);
                let tls = io.is_tls();
                self.opened(url, io, negotiated, rng, &leftover, tls).await
            }
            ResponseOutcome::NotUpgraded(response) => {
                let status = response.status();
                if follow_redirects
                    && is_redirect(status)
                    && let Some(location) = response.headers().get(header::LOCATION)
                {
                    return redirect_to(location);
                }
                let mut body = Vec::new();
                let after_head = buf.split_off(head_len);
                let read = crate::body::read(
                    &mut io,
                    status,
                    response.headers(),
                    after_head,
                    self.max_body,
                    &mut body,
                );
                // The refusal matters more than its body: stop reading at the open deadline
                // and report what arrived (this inner deadline wins over the outer one, which
                // is polled after it).
                match deadline {
                    Some(deadline) => {
                        let _ = tokio::time::timeout_at(deadline, read).await;
                    }
                    None => read.await,
                }
                tracing::debug!(url = %url, %status, "server refused the upgrade");
                Err(InvalidStatus::new(status, response.headers(), &body, self.max_body).into())
            }
        }
    }

    /// The most of a refusal's body kept.
    #[cfg(feature = "http2")]
    pub(crate) fn max_body(&self) -> usize {
        self.max_body
    }

    /// The handshake's offers: subprotocols, compression and the request headers.
    pub(crate) fn offers(
        &self,
        mut handshake: ClientHandshake,
        headers: &HeaderMap,
    ) -> Result<ClientHandshake, Error> {
        if !self.subprotocols.is_empty() {
            handshake = handshake.with_subprotocols(self.subprotocols.iter().cloned())?;
        }
        if let Some(deflate) = &self.compression {
            handshake = handshake.with_extensions(&deflate.offer_header())?;
        }
        for (name, value) in headers {
            handshake = handshake.with_header(name.clone(), value.clone())?;
        }
        Ok(handshake)
    }

    /// The open connection over `io` once the handshake `negotiated`, HTTP/1.1's or HTTP/2's:
    /// compression checked, the core set up, the required extension enforced.
    pub(crate) async fn opened<S>(
        &self,
        url: &WsUrl,
        io: S,
        negotiated: Negotiated,
        rng: StdRng,
        leftover: &[u8],
        tls: bool,
    ) -> Result<Opened, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let compression = match &self.compression {
            Some(deflate) => deflate.check_answers(&negotiated.extensions)?,
            None => None,
        };
        let mut conn = Connection::client(
            self.config.protocol.clone(),
            RngMasks(rng),
            Instant::now().into_std(),
        );
        if let (Some(params), Some(deflate)) = (compression, &self.compression) {
            conn.set_extension(Box::new(Deflate::new(Role::Client, params, deflate)));
        }
        let socket = WebSocket::from_parts(io, conn, self.config.clone(), leftover);
        if self.require_compression && compression.is_none() {
            let name = palisade_proto::deflate::EXTENSION_NAME;
            tracing::warn!(url = %url, "the server declined {name}, which is required");
            // The handshake failed either way; how the close went changes nothing.
            let _ = socket.close(CloseCode::MANDATORY_EXTENSION, name).await;
            return Err(NegotiationError::MissingExtension { name: name.to_owned() }.into());
        }
        tracing::debug!(url = %url, "connected");
        Ok(Opened::Open(Box::new(Connected {
            socket,
            subprotocol: negotiated.subprotocol,
            extensions: negotiated.extensions,
            compression,
            response: negotiated.response,
            url: url.clone(),
            redirects: 0,
            tls,
        })))
    }
}

/// A redirect to `location`, which must be text.
fn redirect_to(location: &HeaderValue) -> Result<Opened, Error> {
    let location = location.to_str().map_err(|_| {
        InvalidHeader::bad_format("location", &String::from_utf8_lossy(location.as_bytes()), 0)
    })?;
    Ok(Opened::Redirect(location.to_owned()))
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Loopback hosts never go through an environment proxy (as Go's `ProxyFromEnvironment`).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) enum Opened {
    Open(Box<Connected>),
    Redirect(String),
}

/// Masking keys from a CSPRNG seeded for this connection (RFC 6455 §5.3: unpredictable).
struct RngMasks(StdRng);

impl MaskSource for RngMasks {
    fn next_mask(&mut self) -> [u8; 4] {
        self.0.next_u32().to_ne_bytes()
    }
}

/// An open client connection: the [`WebSocket`] (which this dereferences to) and what the
/// handshake agreed on.
pub struct Connected {
    socket: WebSocket,
    subprotocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
    compression: Option<DeflateParams>,
    response: Response<()>,
    url: WsUrl,
    redirects: u8,
    tls: bool,
}

impl Connected {
    /// The connection.
    pub fn socket(&self) -> &WebSocket {
        &self.socket
    }

    /// The connection, without the handshake's details.
    pub fn into_socket(self) -> WebSocket {
        self.socket
    }

    /// The subprotocol the server chose among those offered, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The extensions the server accepted.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The permessage-deflate parameters agreed, when [`Client::with_compression`] offered it
    /// and the server accepted.
    pub fn compression(&self) -> Option<&DeflateParams> {
        self.compression.as_ref()
    }

    /// The server's 101 response (for its headers, such as `Set-Cookie`).
    pub fn response(&self) -> &Response<()> {
        &self.response
    }

    /// The URL connected to, after redirects (it may hold credentials: log
    /// [`palisade_error::redact::uri`] of it).
    pub fn url(&self) -> &Uri {
        self.url.uri()
    }

    /// How many redirects were followed.
    pub fn redirects(&self) -> u8 {
        self.redirects
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl Deref for Connected {
    type Target = WebSocket;

    fn deref(&self) -> &Self::Target {
        &self.socket
    }
}

impl fmt::Debug for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("url", &self.url)
            .field("subprotocol", &self.subprotocol.as_ref().map(|_| redact::REDACTED))
            .field("extensions", &self.extensions)
            .field("status", &self.response.status())
            .field("redirects", &self.redirects)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_layer_fixed_fresh_and_defaults() {
        let client = Client::new()
            .with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer old"))
            .with_header(HeaderName::from_static("x-a"), HeaderValue::from_static("1"))
            .with_headers_fn(|| {
                let mut h = HeaderMap::new();
                h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer fresh"));
                h
            })
            .with_origin("https://app.example");
        let url = WsUrl::parse("ws://bob:pw@a.example/").unwrap();
        let h = client.request_headers(&url).unwrap();
        assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer fresh");
        assert_eq!(h["x-a"], "1");
        assert_eq!(h[header::ORIGIN], "https://app.example");
        assert_eq!(h[header::USER_AGENT], DEFAULT_USER_AGENT);

        let h = Client::new().with_user_agent(None).request_headers(&url).unwrap();
        assert_eq!(h[header::AUTHORIZATION], "Basic Ym9iOnB3");
        assert!(!h.contains_key(header::USER_AGENT));
    }

    #[test]
    fn invalid_header_text_is_reported_and_redacted_in_debug() {
        let url = WsUrl::parse("ws://a.example/").unwrap();
        let err = Client::new().with_origin("bad\norigin").request_headers(&url).unwrap_err();
        assert!(
            matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::InvalidHeader(_))),
            "{err:?}"
        );
        let client = Client::new()
            .with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn loopback_hosts_skip_environment_proxies() {
        for host in ["localhost", "127.0.0.1", "127.9.9.9", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        assert!(!is_loopback("example.com") && !is_loopback("10.0.0.1"));
    }
}

/// Which step of opening a connection is under way, for the open timeout's error. Shared by
/// reference with the future that the timeout cancels (an atomic: that future must be `Send`).
#[derive(Debug, Default)]
struct Step(std::sync::atomic::AtomicU8);

impl Step {
    fn set(&self, phase: TimeoutPhase) {
        let n = match phase {
            TimeoutPhase::Tls => 1,
            TimeoutPhase::Response => 2,
            _ => 0,
        };
        self.0.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn phase(&self) -> TimeoutPhase {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => TimeoutPhase::Tls,
            2 => TimeoutPhase::Response,
            _ => TimeoutPhase::Connect,
        }
    }
}
