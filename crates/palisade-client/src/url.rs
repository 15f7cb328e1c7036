//! WebSocket URLs (RFC 6455 §3): parsed and checked once, before any I/O, then carried as a
//! value that cannot be invalid.

use std::fmt;

use http::Uri;
use palisade_error::{Error, HandshakeError, InvalidUri, SecurityError, UriProblem, redact};

/// A `ws://` or `wss://` URL that passed every check of RFC 6455 §3.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WsUrl {
    uri: Uri,
    secure: bool,
    /// The host as DNS and TLS want it: IPv6 literals without their brackets.
    host: String,
    /// The port to connect to: explicit, or the scheme's default.
    port: u16,
}

impl WsUrl {
    /// Parses and checks `raw`.
    ///
    /// # Errors
    ///
    /// [`InvalidUri`] naming the first problem: [`UriProblem::Fragment`] for a `#`,
    /// [`UriProblem::Port`] for a port that is not a number in 1–65535,
    /// [`UriProblem::Syntax`] for anything that does not parse, [`UriProblem::Scheme`] for a
    /// scheme other than `ws`/`wss`, [`UriProblem::Host`] for a missing host.
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = |problem| Error::from(InvalidUri::new(raw, problem));
        // RFC 6455 §3: "Fragment identifiers are meaningless in the context of WebSocket URIs
        // and MUST NOT be used on these URIs."
        if raw.contains('#') {
            return Err(invalid(UriProblem::Fragment));
        }
        // `http::Uri` accepts an out-of-range port and then reports none, which would silently
        // connect to the default port: check the port ourselves first.
        if let Some(problem) = port_problem(raw) {
            return Err(invalid(problem));
        }
        let uri: Uri = match raw.parse() {
            Ok(uri) => uri,
            Err(_) if raw.contains("://") && authority_of(raw).is_some_and(str::is_empty) => {
                return Err(invalid(UriProblem::Host));
            }
            Err(_) => return Err(invalid(UriProblem::Syntax)),
        };
        let (secure, default_port) = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => (false, 80),
            Some(s) if s.eq_ignore_ascii_case("wss") => (true, 443),
            _ => return Err(invalid(UriProblem::Scheme)),
        };
        let host = match uri.host() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => return Err(invalid(UriProblem::Host)),
        };
        let port = uri.port_u16().unwrap_or(default_port);
        Ok(Self { uri, secure, host, port })
    }

    /// The URL as given (user-info included; never log it without [`WsUrl::redacted`]).
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the scheme is `wss`.
    pub(crate) fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host, without brackets.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL as it may be logged: no user-info, no query.
    pub(crate) fn redacted(&self) -> String {
        redact::uri(&self.uri.to_string())
    }

    /// `user:password` from the URL's user-info, percent-decoded, if there is any.
    pub(crate) fn credentials(&self) -> Option<(String, String)> {
        let authority = self.uri.authority()?.as_str();
        let (userinfo, _) = authority.rsplit_once('@')?;
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        Some((percent_decode(user), percent_decode(password)))
    }

    /// Whether `other` has the same scheme, host and port: credentials set for one may be sent
    /// to the other.
    pub(crate) fn same_origin(&self, other: &Self) -> bool {
        self.secure == other.secure
            && self.host.eq_ignore_ascii_case(&other.host)
            && self.port == other.port
    }

    /// The URL a redirect's `Location` points to, resolved against this one (RFC 7231 §7.1.2).
    ///
    /// `http`/`https` locations become `ws`/`wss` (a web server redirecting every request to
    /// HTTPS says `https://`); any other scheme is refused. A fragment is dropped.
    ///
    /// # Errors
    ///
    /// [`SecurityError::InsecureRedirect`] from `wss` to `ws`; the errors of
    /// [`WsUrl::parse`] for a location that does not make a usable URL.
    pub(crate) fn redirect(&self, location: &str) -> Result<Self, Error> {
        let location = location.trim();
        let location = location.split_once('#').map_or(location, |(before, _)| before);
        let scheme = if self.secure { "wss" } else { "ws" };
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let absolute = match location.split_once("://") {
            Some((s, rest)) if is_scheme(s) => {
                let s = s.to_ascii_lowercase();
                let s = match s.as_str() {
                    "http" => "ws",
                    "https" => "wss",
                    other => other,
                };
                format!("{s}://{rest}")
            }
            _ if location.starts_with("//") => format!("{scheme}:{location}"),
            _ if location.starts_with('/') => format!("{scheme}://{authority}{location}"),
            _ => {
                let path = self.uri.path();
                let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
                format!("{scheme}://{authority}{dir}{location}")
            }
        };
        let next = Self::parse(&absolute)?;
        if self.secure && !next.secure {
            return Err(HandshakeError::Security(SecurityError::InsecureRedirect).into());
        }
        Ok(next)
    }
}

