//! What the code of `#[palisade::protocol]` stands on: the handler's [`Context`], the typed
//! client's [`CallError`] and [`Pushes`], and the traits that turn a handler's return value
//! into a reply ([`RequestResult`], [`EventResult`]).
//!
//! Everything here is usable by hand too; the macro only saves writing the dispatch `match`,
//! the pusher and the client.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use palisade_conn::{ConnectionId, WebSocket};
use palisade_error::{CloseCode, CloseFrame, Error};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::code::{AppCode, ErrorReply, Outcome, ReplyError};
use crate::describe::{DescribeErrors, MessageDescription, ProtocolDescription};
use crate::route::{NoPart, Tags};
use crate::socket::{Incoming, JsonConfig, JsonSender, JsonSocket, RequestError, Responder};
use crate::wire::EncodeError;

/// What a handler of a typed protocol gets besides its payload: the connection's number and
/// the protocol's pusher `P` (generated as `{Trait}Push`), through which the server sends only
/// the pushes the protocol declares.
#[derive(Debug)]
pub struct Context<P> {
    push: P,
    sender: JsonSender,
}

impl<P> Context<P> {
    /// A context for the connection of `sender`.
    pub fn new(push: P, sender: JsonSender) -> Self {
        Self { push, sender }
    }

    /// The protocol's pusher: one method per declared push. Clone it to push from elsewhere
    /// (a room, a timer).
    pub fn push(&self) -> &P {
        &self.push
    }

    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.sender.id()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Closes the connection with `code` and `reason` (both go to the peer: keep the reason
    /// generic). The handler's loop ends once the close handshake is over.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.sender.raw().close(code, reason).await
    }
}

/// The return type of a request handler: `Result<Reply, E>`, where the reply is a [`Payload`]
/// and the error says what it does to the request ([`ReplyError`]), how a typed client
/// recognises it ([`FromReply`]) and what it may be ([`DescribeErrors`]) — all three derived by
/// `#[derive(palisade::ReplyError)]`.
#[diagnostic::on_unimplemented(
    message = "a request handler returns `Result<Reply, Error>`, not `{Self}`",
    label = "return a `Result` whose `Ok` is a payload and whose `Err` derives `palisade::ReplyError`",
    note = "derive the error's replies with `#[derive(palisade::ReplyError)]`, or use `palisade::json::ErrorReply`"
)]
pub trait RequestResult: Send {
    /// The reply's type.
    type Reply: Payload;
    /// The error's type.
    type Error: ReplyError + FromReply + DescribeErrors;

    /// As a `Result`.
    fn into_result(self) -> Result<Self::Reply, Self::Error>;
}

impl<R: Payload, E: ReplyError + FromReply + DescribeErrors + Send> RequestResult for Result<R, E> {
    type Reply = R;
    type Error = E;

    fn into_result(self) -> Self {
        self
    }
}

/// The return type of an event handler: `()`, or `Result<(), E>` when it can fail.
#[diagnostic::on_unimplemented(
    message = "an event handler returns `()` or `Result<(), Error>`, not `{Self}`",
    label = "events have no reply: return `()`, or `Result<(), E>` with `E: ReplyError`",
    note = "declare it with `#[request(\"…\")]` if the peer waits for an answer"
)]
pub trait EventResult: Send {
    /// The error's type ([`Infallible`] for `()`).
    type Error: ReplyError + DescribeErrors;

    /// As a `Result`.
    fn into_result(self) -> Result<(), Self::Error>;
}

impl EventResult for () {
    type Error = Infallible;

