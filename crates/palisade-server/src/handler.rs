//! Connection handlers: async functions of the socket and of typed arguments taken from the
//! connection (extractors), and how their errors become close frames.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use http::StatusCode;
use palisade_conn::{ConnectionId, WebSocket};
use palisade_error::{CloseCode, CloseFrame, Error};
use palisade_proto::deflate::DeflateParams;

use crate::decision::Rejection;
use crate::registry::Connections;
use crate::request::HandshakeRequest;

/// A boxed error from a handler.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler learns about its connection besides the socket.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub(crate) id: ConnectionId,
    pub(crate) request: HandshakeRequest,
    pub(crate) subprotocol: Option<String>,
    pub(crate) compression: Option<DeflateParams>,
}

impl ConnectionInfo {
    /// The connection's process-unique number (also in every log line of the connection).
    pub fn id(&self) -> ConnectionId {
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
    /// [`crate::ServerBuilder::with_compression`]).
    pub fn compression(&self) -> Option<&DeflateParams> {
        self.compression.as_ref()
    }
}

/// Application state given once to [`crate::ServerBuilder::with_state`], by type.
#[derive(Clone, Default)]
pub(crate) struct StateMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl StateMap {
    pub(crate) fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.values.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref::<T>()).cloned()
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMap").field("values", &self.values.len()).finish()
    }
}

/// Everything a handler's arguments are taken from, once the upgrade is accepted and before
/// the 101 response goes out: an argument that cannot be had refuses the upgrade instead of
/// opening a connection that cannot be served.
#[derive(Debug)]
pub struct HandlerParts {
    pub(crate) info: ConnectionInfo,
    pub(crate) value: Option<Box<dyn Any + Send>>,
    pub(crate) state: StateMap,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) connections: Connections,
    pub(crate) route: Arc<str>,
}

impl HandlerParts {
    /// The connection's information.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// A refusal for an argument the server cannot provide: 500, the log line says which.
    fn missing(&self, what: String) -> Box<Rejection> {
        tracing::error!(route = %self.route, "handler argument unavailable: {what}");
        Box::new(
            Rejection::new(StatusCode::INTERNAL_SERVER_ERROR)
                .with_text("The server cannot serve this connection.\n")
                .with_log_reason("handler argument unavailable"),
        )
    }
}

/// A handler argument taken from the connection, in the style of axum's extractors:
/// [`ConnectionInfo`], [`State`], [`Handshake`], [`Path`], [`PathParams`], [`Connections`].
/// Implement it for a type of your own to take it from the same parts.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "palisade cannot provide this argument",
    note = "after the `WebSocket`, handler arguments must implement `FromConnection`: `ConnectionInfo`, `State<T>` (from `with_state`), `Handshake<T>` (from the handshake hook's `Accept::with_value`), `Path<T>`, `PathParams` or `Connections`"
)]
pub trait FromConnection: Sized + Send + 'static {
    /// Takes the argument, or refuses the upgrade with the response returned.
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>>;
}

impl FromConnection for ConnectionInfo {
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>> {
        Ok(parts.info.clone())
    }
}

impl FromConnection for Connections {
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>> {
        Ok(parts.connections.clone())
    }
}

/// Application state given once to [`crate::ServerBuilder::with_state`] (a database pool, a
/// room registry), cloned into each handler that asks for it by type.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromConnection for State<T> {
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>> {
        match parts.state.get::<T>() {
            Some(value) => Ok(State(value)),
            None => Err(parts.missing(format!(
                "State<{}>: the server was built without `with_state` of this type",
                type_name::<T>()
            ))),
        }
    }
}

/// The value the handshake hook attached with [`crate::Accept::with_value`] (the authenticated
/// user, say), moved into the handler: no `Clone` needed, no `Option` to unwrap. An upgrade
/// whose hook attached no value of this type is refused with 500 and a log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Handshake<T>(pub T);

