//! The client's side of the handshake: the upgrade request (RFC 6455 §4.1) and the validation
//! of the server's answer (§4.1, "the client MUST validate the server's response").

use std::fmt;

use bytes::BufMut;
use http::header::{self, HeaderName};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use palisade_error::{
    Error, InvalidHeader, InvalidMessage, InvalidUri, NegotiationError, UriProblem, redact,
};

use super::VERSION;
use super::head::{HeadLimits, parse_response};
use super::headers::{
    ExtensionOffer, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, header_str, is_tchar,
    parse_extensions, parse_subprotocols, require_token, single,
};
use super::key::Key;
use super::server::ExtendedConnect;
use super::wire::{RedactedHeaders, RedactedList, write_request};

/// A client's opening handshake: the request to send and what the answer must match.
///
/// ```
/// use palisade_proto::handshake::{ClientHandshake, HeadLimits, ResponseOutcome};
///
/// let uri = "wss://example.com/chat?room=1".parse().unwrap();
/// let key = *b"from a real RNG!"; // the runtime draws these 16 bytes from an RNG
/// let handshake = ClientHandshake::new(&uri, key)?.with_subprotocols(["chat"])?;
/// let mut out = Vec::new();
/// handshake.write_request(&mut out);
/// assert!(out.starts_with(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n"));
///
/// let answer = format!(
///     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///      Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
///     handshake.key().expect("an HTTP/1.1 handshake has a key").accept()
/// );
/// match handshake.read_response(answer.as_bytes(), &HeadLimits::default())? {
///     ResponseOutcome::Upgraded(negotiated) => {
///         assert_eq!(negotiated.subprotocol.as_deref(), Some("chat"));
///     }
///     ResponseOutcome::NotUpgraded(response) => unreachable!("{}", response.status()),
/// }
/// # Ok::<(), palisade_proto::error::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientHandshake {
    request: Request<()>,
    /// `None` for an extended CONNECT, which has no key (RFC 8441 §5).
    key: Option<Key>,
    subprotocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
}

/// Headers the handshake sets itself, which [`ClientHandshake::with_header`] refuses.
const RESERVED_REQUEST_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];

