//! The registry ([`Rooms`]) and a connection's place in it ([`Session`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use palisade_error::Error;
use palisade_json::route::Routed;
use palisade_json::{Incoming, JsonSocket, Request, Responder};
use palisade_proto::message::Utf8Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::backend::{
    Backend, InMemory, Local, NotRecovered, PublishRequest, RoomInfo, Target, new_epoch,
};
use crate::config::{RoomsConfig, SessionPolicy};
use crate::error::RoomsError;
use crate::member::{Hold, Member, MemberInner, Outbox, Presence, SessionId, lock, write_loop};
use crate::protocol::{
    self, Command, JoinData, PresenceEvent, Publication, RoomMessage, StreamPosition, UserMessage,
};

/// The rooms of one node: who is in which room, broadcasts, private messages, presence and
/// recovery, over a [`Backend`] ([`InMemory`] by default). Cheap to clone: every clone is
/// the same registry.
///
/// A connection enters it with [`Rooms::connect`], which gives a [`Session`]; the session's
/// [`Session::recv`] answers the room protocol's requests and hands everything else to the
/// application.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<RoomsInner>,
}

struct RoomsInner {
    config: RoomsConfig,
    local: Local,
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("node", &self.node())
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

/// What a join found: the room's presence list and, with recovery, where the client stands.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Joined {
    /// The room.
    pub room: String,
    /// Who is in the room, the new member included.
    pub presence: Vec<Presence>,
    /// With recovery on in the room: the outcome.
    pub recovery: Option<RecoveryOutcome>,
}

/// The recovery part of a join.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecoveryOutcome {
    /// The epoch and the offset of the last publication handed over (in `publications` or
    /// before): the client's position once it has processed them.
    pub position: StreamPosition,
    /// Why what was missed could not be recovered, if it could not.
    pub not_recovered: Option<NotRecovered>,
    /// The publications the client gets with the join, in order: what it missed (when
    /// recovered) and what was published while it joined.
    pub publications: Vec<Publication>,
}

/// The join reply's data.
#[derive(Serialize)]
struct JoinReply<'a> {
    room: &'a str,
    presence: &'a [Presence],
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<RecoveryReply<'a>>,
}

#[derive(Serialize)]
struct RecoveryReply<'a> {
    epoch: &'a str,
    offset: u64,
    recovered: bool,
    reason: Option<&'static str>,
    publications: Vec<Box<RawValue>>,
}

impl Joined {
    fn reply(&self) -> Result<JoinReply<'_>, serde_json::Error> {
        let recovery = match &self.recovery {
            None => None,
            Some(outcome) => Some(RecoveryReply {
                epoch: &outcome.position.epoch,
                offset: outcome.position.offset,
                recovered: outcome.not_recovered.is_none(),
                reason: outcome.not_recovered.map(NotRecovered::as_str),
                publications: outcome
                    .publications
                    .iter()
                    .map(|p| RawValue::from_string(p.data().to_owned()))
                    .collect::<Result<_, _>>()?,
            }),
        };
        Ok(JoinReply { room: &self.room, presence: &self.presence, recovery })
    }
}

impl Rooms {
    /// A registry with the in-memory backend: one process, no external service.
    pub fn new(config: RoomsConfig) -> Self {
        Self::with_backend(config, InMemory::new())
    }

    /// A registry over `backend`.
    pub fn with_backend(config: RoomsConfig, backend: impl Backend) -> Self {
        let node: Arc<str> = format!("n{}", &new_epoch()[..8]).into();
        let local = Local::new(node, config.queue_capacity, config.room_policy.clone());
        backend.attach(local.clone());
        Self { inner: Arc::new(RoomsInner { config, local, backend: Arc::new(backend) }) }
    }

    /// This node's name (the first part of its sessions' ids).
    pub fn node(&self) -> &str {
        self.inner.local.node()
    }

