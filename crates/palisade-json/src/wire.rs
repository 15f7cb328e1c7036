//! Wire format v1: decoding a frame into an [`Inbound`] message (or the error reply it earns),
//! decoding `data` into the application's types, and encoding outgoing envelopes.
//!
//! Nothing here does I/O; [`crate::JsonSocket`] (feature `conn`) drives it on a connection,
//! and a blocking or custom runtime can drive it the same way.

use std::borrow::Cow;
use std::fmt::Write as _;

use palisade_proto::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::{Map, Value};

use crate::code::{ErrorCode, ErrorReply};
use crate::limits::{Limits, json_deeper_than};
use crate::probe::{Fields, Probe};

/// The largest id a request may carry: 2^53 − 1, the largest integer JavaScript represents
/// exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// How envelopes travel: JSON in text frames (the default), or MessagePack in binary frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON text in text frames.
    #[default]
    Json,
    /// The same envelope as a MessagePack map (string keys) in binary frames.
    #[cfg(feature = "msgpack")]
    MessagePack,
}

impl Codec {
    /// The format's name, for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            #[cfg(feature = "msgpack")]
            Self::MessagePack => "MessagePack",
        }
    }
}

/// A message that passed the envelope checks.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Inbound {
    /// An event (`id` is `None`) or a request.
    Message {
        /// The event name.
        event: String,
        /// The request's id; `None` for an event.
        id: Option<u64>,
        /// The payload (`null` when absent).
        data: Value,
    },
    /// A reply to one of our requests.
    Reply {
        /// The id of our request.
        id: u64,
        /// `data` of an ok reply, or the error of an error reply.
        result: Result<Value, ErrorReply>,
    },
    /// An error reply with `"reply": null`: the peer refused a message of ours that had no id
    /// (or whose id it could not read). Never answered.
    Rejection(ErrorReply),
}

/// A frame that did not pass: the error reply it earns and where to send it.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    reply: ErrorReply,
    reply_to: Option<u64>,
    answer: bool,
    request: Option<u64>,
}

impl Refused {
    pub(crate) fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::from_reply(ErrorReply::with_code(code, message))
    }

    pub(crate) fn generic(code: ErrorCode) -> Self {
        Self::from_reply(ErrorReply::generic(code))
    }

    pub(crate) fn from_reply(reply: ErrorReply) -> Self {
        Self { reply, reply_to: None, answer: true, request: None }
    }

    fn invalid(message: &'static str) -> Self {
        Self::new(ErrorCode::InvalidEnvelope, message)
    }

    pub(crate) fn to(mut self, id: Option<u64>) -> Self {
        self.reply_to = id;
        self
    }

    pub(crate) fn unanswered(mut self, unanswered: bool) -> Self {
        self.answer = !unanswered;
        self
    }

    fn for_request(mut self, request: Option<u64>) -> Self {
        self.request = request;
        self
    }

    /// The error reply.
    pub fn error(&self) -> &ErrorReply {
        &self.reply
    }

    /// The id to answer (the offending request's), or `None` for `"reply": null`.
    pub fn reply_to(&self) -> Option<u64> {
        self.reply_to
    }

    /// Whether to answer at all: never when the offending message was itself an error reply
    /// (two endpoints must not answer each other's errors forever).
    pub fn should_answer(&self) -> bool {
        self.answer
    }

    /// When the offending message was a reply whose id could be read: the id of our request
    /// it was meant for (which has failed).
    pub fn request(&self) -> Option<u64> {
        self.request
    }

    /// The error reply, as an encoded frame.
    pub fn encode(&self, codec: Codec) -> Result<Message, EncodeError> {
        encode_error_reply(codec, self.reply_to, &self.reply)
    }
}

