//! # palisade-rooms
//!
//! Rooms over palisade-json: join and leave with an authorisation hook, broadcasts to a room,
//! to a room but the sender, or to everyone, private messages to a user by name, presence with
//! per-member metadata, and — opt-in per room — recovery of the messages a client missed while
//! it was away. One process needs nothing else ([`InMemory`]); several nodes share rooms
//! through a [`Backend`] (`palisade-redis`).
//!
//! ```no_run
//! use palisade_json::{Incoming, JsonSocket};
//! use palisade_rooms::{Rooms, RoomsConfig};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "event", content = "data", rename_all = "snake_case")]
//! enum Chat {
//!     Say { room: String, text: String },
//! }
//!
//! async fn chat(ws: palisade_conn::WebSocket, rooms: Rooms) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut socket = JsonSocket::new(ws);
//!     let session = rooms.connect(&socket, "alice", serde_json::json!({"status": "here"})).await?;
//!     loop {
//!         // `room.join`, `room.leave`, `room.presence` and `user.send` are answered in here.
//!         match session.recv::<Chat>(&mut socket).await? {
//!             Incoming::Event(Chat::Say { room, text }) => {
//!                 session.broadcast_others(&room, "said", &serde_json::json!({ "text": text })).await?
//!             }
//!             Incoming::Request(_) => {}
//!         }
//!     }
//! }
//! ```
//!
//! The wire protocol (every message, with its data) is in the book's *Rooms* chapter and in
//! [`protocol`].
//!
//! ## Architecture invariants
//!
//! - **A broadcast is encoded once**: one serialisation and one frame, whose bytes every
//!   member's queue shares (a reference count each); only a member's compression, in the
//!   connection, makes a copy of its own.
//! - **Publishers never wait for members.** Each member has a bounded queue written by its
//!   own task; a full queue applies the slow-consumer policy ([`SlowConsumer`]) to that member
//!   alone. Memory per member is bounded by [`RoomsConfig::queue_capacity`] messages (plus
//!   one batch being written).
//! - **A join reply comes before the room's traffic**, and with recovery it hands over
//!   exactly the publications between the client's offset and the live stream: each once, in
//!   offset order. When that is impossible it says why (`reason`), never silently.
//! - **A refusal is an error reply, not a close**: the authorisation hook, unknown users,
//!   limits and an unavailable backend all answer the request and keep the connection.
//! - **Nothing the peer sent is echoed** in error replies; a backend's failure reaches the
//!   client as `unavailable`, its detail only the logs.
//! - Depends on palisade-conn, palisade-json, palisade-proto (the `Message` type) and
//!   palisade-error; never on the server or the client.
//!
//! ## Features
//!
//! - `typed`: a [`Session`] is a `palisade_json::typed::ProtocolPart`, so that a protocol of
//!   `#[palisade::protocol]` serves the room protocol beside its own messages
//!   (`serve_with(socket, &session)`) and describes it with JSON Schemas.
//!
//! The in-memory backend is always there; Redis is the `palisade-redis` crate.

mod backend;
mod config;
mod error;
mod member;
pub mod protocol;
mod rooms;
#[cfg(feature = "typed")]
mod typed;

pub use backend::{
    Backend, BoxFuture, InMemory, Local, NotRecovered, PublishRequest, REPLACED, Recovered,
    RoomInfo, Target, new_epoch,
};
pub use config::{
    Authorizer, Recovery, RoomOptions, RoomPolicy, RoomsConfig, SessionPolicy, SlowConsumer,
};
pub use error::{BackendError, RoomsError};
pub use member::{Member, MemberStats, Presence, SessionId};
pub use protocol::{Publication, RoomMessage, StreamPosition};
pub use rooms::{Joined, RecoveryOutcome, Rooms, Session};
