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
//! - **Fan-out**: one pub/sub channel per room (`PREFIX:room:{ROOM}`), subscribed while the
//!   node has members there, plus channels for users, everyone, node requests and each node's
//!   inbox. A frame is encoded once by the publishing node and once per receiving node.
//! - **Standalone or cluster**: [`RedisConfig::new`] takes one Redis, [`RedisConfig::cluster`]
//!   the seed nodes of a Redis Cluster. Every key and channel carries a hash tag (the room,
//!   the user or the node between braces), so that what a script touches is in one slot; on a
//!   cluster, channels are sharded (`SSUBSCRIBE`, `SPUBLISH`: a room's traffic stays on the
//!   shard that holds its keys), and a shard that dies stops only its own rooms' traffic
//!   between nodes.
//! - **Publishing is pipelined and ordered**: one task per node owns the publications on
//!   their way to Redis. Callers put theirs in its queue (bounded:
//!   [`RedisConfig::publish_queue`]; a full queue is [`BackendError::Overloaded`]) and wait for
//!   their own reply; the task sends everything queued as one pipeline, waits for its replies
//!   and hands each caller its result. Publications reach Redis in the order their `publish`
//!   futures were first polled, one pipeline after the other on one connection (on a cluster,
//!   one pipeline per room at a time, each room's in that order; rooms on different shards
//!   have no order between them), so a node publishing many at once pays one round trip per
//!   pipeline instead of one per publication, and the other nodes receive them in batches. A
//!   publication refused because the queue is full is delivered to this node's members at
//!   once, possibly before earlier ones still queued. On a cluster, a command or pipeline
//!   answered `ASK`, `TRYAGAIN` or `MOVED` (its slot is moving or has moved) goes again, for
//!   up to two seconds, until the move has ended; the script runs a publication sent twice
//!   once, and nodes drop a second copy of one without an offset.
//! - **Recovery**: a Lua script assigns the offset (`INCR`), appends to the room's stream
//!   (`XADD … MAXLEN ~ history_size`) and publishes, atomically, so every node sees offsets in
//!   order (the publication order above); the epoch is a key of its own, made anew (with the
//!   offsets starting over) when Redis has lost it. A join reads what it missed with `XRANGE`.
//!   A node whose subscription was down meanwhile (its pub/sub connection lost, its room's
//!   shard down, or a join made while it was) sees the offsets of the next publication jump
//!   (or a new epoch start past 1), fetches the publications between with `XRANGE` (at most
//!   the room's `history_size`, and 10,000) and delivers them first: its members' live stream
//!   has no gap as long as the history holds them. Once subscribed again, the node also reads
//!   the last offset of each room with a history it knows, so a room gone quiet is caught up
//!   as well.
//! - **Presence** and sessions are hashes (`PREFIX:presence:{ROOM}`, `PREFIX:user:{USER}`).
//!   Each node refreshes a heartbeat key (`PREFIX:node:{NODE}`, expiring after
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
//!   [`BackendError::Unavailable`] or [`BackendError::Timeout`]. The pub/sub connection comes
//!   back with exponential backoff and restores every subscription; a heartbeat that finds its
//!   key gone (Redis restarted empty) registers the node's sessions and presence again.
//! - **A node's members get each of its own publications once and in order**, whatever Redis
//!   does: back through the subscription when they come back, here directly (without an
//!   offset) when Redis refused them or the subscription was lost before they came back. Each
//!   publication carries its node and a number, which tells the publisher which are back (see
//!   `Returns` in the source).
//! - **One log line per state change** (connected, lost, restored), not one per retry.
//! - **Bounded memory**: the publications waiting for Redis are at most
//!   [`RedisConfig::publish_queue`]; a pipeline carries at most 1,024 of them.
//! - **A publication reaches a member once**: one that arrives twice (a cluster client may
//!   have two connections subscribed to a shard while it replaces one) is dropped by its epoch
//!   and offset in rooms with a history, and by its number when it is this node's.
//! - Depends on palisade-rooms, palisade-json, palisade-proto and palisade-error; never on the
//!   server or the client.
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
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::cluster_async::ClusterConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// How the Redis backend behaves. `#[non_exhaustive]`: start from [`RedisConfig::new`] and
/// change what you need with the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL (`redis://127.0.0.1:6379/`); of a cluster, its first seed node.
    pub url: String,
    /// The seed nodes of a Redis Cluster (set by [`RedisConfig::cluster`]); empty for a
    /// standalone Redis at `url`.
    pub cluster: Vec<String>,
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
            cluster: Vec::new(),
            prefix: "palisade".into(),
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            publish_queue: 8192,
        }
    }

    /// The defaults, with a Redis Cluster reached through these seed nodes (one is enough;
    /// the others are tried when it is down). Keys carry a hash tag per room, user or node
    /// (`PREFIX:seq:{ROOM}`), so that what one script touches is in one slot, and fan-out uses
    /// sharded pub/sub (`SSUBSCRIBE`, `SPUBLISH`): each room's traffic stays on its shard.
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cluster: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut config = Self::new(cluster.first().cloned().unwrap_or_default());
        config.cluster = cluster;
        config
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// With this key prefix (without `{` or `}`: a hash tag in the prefix would put every key
    /// of a cluster in one slot).
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
    /// A standalone Redis's client, for its pub/sub connection (a cluster's connection
    /// subscribes itself).
    client: Option<redis::Client>,
    conn: Conn,
    /// A cluster's push messages (publications, and losses of a node's connection), until the
    /// pub/sub task takes them.
    pushes: Mutex<Option<mpsc::UnboundedReceiver<redis::PushInfo>>>,
    local: OnceLock<Local>,
    /// The room channels this node wants (rooms with local members).
    rooms: Mutex<HashSet<String>>,
    /// What subscribes, while pub/sub is up.
    sink: tokio::sync::Mutex<Option<Sink>>,
    /// Whether `sink` is there, readable without waiting for its lock (a publication checks
    /// it, and must not yield before it has its place in the queue).
    subscribed: AtomicBool,
    /// On a cluster, the wanted channels not subscribed now (their shard down, or its
    /// connection lost and not yet subscribed again): a publication to one of these rooms is
    /// refused like any while pub/sub is down, and the others go on.
    down: Mutex<HashSet<String>>,
    /// Wakes the cluster's pub/sub task when a channel joined `down`.
    retry: tokio::sync::Notify,
    /// Room channels being subscribed (the first local member joining): what this node
    /// publishes there meanwhile may not come back, and its members are not owed it (they
    /// are still joining; a room with a history hands it over in the join's reply).
    joining: Mutex<HashSet<String>>,
    /// Per room with local members: what became of this node's own publications, and the
    /// last offset received (see [`Returns`]).
    returns: Mutex<Returns>,
    /// The number the next publication of this node carries.
    next_token: AtomicU64,
    /// How many times the subscriptions were lost (a cluster: a node's connection): a
    /// publication sent before a loss may never come back through them.
    losses: AtomicU64,
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

/// This node's members get its own publications back through its subscription, like any
/// other node's: so every node sees a room's publications in Redis's order. Each publication
/// carries this node's name and a number that grows in the order the publications are sent,
/// and one room's are run, and pushed back, in that order. So the publisher knows, for each of
/// its publications, whether it is back, may still come back, or never will:
///
/// - answered (or timed out) and not back yet: *pending*, until it is back, or until the
///   subscription is lost (Redis died between running it and pushing it, or never ran it),
///   and then it is delivered here;
/// - refused, or failed to reach Redis: delivered here at once, after the room's pending ones.
///
/// What is delivered here directly is never delivered again when it comes back after all
/// (`local`), and each is delivered in the order it was made: a member of this node gets each
/// of this node's publications once and in order, whatever happens to Redis.
#[derive(Default)]
struct Returns {
    rooms: HashMap<String, Own>,
    /// Pending publications, in all rooms: at most [`RedisConfig::publish_queue`]; past that
    /// all of them are delivered here at once.
    pending: usize,
}

