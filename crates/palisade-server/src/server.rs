//! The server: its accept loops, the decision for mounted connections, its registry and its
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Request;
use palisade_conn::ConnectionId;
use palisade_error::CloseCode;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::accept::{accept_loop, connection_span};
use crate::config::ServerBuilder;
use crate::decide::{self, Head, Upgrade, error_response, log_refusal, rejection_response};
use crate::registry::{Connections, State};

/// A WebSocket server. Build it with [`Server::builder`], then either [`Server::bind`] (its
/// own accept loop) or [`Server::decide`] for requests another HTTP server received (hyper,
/// axum). Either way its connections share one registry, one set of limits and one shutdown.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<State>,
}

impl Server {
    /// A builder with safe defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    pub(crate) fn from_config(config: ServerBuilder) -> Self {
        Self { state: Arc::new(State::new(Arc::new(config))) }
    }

    /// Binds `addr` (port 0 picks a free port) and starts accepting in the background.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> std::io::Result<Running> {
        let listener = TcpListener::bind(addr).await?;
        self.serve([listener])
    }

    /// Starts accepting on listeners bound by the caller (several addresses, say). Fails with
    /// `InvalidInput` when given none.
    pub fn serve(
        &self,
        listeners: impl IntoIterator<Item = TcpListener>,
    ) -> std::io::Result<Running> {
        let mut addrs = Vec::new();
        let mut loops = Vec::new();
        for listener in listeners {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            tracing::info!(%addr, "listening");
            loops.push(tokio::spawn(accept_loop(listener, self.state.clone())).abort_handle());
        }
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "Server::serve needs at least one listener",
            ));
        }
        Ok(Running { server: self.clone(), addrs, loops })
    }

    /// Judges an upgrade request that another HTTP server has read (its head; the body is
    /// ignored) from `peer`, with every policy of the accept loop: connection limits, head
    /// limits, the HTTP hook, routing, origin, subprotocols, the handshake hook and the
    /// handler's arguments. On [`Upgrade::Accept`], send its 101 response and serve the
    /// upgraded stream with [`crate::PendingConnection::serve`]; on [`Upgrade::Respond`], send
    /// that response. A request whose extensions hold an [`crate::ExtendedConnect`] is HTTP/2's
    /// form of the handshake (RFC 8441), accepted with 200 instead of 101.
    pub async fn decide<B>(&self, request: Request<B>, peer: SocketAddr) -> Upgrade {
        let id = ConnectionId::next();
        let span = connection_span(id, peer);
        let state = &self.state;
        async move {
            let admitted = match state.admit(id, peer.ip()) {
                Ok(admitted) => admitted,
                Err(rejection) => {
                    tracing::info!(status = rejection.status.as_u16(), reason = %rejection.reason, "connection refused");
                    return Upgrade::Respond(rejection_response(
                        &rejection,
                        state.config.retry_after,
                    ));
                }
            };
            let (parts, _) = request.into_parts();
            let head = match Head::parsed(Request::from_parts(parts, ()), peer, &state.config.head_limits) {
                Ok(head) => head,
                Err(err) => {
                    log_refusal(&err);
                    return Upgrade::Respond(error_response(&err, state.config.retry_after));
                }
            };
            // A mount writes refusals itself: the count ends with the decision.
            let mut admitted = Some(admitted);
            let deciding = decide::decide(state, &mut admitted, id, head);
            match tokio::time::timeout(state.config.handshake_timeout, deciding).await {
                Ok(upgrade) => upgrade,
                Err(_) => {
                    let err = palisade_error::Error::timeout(palisade_error::TimeoutPhase::Handshake);
                    log_refusal(&err);
                    Upgrade::Respond(error_response(&err, state.config.retry_after))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The open connections, for fan-out and supervision.
    pub fn connections(&self) -> Connections {
        Connections { state: self.state.clone() }
    }

    /// Graceful shutdown of every connection of this server, its accept loops' and mounted
    /// ones alike: refuse new ones (503), send 1001 Going Away to every open connection, wait
    /// up to `grace` for them to end, then abort the rest.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownSummary {
        let state = &self.state;
        state.shutting_down.store(true, Ordering::Release);
        let total = state.len();
        tracing::info!(connections = total, "shutting down");
        for sender in state.senders() {
            tokio::spawn(async move {
                let _ = sender.close(CloseCode::GOING_AWAY, "server shutting down").await;
            });
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let drained = state.drained.notified();
            if state.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                break;
            }
        }
        let aborted = state.abort_all();
        let summary = ShutdownSummary { closed: total.saturating_sub(aborted), aborted };
        tracing::info!(closed = summary.closed, aborted = summary.aborted, "shut down");
        summary
    }
}

/// A server that is accepting connections on its own listeners.
#[derive(Debug)]
pub struct Running {
    server: Server,
    addrs: Vec<SocketAddr>,
    loops: Vec<AbortHandle>,
}

/// What a graceful shutdown achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownSummary {
    /// Connections that ended within the grace period.
    pub closed: usize,
    /// Connections aborted when the grace period ran out.
    pub aborted: usize,
}

impl Running {
    /// The bound addresses (at least one).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // `Server::serve` refuses an empty set of listeners.
        self.addrs[0]
    }

    /// Connections open now, handshakes included.
    pub fn connections(&self) -> usize {
        self.server.state.len()
    }

    /// The server, for its registry ([`Server::connections`]) or to mount it elsewhere too.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Graceful shutdown: stop accepting, then [`Server::shutdown`].
    pub async fn shutdown(self, grace: Duration) -> ShutdownSummary {
        for l in &self.loops {
            l.abort();
        }
        self.server.shutdown(grace).await
    }
}

#[cfg(test)]
mod tests {
    use palisade_conn::WebSocket;
    use tokio::net::TcpStream;

    use super::*;

    /// Every open connection holds its task's future; boxing the parts that run once keeps it
    /// small (it was 4.5 KB while the refusal's 4 KiB drain buffer and the protocol state,
    /// built in place before being moved to the heap, had room in it).
    #[tokio::test]
    async fn connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let server = Server::builder().fallback(|_ws: WebSocket| async {}).build();
        let state = server.state.clone();
        let id = ConnectionId::next();
        let admitted = state.admit(id, peer.ip());
        let task = crate::accept::connection_task(state, admitted, stream, peer, id);
        let size = std::mem::size_of_val(&task);
        // 392 bytes when this was written (down from 4,512); 456 since it also drives the
        // handler and registers a sender.
        assert!(size <= 512, "the connection task's future is {size} bytes");
    }

    #[tokio::test]
    async fn serve_without_listeners_is_an_error_not_a_panic() {
        let server = Server::builder().fallback(|_ws: WebSocket| async {}).build();
        let err = server.serve([]).expect_err("no listener");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
