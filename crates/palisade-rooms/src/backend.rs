//! The backend trait, the node-local registry every backend delivers into ([`Local`]), and the
//! in-memory backend ([`InMemory`]), the default for one process.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_error::CloseCode;
use palisade_proto::message::{Message, Utf8Bytes};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::config::{Recovery, RoomOptions, RoomPolicy};
use crate::error::BackendError;
use crate::member::{Member, Outbox, Presence, SessionId, lock};
use crate::protocol::{Publication, StreamPosition};

/// A boxed future, as the [`Backend`] trait returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where rooms' traffic and shared state live: in this process ([`InMemory`]) or shared by
/// several nodes (`palisade-redis`). A backend *embeds* the local registry ([`Local`], given
/// by [`Backend::attach`]): it delivers what other nodes send into it, and answers queries
/// with the local entries and the other nodes' together.
///
/// # Contract
///
/// - [`Backend::publish`] delivers to every member, this node's included, in offset order:
///   the backend assigns offsets, so it alone can deliver in their order.
/// - [`Backend::forward`] sends a frame to the *other* nodes only; the caller has delivered
///   it locally already.
/// - Queries ([`Backend::presence`], [`Backend::user_sessions`], [`Backend::rooms`]) cover
///   every node, this one included.
/// - Failures are [`BackendError`]s, never panics; a backend that loses its service keeps
///   local delivery going ([`Local`]) and reconnects by itself.
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The backend's name, for logs (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// Gives the backend the node's registry; called once, by [`Rooms`](crate::Rooms).
    fn attach(&self, local: Local);

    /// Publishes in a room: assigns the offset (with recovery), keeps the history, and
    /// delivers to every member on every node.
    fn publish<'a>(
        &'a self,
        request: PublishRequest<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// The room's position (epoch and last offset) and, when `since` is given, the
    /// publications after it, or why they cannot be had.
    fn recover<'a>(
        &'a self,
        room: &'a str,
        recovery: &'a Recovery,
        since: Option<&'a StreamPosition>,
    ) -> BoxFuture<'a, Result<Recovered, BackendError>>;

    /// Sends a frame to the other nodes' members: of a room (but `except`), of a user, or all.
    fn forward<'a>(
        &'a self,
        target: Target<'a>,
        frame: &'a Utf8Bytes,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Registers a session across nodes. With `exclusive`, refuses (`Ok(false)`) when the user
    /// has a session on another node. `replaces` (a session of the same user, see
    /// [`Rooms::connect_replacing`](crate::Rooms::connect_replacing)) does not count, is
    /// unregistered, and if it is open on another node, that node ends it with
    /// [`Local::end_session`].
    fn open_session<'a>(
        &'a self,
        presence: &'a Presence,
        exclusive: bool,
        replaces: Option<&'a SessionId>,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Unregisters a session.
    fn close_session<'a>(
        &'a self,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Records that a session joined a room (and makes this node receive the room's
    /// traffic).
    fn presence_join<'a>(
        &'a self,
        room: &'a str,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Records that a session left a room. `last_local` is true when no session of this node
    /// is left in it (the node may stop receiving its traffic).
    fn presence_leave<'a>(
        &'a self,
        room: &'a str,
        presence: &'a Presence,
        last_local: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Who is in a room, on every node.
    fn presence<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Presence>, BackendError>>;

    /// How many sessions a user has, on every node.
    fn user_sessions<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<usize, BackendError>>;

    /// Every room with members, and how many, on every node.
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomInfo>, BackendError>>;
}

/// What [`Backend::publish`] publishes.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PublishRequest<'a> {
    /// The room.
    pub room: &'a str,
    /// The application's event name.
    pub event: &'a str,
    /// The data, as JSON.
    pub data: &'a RawValue,
    /// A session that does not receive it (the sender).
    pub except: Option<&'a SessionId>,
    /// The room's recovery options, when it keeps a history.
    pub recovery: Option<&'a Recovery>,
}

