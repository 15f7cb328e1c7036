//! The handshake decision apart from any socket: a request head and the peer's address in,
//! an accepted upgrade (the 101 response and the connection to serve) or a complete response
//! out. The accept loop is one user; a connection upgraded by another HTTP server (hyper,
//! axum) is the other.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use palisade_conn::ConnectionId;
use palisade_error::{CloseFrame, Error, HandshakeError, NegotiationError, SecurityError};
use palisade_proto::deflate::DeflateParams;
use palisade_proto::handshake::{AcceptOptions, HeadLimits, UpgradeRequest, rejection};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::config::ServerBuilder;
use crate::decision::{Accept, Decision, Rejection};
use crate::handler::{ConnectionInfo, HandlerParts, IntoEnding, Prepared};
use crate::registry::{Admitted, Connections, State};
use crate::request::HandshakeRequest;

/// The server's answer to a request head.
#[derive(Debug)]
#[non_exhaustive]
pub enum Upgrade {
    /// Upgrade: send the 101 response, then serve the connection on the upgraded stream.
    Accept(Accepted),
    /// Do not upgrade: send this complete response (a refusal with its status, headers and
    /// body, or the answer of [`crate::ServerBuilder::on_http`]) and close.
    Respond(Response<Bytes>),
}

/// An accepted upgrade: the 101 response, and the connection to serve once it is sent.
#[derive(Debug)]
pub struct Accepted {
    response: Response<()>,
    connection: PendingConnection,
}

impl Accepted {
    /// The 101 Switching Protocols response, with the negotiated subprotocol and extensions.
    pub fn response(&self) -> &Response<()> {
        &self.response
    }

    /// The response to send, and the connection to serve after it.
    pub fn into_parts(self) -> (Response<()>, PendingConnection) {
        (self.response, self.connection)
    }
}

/// A connection whose upgrade was accepted and whose handler's arguments are taken, waiting
/// for its stream. It holds its place under the connection limits until it is served or
/// dropped.
pub struct PendingConnection {
    pub(crate) state: Arc<State>,
    pub(crate) admitted: Admitted,
    pub(crate) id: ConnectionId,
    pub(crate) info: ConnectionInfo,
    pub(crate) prepared: Prepared,
    pub(crate) compression: Option<DeflateParams>,
    pub(crate) close_now: Option<CloseFrame>,
    pub(crate) span: tracing::Span,
}

impl std::fmt::Debug for PendingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConnection").field("id", &self.id).finish_non_exhaustive()
    }
}

impl PendingConnection {
    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Serves the connection on `io`, a stream on which the 101 response has been sent (hyper's
    /// `Upgraded`, say), with the server's limits, keepalive, registry, graceful shutdown and
    /// logging; `leftover` is whatever was read past the request head. Runs in a task of its
    /// own (which the server's shutdown can abort) and returns when the connection has ended.
    pub async fn serve<S>(self, io: S, leftover: &[u8])
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let state = self.state.clone();
        let id = self.id;
        let span = self.span.clone();
        let live = span.in_scope(|| crate::connection::open(self, io, leftover));
        let task = tokio::spawn(live.serve().instrument(span));
        state.set_abort(id, task.abort_handle());
        // An aborted or panicked task ended the connection already; nothing to add.
        let _ = task.await;
    }
}

/// A checked request head: its parsed form and the limits it is within.
pub(crate) struct Head {
    pub(crate) request: HandshakeRequest,
}

impl Head {
    /// A head already parsed by another HTTP server: checked against `limits` here, as the
    /// accept loop's reader checks the bytes.
    pub(crate) fn parsed(
        request: Request<()>,
        peer: SocketAddr,
        limits: &HeadLimits,
    ) -> Result<Self, Error> {
        check_head_limits(&request, limits)?;
        Ok(Self { request: HandshakeRequest::new(request, peer) })
    }
}

/// The decision for one request head, counted in already (`admitted`). An accepted connection
/// takes the count with it; on a refusal it stays with the caller, so that a connection is
/// counted until its refusal is written too.
pub(crate) async fn decide(
    state: &Arc<State>,
    admitted: &mut Option<Admitted>,
    id: ConnectionId,
    head: Head,
) -> Upgrade {
    let config = &*state.config;
    let request = head.request;
    tracing::Span::current().record("path", request.path());

    if let Some(hook) = &config.http_hook
        && let Some(response) = hook(request.clone()).await
    {
        tracing::debug!(status = response.status().as_u16(), "answered by the HTTP hook");
        return Upgrade::Respond(with_connection_close(response));
    }
    match judge(state, config, &request, id).await {
        Ok(Judged::Accept { response, info, prepared, compression, close_now }) => {
            let admitted =
                admitted.take().expect("every caller passes the count of its one request head");
            Upgrade::Accept(Accepted {
                response,
                connection: PendingConnection {
                    state: state.clone(),
                    admitted,
                    id,
                    info,
                    prepared,
                    compression,
                    close_now,
                    span: tracing::Span::current(),
                },
            })
        }
        Ok(Judged::Reject(rejection)) => {
            tracing::info!(
                status = rejection.status.as_u16(),
                reason = %rejection.reason,
                "handshake rejected"
            );
            Upgrade::Respond(rejection_response(&rejection, config.retry_after))
        }
        Err(err) => {
            log_refusal(&err);
            Upgrade::Respond(error_response(&err, config.retry_after))
        }
    }
}