/// Our own value could not be encoded (a map with non-string keys, a failing `Serialize`).
#[derive(Debug, thiserror::Error)]
#[error("could not encode a {format} message: {source}")]
pub struct EncodeError {
    format: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A send that could not encode its value fails as the application's fault: 1011 if it ends
/// the connection, with a generic reason.
impl From<EncodeError> for palisade_error::Error {
    fn from(err: EncodeError) -> Self {
        palisade_error::ApplicationError::Unencodable {
            format: err.format,
            detail: err.source.to_string(),
        }
        .into()
    }
}

/// A value serde_json could not encode: for crates that encode data once, ahead of the
/// envelope (a room's broadcast encodes its data once for every member).
impl From<serde_json::Error> for EncodeError {
    fn from(source: serde_json::Error) -> Self {
        Self { format: Codec::Json.name(), source: Box::new(source) }
    }
}

impl EncodeError {
    #[cfg(feature = "conn")]
    pub(crate) fn json(source: serde_json::Error) -> Self {
        Self { format: Codec::Json.name(), source: Box::new(source) }
    }
}

/// The common case in one pass and without building a value tree: a JSON event or request
/// that passes the limits and decodes into `M` gives its id and the message. `None` for
/// anything else (a reply, a frame that breaks a rule, a payload of the wrong shape): then
/// [`decode`] and [`decode_message`] take the frame again and say precisely what is wrong.
///
/// It accepts nothing those two refuse: the envelope's keys are the same and unknown ones
/// refused, an id is a plain integer up to [`MAX_ID`], and a duplicate key anywhere (which the
/// full path refuses as `malformed`) sends the frame the full way.
pub fn decode_typed<M: DeserializeOwned>(
    frame: &Message,
    codec: Codec,
    limits: &Limits,
) -> Option<(Option<u64>, M)> {
    let (Codec::Json, Message::Text(text)) = (codec, frame) else { return None };
    let bytes = text.as_bytes();
    if bytes.len() > limits.max_size || json_deeper_than(bytes, limits.max_depth) {
        return None;
    }
    let envelope: FastEnvelope<'_> = serde_json::from_str(text.as_str()).ok()?;
    let id = match envelope.id {
        None => None,
        Some(raw) => Some(raw.get().parse::<u64>().ok().filter(|id| *id <= MAX_ID)?),
    };
    // `data` absent is `null`, as on the full path.
    let null: &serde_json::value::RawValue = serde_json::from_str("null").ok()?;
    let access =
        EnvelopeAccess { event: Some(&envelope.event), data: Some(envelope.data.unwrap_or(null)) };
    let message = M::deserialize(serde::de::value::MapAccessDeserializer::new(access)).ok()?;
    // A payload decoded into a map or a `Value` keeps the last of two equal keys where the full
    // path refuses the frame (`StrictValue`): such a frame goes the full way, to be refused.
    // (A struct's derived `Deserialize` refuses a duplicate field itself.)
    if envelope.data.is_some_and(has_duplicate_key) {
        return None;
    }
    Some((id, message))
}

/// Whether `data` holds an object with a key twice, at any depth (or is not JSON after all).
/// Its nesting was bounded by the depth limit before parsing, so the recursion is too.
fn has_duplicate_key(data: &serde_json::value::RawValue) -> bool {
    // Without an opening brace anywhere there is no object; most payloads are one small one.
    if memchr::memchr(b'{', data.get().as_bytes()).is_none() {
        return false;
    }
    serde_json::from_str::<UniqueKeys>(data.get()).is_err()
}

/// Walks a JSON value without keeping it, failing on an object with a key twice.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(UniqueKeysVisitor).map(|()| UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // The fast path must not allocate more than serde_json alone (`tests/alloc.rs`): the
        // first keys of an object are kept on the stack, borrowed from the frame where they
        // have no escapes; only a larger object spills into a set.
        let mut few: [Option<Key<'de>>; FEW_KEYS] = Default::default();
        let mut many: Option<std::collections::HashSet<String>> = None;
        let mut count = 0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let duplicate = match &mut many {
                Some(many) => !many.insert(key.as_str().to_owned()),
                None if count < FEW_KEYS => {
                    let seen = few[..count].iter().flatten().any(|k| k.as_str() == key.as_str());
                    few[count] = Some(key);
                    seen
                }
                None => {
                    let mut set: std::collections::HashSet<String> =
                        few.iter().flatten().map(|k| k.as_str().to_owned()).collect();
                    let seen = !set.insert(key.as_str().to_owned());
                    many = Some(set);
                    seen
                }
            };
            if duplicate {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            count += 1;
            map.next_value::<UniqueKeys>()?;
        }
        Ok(())
    }
}

