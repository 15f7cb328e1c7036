//! # palisade-redis
//!
//! The Redis backend of palisade-rooms: several nodes (processes, machines) share rooms,
//! presence, private messages and recovery histories through one Redis.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade_redis::{RedisBackend, RedisConfig};
//! use palisade_rooms::{Rooms, RoomsConfig};
//!
//! let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379/")).await?;
//! let rooms = Rooms::with_backend(RoomsConfig::default(), backend);
//! # Ok(()) }
//! ```
//!
//! ## How
//!
//! - **Fan-out**: one pub/sub channel per room (`PREFIX:room:ROOM`), subscribed while the
//!   node has members there, plus channels for users, everyone, node requests and each node's
//!   inbox. A frame is encoded once by the publishing node and once per receiving node.
//! - **Publishing is pipelined and ordered**: one task per node owns the publications on
//!   their way to Redis. Callers put theirs in its queue (bounded:
//!   [`RedisConfig::publish_queue`]; a full queue is [`BackendError::Overloaded`]) and wait for
//!   their own reply; the task sends everything queued as one pipeline, waits for its replies
//!   and hands each caller its result. Publications reach Redis in the order their `publish`
//!   futures were first polled, one pipeline after the other on one connection, so a node
//!   publishing many at once pays one round trip per pipeline instead of one per publication,
//!   and the other nodes receive them in batches.
//! - **Recovery**: a Lua script assigns the offset (`INCR`), appends to the room's stream
//!   (`XADD … MAXLEN ~ history_size`) and publishes, atomically, so every node sees offsets in
//!   order (the publication order above); the epoch is a key of its own, made anew (with the
//!   offsets starting over) when Redis has lost it. A join reads what it missed with `XRANGE`.
//! - **Presence** and sessions are hashes (`PREFIX:presence:ROOM`, `PREFIX:user:USER`). Each
//!   node refreshes a heartbeat key (`PREFIX:node:NODE`, expiring after
//!   [`RedisConfig::node_timeout`]); entries of a node whose key has expired are left out of
//!   listings at once, and the first live node to notice removes them and sends their
//!   `presence.leave` (in rooms with presence: [`palisade_rooms::RoomOptions::presence`]): a
//!   dead node's members leave presence within `node_timeout` plus one
//!   [`RedisConfig::heartbeat`]. A session replaced by a newer connection of its user
//!   (`Rooms::connect_replacing`) is unregistered at once; if its node is live, that node is
//!   told through its inbox to close it.
//! - **Requests between nodes** (the room listing) go out on a channel; every live node
//!   answers into the asker's inbox within [`RedisConfig::request_timeout`], or the caller
//!   gets [`BackendError::Timeout`].
//!
//! ## Architecture invariants
//!
//! - **Redis down is an error, never a panic**: calls that need Redis return
//!   [`BackendError::Unavailable`] or [`BackendError::Timeout`]; publications that did not
//!   reach Redis are delivered to this node's members anyway (without an offset), and one that
//!   timed out is not (Redis may still publish it, and this node would deliver it twice): no
//!   publication reaches a member twice. The pub/sub connection comes
//!   back with exponential backoff and restores every subscription; a heartbeat that finds its
//!   key gone (Redis restarted empty) registers the node's sessions and presence again.
//! - **One log line per state change** (connected, lost, restored), not one per retry.
//! - **Bounded memory**: the publications waiting for Redis are at most
//!   [`RedisConfig::publish_queue`]; a pipeline carries at most 1,024 of them.
//! - Depends on palisade-rooms, palisade-json, palisade-proto and palisade-error; never on the
//!   server or the client. Standalone Redis (scripts name keys they compute: not for Redis
//!   Cluster).
//!
//! ## Features
//!
//! None.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use palisade_proto::message::Utf8Bytes;
use palisade_rooms::{
    Backend, BackendError, BoxFuture, Local, NotRecovered, Presence, Publication, PublishRequest,
    Recovered, Recovery, RoomInfo, SessionId, StreamPosition, Target, new_epoch,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// How the Redis backend behaves. `#[non_exhaustive]`: start from [`RedisConfig::new`] and
/// change what you need with the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL (`redis://127.0.0.1:6379/`).
    pub url: String,
    /// What every key and channel starts with, so that several applications share a Redis.
    /// Default: `palisade`.
    pub prefix: String,
    /// How often a node refreshes its heartbeat and looks for dead nodes. Default: 1 s.
    pub heartbeat: Duration,
    /// How long after its last heartbeat a node counts as dead. Default: 5 s.
    pub node_timeout: Duration,
    /// How long a request between nodes waits for every answer. Default: 1 s.
    pub request_timeout: Duration,
    /// How long one Redis command may take. Default: 1 s.
    pub command_timeout: Duration,
    /// The first and the longest wait between two reconnection attempts. Default: 100 ms, 5 s.
    pub backoff: (Duration, Duration),
    /// Publications waiting to be sent to Redis, at most; one more is refused with
    /// [`BackendError::Overloaded`] (and delivered to this node's members all the same).
    /// Default: 8,192.
    pub publish_queue: usize,
}