enum Judged {
    Accept {
        response: Response<()>,
        info: ConnectionInfo,
        prepared: Prepared,
        compression: Option<DeflateParams>,
        close_now: Option<CloseFrame>,
    },
    Reject(Rejection),
}

/// The built-in checks, the hook, the 101 response and the handler's arguments.
async fn judge(
    state: &Arc<State>,
    config: &ServerBuilder,
    request: &HandshakeRequest,
    id: ConnectionId,
) -> Result<Judged, Error> {
    let upgrade = UpgradeRequest::from_request(request.as_http().clone())?;
    let (route, params) = config
        .routes
        .iter()
        .find_map(|r| r.matches(request.path()).map(|p| (r, p)))
        .or_else(|| config.fallback.as_ref().map(|r| (r, Vec::new())))
        .ok_or_else(|| HandshakeError::Rejected {
            status: StatusCode::NOT_FOUND,
            reason: "no route for this path".into(),
        })?;
    // Over HTTP/2 the host is the `:authority` pseudo-header, in the URI (RFC 8441 §4).
    let host = request.header("host").or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(policy) = &config.origins
        && !policy.allows_request(request.origin(), host)
    {
        return Err(
            HandshakeError::InvalidOrigin { origin: request.origin().map(str::to_owned) }.into()
        );
    }
    let offered = request.subprotocols();
    let mut subprotocol =
        config.subprotocols.iter().find(|p| offered.contains(&p.as_str())).cloned();
    if subprotocol.is_none() && config.require_subprotocol {
        return Err(NegotiationError::NoCommonSubprotocol.into());
    }

    let decision = match &config.handshake_hook {
        Some(hook) => hook(request.clone()).await,
        None => Decision::Accept(Accept::new()),
    };
    let (accept, close_now) = match decision {
        Decision::Accept(accept) => (accept, None),
        Decision::Close(frame) => (Accept::new(), Some(frame)),
        Decision::Reject(rejection) => return Ok(Judged::Reject(rejection)),
    };
    if let Some(chosen) = accept.subprotocol {
        if !offered.contains(&chosen.as_str()) {
            // Answering with a protocol the client did not offer makes it fail the
            // connection (RFC 6455 §4.1); refuse here instead, with a status it can read.
            tracing::error!(protocol = %chosen, "handshake hook chose a subprotocol the client did not offer");
            return Err(NegotiationError::NoCommonSubprotocol.into());
        }
        subprotocol = Some(chosen);
    }
    let mut options = AcceptOptions::default();
    if let Some(p) = &subprotocol {
        options = options.with_subprotocol(p.clone());
    }
    for (name, value) in &accept.headers {
        options = options.with_header(name.clone(), value.clone());
    }
    let mut compression: Option<DeflateParams> = None;
    if let Some(deflate) = &config.compression
        && let Some(accepted) = deflate.accept(upgrade.extensions())
    {
        options = options.with_extensions(vec![accepted.response]);
        compression = Some(accepted.params);
    }
    let response = upgrade.accept(options)?;
    if let Some(p) = &subprotocol {
        tracing::Span::current().record("subprotocol", p.as_str());
    }
    let info = ConnectionInfo { id, request: request.compact(), subprotocol, compression };
    let mut parts = HandlerParts {
        info: info.clone(),
        value: accept.value,
        state: config.state.clone(),
        params,
        connections: Connections { state: state.clone() },
        route: route.pattern.clone(),
    };
    // A connection the hook closes at once runs no handler: its arguments (a
    // `Handshake<T>` the hook never attached) are not taken.
    let prepared = match close_now {
        Some(_) => Prepared(Box::new(|_socket| Box::pin(async { ().into_ending() }))),
        None => match route.handler.prepare(&mut parts) {
            Ok(prepared) => prepared,
            Err(rejection) => return Ok(Judged::Reject(*rejection)),
        },
    };
    Ok(Judged::Accept { response, info, prepared, compression, close_now })
}

/// Logs a refused handshake at the level its category calls for.
pub(crate) fn log_refusal(err: &Error) {
    let status = err.status_to_send().map_or(0, |s| s.as_u16());
    match err.category() {
        palisade_error::Category::Security => {
            tracing::warn!(status, error = %err, "handshake refused")
        }
        palisade_error::Category::Transport => {
            tracing::debug!(error = %err, "connection lost during handshake")
        }
        _ => tracing::info!(status, error = %err, "handshake refused"),
    }
}

