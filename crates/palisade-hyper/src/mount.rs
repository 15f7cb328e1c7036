//! One request through palisade's decision, and the upgraded stream to its connection.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use palisade_server::{ExtendedConnect, PendingConnection, Server, Upgrade};
use tokio::io::{AsyncRead, AsyncWrite};

/// Answers `request`, received by hyper from `peer`, with palisade's decision: the 101
/// Switching Protocols response of an accepted upgrade (200 for HTTP/2's extended CONNECT,
/// RFC 8441), whose connection is then served on the stream hyper hands over (in a task of its
/// own), or the complete response of a refusal (status, headers and body, as palisade's own
/// accept loop sends them). The request's body is not read.
///
/// For use inside `hyper::service::service_fn`, on an HTTP/1.1 connection served
/// `.with_upgrades()`, or an HTTP/2 connection whose builder has `enable_connect_protocol()`
/// (or both: [`serve_connection`](crate::serve_connection)). Without upgrades hyper has no
/// stream to hand over, and an accepted upgrade is answered with 500 instead (and logged as an
/// error). The connection counts against the server's limits from here until it ends, or
/// until the hand-over fails.
pub async fn upgrade<B>(
    server: &Server,
    request: Request<B>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    respond(server, request, peer).await.map(Full::new)
}

/// [`upgrade`] with the response's body as bytes, for the mounts to wrap as their server wants.
pub(crate) async fn respond<B>(
    server: &Server,
    mut request: Request<B>,
    peer: SocketAddr,
) -> Response<Bytes> {
    // Taken before the request is handed over: hyper completes the upgrade through it, and
    // the decision has no use for it.
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    // HTTP/2's extended CONNECT (RFC 8441): hyper keeps `:protocol` in an extension of its
    // own; palisade's decision reads it from its own mark, and judges the request there.
    if let Some(protocol) = request.extensions().get::<hyper::ext::Protocol>() {
        let mark = ExtendedConnect::new(protocol.as_str());
        request.extensions_mut().insert(mark);
    }
    match server.decide(request, peer).await {
        Upgrade::Respond(response) => response,
        Upgrade::Accept(accepted) => {
            let (response, connection) = accepted.into_parts();
            let Some(on_upgrade) = on_upgrade else {
                tracing::error!(
                    %peer,
                    "the HTTP server cannot hand this connection over (hyper: serve it \
                     `.with_upgrades()`); answering 500"
                );
                return internal_error();
            };
            // The connection's own span (id, peer, path) is entered by `serve`.
            tokio::spawn(serve_upgraded(on_upgrade, connection));
            response.map(|()| Bytes::new())
        }
        // A kind of answer this mount does not know yet: nothing it can send is right.
        _ => {
            tracing::error!(%peer, "palisade's decision is not one this mount knows; answering 500");
            internal_error()
        }
    }
}

/// Waits for hyper to hand over the stream once the response is sent, then serves the
/// connection on it. Dropping `connection` when the hand-over fails gives its place under the
/// limits back.
async fn serve_upgraded(on_upgrade: OnUpgrade, connection: PendingConnection) {
    match on_upgrade.await {
        // hyper's `Upgraded` returns the bytes it read past the request first: no leftover.
        Ok(upgraded) => connection.serve(TokioIo::new(upgraded), &[]).await,
        Err(err) => {
            tracing::debug!(id = connection.id().get(), error = %err, "the upgrade did not complete")
        }
    }
}

/// A generic 500 that closes the connection.
pub(crate) fn internal_error() -> Response<Bytes> {
    let body = Bytes::from_static(b"500 Internal Server Error\n");
    let mut response = Response::new(body.clone());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves one accepted connection (TCP, or TLS whose ALPN chose `h2` or `http/1.1`) with
/// hyper, every request going to `server` through [`upgrade`]: HTTP/1.1 with upgrades, or
/// HTTP/2 — recognized by its connection preface, so prior knowledge works on cleartext too —
/// with extended CONNECT enabled (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441 §3). Returns
/// when hyper is done with the connection; upgraded WebSockets go on in their own tasks.
///
/// # Errors
///
/// hyper's, for a connection that broke or spoke no HTTP.
pub async fn serve_connection<I>(
    server: Server,
    io: I,
    peer: SocketAddr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(upgrade(&server, request, peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    builder.serve_connection_with_upgrades(TokioIo::new(io), service).await
}