/// Whom [`Backend::forward`] sends to.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Target<'a> {
    /// The members of a room, but one session.
    Room {
        /// The room.
        room: &'a str,
        /// The session left out.
        except: Option<&'a SessionId>,
    },
    /// Every session of a user.
    User(&'a str),
    /// Every session.
    All,
}

/// What [`Backend::recover`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Recovered {
    /// The room's epoch and last offset.
    pub position: StreamPosition,
    /// The publications after `since`, in order; or why they cannot be had.
    pub outcome: Result<Vec<Publication>, NotRecovered>,
}

impl Recovered {
    /// A result.
    pub fn new(position: StreamPosition, outcome: Result<Vec<Publication>, NotRecovered>) -> Self {
        Self { position, outcome }
    }
}

/// Why missed publications cannot be recovered; the join reply names it (`reason`), and the
/// client fetches the state afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRecovered {
    /// The client did not ask (no `recover` in its join).
    NotRequested,
    /// The history was lost and started again (a new epoch): offsets do not compare.
    EpochChanged,
    /// The history no longer holds the next publication: it was trimmed to its size.
    Trimmed,
    /// The history no longer holds the next publication: it is older than the window.
    TooOld,
    /// The offset is beyond the history's last: not one this history gave.
    UnknownOffset,
    /// The backend could not be asked.
    Unavailable,
}

impl NotRecovered {
    /// The reason as it appears in the join reply.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequested => "not_requested",
            Self::EpochChanged => "epoch_changed",
            Self::Trimmed => "trimmed",
            Self::TooOld => "too_old",
            Self::UnknownOffset => "unknown_offset",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A room and its number of members.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// Its members (sessions).
    pub members: usize,
}

impl RoomInfo {
    /// A room and its count.
    pub fn new(name: impl Into<String>, members: usize) -> Self {
        Self { name: name.into(), members }
    }
}

/// A fresh epoch: distinct for every history this process (or another) starts.
pub fn new_epoch() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Time, process and counter mixed: unique enough to tell two histories apart.
    let mixed =
        nanos ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{mixed:016x}")
}

// ----- the node's registry -----

/// The members of this node, which every backend delivers into. Cheap to clone.
#[derive(Clone)]
pub struct Local {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    node: Arc<str>,
    /// How many publications a joining member's buffer holds at most.
    buffer_limit: usize,
    /// The registry's room policy, for a backend that acts on rooms this node has no say in
    /// (Redis' reaper: a dead node's rooms).
    room_policy: RoomPolicy,
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    rooms: HashMap<Arc<str>, HashMap<SessionId, Slot>>,
    sessions: HashMap<SessionId, Member>,
    users: HashMap<Arc<str>, Vec<SessionId>>,
}

/// A member in a room: live, or joining (its publications wait, so that the join reply can
/// hand over exactly what precedes the live stream).
///
/// A live member of a recovery room keeps a floor, the last offset its join accounted for:
/// with a backend whose live stream lags its history (Redis: a publication is in the stream
/// before its pub/sub copy reaches this node), a copy of an offset the join reply already
/// handed over may arrive after the member went live, and must not reach it twice. The floor
/// goes with the first publication above it.
enum Slot {
    /// The member, the floor, and the member's queue itself: a broadcast to a large room
    /// touches each queue, and reaching it from here saves going through the member first
    /// (one cache miss per delivery less once the members outgrow the CPU's caches).
    Live(Member, Option<u64>, Arc<Outbox>),
    Joining(Member, VecDeque<Publication>),
}

impl Slot {
    fn member(&self) -> &Member {
        match self {
            Self::Live(member, ..) | Self::Joining(member, _) => member,
        }
    }
}

impl fmt::Debug for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

