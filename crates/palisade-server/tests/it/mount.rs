//! The handshake decision apart from the socket: palisade's server mounted behind hyper 1,
//! which reads the request and performs the upgrade, with the same policies, typed handler
//! arguments, registry, keepalive and graceful shutdown as the accept loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade_conn::WebSocket;
use palisade_error::{CloseCode, Error};
use palisade_proto::Message;
use palisade_server::{OriginPolicy, Path, Server, State, Upgrade};
use tokio::net::TcpListener;

use super::{Answer, connect, quiet, raw};

/// What hyper answers for one request: `/health` itself, everything else through palisade.
async fn route(
    palisade: Server,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    // Taken before the request is handed over: hyper completes the upgrade through it.
    let on_upgrade = hyper::upgrade::on(&mut request);
    match palisade.decide(request, peer).await {
        Upgrade::Respond(response) => Ok(response.map(Full::new)),
        Upgrade::Accept(accepted) => {
            let (response, connection) = accepted.into_parts();
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    connection.serve(TokioIo::new(upgraded), &[]).await;
                }
            });
            Ok(response.map(|()| Full::new(Bytes::new())))
        }
        _ => Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::new()))
            .unwrap()),
    }
}

/// hyper's HTTP/1 server on 127.0.0.1, with upgrades, mounting `palisade`.
async fn hyper_server(palisade: Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { return };
            let palisade = palisade.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| route(palisade.clone(), req, peer));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A room handler: route parameter and application state as typed arguments; it greets, then
/// echoes.
async fn room(
    ws: WebSocket,
    Path(room): Path<String>,
    State(motd): State<&'static str>,
) -> Result<(), Error> {
    ws.send(format!("{motd} in {room}")).await?;
    while let Some(message) = ws.next().await {
        ws.send(message?).await?;
    }
    Ok(())
}

fn palisade() -> Server {
    Server::builder()
        .route("/rooms/{room}", room)
        .route("/feed", feed)
        .with_state("welcome")
        .with_config(quiet())
        .with_allowed_origins(OriginPolicy::new(["https://app.example"]).with_missing_allowed(true))
        .build()
}

/// A handler that only pushes, never receiving.
async fn feed(ws: WebSocket) -> Result<(), Error> {
    loop {
        ws.send("tick").await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_typed_handler_runs_behind_hyper() {
    let server = palisade();
    let addr = hyper_server(server.clone()).await;
    let ws = connect(addr, "/rooms/lobby", &[], &[]).await.open();
    assert_eq!(ws.recv().await.unwrap(), Message::text("welcome in lobby"));
    ws.send("hi").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("hi"));
    assert_eq!(server.connections().len(), 1, "the mounted connection is registered");
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(
        raw(addr, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .lines()
            .next(),
        Some("HTTP/1.1 200 OK")
    );
}

#[tokio::test]
async fn refusals_go_out_through_hyper_with_their_status_and_body() {
    let addr = hyper_server(palisade()).await;
    let (status, _, body) =
        connect(addr, "/rooms/lobby", &[("origin", "https://evil.example")], &[]).await.refused();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("403"), "{body}");
    let (status, _, _) = connect(addr, "/nowhere", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Not an upgrade at all: palisade's own answer (426), sent by hyper.
    let answer =
        raw(addr, b"GET /rooms/lobby HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
}

#[tokio::test]
async fn mounted_connections_share_limits_and_graceful_shutdown() {
    let server =
        Server::builder().route("/feed", feed).with_config(quiet()).with_max_connections(1).build();
    let addr = hyper_server(server.clone()).await;
    let first = connect(addr, "/feed", &[], &[]).await.open();
    assert_eq!(first.recv().await.unwrap(), Message::text("tick"));
    let (status, headers, _) = connect(addr, "/feed", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(http::header::RETRY_AFTER));
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(5)).await }
    });
    let end = loop {
        match first.recv().await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert_eq!(end.connection_closed().unwrap().code(), CloseCode::GOING_AWAY);
    let summary = shutdown.await.unwrap();
    assert_eq!((summary.closed, summary.aborted), (1, 0));
    let Answer::Refused { status, .. } = connect(addr, "/feed", &[], &[]).await else {
        panic!("a server shutting down opens nothing")
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
