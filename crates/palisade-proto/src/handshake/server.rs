//! The server's side of the handshake: validating an upgrade request (RFC 6455 §4.2.1) and
//! answering it, with 101 (§4.2.2) or with a refusal; and the same for HTTP/2's extended
//! CONNECT (RFC 8441 §4–5), answered with 200.

use std::fmt;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use palisade_error::{
    Error, HandshakeError, InvalidHeader, InvalidMessage, NegotiationError, redact,
};

use super::head::{HeadLimits, parse_request};
use super::headers::{
    ExtensionOffer, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, format_extensions,
    header_str, parse_extensions, parse_subprotocols, require_token, single,
};
use super::key::{Key, SEC_WEBSOCKET_KEY};
use super::wire::{RedactedHeaders, RedactedList};
use super::{VERSION, bounded};

/// A request that is a valid WebSocket upgrade (RFC 6455 §4.2.1), with what it asks for.
///
/// Build it with [`UpgradeRequest::parse`] from the head bytes, or with
/// [`UpgradeRequest::from_request`] from a request parsed elsewhere. Then apply policy (origin,
/// authentication, subprotocol choice) and answer with [`UpgradeRequest::accept`], or with
/// [`rejection`] for an error.
///
/// `Debug` redacts credentials: `Authorization`, cookies, the query string and the offered
/// subprotocols.
#[derive(Clone)]
pub struct UpgradeRequest {
    request: Request<()>,
    /// `None` for an extended CONNECT, which has no key (RFC 8441 §5).
    key: Option<Key>,
    subprotocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    origin: Option<String>,
}

impl UpgradeRequest {
    /// Parses the head at the start of `buf` (see [`parse_request`]) and validates it as an
    /// upgrade ([`UpgradeRequest::from_request`]).
    ///
    /// # Errors
    ///
    /// Those of [`parse_request`] and of [`UpgradeRequest::from_request`].
    pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Self, Error> {
        Self::from_request(parse_request(buf, limits)?)
    }

    /// Validates `request` as a WebSocket upgrade, checking in this order:
    ///
    /// | rule | error | status |
    /// |---|---|---|
    /// | HTTP/1.1 (RFC 6455 §4.1) | [`InvalidMessage::UnsupportedHttpVersion`] for 1.0, [`InvalidMessage::Unexpected`] for others | 505, 400 |
    /// | method `GET` (§4.1) | [`InvalidMessage::MethodNotAllowed`] | 405 |
    /// | no body: no `Transfer-Encoding`, `Content-Length` absent or 0 | [`InvalidMessage::Unexpected`] | 400 |
    /// | `Upgrade` lists `websocket` (§4.2.1 item 3) | [`HandshakeError::InvalidUpgrade`] | 426 |
    /// | `Connection` lists `upgrade` (§4.2.1 item 4) | [`HandshakeError::InvalidUpgrade`] | 426 |
    /// | `Sec-WebSocket-Version` is `13` (§4.2.1 item 6) | [`HandshakeError::UnsupportedVersion`] | 426 |
    /// | … and appears once | [`InvalidHeader`] duplicate | 400 |
    /// | `Host` present, once, a valid `host[:port]` (§4.2.1 item 2, RFC 7230 §5.4) | [`InvalidHeader`] missing, duplicate, bad format or value | 400 |
    /// | `Sec-WebSocket-Key` once, base64 of 16 bytes (§4.2.1 item 5) | [`InvalidHeader`] missing, duplicate, bad format or value | 400 |
    /// | `Origin` at most once (RFC 6454 §7.3) | [`InvalidHeader`] duplicate, bad format | 400 |
    /// | `Sec-WebSocket-Protocol` lists tokens (§4.2.1 item 8) | [`InvalidHeader`] bad format | 400 |
    /// | `Sec-WebSocket-Extensions` parses (§4.2.1 item 9, §9.1) | see [`parse_extensions`] | 400 |
    ///
    /// A request whose extensions hold an [`ExtendedConnect`] is HTTP/2's form of the
    /// handshake (RFC 8441) and is validated as such instead (see [`ExtendedConnect`]).
    ///
    /// `Upgrade` and `Connection` are comma-separated lists compared without regard to case;
    /// they, `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` may be split over several
    /// header lines. Whether the origin is allowed is the caller's policy
    /// ([`HandshakeError::InvalidOrigin`], 403).
    ///
    /// # Errors
    ///
    /// As in the table.
    pub fn from_request(request: Request<()>) -> Result<Self, Error> {
        if let Some(connect) = request.extensions().get::<ExtendedConnect>() {
            let protocol = connect.protocol.clone();
            return Self::from_extended_connect(request, &protocol);
        }
        match request.version() {
            Version::HTTP_11 => {}
            Version::HTTP_10 => {
                return Err(InvalidMessage::UnsupportedHttpVersion { minor: 0 }.into());
            }
            _ => {
                return Err(InvalidMessage::Unexpected { reason: "not an HTTP/1.1 request" }.into());
            }
        }
        if request.method() != Method::GET {
            return Err(InvalidMessage::MethodNotAllowed {
                method: bounded(request.method().as_str().as_bytes(), 16),
            }
            .into());
        }
        let headers = request.headers();
        // The bytes after the head are WebSocket frames; a body would be read as frames
        // (or hide a smuggled request), so refuse any.
        if headers.contains_key(header::TRANSFER_ENCODING)
            || headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0")
        {
            return Err(InvalidMessage::Unexpected { reason: "a request body" }.into());
        }
        require_token(headers, header::UPGRADE, "upgrade", "websocket")?;
        require_token(headers, header::CONNECTION, "connection", "upgrade")?;

        match single(headers, header::SEC_WEBSOCKET_VERSION, "sec-websocket-version")? {
            Some(v) if v.as_bytes() == VERSION.as_bytes() => {}
            other => {
                return Err(HandshakeError::UnsupportedVersion {
                    version: other.map(|v| bounded(v.as_bytes(), 128)),
                }
                .into());
            }
        }

        let host =
            single(headers, header::HOST, "host")?.ok_or_else(|| InvalidHeader::missing("host"))?;
        validate_host(header_str("host", host)?)?;

        let key = single(headers, header::SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_KEY)?
            .ok_or_else(|| InvalidHeader::missing(SEC_WEBSOCKET_KEY))?;
        let key = Key::parse(header_str(SEC_WEBSOCKET_KEY, key)?)?;
        Self::with_offers(request, Some(key))
    }

