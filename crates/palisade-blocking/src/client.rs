//! The blocking client: settings, and the opening of one connection (TCP, TLS, handshake).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use palisade_error::{CloseCode, Error, InvalidStatus, NegotiationError, TimeoutPhase};
use palisade_proto::Role;
use palisade_proto::connection::{Connection, MaskSource};
use palisade_proto::deflate::{Deflate, DeflateConfig};
use palisade_proto::handshake::{ClientHandshake, HeadLimits, ResponseOutcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::head::{read_head, remaining, write_all};
use crate::socket::{Handshake, WebSocket};
use crate::transport::{Transport, is_timeout};
use crate::url::WsUrl;

/// The `User-Agent` sent unless another is set.
pub const DEFAULT_USER_AGENT: &str = concat!("palisade/", env!("CARGO_PKG_VERSION"));

/// A blocking WebSocket client: settings, reusable for any number of connections.
///
/// ```no_run
/// use std::time::Duration;
/// use palisade_blocking::Client;
///
/// # fn run() -> Result<(), palisade_error::Error> {
/// let mut ws = Client::new()
///     .with_open_timeout(Some(Duration::from_secs(5)))
///     .with_subprotocols(["chat.v1"])
///     .connect("ws://127.0.0.1:9001/chat")?;
/// ws.send(palisade_proto::Message::text("hello"))?;
/// # Ok(()) }
/// ```
///
/// Defaults: open timeout 10 s; `User-Agent: palisade/<version>`; no subprotocol, no
/// compression; [`Config::default`] for limits, keepalive and the close timeout (the same as
/// palisade's tokio client); response heads within [`HeadLimits::default`]; refusal bodies kept
/// up to 64 KiB; webpki roots for `wss://` (feature `rustls`).
///
/// Unlike the tokio client, it follows no redirects (a 3xx is reported as the
/// [`InvalidStatus`] it is) and uses no proxy.
#[derive(Clone, Debug)]
pub struct Client {
    open_timeout: Option<Duration>,
    headers: HeaderMap,
    user_agent: Option<HeaderValue>,
    subprotocols: Vec<String>,
    compression: Option<DeflateConfig>,
    require_compression: bool,
    config: Config,
    head_limits: HeadLimits,
    max_body: usize,
    #[cfg(feature = "rustls")]
    tls: crate::tls::TlsSettings,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            open_timeout: Some(Duration::from_secs(10)),
            headers: HeaderMap::new(),
            user_agent: Some(HeaderValue::from_static(DEFAULT_USER_AGENT)),
            subprotocols: Vec::new(),
            compression: None,
            require_compression: false,
            config: Config::default(),
            head_limits: HeadLimits::default(),
            max_body: 64 * 1024,
            #[cfg(feature = "rustls")]
            tls: crate::tls::TlsSettings::default(),
        }
    }
}

impl Client {
    /// A client with the defaults listed on the type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the deadline for opening a connection: DNS, TCP, TLS and the handshake together.
    /// `None` waits for ever. Default 10 s. Crossing it fails with [`Error::Timeout`]
    /// (retryable), whose phase says the step: `Connect`, `Tls` or `Response`. (DNS itself is
    /// the system resolver's and is not bounded by it.)
    pub fn with_open_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Adds a header to every handshake request (appended; `Host` replaces the one derived
    /// from the URL). Headers the handshake sets itself (`Upgrade`, `Connection`,
    /// `Sec-WebSocket-*`) fail the connection with
    /// [`palisade_error::HandshakeError::InvalidHeader`].
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the `User-Agent` header, or removes it with `None`.
    pub fn with_user_agent(mut self, user_agent: Option<HeaderValue>) -> Self {
        self.user_agent = user_agent;
        self
    }

    /// Offers these subprotocols, in order of preference (RFC 6455 §4.1). The one the server
    /// picks is [`WebSocket::subprotocol`]; one it picks that was not offered fails the
    /// connection with [`NegotiationError::UnofferedSubprotocol`].
    pub fn with_subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Offers permessage-deflate (RFC 7692) with `config`'s parameters. A server that declines
    /// gives an uncompressed connection. Inflated messages are held to the message size limit
    /// (a decompression bomb fails with 1009). Off by default.
    pub fn with_compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self
    }

