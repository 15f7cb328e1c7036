//! Connection handlers, and how their errors become close codes.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use palisade_error::{CloseCode, CloseFrame, Error};
use palisade_proto::deflate::DeflateParams;

use crate::request::HandshakeRequest;
use crate::transport::Transport;

/// A server-side connection.
pub type ServerSocket = palisade_conn::WebSocket<Transport>;

/// A boxed error from a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler learns about its connection besides the socket.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub(crate) id: u64,
    pub(crate) request: HandshakeRequest,
    pub(crate) subprotocol: Option<String>,
    pub(crate) data: Arc<http::Extensions>,
    pub(crate) compression: Option<DeflateParams>,
}

impl ConnectionInfo {
    /// The server-wide connection number (also in every log line of the connection).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The upgrade request.
    pub fn request(&self) -> &HandshakeRequest {
        &self.request
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.request.peer_addr()
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The permessage-deflate parameters agreed in the handshake, if compression is on (see
    /// [`crate::ServerBuilder::compression`]).
    pub fn compression(&self) -> Option<&DeflateParams> {
        self.compression.as_ref()
    }

    /// A value the handshake hook attached with [`crate::Accept::with_data`].
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.data.get::<T>()
    }
}

/// Handles one accepted connection. Implemented for every
/// `Fn(ServerSocket, ConnectionInfo) -> impl Future<Output = Result<(), E>>` where `E` converts
/// into a boxed error.
///
/// When the handler returns, the server closes the connection if it is still open:
/// - `Ok(())`: 1000 Normal Closure;
/// - `Err(e)` where `e` is a [`CloseWith`]: its code and reason;
/// - `Err(e)` where `e` is a palisade [`Error`]: its [`Error::close_code`] (a closed
///   connection needs nothing more);
/// - any other error: 1011 Internal Error. The error's text goes to the log and, unless
///   [`crate::ServerBuilder::expose_handler_errors`] is on, never to the peer.
///
/// A panicking handler is caught: the panic is logged, the connection closed with 1011, and
/// the server goes on.
pub trait Handler: Send + Sync + 'static {
    /// Runs the connection.
    fn call(&self, socket: ServerSocket, info: ConnectionInfo) -> BoxFuture<Result<(), BoxError>>;
}

impl<F, Fut, E> Handler for F
where
    F: Fn(ServerSocket, ConnectionInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn call(&self, socket: ServerSocket, info: ConnectionInfo) -> BoxFuture<Result<(), BoxError>> {
        let fut = self(socket, info);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// A handler error that closes the connection with a chosen code and a reason the peer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseWith {
    frame: CloseFrame,
}

impl CloseWith {
    /// Close with `code` and `reason` (cut to 123 bytes). An unsendable code becomes 1011.
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let frame = CloseFrame::truncated(code, reason).unwrap_or_else(|_| {
            CloseFrame::truncated(CloseCode::INTERNAL_ERROR, reason)
                .unwrap_or_else(|_| CloseFrame::normal())
        });
        Self { frame }
    }

    /// The frame sent.
    pub fn frame(&self) -> &CloseFrame {
        &self.frame
    }
}

impl fmt::Display for CloseWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handler closed the connection with {}", self.frame)
    }
}

impl std::error::Error for CloseWith {}

/// How a handler's end maps to the close frame sent, if any.
pub(crate) fn close_for(result: &Result<(), BoxError>, expose: bool) -> Option<CloseFrame> {
    let err = match result {
        Ok(()) => return Some(CloseFrame::normal()),
        Err(err) => err,
    };
    if let Some(close) = err.downcast_ref::<CloseWith>() {
        return Some(close.frame.clone());
    }
    if let Some(err) = err.downcast_ref::<Error>() {
        if err.connection_closed().is_some() {
            return None;
        }
        let code = err.close_code().unwrap_or(CloseCode::INTERNAL_ERROR);
        let reason = if expose { err.to_string() } else { String::new() };
        return CloseFrame::truncated(code, &reason).ok();
    }
    let reason = if expose { err.to_string() } else { "internal error".to_owned() };
    CloseFrame::truncated(CloseCode::INTERNAL_ERROR, &reason).ok()
}

#[cfg(test)]
mod tests {
    use palisade_error::{PayloadTooBig, SizeLimit};

    use super::*;

    #[test]
    fn handler_results_map_to_close_frames() {
        assert_eq!(close_for(&Ok(()), false), Some(CloseFrame::normal()));
        let custom: BoxError = Box::new(CloseWith::new(CloseCode(4001), "bad input"));
        assert_eq!(close_for(&Err(custom), false).unwrap().code(), CloseCode(4001));
        let internal: BoxError = "database password=hunter2 unreachable".into();
        let frame = close_for(&Err(internal), false).unwrap();
        assert_eq!(frame.code(), CloseCode::INTERNAL_ERROR);
        assert!(!frame.reason().contains("hunter2"), "internal text stays off the wire");
        let exposed: BoxError = "shown on purpose".into();
        assert_eq!(close_for(&Err(exposed), true).unwrap().reason(), "shown on purpose");
        let too_big: BoxError =
            Box::new(Error::from(PayloadTooBig { size: None, max: 1, what: SizeLimit::Message }));
        assert_eq!(close_for(&Err(too_big), false).unwrap().code(), CloseCode::MESSAGE_TOO_BIG);
        let closed: BoxError =
            Box::new(Error::closed(palisade_error::ConnectionClosed::abnormal()));
        assert_eq!(close_for(&Err(closed), false), None);
    }
}
