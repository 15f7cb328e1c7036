//! One connection of a logged-in user: the chat's protocol (what the client may send, what
//! the server pushes, the rules and the refusals), and the value that serves it.

use std::sync::Arc;
use std::time::Duration;

use palisade::json::{Invalid, JsonSocket, Validate};
use palisade::rooms::{Member, Rooms, RoomsError, SessionId};
use palisade::server::{Handshake, State};
use palisade::{CloseCode, ReplyError, WebSocket};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ChatState;
use crate::auth::{Login, Name};

/// The longest message, in characters.
pub(crate) const MAX_TEXT: usize = 500;

// ANCHOR: protocol
/// The chat's own messages. The room protocol (`room.join`, `room.leave`, `room.presence`,
/// `user.send` and the events `room.message`, `presence.join`, `presence.leave`) is
/// palisade-rooms', served beside these on the same connection and described with them at
/// `/protocol.json`.
#[palisade::protocol]
pub(crate) trait Chat {
    /// Says something in a room the session has joined: every member, the sender included,
    /// gets `room.message` with the event `said` and the data `{from, text}`, at its offset.
    #[request("say", validate)]
    async fn say(&mut self, payload: Say) -> Result<Sent, ChatError>;

    /// A private message to every session of a user, who gets the push `private`.
    #[request("private", validate)]
    async fn private(&mut self, payload: Private) -> Result<Delivered, ChatError>;

    /// The sender is typing in a room: its other members get `room.message` with the event
    /// `typing` and the data `{name}`. Typing in a room not joined goes nowhere.
    #[event("typing", validate)]
    async fn typing(&mut self, payload: Typing);

    /// Right after the upgrade: the session's name, who is online, and the server's limits.
    #[push("welcome")]
    fn welcome(payload: Welcome);

    /// A private message.
    #[push("private")]
    fn private_message(payload: PrivateMessage);

    /// After each keepalive ping: the connection's round-trip time.
    #[push("keepalive")]
    fn keepalive(payload: Keepalive);
}
// ANCHOR_END: protocol

// ANCHOR: messages
/// `say`'s data.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Say {
    /// A room the session has joined.
    pub(crate) room: String,
    /// 1 to 500 characters, not all blank.
    #[schemars(length(min = 1, max = 500))]
    pub(crate) text: String,
}

/// `private`'s data.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Private {
    /// The user's name.
    pub(crate) to: String,
    /// 1 to 500 characters, not all blank.
    #[schemars(length(min = 1, max = 500))]
    pub(crate) text: String,
}

/// `typing`'s data.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Typing {
    /// A room the session has joined.
    pub(crate) room: String,
}

/// The ok reply to `say`: nothing more to tell (the message itself arrives as `room.message`).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Sent {}

/// The ok reply to `private`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Delivered {
    /// The user it went to.
    pub(crate) to: String,
}

/// The push `welcome`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Welcome {
    /// The session's user name.
    pub(crate) name: String,
    /// Who is online: every session, this one included (a user may show twice for a moment
    /// while a resumed session replaces its predecessor).
    pub(crate) online: Vec<Online>,
    /// The resume token: offered as the subprotocol `resume.TOKEN` by the page's next
    /// connection, it takes this session over instead of being refused as a second login.
    pub(crate) resume: String,
    /// A session that sends none of the chat's messages for this long is closed with 1000.
    pub(crate) inactivity_timeout_ms: u64,
    /// The longest message, in characters.
    pub(crate) max_text: usize,
}

/// One online session, in `welcome`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Online {
    /// The user's name.
    pub(crate) user: String,
    /// The session's id, as `presence.join` and `presence.leave` in `@online` name it.
    pub(crate) session: String,
}

/// The push `private`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct PrivateMessage {
    /// The sender's name.
    pub(crate) from: String,
    /// The message.
    pub(crate) text: String,
}

/// The push `keepalive`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Keepalive {
    /// The last ping's round-trip time, in milliseconds.
    pub(crate) rtt_ms: f64,
}
// ANCHOR_END: messages