    /// Offers permessage-deflate and refuses a server that declines it: the connection is
    /// closed with 1010 and connecting fails with [`NegotiationError::MissingExtension`].
    pub fn require_compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self.require_compression = true;
        self
    }

    /// Sets the connection's settings.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the largest message accepted (default 1 MiB).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.config = self.config.with_max_message_size(bytes);
        self
    }

    /// Sets the keepalive ping interval and pong deadline (`None` disables either).
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
    /// [`palisade_error::HandshakeError::Security`].
    pub fn with_head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// Sets how much of a refusal's body is kept in [`InvalidStatus::body`] (default 64 KiB).
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Trusts `cert` (a private CA, DER) for `wss://`, in addition to the webpki roots.
    #[cfg(feature = "rustls")]
    pub fn with_root_certificate(
        mut self,
        cert: rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        self.tls.add_root(cert);
        self
    }

    /// Uses this rustls configuration for `wss://` as it is, instead of building one.
    #[cfg(feature = "rustls")]
    pub fn with_tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.set_config(config);
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Opens a connection to `url` (`ws://`, or `wss://` with the `rustls` feature).
    ///
    /// # Errors
    ///
    /// | failure | error | retryable |
    /// |---|---|---|
    /// | bad scheme, host, port, fragment (before any I/O) | [`Error::InvalidUri`] | no |
    /// | DNS, refused, reset, EOF before an answer | [`Error::Transport`] | yes |
    /// | the open timeout | [`Error::Timeout`] | yes |
    /// | certificate refused | [`palisade_error::SecurityError::Certificate`] | no |
    /// | other TLS failure | [`palisade_error::TransportError::Tls`] | no |
    /// | answer other than 101 | [`palisade_error::HandshakeError::InvalidStatus`] with status, headers, body | 408, 429, 5xx |
    /// | missing `Upgrade`, wrong `Sec-WebSocket-Accept` … | [`Error::Handshake`] | no |
    /// | subprotocol or extension not offered | [`palisade_error::HandshakeError::Negotiation`] | no |
    /// | response head over a limit | [`palisade_error::HandshakeError::Security`] | no |
    pub fn connect(&self, url: &str) -> Result<WebSocket, Error> {
        let url = WsUrl::parse(url)?;
        let deadline = self.open_timeout.map(|t| Instant::now() + t);
        let tcp = tcp_connect(&url.host, url.port, deadline)?;
        // Small frames (pongs, close replies) go out at once.
        tcp.set_nodelay(true).map_err(Error::io)?;
        let io: Box<dyn Transport> =
            if url.secure { self.tls(&url, tcp, deadline)? } else { Box::new(tcp) };
        self.handshake(&url, io, deadline)
    }

    #[cfg(feature = "rustls")]
    fn tls(
        &self,
        url: &WsUrl,
        tcp: TcpStream,
        deadline: Option<Instant>,
    ) -> Result<Box<dyn Transport>, Error> {
        crate::tls::connect(&self.tls, &url.host, tcp, deadline)
    }

    #[cfg(not(feature = "rustls"))]
    fn tls(
        &self,
        _url: &WsUrl,
        tcp: TcpStream,
        _deadline: Option<Instant>,
    ) -> Result<Box<dyn Transport>, Error> {
        drop(tcp);
        Err(palisade_error::TransportError::Tls {
            message: "wss:// needs palisade-blocking's `rustls` feature".to_owned(),
            source: None,
        }
        .into())
    }

    /// The opening handshake on a new transport.
    fn handshake(
        &self,
        url: &WsUrl,
        mut io: Box<dyn Transport>,
        deadline: Option<Instant>,
    ) -> Result<WebSocket, Error> {
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let mut handshake = ClientHandshake::new(&url.uri, key)?;
        if !self.subprotocols.is_empty() {
            handshake = handshake.with_subprotocols(self.subprotocols.iter().cloned())?;
        }
        if let Some(deflate) = &self.compression {
            handshake = handshake.with_extensions(&deflate.offer_header())?;
        }
        for (name, value) in &self.request_headers(url) {
            handshake = handshake.with_header(name.clone(), value.clone())?;
        }
        let mut request = Vec::with_capacity(512);
        handshake.write_request(&mut request);
        write_all(&mut *io, &request, deadline, TimeoutPhase::Response)?;

        let (mut buf, head_len) =
            read_head(&mut *io, self.head_limits, deadline, TimeoutPhase::Response)?;
        match handshake.read_response(&buf[..head_len], &self.head_limits)? {
            ResponseOutcome::Upgraded(negotiated) => {
                let leftover = buf.split_off(head_len);
                let compression = match &self.compression {
                    Some(deflate) => deflate.check_answers(&negotiated.extensions)?,
                    None => None,
                };
                let mut conn =
                    Connection::client(self.config.protocol.clone(), RngMasks(rng), Instant::now());
                if let (Some(params), Some(deflate)) = (compression, &self.compression) {
                    conn.set_extension(Box::new(Deflate::new(Role::Client, params, deflate)));
                }
                let agreed = Handshake {
                    subprotocol: negotiated.subprotocol,
                    compression,
                    request: None,
                    response: Some(negotiated.response),
                };
                let mut socket = WebSocket::new(io, conn, &self.config, &leftover, agreed)?;
                if self.require_compression && compression.is_none() {
                    let name = palisade_proto::deflate::EXTENSION_NAME;
                    // The handshake failed either way; how the close went changes nothing.
                    let _ = socket.close(CloseCode::MANDATORY_EXTENSION, name);
                    return Err(NegotiationError::MissingExtension { name: name.to_owned() }.into());
                }
                Ok(socket)
            }
            ResponseOutcome::NotUpgraded(response) => {
                let after_head = buf.split_off(head_len);
                let body = read_body(
                    &mut *io,
                    response.status(),
                    response.headers(),
                    &after_head,
                    self.max_body,
                    deadline,
                );
                Err(InvalidStatus::new(response.status(), response.headers(), &body, self.max_body)
                    .into())
            }
        }
    }

    /// The headers added to the request: those set, then the defaults not set, then basic
    /// authentication from the URL's user-info (never sent in the request line).
    fn request_headers(&self, url: &WsUrl) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some(ua) = &self.user_agent {
            headers.entry(header::USER_AGENT).or_insert_with(|| ua.clone());
        }
        let authority = url.uri.authority().map_or("", |a| a.as_str());
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && !headers.contains_key(header::AUTHORIZATION)
        {
            let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
            let value = HeaderValue::try_from(format!("Basic {token}"))
                .expect("base64 after an ASCII prefix is a valid header value");
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }
}