/// [`Returns`] of one room with members here, and the epoch and offset of the last of its
/// publications received (see [`Own::seen_before`]).
#[derive(Default)]
struct Own {
    epoch: String,
    offset: u64,
    /// Until a publication is received: the lowest position a join here read (the first
    /// received must follow it, see [`Own::missing_from`]).
    seed: Option<(String, u64)>,
    /// The number of the last publication without an offset received from each other node
    /// (see [`Own::repeated`]).
    plain: HashMap<String, u64>,
    /// The number of this node's last publication back through the subscription.
    back: u64,
    /// The highest number delivered here directly: anything up to it that comes back is
    /// dropped.
    local: u64,
    /// Answered or timed out, not back yet.
    pending: std::collections::BTreeMap<u64, Publication>,
}

impl Own {
    /// Whether a publication with this epoch and offset is one this node has had already
    /// (offsets grow by one per publication within an epoch, and one room's reach a node in
    /// order): a duplicate, which a connection subscribed twice for a moment (a cluster client
    /// replacing a node's connection) would otherwise deliver twice.
    fn seen_before(&mut self, epoch: &str, offset: u64) -> bool {
        if self.epoch == epoch {
            if offset <= self.offset {
                return true;
            }
        } else {
            epoch.clone_into(&mut self.epoch);
            self.seed = None;
        }
        self.offset = offset;
        false
    }

    /// The first offset missing before a publication received with this epoch and offset: its
    /// room's publications reach a node in order, one offset after the other, so a jump means
    /// some went by while the node was not subscribed (the pub/sub connection lost, a shard
    /// down, a join made meanwhile). None without a jump, or after a new epoch (the history
    /// started over: nothing to fetch).
    fn missing_from(&self, epoch: &str, offset: u64) -> Option<u64> {
        let (known, last) = if self.epoch.is_empty() {
            self.seed.as_ref().map(|(seed, lowest)| (seed.as_str(), *lowest))?
        } else {
            (self.epoch.as_str(), self.offset)
        };
        // A new epoch (Redis lost the room's keys) started over at 1: all of it is missing.
        let first = if known == epoch { last + 1 } else { 1 };
        (first < offset).then_some(first)
    }

    /// Whether a publication without an offset from another node was received already: a
    /// node's publications to a room come in the order of their numbers, and a second copy
    /// comes after the first (a pipeline sent again while its slot moved, see
    /// [`redirected`]). At most 64 nodes are remembered (restarts make new ones).
    fn repeated(&mut self, origin: &str, token: u64) -> bool {
        if let Some(last) = self.plain.get_mut(origin) {
            if token <= *last {
                return true;
            }
            *last = token;
            return false;
        }
        if self.plain.len() >= 64 {
            self.plain.clear();
        }
        self.plain.insert(origin.to_owned(), token);
        false
    }

    /// One of this node's publications came back through the subscription: whether to deliver
    /// it (not if it was delivered here directly already, or came twice). Its room's earlier
    /// pending ones did not come back (Redis ran them before it, but their copies were lost
    /// with a subscription): they are delivered first, here. The pending ones settled.
    fn came_back(&mut self, local: &Local, token: u64) -> Option<usize> {
        if token <= self.local || token <= self.back {
            return None;
        }
        self.back = token;
        let answered = usize::from(self.pending.remove(&token).is_some());
        Some(self.flush(local, token - 1, None) + answered)
    }

    /// Delivers the pending publications up to `upto`, then `this`, in order.
    fn flush(&mut self, local: &Local, upto: u64, this: Option<&Publication>) -> usize {
        let later = self.pending.split_off(&(upto + 1));
        let earlier = std::mem::replace(&mut self.pending, later);
        for publication in earlier.values() {
            local.deliver(publication);
        }
        if let Some(publication) = this {
            local.deliver(publication);
        }
        self.local = self.local.max(upto);
        earlier.len()
    }
}

/// The connection commands go through.
#[derive(Clone)]
enum Conn {
    /// To a standalone Redis; reconnects by itself.
    Single(ConnectionManager),
    /// To a cluster: each command goes to its slot's node, and the connection receives the
    /// pushes of the sharded channels it subscribed.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            // Following the slot where it has gone, as a pipeline does (see `redirected`).
            // Sent again while its slot moves, as a pipeline is (see `redirected`).
            Self::Cluster(conn) => {
                let conn = conn.clone();
                Box::pin(patiently(move || {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_command(cmd).await }
                }))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipe, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Runs commands on a cluster, which takes no pipeline across slots: those whose first key
/// has the same hash tag (one room's, one user's, one node's) go in one pipeline, in the order
/// given, and the pipelines go out all at once (each through [`redirected`]). `preface`, when
/// given, heads each pipeline that runs a script (the publication script's `SCRIPT LOAD`: the
/// node the pipeline reaches has the script, whichever node that is), its reply left out. The
/// replies come in the order of the commands, an error reply as an error.
async fn each<'a>(
    conn: &ClusterConnection,
    commands: impl Iterator<Item = &'a redis::Cmd>,
    preface: Option<&redis::Cmd>,
) -> Vec<redis::RedisResult<redis::Value>> {
    let commands: Vec<&redis::Cmd> = commands.collect();
    let mut groups: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, cmd) in commands.iter().enumerate() {
        groups.entry(hash_tag(cmd)).or_default().push(i);
    }
    let sent = futures_util::future::join_all(groups.into_values().map(|indices| {
        let prefaced = preface.filter(|_| indices.iter().any(|&i| is_script(commands[i])));
        let group: Vec<&redis::Cmd> =
            prefaced.into_iter().chain(indices.iter().map(|&i| commands[i])).collect();
        let conn = conn.clone();
        async move {
            let outcome = redirected(conn, &group).await.map(|mut replies| {
                if prefaced.is_some() && !replies.is_empty() {
                    // The `SCRIPT LOAD`'s: a failed one shows as the scripts' `NOSCRIPT`.
                    let _ = replies.remove(0);
                }
                replies
            });
            (indices, outcome)
        }
    }))
    .await;
    let mut replies: Vec<redis::RedisResult<redis::Value>> = commands
        .iter()
        .map(|_| {
            Err(redis::RedisError::from((redis::ErrorKind::Io, "a pipeline's reply was missing")))
        })
        .collect();
    for (indices, outcome) in sent {
        match outcome {
            Ok(values) => {
                for (i, value) in indices.into_iter().zip(values) {
                    replies[i] = value;
                }
            }
            Err(err) => {
                for i in indices {
                    replies[i] = Err(err.clone());
                }
            }
        }
    }
    replies
}

