//! The room protocol on palisade-json's envelope: the requests a client sends
//! (`room.join`, `room.leave`, `room.presence`, `user.send`), the events it receives
//! (`room.message`, `presence.join`, `presence.leave`, `user.message`), and a decoder that
//! routes a frame to the rooms or to the application's own message type.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use palisade_json::{Codec, EncodeError, wire};
use palisade_proto::message::{Message, Utf8Bytes};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
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
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    /// The history's epoch.
    pub epoch: String,
    /// The offset of the last publication (0 before the first).
    pub offset: u64,
}

/// A `room.join` request's data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinData {
    pub(crate) room: String,
    #[serde(default)]
    pub(crate) recover: Option<StreamPosition>,
}

/// The data of `room.leave` and `room.presence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomData {
    pub(crate) room: String,
}

/// A `user.send` request's data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendData {
    pub(crate) to: String,
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) data: Value,
}

/// A request of the room protocol.
#[derive(Debug)]
pub(crate) enum Command {
    Join(JoinData),
    Leave(RoomData),
    Presence(RoomData),
    Send(SendData),
}

/// A frame for the rooms or for the application.
#[derive(Debug)]
pub(crate) enum Routed<M> {
    Room(Command),
    App(M),
}

impl<'de, M: DeserializeOwned> Deserialize<'de> for Routed<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RoutedVisitor(PhantomData))
    }
}

struct RoutedVisitor<M>(PhantomData<M>);

impl<'de, M: DeserializeOwned> Visitor<'de> for RoutedVisitor<M> {
    type Value = Routed<M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Routed<M>, A::Error> {
        // palisade-json hands the envelope over as `event`, then `data`.
        match map.next_key::<String>()?.as_deref() {
            Some("event") => {}
            _ => return Err(de::Error::missing_field("event")),
        }
        let event = map.next_value_seed(EventSeed::<M>(PhantomData))?;
        let kind = match event.as_str() {
            JOIN => Kind::Join,
            LEAVE => Kind::Leave,
            PRESENCE => Kind::Presence,
            SEND => Kind::Send,
            _ => {
                return M::deserialize(de::value::MapAccessDeserializer::new(Replay {
                    event: Some(event),
                    rest: map,
                }))
                .map(Routed::App);
            }
        };
        match map.next_key::<String>()?.as_deref() {
            Some("data") => {}
            _ => return Err(de::Error::missing_field("data")),
        }
        let command = match kind {
            Kind::Join => Command::Join(map.next_value()?),
            Kind::Leave => Command::Leave(map.next_value()?),
            Kind::Presence => Command::Presence(map.next_value()?),
            Kind::Send => Command::Send(map.next_value()?),
        };
        Ok(Routed::Room(command))
    }
}

enum Kind {
    Join,
    Leave,
    Presence,
    Send,
}

/// Reads the event's name; an event that is neither ours nor one of the application's is
/// refused here, at the `event` key, so that the peer gets `unknown_event` as it would
/// without rooms.
struct EventSeed<M>(PhantomData<M>);

impl<'de, M: DeserializeOwned> DeserializeSeed<'de> for EventSeed<M> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let event = String::deserialize(deserializer)?;
        if [JOIN, LEAVE, PRESENCE, SEND].contains(&event.as_str()) {
            return Ok(event);
        }
        // The application's tag alone: an unknown variant fails on it, a known one fails for
        // want of `data` or succeeds (a unit variant), which is not our concern here.
        let tag_only = de::value::MapDeserializer::<_, de::value::Error>::new(std::iter::once((
            "event",
            event.as_str(),
        )));
        match M::deserialize(tag_only) {
            Err(err) if err.to_string().starts_with("unknown variant") => {
                Err(de::Error::custom("unknown event"))
            }
            _ => Ok(event),
        }
    }
}

/// The envelope again, with the `event` entry already read put back in front.
struct Replay<A> {
    event: Option<String>,
    rest: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if self.event.is_some() {
            return seed.deserialize("event".into_deserializer()).map(Some);
        }
        self.rest.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.event.take() {
            Some(event) => seed.deserialize(event.into_deserializer()),
            None => self.rest.next_value_seed(seed),
        }
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
