//! Open connections: messages both ways, the close handshake, limits, timeouts, keepalive,
//! compression and draining.

use std::io::{Read, Write};
use std::time::Duration;

use palisade_blocking::{
    Acceptor, Client, CloseCode, Config, DeflateConfig, Error, Message, WebSocket,
};
use palisade_error::{PayloadTooBig, SizeLimit, State, TimeoutPhase};

use crate::support::{OneShot, WAIT, echo};

/// A request any server of ours accepts.
pub(crate) const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

fn client() -> Client {
    Client::new().with_config(quiet()).with_open_timeout(Some(WAIT))
}

#[test]
fn messages_of_every_length_class_echo_and_a_normal_close_ends_the_iterator() {
    let server =
        OneShot::start(Acceptor::new().with_config(quiet().with_max_message_size(2 << 20)), echo);
    let mut ws = client().with_max_message_size(2 << 20).connect(&server.url).unwrap();
    for size in [0usize, 1, 125, 126, 65_535, 65_536, 1_500_000] {
        let text = Message::text("é".repeat(size / 2));
        ws.send(text.clone()).unwrap();
        assert_eq!(ws.recv().unwrap(), text, "{size}");
        let binary = Message::binary(vec![0xA5u8; size]);
        ws.send(binary.clone()).unwrap();
        assert_eq!(ws.recv().unwrap(), binary, "{size}");
    }
    ws.close(CloseCode::NORMAL, "done").unwrap();
    let info = ws.close_info();
    assert_eq!(info.sent.as_ref().map(|f| f.code()), Some(CloseCode::NORMAL));
    assert_eq!(info.received.as_ref().map(|f| f.code()), Some(CloseCode::NORMAL));
    assert_eq!(info.received_then_sent, Some(false));
    assert_eq!(ws.state(), State::Closed);
    assert!(ws.next().is_none(), "the iterator ends after a normal close");
    assert!(ws.send(Message::text("late")).unwrap_err().is_closed_ok());
    let ended = server.result();
    assert!(ended.is_closed_ok(), "{ended:?}");
}

#[test]
fn a_close_from_the_server_reaches_the_client_with_its_code() {
    let server = OneShot::start(Acceptor::new().with_config(quiet()), |ws| {
        let mut ws = ws.unwrap();
        let request = ws.recv().unwrap();
        let code: u16 = request.as_text().unwrap().parse().unwrap();
        ws.close(CloseCode(code), "as asked")
    });
    let mut ws = client().connect(&server.url).unwrap();
    ws.send(Message::text("4001")).unwrap();
    let err = ws.recv().unwrap_err();
    let closed = err.connection_closed().unwrap();
    assert_eq!(closed.code(), CloseCode(4001));
    assert_eq!(closed.reason(), "as asked");
    assert_eq!(closed.received_then_sent, Some(true));
    assert!(!err.is_closed_ok(), "4001 is not a normal close");
    // The iterator yields an abnormal end once, then ends.
    assert!(matches!(ws.incoming().next(), Some(Err(_))));
    assert!(ws.incoming().next().is_none());
    assert!(server.result().is_ok(), "both close frames exchanged");
}

#[test]
fn recv_timeout_returns_none_and_the_connection_stays_open() {
    let server = OneShot::start(Acceptor::new().with_config(quiet()), |ws| {
        let mut ws = ws.unwrap();
        let first = ws.recv_timeout(Duration::from_millis(50)).unwrap();
        let go = ws.recv_timeout(WAIT).unwrap();
        ws.send(Message::text("after the wait")).unwrap();
        (first, go)
    });
    let mut ws = client().connect(&server.url).unwrap();
    assert_eq!(ws.recv_timeout(Duration::from_millis(100)).unwrap(), None);
    ws.send(Message::text("go")).unwrap();
    assert_eq!(ws.recv_timeout(WAIT).unwrap(), Some(Message::text("after the wait")));
    let (first, go) = server.result();
    assert_eq!(first, None);
    assert_eq!(go, Some(Message::text("go")));
}