// ANCHOR: validate
/// Rules that a type cannot state: an error reply `validation_failed` names each broken one.
fn check_room(room: &str, invalid: &mut Invalid) {
    if !valid_room(room) {
        invalid.push("room", "room", ROOM_RULE);
    }
}

fn check_text(text: &str, invalid: &mut Invalid) {
    if text.trim().is_empty() {
        invalid.push("text", "not_empty", "the message is empty");
    } else if text.chars().count() > MAX_TEXT {
        invalid.push("text", "max_length", "the message is longer than 500 characters");
    }
}

impl Validate for Say {
    fn validate(&self) -> Result<(), Invalid> {
        let mut invalid = Invalid::new();
        check_room(&self.room, &mut invalid);
        check_text(&self.text, &mut invalid);
        invalid.into_result()
    }
}

impl Validate for Private {
    fn validate(&self) -> Result<(), Invalid> {
        let mut invalid = Invalid::new();
        if Name::parse(&self.to).is_none() {
            invalid.push("to", "name", Name::RULE);
        }
        check_text(&self.text, &mut invalid);
        invalid.into_result()
    }
}

impl Validate for Typing {
    fn validate(&self) -> Result<(), Invalid> {
        let mut invalid = Invalid::new();
        check_room(&self.room, &mut invalid);
        invalid.into_result()
    }
}
// ANCHOR_END: validate

// ANCHOR: errors
/// The chat's refusals: each an error reply with a code of its own, the connection going on.
#[derive(Debug, ReplyError)]
pub(crate) enum ChatError {
    /// Posting to a room the session has not joined.
    #[reply(code = "not_joined", message = "join the room first")]
    NotJoined,
    /// A private message to nobody online.
    #[reply(code = "no_such_user", message = "no such user")]
    NoSuchUser,
    /// Over the per-user message rate.
    #[reply(code = "rate_limited", message = "too many messages: slow down")]
    RateLimited,
    /// The rooms' backend is down (Redis): local delivery goes on, this could not.
    #[reply(code = "unavailable", message = "the service is unavailable; try again later")]
    Unavailable,
    /// Anything else the rooms refused; the cause stays in the server's log.
    #[internal]
    Internal,
}

