//! The JSON layer on a palisade connection: [`JsonSocket`] receives and answers,
//! [`JsonSender`] emits and requests from any task, [`Request`] is answered exactly once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream};
use palisade_conn::{ConnectionId, Sender, TrySendError, WebSocket};
use palisade_error::{
    ApplicationError, CloseCode, ConnectionClosed, Error, PayloadTooBig, SizeLimit,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::code::{ErrorCode, ErrorReply, Outcome, ReplyError, StrikeClass};
use crate::limits::Limits;
use crate::validate::{Invalid, Validate};
use crate::wire::{self, Codec, EncodeError, Inbound, MAX_ID, Refused};

/// The close reason sent when a peer strikes out: generic, whatever the failures were.
const STRIKE_REASON: &str = "too many invalid messages";

/// How a [`JsonSocket`] behaves. `#[non_exhaustive]`: start from `JsonConfig::default()` and
/// change what you need with the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonConfig {
    /// Size and depth limits of incoming frames. Default: 64 KiB, 32 levels.
    pub limits: Limits,
    /// When a peer whose messages keep failing is closed. Default: 10 failures in 10 s.
    pub strikes: StrikePolicy,
    /// How long [`JsonSender::request`] waits for the reply. Default: 10 s.
    pub request_timeout: Duration,
    /// JSON in text frames (default) or, with feature `msgpack`, MessagePack in binary ones.
    pub codec: Codec,
}

impl Default for JsonConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            strikes: StrikePolicy::default(),
            request_timeout: Duration::from_secs(10),
            codec: Codec::default(),
        }
    }
}

impl JsonConfig {
    /// With these limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// With this strike policy.
    pub fn with_strike_policy(mut self, strikes: StrikePolicy) -> Self {
        self.strikes = strikes;
        self
    }

    /// With this default request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// With this codec.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }
}

/// When a peer whose messages keep failing is closed: after `max` failures within `window`
/// (on tokio's clock), with the close code of the last failure's class
/// ([`ErrorCode::strike`]). Failures of the application (its own error codes) never count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrikePolicy {
    max: u32,
    window: Duration,
}

impl Default for StrikePolicy {
    fn default() -> Self {
        Self { max: 10, window: Duration::from_secs(10) }
    }
}

impl StrikePolicy {
    /// Close after `max` failures within `window`; `max` 0 never closes.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }

    /// Never close: every failure is answered, however many.
    pub fn off() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// The number of failures that closes the connection (0: never).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The window the failures are counted in.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// The failures within the window.
#[derive(Debug)]
struct Strikes {
    policy: StrikePolicy,
    at: VecDeque<Instant>,
}

impl Strikes {
    fn new(policy: StrikePolicy) -> Self {
        Self { policy, at: VecDeque::new() }
    }

    /// Records a failure at `now`; true when it is the one too many.
    fn record(&mut self, now: Instant) -> bool {
        if self.policy.max == 0 {
            return false;
        }
        while self.at.front().is_some_and(|first| now.duration_since(*first) >= self.policy.window)
        {
            self.at.pop_front();
        }
        self.at.push_back(now);
        // At most `max` entries: the one that reaches it ends the connection.
        self.at.len() >= self.policy.max as usize
    }
}

/// A message the application receives.
#[derive(Debug)]
pub enum Incoming<M> {
    /// An event: nothing to answer.
    Event(M),
    /// A request: answer it with [`Request::reply`] or [`Request::reply_error`].
    Request(Request<M>),
}

impl<M> Incoming<M> {
    /// The message, whichever kind.
    pub fn message(&self) -> &M {
        match self {
            Self::Event(message) => message,
            Self::Request(request) => &request.message,
        }
    }
}

/// A request from the peer. Its [`Responder`] answers it once: replying consumes it, and
/// dropping it unanswered sends the error reply `no_reply` (so the peer is not left waiting
/// for its timeout).
#[derive(Debug)]
pub struct Request<M> {
    /// The message.
    pub message: M,
    /// What answers it; take it out to answer from elsewhere.
    pub responder: Responder,
}

impl<M> Request<M> {
    /// The request's id (the peer's).
    pub fn id(&self) -> u64 {
        self.responder.id
    }