    /// The configuration.
    pub fn config(&self) -> &RoomsConfig {
        &self.inner.config
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    /// Enters a connection into the registry as a session of `user`, with `meta` shown in
    /// presence lists. Starts the task that writes the member's queue to the connection.
    ///
    /// # Errors
    ///
    /// [`RoomsError::SessionRefused`] when the user has a session already (on any node) and
    /// [`SessionPolicy::Refuse`] is in force; [`RoomsError::Backend`] when that policy needs
    /// the backend and it is unavailable.
    pub async fn connect(
        &self,
        socket: &JsonSocket,
        user: impl Into<String>,
        meta: Value,
    ) -> Result<Session, RoomsError> {
        self.open(socket, user.into(), meta, None).await
    }

    /// [`connect`](Self::connect) for a client that comes back after its connection dropped,
    /// perhaps before the server noticed (a half-open TCP connection on a live node, or a
    /// node that died and whose sessions have not timed out yet): `previous`, the session it
    /// had, if it is a session of `user`, does not count against [`SessionPolicy::Refuse`]
    /// and is ended — closed with 1000 "session replaced" where it is still open, on this
    /// node or another; unregistered at once where its node is dead.
    ///
    /// Only the application can tell that the client owned `previous` (session ids are not
    /// secrets): give it a `previous` it proved, for example with a signed token naming it
    /// that the client got from the old session (the chat example does so).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_replacing(
        &self,
        socket: &JsonSocket,
        user: impl Into<String>,
        meta: Value,
        previous: &SessionId,
    ) -> Result<Session, RoomsError> {
        self.open(socket, user.into(), meta, Some(previous)).await
    }

    async fn open(
        &self,
        socket: &JsonSocket,
        user: String,
        meta: Value,
        replaces: Option<&SessionId>,
    ) -> Result<Session, RoomsError> {
        let config = &self.inner.config;
        let user: Arc<str> = user.into();
        let session = SessionId::new(self.node(), socket.id().get());
        let outbox = Arc::new(Outbox::new(config.queue_capacity, config.slow_consumer));
        let member = Member(Arc::new(MemberInner {
            user,
            session,
            meta,
            sender: socket.sender(),
            outbox: outbox.clone(),
            rooms: Mutex::new(BTreeSet::new()),
        }));
        let exclusive = config.sessions == SessionPolicy::Refuse;
        let Some(replaced) = self.inner.local.add_session(&member, exclusive, replaces) else {
            return Err(RoomsError::SessionRefused);
        };
        let presence = member.presence();
        match self.inner.backend.open_session(&presence, exclusive, replaces).await {
            Ok(true) => {}
            Ok(false) => {
                self.inner.local.remove_session(&member);
                return Err(RoomsError::SessionRefused);
            }
            Err(err) if exclusive => {
                self.inner.local.remove_session(&member);
                return Err(err.into());
            }
            Err(err) => {
                tracing::warn!(session = %member.session(), "rooms: session not registered with the backend: {err}");
            }
        }
        if let Some(replaced) = replaced {
            crate::backend::end_replaced(&replaced);
        }
        tokio::spawn(write_loop(outbox, socket.sender().raw().clone()));
        Ok(Session { rooms: self.clone(), member })
    }

    /// Makes `member` join `room`, without asking the authorisation hook (the server decides).
    /// Its room members get `presence.join`; with recovery on, what was published while it
    /// joined is queued for it first.
    pub async fn join(&self, room: &str, member: &Member) -> Result<Joined, RoomsError> {
        let (joined, _hold) = self.join_inner(room, member, None, true).await?;
        Ok(joined)
    }

    /// Makes `member` leave `room`; its room members get `presence.leave`.
    pub async fn leave(&self, room: &str, member: &Member) -> Result<(), RoomsError> {
        if !lock(&member.0.rooms).remove(room) {
            return Err(RoomsError::NotJoined);
        }
        self.left(room, member).await;
        Ok(())
    }

