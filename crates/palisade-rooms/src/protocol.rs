//! The room protocol on palisade-json's envelope: the requests a client sends
//! (`room.join`, `room.leave`, `room.presence`, `user.send`), the events it receives
//! (`room.message`, `presence.join`, `presence.leave`, `user.message`), and the decoded form of
//! the requests ([`RoomMessage`]), which palisade-json's router hands to the rooms.

use std::sync::Arc;

use palisade_json::route::Tags;
use palisade_json::{Codec, EncodeError, wire};
use palisade_proto::message::{Message, Utf8Bytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::member::{Presence, SessionId};

/// Request: join a room. Data: `{"room": "lobby", "recover": {"epoch": "…", "offset": 12}}`
/// (`recover` optional).
pub const JOIN: &str = "room.join";
/// Request: leave a room. Data: `{"room": "lobby"}`.
pub const LEAVE: &str = "room.leave";
/// Request: who is in a room the session is in. Data: `{"room": "lobby"}`.
pub const PRESENCE: &str = "room.presence";
/// Request: a private message. Data: `{"to": "bob", "event": "dm", "data": …}`.
pub const SEND: &str = "user.send";
/// Event: a publication in a room. Data: `{"room", "offset"?, "event", "data"}`.
pub const MESSAGE: &str = "room.message";
/// Event: a member joined a room the session is in. Data: `{"room", "user", "session", "meta"}`.
pub const PRESENCE_JOIN: &str = "presence.join";
/// Event: a member left a room the session is in (or its node died). Same data.
pub const PRESENCE_LEAVE: &str = "presence.leave";
/// Event: a private message. Data: `{"from": "alice" | null, "event", "data"}`.
pub const USER_MESSAGE: &str = "user.message";

/// What precedes a publication's data object in its frame.
const MESSAGE_PREFIX: &str = r#"{"event":"room.message","data":"#;

/// A publication in a room, encoded once: the whole `room.message` frame, shared by every
/// member it goes to.
#[derive(Clone, Debug)]
pub struct Publication {
    room: Arc<str>,
    offset: Option<u64>,
    frame: Utf8Bytes,
    except: Option<SessionId>,
}

#[derive(Serialize)]
struct PublicationData<'a> {
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    event: &'a str,
    data: &'a RawValue,
}

impl Publication {
    /// Encodes a publication of `event` with `data` (JSON already) in `room`, at `offset` when
    /// the room keeps a history; `except` does not receive it.
    pub fn encode(
        room: &str,
        offset: Option<u64>,
        event: &str,
        data: &RawValue,
        except: Option<SessionId>,
    ) -> Result<Self, EncodeError> {
        let payload = PublicationData { room, offset, event, data };
        let frame = match wire::encode_event(Codec::Json, MESSAGE, &payload)? {
            Message::Text(text) => text,
            Message::Binary(_) => unreachable_binary(),
        };
        debug_assert!(frame.starts_with(MESSAGE_PREFIX) && frame.ends_with('}'));
        Ok(Self { room: room.into(), offset, frame, except })
    }

    /// A publication from its data object (`{"room", "offset", "event", "data"}`), as another
    /// node or a history sent it: the frame is built around it, once per node.
    pub fn from_data(
        room: &str,
        offset: Option<u64>,
        data: &str,
        except: Option<SessionId>,
    ) -> Self {
        let mut frame = String::with_capacity(MESSAGE_PREFIX.len() + data.len() + 1);
        frame.push_str(MESSAGE_PREFIX);
        frame.push_str(data);
        frame.push('}');
        Self { room: room.into(), offset, frame: frame.into(), except }
    }

    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The offset in the room's history, when it keeps one.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The session that does not receive it.
    pub fn except(&self) -> Option<&SessionId> {
        self.except.as_ref()
    }

    /// The data object: `{"room", "offset", "event", "data"}`.
    pub fn data(&self) -> &str {
        let text = self.frame.as_str();
        &text[MESSAGE_PREFIX.len()..text.len() - 1]
    }