impl RedisConfig {
    /// The defaults, with Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "palisade".into(),
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            publish_queue: 8192,
        }
    }

    /// With this key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// With this heartbeat period and node timeout (at least twice the period).
    pub fn with_heartbeat(mut self, every: Duration, node_timeout: Duration) -> Self {
        self.heartbeat = every;
        self.node_timeout = node_timeout.max(every * 2);
        self
    }

    /// With this timeout for requests between nodes.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// With this timeout for one command.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// With this reconnection backoff (first, longest).
    pub fn with_backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.backoff = (first, longest.max(first));
        self
    }

    /// With room for this many publications waiting for Redis (at least 1).
    pub fn with_publish_queue(mut self, publications: usize) -> Self {
        self.publish_queue = publications.max(1);
        self
    }
}

/// The Redis backend; give it to [`palisade_rooms::Rooms::with_backend`]. Its tasks (pub/sub,
/// heartbeat) stop when it is dropped.
pub struct RedisBackend {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.shared.config.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

struct Shared {
    config: RedisConfig,
    client: redis::Client,
    conn: ConnectionManager,
    local: OnceLock<Local>,
    /// The room channels this node wants (rooms with local members).
    rooms: Mutex<HashSet<String>>,
    /// The pub/sub connection's sending half, while it is up.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Whether `sink` is there, readable without waiting for its lock (a publication checks
    /// it, and must not yield before it has its place in the queue).
    subscribed: AtomicBool,
    /// The publisher task's queue, once attached (see `publish_loop`).
    publications: OnceLock<mpsc::Sender<Outgoing>>,
    /// Whether the pub/sub connection has been up since the backend started: before, a
    /// publication waits for it (see `publish`).
    pubsub_started: tokio::sync::watch::Sender<bool>,
    /// Requests between nodes waiting for answers.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>,
    next_request: AtomicU64,
    /// Whether the last heartbeat succeeded (for one log line per change).
    healthy: AtomicBool,
}

const BACKEND: &str = "redis";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent (single inserts and removals).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed(err: redis::RedisError) -> BackendError {
    if err.is_timeout() {
        BackendError::Timeout { what: "a redis command" }
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        BackendError::Unavailable { backend: BACKEND, detail: err.to_string().into() }
    } else {
        BackendError::Protocol { backend: BACKEND, detail: err.to_string().into() }
    }
}

/// Assigns the offset, keeps the history and publishes, atomically.
const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
local offset = redis.call('INCR', KEYS[1])
local data = '{"room":' .. ARGV[1] .. ',"offset":' .. offset .. ',"event":' .. ARGV[2] .. ',"data":' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], offset .. '-0', 'd', data)
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('PUBLISH', ARGV[9], 'p\n' .. ARGV[4] .. '\n' .. offset .. '\n' .. data)
return offset
"#;

/// [`PUBLISH_SCRIPT`], its SHA-1 computed once.
static PUBLISH: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PUBLISH_SCRIPT));

/// Publications in one pipeline, at most: the replies of one pipeline come back within one
/// command timeout, and a caller waits behind at most this many others.
const MAX_PIPELINE: usize = 1024;

/// A publication on its way to Redis, and where its outcome goes.
struct Outgoing {
    /// `EVALSHA` of [`PUBLISH_SCRIPT`] or a plain `PUBLISH`.
    command: redis::Cmd,
    /// Whether `command` runs the script (its pipeline loads it first).
    script: bool,
    done: oneshot::Sender<Result<(), BackendError>>,
}

/// The room's epoch (made if missing, the offsets starting over) and last offset.
const POSITION_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch, 'PX', ARGV[2])
  redis.call('DEL', KEYS[1], KEYS[3])
end
local offset = redis.call('GET', KEYS[1]) or '0'
return {epoch, offset}
"#;

/// Registers a session; with ARGV[3] = 1, only if the user has none on a live node but the
/// one it replaces (ARGV[5], or empty), which is unregistered. Answers 0 (refused) or 1, and
/// the node of the replaced session when that node is live (to be told to end it). The
/// session itself may be there already: a heartbeat that found the node's key gone registers
/// every local session again, this one included if it came first.
const OPEN_SCRIPT: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
local replaced = ''
for i = 1, #fields, 2 do
  local live = redis.call('EXISTS', ARGV[4] .. fields[i + 1]) == 1
  if fields[i] == ARGV[1] then
    -- this very session
  elseif fields[i] == ARGV[5] then
    if live then replaced = fields[i + 1] end
  elseif live and ARGV[3] == '1' then
    return {0, ''}
  end
