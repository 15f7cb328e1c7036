//! Error codes, error replies, and how an application's errors become one or the other.

use std::borrow::Cow;
use std::fmt;

use palisade_error::{CloseCode, CloseFrame};
use serde::Serialize;
use serde_json::Value;

/// The `code` of an error reply: a stable `snake_case` string the peer can match on.
///
/// The built-in codes are raised by this crate when a message never reaches the application;
/// [`ErrorCode::App`] carries the application's own codes. Each code's class (whether it
/// counts as a strike, and which close code ends a connection that strikes out on it) is one
/// exhaustive match, [`ErrorCode::strike`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `malformed`: the frame is not valid JSON (or MessagePack). The message names the line
    /// and column, never the input.
    Malformed,
    /// `too_large`: the frame is larger than [`crate::Limits::max_size`]; nothing of it was
    /// parsed.
    TooLarge,
    /// `too_deep`: the frame nests deeper than [`crate::Limits::max_depth`]; found by a byte
    /// scan before parsing.
    TooDeep,
    /// `invalid_envelope`: the frame is JSON but not an envelope of wire format v1 (not an
    /// object; a key missing, unknown or of the wrong type; an id out of range).
    InvalidEnvelope,
    /// `unknown_event`: the application's message type has no such event.
    UnknownEvent,
    /// `invalid_payload`: `data` does not have the shape the event needs. The message is
    /// serde's, stripped of the peer's values; the path starts with `data`.
    InvalidPayload,
    /// `validation_failed`: `data` has the right shape but breaks a rule of the application
    /// ([`crate::Validate`]).
    ValidationFailed,
    /// `unknown_reply`: a reply to an id for which no request was ever sent.
    UnknownReply,
    /// `unsupported_data`: a binary frame where text is expected, or the other way round.
    UnsupportedData,
    /// `no_reply`: the application dropped a request without replying to it.
    NoReply,
    /// `internal`: the application failed and chose not to say how
    /// ([`ErrorReply::internal`]).
    Internal,
    /// An application's own code.
    App(AppCode),
}

/// What a failure counts for under the [strike policy](crate::StrikePolicy), and the close code
/// a connection that strikes out on it is closed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StrikeClass {
    /// The bytes are not what the format promises (RFC 6455 §7.4.1: 1007, data inconsistent
    /// with the type of the message).
    Undecodable,
    /// Well-formed, but against a rule of this endpoint (1008 Policy Violation).
    Policy,
    /// Larger than this endpoint will process (1009 Message Too Big).
    TooBig,
    /// A frame type this endpoint does not accept (1003 Unsupported Data).
    Unsupported,
}

impl StrikeClass {
    /// The close code a connection that strikes out on this class is closed with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::Undecodable => CloseCode::INVALID_PAYLOAD,
            Self::Policy => CloseCode::POLICY_VIOLATION,
            Self::TooBig => CloseCode::MESSAGE_TOO_BIG,
            Self::Unsupported => CloseCode::UNSUPPORTED_DATA,
        }
    }
}

