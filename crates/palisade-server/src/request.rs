//! The request a client sent to open a connection, as policy hooks and handlers see it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use palisade_error::redact;
use palisade_proto::handshake::{HeadLimits, parse_request};

/// An HTTP request received by the server: a WebSocket upgrade, or a plain request for the
/// [`crate::ServerBuilder::on_http`] hook.
///
/// `Debug` redacts credentials (the query string, `Authorization`, cookies,
/// `Sec-WebSocket-Protocol`), so a request can be logged as it is.
///
/// A handler's copy keeps the request as the bytes it arrived in and parses them again on its
/// first use: an open connection then holds a few hundred bytes for its request instead of the
/// parsed headers' kilobyte or more.
#[derive(Clone)]
pub struct HandshakeRequest {
    inner: Arc<Inner>,
    peer: SocketAddr,
}

struct Inner {
    /// The request head as received, when known, and the limits it was parsed within.
    head: Option<(Bytes, HeadLimits)>,
    /// Boxed: an empty cell would otherwise take a whole `Request`'s room.
    parsed: OnceLock<Box<Request<()>>>,
}

impl HandshakeRequest {
    /// A request parsed from `head`, which parsed within `limits` into `request`.
    pub(crate) fn from_head(
        head: Bytes,
        limits: HeadLimits,
        request: Request<()>,
        peer: SocketAddr,
    ) -> Self {
        let inner = Inner { head: Some((head, limits)), parsed: OnceLock::from(Box::new(request)) };
        Self { inner: Arc::new(inner), peer }
    }

    /// A request known only parsed (another HTTP server read it).
    pub(crate) fn new(request: Request<()>, peer: SocketAddr) -> Self {
        let inner = Inner { head: None, parsed: OnceLock::from(Box::new(request)) };
        Self { inner: Arc::new(inner), peer }
    }

    /// The copy a connection keeps for its life: the head's bytes only, parsed again when
    /// first asked for.
    pub(crate) fn compact(&self) -> Self {
        match &self.inner.head {
            Some(head) => {
                let inner = Inner { head: Some(head.clone()), parsed: OnceLock::new() };
                Self { inner: Arc::new(inner), peer: self.peer }
            }
            None => self.clone(),
        }
    }

    fn request(&self) -> &Request<()> {
        self.inner.parsed.get_or_init(|| {
            let (head, limits) =
                self.inner.head.as_ref().expect("invariant: a request without its head is parsed");
            Box::new(
                parse_request(head, limits)
                    .expect("invariant: these bytes parsed within these limits before"),
            )
        })
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The method.
    pub fn method(&self) -> &Method {
        self.request().method()
    }

    /// The request target.
    pub fn uri(&self) -> &Uri {
        self.request().uri()
    }

    /// The path of the request target.
    pub fn path(&self) -> &str {
        self.request().uri().path()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.request().headers()
    }

    /// A header's value, if present once and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.request().headers().get_all(name).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The token of an `Authorization: Bearer …` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    }

    /// The value of cookie `name` (from any `Cookie` header).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.request()
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// The first value of query parameter `name` (percent-decoding `%XX` and `+`). Query strings
    /// are redacted from every log line palisade writes, so a token here stays out of logs.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.request().uri().query()?;
        query.split('&').filter_map(|pair| pair.split_once('=').or(Some((pair, "")))).find_map(
            |(k, v)| (percent_decode(k).as_deref() == Some(name)).then(|| percent_decode(v)),
        )?
    }

    /// The subprotocols the client offered, in its order.
    pub fn subprotocols(&self) -> Vec<&str> {
        self.request()
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// A token a browser carried as a subprotocol named `prefix` + token (browsers cannot set
    /// `Authorization` on a WebSocket). The server must not echo this "protocol" back: accept
    /// with one of the client's real subprotocols (see [`crate::Accept::with_subprotocol`]).
    pub fn subprotocol_token(&self, prefix: &str) -> Option<&str> {
        self.subprotocols().into_iter().find_map(|p| p.strip_prefix(prefix))
    }

    /// The underlying request.
    pub fn as_http(&self) -> &Request<()> {
        self.request()
    }
}

impl fmt::Debug for HandshakeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRequest")
            .field("method", self.request().method())
            .field("target", &redact::uri(&self.request().uri().to_string()))
            .field("peer", &self.peer)
            .field("headers", &redact::Headers(self.request().headers()))
            .finish()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> HandshakeRequest {
        let mut b = Request::builder().uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        HandshakeRequest::new(b.body(()).unwrap(), "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn credentials_from_every_place_a_browser_can_put_them() {
        let r = req(
            "/chat?room=a%20b&token=t%2Bk+1",
            &[
                ("authorization", "Bearer abc.def"),
                ("cookie", "theme=dark; session=\"s1\""),
                ("sec-websocket-protocol", "chat.v1, bearer.XYZ"),
            ],
        );
        assert_eq!(r.bearer_token(), Some("abc.def"));
        assert_eq!(r.cookie("session"), Some("s1"));
        assert_eq!(r.query_param("token").as_deref(), Some("t+k 1"));
        assert_eq!(r.query_param("room").as_deref(), Some("a b"));
        assert_eq!(r.subprotocol_token("bearer."), Some("XYZ"));
        assert_eq!(r.subprotocols(), ["chat.v1", "bearer.XYZ"]);
    }

    #[test]
    fn a_compact_copy_parses_its_head_again() {
        let head = Bytes::from_static(
            b"GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nCookie: session=s1\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        );
        let limits = HeadLimits::default();
        let parsed = parse_request(&head, &limits).unwrap();
        let full =
            HandshakeRequest::from_head(head, limits, parsed, "127.0.0.1:1".parse().unwrap());
        let compact = full.compact();
        assert!(compact.inner.parsed.get().is_none());
        assert_eq!(compact.path(), "/chat");
        assert_eq!(compact.query_param("x").as_deref(), Some("1"));
        assert_eq!(compact.cookie("session"), Some("s1"));
        assert_eq!(compact.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(compact.headers(), full.headers());
        assert_eq!(compact.peer_addr(), full.peer_addr());
    }

    #[test]
    fn debug_redacts_secrets() {
        let r = req("/chat?token=s3cret", &[("authorization", "Bearer s3cret")]);
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
