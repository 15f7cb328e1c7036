//! How a server tells a client that something went wrong, three ways: refuse the handshake with
//! an HTTP status, answer with an error message and keep the connection, or close it with a
//! code. Run it from the workspace root:
//!
//! ```text
//! cargo run --release --example errors_server
//! ```
//!
//! It starts a server on a free port of 127.0.0.1, plays seven clients against it (palisade's
//! own client) and prints what each client sees; the server's log lines go to stderr. Look at:
//!
//! - the refused handshakes: a non-browser client reads the 401, its `WWW-Authenticate` header
//!   and its JSON body; a "browser" (a client that sends `Origin`) is instead accepted and
//!   closed at once with 3000, because a browser never sees a refused handshake's status; a page
//!   on another site gets 403 from the origin allow-list before the hook is even asked;
//! - the JSON error reply, after which the same connection goes on working;
//! - the close codes: 1008 for a policy refusal, 4001 for an application's own reason, 1003 for
//!   a binary message, and 1011 with the generic reason "internal error" for a failure — whose
//!   details (a database address) appear in the server's log line and nowhere else.
//!
//! `--addr HOST:PORT` serves without the demonstration, for trying other clients: connect to
//! `ws://HOST:PORT/?token=letmein` and send `echo hi`, `frobnicate`, `admin`, `expire`, `crash`.
//! With Python's `websocket-client`, for instance:
//!
//! ```text
//! python -c 'import websocket; ws = websocket.create_connection("ws://127.0.0.1:9003/?token=letmein"); ws.send("echo hi"); print(ws.recv())'
//! ```
//!
//! That client sends `Origin: http://127.0.0.1:9003` unless told not to (`suppress_origin=True`);
//! the allow-list below lets it in because that origin names the server's own host and port. A
//! refusal by the allow-list is a 403 whose body says "origin not allowed".
//!
//! The book's Server chapter, section "How do I send an error?", shows these listings.

use std::time::Duration;

use palisade::WebSocket;
use palisade::client::Client;
use palisade::error::HandshakeError;
use palisade::server::{
    Accept, BoxError, CloseWith, ConnectionInfo, Decision, HandshakeRequest, OriginPolicy,
    Rejection, Server, close_unauthorized,
};
use palisade::{CloseCode, Error, Message};
use serde_json::json;

