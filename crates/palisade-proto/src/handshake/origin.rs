//! The `Origin` allow-list: the defence against cross-site WebSocket hijacking.
//!
//! Browsers send `Origin` with every WebSocket handshake and do not apply the same-origin
//! policy to WebSockets, so a page on any site can open a connection to your server with the
//! user's cookies. Checking `Origin` is how a server refuses that (RFC 6455 §10.2).

/// Which origins may open connections.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    exact: Vec<String>,
    /// `(scheme + "://", suffix)`: `https://*.example.com` allows `https://a.example.com`.
    wildcard: Vec<(String, String)>,
    allow_missing: bool,
    allow_same_host: bool,
}

impl OriginPolicy {
    /// Allows exactly these origins (`https://app.example.com`) and wildcard subdomains
    /// (`https://*.example.com`, which does not match `https://example.com` itself). Requests
    /// without `Origin` (non-browser clients) are allowed; see
    /// [`OriginPolicy::with_missing_allowed`].
    pub fn new<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        for origin in origins {
            let origin = origin.as_ref().trim_end_matches('/').to_ascii_lowercase();
            match origin.split_once("://*.") {
                Some((scheme, suffix)) => {
                    wildcard.push((format!("{scheme}://"), format!(".{suffix}")));
                }
                None => exact.push(origin),
            }
        }
        Self { exact, wildcard, allow_missing: true, allow_same_host: false }
    }

    /// Whether a request without an `Origin` header is allowed (default: yes). Browsers always
    /// send one; many other clients send none, but not all: Python's `websocket-client` sends
    /// `Origin: http://HOST:PORT` of the URL it connects to, which
    /// [`OriginPolicy::with_same_host_allowed`] lets in.
    pub fn with_missing_allowed(mut self, allowed: bool) -> Self {
        self.allow_missing = allowed;
        self
    }

    /// Whether an origin whose host and port are the request's `Host` is allowed (default: no).
    /// That is the origin of a page served by this same host and port, and the `Origin` some
    /// non-browser clients (Python's `websocket-client`) make up from the URL they connect to.
    ///
    /// It does not defend against DNS rebinding: a page whose host name an attacker points at
    /// this server's address sends an `Origin` that matches the `Host` its browser sends, so a
    /// server that trusts its callers by their network position (a service on localhost, say)
    /// should list its origins instead.
    pub fn with_same_host_allowed(mut self, allowed: bool) -> Self {
        self.allow_same_host = allowed;
        self
    }

    /// Whether a request with this `Origin` and this `Host` may connect: [`OriginPolicy::allows`],
    /// or, with [`OriginPolicy::with_same_host_allowed`], an origin naming the `Host` itself.
    pub fn allows_request(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        if self.allows(origin) {
            return true;
        }
        let (Some(origin), Some(host)) = (origin, host) else { return false };
        self.allow_same_host
            && origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
    }

    /// Whether `origin` may connect, by the list and the rule for requests without one (a
    /// request's `Host` is not looked at: see [`OriginPolicy::allows_request`]).
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return self.allow_missing };
        let origin = origin.to_ascii_lowercase();
        if self.exact.contains(&origin) {
            return true;
        }
        self.wildcard.iter().any(|(scheme, suffix)| {
            origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                // The label before the suffix must be non-empty and contain no path.
                host.len() > suffix.len() && host.ends_with(suffix.as_str()) && !host.contains('/')
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let p = OriginPolicy::new(["https://app.example.com", "https://*.example.org"]);
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("HTTPS://APP.EXAMPLE.COM")));
        assert!(!p.allows(Some("http://app.example.com")), "scheme matters");
        assert!(!p.allows(Some("https://app.example.com.evil.net")));
        assert!(p.allows(Some("https://a.b.example.org")));
        assert!(!p.allows(Some("https://example.org")), "the bare domain is not a subdomain");
        assert!(!p.allows(Some("https://evilexample.org")));
        assert!(!p.allows(Some("null")));
        assert!(p.allows(None));
        assert!(!p.clone().with_missing_allowed(false).allows(None));
    }

    #[test]
    fn same_host_origins_only_when_allowed() {
        let p = OriginPolicy::new(["https://app.example.com"]);
        let local = Some("127.0.0.1:9000");
        assert!(!p.allows_request(Some("http://127.0.0.1:9000"), local), "off by default");
        let p = p.with_same_host_allowed(true);
        assert!(p.allows_request(Some("http://127.0.0.1:9000"), local));
        assert!(p.allows_request(Some("https://LOCALHOST:9000"), Some("localhost:9000")));
        assert!(!p.allows_request(Some("http://127.0.0.1:9001"), local), "another port");
        assert!(!p.allows_request(Some("http://127.0.0.1:9000/x"), local), "a path is no origin");
        assert!(!p.allows_request(Some("http://evil.example"), local));
        assert!(!p.allows_request(Some("null"), local));
        assert!(!p.allows_request(Some("http://127.0.0.1:9000"), None), "no Host to compare");
        assert!(p.allows_request(Some("https://app.example.com"), local), "the list still counts");
    }
}
