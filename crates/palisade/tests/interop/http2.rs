//! WebSocket over HTTP/2 (RFC 8441), palisade to palisade over real TCP: the server is hyper's
//! HTTP/2 with extended CONNECT (`palisade::hyper::serve_connection`), the client palisade's
//! with `with_http2` (the `h2` crate), on cleartext with prior knowledge and over TLS with ALPN
//! `h2`. The same handlers, errors, refusals and permessage-deflate as over HTTP/1.1. And an
//! independent client: Python's `h2` with `wsproto` (`py/h2_client.py`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade::client::{Client, Connected};
use palisade::http::{StatusCode, Version, header};
use palisade::server::{CloseWith, DeflateConfig, OriginPolicy, Rejection, Server};
use palisade::{CloseCode, Config, Error, Message, WebSocket};
use rcgen::{CertificateParams, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::Peer;

async fn echo(ws: WebSocket) -> Result<(), Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// `server` on hyper (HTTP/1.1 and HTTP/2, extended CONNECT enabled) on 127.0.0.1, over TLS
/// when `tls` is given.
async fn serve(server: Server, tls: Option<Arc<ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { return };
            let server = server.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = match tls {
                    Some(config) => match TlsAcceptor::from(config).accept(tcp).await {
                        Ok(stream) => palisade::hyper::serve_connection(server, stream, peer).await,
                        Err(_) => return,
                    },
                    None => palisade::hyper::serve_connection(server, tcp, peer).await,
                };
            });
        }
    });
    addr
}

fn h2_client() -> Client {
    Client::new().with_keepalive(None, None).with_http2(true)
}

async fn open(client: &Client, url: &str) -> Connected {
    client.connect(url).await.unwrap()
}

#[tokio::test]
async fn echo_over_http2_with_prior_knowledge_answered_with_200() {
    let server = Server::builder().route("/ws", echo).with_config(quiet()).build();
    let addr = serve(server.clone(), None).await;
    let connected = open(&h2_client(), &format!("ws://{addr}/ws")).await;
    // RFC 8441 §5: 200 over HTTP/2, not 101.
    assert_eq!(connected.response().status(), StatusCode::OK);
    assert_eq!(connected.response().version(), Version::HTTP_2);
    let ws = connected.into_socket();
    ws.send("hello").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("hello"));
    // Larger than HTTP/2's initial 64 KiB windows both ways: flow control is given back.
    let big = Message::binary((0..600_000u32).map(|i| i as u8).collect::<Vec<_>>());
    for _ in 0..3 {
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), big);
    }
    assert_eq!(server.connections().len(), 1, "registered like any connection");
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    let info = ws.close_info();
    assert_eq!(info.received.map(|f| f.code()), Some(CloseCode::NORMAL));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.connections().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the connection is counted out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_over_http2() {
    let server = Server::builder()
        .fallback(echo)
        .with_config(quiet())
        .with_compression(DeflateConfig::default())
        .build();
    let addr = serve(server, None).await;
    let client = h2_client().with_compression(DeflateConfig::default());
    let connected = open(&client, &format!("ws://{addr}/")).await;
    assert!(connected.compression().is_some(), "deflate agreed over HTTP/2");
    let extensions = &connected.response().headers()[header::SEC_WEBSOCKET_EXTENSIONS];
    assert!(extensions.to_str().unwrap().starts_with("permessage-deflate"), "{extensions:?}");
    let ws = connected.into_socket();
    let text = "compressible ".repeat(10_000);
    ws.send(text.as_str()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text(text));
    let stats = ws.stats();
    assert!(stats.bytes_out < 20_000, "the message went out compressed: {stats:?}");
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn refusals_over_http2_keep_their_status_headers_and_body() {
    let server = Server::builder()
        .route("/ws", echo)
        .with_allowed_origins(OriginPolicy::new(["https://app.example"]).with_missing_allowed(true))
        .on_handshake(|request| async move {
            if request.query_param("token").as_deref() == Some("good") {
                palisade::server::Accept::new().into()
            } else {
                Rejection::unauthorized("Bearer")
                    .with_json(&serde_json::json!({"error": "no token"}))
                    .into()
            }
        })
        .build();
    let addr = serve(server, None).await;
    let err = h2_client().connect(&format!("ws://{addr}/ws")).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::UNAUTHORIZED));
    let palisade::Error::Handshake(handshake) = &err else { panic!("{err:?}") };
    let palisade::error::HandshakeError::InvalidStatus(refusal) = &**handshake else {
        panic!("{handshake:?}")
    };
    assert_eq!(refusal.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let body: serde_json::Value = serde_json::from_slice(refusal.body()).unwrap();
    assert_eq!(body, serde_json::json!({"error": "no token"}));

    // The origin policy, with `:authority` standing in for `Host`.
    let err = h2_client()
        .with_origin("https://evil.example")
        .connect(&format!("ws://{addr}/ws?token=good"))
        .await
        .unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::FORBIDDEN));
    // palisade's routing.
    let err = h2_client().connect(&format!("ws://{addr}/elsewhere")).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::NOT_FOUND));
    // And the right token opens.
    open(&h2_client(), &format!("ws://{addr}/ws?token=good")).await;
}

#[tokio::test]
async fn a_handlers_close_code_reaches_the_http2_client() {
    let server = Server::builder()
        .fallback(|ws: WebSocket| async move {
            let message = ws.recv().await?;
            let reason = message.as_text().unwrap_or_default().to_owned();
            Err::<(), palisade::server::BoxError>(CloseWith::new(CloseCode(4000), &reason).into())
        })
        .with_config(quiet())
        .build();
    let addr = serve(server, None).await;
    let ws = open(&h2_client(), &format!("ws://{addr}/")).await.into_socket();
    ws.send("bye for now").await.unwrap();
    let err = ws.recv().await.unwrap_err();
    let closed = err.connection_closed().expect("closed by the server");
    assert_eq!(closed.code(), CloseCode(4000));
    assert_eq!(closed.reason(), "bye for now");
}

