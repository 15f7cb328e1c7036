//! palisade's server against Python `websocket-client`, the synchronous client many scripts use.
//! Unlike `websockets`, it sends an `Origin` of its own by default: `http://HOST:PORT` of the
//! URL it connects to.

use palisade::server::{ConnectionInfo, OriginPolicy, Running, Server, ServerBuilder};
use palisade::{Config, Error, WebSocket};

use crate::support::Peer;

async fn echo(ws: WebSocket, _: ConnectionInfo) -> Result<(), Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

async fn start(builder: ServerBuilder) -> (Running, String) {
    let running = builder
        .fallback(echo)
        .with_config(Config::default().with_keepalive(None, None))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", running.local_addr());
    (running, url)
}

#[tokio::test]
async fn websocket_client_echo() {
    let (_server, url) = start(Server::builder()).await;
    let mut py = Peer::spawn("websocket_client.py", &["echo", &url]);
    assert_eq!(py.line().await, "ECHO OK");
    // Our answer to its close echoes the code (RFC 6455 §5.5.1).
    assert_eq!(py.line().await, "CLOSED 1000");
    assert!(py.wait().await.success());
}

/// The origin allow-list refuses `websocket-client`'s default `Origin` with a 403 whose body
/// names the policy (and not the origin received); the client is let in when it sends no
/// `Origin` (`suppress_origin=True`), or when the policy allows the server's own host.
#[tokio::test]
async fn websocket_client_default_origin_against_the_allow_list() {
    let policy = OriginPolicy::new(["https://app.example.com"]);
    let (_server, url) = start(Server::builder().with_allowed_origins(policy.clone())).await;
    let mut py = Peer::spawn("websocket_client.py", &["handshake", &url]);
    let line = py.line().await;
    assert_eq!(
        line,
        "STATUS 403 403 Forbidden||This server did not accept the WebSocket handshake: origin \
         not allowed."
    );
    assert!(!line.contains("127.0.0.1"), "the origin received is echoed: {line}");

    let mut py = Peer::spawn("websocket_client.py", &["handshake", &url, "no-origin"]);
    assert_eq!(py.line().await, "OPEN");

    let (_server, url) =
        start(Server::builder().with_allowed_origins(policy.with_same_host_allowed(true))).await;
    let mut py = Peer::spawn("websocket_client.py", &["handshake", &url]);
    assert_eq!(py.line().await, "OPEN");
}

/// A message over the server's limit while the client is still sending it: palisade answers
/// 1009 and drains the rest, so `websocket-client` finishes its send and reads why (before, its
/// send broke with a reset and it never learned the code).
#[tokio::test]
async fn websocket_client_over_the_limit_reads_1009() {
    let (_server, url) = start(Server::builder()).await;
    // 4 MiB against the default 1 MiB: far more than the socket buffers hold.
    let mut py = Peer::spawn("websocket_client.py", &["big", &url, &(4 << 20).to_string()]);
    assert_eq!(py.line().await, "CLOSED 1009 message too big");
    assert!(py.wait().await.success());
}
