//! `ws://` and `wss://` URLs (RFC 6455 §3), checked before any I/O.

use http::Uri;
use palisade_error::{Error, InvalidUri, UriProblem};

/// A WebSocket URL that passed the checks of RFC 6455 §3.
#[derive(Clone, Debug)]
pub(crate) struct WsUrl {
    pub(crate) uri: Uri,
    pub(crate) secure: bool,
    /// The host as DNS and TLS want it: an IPv6 literal without its brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl WsUrl {
    /// Parses and checks `raw`.
    ///
    /// # Errors
    ///
    /// [`InvalidUri`] naming the problem: a fragment, a port outside 1–65535, a scheme other
    /// than `ws`/`wss`, no host, or text that does not parse.
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = |problem| Error::from(InvalidUri::new(raw, problem));
        // RFC 6455 §3: fragments "MUST NOT be used on these URIs".
        if raw.contains('#') {
            return Err(invalid(UriProblem::Fragment));
        }
        let uri: Uri = raw.parse().map_err(|_| invalid(UriProblem::Syntax))?;
        let (secure, default_port) = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => (false, 80),
            Some(s) if s.eq_ignore_ascii_case("wss") => (true, 443),
            _ => return Err(invalid(UriProblem::Scheme)),
        };
        let host = match uri.host() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => return Err(invalid(UriProblem::Host)),
        };
        // `http::Uri` takes any digits as a port and reports none when they overflow a u16:
        // read the port from the authority ourselves, so that a bad one is never replaced by
        // the default.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
        let port = match after_host.rsplit_once(':') {
            Some((_, digits)) => match digits.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(invalid(UriProblem::Port)),
            },
            None => default_port,
        };
        Ok(Self { uri, secure, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(raw: &str) -> UriProblem {
        match WsUrl::parse(raw).unwrap_err() {
            Error::InvalidUri(invalid) => invalid.reason(),
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn ports_hosts_and_schemes() {
        let url = WsUrl::parse("ws://example.com/chat?x=1").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.secure), ("example.com", 80, false));
        let url = WsUrl::parse("wss://[::1]:9443/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.secure), ("::1", 9443, true));
        assert_eq!(WsUrl::parse("wss://user:pw@h:8443").unwrap().port, 8443);
        assert_eq!(problem("ws://h/#frag"), UriProblem::Fragment);
        assert_eq!(problem("ws://h:0/"), UriProblem::Port);
        assert_eq!(problem("ws://h:70000/"), UriProblem::Port);
        assert_eq!(problem("http://h/"), UriProblem::Scheme);
        assert_eq!(problem("not a url"), UriProblem::Syntax);
    }
}