    /// Answers with an ok reply carrying `data`.
    pub async fn reply<R: Serialize + ?Sized>(self, data: &R) -> Result<(), Error> {
        self.responder.reply(data).await
    }

    /// Answers with what `error` chooses: an error reply, or closing the connection.
    pub async fn reply_error<E: ReplyError + ?Sized>(self, error: &E) -> Result<(), Error> {
        self.responder.reply_error(error).await
    }
}

/// Answers one request, once.
pub struct Responder {
    id: u64,
    sender: JsonSender,
    answered: bool,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("conn", &self.sender.id())
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// The request's id (the peer's).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Answers with an ok reply carrying `data`. If `data` cannot be encoded, the peer gets
    /// `internal` and the caller the encoding error.
    pub async fn reply<R: Serialize + ?Sized>(mut self, data: &R) -> Result<(), Error> {
        self.answered = true;
        let codec = self.sender.shared.codec;
        match wire::encode_reply(codec, self.id, data) {
            Ok(frame) => Ok(self.sender.sender.send(frame).await?),
            Err(err) => {
                self.send_error(&ErrorReply::internal()).await?;
                Err(err.into())
            }
        }
    }

    /// Answers with what `error` chooses ([`ReplyError::outcome`]): an error reply, or the
    /// end of the connection with the close frame it names.
    pub async fn reply_error<E: ReplyError + ?Sized>(mut self, error: &E) -> Result<(), Error> {
        self.answered = true;
        match error.outcome() {
            Outcome::Reply(reply) => self.send_error(&reply).await,
            Outcome::Close(frame) => {
                Ok(self.sender.sender.close(frame.code(), frame.reason()).await?)
            }
        }
    }

    async fn send_error(&self, reply: &ErrorReply) -> Result<(), Error> {
        let frame = wire::encode_error_reply(self.sender.shared.codec, Some(self.id), reply)?;
        self.sender.sender.send(frame).await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let conn = self.sender.id();
        tracing::debug!(%conn, id = self.id, "json: request dropped unanswered; sending no_reply");
        let reply = ErrorReply::generic(ErrorCode::NoReply);
        let Ok(frame) = wire::encode_error_reply(self.sender.shared.codec, Some(self.id), &reply)
        else {
            return;
        };
        match self.sender.sender.try_send(frame) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            // The write buffer is full: wait our turn in a task, if there is a runtime.
            Err(TrySendError::Full(frame)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let sender = self.sender.sender.clone();
                    runtime.spawn(async move { sender.send(frame).await });
                }
            }
            Err(_) => {}
        }
    }
}

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply came before the deadline (a reply that comes later is dropped).
    #[error("no reply before the deadline")]
    Timeout,
    /// The peer answered with an error reply.
    #[error("the peer refused the request: {0}")]
    Rejected(ErrorReply),
    /// The peer's reply broke the envelope (which it was told, unless it was an error reply).
    #[error("the peer's reply is not a valid reply: {0}")]
    InvalidReply(ErrorReply),
    /// The reply's `data` does not decode into the type asked for.
    #[error("the reply's data does not decode: {0}")]
    Decode(ErrorReply),
    /// The request's data could not be encoded; nothing was sent.
    #[error(transparent)]
    Encode(EncodeError),
    /// The connection ended (or failed) before the reply.
    #[error("the connection ended before the reply: {0}")]
    Closed(#[source] Error),
    /// 2^53 requests were sent on this connection: ids would have to be reused.
    #[error("request ids are exhausted on this connection")]
    IdsExhausted,
}

/// What the receive loop hands a waiting request.
#[derive(Debug)]
enum Delivery {
    Reply(Result<Value, ErrorReply>),
    Invalid(ErrorReply),
}

/// What became of a reply.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Delivered,
    /// For an id we sent whose request is over (timed out, cancelled, answered already).
    Late,
    /// For an id we never sent.
    Unknown,
}

/// The state every sender of a connection shares.
#[derive(Debug)]
struct Shared {
    codec: Codec,
    request_timeout: Duration,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Ids count up from 0 and are never reused, so any id below is one we sent.
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Delivery>>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The table stays consistent whatever panicked while holding it (single inserts and
        // removals).
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self) -> Result<(u64, oneshot::Receiver<Delivery>), RequestError> {
        let mut pending = self.pending();
        let id = pending.next_id;
        if id > MAX_ID {
            return Err(RequestError::IdsExhausted);
        }
        pending.next_id += 1;
        let (tx, rx) = oneshot::channel();
        pending.waiting.insert(id, tx);
        Ok((id, rx))
    }

