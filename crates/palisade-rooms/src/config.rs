//! How rooms behave: [`RoomsConfig`] for the registry, [`RoomOptions`] per room.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_error::CloseCode;
use palisade_json::ErrorReply;

use crate::member::Member;

/// Decides whether `member` may join `room`: `Err` is sent to the client as the join's error
/// reply, and the connection goes on.
pub type Authorizer = Arc<dyn Fn(&Member, &str) -> Result<(), ErrorReply> + Send + Sync>;

/// Chooses the options of a room from its name (recovery on or off, history size …).
pub type RoomPolicy = Arc<dyn Fn(&str) -> RoomOptions + Send + Sync>;

/// How a [`Rooms`](crate::Rooms) registry behaves. `#[non_exhaustive]`: start from
/// `RoomsConfig::default()` and change what you need with the `with_*` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct RoomsConfig {
    /// Messages waiting for one member's connection, at most. Default: 1,024.
    pub queue_capacity: usize,
    /// What happens to a member whose queue is full. Default: close it with 1013.
    pub slow_consumer: SlowConsumer,
    /// Whether one user may have several sessions at once. Default: allowed.
    pub sessions: SessionPolicy,
    /// The longest room name, in bytes. Default: 128.
    pub max_room_name: usize,
    /// Rooms one session may be in at once. Default: 64.
    pub max_rooms_per_session: usize,
    /// Who may join which room. Default: everyone, everywhere.
    pub authorizer: Authorizer,
    /// The options of each room. Default: [`RoomOptions::default`] (no recovery) for all.
    pub room_policy: RoomPolicy,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            slow_consumer: SlowConsumer::Close(CloseCode::TRY_AGAIN_LATER),
            sessions: SessionPolicy::Allow,
            max_room_name: 128,
            max_rooms_per_session: 64,
            authorizer: Arc::new(|_, _| Ok(())),
            room_policy: Arc::new(|_| RoomOptions::default()),
        }
    }
}

impl fmt::Debug for RoomsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomsConfig")
            .field("queue_capacity", &self.queue_capacity)
            .field("slow_consumer", &self.slow_consumer)
            .field("sessions", &self.sessions)
            .field("max_room_name", &self.max_room_name)
            .field("max_rooms_per_session", &self.max_rooms_per_session)
            .finish_non_exhaustive()
    }
}

impl RoomsConfig {
    /// With this per-member queue capacity (at least 1).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// With this slow-consumer policy.
    pub fn with_slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// With this policy for users with several sessions.
    pub fn with_sessions(mut self, policy: SessionPolicy) -> Self {
        self.sessions = policy;
        self
    }

    /// With this longest room name, in bytes.
    pub fn with_max_room_name(mut self, bytes: usize) -> Self {
        self.max_room_name = bytes;
        self
    }

    /// With this many rooms per session at most.
    pub fn with_max_rooms_per_session(mut self, rooms: usize) -> Self {
        self.max_rooms_per_session = rooms;
        self
    }

    /// With this authorisation hook, asked before every join a client requests (joins the
    /// server makes with [`Rooms::join`](crate::Rooms::join) are not asked).
    pub fn with_authorizer(
        mut self,
        authorize: impl Fn(&Member, &str) -> Result<(), ErrorReply> + Send + Sync + 'static,
    ) -> Self {
        self.authorizer = Arc::new(authorize);
        self
    }

    /// With the options of each room chosen by `policy` from the room's name.
    pub fn with_room_policy(
        mut self,
        policy: impl Fn(&str) -> RoomOptions + Send + Sync + 'static,
    ) -> Self {
        self.room_policy = Arc::new(policy);
        self
    }
}

/// What happens to a member whose queue is full: the publisher never waits for it, and its
/// memory never grows past [`RoomsConfig::queue_capacity`] messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Drop the oldest queued message to make room for the new one.
    DropOldest,
    /// Drop the new message.
    DropNewest,
    /// Drop the queue and close the connection with this code (1008 policy violation, or
    /// 1013 try again later — with recovery, the client comes back and catches up).
    Close(CloseCode),
}

/// Whether one user may have several sessions (tabs, devices) at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionPolicy {
    /// Any number of sessions per user; private messages reach all of them.
    Allow,
    /// One session per user: [`Rooms::connect`](crate::Rooms::connect) refuses a second with
    /// [`RoomsError::SessionRefused`](crate::RoomsError::SessionRefused).
    Refuse,
}

/// The options of one room, chosen by [`RoomsConfig::room_policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomOptions {
    /// Recovery of missed messages; off by default (at-most-once delivery).
    pub recovery: Option<Recovery>,
    /// Whether members learn who is there: `presence.join` and `presence.leave` to the room
    /// at every join and leave, and the presence list in every join's reply. On by default.
    /// Off, joining N members costs O(N) instead of O(N²) frames and bytes — for broadcast
    /// rooms of thousands, where nobody reads the list; `room.presence` still answers.
    pub presence: bool,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self { recovery: None, presence: true }
    }
}

impl RoomOptions {
    /// With recovery of missed messages.
    pub fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Without presence events or lists (see [`RoomOptions::presence`]).
    pub fn without_presence(mut self) -> Self {
        self.presence = false;
        self
    }
}

/// Recovery of missed messages: the room keeps a bounded history, each publication carries an
/// offset, and a client that comes back with its last offset gets what it missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Publications kept, at most (Redis trims approximately, `MAXLEN ~`). Default: 1,000.
    pub history_size: usize,
    /// How long a publication is kept: the window within which a client can come back.
    /// Default: 2 minutes.
    pub window: Duration,
}

impl Default for Recovery {
    fn default() -> Self {
        Self { history_size: 1000, window: Duration::from_secs(120) }
    }
}

impl Recovery {
    /// With this many publications kept at most (at least 1).
    pub fn with_history_size(mut self, size: usize) -> Self {
        self.history_size = size.max(1);
        self
    }

    /// With this window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
}