    /// The frame, shared (a reference count, not a copy).
    pub fn message(&self) -> Message {
        Message::Text(self.frame.clone())
    }
}

/// The JSON codec never yields a binary frame.
fn unreachable_binary() -> ! {
    unreachable!("palisade-json encodes JSON as text frames")
}

/// Encodes an event frame for the room protocol.
pub(crate) fn event_frame<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
) -> Result<Utf8Bytes, EncodeError> {
    match wire::encode_event(Codec::Json, event, data)? {
        Message::Text(text) => Ok(text),
        Message::Binary(_) => unreachable_binary(),
    }
}

/// The `presence.join` (`joined`) or `presence.leave` frame of `presence` in `room`: what a
/// backend sends when it learns of a change on another node (a dead node's sessions).
pub fn presence_frame(
    joined: bool,
    room: &str,
    presence: &Presence,
) -> Result<Utf8Bytes, EncodeError> {
    let event = if joined { PRESENCE_JOIN } else { PRESENCE_LEAVE };
    event_frame(event, &PresenceEvent { room, presence })
}

/// The data of `presence.join` and `presence.leave`.
#[derive(Serialize)]
pub(crate) struct PresenceEvent<'a> {
    pub(crate) room: &'a str,
    #[serde(flatten)]
    pub(crate) presence: &'a Presence,
}

/// The data of `user.message`.
#[derive(Serialize)]
pub(crate) struct UserMessage<'a> {
    pub(crate) from: Option<&'a str>,
    pub(crate) event: &'a str,
    pub(crate) data: &'a RawValue,
}

/// Where a publication stands in a room's history: the history's epoch (it changes when the
/// history is lost) and an offset in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typed", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    /// The history's epoch.
    pub epoch: String,
    /// The offset of the last publication (0 before the first).
    pub offset: u64,
}

/// A `room.join` request's data.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "typed", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinData {
    /// The room.
    pub(crate) room: String,
    /// Where the client stood in the room when it lost its connection: the publications since
    /// then come with the reply (rooms with recovery only).
    #[serde(default)]
    pub(crate) recover: Option<StreamPosition>,
}

/// The data of `room.leave` and `room.presence`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "typed", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomData {
    /// The room.
    pub(crate) room: String,
}

/// A `user.send` request's data.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "typed", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct SendData {
    /// The user's name.
    pub(crate) to: String,
    /// The `event` of the `user.message` they get.
    pub(crate) event: String,
    /// Its `data`.
    #[serde(default)]
    pub(crate) data: Value,
}

/// A request of the room protocol.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data")]
pub(crate) enum Command {
    #[serde(rename = "room.join")]
    Join(JoinData),
    #[serde(rename = "room.leave")]
    Leave(RoomData),
    #[serde(rename = "room.presence")]
    Presence(RoomData),
    #[serde(rename = "user.send")]
    Send(SendData),
}

/// A message of the room protocol as a client sends it (`room.join`, `room.leave`,
/// `room.presence`, `user.send`), decoded beside the application's own messages by
/// [`palisade_json::route::Routed`] and answered by the [`Session`](crate::Session).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct RoomMessage(pub(crate) Command);

impl Tags for RoomMessage {
    fn owns(tag: &str) -> bool {
        [JOIN, LEAVE, PRESENCE, SEND].contains(&tag)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_publication_is_one_frame_whose_data_can_be_sent_on() {
        let data = RawValue::from_string(r#"{"text":"hi"}"#.to_owned()).unwrap();
        let p = Publication::encode("lobby", Some(7), "said", &data, None).unwrap();
        let Message::Text(frame) = p.message() else { panic!("text") };
        assert_eq!(
            frame.as_str(),
            r#"{"event":"room.message","data":{"room":"lobby","offset":7,"event":"said","data":{"text":"hi"}}}"#
        );
        let again = Publication::from_data("lobby", Some(7), p.data(), None);
        assert_eq!(again.message(), p.message());
        // Clones share the bytes.
        let (Message::Text(a), Message::Text(b)) = (p.message(), p.message()) else { panic!() };
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }
}