/// How many keys of an object [`UniqueKeysVisitor`] compares on the stack.
const FEW_KEYS: usize = 16;

/// An object's key, borrowed from the frame unless it has escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(key.to_owned()))
    }
}

/// An event or request envelope, borrowed from the frame.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastEnvelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    /// Present even when `null` (which the full path refuses): `Option` alone would take
    /// `null` for absent.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<&'de serde_json::value::RawValue>, D::Error> {
    serde::Deserialize::deserialize(de).map(Some)
}

/// `{"event": …, "data": …}` for the application's type, `data` decoded in place from the
/// frame's text (`null` when absent), as [`decode_message`] presents it.
struct EnvelopeAccess<'a> {
    event: Option<&'a str>,
    data: Option<&'a serde_json::value::RawValue>,
}

impl<'de> serde::de::MapAccess<'de> for EnvelopeAccess<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        use serde::de::IntoDeserializer as _;
        // The tag first, so that adjacently tagged enums decode `data` in place.
        let key = match (self.event, self.data) {
            (Some(_), _) => "event",
            (None, Some(_)) => "data",
            (None, None) => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        if let Some(event) = self.event.take() {
            return seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(event));
        }
        match self.data.take() {
            Some(data) => seed.deserialize(data),
            None => Err(serde::de::Error::custom("no value left in the envelope")),
        }
    }
}

/// Checks a frame against the limits and the envelope of wire format v1.
pub fn decode(frame: &Message, codec: Codec, limits: &Limits) -> Result<Inbound, Refused> {
    envelope(parse(frame, codec, limits)?)
}

/// The frame's value, after the frame type, size and depth checks.
fn parse(frame: &Message, codec: Codec, limits: &Limits) -> Result<Value, Refused> {
    match (codec, frame) {
        (Codec::Json, Message::Text(text)) => parse_json(text.as_bytes(), limits),
        (Codec::Json, Message::Binary(_)) => {
            Err(Refused::new(ErrorCode::UnsupportedData, "expected a text frame"))
        }
        #[cfg(feature = "msgpack")]
        (Codec::MessagePack, Message::Binary(bytes)) => parse_msgpack(bytes, limits),
        #[cfg(feature = "msgpack")]
        (Codec::MessagePack, Message::Text(_)) => {
            Err(Refused::new(ErrorCode::UnsupportedData, "expected a binary frame"))
        }
    }
}

fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Value, Refused> {
    if bytes.len() > limits.max_size {
        return Err(Refused::generic(ErrorCode::TooLarge));
    }
    if json_deeper_than(bytes, limits.max_depth) {
        return Err(Refused::generic(ErrorCode::TooDeep));
    }
    serde_json::from_slice::<StrictValue>(bytes).map(|v| v.0).map_err(|e| {
        // Line and column only: serde_json's own message can quote the input.
        let what = if e.to_string().starts_with(DUPLICATE_KEY) {
            "duplicate key in an object"
        } else {
            "not valid JSON"
        };
        Refused::new(
            ErrorCode::Malformed,
            format!("{what} at line {}, column {}", e.line(), e.column()),
        )
    })
}

/// The start of the error [`StrictValue`] raises for a key seen twice in one object.
const DUPLICATE_KEY: &str = "duplicate key";

