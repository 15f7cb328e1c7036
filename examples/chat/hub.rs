//! The chat's shared state, in memory: who is online (one session per name), the rooms with
//! their members, and each room's recent messages numbered by offset, so that a client that
//! lost its connection can ask for what came after the last offset it saw.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use palisade::Message;
use palisade::json::JsonSender;
use serde::Serialize;

use crate::auth::Name;

/// How many messages a room keeps for recovery.
pub(crate) const HISTORY: usize = 200;

// ANCHOR: pushes
/// A message posted in a room, as pushed in `message` events and returned by `join`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Posted {
    pub(crate) room: String,
    /// Counts up by 1 in each room, from where [`Hub`] says; the recovery offset.
    pub(crate) offset: u64,
    pub(crate) from: Name,
    pub(crate) text: String,
}

/// The answer to `join`: the members, and the messages after `since` (the last ones when
/// `since` is absent). `complete` is false when some messages after `since` are no longer
/// kept.
#[derive(Debug, Serialize)]
pub(crate) struct Joined {
    pub(crate) room: String,
    pub(crate) members: Vec<Name>,
    pub(crate) messages: Vec<Posted>,
    pub(crate) complete: bool,
}
// ANCHOR_END: pushes

struct Room {
    members: BTreeSet<Name>,
    log: VecDeque<Posted>,
    last: u64,
}

#[derive(Default)]
struct State {
    online: BTreeMap<Name, JsonSender>,
    rooms: HashMap<String, Room>,
}

/// The rooms and the sessions; a lock held only to read and change them, never across an
/// await.
pub(crate) struct Hub {
    state: Mutex<State>,
    /// Where the offsets of this run start: the start time in microseconds since the epoch.
    /// History lives in memory and ends with the process, but offsets keep growing across
    /// restarts (unless a room gets more than one message per microsecond of uptime), so a
    /// client's offset from a previous run is older than anything this run has, and asks for
    /// everything it kept (`complete: false`), never for a wrong slice.
    base: u64,
}

/// A push, encoded once for all its recipients.
fn encode<T: Serialize>(event: &str, data: &T) -> Message {
    let text = serde_json::json!({ "event": event, "data": data }).to_string();
    Message::text(text)
}

/// Sends without waiting: a recipient whose write buffer is full (a client that stopped
/// reading) loses the push rather than holding up everyone else.
fn push(to: &[JsonSender], message: &Message) {
    for sender in to {
        if let Err(err) = sender.raw().try_send(message.clone()) {
            tracing::debug!(connection = %sender.id(), %err, "push not sent");
        }
    }
}

impl Hub {
    pub(crate) fn new() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let base = now.map(|d| d.as_micros() as u64).unwrap_or_default();
        Self { state: Mutex::default(), base }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn is_online(&self, name: &Name) -> bool {
        self.lock().online.contains_key(name)
    }

    /// Registers a session; false if the name has one already.
    pub(crate) fn connect(&self, name: &Name, sender: JsonSender) -> bool {
        let everyone = {
            let mut state = self.lock();
            if state.online.contains_key(name) {
                return false;
            }
            state.online.insert(name.clone(), sender);
            state.online.values().cloned().collect::<Vec<_>>()
        };
        self.push_presence(&everyone);
        true
    }

    /// Ends a session: it leaves its rooms (with notices) and everyone's presence list.
    pub(crate) fn disconnect(&self, name: &Name) {
        let (left, everyone) = {
            let mut state = self.lock();
            state.online.remove(name);
            let rooms: Vec<String> = state
                .rooms
                .iter()
                .filter(|(_, room)| room.members.contains(name))
                .map(|(id, _)| id.clone())
                .collect();
            (rooms, state.online.values().cloned().collect::<Vec<_>>())
        };
        for room in left {
            self.leave(name, &room);
        }
        self.push_presence(&everyone);
    }

    fn push_presence(&self, to: &[JsonSender]) {
        let online: Vec<Name> = self.lock().online.keys().cloned().collect();
        push(to, &encode("presence", &serde_json::json!({ "online": online })));
    }