    fn into_result(self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<E: ReplyError + DescribeErrors + Send> EventResult for Result<(), E> {
    type Error = E;

    fn into_result(self) -> Self {
        self
    }
}

impl ReplyError for Infallible {
    fn outcome(&self) -> Outcome {
        match *self {}
    }
}

/// Answers a request with what its handler returned: an ok reply, an error reply, or the end
/// of the connection. Without a responder (the peer sent the request's tag as an event), the
/// reply is dropped and an error is still reported, as for events.
pub async fn answer<P, T: RequestResult>(
    cx: &Context<P>,
    tag: &'static str,
    responder: Option<Responder>,
    result: T,
) -> Result<(), Error> {
    match (responder, result.into_result()) {
        (Some(responder), Ok(reply)) => responder.reply(&reply).await,
        (Some(responder), Err(error)) => {
            log_failure(cx, tag, &error);
            responder.reply_error(&error).await
        }
        (None, Ok(_)) => Ok(()),
        (None, Err(error)) => report(cx, tag, &error).await,
    }
}

/// Acknowledges an event: when the peer sent it as a request, it gets an ok reply with `null`
/// once the handler is done (Socket.IO's acknowledgements). An error is answered as a request's
/// would be, or, for a plain event, as an error reply with `"reply": null`.
pub async fn acknowledge<P, T: EventResult>(
    cx: &Context<P>,
    tag: &'static str,
    responder: Option<Responder>,
    result: T,
) -> Result<(), Error> {
    match (responder, result.into_result()) {
        (Some(responder), Ok(())) => responder.reply(&()).await,
        (Some(responder), Err(error)) => {
            log_failure(cx, tag, &error);
            responder.reply_error(&error).await
        }
        (None, Ok(())) => Ok(()),
        (None, Err(error)) => report(cx, tag, &error).await,
    }
}

/// One line per failure: the code or close code, never the payload (the error's own text
/// stays out too: the application decides what it may show).
fn log_failure<P, E: ReplyError + ?Sized>(cx: &Context<P>, tag: &str, error: &E) {
    match error.outcome() {
        Outcome::Reply(reply) => {
            tracing::debug!(conn = %cx.id(), tag, code = reply.code().as_str(), "json: handler answered with an error reply");
        }
        Outcome::Close(frame) => {
            tracing::debug!(conn = %cx.id(), tag, close_code = %frame.code(), "json: handler closes the connection");
        }
    }
}

/// What an error does without a request to answer: an error reply with `"reply": null`, or
/// the close it asks for.
async fn report<P, E: ReplyError + ?Sized>(
    cx: &Context<P>,
    tag: &str,
    error: &E,
) -> Result<(), Error> {
    log_failure(cx, tag, error);
    match error.outcome() {
        Outcome::Reply(reply) => cx.sender.emit_error(&reply).await,
        Outcome::Close(frame) => cx.sender.raw().close(frame.code(), frame.reason()).await,
    }
}

/// Ends a connection whose connect hook refused it: with the close frame the error names, or,
/// for an error reply, the reply (`"reply": null`, so the peer learns the code) and 1008.
pub async fn refuse<P, E: ReplyError + ?Sized>(cx: &Context<P>, error: &E) -> Result<(), Error> {
    let frame = match error.outcome() {
        Outcome::Close(frame) => frame,
        Outcome::Reply(reply) => {
            tracing::debug!(conn = %cx.id(), code = reply.code().as_str(), "json: connect hook refused the connection");
            // The connection closes either way; a failed send only means it is closed already.
            let _ = cx.sender.emit_error(&reply).await;
            CloseFrame::lossy(CloseCode::POLICY_VIOLATION, "refused")
        }
    };
    cx.sender.raw().close(frame.code(), frame.reason()).await
}

/// What the serve loop returns once the connection is over: `Ok` when it closed cleanly
/// (1000 or 1001, either side first), the error otherwise.
pub fn ending(error: Error) -> Result<(), Error> {
    match error {
        Error::ConnectionClosedOk(_) => Ok(()),
        other => Err(other),
    }
}

/// An application error type that a typed client can recognise in an error reply: the
/// counterpart of [`ReplyError`], generated by `#[derive(palisade::ReplyError)]`.
pub trait FromReply: Sized {
    /// The error `reply` stands for, or `None` when it is none of this type's (a built-in
    /// code such as `invalid_payload`, or an unknown one).
    fn from_reply(reply: &ErrorReply) -> Option<Self>;
}

impl FromReply for ErrorReply {
    fn from_reply(reply: &ErrorReply) -> Option<Self> {
        Some(reply.clone())
    }
}

impl FromReply for Infallible {
    fn from_reply(_: &ErrorReply) -> Option<Self> {
        None
    }
}

/// Why a typed client's request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The server answered with one of the protocol's errors for this request.
    #[error("the server refused the request")]
    Rejected(E),
    /// The server answered with an error reply that is none of the protocol's: a built-in code
    /// (`invalid_payload`, `validation_failed`, `no_reply`, `internal`, …) or an unknown one.
    #[error("the server refused the request: {0}")]
    Refused(ErrorReply),
    /// No reply came before the deadline.
    #[error("no reply before the deadline")]
    Timeout,
    /// The reply broke the envelope, or its data does not decode into the reply type.
    #[error("the server's reply is not valid: {0}")]
    InvalidReply(ErrorReply),
    /// The request's payload could not be encoded; nothing was sent.
    #[error(transparent)]
    Encode(EncodeError),
    /// The connection ended (or failed) before the reply.
    #[error("the connection ended before the reply: {0}")]
    Closed(#[source] Error),
    /// 2^53 requests were sent on this connection.
    #[error("request ids are exhausted on this connection")]
    IdsExhausted,
}

impl<E: FromReply> CallError<E> {
    fn from_request(error: RequestError) -> Self {
        match error {
            RequestError::Rejected(reply) => match E::from_reply(&reply) {
                Some(error) => Self::Rejected(error),
                None => Self::Refused(reply),
            },
            RequestError::Timeout => Self::Timeout,
            RequestError::InvalidReply(reply) | RequestError::Decode(reply) => {
                Self::InvalidReply(reply)
            }
            RequestError::Encode(error) => Self::Encode(error),
            RequestError::Closed(error) => Self::Closed(error),
            RequestError::IdsExhausted => Self::IdsExhausted,
        }
    }
}

/// Sends the request `tag` with `payload` and decodes its reply or error: the body of every
/// request method of a generated client.
pub async fn call<T, R, E>(
    sender: &JsonSender,
    tag: &str,
    payload: &T,
    timeout: Option<Duration>,
) -> Result<R, CallError<E>>
where
    T: Serialize + ?Sized,
    R: DeserializeOwned,
    E: FromReply,
{
    let result = match timeout {
        Some(timeout) => sender.request_timeout(tag, payload, timeout).await,
        None => sender.request(tag, payload).await,
    };
    result.map_err(CallError::from_request)
}

/// The pushes a typed client receives, in order. `recv` ends with the connection's error once
/// it is over ([`Error::ConnectionClosedOk`] after a clean close).
pub struct Pushes<P> {
    receiver: mpsc::Receiver<Result<P, Error>>,
    sender: JsonSender,
    ended: bool,
}

impl<P> fmt::Debug for Pushes<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pushes").field("ended", &self.ended).finish_non_exhaustive()
    }
}

