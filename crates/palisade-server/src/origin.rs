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
        Self { exact, wildcard, allow_missing: true }
    }

    /// Whether a request without an `Origin` header is allowed (default: yes — non-browser
    /// clients do not send one; browsers always do).
    pub fn with_missing_allowed(mut self, allowed: bool) -> Self {
        self.allow_missing = allowed;
        self
    }

    /// Whether `origin` may connect.
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
}