    fn senders(state: &State, names: impl IntoIterator<Item = Name>) -> Vec<JsonSender> {
        names.into_iter().filter_map(|n| state.online.get(&n).cloned()).collect()
    }

    /// Joins `room` (again, after a reconnection: `since` is the last offset seen).
    pub(crate) fn join(&self, name: &Name, room: &str, since: Option<u64>) -> Joined {
        let (joined, others) = {
            let mut state = self.lock();
            let base = self.base;
            let entry = state.rooms.entry(room.to_owned()).or_insert_with(|| Room {
                members: BTreeSet::new(),
                log: VecDeque::new(),
                last: base,
            });
            let newcomer = entry.members.insert(name.clone());
            let (messages, complete) = match since {
                Some(since) => {
                    let first_kept = entry.log.front().map_or(entry.last + 1, |m| m.offset);
                    let messages = entry.log.iter().filter(|m| m.offset > since).cloned().collect();
                    (messages, since + 1 >= first_kept)
                }
                None => (entry.log.iter().rev().take(50).rev().cloned().collect(), true),
            };
            let members: Vec<Name> = entry.members.iter().cloned().collect();
            let others = if newcomer {
                let names = members.iter().filter(|m| *m != name).cloned().collect::<Vec<_>>();
                Self::senders(&state, names)
            } else {
                Vec::new()
            };
            (Joined { room: room.to_owned(), members, messages, complete }, others)
        };
        push(&others, &encode("joined", &serde_json::json!({ "room": room, "name": name })));
        joined
    }

    /// Leaves `room`; false if `name` was not in it.
    pub(crate) fn leave(&self, name: &Name, room: &str) -> bool {
        let others = {
            let mut state = self.lock();
            let Some(entry) = state.rooms.get_mut(room) else { return false };
            if !entry.members.remove(name) {
                return false;
            }
            let names: Vec<Name> = entry.members.iter().cloned().collect();
            Self::senders(&state, names)
        };
        push(&others, &encode("left", &serde_json::json!({ "room": room, "name": name })));
        true
    }

    /// Posts to `room`, to every member (the sender too); `None` if `name` is not a member.
    pub(crate) fn post(&self, name: &Name, room: &str, text: String) -> Option<u64> {
        let (posted, members) = {
            let mut state = self.lock();
            let entry = state.rooms.get_mut(room).filter(|r| r.members.contains(name))?;
            entry.last += 1;
            let posted =
                Posted { room: room.to_owned(), offset: entry.last, from: name.clone(), text };
            entry.log.push_back(posted.clone());
            if entry.log.len() > HISTORY {
                entry.log.pop_front();
            }
            let names: Vec<Name> = entry.members.iter().cloned().collect();
            (posted, Self::senders(&state, names))
        };
        push(&members, &encode("message", &posted));
        Some(posted.offset)
    }

    /// Sends a private message; false if `to` is not online.
    pub(crate) fn private(&self, from: &Name, to: &Name, text: &str) -> bool {
        let Some(recipient) = self.lock().online.get(to).cloned() else { return false };
        let data = serde_json::json!({ "from": from, "to": to, "text": text });
        push(&[recipient], &encode("private", &data));
        true
    }

    /// Tells the other members of `room` that `name` is typing.
    pub(crate) fn typing(&self, name: &Name, room: &str) {
        let others = {
            let state = self.lock();
            let Some(entry) = state.rooms.get(room).filter(|r| r.members.contains(name)) else {
                return;
            };
            let names: Vec<Name> = entry.members.iter().filter(|m| *m != name).cloned().collect();
            Self::senders(&state, names)
        };
        push(&others, &encode("typing", &serde_json::json!({ "room": room, "name": name })));
    }

    /// Every open session, for the restart notice.
    pub(crate) fn sessions(&self) -> Vec<JsonSender> {
        self.lock().online.values().cloned().collect()
    }
}