/// Whether a command runs a script (`EVALSHA` or `EVAL`).
fn is_script(cmd: &redis::Cmd) -> bool {
    cmd.args_iter().next().is_some_and(|name| {
        matches!(name, redis::Arg::Simple(name)
            if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL"))
    })
}

/// How long [`redirected`] keeps sending a pipeline again while its slot moves, at most.
const REDIRECT_PATIENCE: Duration = Duration::from_secs(2);

/// Sends one slot's commands as one pipeline, and again while the slot moves to another
/// shard.
///
/// The cluster client is built without retries (a pipeline is never sent again after a
/// dropped connection: Redis may have run it), so it hands over the answers of a slot on the
/// move, which mean the pipeline did not run (but for its commands before the one refused,
/// which did):
/// - `ASK`: the slot is moving, and these keys have gone to the new shard already;
/// - `TRYAGAIN`: the keys are split between the two shards for now (a room idle longer than
///   its window has no stream, which makes its keys split for the whole move);
/// - `MOVED`: the slot has moved (the client rebuilds its map of slots meanwhile).
///
/// The pipeline goes again where the client's map says, after 20 ms, then 40, 80, up to
/// 320 ms apart, for [`REDIRECT_PATIENCE`] at most (the last answer stands): a command waits
/// for its slot's move to end, not sent to the new shard with `ASKING` (that would make a key
/// there while the old shard still holds it, which fails the move's next `MIGRATE`; and the
/// new shard may be a node the client has no connection to, which makes it start over from
/// its seeds). What ran of the pipeline runs again: the publication script finds it done
/// ([`PUBLISH_SCRIPT`]), the other nodes drop a plain publication they have had (by its
/// number), and every other command here sets what it sets once more.
async fn redirected(
    conn: ClusterConnection,
    commands: &[&redis::Cmd],
) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
    let mut pipe = redis::pipe();
    for cmd in commands {
        pipe.add_command((*cmd).clone());
    }
    pipe.ignore_errors();
    let pipe = &pipe;
    patiently(|| {
        let mut conn = conn.clone();
        async move { pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn).await }
    })
    .await
}

/// Sends what `send` sends until its answer is not that of a slot on the move, as
/// [`redirected`] says.
async fn patiently<T, F, Fut>(mut send: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    use redis::ServerErrorKind;
    let until = tokio::time::Instant::now() + REDIRECT_PATIENCE;
    let mut pause = Duration::from_millis(20);
    loop {
        let replies = send().await;
        let Err(err) = &replies else { return replies };
        let moving = matches!(
            err.kind(),
            redis::ErrorKind::Server(
                ServerErrorKind::Ask | ServerErrorKind::TryAgain | ServerErrorKind::Moved
            )
        );
        if !moving || tokio::time::Instant::now() + pause > until {
            return replies;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(320));
    }
}

/// The hash tag of a command's first key (Redis's rule: between the first `{` and the next
/// `}`, when not empty; else the whole key): commands with the same one are in one slot.
fn hash_tag(cmd: &redis::Cmd) -> &[u8] {
    let mut args = cmd
        .args_iter()
        .filter_map(|arg| if let redis::Arg::Simple(bytes) = arg { Some(bytes) } else { None });
    // `EVALSHA sha numkeys key …` (or `EVAL script …`); every other command here names its
    // key first.
    args.next();
    let key = if is_script(cmd) { args.nth(1) } else { args.next() }.unwrap_or_default();
    match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    }
}

/// What subscribes to channels: a standalone Redis's pub/sub connection, or a cluster's
/// connection (sharded channels, each subscribed on its slot's node).
enum Sink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Sink {
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(channel).await,
            Self::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent (single inserts and removals).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed(err: redis::RedisError) -> BackendError {
    use redis::ServerErrorKind;
    let moving = matches!(
        err.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::Moved
                | ServerErrorKind::ClusterDown
        )
    );
    if err.is_timeout() {
        BackendError::Timeout { what: "a redis command" }
    } else if moving {
        // A slot on the move past `REDIRECT_PATIENCE`, or a cluster without it: try later.
        BackendError::Unavailable { backend: BACKEND, detail: err.to_string().into() }
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        BackendError::Unavailable { backend: BACKEND, detail: err.to_string().into() }
    } else {
        BackendError::Protocol { backend: BACKEND, detail: err.to_string().into() }
    }
}

/// Assigns the offset, keeps the history and publishes, atomically. The keys and the channel
/// (ARGV[9]) share the room's hash tag; ARGV[10] is `PUBLISH`, or `SPUBLISH` on a cluster;
/// ARGV[11] is the publishing node and its publication's number (see [`Returns`]).
///
/// Runs each publication once: KEYS[4] keeps, per node, the number of its last publication
/// in the room, and one numbered no higher is not run again (answering 0). A node's
/// publications to a room reach Redis in the order of their numbers (one pipeline per room at
/// a time, the script loaded at its head), so a number no higher than the last can only be a
/// second sending: a pipeline sent again while its slot moves (see [`redirected`]) whose
/// first commands had run. Past 64 nodes (restarts make new ones), the record starts over.
const PUBLISH_SCRIPT: &str = r#"
local origin, token = string.match(ARGV[11], '^(.*)\n(%d+)$')
local last = redis.call('HGET', KEYS[4], origin)
if last and tonumber(last) >= tonumber(token) then
  return 0
end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
local offset = redis.call('INCR', KEYS[1])
local data = '{"room":' .. ARGV[1] .. ',"offset":' .. offset .. ',"event":' .. ARGV[2] .. ',"data":' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], offset .. '-0', 'd', data, 'm', ARGV[11] .. '\n' .. ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call(ARGV[10], ARGV[9], 'p\n' .. ARGV[11] .. '\n' .. ARGV[4] .. '\n' .. offset .. '\n' .. epoch .. '\n' .. data)
if redis.call('HLEN', KEYS[4]) > 64 then
  redis.call('DEL', KEYS[4])
end
redis.call('HSET', KEYS[4], origin, token)
redis.call('PEXPIRE', KEYS[4], ARGV[8])
return offset
"#;

/// [`PUBLISH_SCRIPT`], its SHA-1 computed once.
static PUBLISH: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PUBLISH_SCRIPT));

/// Publications a node fetches from a room's history at most, after finding it missed some
/// (see [`Shared::catch_up`]).
const MAX_CATCH_UP: u64 = 10_000;

/// A publication as it came on a room's channel or from its history.
struct Received<'a> {
    /// The node that published it, and its number there (see [`Returns`]).
    origin: &'a str,
    token: Option<u64>,
    /// The session it leaves out, or empty.
    except: &'a str,
    /// Its `room.message` data.
    data: &'a str,
}

/// Publications in one pipeline, at most: the replies of one pipeline come back within one
/// command timeout (on a cluster, within [`REDIRECT_PATIENCE`] and a command timeout more
/// while its slot moves), and a caller waits behind at most this many others.
const MAX_PIPELINE: usize = 1024;

/// A publication on its way to Redis, and where its outcome goes.
struct Outgoing {
    /// `EVALSHA` of [`PUBLISH_SCRIPT`] without its last argument, or a plain `PUBLISH` yet to
    /// be written: the publisher completes it with the publication's number
    /// ([`Shared::stamp`]).
    body: Body,
    /// The command, once stamped.
    command: redis::Cmd,
    /// The room's channel.
    channel: String,
    /// Its number (see [`Returns`]), and the subscriptions' loss count when it was sent.
    token: u64,
    losses: u64,
    /// Whether, when it was sent, its room's channel was subscribed and up: then it comes
    /// back unless the subscription is lost.
    tracked: bool,
    /// The publication as this node's members get it if it is delivered here directly.
    local: Publication,
    done: oneshot::Sender<Result<(), BackendError>>,
}