end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[1], ARGV[5]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, replaced}
"#;

impl RedisBackend {
    /// Connects to Redis (the first connection must succeed; later losses are survived).
    ///
    /// # Errors
    ///
    /// [`BackendError::Unavailable`] when Redis cannot be reached or the URL is not one.
    pub async fn connect(config: RedisConfig) -> Result<Self, BackendError> {
        let client = redis::Client::open(config.url.as_str()).map_err(failed)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(config.backoff.0)
            .set_max_delay(config.backoff.1);
        let conn = client.get_connection_manager_with_config(manager).await.map_err(failed)?;
        tracing::info!(prefix = %config.prefix, "redis: connected");
        let shared = Arc::new(Shared {
            config,
            client,
            conn,
            local: OnceLock::new(),
            rooms: Mutex::new(HashSet::new()),
            sink: tokio::sync::Mutex::new(None),
            subscribed: AtomicBool::new(false),
            publications: OnceLock::new(),
            pubsub_started: tokio::sync::watch::Sender::new(false),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        });
        Ok(Self { shared, tasks: Mutex::new(Vec::new()) })
    }
}

impl Shared {
    fn local(&self) -> Option<&Local> {
        self.local.get()
    }

    fn node(&self) -> &str {
        self.local().map_or("", Local::node)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.config.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BackendError> {
        cmd.query_async(&mut self.conn()).await.map_err(failed)
    }

    /// Starts receiving a room's channel.
    async fn subscribe(&self, channel: String) -> Result<(), BackendError> {
        if !lock(&self.rooms).insert(channel.clone()) {
            return Ok(());
        }
        match self.sink.lock().await.as_mut() {
            Some(sink) => sink.subscribe(&channel).await.map_err(failed),
            // Down: the reconnection subscribes it.
            None => Err(BackendError::Unavailable {
                backend: BACKEND,
                detail: "pub/sub is down".into(),
            }),
        }
    }

    async fn unsubscribe(&self, channel: &str) {
        lock(&self.rooms).remove(channel);
        if let Some(sink) = self.sink.lock().await.as_mut() {
            let _ = sink.unsubscribe(channel).await;
        }
    }

    /// One message from the pub/sub connection.
    async fn received_message(&self, message: redis::Msg) {
        let channel = message.get_channel_name().to_owned();
        if let Ok(payload) = message.get_payload::<String>() {
            self.received(&channel, payload).await;
        }
    }

    /// One message from a channel.
    async fn received(&self, channel: &str, payload: String) {
        let Some(local) = self.local() else { return };
        let prefix = &self.config.prefix;
        let Some(kind) = channel.strip_prefix(prefix.as_str()).and_then(|c| c.strip_prefix(':'))
        else {
            return;
        };
        if let Some(room) = kind.strip_prefix("room:") {
            let mut parts = payload.splitn(4, '\n');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("p"), Some(except), Some(offset), Some(data)) => {
                    let except = (!except.is_empty()).then(|| SessionId::from(except.to_owned()));
                    let offset = offset.parse().ok();
                    local.deliver(&Publication::from_data(room, offset, data, except));
                }
                (Some("f"), Some(origin), Some(except), Some(frame)) if origin != local.node() => {
                    let except = (!except.is_empty()).then(|| SessionId::from(except.to_owned()));
                    let target = Target::Room { room, except: except.as_ref() };
                    local.deliver_frame(target, &Utf8Bytes::from(frame));
                }
                _ => {}
            }
        } else if kind == "user" {
            let mut parts = payload.splitn(3, '\n');
            if let (Some(origin), Some(user), Some(frame)) =
                (parts.next(), parts.next(), parts.next())
                && origin != local.node()
            {
                local.deliver_frame(Target::User(user), &Utf8Bytes::from(frame));
            }
        } else if kind == "all" {
            if let Some((origin, frame)) = payload.split_once('\n')
                && origin != local.node()
            {
                local.deliver_frame(Target::All, &Utf8Bytes::from(frame));
            }
        } else if kind == "req" {
            // A room listing asked by `from`: answer into its inbox.
            if let Some((from, id)) = payload.split_once('\n') {
                let answer = serde_json::to_string(&local.rooms()).unwrap_or_else(|_| "[]".into());
                let cmd = redis::cmd("PUBLISH")
                    .arg(self.key("inbox", from))
                    .arg(format!("{id}\n{answer}"))
                    .clone();
                if let Err(err) = self.query::<()>(&cmd).await {
                    tracing::debug!("redis: could not answer a node request: {err}");
                }
            }
        } else if kind.starts_with("inbox:")
            && let Some(session) = payload.strip_prefix("end\n")
        {
            // A newer connection of the session's user replaced it, on another node.
            local.end_session(&SessionId::from(session.to_owned()));
        } else if kind.starts_with("inbox:")
            && let Some((id, answer)) = payload.split_once('\n')
        {
            let waiting = id.parse().ok().and_then(|id: u64| lock(&self.pending).get(&id).cloned());
            if let Some(waiting) = waiting {
                let _ = waiting.send(answer.to_owned());
            }
        }
    }

    /// The nodes whose heartbeat is current, among `nodes`.
    async fn live(&self, nodes: Vec<String>) -> Result<HashSet<String>, BackendError> {
        let mut live = HashSet::new();
        for node in nodes {
            if live.contains(&node) {
                continue;
            }
            let exists: bool =
                self.query(redis::cmd("EXISTS").arg(self.key("node", &node))).await?;
            if exists {
                live.insert(node);
            }
        }
        Ok(live)
    }

    /// Registers this node's sessions and presence again (Redis restarted empty).
    /// Registers every local session and its rooms (after Redis came back empty): in
    /// pipelines of up to [`MAX_PIPELINE`] commands, so that a node with 10,000 sessions pays
    /// a few dozen round trips, not 40,000.
    async fn register_all(&self) -> Result<(), BackendError> {
        let Some(local) = self.local() else { return Ok(()) };
        let node = local.node();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(self.key("nodes", "all")).arg(node).ignore();
        for (presence, rooms) in local.sessions() {
            pipe.cmd("HSET")
                .arg(self.key("user", &presence.user))
                .arg(presence.session.as_str())
                .arg(node)
                .ignore();
            pipe.cmd("SADD").arg(self.key("node-users", node)).arg(&presence.user).ignore();
            for room in rooms {
                self.queue_join(&mut pipe, &room, &presence)?;
            }
            if pipe.len() >= MAX_PIPELINE {
                self.query_pipe(&pipe).await?;
                pipe.clear();
            }
        }
        if !pipe.is_empty() {
            self.query_pipe(&pipe).await?;
        }
        Ok(())
    }

    /// Enters `presence` in `room`'s presence hash and the room in this node's set: one round
    /// trip.
    async fn join_room(&self, room: &str, presence: &Presence) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        self.queue_join(&mut pipe, room, presence)?;
        self.query_pipe(&pipe).await
    }

    /// Adds to `pipe` what [`Shared::join_room`] sends.
    fn queue_join(
        &self,
        pipe: &mut redis::Pipeline,
        room: &str,
        presence: &Presence,
    ) -> Result<(), BackendError> {
        let entry = serde_json::to_string(presence).map_err(|e| BackendError::Protocol {
            backend: BACKEND,
            detail: e.to_string().into(),
        })?;
        pipe.cmd("HSET")
            .arg(self.key("presence", room))
            .arg(presence.session.as_str())
            .arg(entry)
            .ignore();
        pipe.cmd("SADD").arg(self.key("node-rooms", self.node())).arg(room).ignore();
        Ok(())
    }

    /// Sends `pipe` (its commands' replies ignored) and waits for Redis to have run it all.
    async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<(), BackendError> {
        pipe.query_async::<()>(&mut self.conn()).await.map_err(failed)
    }

    /// One heartbeat: refresh the node's key (registering everything again if it was gone),
    /// then remove the dead nodes' entries.
    async fn heartbeat(&self) -> Result<(), BackendError> {
        let node = self.node().to_owned();
        let ttl = self.config.node_timeout.as_millis() as u64;
        let previous: Option<String> = self
            .query(
                redis::cmd("SET").arg(self.key("node", &node)).arg(1).arg("PX").arg(ttl).arg("GET"),
            )
            .await?;
        if previous.is_none() {
            self.register_all().await?;
        }
        let nodes: Vec<String> =
            self.query(redis::cmd("SMEMBERS").arg(self.key("nodes", "all"))).await?;
        let live = self.live(nodes.clone()).await?;
        for dead in nodes.iter().filter(|n| !live.contains(*n)) {
            let claimed: Option<String> = self
                .query(
                    redis::cmd("SET")
                        .arg(self.key("reap", dead))
                        .arg(&node)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl),
                )
                .await?;
            if claimed.is_some() {
                self.reap(dead).await?;
            }
        }
        Ok(())
    }

    /// Removes a dead node's presence and sessions, sending `presence.leave` for each (in the
    /// rooms whose options have presence: the others never told anyone of the join either).
    async fn reap(&self, dead: &str) -> Result<(), BackendError> {
        tracing::info!(node = %dead, "redis: a node stopped its heartbeat; removing its members");
        let rooms: Vec<String> =
            self.query(redis::cmd("SMEMBERS").arg(self.key("node-rooms", dead))).await?;
        for room in rooms {
            let signals = self.local().is_none_or(|local| local.room_options(&room).presence);
            let entries: HashMap<String, String> =
                self.query(redis::cmd("HGETALL").arg(self.key("presence", &room))).await?;
            // The room's removals and their `presence.leave`s go as pipelines, each leave
            // after its removal.
            let mut pipe = redis::pipe();
            for (session, entry) in entries {
                if SessionId::from(session.clone()).node() != dead {
                    continue;
                }
                pipe.cmd("HDEL").arg(self.key("presence", &room)).arg(&session).ignore();
                if signals
                    && let Ok(presence) = serde_json::from_str::<Presence>(&entry)
                    && let Ok(frame) =
                        palisade_rooms::protocol::presence_frame(false, &room, &presence)
                {
                    // From no live node, so that every node delivers it, this one included.
                    let message = format!("f\n{dead}\n\n{}", frame.as_str());
                    pipe.cmd("PUBLISH").arg(self.key("room", &room)).arg(message).ignore();
                }
                if pipe.len() >= MAX_PIPELINE {
                    self.query_pipe(&pipe).await?;
                    pipe.clear();
                }
            }
            if !pipe.is_empty() {
                self.query_pipe(&pipe).await?;
            }
        }
        let users: Vec<String> =
            self.query(redis::cmd("SMEMBERS").arg(self.key("node-users", dead))).await?;
        for user in users {
            let sessions: HashMap<String, String> =
                self.query(redis::cmd("HGETALL").arg(self.key("user", &user))).await?;
            let gone: Vec<String> =
                sessions.into_iter().filter(|(_, node)| node == dead).map(|(s, _)| s).collect();
            if !gone.is_empty() {
                self.query::<()>(redis::cmd("HDEL").arg(self.key("user", &user)).arg(gone)).await?;
            }
        }
        self.query::<()>(
            redis::cmd("DEL").arg(self.key("node-rooms", dead)).arg(self.key("node-users", dead)),
        )
        .await?;
        self.query::<()>(redis::cmd("SREM").arg(self.key("nodes", "all")).arg(dead)).await
    }
}

