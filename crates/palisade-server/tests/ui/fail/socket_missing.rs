// A handler that does not take the socket first.
use palisade_server::{ConnectionInfo, Server};

async fn handler(_info: ConnectionInfo) {}

fn main() {
    let _ = Server::builder().route("/", handler);
}
