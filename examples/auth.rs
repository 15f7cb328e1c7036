//! Authentication before accept: a token is checked while the connection is still an HTTP
//! request, and a bad one gets a real `401 Unauthorized` with a JSON body and a
//! `WWW-Authenticate` header — no WebSocket ever opens.
//!
//! Run it, then try it with any client:
//!
//! ```text
//! cargo run --release --example auth -- --addr 127.0.0.1:9002
//! cargo run --release --example client -- ws://127.0.0.1:9002/chat              # 401
//! cargo run --release --example client -- 'ws://127.0.0.1:9002/chat?token=letmein'
//! ```
//!
//! The token may come as `Authorization: Bearer …`, as a `token` query parameter (what a
//! browser can send; palisade redacts query strings from its logs), or as a `bearer.TOKEN`
//! subprotocol next to the real one. Browsers cannot read a refused handshake's status: for
//! them, see `Decision::Close` with 3000 Unauthorized, described in the book's Server chapter.

use palisade::WebSocket;
use palisade::server::{Accept, Decision, Handshake, HandshakeRequest, Rejection, Server};

/// Who a valid token belongs to, handed from the hook to the handler (moved: no `Clone`).
#[derive(Debug)]
struct User(String);

// ANCHOR: check
async fn check(request: HandshakeRequest) -> Decision {
    let token = request
        .bearer_token()
        .map(str::to_owned)
        .or_else(|| request.query_param("token"))
        .or_else(|| request.subprotocol_token("bearer.").map(str::to_owned));
    match token.as_deref() {
        Some("letmein") => Accept::new().with_value(User("alice".into())).into(),
        Some(_) => Rejection::unauthorized(r#"Bearer realm="chat", error="invalid_token""#)
            .with_json(
                &serde_json::json!({"error": "invalid_token", "detail": "the token is not valid"}),
            )
            .with_log_reason("invalid token")
            .into(),
        None => Rejection::unauthorized(r#"Bearer realm="chat""#)
            .with_json(
                &serde_json::json!({"error": "missing_token", "detail": "send a bearer token"}),
            )
            .with_log_reason("no token")
            .into(),
    }
}
// ANCHOR_END: check

// ANCHOR: handler
/// Runs only for accepted tokens: the hook's `User` arrives as an argument.
async fn chat(ws: WebSocket, Handshake(user): Handshake<User>) -> Result<(), palisade::Error> {
    ws.send(format!("hello, {}", user.0)).await?;
    while let Some(message) = ws.next().await {
        ws.send(message?).await?;
    }
    Ok(())
}
// ANCHOR_END: handler

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: auth [--addr HOST:PORT]

A token checked before accept: connect to ws://HOST:PORT/chat?token=letmein, or get a 401.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9002)
  -h, --help         print this and exit
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9002".to_owned();
    let mut args = args::Args::new("auth", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // ANCHOR: server
    let running = Server::builder()
        .route("/chat", chat)
        // A browser carrying its token as a `bearer.TOKEN` subprotocol also offers the real
        // one; the server must answer with that, never with the token.
        .with_subprotocols(["chat"])
        .on_handshake(check)
        .build()
        .bind(&addr)
        .await?;
    // ANCHOR_END: server
    println!("listening on ws://{}/chat", running.local_addr());
    tokio::signal::ctrl_c().await?;
    running.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
