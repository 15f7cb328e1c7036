// A handler argument palisade cannot provide: a plain `String`.
use palisade_conn::WebSocket;
use palisade_server::Server;

async fn handler(_ws: WebSocket, _name: String) {}

fn main() {
    let _ = Server::builder().route("/", handler);
}