#[test]
fn a_message_over_the_limit_closes_with_1009_and_the_sender_learns_why() {
    // The server reads a 4 MiB message against its 1 MiB frame limit: it fails with 1009 while the
    // client is still writing. Draining lets the client finish and read the close frame
    // instead of a reset.
    let server = OneShot::start(Acceptor::new().with_config(quiet()), echo);
    let mut ws = client().connect(&server.url).unwrap();
    let sent = ws.send(Message::binary(vec![7u8; 4 << 20]));
    let err = server.result();
    // The frame limit (1 MiB) is crossed first, from the header, before any payload.
    assert!(
        matches!(&err, Error::PayloadTooBig(p) if matches!(**p, PayloadTooBig { what: SizeLimit::Frame, .. })),
        "{err:?}"
    );
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
    assert!(sent.is_ok(), "{sent:?}");
    let end = ws.recv().unwrap_err();
    let closed = end.connection_closed().unwrap_or_else(|| panic!("{end:?}"));
    assert_eq!(closed.code(), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn the_client_enforces_its_own_limit_with_1009() {
    let server = OneShot::start(Acceptor::new().with_config(quiet()), |ws| {
        let mut ws = ws.unwrap();
        ws.send(Message::binary(vec![1u8; 10_000])).unwrap();
        ws.recv().unwrap_err()
    });
    let mut ws = client().with_max_message_size(1_000).connect(&server.url).unwrap();
    let err = ws.recv().unwrap_err();
    assert!(matches!(err, Error::PayloadTooBig(_)), "{err:?}");
    assert_eq!(ws.close_info().sent.map(|f| f.code()), Some(CloseCode::MESSAGE_TOO_BIG));
    let seen = server.result();
    assert_eq!(seen.connection_closed().map(|c| c.code()), Some(CloseCode::MESSAGE_TOO_BIG));
}

#[test]
fn keepalive_closes_a_silent_peer_with_1011() {
    let config = Config::default()
        .with_keepalive(Some(Duration::from_millis(100)), Some(Duration::from_millis(200)));
    let server = OneShot::start(Acceptor::new().with_config(config), |ws| {
        let mut ws = ws.unwrap();
        let err = ws.recv().unwrap_err();
        (err, ws.close_info())
    });
    // A client that completes the handshake and then reads nothing, so answers no ping.
    let mut tcp = server.tcp();
    tcp.write_all(UPGRADE.as_bytes()).unwrap();
    let (err, info) = server.result();
    assert!(matches!(&err, Error::Timeout(t) if t.phase == TimeoutPhase::Keepalive), "{err:?}");
    assert_eq!(info.sent.map(|f| f.code()), Some(CloseCode::INTERNAL_ERROR));
    // What the silent client finds once it reads: the 101, a ping, and a close frame with
    // 1011 (0x03F3), then the end of the stream.
    let mut wire = Vec::new();
    tcp.read_to_end(&mut wire).unwrap();
    assert!(wire.starts_with(b"HTTP/1.1 101"));
    assert!(wire.windows(2).any(|w| w[0] == 0x89), "a ping");
    assert!(wire.windows(4).any(|w| w[0] == 0x88 && w[2..4] == [0x03, 0xF3]), "close 1011");
}

#[test]
fn keepalive_pings_are_answered_while_the_client_waits() {
    let config = Config::default()
        .with_keepalive(Some(Duration::from_millis(50)), Some(Duration::from_millis(500)));
    let server = OneShot::start(Acceptor::new().with_config(config), |ws| {
        let mut ws = ws.unwrap();
        // A few rounds of keepalive, each answered by the client inside `recv_timeout`.
        let quiet = ws.recv_timeout(Duration::from_millis(400)).unwrap();
        let rtt = ws.last_rtt();
        ws.send(Message::text("still here")).unwrap();
        (quiet, rtt)
    });
    let mut ws = client().connect(&server.url).unwrap();
    assert_eq!(ws.recv_timeout(WAIT).unwrap(), Some(Message::text("still here")));
    let (quiet, rtt) = server.result();
    assert_eq!(quiet, None);
    assert!(rtt.is_some(), "a keepalive ping was answered");
}

#[test]
fn permessage_deflate_is_negotiated_and_used_both_ways() {
    let server = OneShot::start(
        Acceptor::new().with_config(quiet()).with_compression(DeflateConfig::default()),
        echo,
    );
    let mut ws = client().with_compression(DeflateConfig::default()).connect(&server.url).unwrap();
    assert!(ws.compression().is_some());
    let big = Message::text("compressible ".repeat(10_000));
    for message in [big.clone(), Message::binary(vec![0u8; 100_000]), Message::text(""), big] {
        ws.send(message.clone()).unwrap();
        assert_eq!(ws.recv().unwrap(), message);
    }
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn a_dropped_connection_says_going_away() {
    let server = OneShot::start(Acceptor::new().with_config(quiet()), |ws| {
        let mut ws = ws.unwrap();
        ws.recv().unwrap_err()
    });
    let ws: WebSocket = client().connect(&server.url).unwrap();
    drop(ws);
    let err = server.result();
    assert!(err.is_closed_ok(), "{err:?}");
    assert_eq!(err.connection_closed().map(|c| c.code()), Some(CloseCode::GOING_AWAY));
}

#[test]
fn subprotocols_are_agreed_in_the_servers_order() {
    let server = OneShot::start(
        Acceptor::new().with_config(quiet()).with_subprotocols(["v2", "v1"]),
        |ws| ws.map(|ws| ws.subprotocol().map(str::to_owned)),
    );
    let ws = client().with_subprotocols(["v1", "v2"]).connect(&server.url).unwrap();
    assert_eq!(ws.subprotocol(), Some("v2"));
    assert_eq!(server.result().unwrap().as_deref(), Some("v2"));
}

#[test]
fn a_close_after_a_quiet_spell_waits_its_whole_close_timeout() {
    // Nothing happens for 1.5 s after the handshake; then the server closes with a 1 s close
    // timeout, and the client answers 0.3 s later. The deadline counts from the close, not
    // from the last time the connection was read.
    let config = quiet().with_close_timeout(Some(Duration::from_secs(1)));
    let server = OneShot::start(Acceptor::new().with_config(config), |ws| {
        let mut ws = ws.unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        ws.close(CloseCode::NORMAL, "bye")
    });
    let mut ws = client().connect(&server.url).unwrap();
    std::thread::sleep(Duration::from_millis(1800));
    let seen = ws.recv().unwrap_err();
    assert_eq!(seen.connection_closed().map(|c| c.code()), Some(CloseCode::NORMAL));
    let closed = server.result();
    assert!(closed.is_ok(), "the client answered within the close timeout: {closed:?}");
}

#[test]
fn messages_sent_count_as_activity_for_the_idle_timeout() {
    // The server sends six messages, 0.3 s apart, and never reads; its idle limit is 1 s. Only
    // when it waits for a message does the limit run out, 1 s after its last send.
    let config = quiet().with_idle_timeout(Some(Duration::from_secs(1)));
    let server = OneShot::start(Acceptor::new().with_config(config), |ws| {
        let mut ws = ws.unwrap();
        for i in 0..6 {
            ws.send(Message::text(format!("tick {i}")))?;
            std::thread::sleep(Duration::from_millis(300));
        }
        let waited = std::time::Instant::now();
        let err = ws.recv().unwrap_err();
        Ok::<_, Error>((err, waited.elapsed()))
    });
    let mut ws = client().connect(&server.url).unwrap();
    for i in 0..6 {
        assert_eq!(ws.recv_timeout(WAIT).unwrap(), Some(Message::text(format!("tick {i}"))));
    }
    let (err, waited) = server.result().expect("no idle close while sending");
    assert!(matches!(&err, Error::Timeout(t) if t.phase == TimeoutPhase::Idle), "{err:?}");
    assert!(waited >= Duration::from_millis(500), "closed as idle {waited:?} into the wait");
    assert_eq!(
        ws.recv().unwrap_err().connection_closed().map(|c| c.code()),
        Some(CloseCode::GOING_AWAY)
    );
}