// ANCHOR: reject
/// Way 1: refuse before accepting. Runs while the connection is still an HTTP request.
async fn authenticate(request: HandshakeRequest) -> Decision {
    match request.query_param("token").as_deref() {
        Some("letmein") => Accept::new().into(),
        // Browsers always send `Origin`, and cannot read the status of a refused handshake
        // (their `onclose` sees only 1006). Accept and close at once: they do see the code.
        _ if request.origin().is_some() => close_unauthorized("a valid token is required"),
        // Every other client reads the status, the headers and the body.
        _ => Rejection::unauthorized(r#"Bearer realm="demo""#)
            .with_json(&json!({"error": "unauthorized", "detail": "a valid token is required"}))
            .with_log_reason("missing or invalid token")
            .into(),
    }
}
// ANCHOR_END: reject

// ANCHOR: handler
async fn session(ws: WebSocket, _info: ConnectionInfo) -> Result<(), BoxError> {
    loop {
        let message = ws.recv().await?;
        let Some(text) = message.as_text() else {
            // Way 3, with a registered code: this endpoint takes text only.
            return Err(CloseWith::new(CloseCode::UNSUPPORTED_DATA, "text messages only").into());
        };
        let (command, argument) = text.split_once(' ').unwrap_or((text, ""));
        match command {
            "echo" => ws.send(argument.to_owned()).await?,
            // Way 3: close with a code and a reason the client can show.
            "admin" => {
                return Err(CloseWith::new(CloseCode::POLICY_VIOLATION, "not allowed").into());
            }
            "expire" => return Err(CloseWith::new(CloseCode(4001), "session expired").into()),
            // Any other error closes with 1011 and the generic reason "internal error"; its
            // text goes to the server's log only.
            "crash" => {
                return Err(std::io::Error::other("database at 10.0.0.7:5432 unreachable").into());
            }
            // Way 2: an error reply in the application's own format; the connection stays open.
            _ => {
                let reply = json!({"error": "unknown_command", "detail": "try: echo TEXT"});
                ws.send(reply.to_string()).await?;
            }
        }
    }
}
// ANCHOR_END: handler

fn server() -> Server {
    // ANCHOR: server
    Server::builder()
        .fallback(session)
        .on_handshake(authenticate)
        // Pages on other sites get 403 before the hook runs (cross-site WebSocket hijacking).
        // Pages of this same host and port are let in, and so are clients such as Python's
        // `websocket-client`, which send `Origin: http://HOST:PORT` of the URL they connect to.
        .with_allowed_origins(
            OriginPolicy::new(["https://app.example.com"]).with_same_host_allowed(true),
        )
        .build()
    // ANCHOR_END: server
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: errors_server [--addr HOST:PORT]

Three ways for a server to send an error. Without arguments: starts a server on a free port
of 127.0.0.1, plays seven clients against it, prints what each sees, and exits.

  --addr HOST:PORT   serve on HOST:PORT without the demonstration, for other clients:
                     connect to ws://HOST:PORT/?token=letmein and send `echo hi`,
                     `frobnicate`, `admin`, `expire`, `crash`
  -h, --help         print this and exit
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = None;
    let mut args = args::Args::new("errors_server", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = Some(args.value("--addr")),
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    if let Some(addr) = addr {
        let running = server().bind(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        tokio::signal::ctrl_c().await?;
        running.shutdown(Duration::from_secs(5)).await;
        return Ok(());
    }

    let running = server().bind("127.0.0.1:0").await?;
    let base = format!("ws://{}/", running.local_addr());
    demo(&base).await?;
    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Plays the clients, printing what each one sees.
async fn demo(base: &str) -> Result<(), Error> {
    println!("\n1. A client without a token (it sends no Origin header):");
    print_refusal(Client::new().connect(base).await);

    println!("\n2. A browser without a token (it sends Origin):");
    let ws = Client::new().with_origin("https://app.example.com").connect(base).await?;
    show_close(ws.recv().await);

    let url = format!("{base}?token=letmein");
    println!("\n3. A page on another site, with a token:");
    print_refusal(Client::new().with_origin("https://evil.example").connect(&url).await);

    println!("\n4. A client with a token sends a command the server does not know, then others:");
    let ws = Client::new().connect(&url).await?;
    for command in ["frobnicate", "echo still here", "admin"] {
        println!("   > {command}");
        ws.send(command).await?;
        match ws.recv().await {
            Ok(reply) => println!("   < {}", reply.as_text().unwrap_or("<binary>")),
            Err(err) => show_close(Err(err)),
        }
    }

    for (n, what, message) in [
        (5, "a command whose session has expired", Message::text("expire")),
        (6, "a binary message", Message::binary(vec![0xde, 0xad])),
        (7, "a command that makes the handler fail", Message::text("crash")),
    ] {
        println!("\n{n}. A client sends {what}:");
        let ws = Client::new().connect(&url).await?;
        ws.send(message).await?;
        show_close(ws.recv().await);
    }
    Ok(())
}

// ANCHOR: client_refused
/// Prints what a non-browser client learns from a refused handshake.
fn print_refusal<T>(result: Result<T, Error>) {
    match result {
        Err(Error::Handshake(refused)) => match &*refused {
            HandshakeError::InvalidStatus(response) => {
                println!("   refused: {}", response.status());
                if let Some(challenge) = response.headers().get("www-authenticate") {
                    println!("   WWW-Authenticate: {challenge:?}");
                }
                for line in response.body_text().unwrap_or("<not text>").trim_end().lines() {
                    println!("   | {line}");
                }
            }
            other => println!("   refused: {other}"),
        },
        Err(other) => println!("   failed: {other}"),
        Ok(_) => println!("   connected"),
    }
}
// ANCHOR_END: client_refused

/// Prints how a connection ended, as the client sees it.
fn show_close(result: Result<Message, Error>) {
    match result {
        Err(err) => match err.connection_closed() {
            Some(closed) => {
                println!("   closed: code {}, reason {:?}", closed.code(), closed.reason())
            }
            None => println!("   failed: {err}"),
        },
        Ok(message) => println!("   unexpected message {message:?}"),
    }
}
