//! The accept loop: TCP (and TLS) connections in, their request heads read within the limits
//! and the handshake timeout, the decision of `decide.rs` applied, responses written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use palisade_conn::ConnectionId;
use palisade_error::{Error, TimeoutPhase};
use palisade_proto::handshake::{HeadLimits, parse_request, write_response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::config::ServerBuilder;
use crate::decide::{self, Head, Upgrade, error_response, log_refusal, rejection_response};
use crate::decision::Rejection;
use crate::registry::{Admitted, State};
use crate::request::HandshakeRequest;
use crate::transport::Transport;

pub(crate) async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(err) => {
                // EMFILE, ENFILE, ENOBUFS …: the listener is fine, the process is out of
                // something. Back off instead of spinning, and keep serving.
                tracing::warn!(error = %err, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if state.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = ConnectionId::next();
        let admitted = state.admit(id, peer.ip());
        let span = connection_span(id, peer);
        let task = tokio::spawn(
            connection_task(state.clone(), admitted, stream, peer, id).instrument(span),
        );
        state.set_abort(id, task.abort_handle());
    }
}

/// The span of one connection: every log line of it carries these.
pub(crate) fn connection_span(id: ConnectionId, peer: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "ws",
        id = id.get(),
        %peer,
        path = tracing::field::Empty,
        subprotocol = tracing::field::Empty
    )
}

/// The task of one accepted connection. Its future is what every connection keeps in memory for
/// its whole life, so whatever is large and only needed for a moment (the handshake, the
/// refusals) is boxed and freed when done; `connection_task_stays_small` checks the size.
pub(crate) async fn connection_task(
    state: Arc<State>,
    admitted: Result<Admitted, Box<Rejection>>,
    stream: TcpStream,
    peer: SocketAddr,
    id: ConnectionId,
) {
    match admitted {
        Ok(admitted) => {
            // Boxed: everything before the handler runs once, and an unboxed part would keep
            // its room in this task's future for the connection's life.
            let Some(live) = Box::pin(handshake(&state, admitted, stream, peer, id)).await else {
                return;
            };
            drop(state);
            live.serve().await;
        }
        // Boxed: its drain buffer would otherwise sit in every connection's task.
        Err(rejection) => {
            tracing::info!(status = rejection.status.as_u16(), reason = %rejection.reason, "connection refused");
            let response = rejection_response(&rejection, state.config.retry_after);
            Box::pin(respond_and_close(stream, response)).await;
        }
    }
}

/// The TLS handshake, the request head, the decision and its response. `None` when there is
/// nothing more to do (refused and answered, or the transport failed).
async fn handshake(
    state: &Arc<State>,
    admitted: Admitted,
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnectionId,
) -> Option<crate::connection::Live> {
    let config = &*state.config;
    let mut stream = open_transport(config, tcp).await?;
    // One deadline for the request, the hooks' decision and the 101 response (slowloris, and
    // a hook that hangs, alike).
    let deadline = tokio::time::Instant::now() + config.handshake_timeout;
    let read = tokio::time::timeout_at(deadline, async {
        let (head, request, leftover) = read_head(&mut stream, &config.head_limits).await?;
        let request = HandshakeRequest::from_head(head, config.head_limits, request, peer);
        Ok::<_, Error>((Head { request }, leftover))
    })
    .await;
    let (head, leftover) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(err)) => {
            log_refusal(&err);
            if err.category() != palisade_error::Category::Transport {
                respond_and_close(stream, error_response(&err, config.retry_after)).await;
            }
            return None;
        }
        Err(_) => {
            let err = Error::timeout(TimeoutPhase::Handshake);
            tracing::debug!("handshake timed out");
            respond_and_close(stream, error_response(&err, config.retry_after)).await;
            return None;
        }
    };
    // Kept here until a refusal is written: a connection counts against the limits until then.
    let mut admitted = Some(admitted);
    let Ok(upgrade) =
        tokio::time::timeout_at(deadline, decide::decide(state, &mut admitted, id, head)).await
    else {
        let err = Error::timeout(TimeoutPhase::Handshake);
        tracing::info!("handshake timed out while the hooks decided");
        respond_and_close(stream, error_response(&err, config.retry_after)).await;
        return None;
    };
    match upgrade {
        Upgrade::Respond(response) => {
            respond_and_close(stream, response).await;
            None
        }
        Upgrade::Accept(accepted) => {
            let (response, pending) = accepted.into_parts();
            let mut out = Vec::with_capacity(256);
            write_response(&response, &[], &mut out);
            match tokio::time::timeout_at(deadline, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "connection lost during handshake");
                    return None;
                }
                Err(_) => {
                    tracing::debug!("handshake timed out writing the 101 response");
                    return None;
                }
            }
            Some(crate::connection::open(pending, stream, &leftover))
        }
    }
}

/// Reads a request head within `limits`; returns its bytes (in an allocation of their own),
/// the request parsed from them, and any bytes read past it.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    limits: &HeadLimits,
) -> Result<(Bytes, http::Request<()>, BytesMut), Error> {
    let (mut buf, head_len) = palisade_conn::read_head(stream, *limits).await?;
    let request = parse_request(&buf[..head_len], limits)?;
    let head = Bytes::copy_from_slice(&buf[..head_len]);
    let rest = buf.split_off(head_len);
    Ok((head, request, rest))
}

/// Writes a complete response and closes, within a second. Closing with the request still
/// unread would make the kernel send a reset, which can destroy the response before the client
/// reads it: the rest is drained (at most 64 KiB) until the client closes its side.
pub(crate) async fn respond_and_close<S>(mut stream: S, response: Response<Bytes>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(256 + response.body().len());
    let (parts, body) = response.into_parts();
    write_response(&Response::from_parts(parts, ()), &body, &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(feature = "rustls")]
async fn open_transport(config: &ServerBuilder, tcp: TcpStream) -> Option<Transport> {
    let Some(acceptor) = &config.tls else { return Some(Transport::Plain(tcp)) };
    match tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Transport::Tls(Box::new(tls))),
        Ok(Err(err)) => {
            tracing::info!(error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

#[cfg(not(feature = "rustls"))]
async fn open_transport(_config: &ServerBuilder, tcp: TcpStream) -> Option<Transport> {
    Some(Transport::Plain(tcp))
}