impl<P> Pushes<P> {
    /// The next push; once the connection is over, its error (every time).
    pub async fn recv(&mut self) -> Result<P, Error> {
        if !self.ended {
            match self.receiver.recv().await {
                Some(Ok(push)) => return Ok(push),
                Some(Err(error)) => {
                    self.ended = true;
                    return Err(error);
                }
                // The receive task ended without a word: only when its runtime shut down.
                None => self.ended = true,
            }
        }
        Err(Error::closed(self.sender.raw().close_info()))
    }
}

/// How many pushes a typed client holds before its receive task waits (and with it the
/// connection's reading: backpressure reaches the server instead of memory growing here).
pub const DEFAULT_PUSH_CAPACITY: usize = 64;

/// Starts a typed client's receive task on `ws`: it routes replies to waiting requests and
/// hands pushes (decoded as `P`, the generated `{Trait}Pushed` enum) to the returned
/// [`Pushes`], at most `capacity` ahead of the application. A server's request is refused with
/// `no_reply`: the protocol declares none.
///
/// Needs a tokio runtime.
pub fn start<P>(ws: WebSocket, config: JsonConfig, capacity: usize) -> (JsonSender, Pushes<P>)
where
    P: DeserializeOwned + Send + 'static,
{
    let mut socket = JsonSocket::with_config(ws, config);
    let sender = socket.sender();
    let (tx, receiver) = mpsc::channel(capacity.max(1));
    tokio::spawn(async move {
        let mut forwarding = true;
        loop {
            match socket.recv::<P>().await {
                Ok(Incoming::Event(push)) => {
                    // Nobody listens any more: keep receiving, so replies still arrive.
                    if forwarding && tx.send(Ok(push)).await.is_err() {
                        forwarding = false;
                    }
                }
                // Dropping the responder answers `no_reply`.
                Ok(Incoming::Request(_)) => {}
                Err(error) => {
                    let _ = tx.send(Err(error)).await;
                    break;
                }
            }
        }
    });
    (sender.clone(), Pushes { receiver, sender, ended: false })
}

