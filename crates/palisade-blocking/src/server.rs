//! The blocking server side: the opening handshake on an accepted stream, its policies
//! (origin allow-list, subprotocols, head limits, a deadline), and the refusals palisade's
//! server sends, written as the same complete HTTP responses.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Response};
use palisade_error::{Error, HandshakeError, NegotiationError, TimeoutPhase};
use palisade_proto::Role;
use palisade_proto::connection::Connection;
use palisade_proto::deflate::{Deflate, DeflateConfig};
use palisade_proto::handshake::{
    AcceptOptions, HeadLimits, OriginPolicy, UpgradeRequest, rejection, write_response,
};

use crate::config::Config;
use crate::head::{read_head, write_all};
use crate::socket::{Handshake, WebSocket};
use crate::transport::Transport;

/// How long a refusal may take to write and to drain what the client still sends.
const REFUSAL_LIMIT: Duration = Duration::from_secs(1);
/// How much of a refused client's request is read, at most, before closing.
const REFUSAL_DRAIN: usize = 64 * 1024;

/// The server's side of the opening handshake: settings, reusable for every accepted stream.
///
/// ```no_run
/// use std::net::TcpListener;
/// use palisade_blocking::{Acceptor, OriginPolicy};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let acceptor = Acceptor::new()
///     .with_subprotocols(["chat.v1"])
///     .with_origins(OriginPolicy::new(["https://app.example"]));
/// let listener = TcpListener::bind("127.0.0.1:9001")?;
/// for stream in listener.incoming() {
///     let acceptor = acceptor.clone();
///     let stream = stream?;
///     std::thread::spawn(move || {
///         let Ok(mut ws) = acceptor.accept(stream) else { return };
///         while let Ok(message) = ws.recv() {
///             if ws.send(message).is_err() {
///                 break;
///             }
///         }
///     });
/// }
/// # Ok(()) }
/// ```
///
/// Defaults: a 10 s handshake timeout, [`HeadLimits::default`], no subprotocol, any origin,
/// no compression, [`Config::default`]: the same as palisade's tokio server.
#[derive(Clone, Debug)]
pub struct Acceptor {
    handshake_timeout: Duration,
    head_limits: HeadLimits,
    subprotocols: Vec<String>,
    require_subprotocol: bool,
    origins: Option<OriginPolicy>,
    compression: Option<DeflateConfig>,
    config: Config,
}

impl Default for Acceptor {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            head_limits: HeadLimits::default(),
            subprotocols: Vec::new(),
            require_subprotocol: false,
            origins: None,
            compression: None,
            config: Config::default(),
        }
    }
}

