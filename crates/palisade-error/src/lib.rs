//! # palisade-error
//!
//! Every way a WebSocket connection can fail, as one hierarchy that can be matched as coarsely or
//! as finely as the caller likes:
//!
//! - coarsely, with [`Error::category`], [`Error::is_retryable`], [`Error::close_code`] and
//!   [`Error::status_to_send`];
//! - finely, by matching the variants of [`Error`] and of the leaf enums, which carry the data a
//!   caller needs (sizes and limits, header names, statuses, the close frames exchanged).
//!
//! The hierarchy follows Python `websockets`' exceptions, in Rust idiom.
//!
//! ## Architecture invariants
//!
//! - Depends on no other palisade crate; only `std`, `thiserror` and `http`.
//! - Every classification is one exhaustive `match` with no wildcard arm, so a new variant
//!   cannot be added without deciding its close code, status, category and retry class.
//! - No error value holds a secret: constructors redact credentials (`Authorization`, cookies,
//!   `Sec-WebSocket-Protocol` tokens, URL user-info and query strings) before storing anything,
//!   so `Display` and `Debug` are safe to log.
//! - [`Error`] is `Send + Sync + 'static` and at most three words (large data is boxed).

mod application;
mod close;
mod closed;
mod handshake;
mod protocol;
mod proxy;
pub mod redact;
mod transport;

use http::StatusCode;