/// A JSON value that refuses an object with the same key twice. RFC 8259 §4 leaves such an
/// object's meaning to each parser (serde_json keeps the last, others the first), so a proxy
/// or a validator in front of us could read a different message than we do: the frame is
/// refused instead (`malformed`).
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(de).map(|v| v.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                // The key is the peer's: not named.
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(feature = "msgpack")]
fn parse_msgpack(bytes: &[u8], limits: &Limits) -> Result<Value, Refused> {
    use serde::Deserialize;

    if bytes.len() > limits.max_size {
        return Err(Refused::generic(ErrorCode::TooLarge));
    }
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    // rmp-serde counts depth itself, before recursing.
    de.set_max_depth(limits.max_depth);
    let value = StrictValue::deserialize(&mut de).map(|v| v.0).map_err(|e| match e {
        rmp_serde::decode::Error::DepthLimitExceeded => Refused::generic(ErrorCode::TooDeep),
        _ => Refused::new(ErrorCode::Malformed, "not valid MessagePack"),
    })?;
    drop(de);
    if !rest.is_empty() {
        return Err(Refused::new(ErrorCode::Malformed, "trailing bytes after the MessagePack map"));
    }
    Ok(value)
}

fn envelope(value: Value) -> Result<Inbound, Refused> {
    let Value::Object(mut map) = value else {
        return Err(Refused::invalid("a message must be an object"));
    };
    if map.contains_key("reply") {
        return reply_envelope(map);
    }
    let id = match map.remove("id") {
        None => None,
        Some(id) => Some(
            parse_id(&id)
                .ok_or_else(|| Refused::invalid("`id` must be an integer from 0 to 2^53-1"))?,
        ),
    };
    // From here on, the error reply can name the request.
    let event = match map.remove("event") {
        Some(Value::String(event)) => event,
        Some(_) => return Err(Refused::invalid("`event` must be a string").to(id)),
        None => return Err(Refused::invalid("a message needs `event` or `reply`").to(id)),
    };
    let data = map.remove("data").unwrap_or(Value::Null);
    if !map.is_empty() {
        // The key itself is the peer's: not named.
        return Err(Refused::invalid("unknown key in the envelope").to(id));
    }
    Ok(Inbound::Message { event, id, data })
}

fn reply_envelope(mut map: Map<String, Value>) -> Result<Inbound, Refused> {
    let status = map.remove("status");
    // Whatever else is wrong with it, an error reply is never answered.
    let is_error = matches!(&status, Some(Value::String(s)) if s == "error");
    let id = match map.remove("reply") {
        None | Some(Value::Null) => None,
        Some(id) => Some(parse_id(&id).ok_or_else(|| {
            Refused::invalid("`reply` must be null or an integer from 0 to 2^53-1")
                .unanswered(is_error)
        })?),
    };
    let refuse = |message| Refused::invalid(message).unanswered(is_error).for_request(id);
    let result = match status.as_ref().and_then(Value::as_str) {
        Some("ok") => {
            if map.contains_key("error") {
                return Err(refuse("an ok reply has no `error`"));
            }
            Ok(map.remove("data").unwrap_or(Value::Null))
        }
        Some("error") => {
            if map.contains_key("data") {
                return Err(refuse("an error reply has no `data`"));
            }
            let error =
                map.remove("error").ok_or_else(|| refuse("an error reply needs `error`"))?;
            Err(error_object(error).ok_or_else(|| refuse("`error` is not a valid error object"))?)
        }
        _ => return Err(refuse("`status` must be \"ok\" or \"error\"")),
    };
    if !map.is_empty() {
        return Err(refuse("unknown key in the envelope"));
    }
    match (id, result) {
        (Some(id), result) => Ok(Inbound::Reply { id, result }),
        (None, Err(error)) => Ok(Inbound::Rejection(error)),
        (None, Ok(_)) => Err(refuse("an ok reply needs a `reply` id")),
    }
}

fn error_object(error: Value) -> Option<ErrorReply> {
    let Value::Object(mut error) = error else { return None };
    let code = ErrorCode::parse(error.remove("code")?.as_str()?)?;
    let Value::String(message) = error.remove("message")? else { return None };
    let mut reply = ErrorReply::with_code(code, message);
    match error.remove("path") {
        None => {}
        Some(Value::String(path)) => reply = reply.with_path(path),
        Some(_) => return None,
    }
    if let Some(details) = error.remove("details") {
        reply = reply.with_details(details);
    }
    error.is_empty().then_some(reply)
}

