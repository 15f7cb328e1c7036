//! The connection is closed: how, and who said what.

use std::fmt;

use crate::close::{CloseCode, CloseFrame};

/// A connection that has closed, with the close frames exchanged.
///
/// Returned (inside [`crate::Error::ConnectionClosedOk`] or
/// [`crate::Error::ConnectionClosedError`]) by every operation on a closed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionClosed {
    /// The close frame received from the peer, if one arrived.
    pub received: Option<CloseFrame>,
    /// The close frame we sent, if one went out.
    pub sent: Option<CloseFrame>,
    /// `Some(true)` when the peer's close arrived before ours went out, `Some(false)` when ours
    /// went first, `None` when the handshake did not complete (one or both frames missing).
    pub received_then_sent: Option<bool>,
}

impl ConnectionClosed {
    /// A connection that ended without any close frame (TCP dropped): 1006.
    pub fn abnormal() -> Self {
        Self { received: None, sent: None, received_then_sent: None }
    }

    /// Whether this is a normal closure: both frames exchanged with 1000 or 1001 (or the peer's
    /// frame without a status, 1005), like Python websockets' `ConnectionClosedOK`.
    pub fn is_normal(&self) -> bool {
        let ok = |f: &Option<CloseFrame>| {
            matches!(
                f.as_ref().map(CloseFrame::code),
                Some(CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS)
            )
        };
        self.received_then_sent.is_some() && ok(&self.received) && ok(&self.sent)
    }

    /// The code that describes the closure: the peer's if it sent one, else ours, else 1006.
    pub fn code(&self) -> CloseCode {
        self.received.as_ref().or(self.sent.as_ref()).map_or(CloseCode::ABNORMAL, CloseFrame::code)
    }

    /// The reason that goes with [`ConnectionClosed::code`] (empty for 1006).
    pub fn reason(&self) -> &str {
        self.received.as_ref().or(self.sent.as_ref()).map_or("", CloseFrame::reason)
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.received, &self.sent, self.received_then_sent) {
            (Some(r), Some(s), Some(true)) => {
                write!(f, "received close frame {r}; then sent close frame {s}")
            }
            (Some(r), Some(s), _) => {
                write!(f, "sent close frame {s}; then received close frame {r}")
            }
            (Some(r), None, _) => write!(f, "received close frame {r}; no close frame sent"),
            (None, Some(s), _) => write!(f, "sent close frame {s}; no close frame received"),
            (None, None, _) => f.write_str("no close frame received or sent"),
        }
    }
}

/// A policy of this endpoint ended the connection after it opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct PolicyViolation {
    /// Which policy.
    pub kind: PolicyKind,
    /// The code sent: 1008 by default, 1013 where the user chose "try again later".
    pub code: CloseCode,
}

/// Which policy a [`PolicyViolation`] enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyKind {
    /// The peer sent messages faster than the rate limit allows.
    RateLimited,
    /// The peer did not read fast enough and our write buffer stayed full.
    SlowConsumer,
    /// The peer did not authenticate in time or presented bad credentials after opening.
    Unauthorized,
    /// The peer sent a message type the application does not accept.
    UnsupportedData,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RateLimited => "peer exceeded the rate limit",
            Self::SlowConsumer => "peer is not reading fast enough",
            Self::Unauthorized => "peer is not authorized",
            Self::UnsupportedData => "peer sent a message type that is not accepted",
        })
    }
}