impl Acceptor {
    /// An acceptor with the defaults listed on the type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the deadline for the whole opening handshake: reading the request (the slowloris
    /// defence) and writing the 101. Crossing it answers 408. Default 10 s.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the limits on the request head; crossing one answers 414 or 431.
    pub fn with_head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// The subprotocols this server speaks, in order of preference: the first that the client
    /// offers is chosen (RFC 6455 §4.2.2).
    pub fn with_subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses clients that offer none of [`Acceptor::with_subprotocols`] (400, with
    /// [`NegotiationError::NoCommonSubprotocol`]) instead of accepting them without one.
    pub fn with_subprotocol_required(mut self, required: bool) -> Self {
        self.require_subprotocol = required;
        self
    }

    /// Accepts only the origins `policy` allows (403 otherwise): the defence against
    /// cross-site WebSocket hijacking (RFC 6455 §10.2). Default: any origin.
    pub fn with_origins(mut self, policy: OriginPolicy) -> Self {
        self.origins = Some(policy);
        self
    }

    /// Accepts permessage-deflate (RFC 7692) from clients that offer it, with `config`'s
    /// parameters. Off by default.
    pub fn with_compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
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

    /// Sets how long to wait for the client's side of the close handshake.
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config = self.config.with_close_timeout(timeout);
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the opening handshake on `stream`, a connection just accepted (a `TcpStream`, or a
    /// rustls `StreamOwned` whose TLS handshake runs within the same deadline).
    ///
    /// # Errors
    ///
    /// Every refusal is answered with the complete response palisade's server sends (status,
    /// `Content-Length`, `Connection: close`, a generic body; 426 with `Upgrade` and
    /// `Sec-WebSocket-Version`), the stream is closed, and the error is returned: bad method
    /// (405), not an upgrade (426), bad key or version (400/426), head over a limit (414/431),
    /// origin not allowed (403), no common subprotocol when one is required (400), the
    /// handshake timeout (408). A transport failure or EOF is returned without an answer.
    pub fn accept<S: Transport + 'static>(&self, stream: S) -> Result<WebSocket, Error> {
        let mut io: Box<dyn Transport> = Box::new(stream);
        // Pongs, close replies and small messages go out at once; a socket that refuses the
        // option still works.
        let _ = io.set_nodelay();
        let deadline = Instant::now() + self.handshake_timeout;
        match self.handshake(&mut *io, deadline) {
            Ok((response, conn, leftover, agreed)) => {
                let mut out = Vec::with_capacity(256);
                write_response(&response, &[], &mut out);
                write_all(&mut *io, &out, Some(deadline), TimeoutPhase::Handshake)?;
                WebSocket::new(io, conn, &self.config, &leftover, agreed)
            }
            Err(err) => {
                if err.category() != palisade_error::Category::Transport {
                    refuse(&mut *io, &err);
                }
                Err(err)
            }
        }
    }

    /// Reads and judges the request; returns the 101 response and the connection to open.
    fn handshake(
        &self,
        io: &mut dyn Transport,
        deadline: Instant,
    ) -> Result<(Response<()>, Connection, Bytes, Handshake), Error> {
        let (mut buf, head_len) =
            read_head(io, self.head_limits, Some(deadline), TimeoutPhase::Handshake)?;
        let upgrade = UpgradeRequest::parse(&buf[..head_len], &self.head_limits)?;
        let request = upgrade.request();
        if let Some(policy) = &self.origins {
            let host = request.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
            if !policy.allows_request(upgrade.origin(), host) {
                return Err(HandshakeError::InvalidOrigin {
                    origin: upgrade.origin().map(str::to_owned),
                }
                .into());
            }
        }
        let offered = upgrade.subprotocols();
        let subprotocol = self.subprotocols.iter().find(|p| offered.contains(p)).cloned();
        if subprotocol.is_none() && self.require_subprotocol {
            return Err(NegotiationError::NoCommonSubprotocol.into());
        }
        let mut options = AcceptOptions::default();
        if let Some(p) = &subprotocol {
            options = options.with_subprotocol(p.clone());
        }
        let mut compression = None;
        if let Some(deflate) = &self.compression
            && let Some(accepted) = deflate.accept(upgrade.extensions())
        {
            options = options.with_extensions(vec![accepted.response]);
            compression = Some(accepted.params);
        }
        let response = upgrade.accept(options)?;
        let mut conn = Connection::server(self.config.protocol.clone(), Instant::now());
        if let (Some(params), Some(deflate)) = (compression, &self.compression) {
            conn.set_extension(Box::new(Deflate::new(Role::Server, params, deflate)));
        }
        let leftover = buf.split_off(head_len).freeze();
        let agreed = Handshake {
            subprotocol,
            compression,
            request: Some(upgrade.into_request()),
            response: None,
        };
        Ok((response, conn, leftover, agreed))
    }
}

/// The response refusing a handshake that failed with `err`: the core's
/// [`rejection`], with the body naming the policy when one of ours refused (as palisade's
/// server does; the request's values stay out of it).
pub(crate) fn refusal(err: &Error) -> Response<Bytes> {
    let mut response = rejection(err);
    let policy = match err {
        Error::Handshake(h) if matches!(**h, HandshakeError::InvalidOrigin { .. }) => {
            Some("origin not allowed")
        }
        _ => None,
    };
    if let Some(policy) = policy {
        let status = response.status();
        let body = format!(
            "{} {}\n\nThis server did not accept the WebSocket handshake: {policy}.\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("Error"),
        );
        response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = Bytes::from(body);
    }
    response
}

/// Writes the refusal for `err` and closes, within [`REFUSAL_LIMIT`]. Closing with the request
/// still unread would make the kernel send a reset, which can destroy the response before the
/// client reads it: the rest is drained (bounded) until the client closes its side.
fn refuse(io: &mut dyn Transport, err: &Error) {
    let (parts, body) = refusal(err).into_parts();
    let mut out = Vec::with_capacity(256 + body.len());
    write_response(&Response::from_parts(parts, ()), &body, &mut out);
    let deadline = Instant::now() + REFUSAL_LIMIT;
    if write_all(io, &out, Some(deadline), TimeoutPhase::Handshake).is_err()
        || io.shutdown_write().is_err()
    {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || io.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match io.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use palisade_error::SecurityError;

    use super::*;

    #[test]
    fn origins_exact_wildcard_missing_and_same_host() {
        let p = OriginPolicy::new(["https://app.example.com", "https://*.example.org"]);
        assert!(p.allows(Some("HTTPS://APP.EXAMPLE.COM")));
        assert!(!p.allows(Some("http://app.example.com")), "the scheme counts");
        assert!(p.allows(Some("https://a.b.example.org")));
        assert!(!p.allows(Some("https://example.org")), "the bare domain is no subdomain");
        assert!(!p.allows(Some("https://evilexample.org")));
        assert!(!p.allows(Some("null")));
        assert!(p.allows(None));
        assert!(!p.clone().with_missing_allowed(false).allows(None));
        let host = Some("127.0.0.1:9000");
        assert!(!p.allows_request(Some("http://127.0.0.1:9000"), host), "off by default");
        let p = p.with_same_host_allowed(true);
        assert!(p.allows_request(Some("http://127.0.0.1:9000"), host));
        assert!(!p.allows_request(Some("http://127.0.0.1:9001"), host));
    }

    #[test]
    fn refusals_are_complete_responses_and_name_only_our_policy() {
        let origin: Error =
            HandshakeError::InvalidOrigin { origin: Some("https://evil".into()) }.into();
        let response = refusal(&origin);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = std::str::from_utf8(response.body()).unwrap();
        assert!(body.ends_with("handshake: origin not allowed.\n"), "{body}");
        assert!(!body.contains("evil"), "peer data stays out of the body");
        assert_eq!(response.headers()[CONTENT_LENGTH], body.len().to_string().as_str());
        assert_eq!(response.headers()["connection"], "close");

        let big: Error = SecurityError::TooManyHeaders { max: 3 }.into();
        assert_eq!(refusal(&big).status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let late = Error::timeout(TimeoutPhase::Handshake);
        assert_eq!(refusal(&late).status(), StatusCode::REQUEST_TIMEOUT);
        let none: Error = NegotiationError::NoCommonSubprotocol.into();
        assert_eq!(refusal(&none).status(), StatusCode::BAD_REQUEST);
    }
}
