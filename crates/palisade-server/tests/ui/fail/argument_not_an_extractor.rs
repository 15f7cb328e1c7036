// A handler argument palisade cannot provide: a plain `String`.
use palisade_server::{Server, WebSocket};

async fn handler(_ws: WebSocket, _name: String) {}

fn main() {
    let _ = Server::builder().route("/", handler);
}
