//! What can go wrong with rooms: [`RoomsError`] for callers, the error reply each one gives a
//! client, and [`BackendError`] for a backend's failures.

use std::borrow::Cow;

use palisade_json::{AppCode, EncodeError, ErrorReply, Outcome, ReplyError};

/// Why a rooms operation failed. Each variant maps to one error reply ([`RoomsError::reply`])
/// whose message is fixed: nothing the peer sent and nothing of the backend's failure goes
/// out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomsError {
    /// Nobody of that name is connected (on any node). Reply `no_such_user`.
    #[error("no user of that name is connected")]
    NoSuchUser,
    /// The user has a session already and [`SessionPolicy::Refuse`](crate::SessionPolicy)
    /// is in force. Reply `session_refused`.
    #[error("the user has a session already and only one is allowed")]
    SessionRefused,
    /// The room name is empty or longer than [`RoomsConfig::max_room_name`](crate::RoomsConfig).
    /// Reply `invalid_room`.
    #[error("a room name must be 1 to {max} bytes, got {len}")]
    InvalidRoom {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The session is in [`RoomsConfig::max_rooms_per_session`](crate::RoomsConfig) rooms
    /// already. Reply `too_many_rooms`.
    #[error("a session may be in at most {max} rooms")]
    TooManyRooms {
        /// The limit.
        max: usize,
    },
    /// The session is in that room already. Reply `already_joined`.
    #[error("the session is in that room already")]
    AlreadyJoined,
    /// The session is not in that room. Reply `not_joined`.
    #[error("the session is not in that room")]
    NotJoined,
    /// The session has ended. Reply `internal` (a client never sees it: its connection is
    /// gone).
    #[error("the session has ended")]
    SessionEnded,
    /// The data could not be encoded as JSON. Reply `internal`.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The backend failed (Redis unreachable, a node request timed out). Local delivery has
    /// gone on where it could. Reply `unavailable`.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl RoomsError {
    /// Whether trying again later may succeed (a backend that comes back).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend(err) => err.is_retryable(),
            Self::NoSuchUser
            | Self::SessionRefused
            | Self::InvalidRoom { .. }
            | Self::TooManyRooms { .. }
            | Self::AlreadyJoined
            | Self::NotJoined
            | Self::SessionEnded
            | Self::Encode(_) => false,
        }
    }

    /// The error reply a client gets for it: a fixed text per code.
    pub fn reply(&self) -> ErrorReply {
        let (code, message): (&'static str, &'static str) = match self {
            Self::NoSuchUser => ("no_such_user", "no user of that name is connected"),
            Self::SessionRefused => ("session_refused", "only one session per user is allowed"),
            Self::InvalidRoom { .. } => ("invalid_room", "the room name is empty or too long"),
            Self::TooManyRooms { .. } => ("too_many_rooms", "the session is in too many rooms"),
            Self::AlreadyJoined => ("already_joined", "the session is in that room already"),
            Self::NotJoined => ("not_joined", "the session is not in that room"),
            Self::Backend(_) => ("unavailable", "the service is unavailable; try again later"),
            Self::SessionEnded | Self::Encode(_) => return ErrorReply::internal(),
        };
        let reply = ErrorReply::new(app_code(code), message);
        match self {
            Self::InvalidRoom { max, .. } => {
                reply.with_path("data.room").with_details(serde_json::json!({ "max": max }))
            }
            Self::TooManyRooms { max } => reply.with_details(serde_json::json!({ "max": max })),
            _ => reply,
        }
    }
}

impl ReplyError for RoomsError {
    fn outcome(&self) -> Outcome {
        Outcome::Reply(self.reply())
    }
}

/// An application code of this crate's.
pub(crate) fn app_code(code: &'static str) -> AppCode {
    AppCode::new(code).expect("this crate's codes are snake_case and not built-in (tested)")
}

/// Why a backend could not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend's service cannot be reached (connection refused or lost). Retry later:
    /// the backend reconnects by itself.
    #[error("{backend} is unavailable: {detail}")]
    Unavailable {
        /// The backend's name (`redis`).
        backend: &'static str,
        /// What failed, for logs.
        detail: Cow<'static, str>,
    },
    /// The answer did not come within the deadline (a request between nodes, a command).
    #[error("{what} timed out")]
    Timeout {
        /// What was asked.
        what: &'static str,
    },
    /// Too much is waiting for the service already: the backend's queue of `limit` requests
    /// is full (Redis not keeping up with the publications). Nothing was sent; retry after a
    /// delay.
    #[error("{backend} is overloaded: {limit} requests are waiting already")]
    Overloaded {
        /// The backend's name.
        backend: &'static str,
        /// The queue's capacity.
        limit: usize,
    },
    /// The service answered something this backend does not understand.
    #[error("{backend} answered unexpectedly: {detail}")]
    Protocol {
        /// The backend's name.
        backend: &'static str,
        /// What was wrong, for logs.
        detail: Cow<'static, str>,
    },
}

impl BackendError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::Overloaded { .. } => true,
            Self::Protocol { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per variant: the code a client sees, and whether retrying helps.
    #[test]
    fn every_error_has_its_reply_and_retry_class() {
        let unavailable = BackendError::Unavailable { backend: "redis", detail: "refused".into() };
        let rows: Vec<(RoomsError, &str, bool)> = vec![
            (RoomsError::NoSuchUser, "no_such_user", false),
            (RoomsError::SessionRefused, "session_refused", false),
            (RoomsError::InvalidRoom { len: 0, max: 128 }, "invalid_room", false),
            (RoomsError::TooManyRooms { max: 64 }, "too_many_rooms", false),
            (RoomsError::AlreadyJoined, "already_joined", false),
            (RoomsError::NotJoined, "not_joined", false),
            (RoomsError::SessionEnded, "internal", false),
            (RoomsError::Backend(unavailable), "unavailable", true),
            (RoomsError::Backend(BackendError::Timeout { what: "presence" }), "unavailable", true),
            (
                RoomsError::Backend(BackendError::Overloaded { backend: "redis", limit: 8 }),
                "unavailable",
                true,
            ),
        ];
        for (error, code, retry) in rows {
            let reply = error.reply();
            assert_eq!(reply.code().as_str(), code, "{error}");
            assert_eq!(error.is_retryable(), retry, "{error}");
            // Nothing of the backend's detail reaches the client.
            assert!(!reply.message().contains("refused"), "{error}");
        }
    }

    #[test]
    fn errors_are_send_sync_and_small() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<RoomsError>();
        assert!(std::mem::size_of::<RoomsError>() <= 48);
    }
}
