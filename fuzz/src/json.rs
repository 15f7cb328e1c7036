//! The targets on palisade-json: the envelope of wire format v1 (`json_envelope`) and the typed
//! dispatch a `#[palisade::protocol]` server runs on each frame (`typed_dispatch`).
//!
//! The stable test module `crates/palisade-json/tests/it/fuzz_corpus.rs` includes this file
//! and replays the corpora of these targets through the same functions. It depends on
//! palisade-json without its `conn` feature (no runtime), so it drives the wire functions the
//! socket drives, in the socket's order.

use std::collections::BTreeMap;

use palisade_json::route::{Routed, Tags};
use palisade_json::wire::{
    self, Inbound, decode, decode_message, decode_typed, encode_error_reply, encode_event,
    encode_reply, encode_request,
};
use palisade_json::{Codec, ErrorCode, ErrorReply, Invalid, Limits, MAX_ID, Validate};
use palisade_proto::Message;
use serde::Deserialize;
use serde_json::Value;

/// Size limits, chosen by three bits of the first input byte.
const MAX_SIZES: [usize; 8] = [0, 2, 16, 64, 256, 1024, 4096, 65_536];

/// Depth limits, chosen by three bits of the first input byte; 200 is over serde_json's own
/// limit of 128.
const MAX_DEPTHS: [usize; 8] = [0, 1, 2, 3, 4, 8, 32, 200];

/// The first input byte: bits 0–2 the size limit, bits 3–5 the depth limit, bit 6 a binary
/// frame instead of a text one. The rest is the frame's payload (as text, invalid UTF-8
/// replaced: a text frame is UTF-8 by the time palisade-json sees it).
fn frame(data: &[u8]) -> Option<(Limits, Message)> {
    let [setup, payload @ ..] = data else { return None };
    let limits = Limits::default()
        .with_max_size(MAX_SIZES[usize::from(setup & 0b111)])
        .with_max_depth(MAX_DEPTHS[usize::from((setup >> 3) & 0b111)]);
    let frame = if setup & 0x40 != 0 {
        Message::binary(payload.to_vec())
    } else {
        Message::text(String::from_utf8_lossy(payload).into_owned())
    };
    Some((limits, frame))
}

/// Whether two values are equal, floats within a relative 10^-15. serde_json's default float
/// parsing is best-effort (its `float_roundtrip` feature makes it exact at about twice the
/// cost), so a float printed and parsed again may move in its last digit: found by this
/// target (`1.0755555555555556e23`), a property of serde_json that palisade-json keeps.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The nesting depth of a value: 0 for a scalar, 1 for an empty array or object.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Limits under which every frame a fuzzer can make is read in full.
fn unlimited() -> Limits {
    Limits::default().with_max_size(usize::MAX).with_max_depth(100)
}

/// Target `json_envelope`: `data` is a setup byte (limits, frame type) and a frame's payload.
///
/// Checks that `wire::decode` gives a message or a typed refusal, never a panic; that what it
/// accepts is within the size and depth limits, a text frame, with ids up to 2^53−1; that a
/// frame over the size limit is `too_large` and one that parses but nests deeper than the
/// limit is `too_large` or `too_deep`, whatever else is wrong with it; that a binary frame is
/// `unsupported_data`; that an error reply is never answered; that every refusal encodes into
/// an error reply that decodes back to the same error; and that every message accepted,
/// encoded again, decodes to the same message.
pub fn json_envelope(data: &[u8]) {
    let Some((limits, frame)) = frame(data) else { return };
    let verdict = decode(&frame, Codec::Json, &limits);
    let Message::Text(text) = &frame else {
        let refused = verdict.expect_err("a binary frame is refused");
        assert_eq!(refused.error().code(), &ErrorCode::UnsupportedData);
        return;
    };
    let parsed = serde_json::from_str::<Value>(text.as_str()).ok();
    match verdict {
        Ok(inbound) => {
            assert!(text.len() <= limits.max_size, "accepted {} bytes", text.len());
            let value = parsed.expect("what decode accepts is JSON");
            assert!(depth(&value) <= limits.max_depth, "accepted a depth of {}", depth(&value));
            let again = match &inbound {
                Inbound::Message { event, id, data } => {
                    assert!(id.is_none_or(|id| id <= MAX_ID));
                    match id {
                        Some(id) => encode_request(Codec::Json, event, *id, data),
                        None => encode_event(Codec::Json, event, data),
                    }
                }
                Inbound::Reply { id, result: Ok(data) } => encode_reply(Codec::Json, *id, data),
                Inbound::Reply { id, result: Err(error) } => {
                    encode_error_reply(Codec::Json, Some(*id), error)
                }
                Inbound::Rejection(error) => encode_error_reply(Codec::Json, None, error),
                other => panic!("an inbound message this target does not know: {other:?}"),
            }
            .expect("an accepted message encodes");
            let back = decode(&again, Codec::Json, &unlimited()).expect("our encoding decodes");
            if back != inbound {
                // Only a float may have moved, in its last digits: compare the two encodings.
                let encoded = |message: &Message| {
                    serde_json::from_str::<Value>(message.as_text().expect("JSON is text"))
                        .expect("our encoding is JSON")
                };
                let twice = match &back {
                    Inbound::Message { event, id: Some(id), data } => {
                        encode_request(Codec::Json, event, *id, data)
                    }
                    Inbound::Message { event, id: None, data } => {
                        encode_event(Codec::Json, event, data)
                    }
                    Inbound::Reply { id, result: Ok(data) } => encode_reply(Codec::Json, *id, data),
                    Inbound::Reply { id, result: Err(error) } => {
                        encode_error_reply(Codec::Json, Some(*id), error)
                    }
                    Inbound::Rejection(error) => encode_error_reply(Codec::Json, None, error),
                    other => panic!("an inbound message this target does not know: {other:?}"),
                }
                .expect("a decoded message encodes");
                assert!(
                    same(&encoded(&again), &encoded(&twice)),
                    "a message changed in a round trip: {inbound:?} became {back:?}"
                );
            }
        }
        Err(refused) => {
            let code = refused.error().code();
            if text.len() > limits.max_size {
                assert_eq!(code, &ErrorCode::TooLarge, "over the size limit");
            } else if parsed.as_ref().is_some_and(|v| depth(v) > limits.max_depth) {
                assert_eq!(code, &ErrorCode::TooDeep, "deeper than the limit");
            }
            if !refused.should_answer() {
                let status = parsed.as_ref().and_then(|v| v.get("status"));
                assert_eq!(
                    status,
                    Some(&Value::from("error")),
                    "only an error reply goes unanswered"
                );
            }
            check_refusal(refused.error(), refused.reply_to(), text.as_str());
            let encoded = refused.encode(Codec::Json).expect("an error reply encodes");
            match decode(&encoded, Codec::Json, &unlimited()).expect("our error reply decodes") {
                Inbound::Reply { id, result: Err(error) } => {
                    assert_eq!(Some(id), refused.reply_to());
                    assert_eq!(&error, refused.error());
                }
                Inbound::Rejection(error) => {
                    assert_eq!(refused.reply_to(), None);
                    assert_eq!(&error, refused.error());
                }
                other => panic!("our error reply decoded as {other:?}"),
            }
        }
    }
}

