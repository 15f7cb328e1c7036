//! A room chat server without a web page: clients connect to `/USER`, join rooms, say things to
//! a room, whisper to a user, and ask who is there. The room protocol (`room.join`,
//! `room.leave`, `room.presence`, `user.send`) is answered by the rooms layer; the handler only
//! has the chat's own events. Rooms named `news…` keep a history: a client that comes back with
//! its last offset gets what it missed. With
//! `--redis redis://127.0.0.1:6379/` (feature `redis`) several copies of it share their rooms.
//! The book's "Rooms" chapter shows its parts.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example rooms -- --addr 127.0.0.1:9006
//! ```
//!
//! then connect as `ws://127.0.0.1:9006/alice` with the subprotocol `palisade.json.v1` and send
//! `{"event":"room.join","id":1,"data":{"room":"lobby"}}` (the reply lists who is there),
//! `{"event":"say","data":{"room":"lobby","text":"hi"}}` (the others get a `room.message`),
//! `{"event":"user.send","id":2,"data":{"to":"bob","event":"dm","data":{"text":"psst"}}}`
//! (refused with `no_such_user` when nobody is called bob). Guests (`/guest…`) may not join
//! rooms named `staff…`: the join is refused with `forbidden`, the connection goes on. It prints `listening on ws://ADDR` once it accepts connections and shuts down on
//! Ctrl-C.

use std::time::Duration;

use palisade::CloseCode;
use palisade::WebSocket;
use palisade::json::{AppCode, ErrorReply, Incoming, JsonSocket, Request, SUBPROTOCOL};
use palisade::rooms::{Recovery, RoomOptions, Rooms, RoomsConfig, SlowConsumer};
use palisade::server::{BoxError, Path, Server, State};
use serde::Deserialize;
use serde_json::json;

// ANCHOR: messages
/// The chat's own events; the room protocol's are handled before these.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Chat {
    /// Event: published to the room's other members as `said`.
    Say { room: String, text: String },
    /// Request: the rooms with members, on every node.
    Rooms,
}
// ANCHOR_END: messages

// ANCHOR: config
/// Guests stay out of `staff…` rooms; `news…` rooms keep two minutes of history.
fn config() -> RoomsConfig {
    RoomsConfig::default()
        .with_queue_capacity(256)
        .with_slow_consumer(SlowConsumer::Close(CloseCode::TRY_AGAIN_LATER))
        .with_authorizer(|member, room| {
            if room.starts_with("staff") && member.meta()["role"] == "guest" {
                let code = AppCode::new("forbidden").expect("snake_case, not built-in");
                return Err(ErrorReply::new(code, "members only"));
            }
            Ok(())
        })
        .with_room_policy(|room| {
            let options = RoomOptions::default();
            if room.starts_with("news") {
                options.with_recovery(Recovery::default())
            } else {
                options
            }
        })
}
// ANCHOR_END: config

// ANCHOR: handler
/// One connection: a session of the user the path names.
async fn chat(
    ws: WebSocket,
    State(rooms): State<Rooms>,
    Path(user): Path<String>,
) -> Result<(), BoxError> {
    let mut socket = JsonSocket::new(ws);
    // A real server takes the name from its authentication (see the book's "Authenticate
    // clients"); the metadata is what presence lists show.
    let role = if user.starts_with("guest") { "guest" } else { "member" };
    let session = match rooms.connect(&socket, &user, json!({ "role": role })).await {
        Ok(session) => session,
        Err(err) => {
            socket.emit("refused", &err.reply()).await?;
            socket.close(CloseCode::POLICY_VIOLATION, "refused").await?;
            return Ok(());
        }
    };
    loop {
        match session.recv::<Chat>(&mut socket).await? {
            Incoming::Event(Chat::Say { room, text }) => {
                let said = json!({ "from": user, "text": text });
                if let Err(err) = session.broadcast_others(&room, "said", &said).await {
                    // Not in that room, or the backend is down: tell the client, go on.
                    socket.emit("error", &err.reply()).await?;
                }
            }
            Incoming::Request(Request { message: Chat::Rooms, responder }) => {
                match rooms.rooms().await {
                    Ok(list) => responder.reply(&list).await?,
                    Err(err) => responder.reply_error(&err).await?,
                }
            }
            Incoming::Event(Chat::Rooms) | Incoming::Request(_) => {}
        }
    }
}
// ANCHOR_END: handler

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: rooms [--addr HOST:PORT] [--redis URL]

A room chat server: connect to ws://ADDR/NAME with the subprotocol palisade.json.v1.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9006)
  --redis URL        share rooms with other nodes through Redis (feature `redis`)
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9006".to_owned();
    let mut redis: Option<String> = None;
    let mut args = args::Args::new("rooms", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            "--redis" => redis = Some(args.value("--redis")),
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let rooms = rooms(redis.as_deref()).await?;
        // ANCHOR: server
        let server = Server::builder()
            .route("/{user}", chat)
            .with_state(rooms)
            .with_subprotocols([SUBPROTOCOL])
            .build();
        // ANCHOR_END: server
        let running = server.bind(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        tokio::signal::ctrl_c().await?;
        running.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}

/// The registry: in memory, or over Redis.
async fn rooms(redis: Option<&str>) -> Result<Rooms, Box<dyn std::error::Error>> {
    let Some(url) = redis else { return Ok(Rooms::new(config())) };
    redis_rooms(url).await
}

#[cfg(feature = "redis")]
async fn redis_rooms(url: &str) -> Result<Rooms, Box<dyn std::error::Error>> {
    // ANCHOR: redis
    use palisade::rooms::redis::{RedisBackend, RedisConfig};
    let backend = RedisBackend::connect(RedisConfig::new(url)).await?;
    Ok(Rooms::with_backend(config(), backend))
    // ANCHOR_END: redis
}

#[cfg(not(feature = "redis"))]
async fn redis_rooms(_: &str) -> Result<Rooms, Box<dyn std::error::Error>> {
    Err("--redis needs the `redis` feature: cargo run --example rooms --features redis".into())
}
