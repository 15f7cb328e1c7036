//! The server's registry of connections: admission (the total and per-IP limits), a sender per
//! open connection for fan-out and shutdown, and the abort handle of each connection's task.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::StatusCode;
use palisade_conn::{ConnectionId, Sender};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::config::ServerBuilder;
use crate::decision::Rejection;

/// The connections of one server, and its settings.
pub(crate) struct State {
    pub(crate) config: Arc<ServerBuilder>,
    registry: Mutex<Registry>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) drained: Notify,
}

#[derive(Default)]
struct Registry {
    conns: HashMap<ConnectionId, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    ip: IpAddr,
    /// Set once the connection is open (handshakes in progress have none).
    sender: Option<Sender>,
    abort: Option<AbortHandle>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(config: Arc<ServerBuilder>) -> Self {
        Self {
            config,
            registry: Mutex::new(Registry::default()),
            shutting_down: AtomicBool::new(false),
            drained: Notify::new(),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection in, or says which limit refuses it. The connection is counted
    /// out when the returned guard drops.
    pub(crate) fn admit(
        self: &Arc<Self>,
        id: ConnectionId,
        ip: IpAddr,
    ) -> Result<Admitted, Box<Rejection>> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Box::new(
                Rejection::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_retry_after(self.config.retry_after)
                    .with_text("Server is shutting down; try again later.\n")
                    .with_log_reason("server shutting down"),
            ));
        }
        let mut reg = self.registry();
        if reg.conns.len() >= self.config.max_connections {
            return Err(Box::new(
                Rejection::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_retry_after(self.config.retry_after)
                    .with_text("Server is at its connection limit; try again later.\n")
                    .with_log_reason("connection limit reached"),
            ));
        }
        let per_ip = reg.per_ip.entry(ip).or_insert(0);
        if *per_ip >= self.config.max_connections_per_ip {
            return Err(Box::new(
                Rejection::new(StatusCode::TOO_MANY_REQUESTS)
                    .with_retry_after(self.config.retry_after)
                    .with_text("Too many connections from your address; try again later.\n")
                    .with_log_reason("per-IP connection limit reached"),
            ));
        }
        *per_ip += 1;
        reg.conns.insert(id, Entry { ip, sender: None, abort: None });
        Ok(Admitted { state: self.clone(), id })
    }

    fn release(&self, id: ConnectionId) {
        let mut reg = self.registry();
        if let Some(entry) = reg.conns.remove(&id)
            && let Some(n) = reg.per_ip.get_mut(&entry.ip)
        {
            *n -= 1;
            if *n == 0 {
                reg.per_ip.remove(&entry.ip);
            }
        }
        if reg.conns.is_empty() {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn set_sender(&self, id: ConnectionId, sender: Sender) {
        if let Some(entry) = self.registry().conns.get_mut(&id) {
            entry.sender = Some(sender);
        }
    }

    pub(crate) fn set_abort(&self, id: ConnectionId, abort: AbortHandle) {
        if let Some(entry) = self.registry().conns.get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    /// Connections counted in (handshakes included).
    pub(crate) fn len(&self) -> usize {
        self.registry().conns.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.registry().conns.is_empty()
    }

    pub(crate) fn senders(&self) -> Vec<Sender> {
        self.registry().conns.values().filter_map(|e| e.sender.clone()).collect()
    }

    fn sender(&self, id: ConnectionId) -> Option<Sender> {
        self.registry().conns.get(&id).and_then(|e| e.sender.clone())
    }

    /// Aborts every task still registered; returns how many.
    pub(crate) fn abort_all(&self) -> usize {
        let reg = self.registry();
        for entry in reg.conns.values() {
            if let Some(a) = &entry.abort {
                a.abort();
            }
        }
        reg.conns.len()
    }
}

/// Counts a connection out when dropped, however its task ends.
#[derive(Debug)]
pub(crate) struct Admitted {
    state: Arc<State>,
    id: ConnectionId,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.release(self.id);
    }
}

/// The open connections of a server, for fan-out and supervision: a handler argument, and
/// [`crate::Server::connections`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connections {
    pub(crate) state: Arc<State>,
}

impl Connections {
    /// Connections counted in now, handshakes in progress included.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// A sender for each open connection (a snapshot).
    pub fn senders(&self) -> Vec<Sender> {
        self.state.senders()
    }

    /// The sender of connection `id`, while it is open.
    pub fn get(&self, id: ConnectionId) -> Option<Sender> {
        self.state.sender(id)
    }
}