fn parse_id(id: &Value) -> Option<u64> {
    id.as_u64().filter(|id| *id <= MAX_ID)
}

/// Decodes an event's `data` into the application's message type `M`, which sees the map
/// `{"event": …, "data": …}`: typically an enum with `#[serde(tag = "event", content =
/// "data")]`. A variant `M` does not have becomes `unknown_event`; a wrong shape
/// `invalid_payload` with the path of the field (`data.text`) and serde's message stripped of
/// the peer's values.
pub fn decode_message<M: DeserializeOwned>(event: String, data: Value) -> Result<M, ErrorReply> {
    let event = Value::String(event);
    let fields = Fields::default();
    // The tag first: serde's adjacently tagged enums then decode `data` in place (keeping the
    // path) instead of buffering it.
    let entries = [("event", Probe::new(&event, &fields)), ("data", Probe::new(&data, &fields))];
    let de = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(entries.into_iter());
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path();
        let on_event = matches!(
            path.iter().next(),
            Some(serde_path_to_error::Segment::Map { key }) if key == "event"
        );
        if on_event {
            ErrorReply::generic(ErrorCode::UnknownEvent)
        } else {
            // The first segment is our own `data` key.
            payload_error(path, &e.inner().to_string(), &data, &fields, false)
        }
    })
}

/// Decodes the `data` of a reply (or any value) into `T`, with the same path and message
/// rules as [`decode_message`].
pub fn decode_data<T: DeserializeOwned>(data: Value) -> Result<T, ErrorReply> {
    let fields = Fields::default();
    serde_path_to_error::deserialize(Probe::new(&data, &fields))
        .map_err(|e| payload_error(e.path(), &e.inner().to_string(), &data, &fields, true))
}

/// `invalid_payload` with serde's message cleaned and the path rendered.
fn payload_error(
    path: &serde_path_to_error::Path,
    message: &str,
    data: &Value,
    fields: &Fields,
    prefix: bool,
) -> ErrorReply {
    let segments: Vec<_> = path.iter().collect();
    // An unknown field's path ends in the field's name, which is the peer's: the path names
    // the object that has it instead.
    let keep = if message.starts_with("unknown field ") {
        segments.len().saturating_sub(1)
    } else {
        segments.len()
    };
    ErrorReply::with_code(ErrorCode::InvalidPayload, sanitize(message)).with_path(render_path(
        &segments[..keep],
        data,
        fields,
        prefix,
    ))
}

/// `data.a[0].b`, from serde_path_to_error's segments, walked along `data`. serde reports
/// struct fields and map keys alike: a key shows only when its object was read as a struct
/// (it is one of our field names); the peer's map keys show as `?`. Without `prefix`, the
/// first segment is the `data` key of [`decode_message`]'s envelope map.
fn render_path(
    segments: &[&serde_path_to_error::Segment],
    data: &Value,
    fields: &Fields,
    prefix: bool,
) -> String {
    use serde_path_to_error::Segment;

    let (mut out, segments) = match (prefix, segments.split_first()) {
        (true, _) => ("data".to_owned(), segments),
        (false, Some((_data, rest))) => ("data".to_owned(), rest),
        (false, None) => return "data".to_owned(),
    };
    let mut at = Some(data);
    for segment in segments {
        let name = match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
                at = at.and_then(|v| v.get(index));
                continue;
            }
            Segment::Map { key } => {
                let object = at.and_then(Value::as_object);
                at = object.and_then(|o| o.get(key));
                if object.is_some_and(|o| fields.named(o)) { key.as_str() } else { "?" }
            }
            Segment::Enum { variant } => {
                at = at.and_then(Value::as_object).and_then(|o| o.get(variant));
                // A variant that was recognized: one of ours, unless it does not look like a
                // name.
                let plain = variant.len() <= 64
                    && variant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if plain { variant.as_str() } else { "?" }
            }
            Segment::Unknown => {
                at = None;
                "?"
            }
        };
        out.push('.');
        out.push_str(name);
    }
    out
}

