//! What a handshake hook decides: accept (with a subprotocol, headers and per-connection data),
//! reject with a full HTTP response, or accept and close at once with a code.

use std::any::Any;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use palisade_error::{CloseCode, CloseFrame};

/// The outcome of [`crate::ServerBuilder::on_handshake`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Decision {
    /// Open the connection.
    Accept(Accept),
    /// Refuse the upgrade with this HTTP response; no connection opens. Non-browser clients
    /// read the status (palisade's client reports it as `InvalidStatus`, body included).
    Reject(Rejection),
    /// Open the connection and close it at once with this frame. Browsers cannot read a
    /// refused handshake's status (they report 1006), but they do see a close code: use 3000
    /// Unauthorized, 3003 Forbidden or a 4xxx code here for browser clients.
    Close(CloseFrame),
}

impl From<Accept> for Decision {
    fn from(a: Accept) -> Self {
        Self::Accept(a)
    }
}

impl From<Rejection> for Decision {
    fn from(r: Rejection) -> Self {
        Self::Reject(r)
    }
}

/// Acceptance of an upgrade, with what goes into the 101 response and into the connection.
#[derive(Debug, Default)]
pub struct Accept {
    pub(crate) subprotocol: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) value: Option<Box<dyn Any + Send>>,
}

impl Accept {
    /// Accept with the server's configured subprotocol choice and nothing else.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer with this subprotocol (which the client must have offered; otherwise the
    /// handshake fails with 400 rather than sending an answer the client must refuse).
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// Adds a header to the 101 response.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Hands a value (the authenticated user, say) to the connection's handler, which takes
    /// it, moved, as a [`crate::Handshake<T>`] argument. One value per connection: a later call
    /// replaces it.
    pub fn with_value<T: Send + 'static>(mut self, value: T) -> Self {
        self.value = Some(Box::new(value));
        self
    }
}

/// A full HTTP response refusing an upgrade: status, headers and body.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) reason: String,
}

impl Rejection {
    /// A rejection with `status` and an empty body.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            reason: status.canonical_reason().unwrap_or("rejected").to_owned(),
        }
    }

    /// 401 with `WWW-Authenticate: <challenge>` (e.g. `Bearer realm="chat"`).
    pub fn unauthorized(challenge: &str) -> Self {
        let mut r = Self::new(StatusCode::UNAUTHORIZED);
        if let Ok(v) = HeaderValue::from_str(challenge) {
            r.headers.insert(WWW_AUTHENTICATE, v);
        }
        r
    }

    /// 403 Forbidden.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Adds `Retry-After: <seconds>`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        self
    }

    /// A plain-text body.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        self.body = Bytes::from(text.into());
        self
    }

    /// A JSON body.
    pub fn with_json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        // Serializing plain data to a Vec cannot fail; an exotic Serialize impl that fails
        // gets an empty object rather than a panic.
        self.body = Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()));
        self.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self
    }

    /// Why, for the server's log (never sent).
    pub fn with_log_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The close frame for [`Decision::Close`]: 3000 Unauthorized, with a reason.
pub fn close_unauthorized(reason: &str) -> Decision {
    Decision::Close(CloseFrame::lossy(CloseCode::UNAUTHORIZED, reason))
}
