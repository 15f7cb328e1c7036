//! Keeping secrets out of `Display`, `Debug` and logs.
//!
//! Errors carry data from requests and URLs; some of it is a credential. Every constructor in this
//! crate that stores such data passes it through these functions first, so a secret never reaches
//! an error value at all, let alone a log line or a close reason.

use std::fmt;

use http::HeaderMap;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Header names whose values are credentials (compared case-insensitively).
///
/// `Sec-WebSocket-Protocol` is here because browsers can only send a token in a WebSocket
/// handshake by smuggling it in as a subprotocol.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "sec-websocket-protocol",
    "x-api-key",
    "x-auth-token",
];

/// Whether a header's value is a credential that must never be logged.
pub fn is_sensitive_header(name: &str) -> bool {
    SENSITIVE_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// The value of header `name` as it may be logged: the value itself, or [`REDACTED`] for a
/// credential-bearing header.
pub fn header_value(name: &str, value: &str) -> String {
    if is_sensitive_header(name) { REDACTED.to_owned() } else { value.to_owned() }
}

/// A URL or URI as it may be logged: any `user:password@` is replaced and the query string, which
/// is where browsers put tokens, is replaced whole. Works on strings that do not parse, too.
pub fn uri(raw: &str) -> String {
    let (before_query, had_query) = match raw.find(['?', '#']) {
        Some(i) if raw.as_bytes()[i] == b'?' => (&raw[..i], true),
        Some(i) => (&raw[..i], false),
        None => (raw, false),
    };
    let mut out = String::with_capacity(raw.len());
    match before_query.find("://") {
        Some(scheme_end) => {
            let authority_start = scheme_end + 3;
            let rest = &before_query[authority_start..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            out.push_str(&before_query[..authority_start]);
            match authority.rfind('@') {
                Some(at) => {
                    out.push_str(REDACTED);
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            }
            out.push_str(&rest[authority_end..]);
        }
        None => out.push_str(before_query),
    }
    if had_query {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_removed() {
        assert_eq!(uri("wss://alice:s3cret@example.com/chat"), "wss://<redacted>@example.com/chat");
        assert_eq!(uri("ws://example.com/chat?token=abc"), "ws://example.com/chat?<redacted>");
        assert_eq!(uri("http://u:p@proxy:8080"), "http://<redacted>@proxy:8080");
        assert_eq!(uri("ws://example.com/a#frag"), "ws://example.com/a");
        assert_eq!(uri("not a url?secret=1"), "not a url?<redacted>");
        assert_eq!(uri("ws://example.com"), "ws://example.com");
    }

    #[test]
    fn sensitive_headers_are_recognised_in_any_case() {
        for name in ["Authorization", "COOKIE", "proxy-authorization", "Sec-WebSocket-Protocol"] {
            assert!(is_sensitive_header(name), "{name}");
            assert_eq!(header_value(name, "Bearer xyz"), REDACTED);
        }
        assert_eq!(header_value("Origin", "https://a.example"), "https://a.example");
    }
}

/// Headers as they may be logged: every credential-bearing value replaced with [`REDACTED`].
/// The one `Debug` view of headers that the protocol core and the server both use.
#[derive(Clone, Copy)]
pub struct Headers<'a>(pub &'a HeaderMap);

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive_header(name.as_str()) {
                map.entry(&name.as_str(), &REDACTED);
            } else {
                map.entry(&name.as_str(), value);
            }
        }
        map.finish()
    }
}
