//! Failures of the URI and of proxies (client side).

use crate::redact;

/// A WebSocket URI was refused before any I/O. Never retryable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid WebSocket URI {uri}: {reason}")]
pub struct InvalidUri {
    uri: String,
    reason: UriProblem,
}

impl InvalidUri {
    /// `uri` is refused for `reason`. Credentials and the query string are removed before the
    /// URI is stored.
    pub fn new(uri: &str, reason: UriProblem) -> Self {
        Self { uri: redact::uri(uri), reason }
    }

    /// The URI, with credentials and query redacted.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// What is wrong with it.
    pub fn reason(&self) -> UriProblem {
        self.reason
    }
}

/// What is wrong with a WebSocket URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriProblem {
    /// It does not parse as a URI.
    #[error("not a URI")]
    Syntax,
    /// The scheme is not `ws` or `wss`.
    #[error("scheme must be ws or wss")]
    Scheme,
    /// There is no host.
    #[error("missing host")]
    Host,
    /// It has a fragment, which WebSocket URIs must not (RFC 6455 §3).
    #[error("WebSocket URIs must not have a fragment")]
    Fragment,
    /// The port is not a number in 1–65535.
    #[error("invalid port")]
    Port,
}

/// A proxy could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy setting is not usable (bad URL, unsupported scheme). Never retryable.
    #[error("invalid proxy {proxy}: {reason}")]
    InvalidProxy {
        /// The proxy URL, credentials redacted.
        proxy: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The proxy's answer is not valid HTTP or SOCKS. Never retryable.
    #[error("invalid answer from proxy: {reason}")]
    InvalidProxyMessage {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The proxy refused the tunnel. Retryable for 5xx and 429 (and SOCKS5 "general failure",
    /// reported as 502).
    #[error("proxy refused the tunnel: {status} {reason}")]
    InvalidProxyStatus {
        /// The HTTP status (SOCKS5 replies are mapped to the nearest HTTP status).
        status: u16,
        /// The proxy's reason phrase or the SOCKS5 reply's meaning.
        reason: String,
    },
}

impl ProxyError {
    /// An unusable proxy setting; the URL is stored with credentials redacted.
    pub fn invalid_proxy(proxy: &str, reason: &'static str) -> Self {
        Self::InvalidProxy { proxy: redact::uri(proxy), reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_and_uri_errors_never_show_credentials() {
        let e = ProxyError::invalid_proxy("http://bob:hunter2@proxy.local:3128", "bad scheme");
        assert!(!e.to_string().contains("hunter2"));
        let u = InvalidUri::new("ws://a:b@host/x?token=t0k3n#f", UriProblem::Fragment);
        assert!(!u.to_string().contains("t0k3n"));
        assert!(!u.to_string().contains("a:b"));
    }
}
