//! Failures of the opening handshake (RFC 6455 §4), on either side.

use std::fmt;

use http::{HeaderMap, StatusCode};

use crate::redact;

/// The opening handshake failed: the connection never opened.
///
/// No close code applies (there is no WebSocket connection yet); on the server side,
/// [`crate::Error::status_to_send`] gives the HTTP status to answer with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes received are not an acceptable HTTP message. Server: 400, 405, 414, 431 or
    /// 505 depending on the kind; client: the server is not speaking HTTP/1.1.
    #[error("invalid HTTP message: {0}")]
    InvalidMessage(InvalidMessage),
    /// The server answered with a status other than 101 Switching Protocols (client side).
    /// Carries the status, headers and the start of the body.
    #[error(transparent)]
    InvalidStatus(InvalidStatus),
    /// A handshake header is missing, badly formatted, or has a value the protocol forbids
    /// (RFC 6455 §4.2.1, §4.2.2). Server: 400.
    #[error(transparent)]
    InvalidHeader(InvalidHeader),
    /// `Upgrade: websocket` or `Connection: Upgrade` is missing or wrong: the request is not a
    /// WebSocket upgrade. Server: 426 Upgrade Required.
    #[error("not a WebSocket upgrade: {header} header is {}", value.as_deref().unwrap_or("missing"))]
    InvalidUpgrade {
        /// `Upgrade` or `Connection`.
        header: &'static str,
        /// The value received, if any.
        value: Option<String>,
    },
    /// `Sec-WebSocket-Version` is not 13 (RFC 6455 §4.2.2). Server: 426 with
    /// `Sec-WebSocket-Version: 13`.
    #[error("unsupported WebSocket version {}", version.as_deref().unwrap_or("(missing)"))]
    UnsupportedVersion {
        /// The version the client asked for, if any.
        version: Option<String>,
    },
    /// The `Origin` header is missing or not allowed (cross-site WebSocket hijacking defence).
    /// Server: 403.
    #[error("origin {} is not allowed", origin.as_deref().unwrap_or("(missing)"))]
    InvalidOrigin {
        /// The origin received, if any.
        origin: Option<String>,
    },
    /// Subprotocol or extension negotiation failed.
    #[error(transparent)]
    Negotiation(NegotiationError),
    /// A security rule refused the handshake.
    #[error(transparent)]
    Security(SecurityError),
    /// The server's policy (authentication, routing, connection limits, a user hook) refused
    /// the request with this status.
    #[error("handshake rejected with {status}: {reason}")]
    Rejected {
        /// The status sent to the client.
        status: StatusCode,
        /// Why, for the log. Never sent to the client unless the rejection body says so.
        reason: String,
    },
    /// The client followed more redirects than its limit allows.
    #[error("too many redirects (limit {max})")]
    TooManyRedirects {
        /// The limit.
        max: u8,
    },
}

/// How an HTTP message failed to be one we accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// The bytes do not parse as HTTP/1.1 (the parser's reason). 400.
    #[error("malformed HTTP: {reason}")]
    Malformed {
        /// What the parser objected to.
        reason: &'static str,
    },
    /// The connection ended before the message was complete. 400 (if anyone is listening).
    #[error("connection closed before the HTTP message was complete")]
    Incomplete,
    /// The request method is not `GET` (RFC 6455 §4.1). 405 with `Allow: GET`.
    #[error("method {method} is not allowed, expected GET")]
    MethodNotAllowed {
        /// The method received (at most 16 bytes of it).
        method: String,
    },
    /// The HTTP version is not 1.1 or later. 505.
    #[error("HTTP/1.{minor} is not supported, expected HTTP/1.1")]
    UnsupportedHttpVersion {
        /// The minor version received.
        minor: u8,
    },
    /// A redirect or body this side does not accept.
    #[error("unexpected HTTP message: {reason}")]
    Unexpected {
        /// What was unexpected.
        reason: &'static str,
    },
}

