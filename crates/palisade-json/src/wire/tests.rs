#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::code::AppCode;

fn text(s: &str) -> Message {
    Message::text(s.to_owned())
}

fn refused(s: &str) -> Refused {
    decode(&text(s), Codec::Json, &Limits::default()).unwrap_err()
}

fn code(s: &str) -> ErrorCode {
    refused(s).error().code().clone()
}

#[test]
fn events_and_requests() {
    let ok = |s| decode(&text(s), Codec::Json, &Limits::default()).unwrap();
    assert_eq!(
        ok(r#"{"event":"chat.send","data":{"text":"hi"}}"#),
        Inbound::Message { event: "chat.send".into(), id: None, data: json!({"text": "hi"}) }
    );
    assert_eq!(
        ok(r#"{"event":"ping"}"#),
        Inbound::Message { event: "ping".into(), id: None, data: Value::Null }
    );
    assert_eq!(
        ok(r#"{"event":"e","id":9007199254740991,"data":1}"#),
        Inbound::Message { event: "e".into(), id: Some(MAX_ID), data: json!(1) }
    );
}

#[test]
fn replies() {
    let ok = |s| decode(&text(s), Codec::Json, &Limits::default()).unwrap();
    assert_eq!(
        ok(r#"{"reply":7,"status":"ok","data":[1]}"#),
        Inbound::Reply { id: 7, result: Ok(json!([1])) }
    );
    assert_eq!(
        ok(r#"{"reply":7,"status":"ok"}"#),
        Inbound::Reply { id: 7, result: Ok(Value::Null) }
    );
    let error = ErrorReply::new(AppCode::new("room_full").unwrap(), "full")
        .with_path("data.room")
        .with_details(json!({"max": 3}));
    assert_eq!(
        ok(
            r#"{"reply":7,"status":"error","error":{"code":"room_full","message":"full","path":"data.room","details":{"max":3}}}"#
        ),
        Inbound::Reply { id: 7, result: Err(error) }
    );
    assert_eq!(
        ok(r#"{"reply":null,"status":"error","error":{"code":"malformed","message":"m"}}"#),
        Inbound::Rejection(ErrorReply::with_code(ErrorCode::Malformed, "m"))
    );
}

#[test]
fn envelope_violations_are_invalid_envelope() {
    for bad in [
        "[]",
        "1",
        r#""event""#,
        "{}",
        r#"{"event":1}"#,
        r#"{"event":"e","id":-1}"#,
        r#"{"event":"e","id":1.5}"#,
        r#"{"event":"e","id":"7"}"#,
        r#"{"event":"e","id":null}"#,
        r#"{"event":"e","id":9007199254740992}"#,
        r#"{"event":"e","extra":1}"#,
        r#"{"event":"e","version":2}"#,
        r#"{"reply":1,"status":"maybe"}"#,
        r#"{"reply":1}"#,
        r#"{"reply":null,"status":"ok"}"#,
        r#"{"reply":1,"status":"ok","error":{}}"#,
        r#"{"reply":1,"status":"error"}"#,
        r#"{"reply":1,"status":"error","error":{"code":"Bad Code","message":"m"}}"#,
        r#"{"reply":1,"status":"error","error":{"code":"x","message":"m","extra":1}}"#,
        r#"{"reply":1,"status":"error","error":{"code":"x","message":"m"},"data":1}"#,
        r#"{"reply":-1,"status":"ok"}"#,
    ] {
        assert_eq!(code(bad), ErrorCode::InvalidEnvelope, "{bad}");
    }
}

#[test]
fn error_replies_address_the_request_when_its_id_is_readable() {
    assert_eq!(refused(r#"{"event":"e","id":4,"x":1}"#).reply_to(), Some(4));
    assert_eq!(refused(r#"{"event":1,"id":4}"#).reply_to(), Some(4));
    assert_eq!(refused(r#"{"event":"e","id":-4}"#).reply_to(), None);
    assert_eq!(refused(r#"{"event":"e","x":1}"#).reply_to(), None);
    // Replies carry our ids, not theirs: the answer is never addressed to them.
    assert_eq!(refused(r#"{"reply":4,"status":"ok","x":1}"#).reply_to(), None);
    assert_eq!(refused(r#"{"reply":4,"status":"ok","x":1}"#).request(), Some(4));
}

#[test]
fn error_replies_are_never_answered() {
    for bad in [
        r#"{"reply":1,"status":"error"}"#,
        r#"{"reply":"x","status":"error","error":{"code":"a","message":"m"}}"#,
        r#"{"reply":1,"status":"error","error":{"code":"x","message":"m","extra":1}}"#,
    ] {
        assert!(!refused(bad).should_answer(), "{bad}");
    }
    assert!(refused(r#"{"reply":1,"status":"ok","x":1}"#).should_answer());
    assert!(refused(r#"{"event":"e","x":1}"#).should_answer());
}

#[test]
fn malformed_says_where_not_what() {
    let r = refused("{\"event\":\"sk_live_SECRET\" oops}");
    assert_eq!(r.error().code(), &ErrorCode::Malformed);
    assert_eq!(r.error().message(), "not valid JSON at line 1, column 27");
    let r = refused("{\n\"a\": sk_live_SECRET");
    assert_eq!(r.error().message(), "not valid JSON at line 2, column 6");
}

#[test]
fn limits_come_before_parsing() {
    let limits = Limits::default().with_max_size(16).with_max_depth(3);
    let d = |s: &str| decode(&text(s), Codec::Json, &limits).unwrap_err().error().code().clone();
    assert_eq!(d(r#"{"event":"abcdefgh"}"#), ErrorCode::TooLarge);
    // Too large wins even for garbage.
    assert_eq!(d(&"x".repeat(17)), ErrorCode::TooLarge);
    assert_eq!(d(r#"{"event":[[[]]]}"#), ErrorCode::TooDeep);
    assert!(decode(&text(r#"{"event":"e"}"#), Codec::Json, &limits).is_ok());
    assert_eq!(
        decode(&Message::binary(vec![1]), Codec::Json, &limits).unwrap_err().error().code(),
        &ErrorCode::UnsupportedData
    );
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Chat {
    Send { text: String, n: u32 },
    Ping,
    Tags(Vec<u8>),
}

#[test]
fn messages_decode_with_paths_and_clean_messages() {
    let m = |e: &str, d| decode_message::<Chat>(e.into(), d);
    assert_eq!(
        m("send", json!({"text": "t", "n": 1})).unwrap(),
        Chat::Send { text: "t".into(), n: 1 }
    );
    assert_eq!(m("ping", Value::Null).unwrap(), Chat::Ping);
    let e = m("sk_live_SECRET", json!({})).unwrap_err();
    assert_eq!(e.code(), &ErrorCode::UnknownEvent);
    assert!(!e.to_string().contains("SECRET"));

    let e = m("send", json!({"text": "sk_live_SECRET", "n": "sk_live_SECRET"})).unwrap_err();
    assert_eq!(e.code(), &ErrorCode::InvalidPayload);
    assert_eq!(e.path(), Some("data.n"));
    assert_eq!(e.message(), "invalid type, expected u32");

    let e = m("send", json!({"text": "t", "n": -5})).unwrap_err();
    assert_eq!(e.message(), "invalid value, expected u32");
    let e = m("send", json!({"text": "t"})).unwrap_err();
    assert_eq!(e.message(), "missing field `n`");
    assert_eq!(e.path(), Some("data"));
    let e = m("tags", json!([1, 2, "sk_live_SECRET"])).unwrap_err();
    assert_eq!(e.path(), Some("data[2]"));
    assert_eq!(e.message(), "invalid type, expected u8");
}

#[test]
fn sanitize_keeps_our_words_and_drops_theirs() {
    let cases = [
        (r#"invalid type: string "sk_live", expected u32"#, "invalid type, expected u32"),
        (r#"invalid type: string "a, expected b", expected u32"#, "invalid type, expected u32"),
        ("invalid value: integer `-5`, expected u32", "invalid value, expected u32"),
        (
            "invalid length 3, expected a tuple of size 2",
            "invalid length, expected a tuple of size 2",
        ),
        ("unknown variant `sk_live`, expected `a` or `b`", "unknown variant, expected `a` or `b`"),
        ("unknown field `sk_live`, expected `text`", "unknown field, expected `text`"),
        ("unknown field `sk_live`, there are no fields", "unknown field"),
        ("missing field `text`", "missing field `text`"),
        ("my own error mentioning sk_live", "the data does not have the shape the event needs"),
    ];
    for (input, output) in cases {
        assert_eq!(sanitize(input), output, "{input}");
    }
    let long = format!("invalid type: x, expected {}", "é".repeat(300));
    assert!(sanitize(&long).len() <= 256 + "…".len());
}

#[test]
fn map_keys_that_are_not_identifiers_are_not_echoed() {
    use std::collections::HashMap;
    let e = decode_data::<HashMap<String, u8>>(json!({"sk live secret!": "x"})).unwrap_err();
    assert_eq!(e.path(), Some("data.?"));
}

#[test]
fn encoding() {
    let e = |m: Message| m.as_text().unwrap().to_owned();
    assert_eq!(
        e(encode_event(Codec::Json, "a", &json!({"x": 1})).unwrap()),
        r#"{"event":"a","data":{"x":1}}"#
    );
    assert_eq!(
        e(encode_request(Codec::Json, "a", 3, &()).unwrap()),
        r#"{"event":"a","id":3,"data":null}"#
    );
    assert_eq!(
        e(encode_reply(Codec::Json, 3, &true).unwrap()),
        r#"{"reply":3,"status":"ok","data":true}"#
    );
    assert_eq!(
        e(encode_error_reply(Codec::Json, None, &ErrorReply::generic(ErrorCode::TooDeep)).unwrap()),
        r#"{"reply":null,"status":"error","error":{"code":"too_deep","message":"the message nests deeper than the limit"}}"#
    );
    // What we encode, we decode.
    let frame = encode_request(Codec::Json, "a", 3, &json!([1])).unwrap();
    assert_eq!(
        decode(&frame, Codec::Json, &Limits::default()).unwrap(),
        Inbound::Message { event: "a".into(), id: Some(3), data: json!([1]) }
    );
    let mut bad = HashMap::new();
    bad.insert(vec![1u8], 1);
    assert!(encode_event(Codec::Json, "a", &bad).is_err());
}

use std::collections::HashMap;

#[cfg(feature = "msgpack")]
mod msgpack {
    use super::*;

    #[test]
    fn same_envelope_in_binary_frames() {
        let frame = encode_request(Codec::MessagePack, "a", 3, &json!({"x": [1, 2]})).unwrap();
        assert!(!frame.is_text());
        assert_eq!(
            decode(&frame, Codec::MessagePack, &Limits::default()).unwrap(),
            Inbound::Message { event: "a".into(), id: Some(3), data: json!({"x": [1, 2]}) }
        );
        let reply =
            encode_error_reply(Codec::MessagePack, Some(3), &ErrorReply::internal()).unwrap();
        assert_eq!(
            decode(&reply, Codec::MessagePack, &Limits::default()).unwrap(),
            Inbound::Reply { id: 3, result: Err(ErrorReply::internal()) }
        );
    }

    #[test]
    fn limits_and_garbage() {
        let limits = Limits::default().with_max_depth(3);
        let deep = encode_event(Codec::MessagePack, "a", &json!([[[[1]]]])).unwrap();
        let d = |m: &Message, l: &Limits| {
            decode(m, Codec::MessagePack, l).unwrap_err().error().code().clone()
        };
        assert_eq!(d(&deep, &limits), ErrorCode::TooDeep);
        assert_eq!(d(&deep, &Limits::default().with_max_size(4)), ErrorCode::TooLarge);
        assert_eq!(d(&Message::binary(vec![0xc1]), &limits), ErrorCode::Malformed);
        let mut trailing = encode_event(Codec::MessagePack, "a", &1).unwrap().payload().to_vec();
        trailing.push(0);
        assert_eq!(d(&Message::binary(trailing), &limits), ErrorCode::Malformed);
        assert_eq!(d(&text("{}"), &limits), ErrorCode::UnsupportedData);
    }
}

#[test]
fn an_unknown_field_is_located_at_its_object_not_named() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[serde(rename = "a")]
        _a: u8,
    }
    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(rename = "inner")]
        _inner: Strict,
    }
    let e = decode_data::<Outer>(json!({"inner": {"a": 1, "sk_live_x": 2}})).unwrap_err();
    assert_eq!(e.path(), Some("data.inner"));
    assert_eq!(e.message(), "unknown field, expected `a`");
}

#[test]
fn map_keys_of_the_peer_are_hidden_even_when_they_look_like_names() {
    #[derive(Debug, Deserialize)]
    struct Profile {
        #[serde(rename = "attrs")]
        _attrs: HashMap<String, u8>,
    }
    let e = decode_data::<Profile>(json!({"attrs": {"sk_live_x": "y"}})).unwrap_err();
    assert_eq!(e.path(), Some("data.attrs.?"));
    let e = decode_data::<Vec<Profile>>(json!([{"attrs": {}}, {"attrs": {"a": -1}}])).unwrap_err();
    assert_eq!(e.path(), Some("data[1].attrs.?"));
}

/// The fast path accepts only what the full path accepts, with the same id and message, and
/// takes every plain valid frame; checked on valid frames and on every way a frame can be
/// wrong or unusual.
#[test]
fn the_fast_path_agrees_with_the_full_path() {
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "event", content = "data", rename_all = "snake_case")]
    enum Ev {
        Say { text: String, n: Option<u32> },
        Ping,
        Many(Vec<u8>),
    }
    let limits = Limits { max_depth: 4, ..Limits::default() };
    let frames = [
        r#"{"event":"say","data":{"text":"hi","n":3}}"#,
        r#"{"event":"say","id":7,"data":{"text":"hi"}}"#,
        r#"{"data":{"text":"hi"},"event":"say"}"#,
        r#"{"id":0,"data":{"text":"hi"},"event":"say"}"#,
        r#"{"event":"ping"}"#,
        r#"{"event":"ping","data":null}"#,
        r#"{"event":"ping","id":9007199254740991}"#,
        r#"{"event":"ping","id":9007199254740992}"#,
        r#"{"event":"ping","id":-1}"#,
        r#"{"event":"ping","id":1.0}"#,
        r#"{"event":"ping","id":1e2}"#,
        r#"{"event":"ping","id":null}"#,
        r#"{"event":"ping","id":"1"}"#,
        r#"{"event":"p\u0069ng"}"#,
        r#"{"event":"many","data":[1,2,3]}"#,
        r#"{"event":"many","data":[[1]]}"#,
        r#"{"event":"many","data":[[[[[1]]]]]}"#,
        r#"{"event":"say","data":{"text":"hi","text":"again"}}"#,
        r#"{"event":"say","event":"ping"}"#,
        r#"{"event":"say","data":{"text":5}}"#,
        r#"{"event":"say","data":{"text":"hi","extra":1}}"#,
        r#"{"event":"shout","data":{}}"#,
        r#"{"event":5}"#,
        r#"{"event":"ping","other":1}"#,
        r#"{"reply":1,"status":"ok","data":null}"#,
        r#"{"reply":null,"status":"error","error":{"code":"malformed","message":"m"}}"#,
        r#"["event","ping"]"#,
        r#"{"event":"ping"} trailing"#,
        r#"{"event":"ping""#,
        r#" {"event":"ping"} "#,
        "",
    ];
    for frame in frames {
        let message = text(frame);
        let full = decode(&message, Codec::Json, &limits).ok().and_then(|inbound| match inbound {
            Inbound::Message { event, id, data } => {
                decode_message::<Ev>(event, data).ok().map(|m| (id, m))
            }
            Inbound::Reply { .. } | Inbound::Rejection(_) => None,
        });
        let fast = decode_typed::<Ev>(&message, Codec::Json, &limits);
        // Whatever the fast path accepts, the full path accepts the same way; what it leaves
        // (duplicate keys, which the full path resolves) goes the full way, to the same end.
        if fast.is_some() {
            assert_eq!(fast, full, "{frame}");
        }
        let duplicate_keys = [
            r#"{"event":"say","data":{"text":"hi","text":"again"}}"#,
            r#"{"event":"say","event":"ping"}"#,
        ];
        if full.is_some() && !duplicate_keys.contains(&frame) {
            assert!(fast.is_some(), "a plain valid frame takes the fast path: {frame}");
        }
    }
    // Binary frames and other codecs always take the full path.
    let binary = Message::binary(br#"{"event":"ping"}"#.to_vec());
    assert_eq!(decode_typed::<Ev>(&binary, Codec::Json, &limits), None);
}

/// An object with a key twice is refused, at any depth, without naming the key: another parser
/// could read it differently (RFC 8259 §4).
#[test]
fn duplicate_keys_are_refused() {
    for frame in [
        r#"{"event":"a","event":"b"}"#,
        r#"{"event":"a","id":1,"id":2}"#,
        r#"{"event":"a","data":{"x":1,"secret-key":2,"secret-key":3}}"#,
        r#"{"event":"a","data":[{"k":1},{"k":1,"k":2}]}"#,
    ] {
        let refused = refused(frame);
        assert_eq!(refused.error().code(), &ErrorCode::Malformed, "{frame}");
        let message = refused.error().message();
        assert!(message.starts_with("duplicate key in an object at line 1, column"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
    // The fast path leaves them to the full path too, even where the payload type would
    // take them (a map, a `Value`): found by the `typed_dispatch` fuzz target, which saw
    // `decode_typed` accept `{"a":1,"a":2}` as a `Value` that `decode` refuses.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "event", content = "data")]
    enum Free {
        #[serde(rename = "a")]
        Any(Value),
        #[serde(rename = "m")]
        Map(HashMap<String, u32>),
    }
    for frame in [
        r#"{"event":"a","data":{"a":1,"a":2}}"#,
        r#"{"event":"a","data":[{"k":{"x":1,"y":{"z":1,"z":1}}}]}"#,
        r#"{"event":"m","data":{"k":1,"k":2}}"#,
    ] {
        assert_eq!(decode_typed::<Free>(&text(frame), Codec::Json, &Limits::default()), None);
        assert_eq!(refused(frame).error().code(), &ErrorCode::Malformed, "{frame}");
    }
    let fine = r#"{"event":"a","data":{"a":{"k":1},"b":{"k":"{"}}}"#;
    assert!(decode_typed::<Free>(&text(fine), Codec::Json, &Limits::default()).is_some());
    // Past the keys compared on the stack, and with an escaped key.
    let many: Vec<String> = (0..20).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let many = format!(r#"{{"event":"m","data":{{{},"k\u0033":1}}}}"#, many.join(","));
    assert_eq!(decode_typed::<Free>(&text(&many), Codec::Json, &Limits::default()), None);
    assert_eq!(refused(&many).error().code(), &ErrorCode::Malformed);
    // The same key in two objects is fine.
    assert!(
        decode(&text(r#"{"event":"a","data":[{"k":1},{"k":2}]}"#), Codec::Json, &Limits::default())
            .is_ok()
    );
}