    fn deliver(&self, id: u64, delivery: Delivery) -> Route {
        let mut pending = self.pending();
        match pending.waiting.remove(&id) {
            Some(waiting) => match waiting.send(delivery) {
                Ok(()) => Route::Delivered,
                Err(_) => Route::Late,
            },
            None if id < pending.next_id => Route::Late,
            None => Route::Unknown,
        }
    }
}

/// Takes a request out of the table when its future ends, however it ends.
struct Unregister<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.shared.pending().waiting.remove(&self.id);
    }
}

/// A cloneable handle that emits events and sends requests on a connection from any task.
///
/// Replies reach a waiting [`JsonSender::request`] through the connection's receive loop:
/// some task must be calling [`JsonSocket::recv`] (a server handler's loop does).
#[derive(Clone)]
pub struct JsonSender {
    sender: Sender,
    shared: Arc<Shared>,
}

impl fmt::Debug for JsonSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSender").field("conn", &self.sender.id()).finish_non_exhaustive()
    }
}

impl JsonSender {
    /// The connection's number.
    pub fn id(&self) -> ConnectionId {
        self.sender.id()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Resolves once the connection is over.
    pub async fn closed(&self) -> ConnectionClosed {
        self.sender.closed().await
    }

    /// The palisade sender underneath, for frames of your own.
    pub fn raw(&self) -> &Sender {
        &self.sender
    }

    /// Emits an event: `{"event": event, "data": data}`.
    pub async fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), Error> {
        let frame = wire::encode_event(self.shared.codec, event, data)?;
        self.sender.send(frame).await
    }

    /// Sends `value` as it is, without an envelope (JSON text, or MessagePack with that
    /// codec): the counterpart of [`JsonSocket::recv_json`].
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let frame = wire::encode(self.shared.codec, value)?;
        self.sender.send(frame).await
    }

    /// Sends an error reply that answers no request (`"reply": null`): how a failure to handle
    /// an *event* reaches the peer.
    pub async fn emit_error(&self, reply: &ErrorReply) -> Result<(), Error> {
        let frame = wire::encode_error_reply(self.shared.codec, None, reply)?;
        self.sender.send(frame).await
    }

    /// Sends a request and waits for its reply, up to the configured timeout
    /// ([`JsonConfig::request_timeout`]).
    pub async fn request<R, T>(&self, event: &str, data: &T) -> Result<R, RequestError>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        self.request_timeout(event, data, self.shared.request_timeout).await
    }

    /// [`JsonSender::request`] with a timeout of its own.
    pub async fn request_timeout<R, T>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<R, RequestError>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        self.request_until(event, data, Instant::now() + timeout).await
    }

    /// [`JsonSender::request`] with a deadline (shared by several requests, say).
    pub async fn request_until<R, T>(
        &self,
        event: &str,
        data: &T,
        deadline: Instant,
    ) -> Result<R, RequestError>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        let (id, reply) = self.shared.register()?;
        let _unregister = Unregister { shared: &self.shared, id };
        let frame = wire::encode_request(self.shared.codec, event, id, data)
            .map_err(RequestError::Encode)?;
        let exchange = async {
            self.sender.send(frame).await.map_err(RequestError::Closed)?;
            tokio::select! {
                biased;
                delivery = reply => delivery.map_err(|_| {
                    // The table was dropped with the connection's last handle.
                    RequestError::Closed(Error::closed(self.sender.close_info()))
                }),
                closed = self.sender.closed() => Err(RequestError::Closed(Error::closed(closed))),
            }
        };
        let delivery = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(delivery) => delivery?,
            Err(_elapsed) => return Err(RequestError::Timeout),
        };
        match delivery {
            Delivery::Reply(Ok(data)) => wire::decode_data(data).map_err(RequestError::Decode),
            Delivery::Reply(Err(error)) => Err(RequestError::Rejected(error)),
            Delivery::Invalid(error) => Err(RequestError::InvalidReply(error)),
        }
    }
}

