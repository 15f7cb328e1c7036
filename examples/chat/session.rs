//! One connection of a logged-in user: what the client may send, the rules its messages must
//! follow, and the loop that answers them.

use std::sync::Arc;
use std::time::Duration;

use palisade::json::{
    AppCode, ErrorReply, Incoming, Invalid, JsonSocket, Outcome, ReplyError, Request, Validate,
};
use palisade::server::{Handshake, State};
use palisade::{CloseCode, WebSocket};
use serde::Deserialize;
use tokio::time::Instant;

use crate::Chat;
use crate::auth::Name;

/// The longest message, in characters.
pub(crate) const MAX_TEXT: usize = 500;

// ANCHOR: messages
/// What a client sends. `join`, `leave`, `send` and `private` are requests (answered with an
/// ok or an error reply); `typing` is an event.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    /// Join a room; `since`, after a reconnection, is the last offset seen there.
    Join {
        room: String,
        since: Option<u64>,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        text: String,
    },
    Private {
        to: String,
        text: String,
    },
    Typing {
        room: String,
    },
}
// ANCHOR_END: messages

// ANCHOR: validate
impl Validate for ClientMessage {
    fn validate(&self) -> Result<(), Invalid> {
        let mut invalid = Invalid::new();
        let (room, text) = match self {
            Self::Join { room, .. } | Self::Leave { room } | Self::Typing { room } => {
                (Some(room), None)
            }
            Self::Send { room, text } => (Some(room), Some(text)),
            Self::Private { to, text } => {
                if Name::parse(to).is_none() {
                    invalid.push("to", "name", Name::RULE);
                }
                (None, Some(text))
            }
        };
        if let Some(room) = room
            && Name::parse(room).is_none()
        {
            invalid.push("room", "room", "a room name is 3 to 32 letters, digits, `_` or `-`");
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
    NotInRoom,
    NoSuchUser,
    RateLimited,
}

impl ChatError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotInRoom => "not_in_room",
            Self::NoSuchUser => "no_such_user",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl ReplyError for ChatError {
    fn outcome(&self) -> Outcome {
        let (message, path) = match self {
            Self::NotInRoom => ("join the room first", "data.room"),
            Self::NoSuchUser => ("no such user", "data.to"),
            Self::RateLimited => ("too many messages: slow down", "data"),
        };
        match AppCode::new(self.code()) {
            Ok(code) => Outcome::Reply(ErrorReply::new(code, message).with_path(path)),
            // The three codes are snake_case and not built in.
            Err(_) => Outcome::Reply(ErrorReply::internal()),
        }
    }
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
    let sender = socket.sender();
    // The hook checked the name; two upgrades of one name at the same moment meet here.
    if !chat.hub.connect(&name, sender.clone()) {
        tracing::info!(%name, "closing with 4003: name already connected");
        return socket.close(CloseCode(4003), "name already connected").await;
    }
    let welcome = serde_json::json!({
        "name": name,
        "inactivity_timeout_ms": chat.inactivity.as_millis() as u64,
        "max_text": MAX_TEXT,
    });
    let result = match socket.emit("welcome", &welcome).await {
        Ok(()) => {
            tokio::spawn(report_rtt(sender, chat.keepalive));
            serve(&mut socket, &name, &chat).await
        }
        Err(err) => Err(err),
    };
    chat.hub.disconnect(&name);
    result
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
            if sender.emit("keepalive", &serde_json::json!({ "rtt_ms": rtt_ms })).await.is_err() {
                return;
            }
        }
    }
}

// ANCHOR: serve
async fn serve(socket: &mut JsonSocket, name: &Name, chat: &Chat) -> Result<(), palisade::Error> {
    let mut bucket = Bucket::new(chat.burst, chat.per_sec);
    loop {
        let deadline = Instant::now() + chat.inactivity;
        // Bad input never gets here: palisade-json answers it with an error reply.
        let incoming = match tokio::time::timeout_at(deadline, socket.recv_validated()).await {
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
        let answer = match message {
            ClientMessage::Join { room, since } => {
                Ok(serde_json::to_value(chat.hub.join(name, &room, since)).unwrap_or_default())
            }
            ClientMessage::Leave { room } => {
                Ok(serde_json::json!({ "left": chat.hub.leave(name, &room) }))
            }
            ClientMessage::Send { room, text } => {
                if !bucket.take() {
                    Err(ChatError::RateLimited)
                } else {
                    match chat.hub.post(name, &room, text) {
                        Some(offset) => Ok(serde_json::json!({ "offset": offset })),
                        None => Err(ChatError::NotInRoom),
                    }
                }
            }
            ClientMessage::Private { to, text } => {
                if !bucket.take() {
                    Err(ChatError::RateLimited)
                } else if Name::parse(&to).is_some_and(|to| chat.hub.private(name, &to, &text)) {
                    Ok(serde_json::json!({ "delivered": true }))
                } else {
                    Err(ChatError::NoSuchUser)
                }
            }
            ClientMessage::Typing { room } => {
                chat.hub.typing(name, &room);
                Ok(serde_json::Value::Null)
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
// ANCHOR_END: serve
