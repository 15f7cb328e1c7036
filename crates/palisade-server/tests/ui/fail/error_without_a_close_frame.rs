// A handler whose error type does not say how it closes the connection.
use palisade_conn::WebSocket;
use palisade_server::Server;

async fn handler(_ws: WebSocket) -> Result<(), String> {
    Err("no".to_owned())
}

fn main() {
    let _ = Server::builder().route("/", handler);
}
