//! What the two hand-written fan-out servers share (`fanout-tungstenite`,
//! `fanout-fastwebsockets`): the command line, the opening handshake with the request's path,
//! the publication's encoding, and the registry of members — one bounded queue per member,
//! written by a task of its own, as palisade-rooms does it.
//!
//! The protocol is palisade's `examples/fanout.rs`, byte for byte: a client of `/member` gets
//! `{"event":"joined","data":{}}` and then every publication as
//! `{"event":"room.message","data":{"room":"bench","event":"tick","data":{"t":…,"pad":…}}}`;
//! the client of `/publish` sends `{"event":"publish","data":{"t":…,"pad":…}}`. Each
//! publication is parsed once and encoded once; every member's queue holds the same bytes.
//!
//! Each server runs in one of two forms ([`Form`]): *naive*, whose writer sends one message
//! per write (and flush), and *expert*, whose writer takes everything queued, writes it and
//! flushes once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::handshake;

/// Messages waiting for one member, at most, as in palisade's fan-out example; a full queue
/// drops its oldest message.
pub const QUEUE_CAPACITY: usize = 1024;

/// The frame a member gets once it is in the room.
pub const JOINED: &str = r#"{"event":"joined","data":{}}"#;

/// How a member's writer sends what is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One message per write and flush.
    Naive,
    /// Everything queued, then one flush.
    Expert,
}

/// What the publisher sends.
#[derive(Debug, Deserialize)]
struct Publish {
    event: String,
    data: Tick,
}

/// One publication's data, as palisade's example types it.
#[derive(Debug, Deserialize, Serialize)]
struct Tick {
    t: u64,
    pad: String,
}

/// The `room.message` frame for a `publish` event from the publisher, encoded once; `None`
/// for anything else.
pub fn publication(payload: &[u8]) -> Option<String> {
    let publish: Publish = serde_json::from_slice(payload).ok()?;
    if publish.event != "publish" {
        return None;
    }
    let data = serde_json::to_string(&publish.data).ok()?;
    Some(format!(
        r#"{{"event":"room.message","data":{{"room":"bench","event":"tick","data":{data}}}}}"#
    ))
}

/// One member's queue.
#[derive(Debug)]
pub struct Queue<T> {
    state: Mutex<QueueState<T>>,
    notify: Notify,
}

#[derive(Debug)]
struct QueueState<T> {
    messages: VecDeque<T>,
    closed: bool,
}

impl<T> Queue<T> {
    fn state(&self) -> MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, message: T) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        if state.messages.len() >= QUEUE_CAPACITY {
            state.messages.pop_front();
        }
        state.messages.push_back(message);
        drop(state);
        self.notify.notify_one();
    }

    /// The oldest message, once there is one (the naive writer).
    pub async fn pop(&self) -> T {
        loop {
            let notified = self.notify.notified();
            if let Some(message) = self.state().messages.pop_front() {
                return message;
            }
            notified.await;
        }
    }

    /// Everything queued, once there is something (the expert writer).
    pub async fn take_all(&self) -> VecDeque<T> {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.state();
                if !state.messages.is_empty() {
                    return std::mem::take(&mut state.messages);
                }
            }
            notified.await;
        }
    }
}

/// The room: every member's queue.
#[derive(Debug)]
pub struct Registry<T> {
    members: Mutex<Vec<Arc<Queue<T>>>>,
}

impl<T: Clone> Registry<T> {
    /// An empty room.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { members: Mutex::new(Vec::new()) })
    }

    /// A new member's queue.
    pub fn join(&self) -> Arc<Queue<T>> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState { messages: VecDeque::new(), closed: false }),
            notify: Notify::new(),
        });
        self.lock().push(queue.clone());
        queue
    }

    /// Removes a member whose connection ended.
    pub fn leave(&self, queue: &Arc<Queue<T>>) {
        queue.state().closed = true;
        self.lock().retain(|q| !Arc::ptr_eq(q, queue));
    }

    /// Queues `message` for every member.
    pub fn publish(&self, message: &T) {
        for queue in self.lock().iter() {
            queue.push(message.clone());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Queue<T>>>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which endpoint a connection asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/member`
    Member,
    /// `/publish`
    Publish,
}

/// Answers the opening handshake of `stream` (RFC 6455 §4.2.2) and says which endpoint it
/// asked for.
pub async fn accept(
    stream: &mut TcpStream,
) -> Result<Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let head = handshake::read_head(stream, &mut buf).await?;
    if buf.len() > head {
        return Err("frames sent before the handshake was answered".into());
    }
    let line = std::str::from_utf8(&buf[..head])?.lines().next().unwrap_or("");
    let endpoint = match line.split_whitespace().nth(1) {
        Some("/member") => Endpoint::Member,
        Some("/publish") => Endpoint::Publish,
        _ => return Err(format!("no such endpoint: {line}").into()),
    };
    let key = handshake::header(&buf[..head], "sec-websocket-key").ok_or("no Sec-WebSocket-Key")?;
    stream.write_all(handshake::server_response(key).as_bytes()).await?;
    Ok(endpoint)
}

/// Serves `connection` on `--addr HOST:PORT` (`default_addr` without it) in the form
/// `--naive` or `--expert` (required): prints `listening on ws://ADDR` once bound, then runs
/// every accepted connection in a task of its own on one thread.
pub fn serve<F, Fut>(
    name: &str,
    default_addr: &str,
    connection: F,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn(TcpStream, Form) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send + 'static,
{
    let usage = format!("usage: {name} (--naive | --expert) [--addr HOST:PORT]");
    let mut addr = default_addr.to_owned();
    let mut form = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--naive" => form = Some(Form::Naive),
            "--expert" => form = Some(Form::Expert),
            "--addr" => addr = args.next().ok_or_else(|| usage.clone())?,
            _ => return Err(usage.into()),
        }
    }
    let form = form.ok_or_else(|| usage.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on ws://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let task = connection(stream, form);
            tokio::spawn(async move {
                if let Err(e) = task.await {
                    eprintln!("connection failed: {e}");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_is_the_frame_palisade_sends() {
        let frame = publication(br#"{"event":"publish","data":{"t":12,"pad":"ab"}}"#);
        assert_eq!(
            frame.as_deref(),
            Some(
                r#"{"event":"room.message","data":{"room":"bench","event":"tick","data":{"t":12,"pad":"ab"}}}"#
            )
        );
        assert_eq!(publication(br#"{"event":"other","data":{"t":1,"pad":""}}"#), None);
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let registry = Registry::<u32>::new();
        let queue = registry.join();
        for i in 0..QUEUE_CAPACITY as u32 + 3 {
            registry.publish(&i);
        }
        let state = queue.state();
        assert_eq!(state.messages.len(), QUEUE_CAPACITY);
        assert_eq!(state.messages.front(), Some(&3));
    }
}