/// The server answered the upgrade with another status: it refused the connection.
///
/// The body is kept (up to the client's configured limit) so that, for example, the JSON of a
/// 401 can be read. `Display` shows only the status; headers that carry credentials
/// (`Set-Cookie`) are removed before they are stored.
#[derive(Clone)]
pub struct InvalidStatus {
    status: StatusCode,
    headers: HeaderMap,
    body: Box<[u8]>,
}

impl InvalidStatus {
    /// The refusal, keeping at most `max_body` bytes of `body` and dropping credential headers.
    pub fn new(status: StatusCode, headers: &HeaderMap, body: &[u8], max_body: usize) -> Self {
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if !redact::is_sensitive_header(name.as_str()) {
                kept.append(name.clone(), value.clone());
            }
        }
        let body = body[..body.len().min(max_body)].into();
        Self { status, headers: kept, body }
    }

    /// The status the server sent.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers, without credential-bearing ones.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The start of the response body (bounded by the client's limit).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text, if it is UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The `Retry-After` header in seconds, if the server sent one in that form.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
    }
}

impl fmt::Debug for InvalidStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidStatus")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl fmt::Display for InvalidStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server rejected WebSocket connection: HTTP {}", self.status)
    }
}

impl std::error::Error for InvalidStatus {}

/// A header is missing, badly formatted, or semantically wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHeader {
    name: &'static str,
    value: Option<String>,
    problem: HeaderProblem,
}

impl InvalidHeader {
    /// Header `name` is absent.
    pub fn missing(name: &'static str) -> Self {
        Self { name, value: None, problem: HeaderProblem::Missing }
    }

    /// Header `name` does not follow its grammar; `pos` is the byte offset of the problem.
    /// A credential-bearing value is replaced before it is stored.
    pub fn bad_format(name: &'static str, value: &str, pos: usize) -> Self {
        Self {
            name,
            value: Some(Self::bounded(name, value)),
            problem: HeaderProblem::BadFormat { pos },
        }
    }

    /// Header `name` parses but its value is not acceptable (`why` says how).
    pub fn bad_value(name: &'static str, value: &str, why: &'static str) -> Self {
        Self {
            name,
            value: Some(Self::bounded(name, value)),
            problem: HeaderProblem::BadValue { why },
        }
    }

    /// Header `name` appears more than once where the protocol allows one.
    pub fn duplicate(name: &'static str) -> Self {
        Self { name, value: None, problem: HeaderProblem::Duplicate }
    }

    fn bounded(name: &str, value: &str) -> String {
        const MAX: usize = 128;
        let mut v = redact::header_value(name, value);
        if v.len() > MAX {
            let mut end = MAX;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
            v.push('…');
        }
        v
    }

    /// The header's name, lower case.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value received (bounded, and redacted for credential headers), if there was one.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// What is wrong with it.
    pub fn problem(&self) -> HeaderProblem {
        self.problem
    }
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.problem, &self.value) {
            (HeaderProblem::Missing, _) => write!(f, "missing {} header", self.name),
            (HeaderProblem::Duplicate, _) => write!(f, "more than one {} header", self.name),
            (HeaderProblem::BadFormat { pos }, Some(v)) => {
                write!(f, "invalid {} header at byte {pos}: {v:?}", self.name)
            }
            (HeaderProblem::BadValue { why }, Some(v)) => {
                write!(f, "invalid {} header ({why}): {v:?}", self.name)
            }
            (HeaderProblem::BadFormat { .. } | HeaderProblem::BadValue { .. }, None) => {
                write!(f, "invalid {} header", self.name)
            }
        }
    }
}

impl std::error::Error for InvalidHeader {}

/// What is wrong with a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The header is absent.
    Missing,
    /// It appears more than once.
    Duplicate,
    /// It does not follow its grammar (RFC 7230 tokens, base64 …); `pos` is the byte offset.
    BadFormat {
        /// Byte offset of the first unexpected character.
        pos: usize,
    },
    /// It parses but is semantically wrong (a key that is not 16 bytes, a wrong accept key …).
    BadValue {
        /// Why it is wrong.
        why: &'static str,
    },
}

