//! The soak server of `cargo xtask soak`: an echo on `/echo` and rooms on `/room/USER`, in one
//! process, so that one resident set carries both workloads for the length of the run. The
//! load generator (`palisade-load soak`, in crates/palisade-bench) numbers every message and
//! counts what comes back lost, duplicated or out of order; the book's "Security" chapter shows
//! the figures of a default run.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example soak -- --addr 127.0.0.1:9008
//! ```
//!
//! then connect to `ws://127.0.0.1:9008/echo` (every message comes back as it arrived), or to
//! `ws://127.0.0.1:9008/room/alice` with the subprotocol `palisade.json.v1`, send
//! `{"event":"room.join","id":1,"data":{"room":"r0"}}` and then
//! `{"event":"publish","data":{"room":"r0","seq":0}}`: the room's other members get
//! `{"event":"room.message","data":{"room":"r0","event":"pub","data":{"from":"alice","seq":0}}}`.
//! It prints `listening on ws://ADDR` once it accepts connections and shuts down gracefully
//! (1001 to every client) on Ctrl-C or SIGTERM.

use std::time::Duration;

use palisade::WebSocket;
use palisade::json::{Incoming, JsonSocket, SUBPROTOCOL};
use palisade::rooms::{Rooms, RoomsConfig};
use palisade::server::{BoxError, Path, Server, State};
use serde::Deserialize;
use serde_json::json;

/// What a room member sends besides the room protocol.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Member {
    /// Published to the room's other members as `pub`, with the sender's name.
    Publish { room: String, seq: u64 },
}

/// Every message back as it arrived.
async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

// ANCHOR: member
/// A room member: the rooms layer answers `room.join` and the rest of the room protocol; a
/// `publish` goes to the room's other members. The rooms run with their defaults (a queue of
/// 1,024 per member, a member that overflows it closed with 1013), so that the soak proves
/// the defaults.
async fn member(
    ws: WebSocket,
    State(rooms): State<Rooms>,
    Path(user): Path<String>,
) -> Result<(), BoxError> {
    let mut socket = JsonSocket::new(ws);
    let session = rooms.connect(&socket, &user, json!({})).await?;
    loop {
        match session.recv::<Member>(&mut socket).await? {
            Incoming::Event(Member::Publish { room, seq }) => {
                let data = json!({ "from": user, "seq": seq });
                if let Err(err) = session.broadcast_others(&room, "pub", &data).await {
                    // Not in that room: the publisher is told, the connection goes on.
                    socket.emit("error", &err.reply()).await?;
                }
            }
            Incoming::Request(_) => {}
        }
    }
}
// ANCHOR_END: member

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: soak [--addr HOST:PORT] [--threads N]

The soak server: an echo on ws://ADDR/echo, rooms on ws://ADDR/room/USER.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9008)
  --threads N        worker threads (default 1)
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9008".to_owned();
    let mut threads = 1usize;
    let mut args = args::Args::new("soak", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            "--threads" => threads = args.parsed("--threads"),
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
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(async {
        let server = Server::builder()
            .route("/echo", echo)
            .route("/room/{user}", member)
            .with_state(Rooms::new(RoomsConfig::default()))
            .with_subprotocols([SUBPROTOCOL])
            // The load generator's connections all come from one loopback address.
            .with_max_connections(200_000)
            .with_max_connections_per_ip(200_000)
            .build();
        let running = server.bind(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        shutdown_signal().await?;
        let summary = running.shutdown(Duration::from_secs(5)).await;
        eprintln!("shut down: {} closed cleanly, {} aborted", summary.closed, summary.aborted);
        Ok(())
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
