//! Proxies: a minimal HTTP CONNECT proxy and a minimal SOCKS5 proxy, written here.

use std::sync::{Arc, Mutex};

use palisade_client::Proxy;
use palisade_error::Error;
use palisade_error::ProxyError;
use palisade_proto::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn proxy_error(err: Error) -> ProxyError {
    match err {
        Error::Proxy(p) => *p,
        other => panic!("not a proxy error: {other:?}"),
    }
}

/// An HTTP CONNECT proxy; with `auth`, it wants `Proxy-Authorization: Basic <auth>`.
async fn connect_proxy(auth: Option<&'static str>) -> Server {
    serve(move |mut tcp| async move {
        let head = read_head(&mut tcp).await;
        if let Some(token) = auth
            && header(&head, "proxy-authorization") != Some(&format!("Basic {token}"))
        {
            let _ = tcp
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        let target = head.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next()).unwrap_or("");
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            let _ = tcp.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").await;
            return;
        };
        let _ = tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    })
    .await
}

async fn echo_through(client: palisade_client::Client, url: &str) {
    let ws = client.connect(url).await.unwrap();
    ws.send(Message::text("via proxy")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("via proxy"));
}

#[tokio::test]
async fn http_connect_tunnels_to_the_server() {
    let echo = echo_server().await;
    let proxy = connect_proxy(None).await;
    let via = Proxy::http("127.0.0.1", proxy.addr.port());
    echo_through(client().with_proxy(via), &echo.url("/")).await;
}

