//! A member: one session of a user, its bounded queue, and the task that writes the queue to
//! the connection.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use palisade_conn::Sender;
use palisade_error::CloseCode;
use palisade_json::JsonSender;
use palisade_proto::message::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use crate::config::SlowConsumer;

/// The close reason sent to a member closed by [`SlowConsumer::Close`].
const SLOW_REASON: &str = "slow consumer";

/// A session's name, unique across nodes: the node's name and the connection's number
/// (`"n3f9a0c1-17"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// The session id of connection `conn` on node `node`.
    pub fn new(node: &str, conn: u64) -> Self {
        Self(format!("{node}-{conn}").into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node part: everything before the last `-`.
    pub fn node(&self) -> &str {
        self.0.rsplit_once('-').map_or(&self.0, |(node, _)| node)
    }
}

impl From<String> for SessionId {
    fn from(id: String) -> Self {
        Self(id.into())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One member of a presence list: who, which session, and the metadata the server gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Presence {
    /// The user's name.
    pub user: String,
    /// The session (a user may have several).
    pub session: SessionId,
    /// What the server attached to the session at [`Rooms::connect`](crate::Rooms::connect).
    pub meta: Value,
}

impl Presence {
    /// A presence entry.
    pub fn new(user: impl Into<String>, session: SessionId, meta: Value) -> Self {
        Self { user: user.into(), session, meta }
    }
}

/// A handle on one session in the rooms registry: its user, metadata and queue. Cheap to
/// clone; what [`Rooms::join`](crate::Rooms::join) and the authorisation hook are given.
#[derive(Clone)]
pub struct Member(pub(crate) Arc<MemberInner>);

pub(crate) struct MemberInner {
    pub(crate) user: Arc<str>,
    pub(crate) session: SessionId,
    pub(crate) meta: Value,
    pub(crate) sender: JsonSender,
    pub(crate) outbox: Arc<Outbox>,
    /// The rooms the session is in.
    pub(crate) rooms: Mutex<BTreeSet<Arc<str>>>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("user", &self.0.user)
            .field("session", &self.0.session)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// The user's name.
    pub fn user(&self) -> &str {
        &self.0.user
    }

    /// The session's id.
    pub fn session(&self) -> &SessionId {
        &self.0.session
    }

    /// The metadata given at connect.
    pub fn meta(&self) -> &Value {
        &self.0.meta
    }

    /// The member's presence entry.
    pub fn presence(&self) -> Presence {
        Presence::new(&*self.0.user, self.0.session.clone(), self.0.meta.clone())
    }

    /// The rooms the session is in.
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.0.rooms).iter().map(|r| r.to_string()).collect()
    }

    /// The JSON sender of the session's connection (for requests of its own; messages sent
    /// through it do not wait in the member's queue).
    pub fn sender(&self) -> &JsonSender {
        &self.0.sender
    }

    /// The queue's counters.
    pub fn stats(&self) -> MemberStats {
        self.0.outbox.stats()
    }

    /// Queues a frame for the member, after whatever room traffic is queued already, under
    /// the slow-consumer policy.
    pub(crate) fn push(&self, message: Message) {
        self.0.outbox.push(message);
    }
}

/// A member's queue counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStats {
    /// Messages waiting now.
    pub queued: usize,
    /// The most that ever waited at once (never above the capacity).
    pub max_queued: usize,
    /// Messages dropped by the slow-consumer policy.
    pub dropped: u64,
    /// Whether the slow-consumer policy closed the member.
    pub closed_slow: bool,
}

/// A bounded queue of frames for one connection, written by its own task ([`write_loop`]):
/// a publisher only pushes, so a member that stops reading delays nobody.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
    capacity: usize,
    policy: SlowConsumer,
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<Message>,
    /// While above 0 the writer waits: a join's reply must go out before the room's traffic.
    holds: u32,
    /// The slow-consumer policy closed the member: the writer closes the connection.
    close: Option<CloseCode>,
    /// The session ended: the writer stops.
    ended: bool,
    stats: MemberStats,
}

