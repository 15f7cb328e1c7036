//! End-to-end tests of the Redis backend: a real `redis-server` started by each test on
//! 127.0.0.1 with a free port (and killed by its PID), two palisade servers each with its own
//! `Rooms` over it, and real clients on both.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_conn::{Config, WebSocket};
use palisade_error::CloseCode;
use palisade_json::{Incoming, JsonConfig, JsonSocket, Request, StrikePolicy};
use palisade_proto::message::Message;
use palisade_redis::{RedisBackend, RedisConfig};
use palisade_rooms::{Recovery, RoomOptions, Rooms, RoomsConfig, SessionId, SessionPolicy};
use palisade_server::{BoxError, Path, Running, Server, State};
use serde::Deserialize;
use serde_json::{Value, json};

mod catch_up;
mod cluster;
mod nodes;
mod publish;

/// How long any one wait may take before it fails the test.
const WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` of the test's own, without persistence: a restart loses everything.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// A port nobody listens on now (another test may take it before us: [`spawn_redis`] checks).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `redis-server` on `port` with `args`, and waits until it answers: `None` if it
/// exited (the port was taken meanwhile), or if what answers on the port is another process
/// (another test's server took the port first).
fn spawn_redis(port: u16, args: &[String]) -> Option<Child> {
    let binary = std::env::var("PALISADE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut child = Command::new(&binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} (install redis-server): {e}"));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        let answer = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|client| client.get_connection())
            .and_then(|mut conn| redis::cmd("INFO").arg("server").query::<String>(&mut conn));
        if let Ok(info) = answer {
            if info.contains(&format!("process_id:{}\r", child.id())) {
                return Some(child);
            }
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        assert!(std::time::Instant::now() < deadline, "{binary} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl RedisServer {
    fn start() -> Self {
        for _ in 0..10 {
            let port = free_port();
            if let Some(child) = spawn_redis(port, &[]) {
                return Self { port, child: Some(child) };
            }
        }
        panic!("no free port for redis-server");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it again on its port, and waits until it answers.
    fn restart(&mut self) {
        self.child = Some(spawn_redis(self.port, &[]).expect("redis-server restarts on its port"));
    }

    /// Kills it (SIGKILL, by PID) and waits for its end.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Short heartbeats and backoff, so that deaths and reconnections happen within the tests'
/// waits. `url` is one Redis, or a cluster's seed nodes separated by commas
/// ([`cluster::RedisCluster::url`]).
fn redis_config(url: &str) -> RedisConfig {
    let config = if url.contains(',') {
        RedisConfig::cluster(url.split(','))
    } else {
        RedisConfig::new(url)
    };
    config
        .with_heartbeat(Duration::from_millis(100), Duration::from_millis(500))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .with_request_timeout(Duration::from_millis(500))
        .with_command_timeout(Duration::from_millis(500))
}

/// Rooms named `feed…` keep a history.
fn rooms_config() -> RoomsConfig {
    RoomsConfig::default().with_room_policy(|room| {
        let options = RoomOptions::default();
        if room.starts_with("feed") { options.with_recovery(Recovery::default()) } else { options }
    })
}

/// What test clients send the application.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum App {
    Say { room: String, text: String },
    Announce { text: String },
    Rooms,
}

async fn chat(
    ws: WebSocket,
    State(rooms): State<Rooms>,
    Path(user): Path<String>,
) -> Result<(), BoxError> {
    let config = JsonConfig::default().with_strike_policy(StrikePolicy::off());
    let mut socket = JsonSocket::with_config(ws, config);
    // `/alice+SESSION`: alice, taking over her session SESSION.
    let (user, previous) = match user.split_once('+') {
        Some((user, previous)) => (user.to_owned(), Some(SessionId::from(previous.to_owned()))),
        None => (user, None),
    };
    let meta = json!({ "node": rooms.node() });
    let session = match &previous {
        Some(previous) => rooms.connect_replacing(&socket, &user, meta, previous).await?,
        None => rooms.connect(&socket, &user, meta).await?,
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
                if let Err(err) = rooms.broadcast_all("announce", &json!({ "text": text })).await {
                    socket.emit("failed", &err.reply()).await?;
                }
            }
            Incoming::Request(Request { message: App::Rooms, responder }) => {
                match rooms.rooms().await {
                    Ok(list) => responder.reply(&list).await?,
                    Err(err) => responder.reply_error(&err).await?,
                }
            }
            Incoming::Event(_) | Incoming::Request(_) => {}
        }
    }
}

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// A palisade server with its rooms over Redis.
struct Node {
    running: Running,
    rooms: Rooms,
}

impl Node {
    async fn start(url: &str) -> Self {
        Self::with_config(url, rooms_config()).await
    }

    async fn with_config(url: &str, config: RoomsConfig) -> Self {
        let backend = RedisBackend::connect(redis_config(url)).await.unwrap();
        Self::with_backend(backend, config).await
    }

    async fn with_backend(backend: RedisBackend, config: RoomsConfig) -> Self {
        let rooms = Rooms::with_backend(config, backend);
        let running = Server::builder()
            .route("/{user}", chat)
            .with_state(rooms.clone())
            .with_subprotocols([palisade_json::SUBPROTOCOL])
            .with_config(quiet())
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

/// A client that speaks the room protocol frame by frame.
struct Peer {
    ws: WebSocket,
    events: VecDeque<Value>,
    next_id: u64,
    session: String,
}

impl Peer {
    async fn open(addr: SocketAddr, user: &str) -> Self {
        let connected = palisade_client::Client::new()
            .with_config(quiet())
            .with_subprotocols([palisade_json::SUBPROTOCOL])
            .connect(&format!("ws://{addr}/{user}"))
            .await
            .unwrap();
        let mut peer = Self {
            ws: connected.into_socket(),
            events: VecDeque::new(),
            next_id: 0,
            session: String::new(),
        };
        let welcome = peer.event("welcome").await;
        peer.session = welcome["session"].as_str().unwrap().to_owned();
        peer
    }

    async fn send(&self, value: Value) {
        self.ws.send(value.to_string()).await.unwrap();
    }

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

    async fn ok(&mut self, event: &str, data: Value) -> Value {
        let reply = self.request(event, data).await;
        assert_eq!(reply["status"], "ok", "{event} → {reply}");
        reply["data"].clone()
    }

    async fn refused(&mut self, event: &str, data: Value, code: &str) -> Value {
        let reply = self.request(event, data).await;
        assert_eq!(reply["status"], "error", "{event} → {reply}");
        assert_eq!(reply["error"]["code"], code, "{event} → {reply}");
        reply["error"].clone()
    }

    async fn next_event(&mut self) -> Value {
        match self.events.pop_front() {
            Some(event) => event,
            None => self.frame().await,
        }
    }

    async fn event(&mut self, name: &str) -> Value {
        let event = self.next_event().await;
        assert_eq!(event["event"], name, "{event}");
        event["data"].clone()
    }

    /// The next event other than a presence event, which must be `name`: its data.
    async fn event_past_presence(&mut self, name: &str) -> Value {
        loop {
            let event = self.next_event().await;
            if event["event"].as_str().is_some_and(|e| e.starts_with("presence.")) {
                continue;
            }
            assert_eq!(event["event"], name, "{event}");
            return event["data"].clone();
        }
    }

    async fn join(&mut self, room: &str) -> Value {
        self.ok("room.join", json!({ "room": room })).await
    }
}

/// Polls `check` until it holds; fails the test after [`WAIT`].
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within the wait: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