/// Sends one request to each of `senders` and yields each reply as it comes, all under one
/// `deadline`: a peer that does not answer in time yields [`RequestError::Timeout`] at the
/// deadline, without delaying the others. For rooms and broadcasts with acknowledgements.
pub fn request_many<R, T>(
    senders: impl IntoIterator<Item = JsonSender>,
    event: &str,
    data: &T,
    deadline: Instant,
) -> Result<impl Stream<Item = (ConnectionId, Result<R, RequestError>)> + Send + 'static, EncodeError>
where
    R: DeserializeOwned + Send + 'static,
    T: Serialize + ?Sized,
{
    // Encoded once into a value; each request differs only in its id.
    let data = Arc::new(serde_json::to_value(data).map_err(EncodeError::json)?);
    let event: Arc<str> = event.into();
    let requests: FuturesUnordered<_> = senders
        .into_iter()
        .map(|sender| {
            let (data, event) = (data.clone(), event.clone());
            async move {
                let result = sender.request_until::<R, Value>(&event, &data, deadline).await;
                (sender.id(), result)
            }
        })
        .collect();
    Ok(requests)
}

/// Typed JSON messages on a connection: receives events and requests (answering bad input
/// itself), and sends through its [`JsonSender`].
///
/// - [`JsonSocket::recv`] returns the next valid event or request. Everything else is dealt
///   with on the way: bad frames get their error reply and count as strikes, replies to our
///   requests go to the [`JsonSender::request`] waiting for them, late ones are dropped.
/// - [`JsonSocket::recv_validated`] does the same and also checks [`Validate`].
/// - [`JsonSocket::recv_json`] receives a bare value, without an envelope.
///
/// Each logs one line at debug level per refused frame, naming the error code, never the
/// content. Once the peer strikes out the connection is closed and `recv` returns the error
/// for the close code used.
pub struct JsonSocket {
    ws: WebSocket,
    sender: JsonSender,
    limits: Limits,
    strikes: Strikes,
}

impl fmt::Debug for JsonSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSocket").field("conn", &self.ws.id()).finish_non_exhaustive()
    }
}

impl JsonSocket {
    /// JSON messages on `ws`, with the default configuration.
    pub fn new(ws: WebSocket) -> Self {
        Self::with_config(ws, JsonConfig::default())
    }

    /// JSON messages on `ws`.
    pub fn with_config(ws: WebSocket, config: JsonConfig) -> Self {
        let shared = Arc::new(Shared {
            codec: config.codec,
            request_timeout: config.request_timeout,
            pending: Mutex::new(Pending::default()),
        });
        let sender = JsonSender { sender: ws.sender(), shared };
        Self { ws, sender, limits: config.limits, strikes: Strikes::new(config.strikes) }
    }

    /// The connection's number.
    pub fn id(&self) -> ConnectionId {
        self.ws.id()
    }

    /// The connection underneath.
    pub fn socket(&self) -> &WebSocket {
        &self.ws
    }

    /// The connection underneath, giving up the JSON layer. Requests still waiting get no
    /// reply routed to them any more: they end at their deadline.
    pub fn into_inner(self) -> WebSocket {
        self.ws
    }

    /// A sender for other tasks.
    pub fn sender(&self) -> JsonSender {
        self.sender.clone()
    }