impl Local {
    pub(crate) fn new(node: Arc<str>, buffer_limit: usize, room_policy: RoomPolicy) -> Self {
        let state = Mutex::new(LocalState::default());
        Self { inner: Arc::new(LocalInner { node, buffer_limit, room_policy, state }) }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The options of `room`, from the registry's [`RoomsConfig::room_policy`]
    /// (every node of an application is expected to have the same policy).
    ///
    /// [`RoomsConfig::room_policy`]: crate::RoomsConfig::room_policy
    pub fn room_options(&self, room: &str) -> RoomOptions {
        (self.inner.room_policy)(room)
    }

    /// Delivers a publication to this node's members of its room (but its `except`).
    pub fn deliver(&self, publication: &Publication) {
        let mut state = lock(&self.inner.state);
        let Some(room) = state.rooms.get_mut(publication.room()) else { return };
        // One frame for all: each member's queue gets a reference to the same bytes.
        let message = publication.message();
        for (session, slot) in room.iter_mut() {
            if publication.except() == Some(session) {
                continue;
            }
            match slot {
                Slot::Live(_, floor, outbox) => {
                    if let (Some(last), Some(offset)) = (*floor, publication.offset()) {
                        if offset <= last {
                            // A late copy of what the join reply handed over.
                            continue;
                        }
                        *floor = None;
                    }
                    outbox.push(message.clone());
                }
                Slot::Joining(_, buffer) => {
                    if buffer.len() >= self.inner.buffer_limit {
                        buffer.pop_front();
                    }
                    buffer.push_back(publication.clone());
                }
            }
        }
    }

    /// Delivers a frame to this node's members: of a room (but `except`), of a user, or all.
    pub fn deliver_frame(&self, target: Target<'_>, frame: &Utf8Bytes) {
        let message = Message::Text(frame.clone());
        let state = lock(&self.inner.state);
        match target {
            Target::Room { room, except } => {
                let Some(room) = state.rooms.get(room) else { return };
                for (session, slot) in room {
                    if except != Some(session) {
                        slot.member().push(message.clone());
                    }
                }
            }
            Target::User(user) => {
                for session in state.users.get(user).into_iter().flatten() {
                    if let Some(member) = state.sessions.get(session) {
                        member.push(message.clone());
                    }
                }
            }
            Target::All => {
                for member in state.sessions.values() {
                    member.push(message.clone());
                }
            }
        }
    }

    /// This node's members of a room.
    pub fn presence(&self, room: &str) -> Vec<Presence> {
        let state = lock(&self.inner.state);
        let mut list: Vec<Presence> = state
            .rooms
            .get(room)
            .into_iter()
            .flat_map(|members| members.values().map(|slot| slot.member().presence()))
            .collect();
        list.sort_by(|a, b| a.session.cmp(&b.session));
        list
    }

    /// This node's sessions of a user.
    pub fn user_sessions(&self, user: &str) -> usize {
        lock(&self.inner.state).users.get(user).map_or(0, Vec::len)
    }

    /// This node's rooms and their members.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let state = lock(&self.inner.state);
        let mut rooms: Vec<RoomInfo> = state
            .rooms
            .iter()
            .map(|(name, members)| RoomInfo::new(&**name, members.len()))
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// Every session of this node, for a backend that re-registers them after its service
    /// came back.
    pub fn sessions(&self) -> Vec<(Presence, Vec<String>)> {
        let state = lock(&self.inner.state);
        state.sessions.values().map(|m| (m.presence(), m.rooms())).collect()
    }

    /// Sessions of this node, by id.
    pub(crate) fn member(&self, session: &SessionId) -> Option<Member> {
        lock(&self.inner.state).sessions.get(session).cloned()
    }

    /// Registers a session; with `exclusive`, refuses (`None`) when the user has one on this
    /// node other than `replaces`. Admitted, it gives the replaced session's member if that
    /// one is open on this node (still registered: it leaves when its handler drops it).
    pub(crate) fn add_session(
        &self,
        member: &Member,
        exclusive: bool,
        replaces: Option<&SessionId>,
    ) -> Option<Option<Member>> {
        let mut state = lock(&self.inner.state);
        let sessions = state.users.entry(member.0.user.clone()).or_default();
        if exclusive && sessions.iter().any(|s| Some(s) != replaces) {
            return None;
        }
        let replaced = replaces.filter(|r| sessions.contains(r)).cloned();
        sessions.push(member.session().clone());
        state.sessions.insert(member.session().clone(), member.clone());
        Some(replaced.and_then(|r| state.sessions.get(&r).cloned()))
    }

    /// Ends a session of this node that a newer connection of its user replaced (on another
    /// node): closes its connection with 1000 "session replaced". Its handler then drops the
    /// session, which leaves its rooms as on any close. False when no such session is here.
    pub fn end_session(&self, session: &SessionId) -> bool {
        let Some(member) = self.member(session) else { return false };
        end_replaced(&member);
        true
    }

    pub(crate) fn remove_session(&self, member: &Member) {
        let mut state = lock(&self.inner.state);
        state.sessions.remove(member.session());
        if let Some(sessions) = state.users.get_mut(member.user()) {
            sessions.retain(|s| s != member.session());
            if sessions.is_empty() {
                state.users.remove(member.user());
            }
        }
    }

    /// Adds a member to a room, joining (publications buffered) or live.
    pub(crate) fn add_to_room(&self, room: &str, member: &Member, joining: bool) {
        let mut state = lock(&self.inner.state);
        let slot = if joining {
            Slot::Joining(member.clone(), VecDeque::new())
        } else {
            Slot::Live(member.clone(), None, member.0.outbox.clone())
        };
        state.rooms.entry(room.into()).or_default().insert(member.session().clone(), slot);
    }

    /// Makes a joining member live; returns the publications buffered meanwhile, or with
    /// `into_queue` queues them for it (under the lock, so before any later publication).
    /// Live publications at or below `floor` (the last offset the join accounted for) are not
    /// delivered to it: see [`Slot`].
    pub(crate) fn go_live(
        &self,
        room: &str,
        member: &Member,
        into_queue: bool,
        floor: Option<u64>,
    ) -> Vec<Publication> {
        let mut state = lock(&self.inner.state);
        let Some(slot) = state.rooms.get_mut(room).and_then(|r| r.get_mut(member.session())) else {
            return Vec::new();
        };
        let live = Slot::Live(member.clone(), floor, member.0.outbox.clone());
        let buffer = match std::mem::replace(slot, live) {
            Slot::Joining(_, buffer) => buffer,
            Slot::Live(..) => VecDeque::new(),
        };
        if !into_queue {
            return buffer.into();
        }
        for publication in buffer {
            member.push(publication.message());
        }
        Vec::new()
    }

    /// Removes a member from a room; true when the room has no member of this node left.
    pub(crate) fn remove_from_room(&self, room: &str, session: &SessionId) -> bool {
        let mut state = lock(&self.inner.state);
        let Some(members) = state.rooms.get_mut(room) else { return true };
        members.remove(session);
        if members.is_empty() {
            state.rooms.remove(room);
            return true;
        }
        false
    }
}

// ----- the in-memory backend -----

/// The backend of one process: histories in memory, no other node. The default.
#[derive(Debug, Default)]
pub struct InMemory {
    local: Mutex<Option<Local>>,
    histories: Mutex<Histories>,
}

#[derive(Debug, Default)]
struct Histories {
    rooms: HashMap<Arc<str>, History>,
    /// Publications since the last sweep of expired histories.
    since_sweep: u32,
}

/// One room's history: its epoch, last offset and kept publications.
#[derive(Debug)]
struct History {
    epoch: String,
    top: u64,
    kept: VecDeque<(u64, Instant, Publication)>,
    /// Why the last publication that left the history left it.
    last_trim: Option<NotRecovered>,
    window: Duration,
}

impl History {
    fn new(window: Duration) -> Self {
        Self { epoch: new_epoch(), top: 0, kept: VecDeque::new(), last_trim: None, window }
    }

