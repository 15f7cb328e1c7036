//! A client that stays connected: it sends a message every second, prints the echo, and when
//! the connection ends — or connecting fails — connects again with backoff, asking for a fresh
//! token before each attempt.
//!
//! Run the echo server in one terminal and this example in another:
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:9001
//! cargo run --release --example reconnect -- ws://127.0.0.1:9001/
//! ```
//!
//! Then stop the echo server (Ctrl-C, or `kill PID`) and look at the attempt lines: the
//! connection ends with 1001 (retryable), each attempt fails with "connection refused" and
//! waits longer before the next (full jitter, so the waits are random below a growing ceiling),
//! and each attempt is given a new token. Start the echo server again and the next attempt
//! connects; the ticks resume. Set `RUST_LOG=palisade_client=info` to see the client's own log
//! of each attempt as well. Ctrl-C closes the connection (1000) and stops this example.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade::Message;
use palisade::client::{Attempt, Backoff, Client, Connected};
use palisade::conn::Sender;
use palisade::http::{HeaderMap, HeaderValue, header};
use palisade::{CloseCode, Error};

/// The open connection, if there is one, for Ctrl-C to close.
type OpenConnection = Arc<Mutex<Option<Sender>>>;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: reconnect [URL]

A client that stays connected: a message every second, reconnection with backoff.

  URL          the server (default ws://127.0.0.1:9001/, the echo example)
  -h, --help   print this and exit
";

#[tokio::main]
async fn main() -> ExitCode {
    let mut url = None;
    let mut args = args::Args::new("reconnect", USAGE);
    while let Some(arg) = args.next() {
        match arg {
            arg if arg.starts_with('-') || url.is_some() => args.unknown(&arg),
            arg => url = Some(arg),
        }
    }
    let url = url.unwrap_or_else(|| "ws://127.0.0.1:9001/".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let open = OpenConnection::default();
    tokio::select! {
        code = run(url, open.clone()) => code,
        _ = tokio::signal::ctrl_c() => {
            let handle = open.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(handle) = handle {
                let _ = handle.close(CloseCode::NORMAL, "").await;
            }
            eprintln!("interrupted");
            ExitCode::SUCCESS
        }
    }
}

async fn run(url: String, open: OpenConnection) -> ExitCode {
    // ANCHOR: client
    let issued = Arc::new(AtomicU64::new(0));
    let client = Client::new().with_headers_fn({
        let issued = issued.clone();
        move || {
            // Called before every attempt: a real client would ask its identity provider
            // here, since the token of the last attempt may have expired since.
            let n = issued.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("issuing token #{n}");
            let token = HeaderValue::try_from(format!("Bearer demo-token-{n}"))
                .expect("ASCII text is a valid header value");
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, token);
            headers
        }
    });
    // ANCHOR_END: client

    // ANCHOR: reconnecting
    let backoff = Backoff::default()
        .with_initial(Duration::from_millis(250))
        .with_max(Duration::from_secs(5));
    let mut reconnecting =
        client.reconnecting(url).with_backoff(backoff).with_on_attempt(|attempt: &Attempt<'_>| {
            let n = attempt.number;
            match (attempt.result, attempt.retry_in) {
                (Ok(()), _) => eprintln!("attempt {n}: connected"),
                (Err(err), Some(wait)) => eprintln!(
                    "attempt {n}: {err} [{}]; next attempt in {:.2} s",
                    err.category(),
                    wait.as_secs_f64()
                ),
                (Err(err), None) => eprintln!("attempt {n}: {err} [{}]; giving up", err.category()),
            }
        });
    // ANCHOR_END: reconnecting

    // ANCHOR: loop
    let mut ticks = 0u64;
    while let Some(conn) = reconnecting.next().await {
        let ended = talk(&conn, &mut ticks, &open).await;
        eprintln!("connection ended: {ended}");
        // Retryable ends (1001, 1006, 1011 …) make `next()` wait, then connect again; an end
        // on purpose (1000, 1008 …) would only repeat itself, so `next()` returns `None`.
        reconnecting.connection_ended(ended);
    }
    // `next()` gave up: the connection ended for good, or an attempt failed in a way retrying
    // cannot fix (a 401, a bad URL, a certificate), or the attempt limit was reached.
    match reconnecting.last_error() {
        Some(err) if err.is_closed_ok() => ExitCode::SUCCESS,
        Some(err) => {
            eprintln!("gave up after attempt {}: {err}", reconnecting.attempts());
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
    // ANCHOR_END: loop
}

/// Sends a tick every second and prints what comes back, until the connection ends; returns
/// the error that ended it.
async fn talk(conn: &Connected, ticks: &mut u64, open: &OpenConnection) -> Error {
    *open.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.sender());
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        // `recv` is cancel-safe: when the tick wins, nothing received is lost.
        tokio::select! {
            _ = interval.tick() => {
                *ticks += 1;
                if let Err(err) = conn.send(Message::text(format!("tick {ticks}"))).await {
                    return err;
                }
            }
            message = conn.recv() => match message {
                Ok(Message::Text(text)) => println!("< {}", text.as_str()),
                Ok(Message::Binary(bytes)) => println!("< [{} bytes of binary]", bytes.len()),
                Err(err) => return err,
            },
        }
    }
}