/// An application's error reply with a code the derive checked (`AppCode`'s rules).
pub fn reply(code: &'static str, message: &'static str, details: Option<Value>) -> ErrorReply {
    let code = AppCode::new(code).unwrap_or_else(|_| {
        // `#[derive(ReplyError)]` refuses codes that break the rules at compile time.
        unreachable!("the derive checked the error code `{code}`")
    });
    let reply = ErrorReply::new(code, message);
    match details {
        Some(details) => reply.with_details(details),
        None => reply,
    }
}

/// A close frame whose code and reason the derive checked (sendable, at most 123 bytes).
pub fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame::lossy(CloseCode(code), reason)
}

/// The `details` object of a variant's named fields; a field that does not serialise is left
/// out (its reply still goes, with the code and message).
pub fn details(fields: &[(&'static str, Result<Value, serde_json::Error>)]) -> Value {
    let object = fields
        .iter()
        .filter_map(|(key, value)| Some(((*key).to_owned(), value.as_ref().ok()?.clone())))
        .collect();
    Value::Object(object)
}

/// The field `key` of an error reply's `details`, decoded.
pub fn detail<T: DeserializeOwned>(reply: &ErrorReply, key: &str) -> Option<T> {
    let value = reply.details()?.get(key)?;
    T::deserialize(value).ok()
}

/// An error reply's whole `details`, decoded.
pub fn details_as<T: DeserializeOwned>(reply: &ErrorReply) -> Option<T> {
    T::deserialize(reply.details()?).ok()
}

/// A part of a protocol that another crate answers, served beside a typed protocol's own
/// messages on the same connection: palisade-rooms' `Session` answers `room.join`,
/// `room.leave`, `room.presence` and `user.send` this way. `serve_with(socket, &part)` (generated
/// by `#[palisade::protocol]`) hands it each message whose tag it owns; [`ProtocolPart::describe`]
/// adds those messages to the protocol's description, so that a client reads one description
/// of everything the connection speaks.
pub trait ProtocolPart: Sync {
    /// Its messages, as the envelope's `event` and `data` decode (by tag: [`Tags`]).
    type Message: DeserializeOwned + Tags + Send;

    /// Answers one of its messages: a request has a responder, an event none. An `Err` ends
    /// the connection (a send that failed: it is closed already).
    fn handle(
        &self,
        message: Self::Message,
        responder: Option<Responder>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// `description` with this part's messages added.
    fn describe(description: ProtocolDescription) -> ProtocolDescription;
}

/// No part: the protocol's own messages alone (what `serve` and `serve_socket` use).
impl ProtocolPart for () {
    type Message = NoPart;

    async fn handle(&self, message: NoPart, _: Option<Responder>) -> Result<(), Error> {
        match message {}
    }

    fn describe(description: ProtocolDescription) -> ProtocolDescription {
        description
    }
}

/// What a payload of a typed protocol must be: decodable from the envelope by the server,
/// encodable by the typed client, and described by a JSON Schema.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a payload of a protocol",
    label = "derive `Serialize`, `Deserialize` and `schemars::JsonSchema` for it",
    note = "payloads travel both ways (server and typed client) and are described by a JSON Schema"
)]
pub trait Payload: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static> Payload for T {}

/// Emits the message `tag`: a push of the server's pusher, an event of the typed client.
pub async fn emit<T: Payload>(sender: &JsonSender, tag: &str, payload: &T) -> Result<(), Error> {
    sender.emit(tag, payload).await
}

/// [`call`] for the request whose handler returns `O`: the typed client's request methods.
pub async fn request<T: Payload, O: RequestResult>(
    sender: &JsonSender,
    tag: &str,
    payload: &T,
    timeout: Option<Duration>,
) -> Result<O::Reply, CallError<O::Error>> {
    call(sender, tag, payload, timeout).await
}

/// The description of a request whose handler returns `O`.
pub fn describe_request<T: Payload, O: RequestResult>(tag: &str) -> MessageDescription {
    MessageDescription::request::<T, O::Reply, O::Error>(tag)
}

/// The description of an event whose handler returns `O`.
pub fn describe_event<T: Payload, O: EventResult>(tag: &str) -> MessageDescription {
    MessageDescription::event::<T, O::Error>(tag)
}

/// The description of a push.
pub fn describe_push<T: Payload>(tag: &str) -> MessageDescription {
    MessageDescription::push::<T>(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_convert() {
        let ok: Result<u8, ErrorReply> = Ok(1);
        assert_eq!(RequestResult::into_result(ok).ok(), Some(1));
        assert!(EventResult::into_result(()).is_ok());
    }
}
