//! End-to-end tests of palisade-rooms: a real palisade server whose handler puts every
//! connection into a [`Rooms`] registry, and real palisade clients over TCP on 127.0.0.1
//! that speak the room protocol frame by frame ([`Peer`]). Recovery tests put a TCP proxy
//! between client and server ([`Cut`]) to cut the connection without a close frame.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use palisade_conn::{Config, WebSocket};
use palisade_error::{CloseCode, Error};
use palisade_json::{Incoming, JsonConfig, JsonSocket, Request, StrikePolicy};
use palisade_proto::message::Message;
use palisade_rooms::{Rooms, RoomsConfig, SessionId};
use palisade_server::{BoxError, Path, Running, Server, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod hostile;
mod recovery;
mod rooms;
mod slow;

/// How long any one wait in these tests may take before it fails the test.
const WAIT: Duration = Duration::from_secs(10);

/// What test clients send the application (besides the room protocol).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum App {
    /// Event: published to the room's other members as `said`.
    Say { room: String, text: String },
    /// Request: the server publishes `count` messages `tick` to `room`, to everyone.
    Publish { room: String, count: u64 },
    /// Event: emitted to everyone as `announce`.
    Announce { text: String },
    /// Request: the server's own `to_user`.
    Notify { user: String },
    /// Request: the room listing.
    Rooms,
}

/// The test server's handler: the route's segment is the user's name; users whose name starts
/// with `guest` get `{"role": "guest"}` as metadata, the others `{"role": "member"}`.
async fn chat(
    ws: WebSocket,
    State(rooms): State<Rooms>,
    Path(user): Path<String>,
) -> Result<(), BoxError> {
    let config = JsonConfig::default().with_strike_policy(StrikePolicy::off());
    let mut socket = JsonSocket::with_config(ws, config);
    let role = if user.starts_with("guest") { "guest" } else { "member" };
    // `/alice+SESSION`: alice, taking over her session SESSION.
    let (user, previous) = match user.split_once('+') {
        Some((user, previous)) => (user.to_owned(), Some(SessionId::from(previous.to_owned()))),
        None => (user, None),
    };
    let meta = json!({ "role": role });
    let connected = match &previous {
        Some(previous) => rooms.connect_replacing(&socket, &user, meta, previous).await,
        None => rooms.connect(&socket, &user, meta).await,
    };
    let session = match connected {
        Ok(session) => session,
        Err(err) => {
            socket.emit("refused", &err.reply()).await?;
            socket.close(CloseCode::POLICY_VIOLATION, "refused").await?;
            return Ok(());
        }
    };
    socket.emit("welcome", &json!({ "session": session.member().session() })).await?;
    loop {
        match session.recv::<App>(&mut socket).await? {
            Incoming::Event(App::Say { room, text }) => {
                let said = json!({ "from": user, "text": text });
                if let Err(err) = session.broadcast_others(&room, "said", &said).await {
                    socket.emit("failed", &err.reply()).await?;
                }
            }
            Incoming::Event(App::Announce { text }) => {
                rooms.broadcast_all("announce", &json!({ "text": text })).await?
            }
            Incoming::Request(Request { message, responder }) => match message {
                App::Publish { room, count } => {
                    for n in 0..count {
                        rooms.broadcast(&room, "tick", &json!({ "n": n })).await?;
                    }
                    responder.reply(&count).await?
                }
                App::Notify { user } => match rooms.to_user(&user, "notice", &json!({})).await {
                    Ok(sessions) => responder.reply(&sessions).await?,
                    Err(err) => responder.reply_error(&err).await?,
                },
                App::Rooms => responder.reply(&rooms.rooms().await?).await?,
                _ => {}
            },
            Incoming::Event(_) => {}
        }
    }
}

/// Keepalive off: nothing but the test's own frames on the wire.
fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// A server with its registry.
struct Node {
    running: Running,
    rooms: Rooms,
}

impl Node {
    async fn start(config: RoomsConfig) -> Self {
        Self::with_rooms(Rooms::new(config)).await
    }

    async fn with_rooms(rooms: Rooms) -> Self {
        Self::with_rooms_config(rooms, quiet()).await
    }

    async fn with_rooms_config(rooms: Rooms, config: Config) -> Self {
        let running = Server::builder()
            .route("/{user}", chat)
            .with_state(rooms.clone())
            .with_subprotocols([palisade_json::SUBPROTOCOL])
            .with_config(config)
            .build()
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        Self { running, rooms }
    }