/// What the writer does next.
enum Next {
    /// Write what is now in the writer's batch.
    Write,
    Close(CloseCode),
    End,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, policy: SlowConsumer) -> Self {
        Self {
            state: Mutex::new(OutboxState::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            policy,
        }
    }

    fn state(&self) -> MutexGuard<'_, OutboxState> {
        lock(&self.state)
    }

    pub(crate) fn push(&self, message: Message) {
        let mut state = self.state();
        if state.ended || state.close.is_some() {
            return;
        }
        if state.queue.len() >= self.capacity {
            match self.policy {
                SlowConsumer::DropOldest => {
                    state.queue.pop_front();
                    state.stats.dropped += 1;
                }
                SlowConsumer::DropNewest => {
                    state.stats.dropped += 1;
                    return;
                }
                SlowConsumer::Close(code) => {
                    // Its memory goes at once; the close frame follows whatever the
                    // connection is writing now.
                    state.stats.dropped += state.queue.len() as u64 + 1;
                    state.queue = VecDeque::new();
                    state.close = Some(code);
                    state.stats.closed_slow = true;
                    drop(state);
                    self.notify.notify_one();
                    return;
                }
            }
        }
        // The writer takes the whole queue at once: a queue that was not empty has a wake-up
        // on its way already.
        let wake = state.queue.is_empty();
        state.queue.push_back(message);
        state.stats.max_queued = state.stats.max_queued.max(state.queue.len());
        drop(state);
        if wake {
            self.notify.notify_one();
        }
    }

    /// Holds the writer until the guard is dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        self.state().holds += 1;
        Hold(Arc::clone(self))
    }

    /// Stops the writer (the session ended).
    pub(crate) fn end(&self) {
        self.state().ended = true;
        self.notify.notify_one();
    }

    pub(crate) fn stats(&self) -> MemberStats {
        let state = self.state();
        MemberStats { queued: state.queue.len(), ..state.stats }
    }

    /// Waits for something to do. With `Next::Write`, the queue is in `batch` (which must
    /// come in empty): the two buffers trade places, so neither side allocates per batch.
    async fn next(&self, batch: &mut VecDeque<Message>) -> Next {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.state();
                if let Some(code) = state.close {
                    return Next::Close(code);
                }
                if state.ended {
                    return Next::End;
                }
                if state.holds == 0 && !state.queue.is_empty() {
                    // Everything queued goes out in one turn: several frames per write.
                    std::mem::swap(&mut state.queue, batch);
                    return Next::Write;
                }
            }
            notified.await;
        }
    }
}

/// Keeps a member's writer waiting while it lives.
pub(crate) struct Hold(Arc<Outbox>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.state().holds -= 1;
        self.0.notify.notify_one();
    }
}

/// How many queued messages' room the writer keeps between batches.
const KEPT_BATCH: usize = 64;

/// Writes a member's queue to its connection until the session or the connection ends.
pub(crate) async fn write_loop(outbox: Arc<Outbox>, sender: Sender) {
    let mut batch = VecDeque::new();
    loop {
        match outbox.next(&mut batch).await {
            Next::Write => {}
            Next::Close(code) => {
                tracing::debug!(conn = %sender.id(), %code, "rooms: closing a slow consumer");
                let _ = sender.close(code, SLOW_REASON).await;
                return;
            }
            Next::End => return,
        };
        // Everything that waited together leaves together, in one gathered write.
        if sender.send_all(batch.drain(..)).await.is_err() {
            // The connection is over; its handler sees why.
            return;
        }
        // An idle member keeps no more than a small buffer after a burst (a large batch costs
        // one allocation, spread over its many messages).
        batch.shrink_to(KEPT_BATCH);
    }
}

/// Locks `mutex`, whatever panicked while holding it: every critical section here leaves the
/// data consistent (single inserts, removals and counters).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &Outbox) -> Vec<Message> {
        std::mem::take(&mut outbox.state().queue).into_iter().collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_within_capacity() {
        let outbox = Outbox::new(3, SlowConsumer::DropOldest);
        for i in 0..10 {
            outbox.push(Message::text(i.to_string()));
        }
        let stats = outbox.stats();
        assert_eq!((stats.queued, stats.max_queued, stats.dropped), (3, 3, 7));
        assert_eq!(drain(&outbox), ["7", "8", "9"].map(Message::text));
    }

    #[test]
    fn drop_newest_keeps_the_oldest_within_capacity() {
        let outbox = Outbox::new(3, SlowConsumer::DropNewest);
        for i in 0..10 {
            outbox.push(Message::text(i.to_string()));
        }
        assert_eq!(outbox.stats().dropped, 7);
        assert_eq!(drain(&outbox), ["0", "1", "2"].map(Message::text));
    }

    #[test]
    fn close_drops_the_queue_and_refuses_more() {
        let outbox = Outbox::new(2, SlowConsumer::Close(CloseCode::POLICY_VIOLATION));
        for i in 0..5 {
            outbox.push(Message::text(i.to_string()));
        }
        let stats = outbox.stats();
        assert!(stats.closed_slow);
        assert_eq!((stats.queued, stats.dropped), (0, 3));
        assert_eq!(outbox.state().close, Some(CloseCode::POLICY_VIOLATION));
    }

    #[test]
    fn session_ids_name_their_node() {
        let id = SessionId::new("n-abc", 17);
        assert_eq!(id.as_str(), "n-abc-17");
        assert_eq!(id.node(), "n-abc");
    }
}