/// What an [`Outgoing`] publication runs.
enum Body {
    /// The script (each pipeline that runs it loads it first).
    Script(redis::Cmd),
    /// A plain publish of the publication (its local copy's frame), with the session it
    /// leaves out (empty for none).
    Plain(String),
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
/// one it replaces (ARGV[5], or empty), which is unregistered. A node's heartbeat key is
/// ARGV[4] .. NODE .. ARGV[6]. Answers 0 (refused) or 1, and
/// the node of the replaced session when that node is live (to be told to end it). The
/// session itself may be there already: a heartbeat that found the node's key gone registers
/// every local session again, this one included if it came first.
const OPEN_SCRIPT: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
local replaced = ''
for i = 1, #fields, 2 do
  local live = redis.call('EXISTS', ARGV[4] .. fields[i + 1] .. ARGV[6]) == 1
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

/// [`OPEN_SCRIPT`] for a cluster, where a script may touch no key outside its slot, so it
/// cannot look at the nodes' heartbeat keys: the caller tells it which nodes it found live
/// (ARGV[4]) and dead (ARGV[6]), each name between newlines. A session on a node of neither
/// list answers {2, node, node, …}: the caller looks those up and runs it again.
const OPEN_CLUSTER_SCRIPT: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
local replaced = ''
local unknown = {}
for i = 1, #fields, 2 do
  local node = '\n' .. fields[i + 1] .. '\n'
  local live = string.find(ARGV[4], node, 1, true) ~= nil
  if not live and string.find(ARGV[6], node, 1, true) == nil then
    table.insert(unknown, fields[i + 1])
  elseif fields[i] == ARGV[1] then
    -- this very session
  elseif fields[i] == ARGV[5] then
    if live then replaced = fields[i + 1] end
  elseif live and ARGV[3] == '1' then
    return {0, ''}
  end
end
if #unknown > 0 then
  table.insert(unknown, 1, 2)
  return unknown
end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[1], ARGV[5]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, replaced}
"#;

/// How many times a cluster's session registration looks up nodes it had not seen (each
/// time a session of a new node appeared meanwhile) before it gives up.
const OPEN_ROUNDS: usize = 4;