/// serde's messages, keeping what they say about our types and dropping what they quote of
/// the peer's input (`invalid type: string "…"`, `unknown variant `…``). Messages of other
/// shapes (custom errors of a `Deserialize` impl) may say anything, so they are replaced.
pub(crate) fn sanitize(message: &str) -> String {
    const LIMIT: usize = 256;
    // serde's `Expected` part (after the last ", expected ") describes our type; what comes
    // before it describes the peer's value.
    let expected = |head: &str| match message.rfind(", expected ") {
        Some(at) => format!("{head}, expected {}", &message[at + ", expected ".len()..]),
        None => head.to_owned(),
    };
    let clean = if message.starts_with("invalid type: ") {
        expected("invalid type")
    } else if message.starts_with("invalid value: ") {
        expected("invalid value")
    } else if message.starts_with("invalid length ") {
        expected("invalid length")
    } else if message.starts_with("unknown variant ") {
        expected("unknown variant")
    } else if message.starts_with("unknown field ") {
        expected("unknown field")
    } else if message.starts_with("missing field `") || message.starts_with("duplicate field `") {
        // Names our own field.
        message.to_owned()
    } else {
        ErrorCode::InvalidPayload.generic_message().to_owned()
    };
    if clean.len() <= LIMIT {
        return clean;
    }
    let mut end = LIMIT;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &clean[..end])
}

#[derive(Serialize)]
struct OutMessage<'a, T: ?Sized> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    data: &'a T,
}

#[derive(Serialize)]
struct OutOk<'a, T: ?Sized> {
    reply: u64,
    status: &'static str,
    data: &'a T,
}

#[derive(Serialize)]
struct OutError<'a> {
    reply: Option<u64>,
    status: &'static str,
    error: &'a ErrorReply,
}

/// An event: `{"event": …, "data": …}`.
pub fn encode_event<T: Serialize + ?Sized>(
    codec: Codec,
    event: &str,
    data: &T,
) -> Result<Message, EncodeError> {
    encode(codec, &OutMessage { event, id: None, data })
}

/// A request: `{"event": …, "id": …, "data": …}`.
pub fn encode_request<T: Serialize + ?Sized>(
    codec: Codec,
    event: &str,
    id: u64,
    data: &T,
) -> Result<Message, EncodeError> {
    encode(codec, &OutMessage { event, id: Some(id), data })
}

/// An ok reply: `{"reply": …, "status": "ok", "data": …}`.
pub fn encode_reply<T: Serialize + ?Sized>(
    codec: Codec,
    id: u64,
    data: &T,
) -> Result<Message, EncodeError> {
    encode(codec, &OutOk { reply: id, status: "ok", data })
}

/// An error reply: `{"reply": … | null, "status": "error", "error": {…}}`.
pub fn encode_error_reply(
    codec: Codec,
    id: Option<u64>,
    error: &ErrorReply,
) -> Result<Message, EncodeError> {
    encode(codec, &OutError { reply: id, status: "error", error })
}

/// Any value in the codec's frame type, without an envelope.
pub fn encode<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Result<Message, EncodeError> {
    match codec {
        Codec::Json => serde_json::to_string(value)
            .map(Message::text)
            .map_err(|e| EncodeError { format: codec.name(), source: Box::new(e) }),
        #[cfg(feature = "msgpack")]
        Codec::MessagePack => rmp_serde::to_vec_named(value)
            .map(Message::binary)
            .map_err(|e| EncodeError { format: codec.name(), source: Box::new(e) }),
    }
}

/// Decodes a frame holding a bare value (no envelope), with the same limits and messages as
/// [`decode`] and [`decode_data`] (the path starts at `data`, the root).
pub fn decode_bare<T: DeserializeOwned>(
    frame: &Message,
    codec: Codec,
    limits: &Limits,
) -> Result<T, Refused> {
    decode_data(parse(frame, codec, limits)?).map_err(Refused::from_reply)
}

#[cfg(test)]
mod tests;