/// The response refusing a handshake that failed with `err`. A refusal by one of the server's
/// own policies names that policy in the body, so that a client's user knows what to change;
/// the request's values (the origin received) stay out of it, as in every built-in body.
pub(crate) fn error_response(err: &Error, retry_after: u64) -> Response<Bytes> {
    let mut response = rejection(err);
    if let Some(policy) = refusing_policy(err) {
        let status = response.status();
        let body = format!(
            "{} {}\n\nThis server did not accept the WebSocket handshake: {policy}.\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("Error"),
        );
        response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = Bytes::from(body);
    }
    retry_after_for(&mut response, retry_after);
    response
}

/// The server policy that refused a handshake with `err`, in words for the refusal's body.
fn refusing_policy(err: &Error) -> Option<&'static str> {
    match err {
        Error::Handshake(handshake) => match &**handshake {
            HandshakeError::InvalidOrigin { .. } => Some("origin not allowed"),
            _ => None,
        },
        _ => None,
    }
}

/// The response for a [`Rejection`]: its status, headers and body, with `Content-Length`,
/// `Connection: close`, and the configured `Retry-After` on 503 and 429 that have none.
pub(crate) fn rejection_response(rejection: &Rejection, retry_after: u64) -> Response<Bytes> {
    let mut response = Response::new(rejection.body.clone());
    *response.status_mut() = rejection.status;
    *response.headers_mut() = rejection.headers.clone();
    retry_after_for(&mut response, retry_after);
    with_connection_close(response)
}

fn retry_after_for(response: &mut Response<Bytes>, seconds: u64) {
    let status = response.status();
    if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
        && !response.headers().contains_key(RETRY_AFTER)
    {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
}

/// Sets the headers every response that ends a connection carries.
fn with_connection_close(mut response: Response<Bytes>) -> Response<Bytes> {
    let len = response.body().len();
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if len > 0 && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    }
    response
}

/// Applies the head limits the accept loop's reader enforces on bytes to a head another
/// server parsed: the request line, each header line (`name: value`), their count and the
/// whole head, as they would be on the wire.
fn check_head_limits(request: &Request<()>, limits: &HeadLimits) -> Result<(), Error> {
    let target = request.uri().path_and_query().map_or(1, |p| p.as_str().len());
    // "GET " target " HTTP/1.1"
    let start = request.method().as_str().len() + 1 + target + 9;
    if start > limits.max_start_line {
        return Err(
            SecurityError::RequestLineTooLong { len: start, max: limits.max_start_line }.into()
        );
    }
    if request.headers().len() > limits.max_headers {
        return Err(SecurityError::TooManyHeaders { max: limits.max_headers }.into());
    }
    let mut head = start + 2;
    for (name, value) in request.headers() {
        let line = name.as_str().len() + 2 + value.len();
        if line > limits.max_header_line {
            return Err(SecurityError::HeaderLineTooLong {
                len: line,
                max: limits.max_header_line,
            }
            .into());
        }
        head += line + 2;
    }
    head += 2;
    if head > limits.max_head {
        return Err(SecurityError::HeadTooLarge { len: head, max: limits.max_head }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_heads_are_held_to_the_same_limits() {
        let mut limits = HeadLimits::default();
        limits.max_headers = 3;
        limits.max_header_line = 64;
        let ok = Request::get("/chat").header("host", "example.com").body(()).expect("valid");
        assert!(check_head_limits(&ok, &limits).is_ok());
        let mut many = Request::get("/").body(()).expect("valid");
        for i in 0..4 {
            many.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).expect("name"),
                HeaderValue::from_static("1"),
            );
        }
        let err = check_head_limits(&many, &limits).expect_err("too many");
        assert_eq!(err.status_to_send(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let long = Request::get("/").header("x-long", "a".repeat(100)).body(()).expect("valid");
        let err = check_head_limits(&long, &limits).expect_err("too long");
        assert_eq!(err.status_to_send(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let target = format!("/{}", "a".repeat(9000));
        let uri = Request::get(target.as_str()).body(()).expect("valid");
        let err = check_head_limits(&uri, &HeadLimits::default()).expect_err("long line");
        assert_eq!(err.status_to_send(), Some(StatusCode::URI_TOO_LONG));
    }

    #[test]
    fn refusals_carry_the_configured_retry_after_and_never_go_out_as_200() {
        let busy = Rejection::new(StatusCode::SERVICE_UNAVAILABLE);
        let response = rejection_response(&busy, 17);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "17");
        let chosen = Rejection::new(StatusCode::TOO_MANY_REQUESTS).with_retry_after(3);
        assert_eq!(rejection_response(&chosen, 17).headers()[RETRY_AFTER], "3");
        let forbidden = Rejection::forbidden().with_text("no");
        let response = rejection_response(&forbidden, 17);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[CONTENT_LENGTH], "2");
        assert!(!response.headers().contains_key(RETRY_AFTER));
    }
}