    /// Publishes `event` with `data` to every member of `room`, on every node.
    pub async fn broadcast<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: &str,
        data: &T,
    ) -> Result<(), RoomsError> {
        self.publish(room, None, event, data).await
    }

    /// Publishes to every member of `room` but `except` (typically the sender).
    pub async fn broadcast_except<T: Serialize + ?Sized>(
        &self,
        room: &str,
        except: &Member,
        event: &str,
        data: &T,
    ) -> Result<(), RoomsError> {
        self.publish(room, Some(except.session()), event, data).await
    }

    /// Emits `event` with `data` to every session, on every node (not kept in any history).
    pub async fn broadcast_all<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), RoomsError> {
        let frame = protocol::event_frame(event, data)?;
        self.inner.local.deliver_frame(Target::All, &frame);
        self.inner.backend.forward(Target::All, &frame).await?;
        Ok(())
    }

    /// Emits `event` with `data` to every session of `user`, on every node; returns how many
    /// sessions it has.
    ///
    /// # Errors
    ///
    /// [`RoomsError::NoSuchUser`] when nobody of that name is connected.
    pub async fn to_user<T: Serialize + ?Sized>(
        &self,
        user: &str,
        event: &str,
        data: &T,
    ) -> Result<usize, RoomsError> {
        let frame = protocol::event_frame(event, data)?;
        self.to_user_frame(user, &frame).await
    }

    /// Who is in `room`, on every node.
    pub async fn presence(&self, room: &str) -> Result<Vec<Presence>, RoomsError> {
        Ok(self.inner.backend.presence(room).await?)
    }

    /// Every room with members, on every node.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, RoomsError> {
        Ok(self.inner.backend.rooms().await?)
    }

    /// How many sessions `user` has, on every node.
    pub async fn user_sessions(&self, user: &str) -> Result<usize, RoomsError> {
        Ok(self.inner.backend.user_sessions(user).await?)
    }

    /// A session of this node, by id.
    pub fn member(&self, session: &SessionId) -> Option<Member> {
        self.inner.local.member(session)
    }

    async fn publish<T: Serialize + ?Sized>(
        &self,
        room: &str,
        except: Option<&SessionId>,
        event: &str,
        data: &T,
    ) -> Result<(), RoomsError> {
        // The one serialisation every member shares.
        let data =
            serde_json::value::to_raw_value(data).map_err(palisade_json::EncodeError::from)?;
        let options = (self.inner.config.room_policy)(room);
        let request = PublishRequest {
            room,
            event,
            data: &data,
            except,
            recovery: options.recovery.as_ref(),
        };
        Ok(self.inner.backend.publish(request).await?)
    }

    async fn to_user_frame(&self, user: &str, frame: &Utf8Bytes) -> Result<usize, RoomsError> {
        let local = self.inner.local.user_sessions(user);
        let sessions = match self.inner.backend.user_sessions(user).await {
            Ok(count) => count,
            // Local delivery goes on; the caller learns that the rest could not be reached.
            Err(err) if local > 0 => {
                self.inner.local.deliver_frame(Target::User(user), frame);
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        if sessions == 0 && local == 0 {
            return Err(RoomsError::NoSuchUser);
        }
        self.inner.local.deliver_frame(Target::User(user), frame);
        if sessions > local {
            self.inner.backend.forward(Target::User(user), frame).await?;
        }
        Ok(sessions.max(local))
    }

    /// Joins; the returned hold keeps the member's queue from being written until the caller
    /// has answered the join.
    async fn join_inner(
        &self,
        room: &str,
        member: &Member,
        since: Option<&StreamPosition>,
        queue_joining: bool,
    ) -> Result<(Joined, Hold), RoomsError> {
        let config = &self.inner.config;
        if room.is_empty() || room.len() > config.max_room_name {
            return Err(RoomsError::InvalidRoom { len: room.len(), max: config.max_room_name });
        }
        {
            let mut rooms = lock(&member.0.rooms);
            if rooms.contains(room) {
                return Err(RoomsError::AlreadyJoined);
            }
            if rooms.len() >= config.max_rooms_per_session {
                return Err(RoomsError::TooManyRooms { max: config.max_rooms_per_session });
            }
            rooms.insert(room.into());
        }
        let options = (config.room_policy)(room);
        let hold = member.0.outbox.hold();
        let local = &self.inner.local;
        let backend = &self.inner.backend;
        local.add_to_room(room, member, options.recovery.is_some());
        let presence = member.presence();
        if let Err(err) = backend.presence_join(room, &presence).await {
            tracing::warn!(%room, session = %member.session(), "rooms: presence not shared: {err}");
        }
        let recovery = match &options.recovery {
            None => None,
            Some(recovery) => {
                let (position, outcome) = match backend.recover(room, recovery, since).await {
                    Ok(found) => (found.position, found.outcome),
                    Err(err) => {
                        tracing::warn!(%room, "rooms: recovery failed: {err}");
                        let unknown = StreamPosition { epoch: String::new(), offset: 0 };
                        (unknown, Err(NotRecovered::Unavailable))
                    }
                };
                // What the join accounts for: the history handed over, or the position.
                let floor = match &outcome {
                    Ok(missed) => missed.last().and_then(Publication::offset),
                    Err(_) => None,
                }
                .unwrap_or(0)
                .max(position.offset);
                let buffered =
                    local.go_live(room, member, queue_joining, (floor > 0).then_some(floor));
                Some(merge(position, outcome, buffered))
            }
        };
        let presence_list = if !options.presence {
            Vec::new()
        } else {
            match backend.presence(room).await {
                Ok(list) => list,
                Err(err) => {
                    tracing::warn!(%room, "rooms: presence from this node only: {err}");
                    local.presence(room)
                }
            }
        };
        if options.presence {
            self.signal(room, protocol::PRESENCE_JOIN, &presence, Some(member.session())).await;
        }
        let joined = Joined { room: room.to_owned(), presence: presence_list, recovery };
        Ok((joined, hold))
    }

    /// What follows a member's leaving `room` (already out of its set of rooms).
    async fn left(&self, room: &str, member: &Member) {
        let last_local = self.inner.local.remove_from_room(room, member.session());
        let presence = member.presence();
        if let Err(err) = self.inner.backend.presence_leave(room, &presence, last_local).await {
            tracing::warn!(%room, session = %member.session(), "rooms: presence not shared: {err}");
        }
        if (self.inner.config.room_policy)(room).presence {
            self.signal(room, protocol::PRESENCE_LEAVE, &presence, None).await;
        }
    }

    /// Sends a presence event to a room's members (but `except`), on every node.
    async fn signal(
        &self,
        room: &str,
        event: &str,
        presence: &Presence,
        except: Option<&SessionId>,
    ) {
        let frame = match protocol::event_frame(event, &PresenceEvent { room, presence }) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::error!("rooms: a presence event did not encode: {err}");
                return;
            }
        };
        let target = Target::Room { room, except };
        self.inner.local.deliver_frame(target, &frame);
        if let Err(err) = self.inner.backend.forward(target, &frame).await {
            tracing::warn!(%room, "rooms: presence event not sent to other nodes: {err}");
        }
    }

    /// Ends a session: out of every room, out of the registry.
    async fn end(&self, member: &Member) {
        let rooms = std::mem::take(&mut *lock(&member.0.rooms));
        for room in rooms {
            self.left(&room, member).await;
        }
        if let Err(err) = self.inner.backend.close_session(&member.presence()).await {
            tracing::warn!(session = %member.session(), "rooms: session not unregistered: {err}");
        }
    }
}