impl<T: Send + 'static> FromConnection for Handshake<T> {
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>> {
        let taken = parts.value.take();
        match taken.map(|v| v.downcast::<T>()) {
            Some(Ok(value)) => Ok(Handshake(*value)),
            Some(Err(other)) => {
                parts.value = Some(other);
                Err(parts.missing(format!(
                    "Handshake<{}>: the handshake hook attached a value of another type",
                    type_name::<T>()
                )))
            }
            None => Err(parts.missing(format!(
                "Handshake<{}>: the handshake hook attached no value (`Accept::with_value`)",
                type_name::<T>()
            ))),
        }
    }
}

/// The route's parameters, by name: `/rooms/{room}` matched by `/rooms/lobby` has
/// `room = "lobby"`.
#[derive(Debug, Clone, Default)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every parameter, in the order of the route.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl FromConnection for PathParams {
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>> {
        Ok(PathParams(parts.params.clone()))
    }
}

/// The route's one parameter, parsed: `Path<u64>` for `/games/{id}`. A value that does not
/// parse refuses the upgrade with 404 (no such resource); a route with no parameter, or
/// several, refuses with 500 and a log line (a wiring mistake).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: FromStr + Send + 'static> FromConnection for Path<T> {
    fn from_connection(parts: &mut HandlerParts) -> Result<Self, Box<Rejection>> {
        let [(_, value)] = parts.params.as_slice() else {
            return Err(parts.missing(format!(
                "Path<{}>: the route has {} parameters, not one (use PathParams)",
                type_name::<T>(),
                parts.params.len()
            )));
        };
        value.parse().map(Path).map_err(|_| {
            tracing::info!(route = %parts.route, "route parameter does not parse");
            Box::new(
                Rejection::new(StatusCode::NOT_FOUND)
                    .with_text("Not found.\n")
                    .with_log_reason("route parameter does not parse"),
            )
        })
    }
}

/// How a handler's error ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closing {
    /// Send exactly this frame: its reason is meant for the peer.
    Frame(CloseFrame),
    /// Send this code with a generic reason (the error's text instead when
    /// [`crate::ServerBuilder::with_expose_handler_errors`] is on).
    Code(CloseCode),
    /// The connection has ended already: nothing more to send.
    Ended,
}

/// An error a handler may return: it chooses the close frame. palisade's [`Error`] (its own
/// close code, or nothing when the connection has ended), [`CloseWith`] (its frame),
/// [`BoxError`] and `std::io::Error` (the first of those found along `source()`, else 1011)
/// implement it, and `anyhow::Error` with the `anyhow` feature; implement it for your own
/// error types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a handler",
    note = "a handler returns `()` or `Result<(), E>` where `E: HandlerError`: `palisade::Error`, `CloseWith`, `BoxError`, `std::io::Error`, `anyhow::Error` (feature `anyhow`), or your type with `impl HandlerError`"
)]
pub trait HandlerError: fmt::Display + Send + 'static {
    /// The close frame this error ends the connection with.
    fn closing(&self) -> Closing;
}

impl HandlerError for Error {
    fn closing(&self) -> Closing {
        if self.connection_closed().is_some() {
            return Closing::Ended;
        }
        if let Error::Application(app) = self
            && let palisade_error::ApplicationError::Closed { frame } = &**app
        {
            // The application's own code, with the reason it meant for the peer.
            return Closing::Frame(frame.clone());
        }
        Closing::Code(self.close_code().unwrap_or(CloseCode::INTERNAL_ERROR))
    }
}

impl HandlerError for BoxError {
    fn closing(&self) -> Closing {
        find_closing(&**self)
    }
}

impl HandlerError for std::io::Error {
    fn closing(&self) -> Closing {
        find_closing(self)
    }
}

impl HandlerError for std::convert::Infallible {
    fn closing(&self) -> Closing {
        match *self {}
    }
}

#[cfg(feature = "anyhow")]
impl HandlerError for anyhow::Error {
    fn closing(&self) -> Closing {
        find_closing(self.as_ref())
    }
}