fn unavailable(detail: &'static str) -> BackendError {
    BackendError::Unavailable { backend: BACKEND, detail: detail.into() }
}

impl Shared {
    /// Puts a publication in the publisher's queue, without waiting: its outcome comes
    /// through the receiver.
    fn publication(
        &self,
        request: &PublishRequest<'_>,
    ) -> Result<oneshot::Receiver<Result<(), BackendError>>, BackendError> {
        // This node's members get a publication back through the pub/sub connection. While
        // that is down (Redis gone, or back but the subscriptions not yet restored), a
        // publication Redis accepted would reach the other nodes and never this node's
        // members, silently: the caller delivers it here and reports the outage instead.
        if !self.subscribed.load(Ordering::Acquire) {
            return Err(unavailable("pub/sub is down"));
        }
        let Some(queue) = self.publications.get() else {
            return Err(unavailable(
                "the redis backend runs no publisher (attached outside tokio)",
            ));
        };
        let except = request.except.map_or("", SessionId::as_str);
        let channel = self.key("room", request.room);
        let (command, script) = match request.recovery {
            Some(recovery) => {
                let room_json = serde_json::to_string(request.room).unwrap_or_default();
                let event_json = serde_json::to_string(request.event).unwrap_or_default();
                let window = recovery.window.as_millis() as u64;
                let mut command = redis::cmd("EVALSHA");
                command
                    .arg(PUBLISH.get_hash())
                    .arg(3)
                    .arg(self.key("seq", request.room))
                    .arg(self.key("epoch", request.room))
                    .arg(self.key("stream", request.room))
                    .arg(room_json)
                    .arg(event_json)
                    .arg(request.data.get())
                    .arg(except)
                    .arg(new_epoch())
                    .arg(recovery.history_size)
                    .arg(window)
                    .arg(window.max(86_400_000))
                    .arg(&channel);
                (command, true)
            }
            None => {
                let publication =
                    Publication::encode(request.room, None, request.event, request.data, None)
                        .map_err(|e| BackendError::Protocol {
                            backend: BACKEND,
                            detail: e.to_string().into(),
                        })?;
                let message = format!("p\n{except}\n\n{}", publication.data());
                let mut command = redis::cmd("PUBLISH");
                command.arg(&channel).arg(message);
                (command, false)
            }
        };
        let (done, outcome) = oneshot::channel();
        queue.try_send(Outgoing { command, script, done }).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => {
                BackendError::Overloaded { backend: BACKEND, limit: self.config.publish_queue }
            }
            mpsc::error::TrySendError::Closed(_) => unavailable("the redis backend has stopped"),
        })?;
        Ok(outcome)
    }
}

