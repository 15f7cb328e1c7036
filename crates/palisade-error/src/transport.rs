//! Failures below the WebSocket protocol: I/O, TLS, and timeouts.

use std::fmt;

/// The transport under the connection failed. No close frame can be sent (1006, or 1015 for TLS,
/// is reported locally).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Reading or writing the socket failed (reset, broken pipe, refused, DNS …). Retryable.
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The peer closed the TCP connection without a close handshake. Retryable; reported as
    /// 1006 Abnormal Closure.
    #[error("connection closed without a close frame")]
    UnexpectedEof,
    /// The TLS layer failed (handshake alert, bad record …). Not retryable.
    #[error("TLS error: {message}")]
    Tls {
        /// What TLS reported.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

/// A deadline passed. Retryable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out during {phase}")]
pub struct Timeout {
    /// What was being waited for.
    pub phase: TimeoutPhase,
}

/// What a [`Timeout`] was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// A client's open timeout passed while connecting: DNS, TCP, a proxy's tunnel.
    Connect,
    /// A client's open timeout passed during the TLS handshake.
    Tls,
    /// A client's open timeout passed while waiting for the server's answer to the upgrade
    /// request: the server accepted TCP (and TLS) but did not answer in time.
    Response,
    /// Receiving the opening handshake request (server; slowloris defence). 408.
    Handshake,
    /// Waiting for the peer's close frame or TCP close after ours.
    Close,
    /// Waiting for a pong after a keepalive ping. Close 1011.
    Keepalive,
    /// No message in either direction for the idle limit. Close 1001.
    Idle,
    /// A first message (carrying credentials, say) did not arrive in time. Close 1008.
    FirstMessage,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect (DNS, TCP, proxy)",
            Self::Tls => "TLS handshake",
            Self::Response => "opening handshake (waiting for the server's response)",
            Self::Handshake => "opening handshake (request)",
            Self::Close => "closing handshake",
            Self::Keepalive => "keepalive ping",
            Self::Idle => "idle period",
            Self::FirstMessage => "wait for the first message",
        })
    }
}