/// Walks an error and its sources (as hyper's `find_source` does) for the first that knows
/// its close frame: a [`CloseWith`] or a palisade [`Error`]. Anything else is 1011.
pub fn find_closing(err: &(dyn StdError + 'static)) -> Closing {
    let mut next = Some(err);
    while let Some(err) = next {
        // An `io::Error` made from another error reports that error's source as its own, so
        // the error itself is reached through `get_ref`.
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            next = Some(inner);
            continue;
        }
        if let Some(close) = err.downcast_ref::<CloseWith>() {
            return close.closing();
        }
        if let Some(err) = err.downcast_ref::<Error>() {
            return err.closing();
        }
        next = err.source();
    }
    Closing::Code(CloseCode::INTERNAL_ERROR)
}

/// A handler error that closes the connection with a chosen code and a reason the peer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseWith {
    frame: CloseFrame,
}

impl CloseWith {
    /// Close with `code` and `reason` (cut to 123 bytes). An unsendable code becomes 1011
    /// ([`CloseFrame::lossy`]).
    pub fn new(code: CloseCode, reason: &str) -> Self {
        Self { frame: CloseFrame::lossy(code, reason) }
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

impl StdError for CloseWith {}

impl HandlerError for CloseWith {
    fn closing(&self) -> Closing {
        Closing::Frame(self.frame.clone())
    }
}

/// How a handler ended: its close choice and, for a failure, the error's text for the log.
/// Made by [`IntoEnding`]; opaque.
#[derive(Debug)]
pub struct Ending {
    pub(crate) closing: Closing,
    pub(crate) error: Option<String>,
}

/// What a handler's future may return: `()` or `Result<(), E: HandlerError>`.
#[diagnostic::on_unimplemented(
    message = "a handler's future must return `()` or `Result<(), E>` with `E: HandlerError`, not `{Self}`"
)]
pub trait IntoEnding: Send + 'static {
    #[doc(hidden)]
    fn into_ending(self) -> Ending;
}

impl IntoEnding for () {
    fn into_ending(self) -> Ending {
        Ending { closing: Closing::Frame(CloseFrame::normal()), error: None }
    }
}

impl<E: HandlerError> IntoEnding for Result<(), E> {
    fn into_ending(self) -> Ending {
        match self {
            Ok(()) => ().into_ending(),
            Err(err) => Ending { closing: err.closing(), error: Some(err.to_string()) },
        }
    }
}

/// A handler ready to run on its socket, its arguments taken already. Made by
/// [`Handler`]; opaque.
pub struct Prepared(pub(crate) Box<dyn FnOnce(WebSocket) -> BoxFuture<Ending> + Send>);

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

/// Handles one accepted connection: an `async fn(WebSocket, A, B, …)` of up to eight
/// [`FromConnection`] arguments, in any order, returning `()` or `Result<(), E>` with
/// `E:` [`HandlerError`].
///
/// When the handler returns, the server closes the connection if it is still open: `()` or
/// `Ok(())` with 1000; an error with the frame its [`HandlerError::closing`] chooses (1011
/// with a generic reason for errors that know no code; their text goes to the log and, unless
/// [`crate::ServerBuilder::with_expose_handler_errors`] is on, never to the peer).
///
/// A panicking handler is caught: the panic is logged, the connection closed with 1011, and
/// the server goes on. While the handler does not receive, the server still services the
/// connection ([`WebSocket::drive`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a palisade handler",
    label = "not a handler",
    note = "a handler is an `async fn(WebSocket, A, B, …)` (at most 8 arguments after the socket, each `FromConnection`: `ConnectionInfo`, `State<T>`, `Handshake<T>`, `Path<T>`, `PathParams`, `Connections`) returning `()` or `Result<(), E>` with `E: HandlerError`"
)]
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    #[doc(hidden)]
    fn prepare(&self, parts: &mut HandlerParts) -> Result<Prepared, Box<Rejection>>;
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, $($arg,)*> Handler<($($arg,)*)> for F
        where
            F: Fn(WebSocket, $($arg,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: IntoEnding,
            $($arg: FromConnection,)*
        {
            fn prepare(&self, parts: &mut HandlerParts) -> Result<Prepared, Box<Rejection>> {
                $(let $arg = $arg::from_connection(parts)?;)*
                let handler = self.clone();
                Ok(Prepared(Box::new(move |socket| {
                    let running = handler(socket, $($arg,)*);
                    Box::pin(async move { running.await.into_ending() })
                })))
            }
        }
    };
}

