//! Two message types on one connection: a part of the protocol that another crate answers
//! (palisade-rooms' `room.join`, `room.leave`, …) beside the application's own messages.
//!
//! [`Routed<P, M>`] decodes an envelope's `event` and `data` as `P` when `P` owns the tag
//! ([`Tags::owns`]), and as the application's `M` otherwise. A tag that neither knows is
//! refused at the `event` key, so that the peer gets `unknown_event` exactly as it would from
//! `M` alone, and a bad payload keeps its path (`data.room`) whichever side decodes it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::validate::{Invalid, Validate};

/// The tags a part of a protocol answers.
pub trait Tags {
    /// Whether `tag` is one of this part's messages.
    fn owns(tag: &str) -> bool;
}

/// A message for a part of the protocol (`Part`) or for the application (`App`).
#[derive(Debug)]
pub enum Routed<P, M> {
    /// A message of the part that owns its tag.
    Part(P),
    /// One of the application's messages.
    App(M),
}

/// Nothing: the part of a protocol that owns no tag, for serving an application's messages
/// alone.
#[derive(Debug, Deserialize)]
pub enum NoPart {}

impl Tags for NoPart {
    fn owns(_: &str) -> bool {
        false
    }
}

/// The application's rules apply to its messages; a part checks its own.
impl<P, M: Validate> Validate for Routed<P, M> {
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Part(_) => Ok(()),
            Self::App(message) => message.validate(),
        }
    }
}

impl<'de, P: DeserializeOwned + Tags, M: DeserializeOwned> Deserialize<'de> for Routed<P, M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RoutedVisitor(PhantomData))
    }
}

struct RoutedVisitor<P, M>(PhantomData<(P, M)>);

impl<'de, P: DeserializeOwned + Tags, M: DeserializeOwned> Visitor<'de> for RoutedVisitor<P, M> {
    type Value = Routed<P, M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Routed<P, M>, A::Error> {
        // palisade-json hands the envelope over as `event`, then `data` (when present).
        match map.next_key::<String>()?.as_deref() {
            Some("event") => {}
            _ => return Err(de::Error::missing_field("event")),
        }
        let event = map.next_value_seed(EventSeed::<P, M>(PhantomData))?;
        let rest = Replay { event: Some(event.tag), rest: map };
        let whole = de::value::MapAccessDeserializer::new(rest);
        if event.part {
            P::deserialize(whole).map(Routed::Part)
        } else {
            M::deserialize(whole).map(Routed::App)
        }
    }
}

/// The tag, and whether the part owns it.
struct Event {
    tag: String,
    part: bool,
}

/// Reads the event's tag; a tag that is neither the part's nor one of the application's is
/// refused here, at the `event` key, so that the peer gets `unknown_event`.
struct EventSeed<P, M>(PhantomData<(P, M)>);

impl<'de, P: Tags, M: DeserializeOwned> DeserializeSeed<'de> for EventSeed<P, M> {
    type Value = Event;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Event, D::Error> {
        let tag = String::deserialize(deserializer)?;
        if P::owns(&tag) {
            return Ok(Event { tag, part: true });
        }
        // The application's tag alone: an unknown variant fails on it, a known one fails for
        // want of `data` or succeeds (a unit variant), which is decided afterwards.
        let tag_only = de::value::MapDeserializer::<_, de::value::Error>::new(std::iter::once((
            "event",
            tag.as_str(),
        )));
        match M::deserialize(tag_only) {
            Err(err) if err.to_string().starts_with("unknown variant") => {
                Err(de::Error::custom("unknown event"))
            }
            _ => Ok(Event { tag, part: false }),
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

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "event", content = "data", deny_unknown_fields)]
    enum Part {
        #[serde(rename = "room.join")]
        Join { room: String },
    }

    impl Tags for Part {
        fn owns(tag: &str) -> bool {
            tag == "room.join"
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "event", content = "data")]
    enum App {
        #[serde(rename = "say")]
        Say { text: String },
        #[serde(rename = "ping")]
        Ping,
    }

    fn decode(text: &str) -> Result<Routed<Part, App>, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| format!("{} at {}", e.inner(), e.path()))
    }

    #[test]
    fn each_side_gets_its_tags_and_unknown_tags_fail_at_the_event_key() {
        let join = decode(r#"{"event":"room.join","data":{"room":"lobby"}}"#).unwrap();
        assert!(matches!(join, Routed::Part(Part::Join { room }) if room == "lobby"));
        let say = decode(r#"{"event":"say","data":{"text":"hi"}}"#).unwrap();
        assert!(matches!(say, Routed::App(App::Say { text }) if text == "hi"));
        assert!(matches!(decode(r#"{"event":"ping"}"#).unwrap(), Routed::App(App::Ping)));
        let unknown = decode(r#"{"event":"nope","data":{}}"#).unwrap_err();
        assert!(unknown.starts_with("unknown event") && unknown.ends_with("at event"), "{unknown}");
        // A bad payload keeps its path on both sides.
        let bad = decode(r#"{"event":"room.join","data":{"room":7}}"#).unwrap_err();
        assert!(bad.ends_with("at data.room"), "{bad}");
        let bad = decode(r#"{"event":"say","data":{"text":[]}}"#).unwrap_err();
        assert!(bad.ends_with("at data.text"), "{bad}");
    }

    #[test]
    fn no_part_routes_everything_to_the_application() {
        let mut de = serde_json::Deserializer::from_str(r#"{"event":"say","data":{"text":"x"}}"#);
        let routed: Routed<NoPart, App> = Deserialize::deserialize(&mut de).unwrap();
        assert!(matches!(routed, Routed::App(App::Say { .. })));
    }
}
