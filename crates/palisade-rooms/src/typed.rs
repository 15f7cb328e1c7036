//! The room protocol as a part of a typed protocol (feature `typed`): a [`Session`] answers
//! `room.join`, `room.leave`, `room.presence` and `user.send` inside the serve loop that
//! `#[palisade::protocol]` generates (`serve_with(socket, &session)`), and adds those requests
//! and the room events to the protocol's description.

use std::convert::Infallible;

use palisade_error::Error;
use palisade_json::Responder;
use palisade_json::describe::{ErrorDescription, MessageDescription, ProtocolDescription};
use palisade_json::typed::ProtocolPart;
use schemars::JsonSchema;
use serde_json::Value;

use crate::error::RoomsError;
use crate::member::SessionId;
use crate::protocol::{
    self, JOIN, JoinData, LEAVE, MESSAGE, PRESENCE, PRESENCE_JOIN, PRESENCE_LEAVE, RoomData,
    RoomMessage, SEND, USER_MESSAGE,
};
use crate::rooms::Session;

impl ProtocolPart for Session {
    type Message = RoomMessage;

    async fn handle(
        &self,
        message: RoomMessage,
        responder: Option<Responder>,
    ) -> Result<(), Error> {
        self.answer(message, responder).await
    }

    fn describe(description: ProtocolDescription) -> ProtocolDescription {
        let errors = |errors: &[RoomsError]| errors.iter().map(describe_error).collect::<Vec<_>>();
        let unavailable = || {
            RoomsError::Backend(crate::BackendError::Unavailable { backend: "", detail: "".into() })
        };
        description
            .with_message(
                MessageDescription::request::<JoinData, JoinReplyData, Infallible>(JOIN)
                    .with_doc(
                        "Joins a room; with `recover`, the reply hands over what was missed. A \
                         refusal of the application's authorisation hook is an error reply with \
                         the application's code.",
                    )
                    .with_errors(errors(&[
                        RoomsError::InvalidRoom { len: 0, max: 0 },
                        RoomsError::TooManyRooms { max: 0 },
                        RoomsError::AlreadyJoined,
                        unavailable(),
                    ])),
            )
            .with_message(
                MessageDescription::request::<RoomData, RoomData, Infallible>(LEAVE)
                    .with_doc("Leaves a room.")
                    .with_errors(errors(&[RoomsError::NotJoined, unavailable()])),
            )
            .with_message(
                MessageDescription::request::<RoomData, PresenceReplyData, Infallible>(PRESENCE)
                    .with_doc("Who is in a room the session is in, on every node.")
                    .with_errors(errors(&[RoomsError::NotJoined, unavailable()])),
            )
            .with_message(
                MessageDescription::request::<protocol::SendData, SendReplyData, Infallible>(SEND)
                    .with_doc("A private message to every session of a user, on every node.")
                    .with_errors(errors(&[RoomsError::NoSuchUser, unavailable()])),
            )
            .with_message(
                MessageDescription::push::<MessageData>(MESSAGE)
                    .with_doc("A publication in a room the session is in."),
            )
            .with_message(
                MessageDescription::push::<PresenceData>(PRESENCE_JOIN)
                    .with_doc("A member joined a room the session is in."),
            )
            .with_message(
                MessageDescription::push::<PresenceData>(PRESENCE_LEAVE)
                    .with_doc("A member left a room the session is in, or its node died."),
            )
            .with_message(
                MessageDescription::push::<UserMessageData>(USER_MESSAGE)
                    .with_doc("A private message (`user.send`, or the server's)."),
            )
    }
}

/// What a client sees of `error`: its reply's code and message.
fn describe_error(error: &RoomsError) -> ErrorDescription {
    let reply = error.reply();
    let details = match reply.details() {
        Some(Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    };
    ErrorDescription::Reply {
        code: reply.code().as_str().to_owned(),
        message: reply.message().to_owned(),
        details,
    }
}

// The room protocol's replies and events as the description states them: the crate
// serialises them from borrowed forms, so these types exist for their schemas alone; the
// rooms' tests hold them to what goes out.

/// The ok reply to `room.join`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct JoinReplyData {
    /// The room.
    room: String,
    /// Who is in the room, the new member included.
    presence: Vec<PresenceEntry>,
    /// In a room with recovery: where the client stands.
    recovery: Option<RecoveryData>,
}

/// One member of a room.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct PresenceEntry {
    /// The user's name.
    user: String,
    /// The session (a user may have several).
    session: SessionId,
    /// What the server attached to the session.
    meta: Value,
}

/// The recovery part of a join reply.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct RecoveryData {
    /// The room history's epoch.
    epoch: String,
    /// The offset of the last publication handed over: the client's position.
    offset: u64,
    /// Whether what was missed is all in `publications`.
    recovered: bool,
    /// Why not, when not: `epoch_changed`, `too_old`, `trimmed`, …
    reason: Option<String>,
    /// The `room.message` data missed, in offset order.
    publications: Vec<MessageData>,
}

/// The ok reply to `room.presence`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct PresenceReplyData {
    /// The room.
    room: String,
    /// Who is in it.
    presence: Vec<PresenceEntry>,
}

/// The ok reply to `user.send`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct SendReplyData {
    /// How many sessions of the user it went to.
    sessions: usize,
}

/// The data of `room.message`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct MessageData {
    /// The room.
    room: String,
    /// Its offset in the room's history (rooms with recovery only).
    offset: Option<u64>,
    /// The application's event.
    event: String,
    /// Its data.
    data: Value,
}

/// The data of `presence.join` and `presence.leave`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct PresenceData {
    /// The room.
    room: String,
    /// The user's name.
    user: String,
    /// The session.
    session: SessionId,
    /// What the server attached to the session.
    meta: Value,
}

/// The data of `user.message`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "schema only")]
struct UserMessageData {
    /// Who sent it (`null`: the server).
    from: Option<String>,
    /// The event.
    event: String,
    /// Its data.
    data: Value,
}

impl JsonSchema for SessionId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SessionId".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}