/// What an error reply may say: a code of the wire format, an id in range, and nothing of the
/// peer's — no string of the frame that contains a character none of our own messages, paths
/// or names use (RFC-free rule of palisade-json: "nothing the peer sent is echoed").
fn check_refusal(error: &ErrorReply, reply_to: Option<u64>, input: &str) {
    assert!(!matches!(error.code(), ErrorCode::App(_)), "the wire layer used an app code");
    assert!(reply_to.is_none_or(|id| id <= MAX_ID));
    let said = format!(
        "{} {} {}",
        error.message(),
        error.path().unwrap_or_default(),
        error.details().map(Value::to_string).unwrap_or_default()
    );
    for quoted in peer_strings(input) {
        assert!(!said.contains(&quoted), "the error reply echoes {quoted:?}: {said}");
    }
}

/// The strings of `input` (keys and values, or anything between quotes when it is not JSON)
/// that are unmistakably the peer's: four characters or more, one of which is outside
/// everything our messages use (`@#~|^$%` or any non-ASCII character).
fn peer_strings(input: &str) -> Vec<String> {
    let marked = |s: &str| {
        s.chars().count() >= 4 && s.chars().any(|c| "@#~|^$%".contains(c) || !c.is_ascii())
    };
    let mut found = Vec::new();
    match serde_json::from_str::<Value>(input) {
        Ok(value) => collect_strings(&value, &mut found),
        Err(_) => found.extend(input.split('"').map(str::to_owned)),
    }
    found.retain(|s| marked(s));
    found
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                out.push(key.clone());
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

/// A part of the protocol another crate answers, as palisade-rooms' session does.
// Fields read only through `Debug`, which is how the two decoding paths are compared.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", deny_unknown_fields)]
enum RoomPart {
    #[serde(rename = "room.join")]
    Join { room: String, since: Option<u64> },
    #[serde(rename = "room.leave")]
    Leave { room: String },
}

impl Tags for RoomPart {
    fn owns(tag: &str) -> bool {
        tag.starts_with("room.")
    }
}

/// The application's messages as `#[palisade::protocol]` declares them: one newtype variant
/// per handler, tagged by event, with its payload type.
// Fields read only through `Debug`, which is how the two decoding paths are compared.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data")]
enum Chat {
    #[serde(rename = "chat.send")]
    Send(Say),
    #[serde(rename = "chat.typing")]
    Typing(Typing),
    #[serde(rename = "chat.history")]
    History(History),
    /// A free-form payload, decoded as any JSON value.
    #[serde(rename = "chat.meta")]
    Meta(Value),
    /// A payload that is a map of the peer's keys.
    #[serde(rename = "chat.tags")]
    Tags(BTreeMap<String, u32>),
    #[serde(rename = "chat.leave")]
    Leave,
}

// Fields read only through `Debug`, which is how the two decoding paths are compared.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Say {
    room: String,
    text: String,
    reply_to: Option<u64>,
}