    /// Emits an event; see [`JsonSender::emit`].
    pub async fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), Error> {
        self.sender.emit(event, data).await
    }

    /// Sends a bare value; see [`JsonSender::send_json`].
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.sender.send_json(value).await
    }

    /// Closes the connection; see [`WebSocket::close`].
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.ws.close(code, reason).await
    }

    /// Receives the next event or request whose `data` decodes into `M` — typically an enum
    /// with `#[serde(tag = "event", content = "data")]` (it sees `{"event": …, "data": …}`).
    /// Cancelling it never loses a message meant for the application (it returns as soon as
    /// one is decoded); cancelling it while it answers a bad frame may lose that error reply.
    ///
    /// # Errors
    ///
    /// The connection's error once it is over (see [`WebSocket::recv`]); after a strike-out,
    /// [`ApplicationError::UndecodablePayload`] (1007), [`ApplicationError::PolicyViolation`]
    /// (1008), [`Error::PayloadTooBig`] (1009) or [`ApplicationError::UnsupportedData`] (1003).
    pub async fn recv<M: DeserializeOwned>(&mut self) -> Result<Incoming<M>, Error> {
        self.recv_checked(|_: &M| Ok(())).await
    }

    /// [`JsonSocket::recv`], also checking the message's rules ([`Validate`]): a message that
    /// breaks one is answered with `validation_failed` and counts as a strike.
    pub async fn recv_validated<M>(&mut self) -> Result<Incoming<M>, Error>
    where
        M: DeserializeOwned + Validate,
    {
        self.recv_checked(M::validate).await
    }

    /// Receives a bare value (no envelope), answering frames that do not decode into `T` as
    /// [`JsonSocket::recv`] does, with `"reply": null`.
    pub async fn recv_json<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        loop {
            let frame = self.ws.recv().await?;
            match wire::decode_bare(&frame, self.sender.shared.codec, &self.limits) {
                Ok(value) => return Ok(value),
                Err(refused) => self.refuse(refused, frame.len()).await?,
            }
        }
    }

    async fn recv_checked<M: DeserializeOwned>(
        &mut self,
        check: impl Fn(&M) -> Result<(), Invalid>,
    ) -> Result<Incoming<M>, Error> {
        loop {
            let frame = self.ws.recv().await?;
            let size = frame.len();
            let codec = self.sender.shared.codec;
            if let Some((id, message)) = wire::decode_typed::<M>(&frame, codec, &self.limits) {
                if let Err(invalid) = check(&message) {
                    self.refuse(Refused::from_reply(invalid.to_reply()).to(id), size).await?;
                    continue;
                }
                return Ok(self.incoming(id, message));
            }
            let (event, id, data) =
                match wire::decode(&frame, self.sender.shared.codec, &self.limits) {
                    Ok(Inbound::Message { event, id, data }) => (event, id, data),
                    Ok(Inbound::Reply { id, result }) => {
                        self.route(id, result, size).await?;
                        continue;
                    }
                    Ok(Inbound::Rejection(error)) => {
                        tracing::debug!(
                            conn = %self.ws.id(),
                            code = error.code().as_str(),
                            "json: the peer refused a message of ours"
                        );
                        continue;
                    }
                    Err(refused) => {
                        self.refuse(refused, size).await?;
                        continue;
                    }
                };
            let message = match wire::decode_message::<M>(event, data) {
                Ok(message) => message,
                Err(error) => {
                    self.refuse(Refused::from_reply(error).to(id), size).await?;
                    continue;
                }
            };
            if let Err(invalid) = check(&message) {
                self.refuse(Refused::from_reply(invalid.to_reply()).to(id), size).await?;
                continue;
            }
            return Ok(self.incoming(id, message));
        }
    }

    fn incoming<M>(&self, id: Option<u64>, message: M) -> Incoming<M> {
        match id {
            None => Incoming::Event(message),
            Some(id) => Incoming::Request(Request {
                message,
                responder: Responder { id, sender: self.sender.clone(), answered: false },
            }),
        }
    }

    /// Hands a reply to the request waiting for it.
    async fn route(
        &mut self,
        id: u64,
        result: Result<Value, ErrorReply>,
        size: usize,
    ) -> Result<(), Error> {
        let is_error = result.is_err();
        match self.sender.shared.deliver(id, Delivery::Reply(result)) {
            Route::Delivered => Ok(()),
            Route::Late => {
                tracing::debug!(conn = %self.ws.id(), id, "json: late reply dropped");
                Ok(())
            }
            Route::Unknown => {
                let refused = Refused::generic(ErrorCode::UnknownReply).unanswered(is_error);
                self.refuse(refused, size).await
            }
        }
    }

    /// Answers a refused frame (unless it was an error reply), counts the strike, and closes
    /// the connection when it is the one too many.
    async fn refuse(&mut self, refused: Refused, size: usize) -> Result<(), Error> {
        let code = refused.error().code().clone();
        let conn = self.ws.id();
        tracing::debug!(%conn, code = code.as_str(), "json: refused a message");
        if let Some(request) = refused.request() {
            // A broken reply still ends the request it names.
            self.sender.shared.deliver(request, Delivery::Invalid(refused.error().clone()));
        }
        if refused.should_answer() {
            let frame = refused.encode(self.sender.shared.codec).map_err(|e| {
                // Our own error reply always encodes; if it did not, say so and go on.
                tracing::error!(%conn, "json: could not encode an error reply: {e}");
            });
            if let Ok(frame) = frame {
                self.ws.send(frame).await?;
            }
        }
        let Some(class) = code.strike() else { return Ok(()) };
        if !self.strikes.record(Instant::now()) {
            return Ok(());
        }
        let close_code = class.close_code();
        tracing::debug!(%conn, code = code.as_str(), %close_code, "json: peer struck out; closing");
        if let Err(err) = self.ws.close(close_code, STRIKE_REASON).await {
            tracing::debug!(%conn, "json: the close handshake did not complete: {err}");
        }
        Err(self.strike_error(class, &code, size))
    }

    /// The error `recv` returns after a strike-out: the one whose close code was sent.
    fn strike_error(&self, class: StrikeClass, last: &ErrorCode, size: usize) -> Error {
        let policy = self.strikes.policy;
        let detail = format!(
            "{} invalid messages within {:?}, the last `{last}`",
            policy.max(),
            policy.window()
        );
        let app = |e| Error::Application(Box::new(e));
        match class {
            StrikeClass::Undecodable => app(ApplicationError::UndecodablePayload {
                format: self.sender.shared.codec.name(),
                detail,
            }),
            StrikeClass::Policy => app(ApplicationError::PolicyViolation { detail }),
            StrikeClass::TooBig => Error::PayloadTooBig(Box::new(PayloadTooBig {
                size: Some(size as u64),
                max: self.limits.max_size as u64,
                what: SizeLimit::Message,
            })),
            StrikeClass::Unsupported => app(ApplicationError::UnsupportedData { detail }),
        }
    }
}

