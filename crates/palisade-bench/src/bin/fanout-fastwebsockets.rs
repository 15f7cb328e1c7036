//! The fan-out of palisade's `examples/fanout.rs` written by hand on fastwebsockets, for the
//! benchmarks: a registry of per-member queues (see `palisade_bench::fanout_peer`) and a writer
//! task per member. `--naive` writes each frame to the socket as fastwebsockets does (one
//! write per frame); `--expert` puts the socket behind a `BufWriter`, writes every queued frame
//! into it and flushes once.
//!
//! ```text
//! fanout-fastwebsockets (--naive | --expert) [--addr 127.0.0.1:9009]
//! ```

use std::sync::Arc;

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, Role, WebSocket, WebSocketError};
use palisade_bench::fanout_peer::{self, Endpoint, Form, Queue, Registry};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The expert's write buffer: a few hundred queued frames leave in one write.
const WRITE_BUFFER: usize = 64 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::<Arc<str>>::new();
    fanout_peer::serve("fanout-fastwebsockets", "127.0.0.1:9009", move |stream, form| {
        tokio::task::unconstrained(connection(stream, form, registry.clone()))
    })
}

async fn connection(
    mut stream: TcpStream,
    form: Form,
    registry: Arc<Registry<Arc<str>>>,
) -> Result<(), Error> {
    match fanout_peer::accept(&mut stream).await? {
        Endpoint::Publish => {
            let mut ws = WebSocket::after_handshake(stream, Role::Server);
            ws.set_auto_close(true);
            ws.set_auto_pong(true);
            let mut ws = FragmentCollector::new(ws);
            loop {
                let frame = match ws.read_frame().await {
                    Ok(frame) => frame,
                    Err(WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF) => {
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                match frame.opcode {
                    OpCode::Close => return Ok(()),
                    OpCode::Text => {
                        if let Some(text) = fanout_peer::publication(&frame.payload) {
                            registry.publish(&Arc::from(text));
                        }
                    }
                    _ => {}
                }
            }
        }
        Endpoint::Member => {
            let queue = registry.join();
            let result = match form {
                Form::Naive => {
                    member(WebSocket::after_handshake(stream, Role::Server), &queue, form).await
                }
                Form::Expert => {
                    let stream = BufWriter::with_capacity(WRITE_BUFFER, stream);
                    member(WebSocket::after_handshake(stream, Role::Server), &queue, form).await
                }
            };
            registry.leave(&queue);
            result
        }
    }
}

/// Writes the member's queue until a write fails.
async fn member<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
    queue: &Queue<Arc<str>>,
    form: Form,
) -> Result<(), Error> {
    ws.write_frame(Frame::text(Payload::Borrowed(fanout_peer::JOINED.as_bytes()))).await?;
    ws.flush().await?;
    loop {
        match form {
            Form::Naive => {
                let message = queue.pop().await;
                ws.write_frame(Frame::text(Payload::Borrowed(message.as_bytes()))).await?;
                ws.flush().await?;
            }
            Form::Expert => {
                for message in queue.take_all().await {
                    ws.write_frame(Frame::text(Payload::Borrowed(message.as_bytes()))).await?;
                }
                ws.flush().await?;
            }
        }
    }
}