impl RedisBackend {
    /// Connects to Redis (the first connection must succeed; later losses are survived).
    ///
    /// # Errors
    ///
    /// [`BackendError::Unavailable`] when Redis cannot be reached or the URL is not one; for
    /// a cluster, when no seed node answers.
    pub async fn connect(config: RedisConfig) -> Result<Self, BackendError> {
        let (client, conn, pushes) = if config.is_cluster() {
            let (sender, pushes) = mpsc::unbounded_channel();
            let backoff = |wait: Duration| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let client = redis::cluster::ClusterClientBuilder::new(config.cluster.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(sender)
                .connection_timeout(config.command_timeout)
                .response_timeout(config.command_timeout)
                // No request is sent twice: a publication Redis ran before the connection
                // dropped would be run again (a second offset, a second copy on every node).
                .retries(0)
                .min_retry_wait(backoff(config.backoff.0))
                .max_retry_wait(backoff(config.backoff.1))
                .build()
                .map_err(failed)?;
            let conn = tokio::time::timeout(config.command_timeout, client.get_async_connection())
                .await
                .map_err(|_| BackendError::Timeout { what: "the redis cluster connection" })?
                .map_err(failed)?;
            (None, Conn::Cluster(conn), Some(pushes))
        } else {
            let client = redis::Client::open(config.url.as_str()).map_err(failed)?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.command_timeout))
                .set_response_timeout(Some(config.command_timeout))
                .set_number_of_retries(1)
                .set_min_delay(config.backoff.0)
                .set_max_delay(config.backoff.1);
            let conn = client.get_connection_manager_with_config(manager).await.map_err(failed)?;
            (Some(client), Conn::Single(conn), None)
        };
        tracing::info!(prefix = %config.prefix, cluster = config.is_cluster(), "redis: connected");
        let shared = Arc::new(Shared {
            config,
            client,
            conn,
            pushes: Mutex::new(pushes),
            local: OnceLock::new(),
            rooms: Mutex::new(HashSet::new()),
            sink: tokio::sync::Mutex::new(None),
            subscribed: AtomicBool::new(false),
            down: Mutex::new(HashSet::new()),
            retry: tokio::sync::Notify::new(),
            joining: Mutex::new(HashSet::new()),
            returns: Mutex::new(Returns::default()),
            next_token: AtomicU64::new(1),
            losses: AtomicU64::new(0),
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

    /// `PREFIX:KIND:{NAME}`: a room's keys and channel share a hash tag, and so a cluster slot
    /// (a name with a `}` in it still gives all of them the same tag: its part before the `}`).
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{{{name}}}", self.config.prefix)
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The command that publishes to a channel: a cluster's channels are sharded.
    fn publish_command(&self) -> &'static str {
        if self.config.is_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }

    /// A `PUBLISH` (or `SPUBLISH`) to `channel`.
    fn publish_cmd(&self, channel: String, message: String) -> redis::Cmd {
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(channel).arg(message);
        cmd
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BackendError> {
        cmd.query_async(&mut self.conn()).await.map_err(failed)
    }

    /// Starts receiving a room's channel.
    async fn subscribe(&self, channel: String) -> Result<(), BackendError> {
        if !lock(&self.rooms).insert(channel.clone()) {
            return Ok(());
        }
        lock(&self.joining).insert(channel.clone());
        let subscribed = self.subscribe_new(channel.clone()).await;
        lock(&self.joining).remove(&channel);
        subscribed
    }

    /// [`Shared::subscribe`] of a channel new to this node.
    async fn subscribe_new(&self, channel: String) -> Result<(), BackendError> {
        match self.sink.lock().await.as_mut() {
            Some(sink) => match sink.subscribe(&channel).await {
                Ok(()) => Ok(()),
                Err(err) => {
                    if self.config.is_cluster() {
                        // Its shard is down: the pub/sub task subscribes it when it is back.
                        lock(&self.down).insert(channel);
                        self.retry.notify_one();
                    }
                    Err(failed(err))
                }
            },
            // Down: the reconnection subscribes it.
            None => Err(BackendError::Unavailable {
                backend: BACKEND,
                detail: "pub/sub is down".into(),
            }),
        }
    }

    async fn unsubscribe(&self, channel: &str) {
        lock(&self.rooms).remove(channel);
        lock(&self.down).remove(channel);
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
        if let Some(room) = kind.strip_prefix("room:{").and_then(|room| room.strip_suffix('}')) {
            if !lock(&self.rooms).contains(channel) {
                // Left meanwhile (or never joined): nobody here, and nothing to keep for it.
                return;
            }
            if let Some(publication) = payload.strip_prefix("p\n") {
                let mut parts = publication.splitn(6, '\n');
                if let (
                    Some(origin),
                    Some(token),
                    Some(except),
                    Some(offset),
                    Some(epoch),
                    Some(data),
                ) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                ) {
                    let position = offset.parse().ok().map(|offset| (epoch, offset));
                    let received = Received { origin, token: token.parse().ok(), except, data };
                    if let Some(first) = self.accept(local, room, position, &received, true)
                        && let Some((_, offset)) = position
                    {
                        self.catch_up(local, room, epoch, first, offset - 1).await;
                        // Not for a room left meanwhile (its state is gone with it).
                        if lock(&self.rooms).contains(channel) {
                            self.accept(local, room, position, &received, false);
                        }
                    }
                }
                return;
            }
            let mut parts = payload.splitn(4, '\n');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
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
                let cmd = self.publish_cmd(self.key("inbox", from), format!("{id}\n{answer}"));
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

    /// Delivers a publication received on its room's channel (or fetched from its history by
    /// [`Shared::catch_up`]) to this node's members, unless it was had already: a copy that
    /// came twice, or one of this node's own that was delivered here directly.
    ///
    /// With `gaps`, a publication that shows some before it were missed is not delivered: the
    /// first offset missing is returned instead, to be fetched first.
    fn accept(
        &self,
        local: &Local,
        room: &str,
        position: Option<(&str, u64)>,
        received: &Received<'_>,
        gaps: bool,
    ) -> Option<u64> {
        let except =
            (!received.except.is_empty()).then(|| SessionId::from(received.except.to_owned()));
        let offset = position.map(|(_, offset)| offset);
        let publication = Publication::from_data(room, offset, received.data, except);
        let mut returns = lock(&self.returns);
        let Returns { rooms, pending } = &mut *returns;
        let own = rooms.entry(room.to_owned()).or_default();
        if let Some((epoch, offset)) = position {
            if gaps && let Some(first) = own.missing_from(epoch, offset) {
                return Some(first);
            }
            if own.seen_before(epoch, offset) {
                tracing::debug!(room, offset, "redis: a publication came twice; dropped");
                return None;
            }
        }
        if position.is_none()
            && let Some(token) = received.token
            && received.origin != local.node()
            && own.repeated(received.origin, token)
        {
            tracing::debug!(room, token, "redis: a publication came twice; dropped");
            return None;
        }
        match received.token {
            // Delivered under the lock: in order with what the publisher delivers here
            // directly.
            Some(token) if received.origin == local.node() => {
                if let Some(settled) = own.came_back(local, token) {
                    local.deliver(&publication);
                    *pending = pending.saturating_sub(settled);
                }
            }
            _ => {
                drop(returns);
                local.deliver(&publication);
            }
        }
        None
    }

    /// Fetches the publications `first..=last` of `room` (epoch `epoch`) from its history and
    /// delivers them, in order: they were published while this node was not subscribed to the
    /// room's channel, and its members get them before the one that showed the gap. At most
    /// the last `history_size` (of the room's [`Recovery`](palisade_rooms::Recovery)) and
    /// [`MAX_CATCH_UP`]; what the history no longer holds, or a Redis that does not answer,
    /// leaves a gap, logged.
    async fn catch_up(&self, local: &Local, room: &str, epoch: &str, first: u64, last: u64) {
        // No more than the room's history holds (so no more memory than a join's recovery).
        let most = local
            .room_options(room)
            .recovery
            .map_or(MAX_CATCH_UP, |recovery| MAX_CATCH_UP.min(recovery.history_size as u64));
        let start = first.max((last + 1).saturating_sub(most));
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.key("stream", room)).arg(format!("{start}-0")).arg(format!("{last}-0"));
        let fetched = tokio::time::timeout(
            self.config.command_timeout,
            self.query::<redis::streams::StreamRangeReply>(&cmd),
        )
        .await
        .unwrap_or(Err(BackendError::Timeout { what: "a room's history" }));
        let reply = match fetched {
            // Not for a room left meanwhile (its state is gone with it).
            Ok(_) if !lock(&self.rooms).contains(&self.key("room", room)) => return,
            Ok(reply) => reply,
            Err(err) => {
                let missed = last + 1 - first;
                tracing::warn!(
                    room,
                    missed,
                    "redis: publications missed while unsubscribed not fetched: {err}"
                );
                return;
            }
        };
        let mut delivered = 0;
        for entry in &reply.ids {
            let offset = entry.id.split('-').next().and_then(|o| o.parse::<u64>().ok());
            let data: Option<String> = entry.get("d");
            let (Some(offset), Some(data)) = (offset, data) else { continue };
            // Who published it: `NODE\nTOKEN\nEXCEPT` (none in an entry of an older version).
            let meta: String = entry.get("m").unwrap_or_default();
            let mut parts = meta.splitn(3, '\n');
            let (origin, token, except) = (parts.next(), parts.next(), parts.next());
            let received = Received {
                origin: origin.unwrap_or_default(),
                token: token.and_then(|t| t.parse().ok()),
                except: except.unwrap_or_default(),
                data: &data,
            };
            self.accept(local, room, Some((epoch, offset)), &received, false);
            delivered += 1;
        }
        let missed = (last + 1 - first).saturating_sub(delivered);
        if missed > 0 {
            tracing::warn!(
                room,
                missed,
                "redis: publications missed while unsubscribed are no longer in the room's history"
            );
        } else {
            tracing::debug!(
                room,
                delivered,
                "redis: publications missed while unsubscribed delivered from the room's history"
            );
        }
    }

    /// Once subscribed again: each room with a history whose position this node knows (of
    /// those whose channel is in `only`, when given) is caught up to the room's last offset
    /// now ([`Shared::catch_up`]), one round trip per room. Without it, what was published
    /// while the subscription was down would wait for the room's next publication, which a
    /// room gone quiet may never make. Publications arriving meanwhile keep their order: each
    /// is delivered only past the last offset delivered (see [`Own::seen_before`]). Rooms
    /// whose position could not be read are counted in one log line; they catch up with their
    /// next publication.
    async fn catch_up_rooms(&self, only: Option<&HashSet<String>>) {
        let Some(local) = self.local() else { return };
        let rooms: Vec<String> = lock(&self.returns)
            .rooms
            .keys()
            .filter(|room| only.is_none_or(|only| only.contains(&self.key("room", room))))
            .cloned()
            .collect();
        let mut unread = 0;
        for room in rooms {
            // Read now, not when the pass began: an earlier room's fetch may have taken a while.
            let known = lock(&self.returns).rooms.get(&room).and_then(|own| {
                if own.epoch.is_empty() {
                    own.seed.clone()
                } else {
                    Some((own.epoch.clone(), own.offset))
                }
            });
            let Some((epoch, last)) = known else { continue };
            let mut cmd = redis::cmd("MGET");
            cmd.arg(self.key("epoch", &room)).arg(self.key("seq", &room));
            let now = tokio::time::timeout(
                self.config.command_timeout,
                self.query::<(Option<String>, Option<u64>)>(&cmd),
            )
            .await;
            match now {
                Ok(Ok((Some(now), Some(top)))) if now == epoch && top > last => {
                    self.catch_up(local, &room, &epoch, last + 1, top).await;
                }
                Ok(Ok((Some(now), Some(top)))) if now != epoch && top > 0 => {
                    self.catch_up(local, &room, &now, 1, top).await;
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => unread += 1,
            }
        }
        if unread > 0 {
            tracing::warn!(
                unread,
                "redis: rooms' positions not read once subscribed again; they catch up with their next publication"
            );
        }
    }

    /// A join read `room`'s position: until this node receives a publication of the room, the
    /// first must follow the lowest position read (what a join that found the subscription
    /// down would otherwise miss, see [`Own::missing_from`]).
    fn seed(&self, room: &str, epoch: &str, offset: u64) {
        if !lock(&self.rooms).contains(&self.key("room", room)) {
            return;
        }
        let mut returns = lock(&self.returns);
        let own = returns.rooms.entry(room.to_owned()).or_default();
        if !own.epoch.is_empty() {
            return;
        }
        own.seed = match own.seed.take() {
            Some((seed, lowest)) if seed == epoch => Some((seed, lowest.min(offset))),
            _ => Some((epoch.to_owned(), offset)),
        };
    }

    /// Waits until pub/sub has been up once since the backend started, for at most a command
    /// timeout; at once after that.
    async fn started(&self) {
        if !*self.pubsub_started.borrow() {
            let mut started = self.pubsub_started.subscribe();
            let timeout = self.config.command_timeout;
            let _ = tokio::time::timeout(timeout, started.wait_for(|up| *up)).await;
        }
    }

    /// Gives a publication its number, in the order the publisher sends them (taken when it
    /// was queued, two publications queued at once from two threads could take their numbers
    /// in one order and their places in the other), and completes its command.
    fn stamp(&self, job: &mut Outgoing) {
        job.token = self.next_token.fetch_add(1, Ordering::Relaxed);
        job.losses = self.losses.load(Ordering::Acquire);
        job.tracked = self.subscribed.load(Ordering::Acquire)
            && lock(&self.rooms).contains(&job.channel)
            && !lock(&self.down).contains(&job.channel)
            && !lock(&self.joining).contains(&job.channel);
        let origin = format!("{}\n{}", self.node(), job.token);
        job.command = match &job.body {
            Body::Script(script) => {
                let mut command = script.clone();
                command.arg(origin);
                command
            }
            Body::Plain(except) => {
                let message = format!("p\n{origin}\n{except}\n\n\n{}", job.local.data());
                self.publish_cmd(job.channel.clone(), message)
            }
        };
    }

    /// A publication's outcome is in: what becomes of it for this node's members (see
    /// [`Returns`]). Runs in the publisher task, one publication after the other.
    fn settle(&self, job: &Outgoing, outcome: &Result<(), BackendError>) {
        let Some(local) = self.local() else { return };
        let refused = outcome.as_ref().is_err_and(|e| !matches!(e, BackendError::Timeout { .. }));
        let awaited = job.tracked && lock(&self.rooms).contains(&job.channel);
        if !refused && !awaited {
            // Not subscribed (yet) when it was sent, or no member here any more: nobody here
            // waits for it.
            return;
        }
        let mut returns = lock(&self.returns);
        // Under the lock, which `lost` counts under: a loss is either seen here or flushes
        // what this adds to `pending`.
        let lost = self.losses.load(Ordering::Acquire) != job.losses;
        let Returns { rooms, pending } = &mut *returns;
        let room = job.local.room();
        let own = if job.tracked {
            rooms.entry(room.to_owned()).or_default()
        } else {
            match rooms.get_mut(room) {
                Some(own) => own,
                None => {
                    local.deliver(&job.local);
                    return;
                }
            }
        };
        if job.token <= own.back {
            // Back already (Redis ran it, whatever the answer said).
        } else if refused || lost {
            // Redis did not take it, or the subscription it would come back through is gone:
            // here, now, after the room's pending ones.
            let flushed = own.flush(local, job.token, Some(&job.local));
            *pending = pending.saturating_sub(flushed);
        } else {
            own.pending.insert(job.token, job.local.clone());
            *pending += 1;
            if *pending > self.config.publish_queue {
                // Bounded: every pending one, in every room, goes here now (their copies are
                // dropped when they come back).
                for own in rooms.values_mut() {
                    if let Some((&last, _)) = own.pending.last_key_value() {
                        own.flush(local, last, None);
                    }
                }
                *pending = 0;
            }
        }
    }

    /// The subscriptions are lost, or Redis stopped answering (a failed heartbeat): what is
    /// pending may never come back, and goes to this node's members now (a copy that comes
    /// back after all is dropped). A publication refused from here on is delivered after the
    /// pending ones of its room all the same (see [`Shared::settle`]).
    fn lost(&self) {
        let mut returns = lock(&self.returns);
        self.losses.fetch_add(1, Ordering::AcqRel);
        if let Some(local) = self.local() {
            for own in returns.rooms.values_mut() {
                if let Some((&last, _)) = own.pending.last_key_value() {
                    own.flush(local, last, None);
                }
            }
        }
        returns.pending = 0;
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

    /// Registers a session (see [`OPEN_SCRIPT`]): whether it was admitted, and the node of the
    /// session it replaced when that node is live.
    async fn open(
        &self,
        presence: &Presence,
        exclusive: bool,
        replaces: Option<&SessionId>,
    ) -> Result<(i64, String), BackendError> {
        let node = self.node();
        let user = self.key("user", &presence.user);
        let exclusive = if exclusive { "1" } else { "0" };
        let replaces = replaces.map_or("", SessionId::as_str);
        if !self.config.is_cluster() {
            // The heartbeat keys are `PREFIX:node:{NODE}`: the script reads them itself.
            let node_key = |n: &str| self.key("node", n);
            let (prefix, suffix) = node_key("\0").split_once('\0').map_or_else(
                || (String::new(), String::new()),
                |(p, s)| (p.to_owned(), s.to_owned()),
            );
            return redis::Script::new(OPEN_SCRIPT)
                .key(user)
                .arg(presence.session.as_str())
                .arg(node)
                .arg(exclusive)
                .arg(prefix)
                .arg(replaces)
                .arg(suffix)
                .invoke_async(&mut self.conn())
                .await
                .map_err(failed);
        }
        let mut live: HashSet<String> = HashSet::from([node.to_owned()]);
        let mut dead: HashSet<String> = HashSet::new();
        let list = |nodes: &HashSet<String>| {
            nodes.iter().fold(String::from("\n"), |list, n| list + n + "\n")
        };
        for _ in 0..OPEN_ROUNDS {
            let reply: Vec<redis::Value> = redis::Script::new(OPEN_CLUSTER_SCRIPT)
                .key(&user)
                .arg(presence.session.as_str())
                .arg(node)
                .arg(exclusive)
                .arg(list(&live))
                .arg(replaces)
                .arg(list(&dead))
                .invoke_async(&mut self.conn())
                .await
                .map_err(failed)?;
            let strings = |values: &[redis::Value]| -> Vec<String> {
                values.iter().filter_map(|v| redis::from_redis_value_ref(v).ok()).collect()
            };
            match reply.split_first() {
                Some((status, rest)) => match redis::from_redis_value_ref::<i64>(status) {
                    Ok(2) => {
                        let unknown = strings(rest);
                        let found = self.live(unknown.clone()).await?;
                        for n in unknown {
                            if found.contains(&n) {
                                live.insert(n);
                            } else {
                                dead.insert(n);
                            }
                        }
                    }
                    Ok(admitted) => {
                        let replaced = strings(rest).into_iter().next().unwrap_or_default();
                        return Ok((admitted, replaced));
                    }
                    Err(err) => {
                        return Err(BackendError::Protocol {
                            backend: BACKEND,
                            detail: err.to_string().into(),
                        });
                    }
                },
                None => {
                    return Err(BackendError::Protocol {
                        backend: BACKEND,
                        detail: "an empty answer to a session's registration".into(),
                    });
                }
            }
        }
        Err(BackendError::Timeout {
            what: "a session's registration (its user's sessions kept changing)",
        })
    }

    /// Sends `pipe` (its commands' replies ignored) and waits for Redis to have run it all. A
    /// cluster gets its commands one by one, all at once (see [`each`]).
    async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<(), BackendError> {
        match &self.conn {
            Conn::Single(_) => pipe.query_async::<()>(&mut self.conn()).await.map_err(failed),
            Conn::Cluster(conn) => each(conn, pipe.cmd_iter(), None)
                .await
                .into_iter()
                .try_for_each(|reply| reply.map(drop).map_err(failed)),
        }
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
                    pipe.add_command(self.publish_cmd(self.key("room", &room), message)).ignore();
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
        // While pub/sub is down (Redis gone, or back but the subscriptions not yet restored),
        // a publication Redis accepted would reach the other nodes and never this node's
        // members, silently: the publisher refuses it and delivers it here (see `Returns`),
        // and the caller learns of the outage. The publisher, not this function, so that it
        // is refused after the publications ahead of it have their outcome, and this node's
        // members get them all in the order they were made.
        let local = Publication::encode(
            request.room,
            None,
            request.event,
            request.data,
            request.except.cloned(),
        )
        .map_err(|e| BackendError::Protocol { backend: BACKEND, detail: e.to_string().into() })?;
        let channel = self.key("room", request.room);
        let Some(queue) = self.publications.get() else {
            return Err(unavailable(
                "the redis backend runs no publisher (attached outside tokio)",
            ));
        };
        let except = request.except.map_or("", SessionId::as_str);
        let body = match request.recovery {
            Some(recovery) => {
                let room_json = serde_json::to_string(request.room).unwrap_or_default();
                let event_json = serde_json::to_string(request.event).unwrap_or_default();
                let window = recovery.window.as_millis() as u64;
                let mut command = redis::cmd("EVALSHA");
                command
                    .arg(PUBLISH.get_hash())
                    .arg(4)
                    .arg(self.key("seq", request.room))
                    .arg(self.key("epoch", request.room))
                    .arg(self.key("stream", request.room))
                    .arg(self.key("sent", request.room))
                    .arg(room_json)
                    .arg(event_json)
                    .arg(request.data.get())
                    .arg(except)
                    .arg(new_epoch())
                    .arg(recovery.history_size)
                    .arg(window)
                    .arg(window.max(86_400_000))
                    .arg(&channel)
                    .arg(self.publish_command());
                Body::Script(command)
            }
            None => Body::Plain(except.to_owned()),
        };
        let (done, outcome) = oneshot::channel();
        let command = redis::Cmd::new();
        let job =
            Outgoing { body, command, channel, token: 0, losses: 0, tracked: false, local, done };
        queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => {
                BackendError::Overloaded { backend: BACKEND, limit: self.config.publish_queue }
            }
            mpsc::error::TrySendError::Closed(_) => unavailable("the redis backend has stopped"),
        })?;
        Ok(outcome)
    }
}

/// The publisher: sends what is queued as one pipeline, waits for its replies, settles each
/// publication for this node's members (see [`Returns`]), hands each caller its own reply, and
/// starts over. One task on one connection, one pipeline at a time: publications reach Redis
/// in queue order, and while a pipeline is out the next one fills.
async fn publish_loop(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    loop {
        if queue.recv_many(&mut batch, MAX_PIPELINE).await == 0 {
            return;
        }
        for job in &mut batch {
            shared.stamp(job);
        }
        let replies = if !shared.subscribed.load(Ordering::Acquire) {
            // Checked here: pub/sub may have gone down while these waited.
            batch.iter().map(|_| Err(unavailable("pub/sub is down"))).collect()
        } else {
            match &shared.conn {
                Conn::Cluster(conn) => publish_each(&shared, conn, &batch).await,
                Conn::Single(_) => publish_pipeline(&shared, &batch).await,
            }
        };
        for (job, outcome) in batch.drain(..).zip(replies) {
            shared.settle(&job, &outcome);
            let _ = job.done.send(outcome);
        }
    }
}

/// [`publish_loop`]'s turn on a standalone Redis: the batch as one pipeline, each publication
/// with its own reply.
async fn publish_pipeline(shared: &Shared, batch: &[Outgoing]) -> Vec<Result<(), BackendError>> {
    let mut pipe = redis::pipe();
    // Redis may have restarted (its script cache empty) since the last pipeline: loading the
    // script again costs little, and the EVALSHAs behind it then always find it.
    let loads = batch.iter().any(|job| matches!(job.body, Body::Script(_)));
    if loads {
        pipe.cmd("SCRIPT").arg("LOAD").arg(PUBLISH_SCRIPT);
    }
    for job in batch {
        pipe.add_command(job.command.clone());
    }
    pipe.ignore_errors();
    match pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut shared.conn()).await {
        Ok(replies) => {
            let mut replies = replies.into_iter().skip(usize::from(loads));
            batch
                .iter()
                .map(|_| match replies.next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(err)) => Err(failed(err)),
                    None => Err(BackendError::Protocol {
                        backend: BACKEND,
                        detail: "a pipeline's reply was missing".into(),
                    }),
                })
                .collect()
        }
        Err(err) => {
            let err = failed(err);
            batch.iter().map(|_| Err(err.clone())).collect()
        }
    }
}

