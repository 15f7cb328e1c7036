//! The echo server on the blocking API (`palisade::blocking`): a thread per connection, no
//! async runtime. Every message comes back as it arrived (text as text, binary as binary), on
//! every path; the Autobahn|Testsuite runs against it as it does against `echo`.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example blocking_echo -- --addr 127.0.0.1:9001
//! ```
//!
//! It prints `listening on ws://ADDR` once it accepts connections. On Ctrl-C or SIGTERM it
//! stops accepting, every open connection is closed with 1001 Going Away, and it exits. Look at
//! `echo` below: `recv_timeout` waits for a message while answering pings, and its quiet
//! moments are where a blocking handler looks around. Options: `--deflate` accepts
//! permessage-deflate (RFC 7692) from clients that offer it, `--deflate-lean` the same with the
//! memory-lean preset.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use palisade::blocking::{Acceptor, Config, DeflateConfig, WebSocket};
use palisade::{CloseCode, Error};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Large enough for the Autobahn|Testsuite's biggest messages (16 MiB).
const MAX_MESSAGE: usize = 16 << 20;
/// How often a connection's thread looks up from waiting to see whether the server stops.
const LOOK_UP_EVERY: Duration = Duration::from_millis(250);
/// How long shutting down waits for the connections' close handshakes.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

// ANCHOR: handler
fn echo(mut ws: WebSocket, stopping: &AtomicBool) -> Result<(), Error> {
    while !stopping.load(Ordering::Relaxed) {
        // Answers pings, sends keepalive pings and runs the close handshake while it waits;
        // `None` is a quiet moment, with the connection still open.
        if let Some(message) = ws.recv_timeout(LOOK_UP_EVERY)? {
            ws.send(message)?;
        }
    }
    ws.close(CloseCode::GOING_AWAY, "server shutting down")
}
// ANCHOR_END: handler

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: blocking_echo [--addr HOST:PORT] [--deflate | --deflate-lean]

The echo server on the blocking API, a thread per connection: every message comes back as it
arrived.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9001)
  --deflate          accept permessage-deflate from clients that offer it
  --deflate-lean     the same, with the memory-lean preset
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut deflate = None;
    let mut args = args::Args::new("blocking_echo", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            "--deflate" => deflate = Some(DeflateConfig::default()),
            "--deflate-lean" => deflate = Some(DeflateConfig::lean()),
            other => args.unknown(other),
        }
    }

    // ANCHOR: server
    let mut acceptor =
        Acceptor::new().with_config(Config::default().with_max_message_size(MAX_MESSAGE));
    if let Some(config) = deflate {
        acceptor = acceptor.with_compression(config);
    }
    let listener = TcpListener::bind(&addr)?;
    // ANCHOR_END: server
    let local = listener.local_addr()?;
    println!("listening on ws://{local}");
    let stopping = Arc::new(AtomicBool::new(false));
    stop_on_signal(stopping.clone(), local)?;

    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    // ANCHOR: accept
    for stream in listener.incoming() {
        if stopping.load(Ordering::Relaxed) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                // Out of file descriptors, say: the listener is fine; wait a little.
                eprintln!("accept failed: {err}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let stopping = stopping.clone();
        threads.push(thread::spawn(move || {
            let ended = acceptor.accept(stream).and_then(|ws| echo(ws, &stopping));
            match ended {
                // A close handshake, whatever its code, is how connections end.
                Ok(()) => {}
                Err(err) if err.connection_closed().is_some() => {}
                Err(err) => eprintln!("connection ended: {err}"),
            }
        }));
        threads.retain(|thread| !thread.is_finished());
    }
    // ANCHOR_END: accept

    let deadline = Instant::now() + SHUTDOWN_LIMIT;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let open = threads.iter().filter(|t| !t.is_finished()).count();
    eprintln!("shut down: {} connection(s) still closing were left", open);
    Ok(())
}

/// On SIGINT or SIGTERM: sets `stopping`, and wakes the accept loop with a connection of our
/// own (a blocking `accept` has no other way to be interrupted).
fn stop_on_signal(stopping: Arc<AtomicBool>, local: SocketAddr) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    thread::spawn(move || {
        if signals.forever().next().is_some() {
            stopping.store(true, Ordering::Relaxed);
            let _ = TcpStream::connect(local);
        }
    });
    Ok(())
}
