//! One connection of a logged-in user: what the client may send, the rules its messages must
//! follow, and the loop that answers them.

use std::sync::Arc;
use std::time::Duration;

use palisade::json::{
    AppCode, ErrorReply, Incoming, Invalid, JsonSocket, Outcome, ReplyError, Request, Validate,
};
use palisade::rooms::{RoomsError, Session};
use palisade::server::{Handshake, State};
use palisade::{CloseCode, WebSocket};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Chat;
use crate::auth::Name;

/// The longest message, in characters.
pub(crate) const MAX_TEXT: usize = 500;

// ANCHOR: messages
/// What a client sends besides the room protocol (`room.join`, `room.leave`, `room.presence`,
/// `user.send`, which palisade-rooms answers): `say` and `private` are requests (answered with
/// an ok or an error reply); `typing` is an event.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    /// Published to the room (its members get `room.message` with the event `said`).
    Say { room: String, text: String },
    /// To one user, who gets the event `private`.
    Private { to: String, text: String },
    /// Published to the room's other members (`room.message` with the event `typing`).
    Typing { room: String },
}
// ANCHOR_END: messages

// ANCHOR: validate
impl Validate for ClientMessage {
    fn validate(&self) -> Result<(), Invalid> {
        let mut invalid = Invalid::new();
        let (room, text) = match self {
            Self::Typing { room } => (Some(room), None),
            Self::Say { room, text } => (Some(room), Some(text)),
            Self::Private { to, text } => {
                if Name::parse(to).is_none() {
                    invalid.push("to", "name", Name::RULE);
                }
                (None, Some(text))
            }
        };
        if let Some(room) = room
            && !valid_room(room)
        {
            invalid.push("room", "room", ROOM_RULE);
        }
        if let Some(text) = text {
            if text.trim().is_empty() {
                invalid.push("text", "not_empty", "the message is empty");
            } else if text.chars().count() > MAX_TEXT {
                invalid.push("text", "max_length", "the message is longer than 500 characters");
            }
        }
        invalid.into_result()
    }
}
// ANCHOR_END: validate

// ANCHOR: errors
/// The chat's refusals: each an error reply with a code of its own, the connection going on.
#[derive(Debug)]
pub(crate) enum ChatError {
    /// Posting to a room the session has not joined.
    NotJoined,
    /// A private message to nobody online.
    NoSuchUser,
    /// Over the per-user message rate.
    RateLimited,
    /// Anything else the rooms refused (a backend that is down: `unavailable`).
    Rooms(RoomsError),
}

impl ChatError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotJoined => "not_joined",
            Self::NoSuchUser => "no_such_user",
            Self::RateLimited => "rate_limited",
            Self::Rooms(_) => "rooms",
        }
    }
}

impl ReplyError for ChatError {
    fn outcome(&self) -> Outcome {
        let (message, path) = match self {
            Self::NotJoined => ("join the room first", "data.room"),
            Self::NoSuchUser => ("no such user", "data.to"),
            Self::RateLimited => ("too many messages: slow down", "data"),
            Self::Rooms(err) => return err.outcome(),
        };
        match AppCode::new(self.code()) {
            Ok(code) => Outcome::Reply(ErrorReply::new(code, message).with_path(path)),
            // The codes above are snake_case and not built in.
            Err(_) => Outcome::Reply(ErrorReply::internal()),
        }
    }
}

impl From<RoomsError> for ChatError {
    fn from(err: RoomsError) -> Self {
        match err {
            RoomsError::NoSuchUser => Self::NoSuchUser,
            RoomsError::NotJoined => Self::NotJoined,
            other => Self::Rooms(other),
        }
    }
}

/// The room every session joins on its own, whose presence is who is online. Its name breaks
/// the rule of the rooms a client may join, so no client joins or posts to it.
pub(crate) const ONLINE: &str = "@online";

/// The rule of a room's name, as the refusals state it.
pub(crate) const ROOM_RULE: &str = "a room name is 3 to 32 letters, digits, `_` or `-`";

/// Whether a client may name this room: the same rule as a user name.
pub(crate) fn valid_room(room: &str) -> bool {
    Name::parse(room).is_some()
}
// ANCHOR_END: errors