/// [`publish_loop`]'s turn on a cluster: one pipeline per room, all at once (see [`each`]),
/// each that runs the script headed by its `SCRIPT LOAD` (a node that has not the script yet,
/// new or restarted empty, then runs it as well). A room whose shard is down is refused at
/// once.
async fn publish_each(
    shared: &Shared,
    conn: &ClusterConnection,
    batch: &[Outgoing],
) -> Vec<Result<(), BackendError>> {
    let sent: Vec<usize> = {
        let down = lock(&shared.down);
        (0..batch.len()).filter(|&i| !down.contains(&batch[i].channel)).collect()
    };
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(PUBLISH_SCRIPT);
    let replies = each(conn, sent.iter().map(|&i| &batch[i].command), Some(&load)).await;
    let mut outcomes: Vec<Result<(), BackendError>> =
        batch.iter().map(|_| Err(unavailable("the room's shard is down"))).collect();
    for (i, reply) in sent.into_iter().zip(replies) {
        outcomes[i] = reply.map(drop).map_err(failed);
    }
    outcomes
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
                // Before what comes now: what went by while the subscription was down.
                shared.catch_up_rooms(None).await;
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
                shared.lost();
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
    let Some(client) = &shared.client else {
        return Err(unavailable("a cluster has no pub/sub connection of its own"));
    };
    let pubsub = tokio::time::timeout(shared.config.command_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| BackendError::Timeout { what: "the redis pub/sub connection" })?
        .map_err(failed)?;
    let (sink, stream) = pubsub.split();
    // The slot is held from the snapshot of the rooms until the sink is in it: a room added
    // meanwhile is either in the snapshot or subscribed by `Shared::subscribe` once it gets
    // the slot. (Taken after the snapshot, a room joined in between was never subscribed.)
    let mut slot = shared.sink.lock().await;
    let mut sink = Sink::Single(sink);
    subscribe_all(shared, &mut sink).await?;
    *slot = Some(sink);
    shared.subscribed.store(true, Ordering::Release);
    shared.pubsub_started.send_replace(true);
    Ok(stream)
}