impl ClientHandshake {
    /// The handshake for `uri` with the 16 `key` bytes, which the caller draws from an RNG
    /// (RFC 6455 §4.1 item 7: a fresh random nonce per connection).
    ///
    /// The request is `GET` with the URI's path and query as target (RFC 6455 §4.1 items 1–2),
    /// `Host` with the port only when it is not the scheme's default (§4.1 item 4; 80 for
    /// `ws`, 443 for `wss`), `Upgrade: websocket`, `Connection: Upgrade`,
    /// `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`. User-info in the URI is never sent.
    ///
    /// # Errors
    ///
    /// [`InvalidUri`] with [`UriProblem::Scheme`] if the scheme is not `ws` or `wss`,
    /// [`UriProblem::Host`] if there is no host, [`UriProblem::Port`] for port 0.
    pub fn new(uri: &Uri, key: [u8; 16]) -> Result<Self, Error> {
        let invalid = |problem| InvalidUri::new(&uri.to_string(), problem);
        let default_port = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => 80,
            Some(s) if s.eq_ignore_ascii_case("wss") => 443,
            _ => return Err(invalid(UriProblem::Scheme).into()),
        };
        let host = match uri.host() {
            Some(h) if !h.is_empty() => h,
            _ => return Err(invalid(UriProblem::Host).into()),
        };
        let host = match uri.port_u16() {
            Some(0) => return Err(invalid(UriProblem::Port).into()),
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        let target = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        let target = Uri::try_from(target).map_err(|_| invalid(UriProblem::Syntax))?;
        let host = HeaderValue::try_from(host).map_err(|_| invalid(UriProblem::Host))?;
        let key = Key::from_bytes(key);

        let mut request = Request::new(());
        *request.uri_mut() = target;
        let headers = request.headers_mut();
        headers.insert(header::HOST, host);
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(key.as_str()).expect("base64 is visible ASCII"),
        );
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        Ok(Self { request, key: Some(key), subprotocols: Vec::new(), extensions: Vec::new() })
    }

    /// The handshake for `uri` over HTTP/2 (RFC 8441 §4–5): an extended CONNECT whose
    /// `:protocol` is `websocket` ([`ExtendedConnect`] in the request's extensions, for the
    /// HTTP/2 client to send as the pseudo-header), `:scheme` `https` for `wss` and `http` for
    /// `ws`, `:authority` and `:path` from `uri` (the URI of [`ClientHandshake::request`]),
    /// and `Sec-WebSocket-Version: 13`; no key, `Upgrade` or `Connection`. The `with_*` methods
    /// apply as for HTTP/1.1; [`ClientHandshake::write_request`] does not (HTTP/2 has no text
    /// form): an HTTP/2 client sends [`ClientHandshake::request`].
    ///
    /// # Errors
    ///
    /// As for [`ClientHandshake::new`].
    pub fn extended_connect(uri: &Uri) -> Result<Self, Error> {
        let invalid = |problem| InvalidUri::new(&uri.to_string(), problem);
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => "http",
            Some(s) if s.eq_ignore_ascii_case("wss") => "https",
            _ => return Err(invalid(UriProblem::Scheme).into()),
        };
        let host = match uri.host() {
            Some(h) if !h.is_empty() => h,
            _ => return Err(invalid(UriProblem::Host).into()),
        };
        // The authority without user-info, which is never sent.
        let authority = match uri.port_u16() {
            Some(0) => return Err(invalid(UriProblem::Port).into()),
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/",
            Some(pq) => pq,
        };
        let target = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(target)
            .build()
            .map_err(|_| invalid(UriProblem::Syntax))?;
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = target;
        request.extensions_mut().insert(ExtendedConnect::new("websocket"));
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        Ok(Self { request, key: None, subprotocols: Vec::new(), extensions: Vec::new() })
    }

    /// Offers `protocols`, in order of preference (RFC 6455 §4.1 item 10), replacing any
    /// offered before. An empty list offers none.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadFormat`] if one is not a
    /// token (RFC 7230 §3.2.6); the value is redacted in the error.
    pub fn with_subprotocols<I, S>(mut self, protocols: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let protocols: Vec<String> = protocols.into_iter().map(Into::into).collect();
        for p in &protocols {
            if let Some(pos) = p.bytes().position(|b| !is_tchar(b)).or(p.is_empty().then_some(0)) {
                return Err(InvalidHeader::bad_format(SEC_WEBSOCKET_PROTOCOL, p, pos).into());
            }
        }
        let headers = self.request.headers_mut();
        if protocols.is_empty() {
            headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        } else {
            let value = HeaderValue::try_from(protocols.join(", "))
                .expect("tokens joined by \", \" are a valid header value");
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        self.subprotocols = protocols;
        Ok(self)
    }

    /// Offers the extensions of the `Sec-WebSocket-Extensions` value `value` (build it with
    /// [`crate::handshake::format_extensions`]), replacing any offered before. An empty or
    /// blank value offers none.
    ///
    /// # Errors
    ///
    /// Those of [`parse_extensions`]: the value is checked here so that the server's answer
    /// can be checked against it.
    pub fn with_extensions(mut self, value: &str) -> Result<Self, Error> {
        let headers = self.request.headers_mut();
        if value.trim_matches([' ', '\t']).is_empty() {
            headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
            self.extensions.clear();
            return Ok(self);
        }
        let offers = parse_extensions(value)?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| InvalidHeader::bad_format(SEC_WEBSOCKET_EXTENSIONS, value, 0))?;
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        self.extensions = offers;
        Ok(self)
    }

    /// Adds header `name` (`Origin`, `User-Agent`, `Authorization`, `Cookie` …): appended, so
    /// a name may repeat, except `Host`, which replaces the one derived from the URI.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadValue`] if `name` is one the
    /// handshake sets itself: `Upgrade`, `Connection`, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`, `Content-Length`, `Transfer-Encoding`, and
    /// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` (use
    /// [`ClientHandshake::with_subprotocols`] and [`ClientHandshake::with_extensions`]).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Result<Self, Error> {
        if let Some(reserved) = RESERVED_REQUEST_HEADERS.iter().find(|r| **r == name.as_str()) {
            return Err(InvalidHeader::bad_value(
                reserved,
                &String::from_utf8_lossy(value.as_bytes()),
                "set by the handshake itself",
            )
            .into());
        }
        if name == header::HOST {
            self.request.headers_mut().insert(name, value);
        } else {
            self.request.headers_mut().append(name, value);
        }
        Ok(self)
    }

    /// The request to send.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The key sent; `None` for an extended CONNECT, which has none (RFC 8441 §5).
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The subprotocols offered.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// The extensions offered.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Writes the request's bytes to `out` (a `Vec<u8>` or `bytes::BytesMut`).
    pub fn write_request(&self, out: &mut impl BufMut) {
        write_request(&self.request, out);
    }

    /// Parses the response head at the start of `buf` (see [`parse_response`]) and validates
    /// it ([`ClientHandshake::validate`]).
    ///
    /// # Errors
    ///
    /// Those of [`parse_response`] and of [`ClientHandshake::validate`].
    pub fn read_response(&self, buf: &[u8], limits: &HeadLimits) -> Result<ResponseOutcome, Error> {
        self.validate(parse_response(buf, limits)?)
    }

    /// Judges the server's response.
    ///
    /// A status other than 101 is not an error here but [`ResponseOutcome::NotUpgraded`]: the
    /// runtime must still read the body (framed by `Content-Length` or chunked, up to its own
    /// limit) or follow a redirect, and then report
    /// [`palisade_error::InvalidStatus::new`]`(status, headers, body, max)`.
    ///
    /// A 101 must pass, in this order (RFC 6455 §4.1, the client's validation steps):
    ///
    /// | rule | error |
    /// |---|---|
    /// | HTTP/1.1 | [`InvalidMessage::UnsupportedHttpVersion`] |
    /// | `Upgrade` lists `websocket` (step 2) | [`palisade_error::HandshakeError::InvalidUpgrade`] |
    /// | `Connection` lists `upgrade` (step 3) | [`palisade_error::HandshakeError::InvalidUpgrade`] |
    /// | `Sec-WebSocket-Accept` present once and equal to [`Key::accept`] (step 4) | [`InvalidHeader`] missing, duplicate, bad value |
    /// | `Sec-WebSocket-Extensions` names only offered extensions (step 5) | [`NegotiationError::UnofferedExtension`], or the errors of [`parse_extensions`] |
    /// | `Sec-WebSocket-Protocol` absent, or once with one offered subprotocol (step 6) | [`InvalidHeader`] duplicate, bad value, bad format; [`NegotiationError::UnofferedSubprotocol`] |
    ///
    /// Whether the accepted extension parameters are acceptable is the extension's business
    /// (permessage-deflate checks its own).
    ///
    /// # Errors
    ///
    /// As in the table; on any error the connection must be failed (RFC 6455 §4.1: "the
    /// client MUST _Fail the WebSocket Connection_").
    ///
    /// For an [extended CONNECT](ClientHandshake::extended_connect) any 2xx is success (RFC
    /// 8441 §5) and only the last two rules apply; other statuses are `NotUpgraded`.
    pub fn validate(&self, response: Response<()>) -> Result<ResponseOutcome, Error> {
        let Some(key) = &self.key else {
            if !response.status().is_success() {
                return Ok(ResponseOutcome::NotUpgraded(response));
            }
            return self.negotiated(response);
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(ResponseOutcome::NotUpgraded(response));
        }
        match response.version() {
            Version::HTTP_11 => {}
            Version::HTTP_10 => {
                return Err(InvalidMessage::UnsupportedHttpVersion { minor: 0 }.into());
            }
            _ => {
                return Err(
                    InvalidMessage::Unexpected { reason: "not an HTTP/1.1 response" }.into()
                );
            }
        }
        let headers = response.headers();
        require_token(headers, header::UPGRADE, "upgrade", "websocket")?;
        require_token(headers, header::CONNECTION, "connection", "upgrade")?;

        let accept = single(headers, header::SEC_WEBSOCKET_ACCEPT, "sec-websocket-accept")?
            .ok_or_else(|| InvalidHeader::missing("sec-websocket-accept"))?;
        if accept.as_bytes() != key.accept().as_bytes() {
            return Err(InvalidHeader::bad_value(
                "sec-websocket-accept",
                &String::from_utf8_lossy(accept.as_bytes()),
                "does not match the key sent",
            )
            .into());
        }
        self.negotiated(response)
    }

    /// The extensions and subprotocol a successful response agreed on, checked against the
    /// offers (RFC 6455 §4.1 steps 5–6).
    fn negotiated(&self, response: Response<()>) -> Result<ResponseOutcome, Error> {
        let headers = response.headers();
        let mut extensions = Vec::new();
        for value in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
            for accepted in parse_extensions(header_str(SEC_WEBSOCKET_EXTENSIONS, value)?)? {
                if !self.extensions.iter().any(|o| o.name.eq_ignore_ascii_case(&accepted.name)) {
                    return Err(NegotiationError::UnofferedExtension { name: accepted.name }.into());
                }
                extensions.push(accepted);
            }
        }

        // RFC 6455 §4.1 step 6 and §11.3.4: in a response the header appears at most once,
        // with one value.
        let subprotocol =
            match single(headers, header::SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_PROTOCOL)? {
                None => None,
                Some(value) => {
                    let text = header_str(SEC_WEBSOCKET_PROTOCOL, value)?;
                    let mut chosen = parse_subprotocols(text)?;
                    if chosen.len() != 1 {
                        return Err(InvalidHeader::bad_value(
                            SEC_WEBSOCKET_PROTOCOL,
                            text,
                            "more than one subprotocol",
                        )
                        .into());
                    }
                    let protocol = chosen.remove(0);
                    if !self.subprotocols.contains(&protocol) {
                        return Err(NegotiationError::UnofferedSubprotocol { protocol }.into());
                    }
                    Some(protocol)
                }
            };

        Ok(ResponseOutcome::Upgraded(Negotiated { subprotocol, extensions, response }))
    }
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("target", &redact::uri(&self.request.uri().to_string()))
            .field("headers", &RedactedHeaders(self.request.headers()))
            .field("subprotocols", &RedactedList(self.subprotocols.len()))
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// What the server answered, once [`ClientHandshake::validate`] has judged it.
#[must_use = "a NotUpgraded response still has to be turned into an error"]
pub enum ResponseOutcome {
    /// 101 Switching Protocols, valid: the connection is open. The bytes after the head are
    /// WebSocket frames.
    Upgraded(Negotiated),
    /// Any other status: the server refused (4xx, 5xx) or redirects (3xx). Not yet an error,
    /// because the runtime must first read the body that follows the head (or follow the
    /// redirect), then fail with [`palisade_error::InvalidStatus`].
    NotUpgraded(Response<()>),
}