impl fmt::Debug for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The authority part of `raw` (between `://` and the path or query), if it has one.
fn authority_of(raw: &str) -> Option<&str> {
    let (_, rest) = raw.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// What is wrong with the port in `raw`'s authority, if anything. An empty port (`host:`) is
/// the default port (RFC 3986 §3.2.3).
fn port_problem(raw: &str) -> Option<UriProblem> {
    let authority = authority_of(raw)?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = if host_port.starts_with('[') {
        let (_, after) = host_port.split_once(']')?;
        after.strip_prefix(':')?
    } else {
        host_port.rsplit_once(':')?.1
    };
    if port.is_empty() {
        return None;
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some(UriProblem::Port),
    }
}

/// Decodes `%XX` escapes (user-info is percent-encoded, RFC 3986 §3.2.1); a malformed escape
/// is kept as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(raw: &str) -> UriProblem {
        match WsUrl::parse(raw) {
            Err(Error::InvalidUri(u)) => u.reason(),
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn valid_urls_give_host_and_port() {
        for (raw, secure, host, port) in [
            ("ws://example.com", false, "example.com", 80),
            ("wss://example.com/chat?x=1", true, "example.com", 443),
            ("WS://Example.com:8080/", false, "Example.com", 8080),
            ("ws://[::1]:9000/p", false, "::1", 9000),
            ("wss://[::1]", true, "::1", 443),
            ("ws://a.example:/", false, "a.example", 80),
            ("ws://user:pw@a.example:65535", false, "a.example", 65535),
        ] {
            let url = WsUrl::parse(raw).unwrap();
            assert_eq!((url.is_secure(), url.host(), url.port()), (secure, host, port), "{raw}");
        }
    }

    #[test]
    fn each_problem_is_named() {
        for (raw, expected) in [
            ("http://example.com/", UriProblem::Scheme),
            ("ftp://example.com/", UriProblem::Scheme),
            ("example.com", UriProblem::Scheme),
            ("ws://example.com/#frag", UriProblem::Fragment),
            ("ws://example.com:0/", UriProblem::Port),
            ("ws://example.com:65536/", UriProblem::Port),
            ("ws://example.com:99999999999/", UriProblem::Port),
            ("ws://example.com:8o/", UriProblem::Port),
            ("ws://[::1]:x/", UriProblem::Port),
            ("ws:///path", UriProblem::Host),
            ("ws://exa mple.com/", UriProblem::Syntax),
            ("", UriProblem::Syntax),
        ] {
            assert_eq!(problem(raw), expected, "{raw}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_credentials() {
        let err = WsUrl::parse("http://bob:s3cret@example.com/?token=t0k3n").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("t0k3n"), "{shown}");
        let url = WsUrl::parse("ws://bob:s3cret@example.com/?token=t0k3n").unwrap();
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("t0k3n"), "{shown}");
        assert_eq!(url.credentials(), Some(("bob".into(), "s3cret".into())));
        let url = WsUrl::parse("ws://b%40b:p%3Aw%zz@example.com/").unwrap();
        assert_eq!(url.credentials(), Some(("b@b".into(), "p:w%zz".into())));
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base = WsUrl::parse("ws://user:pw@a.example:8080/dir/page?q=1").unwrap();
        for (location, expected) in [
            ("ws://b.example/x", "ws://b.example/x"),
            ("wss://b.example/x", "wss://b.example/x"),
            ("HTTPS://b.example/x", "wss://b.example/x"),
            ("http://b.example/x", "ws://b.example/x"),
            ("//c.example:1/y", "ws://c.example:1/y"),
            ("/root?z=2", "ws://a.example:8080/root?z=2"),
            ("other", "ws://a.example:8080/dir/other"),
            (" /frag#part ", "ws://a.example:8080/frag"),
        ] {
            assert_eq!(base.redirect(location).unwrap().uri().to_string(), expected, "{location}");
        }
        assert!(matches!(base.redirect("ftp://x/"), Err(Error::InvalidUri(_))));
    }

    #[test]
    fn a_redirect_from_wss_to_ws_is_refused() {
        let base = WsUrl::parse("wss://a.example/").unwrap();
        for location in ["ws://a.example/", "http://a.example/"] {
            match base.redirect(location) {
                Err(Error::Handshake(h)) => assert!(
                    matches!(*h, HandshakeError::Security(SecurityError::InsecureRedirect)),
                    "{h:?}"
                ),
                other => panic!("{other:?}"),
            }
        }
        assert!(base.redirect("/x").unwrap().is_secure());
        assert!(base.redirect("//b.example/").unwrap().is_secure());
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = WsUrl::parse("ws://a.example/").unwrap();
        assert!(a.same_origin(&WsUrl::parse("ws://A.example:80/other").unwrap()));
        assert!(!a.same_origin(&WsUrl::parse("ws://a.example:81/").unwrap()));
        assert!(!a.same_origin(&WsUrl::parse("wss://a.example/").unwrap()));
        assert!(!a.same_origin(&WsUrl::parse("ws://b.example/").unwrap()));
    }
}
