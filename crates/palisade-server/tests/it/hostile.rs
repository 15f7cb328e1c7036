//! Hostile peers over real TCP (issue #17): each test states the defence, asserts the close code
//! or HTTP status, bounds the server's memory from `/proc/self/status` (the server runs in this
//! process) and checks that a fresh client is served right after.

use std::net::SocketAddr;
use std::time::Duration;

use palisade_error::CloseCode;
use palisade_proto::Message;
use palisade_proto::deflate::DeflateConfig;
use palisade_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{LOGS, connect, echo, start, upgrade_request};

/// How much the high-water mark of the resident set may grow during one attack. The attacks
/// announce gigabytes or exabytes; a server that buffered what was announced would cross it.
pub(crate) const MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// `VmHWM` of this process in KiB: the peak resident set, which an allocation of the announced
/// size would raise even if it were freed before we look.
pub(crate) fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A fresh client gets its message echoed.
pub(crate) async fn served(addr: SocketAddr) {
    let c = connect(addr, "/", &[], &[]).await.open();
    c.send(Message::text("still here")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), c.recv()).await.unwrap().unwrap();
    assert_eq!(got.as_text(), Some("still here"));
}

/// Upgrades a raw socket and returns it once the 101 head has been read.
pub(crate) async fn raw_upgraded(addr: SocketAddr) -> TcpStream {
    raw_upgraded_with(addr, "").await.0
}

/// Upgrades a raw socket with `extra` headers; returns it and the 101 head.
async fn raw_upgraded_with(addr: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&upgrade_request(extra)).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0; 1];
        assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "closed during the handshake");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (tcp, head)
}

/// Reads the server's close frame (unmasked, RFC 6455 §5.1) and returns its code.
async fn close_code(tcp: &mut TcpStream) -> CloseCode {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server did not close in time");
    assert!(got.len() >= 4 && got[0] == 0x88, "not a close frame: {got:02x?}");
    CloseCode::from(u16::from_be_bytes([got[2], got[3]]))
}

/// Defence: the frame parser rejects a 64-bit length with the top bit set (RFC 6455 §5.2) with
/// 1002, and refuses a length over `max_message_size` (default 1 MiB, `ProtocolConfig::default()`) with
/// 1009 from the header alone, before any payload is buffered.
#[tokio::test]
async fn frames_announcing_2_pow_63_bytes_are_closed_from_the_header() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let before = peak_rss_kib();
    for (len, code) in
        [(1u64 << 63, CloseCode::PROTOCOL_ERROR), ((1u64 << 63) - 1, CloseCode::MESSAGE_TOO_BIG)]
    {
        let mut tcp = raw_upgraded(addr).await;
        let mut frame = vec![0x82, 0xFF];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
        tcp.write_all(&frame).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, code, "announced {len} bytes");
    }
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    served(addr).await;
}

/// Sends `request` (ignoring a reset once the server has answered) and returns the status line.
async fn status_line(addr: SocketAddr, request: Vec<u8>) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        // The server answers as soon as a limit is crossed and may close before reading the rest.
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0; 1024];
        while !got.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// Defence: the head reader's limits (`HeadLimits::default()`: a line of 8 KiB, 64 headers, a
/// head of 16 KiB) answer 431 before the head is buffered in full.
#[tokio::test]
async fn header_floods_get_431() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let before = peak_rss_kib();
    let long_line = format!("X-Flood: {}\r\n", "a".repeat(1 << 20));
    let many: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    for extra in [long_line, many] {
        let status = status_line(addr, upgrade_request(&extra)).await;
        assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    }
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    served(addr).await;
}

/// A client frame masked with the zero key (RFC 6455 §5.3 allows any key; zero keeps the payload
/// readable here).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Reads one server frame (unmasked, at most 64 KiB) and returns its opcode and payload.
async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0; 2];
    tcp.read_exact(&mut h).await.unwrap();
    let len = match h[1] & 0x7F {
        126 => usize::from(tcp.read_u16().await.unwrap()),
        127 => panic!("the server sent a frame over 64 KiB"),
        n => usize::from(n),
    };
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0F, payload)
}

/// Defence: fragments carry no per-fragment state beyond their bytes, so 100,000 empty
/// continuation frames cost nothing and the message they end is delivered whole.
#[tokio::test]
async fn a_hundred_thousand_empty_fragments_cost_nothing() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let before = peak_rss_kib();
    let mut tcp = raw_upgraded(addr).await;
    let mut burst = frame(0x01, b"");
    for _ in 0..100_000 {
        burst.extend_from_slice(&frame(0x00, b""));
    }
    burst.extend_from_slice(&frame(0x80, b"whole"));
    tcp.write_all(&burst).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tcp)).await.unwrap();
    assert_eq!(got, (0x1, b"whole".to_vec()));
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    served(addr).await;
}

/// Defence: each ping is answered with at most one pong and the reading side keeps going; a
/// burst of 100,000 pings neither grows memory nor holds up the data behind it.
#[tokio::test]
async fn a_hundred_thousand_pings_in_a_burst() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let before = peak_rss_kib();
    let tcp = raw_upgraded(addr).await;
    let (rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let mut burst = Vec::with_capacity(100_001 * 8);
        for i in 0..100_000u32 {
            burst.extend_from_slice(&frame(0x89, &i.to_be_bytes()[2..]));
        }
        burst.extend_from_slice(&frame(0x81, b"after"));
        wr.write_all(&burst).await.unwrap();
        wr
    });
    let mut tcp_rd = rd;
    let mut pongs = 0u32;
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut h = [0; 2];
            tcp_rd.read_exact(&mut h).await.unwrap();
            let mut payload = vec![0; usize::from(h[1] & 0x7F)];
            tcp_rd.read_exact(&mut payload).await.unwrap();
            match h[0] & 0x0F {
                0xA => pongs += 1,
                op => break (op, payload),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, (0x1, b"after".to_vec()));
    assert!(pongs <= 100_000, "{pongs} pongs");
    let _wr = writer.await.unwrap();
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    served(addr).await;
}