impl fmt::Debug for ResponseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upgraded(n) => f.debug_tuple("Upgraded").field(n).finish(),
            Self::NotUpgraded(r) => f
                .debug_struct("NotUpgraded")
                .field("status", &r.status())
                .field("headers", &RedactedHeaders(r.headers()))
                .finish(),
        }
    }
}

/// What a successful handshake agreed on.
#[non_exhaustive]
pub struct Negotiated {
    /// The subprotocol the server chose among those offered, if any.
    pub subprotocol: Option<String>,
    /// The extensions the server accepted, in the order it listed them, with its parameters.
    pub extensions: Vec<ExtensionOffer>,
    /// The whole 101 response (for `Set-Cookie` and other headers).
    pub response: Response<()>,
}

impl fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Negotiated")
            .field("subprotocol", &self.subprotocol.as_ref().map(|_| redact::REDACTED))
            .field("extensions", &self.extensions)
            .field("headers", &RedactedHeaders(self.response.headers()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use palisade_error::{HandshakeError, HeaderProblem};
    use proptest::prelude::*;

    use super::*;
    use crate::handshake::{AcceptOptions, UpgradeRequest, format_extensions, write_response};

    const NONCE: [u8; 16] = *b"the sample nonce";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn handshake(uri: &str) -> ClientHandshake {
        ClientHandshake::new(&uri.parse().unwrap(), NONCE).unwrap()
    }

    fn request_text(h: &ClientHandshake) -> String {
        let mut out = Vec::new();
        h.write_request(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn uri_problem(err: Error) -> UriProblem {
        match err {
            Error::InvalidUri(u) => u.reason(),
            other => panic!("{other:?}"),
        }
    }

    fn handshake_error(err: Error) -> HandshakeError {
        match err {
            Error::Handshake(h) => *h,
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn header_problem(err: Error) -> (&'static str, HeaderProblem) {
        match handshake_error(err) {
            HandshakeError::InvalidHeader(h) => (h.name(), h.problem()),
            other => panic!("not a header error: {other:?}"),
        }
    }

    /// A valid 101 for `NONCE`, with `edit` applied to its header lines.
    fn response_with(edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
        let mut lines = vec![
            "Upgrade: websocket".to_owned(),
            "Connection: Upgrade".to_owned(),
            format!("Sec-WebSocket-Accept: {ACCEPT}"),
        ];
        edit(&mut lines);
        let mut out = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        for line in lines {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn read(h: &ClientHandshake, buf: &[u8]) -> Result<ResponseOutcome, Error> {
        h.read_response(buf, &HeadLimits::default())
    }

    fn negotiated(outcome: ResponseOutcome) -> Negotiated {
        match outcome {
            ResponseOutcome::Upgraded(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_6455_section_1_3_example_request() {
        let h = handshake("ws://server.example.com/chat")
            .with_subprotocols(["chat", "superchat"])
            .unwrap()
            .with_header(header::ORIGIN, HeaderValue::from_static("http://example.com"))
            .unwrap();
        assert_eq!(
            request_text(&h),
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
             Origin: http://example.com\r\n\r\n"
        );
        assert_eq!(h.key().map(Key::accept).as_deref(), Some(ACCEPT));
    }

    // RFC 6455 §4.1 item 4: the port in Host only when it is not the default.
    #[test]
    fn host_carries_the_port_only_when_not_default() {
        for (uri, host, target) in [
            ("ws://a.example", "a.example", "/"),
            ("ws://a.example:80/x", "a.example", "/x"),
            ("ws://a.example:443/x", "a.example:443", "/x"),
            ("wss://a.example:443/x?y=1", "a.example", "/x?y=1"),
            ("wss://a.example:8443", "a.example:8443", "/"),
            ("WSS://user:pw@a.example/", "a.example", "/"),
            ("ws://[::1]:9000/p", "[::1]:9000", "/p"),
            ("ws://a.example?q", "a.example", "/?q"),
        ] {
            let h = handshake(uri);
            assert_eq!(h.request().headers()["host"], host, "{uri}");
            assert_eq!(h.request().uri(), target, "{uri}");
            assert!(!request_text(&h).contains("pw"));
        }
    }

    #[test]
    fn unusable_uris_are_refused() {
        for (uri, problem) in [
            ("http://a.example/", UriProblem::Scheme),
            ("/relative", UriProblem::Scheme),
            ("ws://a.example:0/", UriProblem::Port),
        ] {
            let err = ClientHandshake::new(&uri.parse().unwrap(), NONCE).unwrap_err();
            assert_eq!(uri_problem(err), problem, "{uri}");
        }
    }

    #[test]
    fn builder_checks_its_inputs() {
        let err = handshake("ws://a/").with_subprotocols(["ok", "not ok"]).unwrap_err();
        assert_eq!(
            header_problem(err),
            (SEC_WEBSOCKET_PROTOCOL, HeaderProblem::BadFormat { pos: 3 })
        );
        let err = handshake("ws://a/").with_subprotocols([""]).unwrap_err();
        assert_eq!(
            header_problem(err),
            (SEC_WEBSOCKET_PROTOCOL, HeaderProblem::BadFormat { pos: 0 })
        );
        let err = handshake("ws://a/").with_extensions("e; a=\"x y\"").unwrap_err();
        assert!(matches!(
            handshake_error(err),
            HandshakeError::Negotiation(NegotiationError::InvalidParameterValue { .. })
        ));
        let err = handshake("ws://a/")
            .with_header(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("x"))
            .unwrap_err();
        assert!(matches!(
            header_problem(err),
            ("sec-websocket-key", HeaderProblem::BadValue { .. })
        ));

        let h = handshake("ws://a/")
            .with_subprotocols(["x"])
            .unwrap()
            .with_subprotocols(Vec::<String>::new())
            .unwrap()
            .with_extensions("permessage-deflate")
            .unwrap()
            .with_extensions(" ")
            .unwrap()
            .with_header(header::HOST, HeaderValue::from_static("b.example"))
            .unwrap()
            .with_header(header::COOKIE, HeaderValue::from_static("a=1"))
            .unwrap()
            .with_header(header::COOKIE, HeaderValue::from_static("b=2"))
            .unwrap();
        assert!(h.subprotocols().is_empty() && h.extensions().is_empty());
        let text = request_text(&h);
        assert!(
            !text.contains("Sec-WebSocket-Protocol") && !text.contains("Sec-WebSocket-Extensions")
        );
        assert!(text.contains("\r\nHost: b.example\r\n") && !text.contains("Host: a\r\n"));
        assert!(text.contains("Cookie: a=1\r\nCookie: b=2\r\n"));
    }

    #[test]
    fn a_valid_101_is_upgraded() {
        let h = handshake("ws://a/").with_subprotocols(["chat", "v2"]).unwrap();
        let n = negotiated(read(&h, &response_with(|_| {})).unwrap());
        assert_eq!(n.subprotocol, None);
        assert!(n.extensions.is_empty());
        let n = negotiated(
            read(&h, &response_with(|l| l.push("Sec-WebSocket-Protocol: v2".into()))).unwrap(),
        );
        assert_eq!(n.subprotocol.as_deref(), Some("v2"));
    }

    #[test]
    fn another_status_is_not_upgraded_and_not_an_error() {
        let h = handshake("ws://a/");
        let buf = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 5\r\n\r\nnope!";
        match read(&h, buf).unwrap() {
            ResponseOutcome::NotUpgraded(r) => {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
            }
            other => panic!("{other:?}"),
        }
        // Even HTTP/1.0: the runtime reports the status.
        assert!(matches!(
            read(&h, b"HTTP/1.0 403 Forbidden\r\n\r\n").unwrap(),
            ResponseOutcome::NotUpgraded(_)
        ));
    }

    #[test]
    fn a_101_must_be_http_1_1() {
        let mut buf = response_with(|_| {});
        buf[7] = b'0';
        let err = read(&handshake("ws://a/"), &buf).unwrap_err();
        assert!(matches!(
            handshake_error(err),
            HandshakeError::InvalidMessage(InvalidMessage::UnsupportedHttpVersion { minor: 0 })
        ));
    }

    // RFC 6455 §4.1, client validation steps 2 and 3
    #[test]
    fn upgrade_and_connection_must_list_their_tokens() {
        let h = handshake("ws://a/");
        for (edit, header, value) in [
            (
                Box::new(|l: &mut Vec<String>| {
                    l.remove(0);
                }) as Box<dyn FnOnce(&mut Vec<String>)>,
                "upgrade",
                None,
            ),
            (Box::new(|l: &mut Vec<String>| l[0] = "Upgrade: h2c".into()), "upgrade", Some("h2c")),
            (
                Box::new(|l: &mut Vec<String>| {
                    l.remove(1);
                }),
                "connection",
                None,
            ),
            (
                Box::new(|l: &mut Vec<String>| l[1] = "Connection: close".into()),
                "connection",
                Some("close"),
            ),
        ] {
            let err = read(&h, &response_with(edit)).unwrap_err();
            assert_eq!(err.status_to_send(), Some(StatusCode::UPGRADE_REQUIRED));
            match handshake_error(err) {
                HandshakeError::InvalidUpgrade { header: got, value: v } => {
                    assert_eq!((got, v.as_deref()), (header, value))
                }
                other => panic!("{other:?}"),
            }
        }
        let ok = response_with(|l| {
            l[0] = "UPGRADE: WebSocket".into();
            l[1] = "connection: keep-alive".into();
            l.push("Connection: UPGRADE".into());
        });
        assert!(read(&h, &ok).is_ok());
    }

    // RFC 6455 §4.1, client validation step 4
    #[test]
    fn rfc_8441_extended_connect_request_and_its_200() {
        let h = ClientHandshake::extended_connect(
            &"wss://user:pw@example.com:8443/chat?x=1".parse().unwrap(),
        )
        .unwrap()
        .with_subprotocols(["chat"])
        .unwrap()
        .with_extensions("permessage-deflate")
        .unwrap();
        let request = h.request();
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(request.version(), Version::HTTP_2);
        assert_eq!(request.uri(), "https://example.com:8443/chat?x=1", "no user-info");
        assert_eq!(
            request.extensions().get::<ExtendedConnect>().map(|c| c.protocol()),
            Some("websocket")
        );
        assert_eq!(request.headers()["sec-websocket-version"], "13");
        for absent in ["upgrade", "connection", "sec-websocket-key", "host"] {
            assert!(!request.headers().contains_key(absent), "{absent}");
        }
        assert_eq!(h.key(), None);
        let plain = ClientHandshake::extended_connect(&"ws://localhost/".parse().unwrap()).unwrap();
        assert_eq!(plain.request().uri(), "http://localhost/");

        // Any 2xx opens, with the offers checked as over HTTP/1.1.
        let ok = Response::builder()
            .status(200)
            .version(Version::HTTP_2)
            .header("sec-websocket-protocol", "chat")
            .header("sec-websocket-extensions", "permessage-deflate")
            .body(())
            .unwrap();
        let ResponseOutcome::Upgraded(negotiated) = h.validate(ok).unwrap() else {
            panic!("200 opens an extended CONNECT")
        };
        assert_eq!(negotiated.subprotocol.as_deref(), Some("chat"));
        let unoffered = Response::builder()
            .status(200)
            .header("sec-websocket-protocol", "other")
            .body(())
            .unwrap();
        assert!(h.validate(unoffered).is_err());
        let refused = Response::builder().status(403).body(()).unwrap();
        assert!(matches!(h.validate(refused).unwrap(), ResponseOutcome::NotUpgraded(_)));
        // A 101 is no answer to a CONNECT.
        let switching = Response::builder().status(101).body(()).unwrap();
        assert!(matches!(h.validate(switching).unwrap(), ResponseOutcome::NotUpgraded(_)));
    }

    #[test]
    fn accept_must_match_the_key() {
        let h = handshake("ws://a/");
        let err = read(
            &h,
            &response_with(|l| {
                l.remove(2);
            }),
        )
        .unwrap_err();
        assert_eq!(header_problem(err), ("sec-websocket-accept", HeaderProblem::Missing));
        let err = read(&h, &response_with(|l| l.push(format!("Sec-WebSocket-Accept: {ACCEPT}"))))
            .unwrap_err();
        assert_eq!(header_problem(err), ("sec-websocket-accept", HeaderProblem::Duplicate));
        let other = ClientHandshake::new(&"ws://a/".parse().unwrap(), [0; 16]).unwrap();
        let err = read(&other, &response_with(|_| {})).unwrap_err();
        assert!(matches!(
            header_problem(err),
            ("sec-websocket-accept", HeaderProblem::BadValue { .. })
        ));
    }

    // RFC 6455 §4.1, client validation step 6
    #[test]
    fn subprotocol_must_be_offered_and_single() {
        let h = handshake("ws://a/").with_subprotocols(["chat"]).unwrap();
        let err = read(&h, &response_with(|l| l.push("Sec-WebSocket-Protocol: other".into())))
            .unwrap_err();
        assert_eq!(
            handshake_error(err).to_string(),
            "server selected subprotocol \"other\", which was not offered"
        );
        // Subprotocol names are compared exactly.
        let err = read(&h, &response_with(|l| l.push("Sec-WebSocket-Protocol: Chat".into())))
            .unwrap_err();
        assert!(matches!(
            handshake_error(err),
            HandshakeError::Negotiation(NegotiationError::UnofferedSubprotocol { .. })
        ));
        let err = read(&h, &response_with(|l| l.push("Sec-WebSocket-Protocol: chat, chat".into())))
            .unwrap_err();
        assert!(matches!(
            header_problem(err),
            (SEC_WEBSOCKET_PROTOCOL, HeaderProblem::BadValue { .. })
        ));
        let err = read(
            &h,
            &response_with(|l| {
                l.push("Sec-WebSocket-Protocol: chat".into());
                l.push("Sec-WebSocket-Protocol: chat".into());
            }),
        )
        .unwrap_err();
        assert_eq!(header_problem(err), (SEC_WEBSOCKET_PROTOCOL, HeaderProblem::Duplicate));
        let none = handshake("ws://a/");
        let err = read(&none, &response_with(|l| l.push("Sec-WebSocket-Protocol: chat".into())))
            .unwrap_err();
        assert!(matches!(
            handshake_error(err),
            HandshakeError::Negotiation(NegotiationError::UnofferedSubprotocol { .. })
        ));
    }

    // RFC 6455 §4.1, client validation step 5
    #[test]
    fn extensions_must_be_offered() {
        let h = handshake("ws://a/")
            .with_extensions("permessage-deflate; client_max_window_bits")
            .unwrap();
        let n = negotiated(
            read(
                &h,
                &response_with(|l| {
                    l.push(
                        "Sec-WebSocket-Extensions: Permessage-Deflate; server_max_window_bits=10"
                            .into(),
                    )
                }),
            )
            .unwrap(),
        );
        assert_eq!(
            n.extensions,
            [ExtensionOffer::new("Permessage-Deflate")
                .with_param("server_max_window_bits", Some("10".into()))]
        );
        let err = read(&h, &response_with(|l| l.push("Sec-WebSocket-Extensions: x-foo".into())))
            .unwrap_err();
        assert_eq!(err.status_to_send(), None);
        assert!(
            matches!(handshake_error(err), HandshakeError::Negotiation(NegotiationError::UnofferedExtension { name }) if name == "x-foo")
        );
        let err = read(
            &h,
            &response_with(|l| l.push("Sec-WebSocket-Extensions: permessage-deflate; a=\"".into())),
        )
        .unwrap_err();
        assert!(matches!(
            header_problem(err),
            (SEC_WEBSOCKET_EXTENSIONS, HeaderProblem::BadFormat { .. })
        ));
    }

    #[test]
    fn debug_hides_credentials() {
        let h = handshake("ws://a/x?token=s3cret")
            .with_subprotocols(["bearer.t0k3n"])
            .unwrap()
            .with_header(header::AUTHORIZATION, HeaderValue::from_static("Basic c2VjcmV0"))
            .unwrap();
        let shown = format!("{h:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0k3n") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
        let n = negotiated(
            read(&h, &response_with(|l| l.push("Sec-WebSocket-Protocol: bearer.t0k3n".into())))
                .unwrap(),
        );
        assert!(!format!("{n:?}").contains("t0k3n"));
    }

    fn token() -> impl Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,10}"
    }

    proptest! {
        /// Client request → bytes → server parse → 101 → bytes → client validation.
        #[test]
        fn both_sides_agree(
            key in any::<[u8; 16]>(),
            path in "(/[a-z0-9._~-]{0,8}){1,3}(\\?[a-z0-9=&]{0,10})?",
            protocols in proptest::collection::vec(token(), 0..4),
            extensions in proptest::collection::vec(
                (token(), proptest::collection::btree_map("[a-z_]{1,8}", proptest::option::of(token()), 0..3)),
                0..3,
            ),
            choose in any::<prop::sample::Index>(),
        ) {
            let offers: Vec<ExtensionOffer> = extensions
                .into_iter()
                .map(|(name, params)| ExtensionOffer { name, params: params.into_iter().collect() })
                .collect();
            let uri: Uri = format!("wss://example.com:8443{path}").parse().unwrap();
            let client = ClientHandshake::new(&uri, key)
                .unwrap()
                .with_subprotocols(protocols.clone())
                .unwrap()
                .with_extensions(&format_extensions(&offers).unwrap())
                .unwrap();
            let mut wire = Vec::new();
            client.write_request(&mut wire);

            let server = UpgradeRequest::parse(&wire, &HeadLimits::default()).unwrap();
            prop_assert_eq!(server.key(), Some(&Key::from_bytes(key)));
            prop_assert_eq!(server.subprotocols(), &protocols[..]);
            prop_assert_eq!(server.extensions(), &offers[..]);
            prop_assert_eq!(server.request().uri().to_string(), path);
            prop_assert_eq!(&server.request().headers()["host"], "example.com:8443");

            let mut options = AcceptOptions::default();
            let chosen = (!protocols.is_empty()).then(|| protocols[choose.index(protocols.len())].clone());
            if let Some(p) = &chosen {
                options = options.with_subprotocol(p.clone());
            }
            options = options.with_extensions(offers.iter().take(1).cloned().collect());
            let response = server.accept(options).unwrap();
            let mut wire = Vec::new();
            write_response(&response, &[], &mut wire);
            wire.extend_from_slice(b"\x81\x00");

            let n = negotiated(read(&client, &wire).unwrap());
            prop_assert_eq!(n.subprotocol, chosen);
            prop_assert_eq!(n.extensions, offers.into_iter().take(1).collect::<Vec<_>>());
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let h = handshake("ws://a/").with_subprotocols(["chat"]).unwrap().with_extensions("permessage-deflate").unwrap();
            let _ = read(&h, &buf);
        }

        #[test]
        fn mutated_responses_never_panic(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let h = handshake("ws://a/").with_subprotocols(["chat"]).unwrap();
            let mut buf = response_with(|l| l.push("Sec-WebSocket-Protocol: chat".into()));
            let i = index.index(buf.len());
            buf[i] = byte;
            let _ = read(&h, &buf);
        }
    }
}