impl_handler!();
impl_handler!(A1);
impl_handler!(A1, A2);
impl_handler!(A1, A2, A3);
impl_handler!(A1, A2, A3, A4);
impl_handler!(A1, A2, A3, A4, A5);
impl_handler!(A1, A2, A3, A4, A5, A6);
impl_handler!(A1, A2, A3, A4, A5, A6, A7);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8);

/// A handler with its argument types forgotten, as routes keep it.
pub(crate) trait ErasedHandler: Send + Sync {
    fn prepare(&self, parts: &mut HandlerParts) -> Result<Prepared, Box<Rejection>>;
}

pub(crate) struct Erased<H, Args> {
    handler: H,
    _args: std::marker::PhantomData<fn() -> Args>,
}

impl<H, Args> Erased<H, Args> {
    pub(crate) fn new(handler: H) -> Self {
        Self { handler, _args: std::marker::PhantomData }
    }
}

impl<H: Handler<Args>, Args: 'static> ErasedHandler for Erased<H, Args> {
    fn prepare(&self, parts: &mut HandlerParts) -> Result<Prepared, Box<Rejection>> {
        self.handler.prepare(parts)
    }
}

/// The close frame a handler's ending sends, if any.
pub(crate) fn close_for(ending: &Ending, expose: bool) -> Option<CloseFrame> {
    match &ending.closing {
        Closing::Frame(frame) => Some(frame.clone()),
        Closing::Ended => None,
        Closing::Code(code) => {
            let reason = match (&ending.error, expose) {
                (Some(text), true) => text.as_str(),
                _ => code.generic_reason(),
            };
            Some(CloseFrame::lossy(*code, reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use palisade_error::{PayloadTooBig, SizeLimit};

    use super::*;

    fn ending<E: HandlerError>(result: Result<(), E>) -> Ending {
        result.into_ending()
    }

    #[test]
    fn handler_results_map_to_close_frames() {
        assert_eq!(close_for(&().into_ending(), false), Some(CloseFrame::normal()));
        let custom = ending(Err(CloseWith::new(CloseCode(4001), "bad input")));
        assert_eq!(close_for(&custom, false).unwrap().code(), CloseCode(4001));
        let internal: BoxError = "database password=hunter2 unreachable".into();
        let frame = close_for(&ending(Err(internal)), false).unwrap();
        assert_eq!(frame.code(), CloseCode::INTERNAL_ERROR);
        assert!(!frame.reason().contains("hunter2"), "internal text stays off the wire");
        let exposed: BoxError = "shown on purpose".into();
        assert_eq!(close_for(&ending(Err(exposed)), true).unwrap().reason(), "shown on purpose");
        let too_big = Error::from(PayloadTooBig { size: None, max: 1, what: SizeLimit::Message });
        assert_eq!(
            close_for(&ending(Err(too_big)), false).unwrap().code(),
            CloseCode::MESSAGE_TOO_BIG
        );
        let closed = Error::closed(palisade_error::ConnectionClosed::abnormal());
        assert_eq!(close_for(&ending(Err(closed)), false), None);
    }

    /// An error wrapped once (or twice) still chooses its close frame: found along `source()`.
    #[test]
    fn wrapped_errors_are_found_along_their_sources() {
        #[derive(Debug)]
        struct Wrapper(Box<dyn StdError + Send + Sync>);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("while handling a message")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&*self.0)
            }
        }
        let inner = CloseWith::new(CloseCode(4004), "no such room");
        let once: BoxError = Box::new(Wrapper(Box::new(inner.clone())));
        assert_eq!(once.closing(), Closing::Frame(inner.frame().clone()));
        let twice: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(inner.clone())))));
        assert_eq!(twice.closing(), Closing::Frame(inner.frame().clone()));
        let io = std::io::Error::other(Error::from(PayloadTooBig {
            size: None,
            max: 1,
            what: SizeLimit::Message,
        }));
        assert_eq!(io.closing(), Closing::Code(CloseCode::MESSAGE_TOO_BIG));
        let plain: BoxError = "opaque".into();
        assert_eq!(plain.closing(), Closing::Code(CloseCode::INTERNAL_ERROR));
    }
}
