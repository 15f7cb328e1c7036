//! The fan-out server of `cargo xtask bench --fanout`: one room, `bench`, that every client of
//! `/member` joins, and a publisher on `/publish` whose `publish` events are broadcast to the
//! room as `tick` (each one encoded once, its frame shared by every member's queue). With
//! `--redis URL` (or `--redis-cluster` and the seed nodes of a Redis Cluster), several copies
//! of it share the room through Redis. The load generator
//! (`palisade-fanout`, in crates/palisade-bench) measures deliveries per second, the server's
//! CPU per delivery, the delivery latency and the messages lost; the book's "Rooms and scale-out"
//! chapter shows the figures.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example fanout -- --addr 127.0.0.1:9007
//! ```
//!
//! then connect members to `ws://127.0.0.1:9007/member` (each gets `joined`, then every `tick`)
//! and a publisher to `ws://127.0.0.1:9007/publish` that sends
//! `{"event":"publish","data":{"t":1,"pad":"x"}}`. It prints `listening on ws://ADDR` once it
//! accepts connections and shuts down on Ctrl-C.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use palisade::WebSocket;
use palisade::json::{Incoming, JsonSocket, SUBPROTOCOL};
use palisade::rooms::{RoomOptions, Rooms, RoomsConfig, SlowConsumer};
use palisade::server::{BoxError, Server, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The room every member joins.
const ROOM: &str = "bench";

/// Broadcasts on their way at once, at most, for the publisher.
const IN_FLIGHT: usize = 64;

/// What the publisher sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Publisher {
    Publish(Tick),
}

/// One publication: the publisher's clock when it sent it (members measure the latency from
/// it) and padding.
#[derive(Debug, Deserialize, Serialize)]
struct Tick {
    t: u64,
    pad: String,
}

// ANCHOR: config
/// The benchmark's rooms: a member that falls 1,024 messages behind loses its oldest ones
/// (counted as lost by the load generator) instead of being closed, and the room has no
/// presence (a broadcast room of thousands where nobody reads who is there: joining stays
/// linear, and the hand-written peers have none either).
fn config() -> RoomsConfig {
    RoomsConfig::default()
        .with_queue_capacity(1024)
        .with_slow_consumer(SlowConsumer::DropOldest)
        .with_room_policy(|_| RoomOptions::default().without_presence())
}
// ANCHOR_END: config

/// Names the members: one user per connection.
static NEXT: AtomicU64 = AtomicU64::new(0);

// ANCHOR: member
/// A member: joins the room, says so, then only listens (the room's traffic is written by the
/// rooms layer, from the member's own queue).
async fn member(ws: WebSocket, State(rooms): State<Rooms>) -> Result<(), BoxError> {
    let mut socket = JsonSocket::new(ws);
    let user = format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let session = rooms.connect(&socket, user, json!({})).await?;
    session.join(ROOM).await?;
    socket.emit("joined", &json!({})).await?;
    loop {
        // Members send nothing; this answers pings and sees the close.
        session.recv::<serde_json::Value>(&mut socket).await?;
    }
}
// ANCHOR_END: member

// ANCHOR: publisher
/// The publisher: every `publish` event goes to the whole room. Up to [`IN_FLIGHT`]
/// broadcasts are on their way at once, made in the order they were read (which is the
/// order members receive them): with Redis, each one completes when Redis has answered,
/// and awaiting each before reading the next would cost one round trip per publication; the
/// backend sends those made together in one pipeline.
async fn publisher(ws: WebSocket, State(rooms): State<Rooms>) -> Result<(), BoxError> {
    let mut socket = JsonSocket::new(ws);
    let mut sending = FuturesOrdered::new();
    loop {
        tokio::select! {
            // What is on its way first (`biased`): a broadcast is made when first polled.
            biased;
            Some(sent) = sending.next(), if !sending.is_empty() => sent?,
            incoming = socket.recv::<Publisher>(), if sending.len() < IN_FLIGHT => {
                match incoming? {
                    Incoming::Event(Publisher::Publish(tick)) => {
                        let rooms = rooms.clone();
                        let sent = async move { rooms.broadcast(ROOM, "tick", &tick).await };
                        sending.push_back(sent);
                    }
                    Incoming::Request(_) => {}
                }
            }
        }
    }
}
// ANCHOR_END: publisher

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: fanout [--addr HOST:PORT] [--redis URL | --redis-cluster URL,URL,...]

The fan-out benchmark's server: members on ws://ADDR/member, a publisher on ws://ADDR/publish.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9007)
  --redis URL        share the room with other nodes through Redis
  --redis-cluster URL,URL,...
                     the same through a Redis Cluster (its seed nodes)
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9007".to_owned();
    let mut redis: Option<palisade::rooms::redis::RedisConfig> = None;
    let mut args = args::Args::new("fanout", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            "--redis" => {
                redis = Some(palisade::rooms::redis::RedisConfig::new(args.value("--redis")))
            }
            "--redis-cluster" => {
                let seeds = args.value("--redis-cluster");
                redis = Some(palisade::rooms::redis::RedisConfig::cluster(seeds.split(',')));
            }
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
    // One thread, as every server of the benchmarks.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let rooms = match redis {
            None => Rooms::new(config()),
            Some(redis) => {
                let backend = palisade::rooms::redis::RedisBackend::connect(redis).await?;
                Rooms::with_backend(config(), backend)
            }
        };
        let server = Server::builder()
            .route("/member", member)
            .route("/publish", publisher)
            .with_state(rooms)
            .with_subprotocols([SUBPROTOCOL])
            // The load generator's members all come from one loopback address.
            .with_max_connections_per_ip(200_000)
            .with_max_connections(200_000)
            .build();
        let running = server.bind(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        tokio::signal::ctrl_c().await?;
        running.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