// Fields read only through `Debug`, which is how the two decoding paths are compared.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct Typing {
    on: bool,
}

// Fields read only through `Debug`, which is how the two decoding paths are compared.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    before: Option<u64>,
    limit: u8,
    #[serde(default)]
    kinds: Vec<Kind>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Text,
    Image,
}

impl Validate for Chat {
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Send(say) if say.text.is_empty() || say.text.chars().count() > 200 => {
                Err(Invalid::single("text", "length", "the text must have 1 to 200 characters"))
            }
            Self::History(history) if history.limit == 0 => {
                Err(Invalid::single("limit", "range", "the limit must be at least 1"))
            }
            _ => Ok(()),
        }
    }
}

/// The names of our own types' fields, the only keys an error path may name.
const FIELDS: &[&str] =
    &["data", "room", "since", "text", "reply_to", "on", "before", "limit", "kinds"];

/// What the dispatch made of a frame.
#[derive(Debug)]
enum Dispatched {
    /// A message for a handler, by its id and its `Debug` form.
    Message(Option<u64>, String),
    /// An error reply for the peer, to `id`.
    Refused(Option<u64>, ErrorReply),
    /// A reply or a rejection, for the requests' table rather than the handlers.
    Reply,
}

/// Target `typed_dispatch`: `data` is a setup byte (limits, frame type) and a frame's payload,
/// dispatched as `JsonSocket::recv_validated::<Routed<RoomPart, Chat>>` does under a
/// `#[palisade::protocol]` server: the one-pass typed decode first, and when it declines, the
/// envelope, then `data` into the message type, then validation.
///
/// Checks that the one-pass decode accepts nothing the full path refuses and decodes what it
/// accepts into the same message with the same id, and that the full path accepts nothing the
/// one-pass decode declines (the two accept exactly the same frames); that every refusal has
/// the code of its stage (`unknown_event` for a tag neither side owns, `invalid_payload` with a
/// path of our field names, `validation_failed` for a message breaking a rule), is addressed
/// to the request's id, and echoes nothing of the peer's.
pub fn typed_dispatch(data: &[u8]) {
    let Some((limits, frame)) = frame(data) else { return };
    let fast = decode_typed::<Routed<RoomPart, Chat>>(&frame, Codec::Json, &limits);
    let full = dispatch_full(&frame, &limits);
    let input = frame.as_text().unwrap_or_default();
    match (&fast, &full) {
        (Some((id, message)), Dispatched::Message(full_id, full_message)) => {
            assert_eq!(id, full_id, "the one-pass decode read another id");
            assert_eq!(&format!("{message:?}"), full_message, "the one-pass decode differs");
        }
        (Some((id, message)), other) => {
            panic!("the one-pass decode accepted {id:?} {message:?}, the full path: {other:?}")
        }
        (None, Dispatched::Message(id, message)) => {
            panic!("the one-pass decode declined {id:?} {message:?}, which the full path accepts")
        }
        (None, Dispatched::Refused(id, error)) => {
            check_refusal(error, *id, input);
            if let Some(path) = error.path() {
                for segment in path.split(['.', '[', ']']).filter(|s| !s.is_empty()) {
                    assert!(
                        FIELDS.contains(&segment)
                            || segment == "?"
                            || segment.bytes().all(|b| b.is_ascii_digit()),
                        "the path {path:?} names {segment:?}"
                    );
                }
            }
        }
        (None, Dispatched::Reply) => {}
    }
    // What the handler gets is validated next, whichever path decoded it.
    if let Some((id, Routed::App(chat))) = &fast
        && let Err(invalid) = chat.validate()
    {
        let reply = invalid.to_reply();
        assert_eq!(reply.code(), &ErrorCode::ValidationFailed);
        let encoded = encode_error_reply(Codec::Json, *id, &reply).expect("encodes");
        assert!(wire::decode(&encoded, Codec::Json, &unlimited()).is_ok());
    }
}

/// The socket's full path: the envelope, then `data` into the message type.
fn dispatch_full(frame: &Message, limits: &Limits) -> Dispatched {
    match decode(frame, Codec::Json, limits) {
        Ok(Inbound::Message { event, id, data }) => {
            let had_data = !data.is_null();
            match decode_message::<Routed<RoomPart, Chat>>(event, data) {
                Ok(message) => Dispatched::Message(id, format!("{message:?}")),
                Err(error) => {
                    let code = error.code();
                    assert!(
                        matches!(code, ErrorCode::UnknownEvent | ErrorCode::InvalidPayload),
                        "decoding data failed with {code:?}"
                    );
                    if code == &ErrorCode::InvalidPayload && had_data {
                        let path = error.path().expect("invalid_payload has a path");
                        assert!(path.starts_with("data"), "the path {path:?}");
                    }
                    Dispatched::Refused(id, error)
                }
            }
        }
        Ok(_) => Dispatched::Reply,
        Err(refused) => Dispatched::Refused(refused.reply_to(), refused.error().clone()),
    }
}