pub use application::ApplicationError;
pub use close::{CloseCode, CloseCodeClass, CloseFrame, CloseFrameError, MAX_REASON_LEN};
pub use closed::{ConnectionClosed, PolicyKind, PolicyViolation};
pub use handshake::{
    HandshakeError, HeaderProblem, InvalidHeader, InvalidMessage, InvalidStatus, NegotiationError,
    SecurityError,
};
pub use protocol::{
    ConcurrencyError, InvalidState, Operation, PayloadTooBig, ProtocolError, SizeLimit, State,
};
pub use proxy::{InvalidUri, ProxyError, UriProblem};
pub use transport::{Timeout, TimeoutPhase, TransportError};

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any palisade failure.
///
/// See the crate documentation for how to match it. The tables that classify each variant are
/// on [`Error::close_code`], [`Error::status_to_send`], [`Error::category`] and
/// [`Error::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection closed normally: the close handshake completed with 1000 or 1001.
    #[error("connection closed normally: {0}")]
    ConnectionClosedOk(Box<ConnectionClosed>),
    /// The connection closed with an error code, or without a complete close handshake.
    #[error("connection closed with an error: {0}")]
    ConnectionClosedError(Box<ConnectionClosed>),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[source] Box<HandshakeError>),
    /// The WebSocket URI is not usable.
    #[error(transparent)]
    InvalidUri(Box<InvalidUri>),
    /// A proxy could not be used.
    #[error("proxy failed: {0}")]
    Proxy(#[source] Box<ProxyError>),
    /// The peer violated the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[source] ProtocolError),
    /// A frame or message is over the size limit.
    #[error(transparent)]
    PayloadTooBig(Box<PayloadTooBig>),
    /// A policy of this endpoint (rate limit, slow consumer, authorization) closed the
    /// connection.
    #[error("policy violation: {0}")]
    Policy(#[source] PolicyViolation),
    /// The operation is not allowed in the connection's current state.
    #[error(transparent)]
    InvalidState(InvalidState),
    /// Two tasks tried to receive, or to send on one half, at the same time.
    #[error(transparent)]
    Concurrency(ConcurrencyError),
    /// The transport (TCP, TLS) failed.
    #[error("transport failed: {0}")]
    Transport(#[source] Box<TransportError>),
    /// A deadline passed.
    #[error(transparent)]
    Timeout(Timeout),
    /// A payload or application rule (undecodable or unsupported data, an application policy)
    /// or an application's own close code ended the connection.
    #[error(transparent)]
    Application(Box<ApplicationError>),
}

/// A coarse classification of an [`Error`], for matching and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// The connection is closed ([`Error::ConnectionClosedOk`], [`Error::ConnectionClosedError`]).
    Closed,
    /// The opening handshake failed.
    Handshake,
    /// A security rule refused something (origin, header limits, insecure redirect, certificate).
    Security,
    /// The peer broke the protocol, or a size limit.
    Protocol,
    /// A policy of this endpoint closed the connection.
    Policy,
    /// A proxy failed.
    Proxy,
    /// The URI is unusable.
    Uri,
    /// I/O or TLS failed.
    Transport,
    /// A deadline passed.
    Timeout,
    /// The caller used the connection in a way its state does not allow.
    State,
    /// A payload or application rule, or the application's own close code.
    Application,
}

impl Category {
    /// A stable lower-case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Handshake => "handshake",
            Self::Security => "security",
            Self::Protocol => "protocol",
            Self::Policy => "policy",
            Self::Proxy => "proxy",
            Self::Uri => "uri",
            Self::Transport => "transport",
            Self::Timeout => "timeout",
            Self::State => "state",
            Self::Application => "application",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    /// The closed-connection error for `closed`: [`Error::ConnectionClosedOk`] when the close
    /// handshake completed with 1000 or 1001, [`Error::ConnectionClosedError`] otherwise.
    pub fn closed(closed: ConnectionClosed) -> Self {
        if closed.is_normal() {
            Self::ConnectionClosedOk(Box::new(closed))
        } else {
            Self::ConnectionClosedError(Box::new(closed))
        }
    }

    /// An I/O error from the transport. An `UnexpectedEof` becomes
    /// [`TransportError::UnexpectedEof`]; `InvalidData` becomes [`TransportError::Tls`],
    /// because a TCP socket never reports it and TLS streams (tokio-rustls) report their
    /// failures — bad records, alerts, certificate trouble after the handshake — that way.
    pub fn io(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Self::Transport(Box::new(TransportError::UnexpectedEof))
            }
            std::io::ErrorKind::InvalidData => Self::Transport(Box::new(TransportError::Tls {
                message: err.to_string(),
                source: Some(Box::new(err)),
            })),
            _ => Self::Transport(Box::new(TransportError::Io(err))),
        }
    }

    /// A timeout in `phase`.
    pub fn timeout(phase: TimeoutPhase) -> Self {
        Self::Timeout(Timeout { phase })
    }

    /// The close code this endpoint sends the peer when this error ends the connection, or
    /// `None` when no close frame applies (no connection exists yet, it is already closed, or
    /// the transport is gone).
    ///
    /// | error | code |
    /// |---|---|
    /// | `Protocol` (framing, close frame, inflate) | 1002 |
    /// | `Protocol` (invalid UTF-8) | 1007 |
    /// | `PayloadTooBig` | 1009 |
    /// | `Policy` | its code: 1008, or 1013 if so configured |
    /// | `Handshake(Negotiation(MissingExtension))` | 1010 (client) |
    /// | `Timeout` keepalive | 1011 |
    /// | `Timeout` idle | 1001 |
    /// | `Timeout` first message | 1008 |
    /// | `Timeout` open, handshake, close | none |
    /// | `Application` undecodable payload | 1007 |
    /// | `Application` unsupported data | 1003 |
    /// | `Application` policy | 1008 |
    /// | `Application` unencodable (our value) | 1011 |
    /// | `Application` closed | its code (4000–4999) |
    /// | `ConnectionClosed*`, other `Handshake`, `InvalidUri`, `Proxy`, `InvalidState`, `Concurrency`, `Transport` | none |
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::Protocol(p) => Some(if p.is_invalid_data() {
                CloseCode::INVALID_PAYLOAD
            } else {
                CloseCode::PROTOCOL_ERROR
            }),
            Self::PayloadTooBig(_) => Some(CloseCode::MESSAGE_TOO_BIG),
            Self::Policy(p) => Some(p.code),
            Self::Application(a) => Some(a.code()),
            Self::Handshake(h) => match &**h {
                HandshakeError::Negotiation(NegotiationError::MissingExtension { .. }) => {
                    Some(CloseCode::MANDATORY_EXTENSION)
                }
                HandshakeError::InvalidMessage(_)
                | HandshakeError::InvalidStatus(_)
                | HandshakeError::InvalidHeader(_)
                | HandshakeError::InvalidUpgrade { .. }
                | HandshakeError::UnsupportedVersion { .. }
                | HandshakeError::InvalidOrigin { .. }
                | HandshakeError::Negotiation(_)
                | HandshakeError::Security(_)
                | HandshakeError::Rejected { .. }
                | HandshakeError::TooManyRedirects { .. } => None,
            },
            Self::Timeout(t) => match t.phase {
                TimeoutPhase::Keepalive => Some(CloseCode::INTERNAL_ERROR),
                TimeoutPhase::Idle => Some(CloseCode::GOING_AWAY),
                TimeoutPhase::FirstMessage => Some(CloseCode::POLICY_VIOLATION),
                TimeoutPhase::Connect
                | TimeoutPhase::Tls
                | TimeoutPhase::Response
                | TimeoutPhase::Handshake
                | TimeoutPhase::Close => None,
            },
            Self::ConnectionClosedOk(_)
            | Self::ConnectionClosedError(_)
            | Self::InvalidUri(_)
            | Self::Proxy(_)
            | Self::InvalidState(_)
            | Self::Concurrency(_)
            | Self::Transport(_) => None,
        }
    }

    /// The HTTP status *owed to the peer* for a handshake-phase failure: what a server answers
    /// an upgrade request with when this is why it refuses it. `None` for everything else —
    /// including every failure a client sees in the server's answer, where no status is owed
    /// (the status the server *sent* is [`Error::received_status`]).
    ///
    /// | error | status |
    /// |---|---|
    /// | `InvalidMessage` malformed, incomplete, unexpected | 400 |
    /// | `InvalidMessage` method not GET | 405 |
    /// | `InvalidMessage` HTTP/1.0 | 505 |
    /// | `InvalidHeader`, `Negotiation` (no common subprotocol, bad parameters) | 400 |
    /// | `InvalidUpgrade`, `UnsupportedVersion` | 426 |
    /// | `InvalidOrigin` | 403 |
    /// | `Security` request line too long | 414 |
    /// | `Security` header line, header count, head size | 431 |
    /// | `Rejected` | its status |
    /// | `InvalidStatus` (a client's: the server refused) | none: see [`Error::received_status`] |
    /// | `Timeout` handshake | 408 |
    /// | anything else | none |
    ///
    /// On a client, the errors above describe the server's answer (a `101` with a wrong
    /// `Sec-WebSocket-Accept` is an `InvalidHeader`): the status they map to is what a server
    /// would owe for such a request, not anything the server said. Read
    /// [`Error::received_status`] there.
    pub fn status_to_send(&self) -> Option<StatusCode> {
        match self {
            Self::Handshake(h) => match &**h {
                HandshakeError::InvalidMessage(m) => Some(match m {
                    InvalidMessage::Malformed { .. }
                    | InvalidMessage::Incomplete
                    | InvalidMessage::Unexpected { .. } => StatusCode::BAD_REQUEST,
                    InvalidMessage::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
                    InvalidMessage::UnsupportedHttpVersion { .. } => {
                        StatusCode::HTTP_VERSION_NOT_SUPPORTED
                    }
                }),
                HandshakeError::InvalidStatus(_) => None,
                HandshakeError::InvalidHeader(_) => Some(StatusCode::BAD_REQUEST),
                HandshakeError::InvalidUpgrade { .. }
                | HandshakeError::UnsupportedVersion { .. } => Some(StatusCode::UPGRADE_REQUIRED),
                HandshakeError::InvalidOrigin { .. } => Some(StatusCode::FORBIDDEN),
                HandshakeError::Negotiation(n) => match n {
                    NegotiationError::NoCommonSubprotocol
                    | NegotiationError::DuplicateParameter { .. }
                    | NegotiationError::InvalidParameterName { .. }
                    | NegotiationError::InvalidParameterValue { .. } => {
                        Some(StatusCode::BAD_REQUEST)
                    }
                    NegotiationError::UnofferedSubprotocol { .. }
                    | NegotiationError::UnofferedExtension { .. }
                    | NegotiationError::MissingExtension { .. } => None,
                },
                HandshakeError::Security(s) => match s {
                    SecurityError::RequestLineTooLong { .. } => Some(StatusCode::URI_TOO_LONG),
                    SecurityError::HeaderLineTooLong { .. }
                    | SecurityError::TooManyHeaders { .. }
                    | SecurityError::HeadTooLarge { .. } => {
                        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                    }
                    SecurityError::InsecureRedirect | SecurityError::Certificate { .. } => None,
                },
                HandshakeError::Rejected { status, .. } => Some(*status),
                HandshakeError::TooManyRedirects { .. } => None,
            },
            Self::Timeout(t) => match t.phase {
                TimeoutPhase::Handshake => Some(StatusCode::REQUEST_TIMEOUT),
                TimeoutPhase::Connect
                | TimeoutPhase::Tls
                | TimeoutPhase::Response
                | TimeoutPhase::Close
                | TimeoutPhase::Keepalive
                | TimeoutPhase::Idle
                | TimeoutPhase::FirstMessage => None,
            },
            Self::ConnectionClosedOk(_)
            | Self::ConnectionClosedError(_)
            | Self::InvalidUri(_)
            | Self::Proxy(_)
            | Self::Protocol(_)
            | Self::PayloadTooBig(_)
            | Self::Policy(_)
            | Self::InvalidState(_)
            | Self::Concurrency(_)
            | Self::Transport(_)
            | Self::Application(_) => None,
        }
    }

    /// The HTTP status *received from the peer*: the status a server refused a client's
    /// upgrade with ([`HandshakeError::InvalidStatus`], whose headers and body say more).
    /// `None` for every other error, including a `101` that failed its checks.
    pub fn received_status(&self) -> Option<StatusCode> {
        if let Self::Handshake(h) = self
            && let HandshakeError::InvalidStatus(s) = &**h
        {
            return Some(s.status());
        }
        None
    }

    /// The coarse category.
    ///
    /// | error | category |
    /// |---|---|
    /// | `ConnectionClosedOk`, `ConnectionClosedError` | closed |
    /// | `Handshake` (except the two below) | handshake |
    /// | `Handshake(InvalidOrigin)`, `Handshake(Security(_))` | security |
    /// | `InvalidUri` | uri |
    /// | `Proxy` | proxy |
    /// | `Protocol`, `PayloadTooBig` | protocol |
    /// | `Policy` | policy |
    /// | `InvalidState`, `Concurrency` | state |
    /// | `Transport` | transport |
    /// | `Timeout` | timeout |
    /// | `Application` | application |
    pub fn category(&self) -> Category {
        match self {
            Self::ConnectionClosedOk(_) | Self::ConnectionClosedError(_) => Category::Closed,
            Self::Handshake(h) => match &**h {
                HandshakeError::InvalidOrigin { .. } | HandshakeError::Security(_) => {
                    Category::Security
                }
                HandshakeError::InvalidMessage(_)
                | HandshakeError::InvalidStatus(_)
                | HandshakeError::InvalidHeader(_)
                | HandshakeError::InvalidUpgrade { .. }
                | HandshakeError::UnsupportedVersion { .. }
                | HandshakeError::Negotiation(_)
                | HandshakeError::Rejected { .. }
                | HandshakeError::TooManyRedirects { .. } => Category::Handshake,
            },
            Self::InvalidUri(_) => Category::Uri,
            Self::Proxy(_) => Category::Proxy,
            Self::Protocol(_) | Self::PayloadTooBig(_) => Category::Protocol,
            Self::Policy(_) => Category::Policy,
            Self::InvalidState(_) | Self::Concurrency(_) => Category::State,
            Self::Transport(_) => Category::Transport,
            Self::Timeout(_) => Category::Timeout,
            Self::Application(_) => Category::Application,
        }
    }

    /// Whether connecting again (after a backoff) may succeed.
    ///
    /// | error | retry |
    /// |---|---|
    /// | closed with 1001, 1006 (no close frame), 1011, 1012, 1013, 1014 | yes |
    /// | closed otherwise (1000, 1002, 1008 …) | no |
    /// | `InvalidStatus` / `Rejected` with 408, 429 or 5xx | yes |
    /// | other handshake errors, security, URI | no |
    /// | `InvalidProxyStatus` 429 or 5xx | yes |
    /// | other proxy errors | no |
    /// | `Protocol`, `PayloadTooBig`, `InvalidState`, `Concurrency` | no |
    /// | `Policy` with 1013 | yes |
    /// | `Policy` with another code | no |
    /// | `Transport` I/O and unexpected EOF | yes |
    /// | `Transport` TLS | no |
    /// | `Timeout` | yes |
    /// | `Application` | no |
    pub fn is_retryable(&self) -> bool {
        fn status_retryable(status: u16) -> bool {
            status == 408 || status == 429 || (500..600).contains(&status)
        }
        match self {
            Self::ConnectionClosedOk(c) | Self::ConnectionClosedError(c) => matches!(
                c.code(),
                CloseCode::GOING_AWAY
                    | CloseCode::ABNORMAL
                    | CloseCode::INTERNAL_ERROR
                    | CloseCode::SERVICE_RESTART
                    | CloseCode::TRY_AGAIN_LATER
                    | CloseCode::BAD_GATEWAY
            ),
            Self::Handshake(h) => match &**h {
                HandshakeError::InvalidStatus(s) => status_retryable(s.status().as_u16()),
                HandshakeError::Rejected { status, .. } => status_retryable(status.as_u16()),
                HandshakeError::InvalidMessage(_)
                | HandshakeError::InvalidHeader(_)
                | HandshakeError::InvalidUpgrade { .. }
                | HandshakeError::UnsupportedVersion { .. }
                | HandshakeError::InvalidOrigin { .. }
                | HandshakeError::Negotiation(_)
                | HandshakeError::Security(_)
                | HandshakeError::TooManyRedirects { .. } => false,
            },
            Self::Proxy(p) => match &**p {
                ProxyError::InvalidProxyStatus { status, .. } => status_retryable(*status),
                ProxyError::InvalidProxy { .. } | ProxyError::InvalidProxyMessage { .. } => false,
            },
            Self::Policy(p) => p.code == CloseCode::TRY_AGAIN_LATER,
            Self::Transport(t) => match &**t {
                TransportError::Io(_) | TransportError::UnexpectedEof => true,
                TransportError::Tls { .. } => false,
            },
            Self::Timeout(_) => true,
            Self::InvalidUri(_)
            | Self::Protocol(_)
            | Self::PayloadTooBig(_)
            | Self::InvalidState(_)
            | Self::Concurrency(_)
            | Self::Application(_) => false,
        }
    }

    /// For a closed connection, the close frames exchanged.
    pub fn connection_closed(&self) -> Option<&ConnectionClosed> {
        match self {
            Self::ConnectionClosedOk(c) | Self::ConnectionClosedError(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this is [`Error::ConnectionClosedOk`]: the normal end of a connection, not a
    /// failure.
    pub fn is_closed_ok(&self) -> bool {
        matches!(self, Self::ConnectionClosedOk(_))
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(Box::new(e))
    }
}

impl From<InvalidMessage> for Error {
    fn from(e: InvalidMessage) -> Self {
        HandshakeError::InvalidMessage(e).into()
    }
}

impl From<InvalidHeader> for Error {
    fn from(e: InvalidHeader) -> Self {
        HandshakeError::InvalidHeader(e).into()
    }
}

impl From<InvalidStatus> for Error {
    fn from(e: InvalidStatus) -> Self {
        HandshakeError::InvalidStatus(e).into()
    }
}

impl From<NegotiationError> for Error {
    fn from(e: NegotiationError) -> Self {
        HandshakeError::Negotiation(e).into()
    }
}

impl From<SecurityError> for Error {
    fn from(e: SecurityError) -> Self {
        HandshakeError::Security(e).into()
    }
}

impl From<InvalidUri> for Error {
    fn from(e: InvalidUri) -> Self {
        Self::InvalidUri(Box::new(e))
    }
}

impl From<ProxyError> for Error {
    fn from(e: ProxyError) -> Self {
        Self::Proxy(Box::new(e))
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<PayloadTooBig> for Error {
    fn from(e: PayloadTooBig) -> Self {
        Self::PayloadTooBig(Box::new(e))
    }
}

impl From<PolicyViolation> for Error {
    fn from(e: PolicyViolation) -> Self {
        Self::Policy(e)
    }
}

impl From<InvalidState> for Error {
    fn from(e: InvalidState) -> Self {
        Self::InvalidState(e)
    }
}

impl From<ConcurrencyError> for Error {
    fn from(e: ConcurrencyError) -> Self {
        Self::Concurrency(e)
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Self::Transport(Box::new(e))
    }
}

impl From<Timeout> for Error {
    fn from(e: Timeout) -> Self {
        Self::Timeout(e)
    }
}

impl From<ApplicationError> for Error {
    fn from(e: ApplicationError) -> Self {
        Self::Application(Box::new(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::io(e)
    }
}

#[cfg(test)]
mod tests;
