//! An echo server on tokio-tungstenite, for the benchmarks: the shape of palisade's
//! `examples/echo.rs` (one thread, one task per connection, messages up to 16 MiB), with the
//! echo loop of tokio-tungstenite's own `echo-server` example (`forward`, which batches writes
//! until the read side has nothing ready).
//!
//! ```text
//! echo-tungstenite [--addr 127.0.0.1:9002]
//! ```

use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Large enough for the Autobahn|Testsuite's biggest messages, as in palisade's echo.
const MAX_MESSAGE: usize = 16 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = addr_arg()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on ws://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(e) = echo(stream).await {
                    eprintln!("connection failed: {e}");
                }
            });
        }
    })
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

/// `--addr HOST:PORT`, default 127.0.0.1:9002.
fn addr_arg() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok("127.0.0.1:9002".to_owned()),
        [flag, addr] if flag == "--addr" => Ok(addr.clone()),
        _ => Err("usage: echo-tungstenite [--addr HOST:PORT]".to_owned()),
    }
}
