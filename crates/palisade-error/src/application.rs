//! Failures above the protocol: a payload the application cannot decode or does not accept, a
//! rule of the application's, or an ending the application chose with a code of its own.

use crate::close::{CloseCode, CloseFrame};

/// A payload or application rule ended the connection (or, in a message layer that answers
/// with error replies instead, refused one message). Each kind has its close code (RFC 6455
/// §7.4.1) and is never retryable: the same input fails the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationError {
    /// A message could not be decoded in the application's format (malformed JSON, a wrong
    /// shape). Close 1007 Invalid Payload Data. `detail` is for logs; the close reason stays
    /// generic, since it may quote the peer's input.
    #[error("undecodable {format} payload: {detail}")]
    UndecodablePayload {
        /// The format expected (`"JSON"`, `"MessagePack"` …).
        format: &'static str,
        /// What was wrong, for logs.
        detail: String,
    },
    /// A message of a kind the application does not accept (binary where text is expected).
    /// Close 1003 Unsupported Data.
    #[error("unsupported data: {detail}")]
    UnsupportedData {
        /// What was refused, for logs.
        detail: String,
    },
    /// A rule of the application refused the peer (not allowed in this room, banned). Close
    /// 1008 Policy Violation.
    #[error("application policy violated: {detail}")]
    PolicyViolation {
        /// Which rule, for logs.
        detail: String,
    },
    /// One of our own values could not be encoded for the peer (a map with keys that are not
    /// strings in JSON, a `Serialize` implementation that failed). Nothing was sent. Close 1011
    /// Internal Error: the fault is ours, and the close reason stays generic.
    #[error("our {format} value could not be encoded: {detail}")]
    Unencodable {
        /// The format (`"JSON"`, `"MessagePack"` …).
        format: &'static str,
        /// What failed, for logs.
        detail: String,
    },
    /// The application ended the connection with a code of its own (4000–4999) and a reason
    /// meant for the peer: build it with [`ApplicationError::closed`].
    #[error("closed by the application with {frame}")]
    Closed {
        /// The frame sent.
        frame: CloseFrame,
    },
}

impl ApplicationError {
    /// An ending with an application code (4000–4999; anything else is refused, returning
    /// `None`) and a reason for the peer, cut to 123 bytes.
    pub fn closed(code: CloseCode, reason: &str) -> Option<Self> {
        (4000..=4999)
            .contains(&code.0)
            .then(|| Self::Closed { frame: CloseFrame::lossy(code, reason) })
    }

    /// The close code this error ends a connection with.
    pub fn code(&self) -> CloseCode {
        match self {
            Self::UndecodablePayload { .. } => CloseCode::INVALID_PAYLOAD,
            Self::UnsupportedData { .. } => CloseCode::UNSUPPORTED_DATA,
            Self::PolicyViolation { .. } => CloseCode::POLICY_VIOLATION,
            Self::Unencodable { .. } => CloseCode::INTERNAL_ERROR,
            Self::Closed { frame } => frame.code(),
        }
    }
}