/// Opens TCP to `host:port`, trying each address in turn within `deadline`.
fn tcp_connect(host: &str, port: u16, deadline: Option<Instant>) -> Result<TcpStream, Error> {
    let addrs = (host, port).to_socket_addrs().map_err(Error::io)?;
    let mut last = None;
    for addr in addrs {
        let attempt = match remaining(deadline, TimeoutPhase::Connect)? {
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(tcp) => return Ok(tcp),
            Err(err) => last = Some(err),
        }
    }
    Err(match last {
        Some(err) if is_timeout(&err) => Error::timeout(TimeoutPhase::Connect),
        Some(err) => Error::io(err),
        None => Error::io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        )),
    })
}

/// Reads a refusal's body, keeping at most `max` bytes: as long as `Content-Length` says, or
/// until the server closes, never past `deadline`. The refusal matters more than its body, so
/// any read error ends the body where it is. A chunked body is kept as it arrived on the wire.
fn read_body(
    io: &mut dyn Transport,
    status: StatusCode,
    headers: &HeaderMap,
    already: &[u8],
    max: usize,
    deadline: Option<Instant>,
) -> Vec<u8> {
    let none = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if none {
        return Vec::new();
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let want = length.map_or(max, |len| usize::try_from(len).unwrap_or(usize::MAX).min(max));
    let mut body = already[..already.len().min(want)].to_vec();
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < want {
        let Ok(left) = remaining(deadline, TimeoutPhase::Response) else { break };
        if io.set_read_timeout(left).is_err() {
            break;
        }
        match io.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n.min(want - body.len())]),
        }
    }
    body
}

/// Masking keys from a CSPRNG seeded for this connection (RFC 6455 §5.3: unpredictable).
struct RngMasks(StdRng);

impl MaskSource for RngMasks {
    fn next_mask(&mut self) -> [u8; 4] {
        self.0.next_u32().to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_add_the_defaults_and_basic_auth_from_the_url() {
        let url = WsUrl::parse("ws://bob:pw@a.example/").unwrap();
        let h = Client::new().request_headers(&url);
        assert_eq!(h[header::AUTHORIZATION], "Basic Ym9iOnB3");
        assert_eq!(h[header::USER_AGENT], DEFAULT_USER_AGENT);
        let client = Client::new()
            .with_user_agent(None)
            .with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let h = client.request_headers(&url);
        assert_eq!(h[header::AUTHORIZATION], "Bearer t");
        assert!(!h.contains_key(header::USER_AGENT));
    }

    #[test]
    fn masks_differ_from_frame_to_frame() {
        let mut masks = RngMasks(StdRng::seed_from_u64(7));
        let keys: Vec<[u8; 4]> = (0..8).map(|_| masks.next_mask()).collect();
        assert!(keys.windows(2).any(|w| w[0] != w[1]));
    }
}
