//! The fan-out of palisade's `examples/fanout.rs` written by hand on tokio-tungstenite, for
//! the benchmarks: a registry of per-member queues (see `palisade_bench::fanout_peer`) and a
//! writer task per member. `--naive` sends each message with `SinkExt::send` (a write and a
//! flush each); `--expert` feeds everything queued and flushes once.
//!
//! ```text
//! fanout-tungstenite (--naive | --expert) [--addr 127.0.0.1:9008]
//! ```

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use palisade_bench::fanout_peer::{self, Endpoint, Form, Registry};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::<Utf8Bytes>::new();
    fanout_peer::serve("fanout-tungstenite", "127.0.0.1:9008", move |stream, form| {
        connection(stream, form, registry.clone())
    })
}

async fn connection(
    mut stream: TcpStream,
    form: Form,
    registry: Arc<Registry<Utf8Bytes>>,
) -> Result<(), Error> {
    let endpoint = fanout_peer::accept(&mut stream).await?;
    let config = WebSocketConfig::default();
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    match endpoint {
        Endpoint::Publish => {
            while let Some(message) = ws.next().await {
                if let Message::Text(text) = message?
                    && let Some(frame) = fanout_peer::publication(text.as_bytes())
                {
                    registry.publish(&Utf8Bytes::from(frame));
                }
            }
            Ok(())
        }
        Endpoint::Member => {
            let queue = registry.join();
            ws.send(Message::text(fanout_peer::JOINED)).await?;
            // Members send nothing: the writer is all there is; a write error ends it.
            let result: Result<(), Error> = async {
                loop {
                    match form {
                        Form::Naive => ws.send(Message::Text(queue.pop().await)).await?,
                        Form::Expert => {
                            for message in queue.take_all().await {
                                ws.feed(Message::Text(message)).await?;
                            }
                            ws.flush().await?;
                        }
                    }
                }
            }
            .await;
            registry.leave(&queue);
            result
        }
    }
}