impl ErrorCode {
    /// The code on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::TooDeep => "too_deep",
            Self::InvalidEnvelope => "invalid_envelope",
            Self::UnknownEvent => "unknown_event",
            Self::InvalidPayload => "invalid_payload",
            Self::ValidationFailed => "validation_failed",
            Self::UnknownReply => "unknown_reply",
            Self::UnsupportedData => "unsupported_data",
            Self::NoReply => "no_reply",
            Self::Internal => "internal",
            Self::App(code) => code.as_str(),
        }
    }

    /// Whether the peer's failure counts as a strike, and of which class. Failures of the
    /// application (its own codes, `internal`, `no_reply`) are not the peer's and never count.
    ///
    /// | code | class | close code on striking out |
    /// |---|---|---|
    /// | `malformed`, `invalid_envelope`, `invalid_payload` | undecodable | 1007 |
    /// | `unknown_event`, `validation_failed`, `unknown_reply`, `too_deep` | policy | 1008 |
    /// | `too_large` | too big | 1009 |
    /// | `unsupported_data` | unsupported | 1003 |
    /// | `no_reply`, `internal`, application codes | — | — |
    pub fn strike(&self) -> Option<StrikeClass> {
        match self {
            Self::Malformed | Self::InvalidEnvelope | Self::InvalidPayload => {
                Some(StrikeClass::Undecodable)
            }
            Self::UnknownEvent | Self::ValidationFailed | Self::UnknownReply | Self::TooDeep => {
                Some(StrikeClass::Policy)
            }
            Self::TooLarge => Some(StrikeClass::TooBig),
            Self::UnsupportedData => Some(StrikeClass::Unsupported),
            Self::NoReply | Self::Internal | Self::App(_) => None,
        }
    }

    /// The fixed message sent with this code when there is nothing more precise to say.
    pub fn generic_message(&self) -> &'static str {
        match self {
            Self::Malformed => "the message is not well-formed",
            Self::TooLarge => "the message is larger than the limit",
            Self::TooDeep => "the message nests deeper than the limit",
            Self::InvalidEnvelope => "the message is not a valid envelope",
            Self::UnknownEvent => "no such event",
            Self::InvalidPayload => "the data does not have the shape the event needs",
            Self::ValidationFailed => "the data failed validation",
            Self::UnknownReply => "a reply to no request that was sent",
            Self::UnsupportedData => "this frame type is not accepted",
            Self::NoReply => "the request was not answered",
            Self::Internal => "internal error",
            Self::App(_) => "the request was refused",
        }
    }

    /// The code a peer sent: a built-in code, or an application code when it is `snake_case`;
    /// `None` otherwise.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "malformed" => Self::Malformed,
            "too_large" => Self::TooLarge,
            "too_deep" => Self::TooDeep,
            "invalid_envelope" => Self::InvalidEnvelope,
            "unknown_event" => Self::UnknownEvent,
            "invalid_payload" => Self::InvalidPayload,
            "validation_failed" => Self::ValidationFailed,
            "unknown_reply" => Self::UnknownReply,
            "unsupported_data" => Self::UnsupportedData,
            "no_reply" => Self::NoReply,
            "internal" => Self::Internal,
            other => Self::App(AppCode::new(other.to_owned()).ok()?),
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An application's error code: 1 to 64 bytes of `[a-z0-9_]`, starting with a letter, and not
/// one of the built-in codes (so a peer can always tell who refused its message).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppCode(Cow<'static, str>);

/// Why a string is not an [`AppCode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCode {
    /// Empty, longer than 64 bytes, or not `snake_case` (`[a-z][a-z0-9_]*`).
    #[error("an error code must be 1 to 64 bytes of snake_case")]
    NotSnakeCase,
    /// One of the built-in codes, which only this crate raises.
    #[error("`{0}` is a built-in error code")]
    BuiltIn(&'static str),
}

impl AppCode {
    /// An application code; see the type for the rules.
    pub fn new(code: impl Into<Cow<'static, str>>) -> Result<Self, InvalidCode> {
        let code = code.into();
        let bytes = code.as_bytes();
        let snake = (1..=64).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !snake {
            return Err(InvalidCode::NotSnakeCase);
        }
        if let Some(built_in) = BUILT_IN.iter().find(|b| **b == code) {
            return Err(InvalidCode::BuiltIn(built_in));
        }
        Ok(Self(code))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Every built-in code, for [`AppCode::new`] (a test checks it against [`ErrorCode::parse`]).
const BUILT_IN: [&str; 11] = [
    "malformed",
    "too_large",
    "too_deep",
    "invalid_envelope",
    "unknown_event",
    "invalid_payload",
    "validation_failed",
    "unknown_reply",
    "unsupported_data",
    "no_reply",
    "internal",
];

/// The `error` object of an error reply: a code, a message for humans, and optionally the path
/// of the offending field (`data.text`) and details for programs.
///
/// What this crate puts in it never contains the peer's values. An application builds its own
/// with [`ErrorReply::new`]; nothing of a server error's `Display` goes out unless the
/// application asks for it by name ([`ErrorReply::exposing`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorReply(Box<Parts>);

/// Boxed: error replies travel inside `Result`s, which stay one pointer wide.
#[derive(Clone, Debug, PartialEq)]
struct Parts {
    code: ErrorCode,
    message: Cow<'static, str>,
    path: Option<String>,
    details: Option<Value>,
}

impl ErrorReply {
    /// An application's error reply.
    pub fn new(code: AppCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::App(code), message)
    }

    /// `internal` with a fixed message: for failures whose cause the peer must not learn.
    pub fn internal() -> Self {
        Self::with_code(ErrorCode::Internal, ErrorCode::Internal.generic_message())
    }

    /// An application's error reply whose message is `error`'s `Display`. Only for errors
    /// whose text is meant for the peer: a server error's text often holds paths, queries or
    /// other users' data.
    pub fn exposing(code: AppCode, error: &dyn fmt::Display) -> Self {
        Self::with_code(ErrorCode::App(code), error.to_string())
    }

    pub(crate) fn with_code(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(Parts { code, message: message.into(), path: None, details: None }))
    }

    pub(crate) fn generic(code: ErrorCode) -> Self {
        let message = code.generic_message();
        Self::with_code(code, message)
    }