    /// Drops what is older than the window and what exceeds the size.
    fn trim(&mut self, now: Instant, size: usize) {
        while self.kept.front().is_some_and(|(_, at, _)| now.duration_since(*at) > self.window) {
            self.kept.pop_front();
            self.last_trim = Some(NotRecovered::TooOld);
        }
        while self.kept.len() > size {
            self.kept.pop_front();
            self.last_trim = Some(NotRecovered::Trimmed);
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition { epoch: self.epoch.clone(), offset: self.top }
    }

    /// The publications after `since`.
    fn since(&self, since: &StreamPosition) -> Result<Vec<Publication>, NotRecovered> {
        if since.epoch != self.epoch {
            return Err(NotRecovered::EpochChanged);
        }
        if since.offset > self.top {
            return Err(NotRecovered::UnknownOffset);
        }
        let first_kept = self.kept.front().map_or(self.top + 1, |(offset, _, _)| *offset);
        if since.offset + 1 < first_kept {
            return Err(self.last_trim.unwrap_or(NotRecovered::Trimmed));
        }
        Ok(self
            .kept
            .iter()
            .filter(|(o, _, _)| *o > since.offset)
            .map(|(_, _, p)| p.clone())
            .collect())
    }
}

impl InMemory {
    /// An in-memory backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn local(&self) -> Option<Local> {
        lock(&self.local).clone()
    }
}

/// Sweeps histories whose last publication left the window every this many publications, so
/// that rooms nobody publishes in any more do not keep their history forever.
const SWEEP_EVERY: u32 = 1024;

impl Backend for InMemory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn attach(&self, local: Local) {
        *lock(&self.local) = Some(local);
    }

