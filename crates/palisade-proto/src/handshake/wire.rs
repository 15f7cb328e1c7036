//! Writing handshake messages as HTTP/1.1 bytes (RFC 7230 §3).

use std::fmt;

use bytes::BufMut;
use http::header::HeaderName;
use http::{HeaderMap, Request, Response};
use palisade_error::redact;

/// Writes `request`'s head: request line, headers, empty line.
///
/// The request target is written in origin-form, the URI's path and query (`/` if it has
/// none); the authority belongs in the `Host` header. The version is always HTTP/1.1. The body
/// is not written (a handshake request has none). Header values cannot contain CR or LF
/// ([`http::HeaderValue`] refuses them), so nothing written here can split the message.
///
/// `out` is any growable buffer: `Vec<u8>` or `bytes::BytesMut`.
pub fn write_request<T>(request: &Request<T>, out: &mut impl BufMut) {
    out.put_slice(request.method().as_str().as_bytes());
    out.put_u8(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if !target.starts_with('/') {
        out.put_u8(b'/');
    }
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    write_headers(request.headers(), out);
}

/// Writes `response`'s head (status line, headers, empty line) followed by `body`.
///
/// The version is always HTTP/1.1. `body` is written as given: pass `&[]` for a 101, and
/// `response.body()` for a [`crate::handshake::rejection`], whose `Content-Length` matches it.
pub fn write_response<T>(response: &Response<T>, body: &[u8], out: &mut impl BufMut) {
    let status = response.status();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    write_headers(response.headers(), out);
    out.put_slice(body);
}

fn write_headers(headers: &HeaderMap, out: &mut impl BufMut) {
    for (name, value) in headers {
        write_name(name, out);
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Writes a header name in its conventional capitalisation (`Sec-WebSocket-Key`). Names are
/// case-insensitive (RFC 7230 §3.2), but some deployed peers compare them verbatim.
fn write_name(name: &HeaderName, out: &mut impl BufMut) {
    for (i, part) in name.as_str().split('-').enumerate() {
        if i > 0 {
            out.put_u8(b'-');
        }
        if part == "websocket" {
            out.put_slice(b"WebSocket");
            continue;
        }
        let mut bytes = part.bytes();
        if let Some(first) = bytes.next() {
            out.put_u8(first.to_ascii_uppercase());
        }
        for b in bytes {
            out.put_u8(b);
        }
    }
}

/// Headers with credential values redacted, for `Debug`: palisade-error's one view of them.
pub(crate) use palisade_error::redact::Headers as RedactedHeaders;

/// Shows a list whose items may be credentials (subprotocols) as its length only.
pub(crate) struct RedactedList(pub(crate) usize);

impl fmt::Debug for RedactedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} x {}]", self.0, redact::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, StatusCode};

    use super::*;

    #[test]
    fn writes_a_request_head_with_conventional_names() {
        let mut request = Request::new(());
        *request.uri_mut() = "/chat?x=1".parse().unwrap();
        request.headers_mut().insert("host", HeaderValue::from_static("example.com"));
        request.headers_mut().insert("sec-websocket-key", HeaderValue::from_static("k"));
        request.headers_mut().insert("x-custom-thing", HeaderValue::from_static("v"));
        let mut out = Vec::new();
        write_request(&request, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\nSec-WebSocket-Key: k\r\nX-Custom-Thing: v\r\n\r\n"
        );
    }

    #[test]
    fn writes_origin_form_for_an_absolute_uri() {
        let mut request = Request::new(());
        *request.uri_mut() = "ws://example.com".parse().unwrap();
        let mut out = bytes::BytesMut::new();
        write_request(&request, &mut out);
        assert_eq!(&out[..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn writes_a_response_with_its_body() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        response.headers_mut().insert("content-length", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_response(&response, b"hi", &mut out);
        assert_eq!(out, b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nhi");
        *response.status_mut() = StatusCode::from_u16(599).unwrap();
        let mut out = Vec::new();
        write_response(&response, b"", &mut out);
        assert!(out.starts_with(b"HTTP/1.1 599 \r\n"));
    }

    #[test]
    fn debug_redacts_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("origin", HeaderValue::from_static("https://a.example"));
        let shown = format!("{:?}", RedactedHeaders(&headers));
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("https://a.example"));
    }
}
