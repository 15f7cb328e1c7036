//! The chat example's JavaScript: `examples/chat/static/palisade.js` under Node against a
//! palisade server (the `json_requests` example) and a `ws` server, by
//! `examples/chat/tests/client.mjs`.

use crate::support::Peer;

/// A running example server: its process and the `ws://` URL it printed.
async fn example_server(name: &str, args: &[&str]) -> (Peer, String) {
    let mut server = Peer::example(name, args);
    let line = server.line_starting("listening on ").await;
    let url = line["listening on ".len()..].trim().to_owned();
    (server, url)
}

/// Runs a Node script of `examples/chat/tests/` to its end; it prints `ok CASE` per case and
/// `NAME: N passed, 0 failed` last.
async fn node_script(script: &str, args: &[&str]) -> Vec<String> {
    let mut node = Peer::chat_node(script, args);
    let mut lines = Vec::new();
    loop {
        let line = node.line().await;
        let last = line.contains(" passed, 0 failed");
        assert!(!line.starts_with("FAILED") && line != "timed out", "{script}: {line}");
        lines.push(line);
        if last {
            break;
        }
    }
    assert!(node.wait().await.success(), "{script}: {lines:?}");
    lines
}

/// palisade.js speaks palisade-json's envelope with a palisade server: requests and their ok
/// and error replies (application codes and palisade's own, as `ReplyError`s with their code
/// and path), `no_reply`, events both ways, the server's requests answered (or refused with a
/// code), refusals of events (`"reply": null`); a timeout with its late reply dropped; and
/// reconnection by close code with backoff (after 1001 and 1006, never after 1008, 4001, 4003,
/// 1000) handing back the recovery offsets.
#[tokio::test]
async fn palisade_js_speaks_the_envelope_and_reconnects_by_close_code() {
    let (_server, url) = example_server("json_requests", &["--addr", "127.0.0.1:0"]).await;
    let lines = node_script("client.mjs", &[&format!("{url}/")]).await;
    assert!(lines.len() >= 13, "{lines:?}");
}