/// Subscribes the fixed channels and every room with local members. The caller holds the
/// sink's slot (see [`connect_pubsub`]).
async fn subscribe_all(shared: &Shared, sink: &mut Sink) -> Result<(), BackendError> {
    for channel in &wanted_channels(shared) {
        sink.subscribe(channel).await.map_err(failed)?;
    }
    Ok(())
}

/// [`pubsub_loop`] on a cluster. Subscribes every wanted channel (sharded, each on its slot's
/// node); those whose shard does not answer go in `down`, and are tried again with backoff
/// while the others deliver. When a node's connection is lost, every channel counts as down
/// until subscribed again: a publication Redis takes meanwhile could miss this node.
async fn cluster_pubsub_loop(
    shared: Arc<Shared>,
    conn: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    let (first, longest) = shared.config.backoff;
    let mut backoff = first;
    // Whether some channel was down at the last attempt (for one log line per change).
    let mut was_down = false;
    let mut everything = true;
    loop {
        // The channels this round subscribes (again): what went by meanwhile is fetched for
        // those that are up after it, and only for those (a shard still down would make each
        // of its rooms wait out a timeout at every round).
        let trying: HashSet<String> = if everything {
            wanted_channels(&shared).into_iter().collect()
        } else {
            lock(&shared.down).clone()
        };
        let attempt = if everything {
            // The slot is held from the snapshot until the sink is in it (see `connect_pubsub`).
            let mut slot = shared.sink.lock().await;
            let wanted = wanted_channels(&shared);
            *lock(&shared.down) = wanted.iter().cloned().collect();
            let still = subscribe_each(&shared, &conn, wanted).await;
            *slot = Some(Sink::Cluster(conn.clone()));
            shared.subscribed.store(true, Ordering::Release);
            shared.pubsub_started.send_replace(true);
            still
        } else {
            let _slot = shared.sink.lock().await;
            let down: Vec<String> = lock(&shared.down).iter().cloned().collect();
            subscribe_each(&shared, &conn, down).await
        };
        everything = false;
        let back: HashSet<String> = {
            let down = lock(&shared.down);
            trying.into_iter().filter(|channel| !down.contains(channel)).collect()
        };
        if !back.is_empty() {
            shared.catch_up_rooms(Some(&back)).await;
        }
        match (attempt, was_down) {
            (Some(err), false) => {
                let down = lock(&shared.down).len();
                tracing::warn!(
                    down,
                    "redis: cluster pub/sub: channels of an unreachable shard ({err}); subscribing them again with backoff"
                );
                was_down = true;
            }
            (None, true) => {
                tracing::warn!("redis: cluster pub/sub: every channel subscribed again");
                was_down = false;
                backoff = first;
            }
            _ => {}
        }
        // Delivers until a connection is lost, or until it is time to try the channels down.
        let waiting = !lock(&shared.down).is_empty();
        let pause = tokio::time::sleep(if waiting { backoff } else { longest });
        tokio::pin!(pause);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return };
                    if !received_push(&shared, push).await {
                        everything = true;
                        break;
                    }
                    // What has arrived with it is delivered in the same turn (see
                    // `pubsub_loop`), up to a loss: what follows a loss is handled after it.
                    while let Ok(push) = pushes.try_recv() {
                        if !received_push(&shared, push).await {
                            everything = true;
                            break;
                        }
                    }
                    if everything {
                        break;
                    }
                }
                () = shared.retry.notified(), if !waiting => break,
                () = &mut pause, if waiting => {
                    backoff = (backoff * 2).min(longest);
                    break;
                }
            }
        }
        if everything {
            // Every channel counts as down at once (publications to them are refused) until
            // subscribed again: redis-rs reconnects, and subscribes again, by itself, and a
            // publication run before that would not come back.
            {
                let _slot = shared.sink.lock().await;
                *lock(&shared.down) = wanted_channels(&shared).into_iter().collect();
            }
            shared.lost();
            tracing::debug!("redis: a cluster node's connection was lost; subscribing again");
        }
    }
}