    fn addr(&self) -> SocketAddr {
        self.running.local_addr()
    }
}

/// A client that speaks the room protocol frame by frame and reads the server's frames as
/// JSON, keeping events that arrive while it waits for a reply.
struct Peer {
    ws: WebSocket,
    events: VecDeque<Value>,
    next_id: u64,
    session: String,
}

impl Peer {
    /// Connects as `user` and waits for the welcome.
    async fn open(addr: SocketAddr, user: &str) -> Self {
        let mut peer = Self::connect(addr, user).await;
        let welcome = peer.event("welcome").await;
        peer.session = welcome["session"].as_str().unwrap().to_owned();
        peer
    }

    /// Connects as `user` without waiting for anything.
    async fn connect(addr: SocketAddr, user: &str) -> Self {
        let connected = palisade_client::Client::new()
            .with_config(quiet())
            .with_subprotocols([palisade_json::SUBPROTOCOL])
            .connect(&format!("ws://{addr}/{user}"))
            .await
            .unwrap();
        Self {
            ws: connected.into_socket(),
            events: VecDeque::new(),
            next_id: 0,
            session: String::new(),
        }
    }

    async fn send(&self, value: Value) {
        self.ws.send(value.to_string()).await.unwrap();
    }

    /// The next frame from the server.
    async fn frame(&mut self) -> Value {
        let message = tokio::time::timeout(WAIT, self.ws.recv())
            .await
            .expect("a frame within the wait")
            .unwrap();
        match message {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            Message::Binary(_) => panic!("expected a text frame"),
        }
    }

    /// Sends a request and returns its whole reply (`status`, `data` or `error`).
    async fn request(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "event": event, "id": id, "data": data })).await;
        loop {
            let frame = self.frame().await;
            if frame["reply"] == json!(id) {
                return frame;
            }
            self.events.push_back(frame);
        }
    }

    /// A request that must succeed: its `data`.
    async fn ok(&mut self, event: &str, data: Value) -> Value {
        let reply = self.request(event, data).await;
        assert_eq!(reply["status"], "ok", "{event} → {reply}");
        reply["data"].clone()
    }

    /// A request that must fail with `code`: its `error`.
    async fn refused(&mut self, event: &str, data: Value, code: &str) -> Value {
        let reply = self.request(event, data).await;
        assert_eq!(reply["status"], "error", "{event} → {reply}");
        assert_eq!(reply["error"]["code"], code, "{event} → {reply}");
        reply["error"].clone()
    }

    /// The next event, whatever it is.
    async fn next_event(&mut self) -> Value {
        match self.events.pop_front() {
            Some(event) => event,
            None => self.frame().await,
        }
    }

    /// The next event, which must be `name`: its data.
    async fn event(&mut self, name: &str) -> Value {
        let event = self.next_event().await;
        assert_eq!(event["event"], name, "{event}");
        event["data"].clone()
    }

    /// Joins `room`; the reply's data.
    async fn join(&mut self, room: &str) -> Value {
        self.ok("room.join", json!({ "room": room })).await
    }

    /// Nothing arrives within a short while (other traffic has been flushed by a round trip).
    async fn quiet(&mut self) {
        let rooms = self.ok("rooms", Value::Null).await;
        assert!(rooms.is_array());
        assert!(self.events.is_empty(), "unexpected events: {:?}", self.events);
    }

    /// Receives until the connection ends; the close code it ended with.
    async fn closed_with(&self) -> CloseCode {
        loop {
            match tokio::time::timeout(WAIT, self.ws.recv()).await.expect("closed within the wait")
            {
                Ok(_) => {}
                Err(Error::ConnectionClosedError(closed) | Error::ConnectionClosedOk(closed)) => {
                    return closed.code();
                }
                Err(other) => panic!("ended with {other}"),
            }
        }
    }
}

/// A TCP proxy between a client and the server that can cut every connection at once, with no
/// close frame and no FIN from the server's side: what a lost network does.
struct Cut {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    links: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Cut {
    async fn to(server: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(server).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
                kept.lock().unwrap().push(link);
            }
        });
        Self { addr, accept, links }
    }

    /// Drops both sides of every connection.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Waits until `check` holds, polling; fails the test after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "not within the wait: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