#[tokio::test]
async fn a_server_without_extended_connect_is_a_precise_error() {
    // Plain hyper HTTP/2 without `enable_connect_protocol`.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let service = hyper::service::service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
            .await;
    });
    let err = h2_client().connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            palisade::Error::Handshake(h) if matches!(
                &**h,
                palisade::error::HandshakeError::InvalidMessage(
                    palisade::error::InvalidMessage::Unexpected { .. }
                )
            )
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("extended CONNECT"), "{err}");
}

/// A self-signed certificate for `localhost`, and the server's rustls configuration offering
/// `h2` and `http/1.1` by ALPN.
fn tls() -> (Arc<ServerConfig>, CertificateDer<'static>) {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (Arc::new(config), cert.der().clone())
}

#[tokio::test]
async fn wss_negotiates_http2_by_alpn_and_http1_clients_still_connect() {
    let (config, cert) = tls();
    let server = Server::builder().fallback(echo).with_config(quiet()).build();
    let addr = serve(server, Some(config)).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let client = h2_client().with_root_certificate(cert.clone());
    let connected = open(&client, &url).await;
    assert!(connected.is_tls());
    assert_eq!(connected.response().version(), Version::HTTP_2, "ALPN chose h2");
    let ws = connected.into_socket();
    ws.send("over h2").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("over h2"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();

    // Without `with_http2`, ALPN offers only http/1.1: the same server answers with 101.
    let client = Client::new().with_keepalive(None, None).with_root_certificate(cert);
    let connected = open(&client, &url).await;
    assert_eq!(connected.response().status(), StatusCode::SWITCHING_PROTOCOLS);
    let ws = connected.into_socket();
    ws.send("over h1").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("over h1"));
}

/// Python's `h2` and `wsproto`, sharing no code with palisade or hyper, against palisade's
/// HTTP/2 server: the SETTINGS, the 200, echoes past the flow-control window, permessage-deflate,
/// a refusal by the origin policy, and a handler's close code.
#[tokio::test]
async fn python_h2_and_wsproto_speak_rfc_8441_to_palisade() {
    let server = Server::builder()
        .route("/ws", echo)
        .route("/close", |ws: WebSocket| async move {
            let message = ws.recv().await?;
            let text = message.as_text().unwrap_or_default().to_owned();
            let (code, reason) = text.split_once(' ').unwrap_or(("1000", ""));
            let code = CloseCode(code.parse().unwrap_or(1000));
            Err::<(), palisade::server::BoxError>(CloseWith::new(code, reason).into())
        })
        .with_config(quiet().with_max_message_size(1 << 20))
        .with_compression(DeflateConfig::default())
        .with_allowed_origins(OriginPolicy::new(["https://app.example"]).with_missing_allowed(true))
        .build();
    let addr = serve(server, None).await;
    let port = addr.port().to_string();
    let peer = |args: &[&str]| {
        let mut all = vec![args[0], "127.0.0.1", &port];
        all.extend(&args[1..]);
        Peer::spawn("h2_client.py", &all)
    };
    let mut py = peer(&["echo", "/ws"]);
    assert_eq!(py.line().await, "SETTINGS enable_connect_protocol=1");
    assert_eq!(py.line().await, "OPEN 200");
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");

    let mut py = peer(&["deflate", "/ws"]);
    py.line_starting("OPEN").await;
    let ext = py.line().await;
    assert!(ext.starts_with("EXT permessage-deflate"), "{ext}");
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");

    let mut py = peer(&["origin", "/ws", "https://evil.example"]);
    py.line_starting("SETTINGS").await;
    assert_eq!(py.line().await, "STATUS 403");

    let mut py = peer(&["close", "/close"]);
    py.line_starting("OPEN").await;
    assert_eq!(py.line().await, "CLOSED 4000 going");
}

/// Headless Chromium over `wss://` against palisade's HTTP/2 server (ALPN `h2`, a test
/// certificate): the page comes over HTTP/2, and the handler tells the browser which HTTP
/// version its WebSocket request came in.
#[tokio::test]
async fn chromium_over_wss_with_http2() {
    let (config, _) = tls();
    let server = Server::builder()
        .on_http(|request| async move {
            (request.path() == "/").then(|| {
                let mut page = palisade::http::Response::new(bytes::Bytes::from_static(
                    b"<!doctype html><title>palisade</title>",
                ));
                page.headers_mut().insert(
                    header::CONTENT_TYPE,
                    palisade::http::HeaderValue::from_static("text/html"),
                );
                page
            })
        })
        .route("/ws", |ws: WebSocket, info: palisade::server::ConnectionInfo| async move {
            let version = format!("{:?}", info.request().as_http().version());
            ws.send(format!("{version} {}", info.request().method())).await?;
            echo(ws).await
        })
        .with_config(quiet())
        .build();
    let addr = serve(server, Some(config)).await;
    let page = format!("https://localhost:{}/", addr.port());
    let ws = format!("wss://localhost:{}/ws", addr.port());
    let mut browser = Peer::spawn_node_script("browser_h2.js", &[&page, &ws]);
    assert_eq!(browser.line().await, "PAGE h2", "the page came over HTTP/2");
    assert_eq!(browser.line().await, "MESSAGE HTTP/2.0 CONNECT", "the WebSocket came over HTTP/2");
    assert_eq!(browser.line().await, "ECHO hello");
    assert_eq!(browser.line().await, "CLOSED 1000");
}