/// Every channel this node wants: the fixed ones, its inbox, its rooms'.
fn wanted_channels(shared: &Shared) -> Vec<String> {
    let mut channels: Vec<String> =
        ["user", "all", "req"].iter().map(|c| format!("{}:{c}", shared.config.prefix)).collect();
    channels.push(shared.key("inbox", shared.node()));
    channels.extend(lock(&shared.rooms).iter().cloned());
    channels
}

/// Subscribes each channel on its own, taking those that succeed out of `down`; the last
/// error, if some did not.
async fn subscribe_each(
    shared: &Shared,
    conn: &ClusterConnection,
    channels: Vec<String>,
) -> Option<BackendError> {
    let mut error = None;
    for channel in channels {
        match conn.clone().ssubscribe(&channel).await {
            Ok(()) => {
                lock(&shared.down).remove(&channel);
            }
            Err(err) => error = Some(failed(err)),
        }
    }
    error
}

/// One push from a cluster's connection; `false` when it tells of a lost connection.
async fn received_push(shared: &Shared, push: redis::PushInfo) -> bool {
    match push.kind {
        redis::PushKind::Disconnection => false,
        // Redis unsubscribes a sharded channel itself when its slot moves to another shard:
        // still wanted, it is down until subscribed again (where the slot is now).
        redis::PushKind::SUnsubscribe => {
            if let Some(channel) = push.data.first()
                && let Ok(channel) = redis::from_redis_value_ref::<String>(channel)
                && wanted_channels(shared).contains(&channel)
            {
                lock(&shared.down).insert(channel);
                shared.retry.notify_one();
            }
            true
        }
        redis::PushKind::SMessage | redis::PushKind::Message => {
            if let [channel, payload, ..] = push.data.as_slice()
                && let (Ok(channel), Ok(payload)) = (
                    redis::from_redis_value_ref::<String>(channel),
                    redis::from_redis_value_ref::<String>(payload),
                )
            {
                shared.received(&channel, payload).await;
            }
            true
        }
        _ => true,
    }
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
                // Redis does not answer: what this node published and is waiting for may
                // never come back (a host gone without closing the connections), and goes to
                // its members now.
                shared.lost();
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
        let pushes = lock(&self.shared.pushes).take();
        let pubsub = match (&self.shared.conn, pushes) {
            (Conn::Cluster(conn), Some(pushes)) => {
                runtime.spawn(cluster_pubsub_loop(self.shared.clone(), conn.clone(), pushes))
            }
            _ => runtime.spawn(pubsub_loop(self.shared.clone())),
        };
        tasks.push(pubsub.abort_handle());
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
            shared.started().await;
            match shared.publication(&request) {
                // What becomes of it for this node's members is the publisher's to settle.
                Ok(done) => {
                    done.await.unwrap_or_else(|_| Err(unavailable("the redis backend has stopped")))
                }
                // Never queued (the queue is full): here, now.
                Err(err) => {
                    deliver_locally(shared, &request);
                    Err(err)
                }
            }
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
            shared.seed(room, &epoch, top);
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
            shared.query(&shared.publish_cmd(channel, message)).await
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
            let (admitted, replaced_on) = shared.open(presence, exclusive, replaces).await?;
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
                    .query::<()>(&shared.publish_cmd(shared.key("inbox", &replaced_on), message))
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
            // A join right after the node started waits for pub/sub (a little): subscribed
            // later, what was published between the join's reading of the room's position and
            // the subscription would be a gap in the member's stream.
            self.shared.started().await;
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
                let mut returns = lock(&shared.returns);
                if let Some(own) = returns.rooms.remove(room) {
                    returns.pending = returns.pending.saturating_sub(own.pending.len());
                }
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
                        &shared.publish_cmd(format!("{}:req", shared.config.prefix), request),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_the_offsets_is_missing_from_the_last_one_received() {
        let mut own = Own::default();
        // Nothing known yet: no gap to fill.
        assert_eq!(own.missing_from("e1", 5), None);
        own.seed = Some(("e1".into(), 3));
        assert_eq!(own.missing_from("e1", 4), None);
        assert_eq!(own.missing_from("e1", 6), Some(4));
        assert!(!own.seen_before("e1", 4));
        assert_eq!(own.seed, None, "the first received replaces the seed");
        assert_eq!(own.missing_from("e1", 5), None);
        assert_eq!(own.missing_from("e1", 9), Some(5));
        // A new epoch started over at 1.
        assert_eq!(own.missing_from("e2", 1), None);
        assert_eq!(own.missing_from("e2", 3), Some(1));
    }

    #[test]
    fn a_plain_publication_is_repeated_at_or_below_its_origins_last_number() {
        let mut own = Own::default();
        assert!(!own.repeated("a", 5));
        assert!(own.repeated("a", 5));
        assert!(own.repeated("a", 4));
        assert!(!own.repeated("a", 6));
        assert!(!own.repeated("b", 1), "numbers are each node's own");
    }

    #[test]
    fn past_64_origins_the_record_of_plain_publications_starts_over() {
        let mut own = Own::default();
        for n in 0..64 {
            assert!(!own.repeated(&format!("node-{n}"), 7));
        }
        assert_eq!(own.plain.len(), 64);
        assert!(own.repeated("node-0", 7));
        assert!(!own.repeated("node-64", 7));
        assert_eq!(own.plain.len(), 1, "started over, with the new one");
        assert!(!own.repeated("node-0", 7), "forgotten");
    }
}