/// The publisher: sends what is queued as one pipeline, waits for its replies, hands each
/// caller its own, and starts over. One task on one connection, one pipeline at a time:
/// publications reach Redis in queue order, and while a pipeline is out the next one fills.
async fn publish_loop(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    let mut waiting = Vec::with_capacity(MAX_PIPELINE);
    let mut pipe = redis::pipe();
    loop {
        if queue.recv_many(&mut batch, MAX_PIPELINE).await == 0 {
            return;
        }
        // Checked again here: pub/sub may have gone down while these waited.
        if !shared.subscribed.load(Ordering::Acquire) {
            for job in batch.drain(..) {
                let _ = job.done.send(Err(unavailable("pub/sub is down")));
            }
            continue;
        }
        pipe.clear();
        // Redis may have restarted (its script cache empty) since the last pipeline: loading
        // the script again costs little, and the EVALSHAs behind it then always find it.
        let loads = batch.iter().any(|job| job.script);
        if loads {
            pipe.cmd("SCRIPT").arg("LOAD").arg(PUBLISH_SCRIPT);
        }
        for job in batch.drain(..) {
            pipe.add_command(job.command);
            waiting.push(job.done);
        }
        // Each publication gets its own reply, errors included.
        pipe.ignore_errors();
        match pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut shared.conn()).await {
            Ok(replies) => {
                let mut replies = replies.into_iter().skip(usize::from(loads));
                for done in waiting.drain(..) {
                    let outcome = match replies.next() {
                        Some(Ok(_)) => Ok(()),
                        Some(Err(err)) => Err(failed(err)),
                        None => Err(BackendError::Protocol {
                            backend: BACKEND,
                            detail: "a pipeline's reply was missing".into(),
                        }),
                    };
                    let _ = done.send(outcome);
                }
            }
            Err(err) => {
                let err = failed(err);
                for done in waiting.drain(..) {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Keeps the pub/sub connection up: connects, subscribes (the fixed channels and every room
/// with local members), delivers, and on a loss reconnects with backoff.
async fn pubsub_loop(shared: Arc<Shared>) {
    let (first, longest) = shared.config.backoff;
    let mut backoff = first;
    let mut up = true;
    loop {
        match connect_pubsub(&shared).await {
            Ok(mut stream) => {
                if !up {
                    let rooms = lock(&shared.rooms).len();
                    tracing::warn!(rooms, "redis: pub/sub reconnected; subscriptions restored");
                }
                up = true;
                backoff = first;
                while let Some(message) = stream.next().await {
                    shared.received_message(message).await;
                    // What has arrived with it is delivered in the same turn, before the
                    // members' writers run: each then writes its share in one batch, not one
                    // write per publication.
                    while let Some(Some(message)) = stream.next().now_or_never() {
                        shared.received_message(message).await;
                    }
                }
                let mut slot = shared.sink.lock().await;
                shared.subscribed.store(false, Ordering::Release);
                *slot = None;
                drop(slot);
                tracing::warn!("redis: pub/sub connection lost; reconnecting with backoff");
            }
            Err(err) => {
                if up {
                    tracing::warn!("redis: pub/sub unavailable ({err}); reconnecting with backoff");
                }
                up = false;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(longest);
    }
}

async fn connect_pubsub(shared: &Shared) -> Result<redis::aio::PubSubStream, BackendError> {
    let pubsub =
        tokio::time::timeout(shared.config.command_timeout, shared.client.get_async_pubsub())
            .await
            .map_err(|_| BackendError::Timeout { what: "the redis pub/sub connection" })?
            .map_err(failed)?;
    let (mut sink, stream) = pubsub.split();
    // The slot is held from the snapshot of the rooms until the sink is in it: a room added
    // meanwhile is either in the snapshot or subscribed by `Shared::subscribe` once it gets
    // the slot. (Taken after the snapshot, a room joined in between was never subscribed.)
    let mut slot = shared.sink.lock().await;
    let mut channels: Vec<String> =
        ["user", "all", "req"].iter().map(|c| format!("{}:{c}", shared.config.prefix)).collect();
    channels.push(shared.key("inbox", shared.node()));
    channels.extend(lock(&shared.rooms).iter().cloned());
    for channel in &channels {
        sink.subscribe(channel).await.map_err(failed)?;
    }
    *slot = Some(sink);
    shared.subscribed.store(true, Ordering::Release);
    shared.pubsub_started.send_replace(true);
    Ok(stream)
}

/// Refreshes the heartbeat every period; logs once when it starts failing and once when it
/// recovers.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(shared.config.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match shared.heartbeat().await {
            Ok(()) => {
                if !shared.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!("redis: heartbeat restored");
                }
            }
            Err(err) => {
                if shared.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!("redis: heartbeat failed ({err}); local delivery goes on");
                }
            }
        }
    }
}

/// Delivers a publication Redis did not take to this node's members all the same, without an
/// offset.
fn deliver_locally(shared: &Shared, request: &PublishRequest<'_>) {
    if let Some(local) = shared.local() {
        let except = request.except.cloned();
        if let Ok(p) = Publication::encode(request.room, None, request.event, request.data, except)
        {
            local.deliver(&p);
        }
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn attach(&self, local: Local) {
        if self.shared.local.set(local).is_err() {
            tracing::error!("redis: a backend serves one registry; attached twice");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("redis: attached outside a tokio runtime; no pub/sub, no heartbeat");
            return;
        };
        let (queue, publications) = mpsc::channel(self.shared.config.publish_queue);
        // Set once: `local` was unset above, so this is the first attach.
        let _ = self.shared.publications.set(queue);
        let mut tasks = lock(&self.tasks);
        tasks.push(runtime.spawn(publish_loop(self.shared.clone(), publications)).abort_handle());
        tasks.push(runtime.spawn(pubsub_loop(self.shared.clone())).abort_handle());
        tasks.push(runtime.spawn(heartbeat_loop(self.shared.clone())).abort_handle());
    }

    fn publish<'a>(
        &'a self,
        request: PublishRequest<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            // Only at the start, before the first connection, is pub/sub worth waiting for
            // (a little); later, a publication never yields before it has its place in the
            // queue, which is what keeps publications in the order they were made.
            if !*shared.pubsub_started.borrow() {
                let mut started = shared.pubsub_started.subscribe();
                let timeout = shared.config.command_timeout;
                let _ = tokio::time::timeout(timeout, started.wait_for(|up| *up)).await;
            }
            let outcome = match shared.publication(&request) {
                Ok(done) => {
                    done.await.unwrap_or_else(|_| Err(unavailable("the redis backend has stopped")))
                }
                Err(err) => Err(err),
            };
            match &outcome {
                Ok(()) => {}
                // Sent, and no answer in time: Redis may still run it (a slow or paused
                // server), and then this node's subscription brings it back like any other.
                // Delivering it here too would deliver it twice; the caller learns that it may
                // or may not have gone out.
                Err(BackendError::Timeout { .. }) => {
                    tracing::debug!(
                        room = request.room,
                        "redis: publication timed out; not delivered locally, Redis may still publish it"
                    );
                }
                // Refused, queued behind a pub/sub loss, or failed to reach Redis: it will not
                // come back, so this node's members get it now.
                Err(_) => deliver_locally(shared, &request),
            }
            outcome
        })
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        recovery: &'a Recovery,
        since: Option<&'a StreamPosition>,
    ) -> BoxFuture<'a, Result<Recovered, BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let (epoch, top): (String, u64) = redis::Script::new(POSITION_SCRIPT)
                .key(shared.key("seq", room))
                .key(shared.key("epoch", room))
                .key(shared.key("stream", room))
                .arg(new_epoch())
                .arg((recovery.window.as_millis() as u64).max(86_400_000))
                .invoke_async(&mut shared.conn())
                .await
                .map_err(failed)?;
            let position = StreamPosition { epoch: epoch.clone(), offset: top };
            let Some(since) = since else {
                return Ok(Recovered::new(position, Err(NotRecovered::NotRequested)));
            };
            let outcome = if since.epoch != epoch {
                Err(NotRecovered::EpochChanged)
            } else if since.offset > top {
                Err(NotRecovered::UnknownOffset)
            } else if since.offset == top {
                Ok(Vec::new())
            } else {
                let reply: redis::streams::StreamRangeReply = shared
                    .query(
                        redis::cmd("XRANGE")
                            .arg(shared.key("stream", room))
                            .arg(format!("{}-0", since.offset + 1))
                            .arg("+"),
                    )
                    .await?;
                let mut publications = Vec::with_capacity(reply.ids.len());
                for entry in &reply.ids {
                    let offset = entry.id.split('-').next().and_then(|o| o.parse::<u64>().ok());
                    let data: Option<String> = entry.get("d");
                    if let (Some(offset), Some(data)) = (offset, data) {
                        publications.push(Publication::from_data(room, Some(offset), &data, None));
                    }
                }
                match publications.first().and_then(Publication::offset) {
                    Some(first) if first == since.offset + 1 => Ok(publications),
                    Some(_) => Err(NotRecovered::Trimmed),
                    // The stream expired: nothing published within the window.
                    None => Err(NotRecovered::TooOld),
                }
            };
            Ok(Recovered::new(position, outcome))
        })
    }

    fn forward<'a>(
        &'a self,
        target: Target<'a>,
        frame: &'a Utf8Bytes,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let node = shared.node();
            let (channel, message) = match target {
                Target::Room { room, except } => {
                    let except = except.map_or("", SessionId::as_str);
                    (shared.key("room", room), format!("f\n{node}\n{except}\n{}", frame.as_str()))
                }
                Target::User(user) => (
                    format!("{}:user", shared.config.prefix),
                    format!("{node}\n{user}\n{}", frame.as_str()),
                ),
                _ => {
                    (format!("{}:all", shared.config.prefix), format!("{node}\n{}", frame.as_str()))
                }
            };
            shared.query(redis::cmd("PUBLISH").arg(channel).arg(message)).await
        })
    }

    fn open_session<'a>(
        &'a self,
        presence: &'a Presence,
        exclusive: bool,
        replaces: Option<&'a SessionId>,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let node = shared.node();
            let (admitted, replaced_on): (i64, String) = redis::Script::new(OPEN_SCRIPT)
                .key(shared.key("user", &presence.user))
                .arg(presence.session.as_str())
                .arg(node)
                .arg(if exclusive { "1" } else { "0" })
                .arg(format!("{}:node:", shared.config.prefix))
                .arg(replaces.map_or("", SessionId::as_str))
                .invoke_async(&mut shared.conn())
                .await
                .map_err(failed)?;
            if admitted != 1 {
                return Ok(false);
            }
            shared
                .query::<()>(
                    redis::cmd("SADD").arg(shared.key("node-users", node)).arg(&presence.user),
                )
                .await?;
            // Open on another live node: that node closes it (this node's own is closed by
            // the rooms). A dead node's entries were left out already and go with it.
            if let Some(replaced) = replaces
                && !replaced_on.is_empty()
                && replaced_on != node
            {
                let message = format!("end\n{replaced}");
                shared
                    .query::<()>(
                        redis::cmd("PUBLISH").arg(shared.key("inbox", &replaced_on)).arg(message),
                    )
                    .await?;
            }
            Ok(true)
        })
    }

    fn close_session<'a>(
        &'a self,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let key = self.shared.key("user", &presence.user);
            self.shared.query(redis::cmd("HDEL").arg(key).arg(presence.session.as_str())).await
        })
    }

    fn presence_join<'a>(
        &'a self,
        room: &'a str,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            // Subscribed first: what is published from here on reaches this node.
            let subscribed = self.shared.subscribe(self.shared.key("room", room)).await;
            self.shared.join_room(room, presence).await?;
            subscribed
        })
    }

    fn presence_leave<'a>(
        &'a self,
        room: &'a str,
        presence: &'a Presence,
        last_local: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            if last_local {
                shared.unsubscribe(&shared.key("room", room)).await;
            }
            shared
                .query::<()>(
                    redis::cmd("HDEL")
                        .arg(shared.key("presence", room))
                        .arg(presence.session.as_str()),
                )
                .await?;
            if last_local {
                shared
                    .query::<()>(
                        redis::cmd("SREM").arg(shared.key("node-rooms", shared.node())).arg(room),
                    )
                    .await?;
            }
            Ok(())
        })
    }

    fn presence<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Presence>, BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let entries: HashMap<String, String> =
                shared.query(redis::cmd("HGETALL").arg(shared.key("presence", room))).await?;
            let mut list: Vec<Presence> = entries
                .values()
                .filter_map(|entry| serde_json::from_str::<Presence>(entry).ok())
                .collect();
            // A dead node's members are out at once, before anyone has removed them.
            let nodes: Vec<String> = list.iter().map(|p| p.session.node().to_owned()).collect();
            let live = shared.live(nodes).await?;
            list.retain(|p| live.contains(p.session.node()));
            list.sort_by(|a, b| a.session.cmp(&b.session));
            Ok(list)
        })
    }

    fn user_sessions<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let sessions: HashMap<String, String> =
                shared.query(redis::cmd("HGETALL").arg(shared.key("user", user))).await?;
            let nodes: Vec<String> = sessions.values().cloned().collect();
            let live = shared.live(nodes).await?;
            Ok(sessions.values().filter(|node| live.contains(*node)).count())
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomInfo>, BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let nodes: Vec<String> =
                shared.query(redis::cmd("SMEMBERS").arg(shared.key("nodes", "all"))).await?;
            let expected = shared.live(nodes).await?.len();
            let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
            let (tx, mut rx) = mpsc::unbounded_channel();
            lock(&shared.pending).insert(id, tx);
            let asked = async {
                let request = format!("{}\n{id}", shared.node());
                shared
                    .query::<()>(
                        redis::cmd("PUBLISH")
                            .arg(format!("{}:req", shared.config.prefix))
                            .arg(request),
                    )
                    .await?;
                let mut merged: HashMap<String, usize> = HashMap::new();
                for _ in 0..expected {
                    let Some(answer) = rx.recv().await else { break };
                    let rooms: Vec<RoomInfo> = serde_json::from_str(&answer).unwrap_or_default();
                    for room in rooms {
                        *merged.entry(room.name).or_default() += room.members;
                    }
                }
                Ok(merged)
            };
            let answered = tokio::time::timeout(shared.config.request_timeout, asked).await;
            lock(&shared.pending).remove(&id);
            let merged = answered
                .map_err(|_| BackendError::Timeout { what: "a room listing from every node" })??;
            let mut rooms: Vec<RoomInfo> =
                merged.into_iter().map(|(name, n)| RoomInfo::new(name, n)).collect();
            rooms.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(rooms)
        })
    }
}