/// Runs `work` while receiving on `socket` (so that replies reach `work`'s requests),
/// handing every message that arrives meanwhile to `on_message`. For a task that must both
/// wait on its own requests and keep receiving.
pub async fn while_receiving<M, F, W>(
    socket: &mut JsonSocket,
    work: W,
    mut on_message: F,
) -> Result<W::Output, Error>
where
    M: DeserializeOwned,
    W: Future,
    F: FnMut(Incoming<M>),
{
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            incoming = socket.recv::<M>() => on_message(incoming?),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn strikes_count_within_the_window() {
        let mut strikes = Strikes::new(StrikePolicy::new(3, Duration::from_secs(10)));
        let t0 = Instant::now();
        assert!(!strikes.record(t0));
        assert!(!strikes.record(t0 + Duration::from_secs(1)));
        // The first has left the window: still two.
        assert!(!strikes.record(t0 + Duration::from_secs(10)));
        assert!(strikes.record(t0 + Duration::from_millis(10_500)));
    }

    #[test]
    fn strikes_off_never_close() {
        let mut strikes = Strikes::new(StrikePolicy::off());
        let t0 = Instant::now();
        assert!((0..1000).all(|_| !strikes.record(t0)));
        assert!(strikes.at.is_empty());
    }

    #[test]
    fn ids_are_never_reused_and_late_replies_are_told_from_unknown_ones() {
        let shared = Shared {
            codec: Codec::Json,
            request_timeout: Duration::from_secs(1),
            pending: Mutex::new(Pending::default()),
        };
        let (a, _rx_a) = shared.register().unwrap();
        let (b, rx_b) = shared.register().unwrap();
        assert_eq!((a, b), (0, 1));
        drop(rx_b);
        // The request that sent `b` is gone: its reply is late, not unknown.
        assert_eq!(shared.deliver(b, Delivery::Reply(Ok(Value::Null))), Route::Late);
        assert_eq!(shared.deliver(a, Delivery::Reply(Ok(Value::Null))), Route::Delivered);
        assert_eq!(shared.deliver(a, Delivery::Reply(Ok(Value::Null))), Route::Late);
        assert_eq!(shared.deliver(2, Delivery::Reply(Ok(Value::Null))), Route::Unknown);
        shared.pending().next_id = MAX_ID + 1;
        assert!(matches!(shared.register(), Err(RequestError::IdsExhausted)));
    }
}