/// A token bucket over the messages a user posts: `burst` at once, then `per_sec`.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: u32, per_sec: f64) -> Self {
        Self { tokens: f64::from(burst), burst: f64::from(burst), per_sec, at: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

// ANCHOR: session
/// The `/ws` handler: runs only for a valid token, whose name arrives from the handshake hook.
pub(crate) async fn session(
    ws: WebSocket,
    Handshake(name): Handshake<Name>,
    State(chat): State<Arc<Chat>>,
) -> Result<(), palisade::Error> {
    let mut socket = JsonSocket::new(ws);
    // One session per name (`SessionPolicy::Refuse`), on every node: the hook checked already;
    // two upgrades of one name at the same moment meet here.
    let session = match chat.rooms.connect(&socket, name.to_string(), json!({})).await {
        Ok(session) => session,
        Err(RoomsError::SessionRefused) => {
            tracing::info!(%name, "closing with 4003: name already connected");
            return socket.close(CloseCode(4003), "name already connected").await;
        }
        Err(err) => {
            tracing::warn!(%name, %err, "closing with 1013: the rooms are unavailable");
            return socket.close(CloseCode::TRY_AGAIN_LATER, "try again later").await;
        }
    };
    let online = match session.join(ONLINE).await {
        Ok(joined) => joined.presence.into_iter().map(|p| p.user).collect::<Vec<_>>(),
        Err(err) => {
            tracing::warn!(%name, %err, "closing with 1013: the rooms are unavailable");
            return socket.close(CloseCode::TRY_AGAIN_LATER, "try again later").await;
        }
    };
    let welcome = json!({
        "name": name,
        "online": online,
        "inactivity_timeout_ms": chat.inactivity.as_millis() as u64,
        "max_text": MAX_TEXT,
    });
    socket.emit("welcome", &welcome).await?;
    tokio::spawn(report_rtt(socket.sender(), chat.keepalive));
    // Dropping the session (when this returns) takes it out of every room: the members left
    // there get `presence.leave`.
    serve(&mut socket, &session, &name, &chat).await
}
// ANCHOR_END: session

/// Tells the client the round-trip time of the connection's keepalive pings, after each.
async fn report_rtt(sender: palisade::json::JsonSender, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if sender.is_closed() {
            return;
        }
        if let Some(rtt) = sender.raw().last_rtt() {
            let rtt_ms = rtt.as_secs_f64() * 1000.0;
            if sender.emit("keepalive", &json!({ "rtt_ms": rtt_ms })).await.is_err() {
                return;
            }
        }
    }
}

// ANCHOR: serve
async fn serve(
    socket: &mut JsonSocket,
    session: &Session,
    name: &Name,
    chat: &Chat,
) -> Result<(), palisade::Error> {
    let mut bucket = Bucket::new(chat.burst, chat.per_sec);
    loop {
        let deadline = Instant::now() + chat.inactivity;
        // The room protocol is answered inside `recv`, bad frames by palisade-json: neither
        // gets here.
        let incoming =
            match tokio::time::timeout_at(deadline, session.recv::<ClientMessage>(socket)).await {
                Ok(incoming) => incoming?,
                Err(_) => {
                    tracing::info!(%name, "closing with 1000: inactivity timeout");
                    return socket.close(CloseCode::NORMAL, "inactivity timeout").await;
                }
            };
        let (message, responder) = match incoming {
            Incoming::Request(Request { message, responder }) => (message, Some(responder)),
            Incoming::Event(message) => (message, None),
        };
        // The rules (`Validate`): broken ones are answered `validation_failed`.
        if let Err(invalid) = message.validate() {
            tracing::info!(%name, code = "validation_failed", "error reply");
            if let Some(responder) = responder {
                responder.reply_error(&invalid).await?;
            }
            continue;
        }
        let answer = match message {
            ClientMessage::Say { room, text } => {
                say(session, name, &mut bucket, &room, &text).await
            }
            ClientMessage::Private { to, text } => {
                if bucket.take() {
                    let private = json!({ "from": name, "text": text });
                    match chat.rooms.to_user(&to, "private", &private).await {
                        Ok(_) => Ok(json!({ "to": to })),
                        Err(err) => Err(ChatError::from(err)),
                    }
                } else {
                    Err(ChatError::RateLimited)
                }
            }
            ClientMessage::Typing { room } => {
                // Not worth an answer, nor a refusal: typing in a room not joined goes nowhere.
                let _ = session.broadcast_others(&room, "typing", &json!({ "name": name })).await;
                Ok(Value::Null)
            }
        };
        match (answer, responder) {
            (Ok(data), Some(responder)) => responder.reply(&data).await?,
            (Err(error), Some(responder)) => {
                // One line per error reply: the code and the user, never the message's text.
                tracing::info!(%name, code = error.code(), "error reply");
                responder.reply_error(&error).await?
            }
            (Err(error), None) => tracing::info!(%name, code = error.code(), "event refused"),
            (Ok(_), None) => {}
        }
    }
}

/// `say`: published to every member of the room, the sender included, so that each sees it
/// once, at its offset.
async fn say(
    session: &Session,
    name: &Name,
    bucket: &mut Bucket,
    room: &str,
    text: &str,
) -> Result<Value, ChatError> {
    if !session.member().rooms().iter().any(|r| r == room) {
        return Err(ChatError::NotJoined);
    }
    if !bucket.take() {
        return Err(ChatError::RateLimited);
    }
    session.rooms().broadcast(room, "said", &json!({ "from": name, "text": text })).await?;
    Ok(json!({}))
}
// ANCHOR_END: serve
