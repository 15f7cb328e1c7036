//! One accepted connection's life after the 101 response: the socket, its place in the
//! registry, the handler (driven while it does not receive, panics contained), the close its
//! ending calls for, and the log line at the end. The same for the accept loop and for
//! connections upgraded by another HTTP server.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use palisade_conn::{Sender, WebSocket};
use palisade_error::{CloseCode, CloseFrame};
use palisade_proto::Role;
use palisade_proto::connection::Connection;
use palisade_proto::deflate::{Deflate, DeflateParams};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Level;

use crate::config::ServerBuilder;
use crate::decide::PendingConnection;
use crate::handler::{BoxFuture, Closing, Ending, close_for};
use crate::registry::{Admitted, State};

/// A connection whose socket is open and registered, its handler ready to run. Built apart
/// from the future that runs it, so that the future holds only this (every open connection
/// keeps that future for its life; `connection_task_stays_small`).
pub(crate) struct Live {
    state: Arc<State>,
    admitted: Admitted,
    sender: Sender,
    running: Option<BoxFuture<Ending>>,
    close_now: Option<CloseFrame>,
    opened: Instant,
}

/// Opens the connection of `pending` on `io`, where the 101 response has been sent.
pub(crate) fn open<S>(pending: PendingConnection, io: S, leftover: &[u8]) -> Live
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let opened = Instant::now();
    let PendingConnection { state, admitted, id, info, prepared, compression, close_now, .. } =
        pending;
    let socket = open_socket(&state.config, compression, id, io, leftover);
    let sender = socket.sender();
    // The server closes the connection itself once the handler returns, with the code its
    // return calls for; the handler dropping its socket must not close it first.
    sender.supervise();
    state.set_sender(id, sender.clone());
    // Registered after a shutdown took its snapshot of senders: it gets its 1001 here.
    let close_now = match close_now {
        None if state.shutting_down.load(std::sync::atomic::Ordering::Acquire) => {
            Some(CloseFrame::lossy(CloseCode::GOING_AWAY, "server shutting down"))
        }
        other => other,
    };
    tracing::info!(subprotocol = info.subprotocol.as_deref().unwrap_or(""), "connection open");
    let running = match close_now {
        Some(_) => None,
        None => Some((prepared.0)(socket)),
    };
    Live { state, admitted, sender, running, close_now, opened }
}

impl Live {
    /// Runs the handler, driving the connection while it does not receive, then closes as its
    /// ending calls for and logs the end.
    pub(crate) async fn serve(mut self) {
        let sender = &self.sender;
        let opened = self.opened;
        let Some(running) = self.running.take() else {
            let Live { admitted, close_now, .. } = self;
            if let Some(frame) = close_now {
                let _ = Box::pin(self.sender.close(frame.code(), frame.reason())).await;
            }
            log_close(&self.sender, opened, "closed by the handshake hook");
            drop(admitted);
            return;
        };
        // Driving keeps pings answered, keepalive running and the peer's close noticed while
        // the handler does not receive.
        let ending = sender.drive(AssertUnwindSafe(running).catch_unwind()).await;
        let ending = ending.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            tracing::error!(panic = %what, "handler panicked; closing with 1011");
            Ending { closing: Closing::Code(CloseCode::INTERNAL_ERROR), error: None }
        });
        // A handler that returns its connection's own failure (a reset, an EOF mid-frame, as
        // `recv` reported it) did not fail: the connection ended under it, and there is nobody
        // left to send 1011 to (STYLE: I/O errors send nothing, 1006 locally).
        let mut ending = ending;
        if matches!(ending.closing, Closing::Code(_)) && sender.is_closed() {
            ending.closing = Closing::Ended;
        }
        if let Some(error) = &ending.error {
            match &ending.closing {
                Closing::Ended => {
                    tracing::debug!(error = %error, "handler ended with the connection")
                }
                Closing::Frame(frame) => {
                    tracing::info!(code = frame.code().0, error = %error, "handler closed the connection")
                }
                Closing::Code(code) => {
                    tracing::warn!(code = code.0, error = %error, "handler failed")
                }
            }
        }
        if let Some(frame) = close_for(&ending, self.state.config.expose_handler_errors) {
            // The whole close handshake (bounded by the close timeout), so the close is clean
            // and the peer's reply is not met with a reset; a task the handler spawned that is
            // still receiving sees the end instead.
            let _ = Box::pin(sender.close(frame.code(), frame.reason())).await;
        } else if !sender.is_closed() {
            // The handler returned a closure, but this connection is not over. Either its close
            // is under way (a shutdown's 1001 went out, the peer's answer has not come): `close`
            // then sends nothing more and waits for the answer, within the close timeout, the
            // connection registered and driven meanwhile (let go of earlier, the socket would
            // be dropped with the peer's last bytes unread, a reset that can destroy our close
            // frame before the peer reads it). Or the closure was another connection's: then
            // this one is closed as for any failed handler.
            let code = CloseCode::INTERNAL_ERROR;
            let _ = Box::pin(sender.close(code, code.generic_reason())).await;
        }
        log_close(sender, opened, "handler returned");
    }
}

/// The connection over `io` once the handshake agreed on `compression`. Not inlined into the
/// task: the protocol state would be built in the task's future (rustc keeps room there for a
/// local moved out before an await) and then moved to the heap, doubling its cost.
fn open_socket<S>(
    config: &ServerBuilder,
    compression: Option<DeflateParams>,
    id: palisade_conn::ConnectionId,
    io: S,
    leftover: &[u8],
) -> WebSocket
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut conn = Connection::server(
        config.connection.protocol.clone(),
        tokio::time::Instant::now().into_std(),
    );
    if let (Some(params), Some(deflate)) = (compression, &config.compression) {
        conn.set_extension(Box::new(Deflate::new(Role::Server, params, deflate)));
    }
    WebSocket::from_parts_with_id(id, io, conn, config.connection.clone(), leftover)
}

/// Logs the end of a connection with both close frames, each under its own name: the one we
/// sent (`sent_code`, `sent_reason`) and the peer's (`received_code`, `received_reason`). A
/// peer's answer often echoes our code with an empty reason, so logging only one of them
/// would hide why we closed. A frame that never went out or never came is left out.
fn log_close(sender: &Sender, opened: Instant, why: &str) {
    let info = sender.close_info();
    let stats = sender.stats();
    let sent = info.sent.as_ref();
    let received = info.received.as_ref();
    let normal = |frame: &CloseFrame| {
        matches!(frame.code(), CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS)
    };
    // Info when every frame exchanged says all is well; warn for 1006 (no frame at all) and
    // for any other code either way.
    let level_info = (sent.is_some() || received.is_some())
        && sent.is_none_or(normal)
        && received.is_none_or(normal);
    macro_rules! close_event {
        ($lvl:expr) => {
            tracing::event!(
                $lvl,
                sent_code = sent.map(|f| f.code().0),
                sent_reason = sent.map(CloseFrame::reason),
                received_code = received.map(|f| f.code().0),
                received_reason = received.map(CloseFrame::reason),
                duration_ms = opened.elapsed().as_millis() as u64,
                messages_in = stats.messages_in,
                messages_out = stats.messages_out,
                bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out,
                why,
                "connection closed"
            )
        };
    }
    if level_info {
        close_event!(Level::INFO);
    } else {
        close_event!(Level::WARN);
    }
}
