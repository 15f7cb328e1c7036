//! Test servers: raw TCP, scripted, one behaviour each.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_client::Client;
use palisade_conn::{Config, WebSocket};
use palisade_error::Error;
use palisade_error::HandshakeError;
use palisade_proto::connection::Connection;
use palisade_proto::handshake::Key;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A client for tests: no proxy from the environment, a short open timeout.
pub(crate) fn client() -> Client {
    Client::new().without_proxy().with_open_timeout(Some(Duration::from_secs(10)))
}

/// A server on 127.0.0.1 that runs `handler` on each connection it accepts. Aborted on drop.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, handler)
}

pub(crate) fn serve_on<F, Fut>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    // Connections live in a `JoinSet` owned by the accept task: aborting it (dropping the
    // server) drops every connection too, as a stopped server would.
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        connections.spawn(handler(tcp));
                    }
                    Err(_) => break,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Server { addr, task }
}

/// Reads an HTTP head (up to the empty line) and returns it as text.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The value of header `name` in `head`.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `Sec-WebSocket-Accept` value for the request `head`.
pub(crate) fn accept_for(head: &str) -> String {
    Key::parse(header(head, "sec-websocket-key").unwrap()).unwrap().accept()
}

/// A valid 101 for `head`, plus `extra` header lines.
pub(crate) fn switching(head: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_for(head)
    )
}

/// Completes the handshake on `io` (after its head was read) and echoes messages until the
/// connection ends.
pub(crate) async fn echo_after_head<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    mut io: S,
    head: &str,
    extra: &str,
) {
    io.write_all(switching(head, extra).as_bytes()).await.unwrap();
    let config = Config::default();
    let ws = WebSocket::from_parts(
        io,
        Connection::server(config.protocol.clone(), Instant::now()),
        config,
        &[],
    );
    while let Ok(message) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

/// An echo server; each request head is sent to `heads` if given.
pub(crate) async fn echo_server() -> Server {
    serve(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        echo_after_head(tcp, &head, "").await;
    })
    .await
}

/// A server that answers every request with `response`, then closes.
pub(crate) async fn answering(response: &'static str) -> Server {
    serve(move |mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await
}

pub(crate) fn handshake_error(err: Error) -> HandshakeError {
    match err {
        Error::Handshake(h) => *h,
        other => panic!("not a handshake error: {other:?}"),
    }
}