/// Defence: UTF-8 is validated incrementally across fragments (RFC 6455 §8.1), so a sequence
/// cut between two frames is checked as one, and the invalid one closes with 1007.
#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    // "€" is E2 82 AC; the split is valid, the continuation is not.
    let mut tcp = raw_upgraded(addr).await;
    tcp.write_all(&[frame(0x01, &[b'a', 0xE2, 0x82]), frame(0x80, &[0xAC, b'b'])].concat())
        .await
        .unwrap();
    assert_eq!(read_frame(&mut tcp).await, (0x1, "a€b".as_bytes().to_vec()));
    tcp.write_all(&[frame(0x01, &[b'a', 0xE2, 0x82]), frame(0x80, &[0x28])].concat())
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, CloseCode::INVALID_PAYLOAD);
    served(addr).await;
}

/// Defence: a peer that vanishes after half a frame costs its connection and nothing else: the
/// connection is gone from the registry and the next client is served.
#[tokio::test]
async fn a_peer_vanishing_mid_frame_leaves_the_server_serving() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    for _ in 0..100 {
        let mut tcp = raw_upgraded(addr).await;
        let mut half = frame(0x81, &[b'x'; 100]);
        half.truncate(40);
        tcp.write_all(&half).await.unwrap();
        drop(tcp);
    }
    // Each connection sees EOF mid-frame and is removed from the registry.
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    served(addr).await;
}

/// Defence: the message limit (`max_message_size`, default 1 MiB) counts the fragments already
/// received, so a 1 GiB message in 1 KiB fragments is closed with 1009 once 1 MiB has arrived.
#[tokio::test]
async fn a_gigabyte_in_tiny_fragments_closes_with_1009() {
    let _logs = LOGS.read().await;
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let before = peak_rss_kib();
    let (mut rd, mut wr) = raw_upgraded(addr).await.into_split();
    let writer = tokio::spawn(async move {
        // 1 KiB fragments, masked with the zero key: a 16-bit length header.
        let mut fragment = vec![0x00, 0x80 | 126, 0x04, 0x00, 0, 0, 0, 0];
        fragment.extend_from_slice(&[b'x'; 1024]);
        let mut first = fragment.clone();
        first[0] = 0x02;
        if wr.write_all(&first).await.is_err() {
            return;
        }
        // Up to 1 GiB; the server closes long before.
        for _ in 1..(1 << 20) {
            if wr.write_all(&fragment).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        // The close frame comes first and the server then ends TCP; a reset is fine after it.
        let mut buf = [0; 64];
        while got.len() < 4 {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "not closed in time");
    assert!(got.len() >= 4 && got[0] == 0x88, "not a close frame: {got:02x?}");
    assert_eq!(CloseCode::from(u16::from_be_bytes([got[2], got[3]])), CloseCode::MESSAGE_TOO_BIG);
    writer.abort();
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    served(addr).await;
}

/// Defence: a half-open handshake holds one connection slot and a small buffer until
/// `handshake_timeout` (default 10 s; 1 s here) answers 408; meanwhile real clients are served.
#[tokio::test]
async fn hundreds_of_half_open_handshakes_while_clients_are_served() {
    let _logs = LOGS.read().await;
    let server = Server::builder()
        .fallback(echo)
        .with_config(crate::quiet())
        .with_handshake_timeout(Duration::from_secs(1))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let before = peak_rss_kib();
    let mut half_open = Vec::new();
    for _ in 0..500 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        half_open.push(tcp);
    }
    served(addr).await;
    for mut tcp in half_open {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    served(addr).await;
}

/// Defence: UTF-8 is validated on the inflated bytes of the whole message, so an invalid
/// sequence whose compressed bytes are split across two fragments closes with 1007
/// (RFC 7692 §6.1: RSV1 on the first frame only).
#[tokio::test]
async fn invalid_utf8_split_across_compressed_frames_closes_with_1007() {
    let _logs = LOGS.read().await;
    let server =
        start(Server::builder().fallback(echo).with_compression(DeflateConfig::default())).await;
    let addr = server.local_addr();
    let (mut tcp, head) =
        raw_upgraded_with(addr, "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
    assert!(head.to_ascii_lowercase().contains("permessage-deflate"), "{head}");
    // A stored (uncompressed) non-final DEFLATE block holding "a", E2 82, then "(": no compressor
    // needed, and the receiver appends 00 00 FF FF itself (RFC 7692 §7.2.2).
    let stored = |text: &[u8]| {
        let len = text.len() as u16;
        let mut block = vec![0x00];
        block.extend_from_slice(&len.to_le_bytes());
        block.extend_from_slice(&(!len).to_le_bytes());
        block.extend_from_slice(text);
        block
    };
    // The valid sequence, split the same way, is echoed.
    let valid = stored("a€".as_bytes());
    let (first, second) = valid.split_at(7);
    tcp.write_all(&[frame(0x41, first), frame(0x80, second)].concat()).await.unwrap();
    assert_eq!(read_frame(&mut tcp).await.0, 0x1);
    let text = [b'a', 0xE2, 0x82, 0x28];
    let deflated = stored(&text);
    let (first, second) = deflated.split_at(7);
    tcp.write_all(&[frame(0x41, first), frame(0x80, second)].concat()).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, CloseCode::INVALID_PAYLOAD);
    served(addr).await;
}
