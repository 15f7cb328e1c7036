//! An echo server on fastwebsockets, for the benchmarks: the shape of palisade's
//! `examples/echo.rs` (one thread, one task per connection, messages up to 16 MiB), with the echo
//! loop of fastwebsockets' own `echo_server` example (`FragmentCollector`, auto pong and close,
//! the handler run `unconstrained`). The opening handshake is answered by hand instead of through
//! hyper, which the example uses only to reach the upgraded socket.
//!
//! ```text
//! echo-fastwebsockets [--addr 127.0.0.1:9003]
//! ```

use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket, WebSocketError};
use palisade_bench::handshake;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Large enough for the Autobahn|Testsuite's biggest messages, as in palisade's echo.
const MAX_MESSAGE: usize = 16 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    palisade_bench::peer::serve("echo-fastwebsockets", "127.0.0.1:9003", |stream| {
        tokio::task::unconstrained(echo(stream))
    })
}

async fn echo(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let head = handshake::read_head(&mut stream, &mut buf).await?;
    if buf.len() > head {
        return Err("frames sent before the handshake was answered".into());
    }
    let key = handshake::header(&buf[..head], "sec-websocket-key").ok_or("no Sec-WebSocket-Key")?;
    stream.write_all(handshake::server_response(key).as_bytes()).await?;

    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_max_message_size(MAX_MESSAGE);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = match ws.read_frame().await {
            Ok(frame) => frame,
            Err(WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