    fn publish<'a>(
        &'a self,
        request: PublishRequest<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let Some(local) = self.local() else { return Ok(()) };
            let except = request.except.cloned();
            let Some(recovery) = request.recovery else {
                let p =
                    Publication::encode(request.room, None, request.event, request.data, except)
                        .map_err(|e| BackendError::Protocol {
                            backend: "memory",
                            detail: e.to_string().into(),
                        })?;
                local.deliver(&p);
                return Ok(());
            };
            let now = Instant::now();
            let mut histories = lock(&self.histories);
            histories.since_sweep += 1;
            if histories.since_sweep >= SWEEP_EVERY {
                histories.since_sweep = 0;
                histories.rooms.retain(|_, h| {
                    h.kept.back().is_some_and(|(_, at, _)| now.duration_since(*at) <= h.window)
                });
            }
            let history = histories
                .rooms
                .entry(request.room.into())
                .or_insert_with(|| History::new(recovery.window));
            history.window = recovery.window;
            let offset = history.top + 1;
            let p = Publication::encode(
                request.room,
                Some(offset),
                request.event,
                request.data,
                except,
            )
            .map_err(|e| BackendError::Protocol {
                backend: "memory",
                detail: e.to_string().into(),
            })?;
            history.top = offset;
            history.kept.push_back((offset, now, p.clone()));
            history.trim(now, recovery.history_size);
            // Under the history's lock: members receive in offset order.
            local.deliver(&p);
            Ok(())
        })
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        recovery: &'a Recovery,
        since: Option<&'a StreamPosition>,
    ) -> BoxFuture<'a, Result<Recovered, BackendError>> {
        Box::pin(async move {
            let mut histories = lock(&self.histories);
            let history =
                histories.rooms.entry(room.into()).or_insert_with(|| History::new(recovery.window));
            history.trim(Instant::now(), recovery.history_size);
            let outcome = match since {
                None => Err(NotRecovered::NotRequested),
                Some(since) => history.since(since),
            };
            Ok(Recovered::new(history.position(), outcome))
        })
    }

    fn forward<'a>(
        &'a self,
        _: Target<'a>,
        _: &'a Utf8Bytes,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        // No other node.
        Box::pin(async { Ok(()) })
    }

    fn open_session<'a>(
        &'a self,
        _: &'a Presence,
        _: bool,
        _: Option<&'a SessionId>,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        // The node's registry has checked already; there is no other node.
        Box::pin(async { Ok(true) })
    }

    fn close_session<'a>(&'a self, _: &'a Presence) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn presence_join<'a>(
        &'a self,
        _: &'a str,
        _: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn presence_leave<'a>(
        &'a self,
        _: &'a str,
        _: &'a Presence,
        _: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn presence<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Presence>, BackendError>> {
        Box::pin(async move { Ok(self.local().map(|l| l.presence(room)).unwrap_or_default()) })
    }

    fn user_sessions<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move { Ok(self.local().map_or(0, |l| l.user_sessions(user))) })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomInfo>, BackendError>> {
        Box::pin(async move { Ok(self.local().map(|l| l.rooms()).unwrap_or_default()) })
    }
}