/// The publications a join hands over: the recovered ones, then those buffered while it
/// joined, each once, in offset order (with those that have none, which no history holds, in
/// the order they came).
fn merge(
    mut position: StreamPosition,
    outcome: Result<Vec<Publication>, NotRecovered>,
    buffered: Vec<Publication>,
) -> RecoveryOutcome {
    let (mut publications, not_recovered) = match outcome {
        Ok(missed) => (missed, None),
        Err(reason) => (Vec::new(), Some(reason)),
    };
    if let Some(last) = publications.last().and_then(Publication::offset) {
        position.offset = position.offset.max(last);
    }
    for publication in buffered {
        match publication.offset() {
            Some(offset) if offset > position.offset => {
                position.offset = offset;
                publications.push(publication);
            }
            // Delivered by its node directly, when Redis did not carry it: in no history, so
            // handed over here or never.
            None => publications.push(publication),
            // Already in the history the backend returned.
            Some(_) => {}
        }
    }
    RecoveryOutcome { position, not_recovered, publications }
}

/// A connection's place in the registry: its [`Member`], and the receive loop that answers
/// the room protocol. Dropping it takes the session out of every room (members there get
/// `presence.leave`) and stops its queue's writer.
pub struct Session {
    rooms: Rooms,
    member: Member,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("member", &self.member).finish_non_exhaustive()
    }
}

impl Session {
    /// The session's member handle.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The registry.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Joins `room` (server-side, without the authorisation hook); see [`Rooms::join`].
    pub async fn join(&self, room: &str) -> Result<Joined, RoomsError> {
        self.rooms.join(room, &self.member).await
    }

    /// Leaves `room`; see [`Rooms::leave`].
    pub async fn leave(&self, room: &str) -> Result<(), RoomsError> {
        self.rooms.leave(room, &self.member).await
    }