impl From<RoomsError> for ChatError {
    fn from(err: RoomsError) -> Self {
        match err {
            RoomsError::NoSuchUser => Self::NoSuchUser,
            RoomsError::NotJoined => Self::NotJoined,
            RoomsError::Backend(_) => Self::Unavailable,
            other => {
                tracing::warn!(err = %other, "rooms refused a chat message");
                Self::Internal
            }
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
    Handshake(Login { name, resumes }): Handshake<Login>,
    State(chat): State<Arc<ChatState>>,
) -> Result<(), palisade::Error> {
    let socket = JsonSocket::new(ws);
    // One session per name (`SessionPolicy::Refuse`), on every node: the hook checked already;
    // two upgrades of one name at the same moment meet here. A page that proved which session
    // it had (its resume token) takes that one over: its connection may have dropped before
    // the server noticed, or on a node that died.
    let connected = match &resumes {
        Some(previous) => {
            let previous = SessionId::from(previous.clone());
            chat.rooms.connect_replacing(&socket, name.to_string(), json!({}), &previous).await
        }
        None => chat.rooms.connect(&socket, name.to_string(), json!({})).await,
    };
    let session = match connected {
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
        Ok(joined) => joined
            .presence
            .into_iter()
            .map(|p| Online { user: p.user, session: p.session.to_string() })
            .collect::<Vec<_>>(),
        Err(err) => {
            tracing::warn!(%name, %err, "closing with 1013: the rooms are unavailable");
            return socket.close(CloseCode::TRY_AGAIN_LATER, "try again later").await;
        }
    };
    let push = ChatPush::new(socket.sender());
    let welcome = Welcome {
        name: name.to_string(),
        online,
        resume: chat.tokens.resume(&name, session.member().session().as_str()),
        inactivity_timeout_ms: chat.inactivity.as_millis() as u64,
        max_text: MAX_TEXT,
    };
    push.welcome(&welcome).await?;
    tokio::spawn(report_rtt(push.clone(), socket.sender(), chat.keepalive));
    let (active, activity) = watch::channel(());
    tokio::spawn(close_when_inactive(push, socket.sender(), activity, chat.inactivity));
    let user = User {
        name,
        member: session.member().clone(),
        rooms: chat.rooms.clone(),
        bucket: Bucket::new(chat.burst, chat.per_sec),
        active,
    };
    // The chat's messages go to `user`, the room protocol's to `session`. Dropping the session
    // (when this returns) takes it out of every room: the members left get `presence.leave`.
    user.serve_with(socket, &session).await
}
// ANCHOR_END: session

/// Tells the client the round-trip time of the connection's keepalive pings, after each.
async fn report_rtt(push: ChatPush, sender: palisade::json::JsonSender, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if push.is_closed() {
            return;
        }
        if let Some(rtt) = sender.raw().last_rtt() {
            let rtt_ms = rtt.as_secs_f64() * 1000.0;
            if push.keepalive(&Keepalive { rtt_ms }).await.is_err() {
                return;
            }
        }
    }
}

/// Closes the connection with 1000 "inactivity timeout" once `limit` has passed without one
/// of the chat's messages (each handler marks `activity`).
async fn close_when_inactive(
    push: ChatPush,
    sender: palisade::json::JsonSender,
    mut activity: watch::Receiver<()>,
    limit: Duration,
) {
    loop {
        tokio::select! {
            changed = activity.changed() => {
                if changed.is_err() {
                    return; // the session is over
                }
            }
            _ = push.closed() => return,
            () = tokio::time::sleep(limit) => {
                tracing::info!(conn = %push.id(), "closing with 1000: inactivity timeout");
                let _ = sender.raw().close(CloseCode::NORMAL, "inactivity timeout").await;
                return;
            }
        }
    }
}

// ANCHOR: serve
/// One logged-in session, serving [`Chat`].
pub(crate) struct User {
    name: Name,
    member: Member,
    rooms: Rooms,
    bucket: Bucket,
    active: watch::Sender<()>,
}

impl User {
    fn joined(&self, room: &str) -> bool {
        self.member.rooms().iter().any(|r| r == room)
    }

    /// One line per error reply: the code and the user, never the message's text.
    fn refused(&self, error: ChatError) -> ChatError {
        if let palisade::json::Outcome::Reply(reply) = palisade::json::ReplyError::outcome(&error) {
            tracing::info!(name = %self.name, code = reply.code().as_str(), "error reply");
        }
        error
    }

    /// Marks the session active (the inactivity timer starts again) and takes a token for a
    /// message that goes to others.
    fn post(&mut self) -> Result<(), ChatError> {
        self.active.send_replace(());
        if self.bucket.take() { Ok(()) } else { Err(ChatError::RateLimited) }
    }
}

impl Chat for User {
    async fn say(&mut self, payload: Say) -> Result<Sent, ChatError> {
        if !self.joined(&payload.room) {
            return Err(self.refused(ChatError::NotJoined));
        }
        self.post().map_err(|e| self.refused(e))?;
        let said = json!({ "from": self.name, "text": payload.text });
        match self.rooms.broadcast(&payload.room, "said", &said).await {
            Ok(_) => Ok(Sent {}),
            Err(err) => Err(self.refused(err.into())),
        }
    }

    async fn private(&mut self, payload: Private) -> Result<Delivered, ChatError> {
        self.post().map_err(|e| self.refused(e))?;
        let message = PrivateMessage { from: self.name.to_string(), text: payload.text };
        match self.rooms.to_user(&payload.to, "private", &message).await {
            Ok(_) => Ok(Delivered { to: payload.to }),
            Err(err) => Err(self.refused(err.into())),
        }
    }

    async fn typing(&mut self, payload: Typing) {
        self.active.send_replace(());
        if self.joined(&payload.room) {
            let typing = json!({ "name": self.name });
            // Not worth a refusal: a typing notice that cannot go out is simply lost.
            let _ =
                self.rooms.broadcast_except(&payload.room, &self.member, "typing", &typing).await;
        }
    }
}
// ANCHOR_END: serve