    /// With the path of the offending field, as `data.…`.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.0.path = Some(path.into());
        self
    }

    /// With details for programs.
    pub fn with_details(mut self, details: Value) -> Self {
        self.0.details = Some(details);
        self
    }

    /// The code.
    pub fn code(&self) -> &ErrorCode {
        &self.0.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The path of the offending field, if any.
    pub fn path(&self) -> Option<&str> {
        self.0.path.as_deref()
    }

    /// The details, if any.
    pub fn details(&self) -> Option<&Value> {
        self.0.details.as_ref()
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)?;
        if let Some(path) = &self.0.path {
            write!(f, " (at {path})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorReply {}

impl Serialize for ErrorReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Parts { code, message, path, details } = &*self.0;
        let len = 2 + usize::from(path.is_some()) + usize::from(details.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("code", code.as_str())?;
        map.serialize_entry("message", message)?;
        if let Some(path) = path {
            map.serialize_entry("path", path)?;
        }
        if let Some(details) = details {
            map.serialize_entry("details", details)?;
        }
        map.end()
    }
}

/// What an application's error does to a request: an error reply, or the end of the
/// connection.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Answer with this error reply; the connection goes on.
    Reply(ErrorReply),
    /// Close the connection with this frame (the peer is told nothing more).
    Close(CloseFrame),
}

/// An application error that can answer a request ([`crate::Request::reply_error`]).
///
/// Implement it for your error type, mapping each variant to a code of your own, or to
/// [`ErrorReply::internal`] for failures the peer must not learn about.
pub trait ReplyError {
    /// What this error does to the request.
    fn outcome(&self) -> Outcome;
}

impl ReplyError for ErrorReply {
    fn outcome(&self) -> Outcome {
        Outcome::Reply(self.clone())
    }
}

impl ReplyError for Outcome {
    fn outcome(&self) -> Outcome {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_built_in_code_parses_to_itself_and_is_no_app_code() {
        for code in BUILT_IN {
            let parsed = ErrorCode::parse(code).unwrap();
            assert!(!matches!(parsed, ErrorCode::App(_)), "{code}");
            assert_eq!(parsed.as_str(), code);
            assert_eq!(AppCode::new(code), Err(InvalidCode::BuiltIn(code)));
        }
    }

    #[test]
    fn app_codes_are_snake_case() {
        assert_eq!(AppCode::new("room_full").unwrap().as_str(), "room_full");
        assert_eq!(AppCode::new("e2").unwrap().as_str(), "e2");
        for bad in ["", "Room", "2fa", "room-full", "room full", "_x", &"a".repeat(65)] {
            assert_eq!(AppCode::new(bad.to_owned()), Err(InvalidCode::NotSnakeCase), "{bad:?}");
        }
        assert_eq!(ErrorCode::parse("NotOurs"), None);
        assert_eq!(ErrorCode::parse("room_full").unwrap().as_str(), "room_full");
    }

    #[test]
    fn strike_classes() {
        use StrikeClass::*;
        let rows = [
            (ErrorCode::Malformed, Some(Undecodable)),
            (ErrorCode::InvalidEnvelope, Some(Undecodable)),
            (ErrorCode::InvalidPayload, Some(Undecodable)),
            (ErrorCode::UnknownEvent, Some(Policy)),
            (ErrorCode::ValidationFailed, Some(Policy)),
            (ErrorCode::UnknownReply, Some(Policy)),
            (ErrorCode::TooDeep, Some(Policy)),
            (ErrorCode::TooLarge, Some(TooBig)),
            (ErrorCode::UnsupportedData, Some(Unsupported)),
            (ErrorCode::NoReply, None),
            (ErrorCode::Internal, None),
            (ErrorCode::App(AppCode::new("room_full").unwrap()), None),
        ];
        for (code, class) in rows {
            assert_eq!(code.strike(), class, "{code}");
        }
        assert_eq!(Undecodable.close_code(), CloseCode::INVALID_PAYLOAD);
        assert_eq!(Policy.close_code(), CloseCode::POLICY_VIOLATION);
        assert_eq!(TooBig.close_code(), CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(Unsupported.close_code(), CloseCode::UNSUPPORTED_DATA);
    }

    #[test]
    fn error_reply_serializes_only_what_is_set() {
        let reply = ErrorReply::new(AppCode::new("room_full").unwrap(), "the room is full");
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            serde_json::json!({"code": "room_full", "message": "the room is full"})
        );
        let reply = reply.with_path("data.room").with_details(serde_json::json!({"max": 10}));
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            serde_json::json!({"code": "room_full", "message": "the room is full",
                "path": "data.room", "details": {"max": 10}})
        );
        assert_eq!(reply.to_string(), "room_full: the room is full (at data.room)");
    }
}