    /// Publishes to `room`, but not to this session.
    pub async fn broadcast_others<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: &str,
        data: &T,
    ) -> Result<(), RoomsError> {
        if !lock(&self.member.0.rooms).contains(room) {
            return Err(RoomsError::NotJoined);
        }
        self.rooms.broadcast_except(room, &self.member, event, data).await
    }

    /// Receives the application's next event or request from `socket`, answering the room
    /// protocol's requests (`room.join`, `room.leave`, `room.presence`, `user.send`) on the
    /// way. Bad frames are answered by `socket` as [`JsonSocket::recv`] does.
    pub async fn recv<M: DeserializeOwned>(
        &self,
        socket: &mut JsonSocket,
    ) -> Result<Incoming<M>, Error> {
        loop {
            match socket.recv::<Routed<RoomMessage, M>>().await? {
                Incoming::Event(Routed::App(message)) => return Ok(Incoming::Event(message)),
                Incoming::Request(Request { message: Routed::App(message), responder }) => {
                    return Ok(Incoming::Request(Request { message, responder }));
                }
                Incoming::Request(Request { message: Routed::Part(message), responder }) => {
                    self.answer(message, Some(responder)).await?;
                }
                Incoming::Event(Routed::Part(message)) => self.answer(message, None).await?,
            }
        }
    }

    /// Answers one request of the room protocol (as an event: does it, answers nothing).
    pub(crate) async fn answer(
        &self,
        RoomMessage(command): RoomMessage,
        responder: Option<Responder>,
    ) -> Result<(), Error> {
        match command {
            Command::Join(JoinData { room, recover }) => {
                if let Err(refusal) = (self.rooms.inner.config.authorizer)(&self.member, &room) {
                    tracing::debug!(session = %self.member.session(), "rooms: join refused");
                    return answer_error(responder, &refusal).await;
                }
                match self.rooms.join_inner(&room, &self.member, recover.as_ref(), false).await {
                    Ok((joined, hold)) => {
                        let reply = joined.reply();
                        let sent = match (responder, reply) {
                            (Some(responder), Ok(reply)) => responder.reply(&reply).await,
                            (Some(responder), Err(_)) => {
                                responder.reply_error(&palisade_json::ErrorReply::internal()).await
                            }
                            (None, _) => Ok(()),
                        };
                        // Now the room's traffic may follow the reply.
                        drop(hold);
                        sent
                    }
                    Err(err) => answer_error(responder, &err.reply()).await,
                }
            }
            Command::Leave(data) => match self.rooms.leave(&data.room, &self.member).await {
                Ok(()) => answer(responder, &serde_json::json!({ "room": data.room })).await,
                Err(err) => answer_error(responder, &err.reply()).await,
            },
            Command::Presence(data) => {
                if !lock(&self.member.0.rooms).contains(data.room.as_str()) {
                    return answer_error(responder, &RoomsError::NotJoined.reply()).await;
                }
                match self.rooms.presence(&data.room).await {
                    Ok(list) => {
                        let reply = serde_json::json!({ "room": data.room, "presence": list });
                        answer(responder, &reply).await
                    }
                    Err(err) => answer_error(responder, &err.reply()).await,
                }
            }
            Command::Send(data) => self.send_private(data, responder).await,
        }
    }

    async fn send_private(
        &self,
        data: protocol::SendData,
        responder: Option<Responder>,
    ) -> Result<(), Error> {
        let sent = async {
            let payload = serde_json::value::to_raw_value(&data.data)
                .map_err(palisade_json::EncodeError::from)?;
            let message =
                UserMessage { from: Some(self.member.user()), event: &data.event, data: &payload };
            let frame = protocol::event_frame(protocol::USER_MESSAGE, &message)?;
            self.rooms.to_user_frame(&data.to, &frame).await
        };
        match sent.await {
            Ok(sessions) => answer(responder, &serde_json::json!({ "sessions": sessions })).await,
            Err(err) => answer_error(responder, &err.reply()).await,
        }
    }
}

async fn answer<T: Serialize + ?Sized>(
    responder: Option<Responder>,
    data: &T,
) -> Result<(), Error> {
    match responder {
        Some(responder) => responder.reply(data).await,
        None => Ok(()),
    }
}

async fn answer_error(
    responder: Option<Responder>,
    error: &palisade_json::ErrorReply,
) -> Result<(), Error> {
    match responder {
        Some(responder) => responder.reply_error(error).await,
        None => Ok(()),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.member.0.outbox.end();
        let rooms = self.rooms.clone();
        let member = self.member.clone();
        rooms.inner.local.remove_session(&member);
        // Out of the local rooms at once, so that this node's presence is right whatever
        // happens next; the rest (presence events, the backend) in a task.
        for room in lock(&member.0.rooms).iter() {
            rooms.inner.local.remove_from_room(room, member.session());
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { rooms.end(&member).await });
            }
            Err(_) => tracing::debug!("rooms: session dropped outside a runtime; backend not told"),
        }
    }
}
