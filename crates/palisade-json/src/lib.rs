//! # palisade-json
//!
//! Typed JSON messages over palisade WebSockets: events, requests and replies in both
//! directions, and — where other libraries drop the connection or hand the application a
//! parse error — an *error reply* that tells the peer precisely what was wrong, followed by
//! the next message.
//!
//! ## Wire format v1
//!
//! One JSON object per text frame:
//!
//! | message | shape |
//! |---|---|
//! | event | `{"event":"chat.send","data":{…}}` (`data` optional, absent = `null`) |
//! | request | `{"event":"chat.send","id":7,"data":{…}}` |
//! | ok reply | `{"reply":7,"status":"ok","data":{…}}` |
//! | error reply | `{"reply":7,"status":"error","error":{"code":"invalid_payload","message":"…","path":"data.text","details":{…}}}` |
//!
//! - An `id` is an integer from 0 to 2^53−1 (exact in JavaScript), chosen by the sender and
//!   unique among its pending requests; both sides may send requests.
//! - An error reply to a message without a readable id (an event, a broken frame) has
//!   `"reply":null`. So has an error reply to a *reply* (`unknown_reply`): a reply's id is the
//!   id of one of our requests, and the peer would take `"reply":7` as the answer to its own
//!   request 7.
//! - Unknown keys are refused (`invalid_envelope`), so that a message using a later version's
//!   keys is noticed rather than half understood. The version is not in the message: it is
//!   the subprotocol, [`SUBPROTOCOL`] (`palisade.json.v1`), negotiated in the handshake.
//! - Error codes are stable strings ([`ErrorCode`]); messages are fixed texts per code, or
//!   serde's structural message with the peer's values taken out.
//! - Feature `msgpack`: the same envelope as a MessagePack map in binary frames
//!   ([`Codec::MessagePack`]).
//!
//! ## Example
//!
//! A server handler: bad frames never reach it, requests are answered once.
//!
//! ```no_run
//! # #[cfg(feature = "conn")]
//! # mod example {
//! use palisade_conn::WebSocket;
//! use palisade_json::{AppCode, ErrorReply, Incoming, JsonSocket, Request};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "event", content = "data", rename_all = "snake_case")]
//! enum Chat {
//!     Send { room: String, text: String },
//!     Join { room: String },
//! }
//!
//! async fn chat(ws: WebSocket) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let mut socket = JsonSocket::new(ws);
//!     loop {
//!         match socket.recv::<Chat>().await? {
//!             Incoming::Event(Chat::Send { room, text }) => {
//!                 socket.emit("said", &serde_json::json!({ "room": room, "text": text })).await?
//!             }
//!             Incoming::Request(Request { message: Chat::Join { room }, responder }) => {
//!                 if room == "full" {
//!                     let full = ErrorReply::new(AppCode::new("room_full")?, "the room is full");
//!                     responder.reply_error(&full).await?;
//!                 } else {
//!                     responder.reply(&serde_json::json!({ "joined": room })).await?;
//!                 }
//!             }
//!             // `Send` as a request, `Join` as an event: answered `no_reply` when dropped.
//!             Incoming::Request(_) | Incoming::Event(_) => {}
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! Replies to requests *we* send ([`JsonSender::request`]) are routed by whichever task
//! receives: keep calling `recv` meanwhile (a handler's loop does), or wrap the wait in
//! [`while_receiving`].
//!
//! ## Architecture invariants
//!
//! - **Bad input never reaches the application.** A frame that is too large, too deep,
//!   malformed, not an envelope, of an unknown event, of the wrong shape or invalid is
//!   answered with an error reply by [`JsonSocket::recv`] itself, which then goes on
//!   receiving.
//! - **Nothing the peer sent is echoed**: not in error replies, not in close reasons, not in
//!   log lines. Error messages name our fields and types, never the peer's values; map keys
//!   of the peer's show as `?` in paths (a path names only fields of the application's structs).
//! - **Limits come before parsing**: the size first, then the nesting depth by a linear byte
//!   scan without recursion, then the parser.
//! - **Errors are never answered with errors**, so two endpoints cannot ping-pong.
//! - **A misbehaving peer is closed, not served forever**: each failure counts as a strike;
//!   too many within a window close the connection with the close code of the last failure's
//!   class ([`ErrorCode::strike`]).
//! - **A request id is never reused** on a connection; a reply is delivered to the request
//!   that is waiting for it and never to the application's receive loop. A reply after the
//!   deadline is dropped.
//! - Depends on palisade-proto and palisade-error, and on palisade-conn (and tokio) only with
//!   the `conn` feature: the wire format ([`wire`]) builds without a runtime.
//!
//! ## Features
//!
//! - `conn` (default): [`JsonSocket`], [`JsonSender`], [`request_many`].
//! - `garde`: every `garde::Validate` type (with a `Default` context) is [`Validate`].
//! - `msgpack`: [`Codec::MessagePack`].

mod code;
#[cfg(feature = "schema")]
pub mod describe;
mod limits;
mod probe;
pub mod route;
#[cfg(feature = "conn")]
mod socket;
#[cfg(all(feature = "conn", feature = "schema"))]
pub mod typed;
mod validate;
pub mod wire;

pub use code::{AppCode, ErrorCode, ErrorReply, InvalidCode, Outcome, ReplyError, StrikeClass};
pub use limits::Limits;
#[cfg(feature = "conn")]
pub use socket::{
    Incoming, JsonConfig, JsonSender, JsonSocket, Request, RequestError, Responder, StrikePolicy,
    request_many, while_receiving,
};
pub use validate::{Invalid, Validate, Violation};
pub use wire::{Codec, EncodeError, MAX_ID};

/// The subprotocol that names wire format v1 (`Sec-WebSocket-Protocol: palisade.json.v1`).
/// A later format gets a new name, so both ends know which one they speak before the first
/// message.
pub const SUBPROTOCOL: &str = "palisade.json.v1";