/// Closes a replaced session's connection (in a task: closing waits for the write).
pub(crate) fn end_replaced(member: &Member) {
    tracing::info!(user = %member.user(), session = %member.session(), "rooms: session replaced by a newer connection; closing it with 1000");
    let sender = member.sender().raw().clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let _ = sender.close(CloseCode::NORMAL, REPLACED).await;
            });
        }
        Err(_) => tracing::debug!("rooms: replaced session not closed outside a runtime"),
    }
}

/// The close reason of a session replaced by [`Rooms::connect_replacing`](crate::Rooms::connect_replacing).
pub const REPLACED: &str = "session replaced";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication::from_data("r", Some(offset), "{}", None)
    }

    fn history(offsets: std::ops::RangeInclusive<u64>) -> History {
        let mut h = History::new(Duration::from_secs(120));
        for o in offsets {
            h.top = o;
            h.kept.push_back((o, Instant::now(), publication(o)));
        }
        h
    }

    fn at(h: &History, offset: u64) -> StreamPosition {
        StreamPosition { epoch: h.epoch.clone(), offset }
    }

    #[test]
    fn recovery_gives_exactly_what_follows_the_offset() {
        let h = history(1..=10);
        let got: Vec<_> = h.since(&at(&h, 7)).unwrap().iter().map(|p| p.offset()).collect();
        assert_eq!(got, [Some(8), Some(9), Some(10)]);
        assert!(h.since(&at(&h, 10)).unwrap().is_empty());
        assert_eq!(h.since(&at(&h, 0)).unwrap().len(), 10, "a client that had received nothing");
    }

    #[test]
    fn recovery_says_why_it_cannot() {
        let mut h = history(1..=10);
        h.trim(Instant::now(), 5);
        assert_eq!(h.since(&at(&h, 3)).unwrap_err(), NotRecovered::Trimmed);
        assert_eq!(h.since(&at(&h, 5)).unwrap().len(), 5, "the first kept follows the offset");
        assert_eq!(h.since(&at(&h, 11)).unwrap_err(), NotRecovered::UnknownOffset);
        let other = StreamPosition { epoch: "other".into(), offset: 5 };
        assert_eq!(h.since(&other).unwrap_err(), NotRecovered::EpochChanged);
    }

    #[tokio::test(start_paused = true)]
    async fn publications_older_than_the_window_leave_the_history() {
        let mut h = history(1..=3);
        tokio::time::advance(Duration::from_secs(121)).await;
        h.trim(Instant::now(), 100);
        assert!(h.kept.is_empty());
        assert_eq!(h.since(&at(&h, 1)).unwrap_err(), NotRecovered::TooOld);
        assert!(h.since(&at(&h, 3)).unwrap().is_empty(), "nothing was missed");
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
    }
}
