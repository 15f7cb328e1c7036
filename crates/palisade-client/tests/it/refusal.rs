//! Non-101 answers: refusals with their body, retry hints, and redirects.

use std::sync::{Arc, Mutex};

use http::{HeaderValue, StatusCode, header};
use palisade_error::{Category, Error};
use palisade_error::{HandshakeError, InvalidStatus};
use palisade_proto::Message;
use tokio::io::AsyncWriteExt;

use crate::support::*;

fn invalid_status(err: Error) -> InvalidStatus {
    match handshake_error(err) {
        HandshakeError::InvalidStatus(s) => s,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn a_401_keeps_status_headers_and_json_body() {
    let server = answering(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"api\"\r\n\
         Set-Cookie: session=s3cret\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n\
         {\"error\":\"token expired\"}\r\n",
    )
    .await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(err.status_to_send(), None, "a client owes no status for a refusal");
    assert_eq!(err.category(), Category::Handshake);
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let status = invalid_status(err);
    assert_eq!(status.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(status.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"api\"");
    assert!(status.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(status.body_text(), Some("{\"error\":\"token expired\"}\r\n"));
}

#[tokio::test]
async fn a_chunked_body_is_decoded() {
    let server = answering(
        "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n\
         7\r\n{\"a\":1,\r\n6\r\n\"b\":2}\r\n0\r\n\r\n",
    )
    .await;
    let status = invalid_status(client().connect(&server.url("/")).await.unwrap_err());
    assert_eq!(status.body_text(), Some("{\"a\":1,\"b\":2}"));
}

#[tokio::test]
async fn a_body_without_length_is_read_until_close() {
    let server = answering("HTTP/1.1 404 Not Found\r\n\r\nno such room").await;
    let status = invalid_status(client().connect(&server.url("/")).await.unwrap_err());
    assert_eq!(status.body(), b"no such room");
}

#[tokio::test]
async fn the_body_is_cut_at_the_limit() {
    let server = serve(|mut tcp| async move {
        read_head(&mut tcp).await;
        let body = "x".repeat(200_000);
        let response =
            format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let _ = tcp.write_all(response.as_bytes()).await;
    })
    .await;
    // Default limit: 64 KiB.
    let status = invalid_status(client().connect(&server.url("/")).await.unwrap_err());
    assert_eq!(status.body().len(), 64 * 1024);
    // One byte over a small limit is cut.
    let status =
        invalid_status(client().with_max_body(10).connect(&server.url("/")).await.unwrap_err());
    assert_eq!(status.body(), b"xxxxxxxxxx");
}

#[tokio::test]
async fn a_503_with_retry_after_is_retryable() {
    let server = answering(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(invalid_status(err).retry_after(), Some(2));
}

/// A server that redirects `/hop/N` to `/hop/N-1` (relative), and `/hop/0` to the echo server.
async fn redirect_chain(target: String) -> Server {
    serve(move |mut tcp| {
        let target = target.clone();
        async move {
            let head = read_head(&mut tcp).await;
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            let n: u32 = path.trim_start_matches("/hop/").parse().unwrap_or(0);
            let location = if n == 0 { target } else { format!("/hop/{}", n - 1) };
            let status =
                ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"][n as usize % 3];
            let response =
                format!("HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
            let _ = tcp.write_all(response.as_bytes()).await;
        }
    })
    .await
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let echo = echo_server().await;
    let chain = redirect_chain(echo.url("/final")).await;
    // /hop/2 → /hop/1 → /hop/0 → echo: three redirects.
    let ws = client().connect(&chain.url("/hop/2")).await.unwrap();
    assert_eq!(ws.redirects(), 3);
    assert_eq!(ws.url().path(), "/final");
    ws.send(Message::text("after redirects")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("after redirects"));

    // Exactly at the limit is fine; one more is refused.
    client().with_max_redirects(3).connect(&chain.url("/hop/2")).await.unwrap();
    let err = client().with_max_redirects(2).connect(&chain.url("/hop/2")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(matches!(handshake_error(err), HandshakeError::TooManyRedirects { max: 2 }));

    // With redirects off, the redirect is the refusal it is.
    let err = client().with_max_redirects(0).connect(&chain.url("/hop/1")).await.unwrap_err();
    let status = invalid_status(err);
    assert_eq!(status.status(), StatusCode::FOUND);
    assert_eq!(status.headers()[header::LOCATION], "/hop/0");
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_default_limit() {
    let server =
        answering("HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n").await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    assert!(matches!(handshake_error(err), HandshakeError::TooManyRedirects { max: 5 }));
}

#[tokio::test]
async fn credentials_are_not_forwarded_to_another_origin() {
    // One server: `/same` and `/other` redirect, `/landed` is an echo endpoint that records
    // the request it got.
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let server = serve(move |mut tcp| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut tcp).await;
            let port =
                header(&head, "host").and_then(|h| h.rsplit(':').next()).unwrap_or("").to_owned();
            let location = if head.starts_with("GET /same ") {
                "/landed".to_owned()
            } else if head.starts_with("GET /other ") {
                // The same socket under another host name: another origin.
                format!("ws://localhost:{port}/landed")
            } else {
                seen.lock().unwrap().push(head.clone());
                return echo_after_head(tcp, &head, "").await;
            };
            let response =
                format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\r\n");
            let _ = tcp.write_all(response.as_bytes()).await;
        }
    })
    .await;
    let with_credentials = client()
        .with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0k3n"))
        .with_header(header::COOKIE, HeaderValue::from_static("sid=1"))
        .with_header(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr"));
    for (path, kept) in [("/same", true), ("/other", false)] {
        let ws = with_credentials.connect(&server.url(path)).await.unwrap();
        assert_eq!(ws.redirects(), 1);
        let head = heads.lock().unwrap().last().unwrap().clone();
        assert_eq!(header(&head, "authorization").is_some(), kept, "{path}: {head}");
        assert_eq!(header(&head, "cookie").is_some(), kept, "{path}: {head}");
        assert_eq!(header(&head, "accept-language"), Some("fr"), "{path}: {head}");
    }
}
