//! An echo server on tokio-tungstenite, for the benchmarks: the shape of palisade's
//! `examples/echo.rs` (one thread, one task per connection, messages up to 16 MiB), with the
//! echo loop of tokio-tungstenite's own `echo-server` example (`forward`, which batches writes
//! until the read side has nothing ready).
//!
//! ```text
//! echo-tungstenite [--addr 127.0.0.1:9002]
//! ```

use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Large enough for the Autobahn|Testsuite's biggest messages, as in palisade's echo.
const MAX_MESSAGE: usize = 16 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    palisade_bench::peer::serve("echo-tungstenite", "127.0.0.1:9002", echo)
}

async fn echo(stream: TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (write, read) = ws.split();
    let result = read
        .try_filter(|message| std::future::ready(message.is_text() || message.is_binary()))
        .forward(write)
        .await;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}