    /// Validates an HTTP/2 (or HTTP/3) extended CONNECT request (RFC 8441 §4, RFC 9220), which
    /// the HTTP server marked with [`ExtendedConnect`]. The pseudo-headers are the request's
    /// method and URI (`:authority` its authority); the rest is RFC 6455's, less what belongs
    /// to HTTP/1.1's upgrade (RFC 8441 §5: no `Upgrade`, `Connection`, `Sec-WebSocket-Key`):
    ///
    /// | rule | error | status |
    /// |---|---|---|
    /// | method `CONNECT` (RFC 8441 §4) | [`InvalidMessage::MethodNotAllowed`] | 405 |
    /// | `:protocol` is `websocket` (§4) | [`HandshakeError::InvalidUpgrade`] naming `:protocol` | 426 |
    /// | no body before the tunnel: `Content-Length` absent or 0 | [`InvalidMessage::Unexpected`] | 400 |
    /// | `Sec-WebSocket-Version` is `13`, once (§5) | as for HTTP/1.1 | 426, 400 |
    /// | `:authority` present, a valid `host[:port]` (§4) | [`InvalidHeader`] for `host` | 400 |
    /// | `Origin`, `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions` | as for HTTP/1.1 | 400 |
    fn from_extended_connect(request: Request<()>, protocol: &str) -> Result<Self, Error> {
        if request.method() != Method::CONNECT {
            return Err(InvalidMessage::MethodNotAllowed {
                method: bounded(request.method().as_str().as_bytes(), 16),
            }
            .into());
        }
        // RFC 8441 §4: the `:protocol` of a WebSocket is the token `websocket`, the same
        // value as HTTP/1.1's `Upgrade` (compared the same way).
        if !protocol.eq_ignore_ascii_case("websocket") {
            return Err(HandshakeError::InvalidUpgrade {
                header: ":protocol",
                value: Some(bounded(protocol.as_bytes(), 128)),
            }
            .into());
        }
        let headers = request.headers();
        if headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0") {
            return Err(InvalidMessage::Unexpected { reason: "a request body" }.into());
        }
        match single(headers, header::SEC_WEBSOCKET_VERSION, "sec-websocket-version")? {
            Some(v) if v.as_bytes() == VERSION.as_bytes() => {}
            other => {
                return Err(HandshakeError::UnsupportedVersion {
                    version: other.map(|v| bounded(v.as_bytes(), 128)),
                }
                .into());
            }
        }
        let authority = request.uri().authority().map(|a| a.as_str());
        validate_host(authority.ok_or_else(|| InvalidHeader::missing("host"))?)?;
        Self::with_offers(request, None)
    }

    /// The origin and what the client offers, read from `request`'s headers.
    fn with_offers(request: Request<()>, key: Option<Key>) -> Result<Self, Error> {
        let headers = request.headers();
        let origin = match single(headers, header::ORIGIN, "origin")? {
            Some(v) => Some(header_str("origin", v)?.to_owned()),
            None => None,
        };

        let mut subprotocols = Vec::new();
        for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
            subprotocols.extend(parse_subprotocols(header_str(SEC_WEBSOCKET_PROTOCOL, value)?)?);
        }
        let mut extensions = Vec::new();
        for value in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
            extensions.extend(parse_extensions(header_str(SEC_WEBSOCKET_EXTENSIONS, value)?)?);
        }

        Ok(Self { request, key, subprotocols, extensions, origin })
    }

    /// Whether this is an extended CONNECT (HTTP/2, RFC 8441), answered with 200, rather than
    /// an HTTP/1.1 upgrade, answered with 101.
    pub fn is_extended_connect(&self) -> bool {
        self.key.is_none()
    }

    /// The request, with all its headers.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The request, with all its headers, consuming this.
    pub fn into_request(self) -> Request<()> {
        self.request
    }

    /// The client's key; `None` for an extended CONNECT, which has none (RFC 8441 §5).
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The subprotocols the client offers, in its order of preference (RFC 6455 §4.1 item 10).
    /// These may carry credentials: browsers can send a token no other way.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// The extensions the client offers, in its order of preference (RFC 6455 §9.1).
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The `Origin` header, if the client sent one (browsers always do; RFC 6455 §4.1 item
    /// 8, §10.2).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The 101 Switching Protocols response that completes the handshake (RFC 6455 §4.2.2):
    /// `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Accept`, the chosen
    /// subprotocol and extensions if any, then the extra headers of `options`. Serialize it
    /// with [`crate::handshake::write_response`] and an empty body.
    ///
    /// # Errors
    ///
    /// These are mistakes of the server's own policy, not of the peer; answer them with 500.
    ///
    /// - [`NegotiationError::UnofferedSubprotocol`]: the chosen subprotocol is not one the
    ///   client offered (RFC 6455 §4.2.2 item 5.4 allows only those).
    /// - [`NegotiationError::UnofferedExtension`]: an accepted extension was not offered.
    /// - The errors of [`format_extensions`].
    pub fn accept(&self, options: AcceptOptions) -> Result<Response<()>, Error> {
        let mut headers = HeaderMap::with_capacity(5 + options.headers.len());
        // RFC 8441 §5: an extended CONNECT is answered with 200 and none of HTTP/1.1's
        // upgrade headers; the stream itself becomes the connection.
        if let Some(key) = &self.key {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&key.accept()).expect("base64 is visible ASCII"),
            );
        }
        if let Some(protocol) = options.subprotocol {
            if !self.subprotocols.contains(&protocol) {
                return Err(NegotiationError::UnofferedSubprotocol { protocol }.into());
            }
            // Offered subprotocols were parsed as tokens, which are valid header values.
            let value = HeaderValue::from_str(&protocol)
                .map_err(|_| InvalidHeader::bad_format(SEC_WEBSOCKET_PROTOCOL, &protocol, 0))?;
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if !options.extensions.is_empty() {
            for accepted in &options.extensions {
                if !self.extensions.iter().any(|o| o.name.eq_ignore_ascii_case(&accepted.name)) {
                    return Err(NegotiationError::UnofferedExtension {
                        name: accepted.name.clone(),
                    }
                    .into());
                }
            }
            let value = format_extensions(&options.extensions)?;
            // A formatted list holds only tokens and separators, valid in a header value.
            let value = HeaderValue::from_str(&value)
                .map_err(|_| InvalidHeader::bad_format(SEC_WEBSOCKET_EXTENSIONS, &value, 0))?;
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        for (name, value) in &options.headers {
            if !RESERVED_RESPONSE_HEADERS.contains(name) {
                headers.append(name, value.clone());
            }
        }
        let mut response = Response::new(());
        *response.status_mut() = match self.key {
            Some(_) => StatusCode::SWITCHING_PROTOCOLS,
            None => StatusCode::OK,
        };
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Marks a request as an extended CONNECT (RFC 8441 §4; RFC 9220 for HTTP/3) and carries its
/// `:protocol` pseudo-header, which `http::Request` has no field for. An HTTP server that
/// parsed the request (hyper's `hyper::ext::Protocol`, h2's `h2::ext::Protocol`) puts it in the
/// request's extensions; [`UpgradeRequest::from_request`] then validates the HTTP/2 form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendedConnect {
    protocol: String,
}

impl ExtendedConnect {
    /// The mark for a request whose `:protocol` is `protocol`.
    pub fn new(protocol: impl Into<String>) -> Self {
        Self { protocol: protocol.into() }
    }

    /// The `:protocol` pseudo-header.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }
}

impl fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeRequest")
            .field("method", self.request.method())
            .field("uri", &redact::uri(&self.request.uri().to_string()))
            .field("headers", &RedactedHeaders(self.request.headers()))
            .field("key", &self.key)
            .field("subprotocols", &RedactedList(self.subprotocols.len()))
            .field("extensions", &self.extensions)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Headers of a 101 that the handshake sets itself; extra headers by these names are dropped.
const RESERVED_RESPONSE_HEADERS: &[HeaderName] = &[
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// What the server chose, for [`UpgradeRequest::accept`].
///
/// ```
/// use http::{HeaderName, HeaderValue};
/// use palisade_proto::handshake::{AcceptOptions, ExtensionOffer};
///
/// let options = AcceptOptions::default()
///     .with_subprotocol("chat")
///     .with_extensions(vec![ExtensionOffer::new("permessage-deflate")])
///     .with_header(HeaderName::from_static("x-server"), HeaderValue::from_static("palisade"));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AcceptOptions {
    /// The subprotocol chosen among those offered; none by default.
    pub subprotocol: Option<String>,
    /// The extensions accepted, with their response parameters; none by default.
    pub extensions: Vec<ExtensionOffer>,
    /// Extra headers (`Set-Cookie`, …). Those the handshake sets itself (`Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept`, `Sec-WebSocket-Protocol`,
    /// `Sec-WebSocket-Extensions`, `Content-Length`, `Transfer-Encoding`) are ignored here:
    /// use the other fields.
    pub headers: HeaderMap,
}

impl AcceptOptions {
    /// Chooses `protocol`, which must be one of [`UpgradeRequest::subprotocols`].
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// Accepts `extensions`, each named in [`UpgradeRequest::extensions`].
    pub fn with_extensions(mut self, extensions: Vec<ExtensionOffer>) -> Self {
        self.extensions = extensions;
        self
    }

    /// Adds an extra header (appended, so a name may repeat).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// The response that refuses a handshake because of `err`, with a generic body.
///
/// - Status: [`Error::status_to_send`], or 400 when it has none or it is not an error status
///   (below 300).
/// - Headers: `Content-Type: text/plain; charset=utf-8`, `Content-Length`, `Connection:
///   close`; with 426 also `Upgrade: websocket` and `Sec-WebSocket-Version: 13` (RFC 6455
///   §4.2.2, RFC 7230 §6.7); with 405 also `Allow: GET` (RFC 7231 §6.5.5).
/// - Body: the status and its reason and a fixed sentence. Nothing from the request or from
///   `err` is echoed: the details are for the server's log (`err`'s `Display`), not the peer.
///
/// Add headers before writing it if the policy calls for them (`Retry-After` with 429 or 503,
/// `WWW-Authenticate` with 401). Write it with [`crate::handshake::write_response`] and its
/// body, then close the connection.
pub fn rejection(err: &Error) -> Response<Bytes> {
    let status =
        err.status_to_send().filter(|s| s.as_u16() >= 300).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!(
        "{} {}\n\nThis server did not accept the WebSocket handshake.\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Checks a `Host` value: `uri-host [ ":" port ]` (RFC 7230 §5.4, RFC 3986 §3.2.2), which
/// admits no user-info and no whitespace. The check is on the character set only; the host
/// is not resolved or compared with anything.
fn validate_host(host: &str) -> Result<(), Error> {
    if host.is_empty() {
        return Err(InvalidHeader::bad_value("host", host, "empty").into());
    }
    let allowed = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    };
    match host.bytes().position(|b| !allowed(b)) {
        Some(pos) => Err(InvalidHeader::bad_format("host", host, pos).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use palisade_error::HeaderProblem;
    use proptest::prelude::*;

    use super::*;
    use crate::handshake::write_response;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade request, with `edit` applied to its header lines.
    fn request_with(edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
        let mut lines: Vec<String> = [
            "Host: server.example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Origin: http://example.com",
            "Sec-WebSocket-Protocol: chat, superchat",
            "Sec-WebSocket-Version: 13",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        edit(&mut lines);
        let mut out = String::from("GET /chat HTTP/1.1\r\n");
        for line in lines {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn without(name: &'static str) -> impl FnOnce(&mut Vec<String>) {
        move |lines| lines.retain(|l| !l.to_ascii_lowercase().starts_with(&format!("{name}:")))
    }

    fn with(line: &'static str) -> impl FnOnce(&mut Vec<String>) {
        move |lines| lines.push(line.to_owned())
    }

    fn replace(name: &'static str, line: &'static str) -> impl FnOnce(&mut Vec<String>) {
        move |lines| {
            without(name)(lines);
            lines.push(line.to_owned());
        }
    }

    fn parse(buf: &[u8]) -> Result<UpgradeRequest, Error> {
        UpgradeRequest::parse(buf, &HeadLimits::default())
    }

    fn handshake_error(err: Error) -> HandshakeError {
        match err {
            Error::Handshake(h) => *h,
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn header_problem(err: Error, status: u16) -> (&'static str, HeaderProblem) {
        assert_eq!(err.status_to_send().map(|s| s.as_u16()), Some(status));
        match handshake_error(err) {
            HandshakeError::InvalidHeader(h) => (h.name(), h.problem()),
            other => panic!("not a header error: {other:?}"),
        }
    }

    /// An HTTP/2 extended CONNECT as an HTTP/2 server hands it over (RFC 8441 §5's example),
    /// with `edit` applied.
    fn extended_connect(edit: impl FnOnce(&mut Request<()>)) -> Result<UpgradeRequest, Error> {
        let mut request = Request::connect("https://server.example.com/chat")
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat, superchat")
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("origin", "http://www.example.com")
            .body(())
            .unwrap();
        request.extensions_mut().insert(ExtendedConnect::new("websocket"));
        edit(&mut request);
        UpgradeRequest::from_request(request)
    }

    #[test]
    fn rfc_8441_extended_connect_is_accepted_with_200_and_no_upgrade_headers() {
        let req = extended_connect(|_| {}).unwrap();
        assert!(req.is_extended_connect());
        assert_eq!(req.key(), None);
        assert_eq!(req.subprotocols(), ["chat", "superchat"]);
        assert_eq!(req.extensions()[0].name, "permessage-deflate");
        assert_eq!(req.origin(), Some("http://www.example.com"));
        let options = AcceptOptions::default()
            .with_subprotocol("chat")
            .with_extensions(vec![ExtensionOffer::new("permessage-deflate")]);
        let response = req.accept(options).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        for absent in [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_ACCEPT] {
            assert!(!response.headers().contains_key(&absent), "{absent}");
        }
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_EXTENSIONS], "permessage-deflate");
    }

    #[test]
    fn rfc_8441_rules_have_their_statuses() {
        let status = |err: &Error| err.status_to_send().map(|s| s.as_u16());
        let wrong_protocol = extended_connect(|r| {
            r.extensions_mut().insert(ExtendedConnect::new("h2c-tunnel"));
        });
        let err = wrong_protocol.unwrap_err();
        assert_eq!(status(&err), Some(426));
        assert!(matches!(
            handshake_error(err),
            HandshakeError::InvalidUpgrade { header: ":protocol", .. }
        ));
        let not_connect = extended_connect(|r| *r.method_mut() = Method::POST).unwrap_err();
        assert_eq!(status(&not_connect), Some(405));
        let old_version = extended_connect(|r| {
            r.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("8"));
        });
        assert_eq!(status(&old_version.unwrap_err()), Some(426));
        let no_authority = extended_connect(|r| *r.uri_mut() = http::Uri::from_static("/chat"));
        let (name, problem) = header_problem(no_authority.unwrap_err(), 400);
        assert_eq!((name, problem), ("host", HeaderProblem::Missing));
        let body = extended_connect(|r| {
            r.headers_mut().insert("content-length", HeaderValue::from_static("5"));
        });
        assert_eq!(status(&body.unwrap_err()), Some(400));
        // Without the mark, a CONNECT is no upgrade at all.
        let plain = Request::connect("https://server.example.com/chat")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(status(&UpgradeRequest::from_request(plain).unwrap_err()), Some(400));
    }

    #[test]
    fn rfc_6455_section_1_3_example_is_accepted() {
        let req = parse(&request_with(|_| {})).unwrap();
        assert_eq!(req.key().map(Key::as_str), Some(KEY));
        assert_eq!(req.subprotocols(), ["chat", "superchat"]);
        assert_eq!(req.origin(), Some("http://example.com"));
        assert!(req.extensions().is_empty());
        assert_eq!(req.request().uri(), "/chat");

        let response = req.accept(AcceptOptions::default().with_subprotocol("chat")).unwrap();
        let mut out = Vec::new();
        write_response(&response, &[], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    // RFC 6455 §4.1 / §4.2.1 item 1
    #[test]
    fn http_1_0_is_505() {
        let mut buf = request_with(|_| {});
        buf[17] = b'0';
        let err = parse(&buf).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED));
        assert!(matches!(
            handshake_error(err),
            HandshakeError::InvalidMessage(InvalidMessage::UnsupportedHttpVersion { minor: 0 })
        ));
    }

    #[test]
    fn another_method_is_405_with_at_most_16_bytes_of_it() {
        let buf = request_with(|_| {});
        let post = [b"POST".as_slice(), &buf[3..]].concat();
        let err = parse(&post).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::METHOD_NOT_ALLOWED));
        assert_eq!(
            handshake_error(err).to_string(),
            "invalid HTTP message: method POST is not allowed, expected GET"
        );
        let long = [b"ABCDEFGHIJKLMNOPQRSTUVWXYZ".as_slice(), &buf[3..]].concat();
        match handshake_error(parse(&long).unwrap_err()) {
            HandshakeError::InvalidMessage(InvalidMessage::MethodNotAllowed { method }) => {
                assert_eq!(method, "ABCDEFGHIJKLMNOP")
            }
            other => panic!("{other:?}"),
        }
        // Methods are case-sensitive (RFC 7230 §3.1.1).
        let lower = [b"get".as_slice(), &buf[3..]].concat();
        assert_eq!(
            parse(&lower).unwrap_err().status_to_send(),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
    }

    #[test]
    fn a_body_is_refused() {
        for line in ["Content-Length: 5", "Transfer-Encoding: chunked"] {
            let err = parse(&request_with(|l| l.push(line.into()))).unwrap_err();
            assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST));
            assert!(
                matches!(
                    handshake_error(err),
                    HandshakeError::InvalidMessage(InvalidMessage::Unexpected { .. })
                ),
                "{line}"
            );
        }
        assert!(parse(&request_with(with("Content-Length: 0"))).is_ok());
    }

    // RFC 6455 §4.2.1 items 3 and 4
    #[test]
    fn upgrade_and_connection_missing_or_wrong_are_426() {
        for (buf, header, value) in [
            (request_with(without("upgrade")), "upgrade", None),
            (request_with(replace("upgrade", "Upgrade: h2c")), "upgrade", Some("h2c")),
            (request_with(without("connection")), "connection", None),
            (
                request_with(replace("connection", "Connection: keep-alive")),
                "connection",
                Some("keep-alive"),
            ),
            (request_with(replace("connection", "Connection:")), "connection", Some("")),
            (
                request_with(|l| {
                    without("connection")(l);
                    l.push("Connection: close".into());
                    l.push("Connection: x".into());
                }),
                "connection",
                Some("close, x"),
            ),
        ] {
            let err = parse(&buf).unwrap_err();
            assert_eq!(err.status_to_send(), Some(StatusCode::UPGRADE_REQUIRED));
            match handshake_error(err) {
                HandshakeError::InvalidUpgrade { header: h, value: v } => {
                    assert_eq!((h, v.as_deref()), (header, value));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn upgrade_and_connection_are_case_insensitive_lists_over_several_lines() {
        let buf = request_with(|l| {
            without("upgrade")(l);
            without("connection")(l);
            l.push("UPGRADE: h2c".into());
            l.push("upgrade:  WebSocket ".into());
            l.push("connection: keep-alive".into());
            l.push("CONNECTION: foo,UPGRADE".into());
        });
        assert!(parse(&buf).is_ok());
        let buf = request_with(replace("connection", "Connection: keep-alive, Upgrade"));
        assert!(parse(&buf).is_ok());
    }

    // RFC 6455 §4.2.1 item 6, §4.2.2 item 4
    #[test]
    fn version_other_than_13_is_426() {
        for (buf, version) in [
            (request_with(without("sec-websocket-version")), None),
            (request_with(replace("sec-websocket-version", "Sec-WebSocket-Version: 8")), Some("8")),
            (
                request_with(replace("sec-websocket-version", "Sec-WebSocket-Version: 13, 8")),
                Some("13, 8"),
            ),
        ] {
            let err = parse(&buf).unwrap_err();
            assert_eq!(err.status_to_send(), Some(StatusCode::UPGRADE_REQUIRED));
            match handshake_error(err) {
                HandshakeError::UnsupportedVersion { version: v } => {
                    assert_eq!(v.as_deref(), version)
                }
                other => panic!("{other:?}"),
            }
        }
        let err = parse(&request_with(with("Sec-WebSocket-Version: 13"))).unwrap_err();
        assert_eq!(header_problem(err, 400), ("sec-websocket-version", HeaderProblem::Duplicate));
    }

    // RFC 6455 §4.2.1 item 2, RFC 7230 §5.4
    #[test]
    fn host_must_be_present_once_and_well_formed() {
        let err = parse(&request_with(without("host"))).unwrap_err();
        assert_eq!(err.to_string(), "handshake failed: missing host header");
        assert_eq!(header_problem(err, 400), ("host", HeaderProblem::Missing));
        let err = parse(&request_with(with("Host: other.example"))).unwrap_err();
        assert_eq!(header_problem(err, 400), ("host", HeaderProblem::Duplicate));
        let err = parse(&request_with(replace("host", "Host: user@server.example"))).unwrap_err();
        assert_eq!(header_problem(err, 400), ("host", HeaderProblem::BadFormat { pos: 4 }));
        let err = parse(&request_with(replace("host", "Host:"))).unwrap_err();
        assert!(matches!(header_problem(err, 400), ("host", HeaderProblem::BadValue { .. })));
        assert!(parse(&request_with(replace("host", "Host: [::1]:8080"))).is_ok());
    }

    // RFC 6455 §4.2.1 item 5
    #[test]
    fn key_must_be_present_once_and_16_bytes_of_base64() {
        let err = parse(&request_with(without("sec-websocket-key"))).unwrap_err();
        assert_eq!(header_problem(err, 400), ("sec-websocket-key", HeaderProblem::Missing));
        let err =
            parse(&request_with(with("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="))).unwrap_err();
        assert_eq!(header_problem(err, 400), ("sec-websocket-key", HeaderProblem::Duplicate));
        let err =
            parse(&request_with(replace("sec-websocket-key", "Sec-WebSocket-Key: not base64!")))
                .unwrap_err();
        assert_eq!(
            header_problem(err, 400),
            ("sec-websocket-key", HeaderProblem::BadFormat { pos: 3 })
        );
        let err = parse(&request_with(replace("sec-websocket-key", "Sec-WebSocket-Key: AAAA")))
            .unwrap_err();
        assert!(matches!(
            header_problem(err, 400),
            ("sec-websocket-key", HeaderProblem::BadValue { .. })
        ));
    }

    #[test]
    fn origin_is_optional_but_single() {
        let req = parse(&request_with(without("origin"))).unwrap();
        assert_eq!(req.origin(), None);
        let err = parse(&request_with(with("Origin: https://evil.example"))).unwrap_err();
        assert_eq!(header_problem(err, 400), ("origin", HeaderProblem::Duplicate));
    }

    // RFC 6455 §4.2.1 items 8 and 9, §11.3.2, §11.3.4: may appear on several lines.
    #[test]
    fn subprotocols_and_extensions_are_gathered_from_every_line() {
        let req = parse(&request_with(|l| {
            l.push("Sec-WebSocket-Protocol: v3".into());
            l.push("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits".into());
            l.push("sec-websocket-extensions: x-foo, permessage-deflate".into());
        }))
        .unwrap();
        assert_eq!(req.subprotocols(), ["chat", "superchat", "v3"]);
        let names: Vec<_> = req.extensions().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["permessage-deflate", "x-foo", "permessage-deflate"]);
        assert_eq!(req.extensions()[0].param("client_max_window_bits"), Some(None));
    }

    #[test]
    fn bad_subprotocols_and_extensions_are_400() {
        let err = parse(&request_with(with("Sec-WebSocket-Protocol: a b"))).unwrap_err();
        assert_eq!(
            header_problem(err, 400),
            ("sec-websocket-protocol", HeaderProblem::BadFormat { pos: 2 })
        );
        let err = parse(&request_with(with("Sec-WebSocket-Extensions: e; a=\"x y\""))).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST));
        assert!(matches!(
            handshake_error(err),
            HandshakeError::Negotiation(NegotiationError::InvalidParameterValue { .. })
        ));
    }

    #[test]
    fn a_repeated_extension_parameter_is_left_to_the_extension() {
        // RFC 7692 §7: the server declines such an offer; the handshake itself is fine.
        let req = parse(&request_with(with("Sec-WebSocket-Extensions: e; a; a, f"))).unwrap();
        assert_eq!(req.extensions().len(), 2);
        assert_eq!(req.extensions()[0].params.len(), 2);
    }

    #[test]
    fn accept_refuses_what_was_not_offered() {
        let req =
            parse(&request_with(with("Sec-WebSocket-Extensions: permessage-deflate"))).unwrap();
        let err = req.accept(AcceptOptions::default().with_subprotocol("other")).unwrap_err();
        assert_eq!(err.status_to_send(), None);
        assert!(matches!(
            handshake_error(err),
            HandshakeError::Negotiation(NegotiationError::UnofferedSubprotocol { .. })
        ));
        let err = req
            .accept(AcceptOptions::default().with_extensions(vec![ExtensionOffer::new("x-foo")]))
            .unwrap_err();
        assert!(matches!(
            handshake_error(err),
            HandshakeError::Negotiation(NegotiationError::UnofferedExtension { .. })
        ));
        let ok = req
            .accept(AcceptOptions::default().with_extensions(vec![
                    ExtensionOffer::new("Permessage-Deflate")
                        .with_param("server_no_context_takeover", None),
                ]))
            .unwrap();
        assert_eq!(
            ok.headers()["sec-websocket-extensions"],
            "Permessage-Deflate; server_no_context_takeover"
        );
    }

    #[test]
    fn accept_adds_extra_headers_but_not_over_its_own() {
        let req = parse(&request_with(|_| {})).unwrap();
        let response = req
            .accept(
                AcceptOptions::default()
                    .with_header(header::SET_COOKIE, HeaderValue::from_static("a=1"))
                    .with_header(header::SET_COOKIE, HeaderValue::from_static("b=2"))
                    .with_header(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("forged"))
                    .with_header(header::CONNECTION, HeaderValue::from_static("close")),
            )
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers().get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(response.headers()[header::CONNECTION], "Upgrade");
        assert!(!response.headers().contains_key(header::SEC_WEBSOCKET_PROTOCOL));
    }

    fn rejection_bytes(err: &Error) -> String {
        let response = rejection(err);
        let mut out = Vec::new();
        write_response(&response, response.body(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rejection_426_names_the_version_and_upgrade() {
        let err = parse(&request_with(without("upgrade"))).unwrap_err();
        let text = rejection_bytes(&err);
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{text}");
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    }

    #[test]
    fn rejection_405_allows_get() {
        let err: Error = InvalidMessage::MethodNotAllowed { method: "POST".into() }.into();
        let text = rejection_bytes(&err);
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(!text.contains("Upgrade:"));
    }

    #[test]
    fn rejection_statuses_follow_status_to_send() {
        use palisade_error::SecurityError;
        for (err, status) in [
            (Error::from(SecurityError::RequestLineTooLong { len: 2, max: 1 }), 414),
            (SecurityError::HeadTooLarge { len: 2, max: 1 }.into(), 431),
            (InvalidMessage::UnsupportedHttpVersion { minor: 0 }.into(), 505),
            (HandshakeError::InvalidOrigin { origin: None }.into(), 403),
            (
                HandshakeError::Rejected {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    reason: "busy".into(),
                }
                .into(),
                429,
            ),
            // No status, or not an error status: 400.
            (NegotiationError::UnofferedSubprotocol { protocol: "x".into() }.into(), 400),
            (HandshakeError::Rejected { status: StatusCode::OK, reason: "?".into() }.into(), 400),
            (Error::io(std::io::Error::other("x")), 400),
        ] {
            assert_eq!(rejection(&err).status().as_u16(), status, "{err}");
        }
    }

    #[test]
    fn rejection_never_echoes_peer_data() {
        let evil = "<script>alert(1)</script>";
        let errs: [Error; 4] = [
            InvalidHeader::bad_format("origin", evil, 0).into(),
            HandshakeError::InvalidOrigin { origin: Some(evil.into()) }.into(),
            HandshakeError::Rejected { status: StatusCode::FORBIDDEN, reason: evil.into() }.into(),
            InvalidMessage::MethodNotAllowed { method: evil.into() }.into(),
        ];
        for err in errs {
            assert!(!rejection_bytes(&err).contains("script"), "{err}");
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let req = parse(&request_with(|l| {
            l.push("Authorization: Bearer s3cret".into());
            l.push("Sec-WebSocket-Protocol: token.t0k3n".into());
        }))
        .unwrap();
        let shown = format!("{req:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("t0k3n"), "{shown}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            match parse(&buf) {
                Ok(req) => { let _ = req.accept(AcceptOptions::default()); }
                Err(err) => { let _ = rejection(&err); }
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut buf = request_with(|_| {});
            let i = index.index(buf.len());
            buf[i] = byte;
            if let Err(err) = parse(&buf) {
                let _ = rejection(&err);
            }
        }
    }
}
