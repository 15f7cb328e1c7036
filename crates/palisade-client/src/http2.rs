//! WebSocket over HTTP/2 (RFC 8441): one HTTP/2 connection per WebSocket, opened with the `h2`
//! crate; an extended CONNECT on its first stream; the stream's DATA frames carry the
//! WebSocket frames, read and written through [`H2Stream`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{Response, header};
use palisade_error::{Error, InvalidMessage, InvalidStatus};
use palisade_proto::handshake::{ClientHandshake, ResponseOutcome};
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::client::{Client, Opened};
use crate::stream::ClientStream;
use crate::url::WsUrl;

/// The extended CONNECT for `handshake` over `io`, where HTTP/2 was agreed (ALPN `h2`, or
/// prior knowledge on cleartext).
pub(crate) async fn open(
    client: &Client,
    url: &WsUrl,
    io: ClientStream,
    handshake: ClientHandshake,
    rng: StdRng,
    follow_redirects: bool,
    deadline: Option<Instant>,
) -> Result<Opened, Error> {
    let tls = io.is_tls();
    let (send, mut connection) =
        h2::client::Builder::new().handshake::<_, Bytes>(io).await.map_err(h2_error)?;
    let mut ping = connection.ping_pong().expect("taken once, from a new connection");
    // The connection's frames are read and written by this task, for the WebSocket's life.
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "HTTP/2 connection ended");
        }
    });
    // RFC 9113 §3.4: the server's first frame is its SETTINGS; its answer to a PING comes
    // after, so once the PONG is here the server has said whether it takes extended CONNECT.
    ping.ping(h2::Ping::opaque()).await.map_err(h2_error)?;
    let mut send = send.ready().await.map_err(h2_error)?;
    if !send.is_extended_connect_protocol_enabled() {
        return Err(InvalidMessage::Unexpected {
            reason: "the HTTP/2 server does not enable extended CONNECT (RFC 8441 §3)",
        }
        .into());
    }
    let mut request = handshake.request().clone();
    request.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
    let (response, stream) = send.send_request(request, false).map_err(h2_error)?;
    let response = response.await.map_err(h2_error)?;
    let (parts, mut body) = response.into_parts();
    match handshake.validate(Response::from_parts(parts, ()))? {
        ResponseOutcome::Upgraded(negotiated) => {
            let io = H2Stream { send: stream, recv: body, pending: Bytes::new() };
            client.opened(url, io, negotiated, rng, &[], tls).await
        }
        ResponseOutcome::NotUpgraded(response) => {
            let status = response.status();
            if follow_redirects
                && matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
                && let Some(location) = response.headers().get(header::LOCATION)
                && let Ok(location) = location.to_str()
            {
                return Ok(Opened::Redirect(location.to_owned()));
            }
            // The refusal's body, up to the client's limit and the open deadline.
            let max = client.max_body();
            let mut kept = Vec::new();
            let read = async {
                while kept.len() < max {
                    match body.data().await {
                        Some(Ok(chunk)) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            kept.extend_from_slice(&chunk[..chunk.len().min(max - kept.len())]);
                        }
                        _ => break,
                    }
                }
            };
            match deadline {
                Some(deadline) => {
                    let _ = tokio::time::timeout_at(deadline, read).await;
                }
                None => read.await,
            }
            tracing::debug!(url = %url, %status, "server refused the upgrade (HTTP/2)");
            Err(InvalidStatus::new(status, response.headers(), &kept, max).into())
        }
    }
}

/// An h2 failure (a broken connection, a reset stream, a GOAWAY) as the transport error it
/// is: retryable, with the h2 error as its source.
fn h2_error(err: h2::Error) -> Error {
    Error::io(into_io(err))
}

/// One HTTP/2 stream as a byte stream: DATA frames in, DATA frames out, END_STREAM on
/// shutdown. Received bytes give their flow-control window back as they arrive (the
/// WebSocket's own limits bound what is buffered); writes wait for send window.
struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// Received and not yet read.
    pending: Bytes,
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                // END_STREAM, or a reset with NO_ERROR after the close: the end of input.
                None => return Poll::Ready(Ok(())),
                Some(Err(err)) if err.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(err)) => return Poll::Ready(Err(into_io(err))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        this.send.reserve_capacity(buf.len());
        let window = loop {
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => break n,
                Some(Err(err)) => return Poll::Ready(Err(into_io(err))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        };
        let n = window.min(buf.len());
        this.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(into_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes queued DATA frames as the socket takes them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // RFC 8441 §5: the orderly end of the WebSocket's TCP is END_STREAM on its stream.
        let this = self.get_mut();
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            // Already ended (a second shutdown, or the peer reset the stream): nothing to end.
            Err(_) => Poll::Ready(Ok(())),
        }
    }
}

fn into_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err.into_io().unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    io::Error::other(err)
}