#[tokio::test]
async fn http_connect_sends_basic_credentials_and_reports_407() {
    let echo = echo_server().await;
    // base64("bob:hunter2")
    let proxy = connect_proxy(Some("Ym9iOmh1bnRlcjI=")).await;
    let port = proxy.addr.port();
    let good = Proxy::parse(&format!("http://bob:hunter2@127.0.0.1:{port}")).unwrap();
    echo_through(client().with_proxy(good), &echo.url("/")).await;

    for proxy in [
        Proxy::http("127.0.0.1", port),
        Proxy::http("127.0.0.1", port).with_credentials("bob", "wrong-password"),
    ] {
        let err = client().with_proxy(proxy).connect(&echo.url("/")).await.unwrap_err();
        assert!(!err.is_retryable());
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("wrong-password") && !shown.contains("hunter2"), "{shown}");
        match proxy_error(err) {
            ProxyError::InvalidProxyStatus { status, .. } => assert_eq!(status, 407),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_failing_proxy_is_a_retryable_proxy_status() {
    let proxy = connect_proxy(None).await;
    // The target port is closed: the proxy answers 502.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = closed.local_addr().unwrap();
    drop(closed);
    let err = client()
        .with_proxy(Proxy::http("127.0.0.1", proxy.addr.port()))
        .connect(&format!("ws://{target}/"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(matches!(proxy_error(err), ProxyError::InvalidProxyStatus { status: 502, .. }));
}

#[tokio::test]
async fn a_proxy_that_does_not_speak_http_is_an_invalid_message() {
    for answer in ["SSH-2.0-OpenSSH_9.6\r\n\r\n", "", "HTTP/1.1 200 OK\r\n\r\nearly bytes"] {
        let proxy = answering(answer).await;
        let err = client()
            .with_proxy(Proxy::http("127.0.0.1", proxy.addr.port()))
            .connect("ws://127.0.0.1:9/")
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{answer:?}");
        assert!(matches!(proxy_error(err), ProxyError::InvalidProxyMessage { .. }), "{answer:?}");
    }
}

/// What the SOCKS5 proxy saw: the address type and address of each CONNECT.
type Seen = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// A SOCKS5 proxy (RFC 1928); with `auth`, it requires user/password (RFC 1929). A non-zero
/// `reply` refuses every CONNECT with that code.
async fn socks_proxy(auth: Option<(&'static str, &'static str)>, reply: u8) -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let server = serve(move |mut tcp| {
        let record = record.clone();
        async move {
            let mut head = [0u8; 2];
            tcp.read_exact(&mut head).await.unwrap();
            let mut methods = vec![0u8; usize::from(head[1])];
            tcp.read_exact(&mut methods).await.unwrap();
            if let Some((user, password)) = auth {
                if !methods.contains(&2) {
                    let _ = tcp.write_all(&[5, 0xFF]).await;
                    return;
                }
                tcp.write_all(&[5, 2]).await.unwrap();
                let mut v = [0u8; 2];
                tcp.read_exact(&mut v).await.unwrap();
                let mut u = vec![0u8; usize::from(v[1])];
                tcp.read_exact(&mut u).await.unwrap();
                let mut plen = [0u8; 1];
                tcp.read_exact(&mut plen).await.unwrap();
                let mut p = vec![0u8; usize::from(plen[0])];
                tcp.read_exact(&mut p).await.unwrap();
                if u != user.as_bytes() || p != password.as_bytes() {
                    let _ = tcp.write_all(&[1, 1]).await;
                    return;
                }
                tcp.write_all(&[1, 0]).await.unwrap();
            } else {
                tcp.write_all(&[5, 0]).await.unwrap();
            }
            let mut request = [0u8; 4];
            tcp.read_exact(&mut request).await.unwrap();
            let addr = match request[3] {
                1 => {
                    let mut a = vec![0u8; 4];
                    tcp.read_exact(&mut a).await.unwrap();
                    a
                }
                3 => {
                    let mut len = [0u8; 1];
                    tcp.read_exact(&mut len).await.unwrap();
                    let mut a = vec![0u8; usize::from(len[0])];
                    tcp.read_exact(&mut a).await.unwrap();
                    a
                }
                _ => {
                    let mut a = vec![0u8; 16];
                    tcp.read_exact(&mut a).await.unwrap();
                    a
                }
            };
            let mut port = [0u8; 2];
            tcp.read_exact(&mut port).await.unwrap();
            record.lock().unwrap().push((request[3], addr.clone()));
            if reply != 0 {
                let _ = tcp.write_all(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0]).await;
                return;
            }
            let port = u16::from_be_bytes(port);
            let target = match request[3] {
                1 => format!("{}.{}.{}.{}:{port}", addr[0], addr[1], addr[2], addr[3]),
                3 => format!("{}:{port}", String::from_utf8_lossy(&addr)),
                _ => return,
            };
            let Ok(mut upstream) = TcpStream::connect(target).await else { return };
            // A bound address given as a domain name, to exercise that reply form.
            let mut ok = vec![5, 0, 0, 3, 9];
            ok.extend_from_slice(b"localhost");
            ok.extend_from_slice(&port.to_be_bytes());
            tcp.write_all(&ok).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
        }
    })
    .await;
    (server, seen)
}

#[tokio::test]
async fn socks5_without_authentication() {
    let echo = echo_server().await;
    let (proxy, seen) = socks_proxy(None, 0).await;
    echo_through(
        client().with_proxy(Proxy::socks5("127.0.0.1", proxy.addr.port())),
        &echo.url("/"),
    )
    .await;
    assert_eq!(seen.lock().unwrap()[0], (1, vec![127, 0, 0, 1]));
}

#[tokio::test]
async fn socks5_resolves_locally_and_socks5h_remotely() {
    let echo = echo_server().await;
    let (proxy, seen) = socks_proxy(None, 0).await;
    let port = proxy.addr.port();
    let url = format!("ws://localhost:{}/", echo.addr.port());
    // socks5: the name is resolved here and an address is sent (IPv4 or IPv6 for localhost;
    // the test proxy only follows IPv4, so only the request matters here).
    let _ = client().with_proxy(Proxy::socks5("127.0.0.1", port)).connect(&url).await;
    assert!(matches!(seen.lock().unwrap()[0].0, 1 | 4));
    // socks5h: the name itself is sent.
    echo_through(
        client().with_proxy(Proxy::parse(&format!("socks5h://127.0.0.1:{port}")).unwrap()),
        &url,
    )
    .await;
    assert_eq!(seen.lock().unwrap()[1], (3, b"localhost".to_vec()));
}

#[tokio::test]
async fn socks5_with_user_and_password() {
    let echo = echo_server().await;
    let (proxy, _) = socks_proxy(Some(("alice", "pa55")), 0).await;
    let port = proxy.addr.port();
    let good = Proxy::socks5("127.0.0.1", port).with_credentials("alice", "pa55");
    echo_through(client().with_proxy(good), &echo.url("/")).await;

    let wrong = Proxy::socks5("127.0.0.1", port).with_credentials("alice", "nope");
    let err = client().with_proxy(wrong).connect(&echo.url("/")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(matches!(proxy_error(err), ProxyError::InvalidProxyStatus { status: 407, .. }));

    // RFC 1929 allows at most 255 bytes of user name: one more is refused before sending.
    let long = Proxy::socks5("127.0.0.1", port).with_credentials("u".repeat(256), "pa55");
    let err = client().with_proxy(long).connect(&echo.url("/")).await.unwrap_err();
    assert!(matches!(proxy_error(err), ProxyError::InvalidProxy { .. }));
    let max = Proxy::socks5("127.0.0.1", port).with_credentials("u".repeat(255), "pa55");
    let err = client().with_proxy(max).connect(&echo.url("/")).await.unwrap_err();
    assert!(matches!(proxy_error(err), ProxyError::InvalidProxyStatus { status: 407, .. }));

    // No credentials: the proxy accepts no method we offer.
    let none = Proxy::socks5("127.0.0.1", port);
    let err = client().with_proxy(none).connect(&echo.url("/")).await.unwrap_err();
    match proxy_error(err) {
        ProxyError::InvalidProxyStatus { status, reason } => {
            assert_eq!(status, 407);
            assert!(reason.contains("no acceptable"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn socks5_failure_replies_map_to_statuses() {
    for (code, status, retryable) in
        [(1u8, 502u16, true), (2, 403, false), (5, 502, true), (7, 400, false)]
    {
        let (proxy, _) = socks_proxy(None, code).await;
        let err = client()
            .with_proxy(Proxy::socks5("127.0.0.1", proxy.addr.port()))
            .connect("ws://127.0.0.1:9/")
            .await
            .unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "reply {code}");
        match proxy_error(err) {
            ProxyError::InvalidProxyStatus { status: got, .. } => {
                assert_eq!(got, status, "reply {code}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_proxy_that_is_not_socks5_is_an_invalid_message() {
    for answer in ["HTTP/1.1 400 Bad Request\r\n\r\n", ""] {
        // Answers the greeting at once, without waiting for a request head.
        let proxy = serve(move |mut tcp| async move {
            let _ = tcp.write_all(answer.as_bytes()).await;
            let _ = tcp.shutdown().await;
        })
        .await;
        let err = client()
            .with_proxy(Proxy::socks5("127.0.0.1", proxy.addr.port()))
            .connect("ws://127.0.0.1:9/")
            .await
            .unwrap_err();
        assert!(matches!(proxy_error(err), ProxyError::InvalidProxyMessage { .. }), "{answer:?}");
    }
}