/// Subprotocol or extension negotiation failed (RFC 6455 §4.1, §9; RFC 7692 §7).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The server requires a subprotocol and the client offered none it supports. Server: 400.
    #[error("no supported subprotocol among those offered")]
    NoCommonSubprotocol,
    /// The server selected a subprotocol the client did not offer (client side).
    #[error("server selected subprotocol {protocol:?}, which was not offered")]
    UnofferedSubprotocol {
        /// What the server chose.
        protocol: String,
    },
    /// The server answered with an extension the client did not offer (client side).
    #[error("server accepted extension {name:?}, which was not offered")]
    UnofferedExtension {
        /// The extension's name.
        name: String,
    },
    /// The client requires an extension the server did not accept. Close 1010.
    #[error("required extension {name:?} was not accepted")]
    MissingExtension {
        /// The extension's name.
        name: String,
    },
    /// An extension parameter appears twice in the server's answer (client side; RFC 7692 §7).
    /// A server declines an offer that repeats a parameter instead (400 is only its mapping).
    #[error("duplicate parameter {name:?} in extension {extension:?}")]
    DuplicateParameter {
        /// The extension.
        extension: String,
        /// The repeated parameter.
        name: String,
    },
    /// An extension parameter is unknown. Server: 400.
    #[error("unknown parameter {name:?} in extension {extension:?}")]
    InvalidParameterName {
        /// The extension.
        extension: String,
        /// The unknown parameter.
        name: String,
    },
    /// An extension parameter's value is out of range or malformed. Server: 400.
    #[error("invalid value {value:?} for parameter {name:?} in extension {extension:?}")]
    InvalidParameterValue {
        /// The extension.
        extension: String,
        /// The parameter.
        name: String,
        /// The value received, if there was one.
        value: Option<String>,
    },
}

/// A security rule refused the handshake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The request line (method and target) is longer than the limit. Server: 414.
    #[error("request line is {len} bytes, the limit is {max}")]
    RequestLineTooLong {
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// One header line is longer than the limit. Server: 431.
    #[error("a header line is {len} bytes, the limit is {max}")]
    HeaderLineTooLong {
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More headers than the limit. Server: 431.
    #[error("more than {max} headers")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// The head of the message (request/status line and headers) is bigger than the limit.
    /// Server: 431.
    #[error("HTTP head is {len} bytes, the limit is {max}")]
    HeadTooLarge {
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A redirect from `wss://` to `ws://` was refused (client side).
    #[error("refused redirect from a secure to an insecure URL")]
    InsecureRedirect,
    /// The server's certificate was refused (client side); `reason` names why (expired,
    /// unknown issuer, wrong host …).
    #[error("server certificate refused: {reason}")]
    Certificate {
        /// Why it was refused.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_keeps_a_bounded_body_and_no_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert("set-cookie", "session=secret".parse().unwrap());
        headers.insert("www-authenticate", "Bearer".parse().unwrap());
        headers.insert("retry-after", "7".parse().unwrap());
        let s = InvalidStatus::new(StatusCode::UNAUTHORIZED, &headers, b"{\"error\":\"nope\"}", 8);
        assert_eq!(s.body(), b"{\"error\"");
        assert!(s.headers().get("set-cookie").is_none());
        assert_eq!(s.headers()["www-authenticate"], "Bearer");
        assert_eq!(s.retry_after(), Some(7));
        assert_eq!(s.to_string(), "server rejected WebSocket connection: HTTP 401 Unauthorized");
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn invalid_header_redacts_and_bounds_its_value() {
        let h = InvalidHeader::bad_format("authorization", "Bearer s3cret", 6);
        assert!(!h.to_string().contains("s3cret"));
        assert!(!format!("{h:?}").contains("s3cret"));
        let long = "k".repeat(1000);
        let h = InvalidHeader::bad_value("sec-websocket-key", &long, "not 16 bytes");
        assert!(h.value().unwrap().len() < 200);
        assert_eq!(InvalidHeader::missing("host").to_string(), "missing host header");
    }
}
