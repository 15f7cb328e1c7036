//! Proxies: HTTP `CONNECT` (RFC 9110 §9.3.6) and SOCKS5 (RFC 1928, RFC 1929), chosen explicitly
//! or from the usual environment variables.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use palisade_error::{Error, ProxyError, redact};
use palisade_proto::handshake::{HeadLimits, parse_response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::url::{WsUrl, percent_decode};

/// A proxy that connections go through.
///
/// Credentials are kept out of `Debug` and of every error and log line.
///
/// ```
/// use palisade_client::{Proxy, ProxyKind};
///
/// let proxy = Proxy::parse("http://bob:s3cret@proxy.internal:3128")?;
/// assert_eq!(proxy.kind(), ProxyKind::HttpConnect);
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// let socks = Proxy::socks5("127.0.0.1", 1080).with_credentials("bob", "s3cret");
/// assert!(socks.has_credentials());
/// # Ok::<(), palisade_error::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: ProxyKind,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

/// How a [`Proxy`] is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyKind {
    /// HTTP `CONNECT` (`http://` proxy URLs), with `Proxy-Authorization: Basic` when the proxy
    /// has credentials.
    HttpConnect,
    /// SOCKS5 with the target's name resolved here (`socks5://`).
    Socks5,
    /// SOCKS5 with the target's name resolved by the proxy (`socks5h://`).
    Socks5h,
}

impl Proxy {
    /// An HTTP `CONNECT` proxy.
    pub fn http(host: impl Into<String>, port: u16) -> Self {
        Self::new(ProxyKind::HttpConnect, host.into(), port)
    }

    /// A SOCKS5 proxy; the target's name is resolved locally.
    pub fn socks5(host: impl Into<String>, port: u16) -> Self {
        Self::new(ProxyKind::Socks5, host.into(), port)
    }

    /// A SOCKS5 proxy that resolves the target's name itself.
    pub fn socks5h(host: impl Into<String>, port: u16) -> Self {
        Self::new(ProxyKind::Socks5h, host.into(), port)
    }

    fn new(kind: ProxyKind, host: String, port: u16) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Self { kind, host, port, credentials: None }
    }

    /// Parses a proxy URL: `http://[user:password@]host[:port]` (port 80 by default),
    /// `socks5://…` or `socks5h://…` (port 1080 by default). User and password may be
    /// percent-encoded.
    ///
    /// # Errors
    ///
    /// [`ProxyError::InvalidProxy`] (URL redacted) for another scheme (`https://` proxies are
    /// not supported), a missing host, or a bad port.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::from(ProxyError::invalid_proxy(url, reason));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("not a URL"))?;
        let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (ProxyKind::HttpConnect, 80),
            "socks5" => (ProxyKind::Socks5, 1080),
            "socks5h" => (ProxyKind::Socks5h, 1080),
            "https" => return Err(invalid("https:// proxies are not supported")),
            _ => return Err(invalid("scheme must be http, socks5 or socks5h")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| invalid("bad host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(invalid("invalid port")),
            },
        };
        let mut proxy = Self::new(kind, host.to_owned(), port);
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            proxy = proxy.with_credentials(percent_decode(user), percent_decode(password));
        }
        Ok(proxy)
    }

    /// Sets the credentials: HTTP basic authentication for `CONNECT`, user/password
    /// authentication (RFC 1929) for SOCKS5.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// How the proxy is spoken to.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's host (IPv6 literals without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether credentials are set.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials.as_ref().map(|_| redact::REDACTED))
            .finish()
    }
}

/// The proxy the environment asks for to reach `url`, as curl and Python do:
///
/// - `NO_PROXY`/`no_proxy`: comma-separated hosts, domain suffixes (`example.com` and
///   `.example.com` both match `a.example.com`), optionally with `:port`, IP addresses, CIDR
///   blocks (`10.0.0.0/8`), or `*` for every host. A match means no proxy.
/// - then for `wss://` `https_proxy`/`HTTPS_PROXY`, for `ws://` `http_proxy`/`HTTP_PROXY`, and
///   for both `all_proxy`/`ALL_PROXY`. The lower-case name wins; an empty value counts as
///   unset.
///
/// `var` looks a variable up (`std::env::var` in production; a map in tests).
pub(crate) fn from_env(
    url: &WsUrl,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, Error> {
    let get = |lower: &str, upper: &str| {
        var(lower)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| var(upper).filter(|v| !v.trim().is_empty()))
    };
    if let Some(no_proxy) = get("no_proxy", "NO_PROXY")
        && bypasses(&no_proxy, url.host(), url.port())
    {
        return Ok(None);
    }
    let scheme_proxy = if url.is_secure() {
        get("https_proxy", "HTTPS_PROXY")
    } else {
        get("http_proxy", "HTTP_PROXY")
    };
    match scheme_proxy.or_else(|| get("all_proxy", "ALL_PROXY")) {
        // A bare `host:port` means an HTTP proxy, as curl reads it.
        Some(value) if !value.contains("://") => {
            Proxy::parse(&format!("http://{}", value.trim())).map(Some)
        }
        Some(value) => Proxy::parse(value.trim()).map(Some),
        None => Ok(None),
    }
}

/// Whether the `NO_PROXY` list `list` exempts `host:port`.
fn bypasses(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.');
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let (pattern, entry_port) = split_port(entry);
        if entry_port.is_some_and(|p| p != port) {
            return false;
        }
        if let Some((net, bits)) = pattern.split_once('/') {
            return match (net.parse::<IpAddr>(), bits.parse::<u32>(), host_ip) {
                (Ok(net), Ok(bits), Some(ip)) => in_cidr(ip, net, bits),
                _ => false,
            };
        }
        let pattern = pattern.trim_start_matches('*').trim_start_matches('.').trim_end_matches('.');
        if pattern.is_empty() {
            return false;
        }
        host.eq_ignore_ascii_case(pattern)
            || (host.len() > pattern.len()
                && host.as_bytes()[host.len() - pattern.len() - 1] == b'.'
                && host[host.len() - pattern.len()..].eq_ignore_ascii_case(pattern))
    })
}

/// Splits `host:port`, `[v6]:port`, `[v6]` or a bare IPv6 address.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (entry, None),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Opens a TCP connection to `host:port`, trying each address DNS gives in turn.
///
/// # Errors
///
/// [`palisade_error::TransportError::Io`] naming the host for a DNS failure, or the last
/// connect failure.
pub(crate) async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, Error> {
    let context = |e: io::Error, what: &str| {
        Error::io(io::Error::new(e.kind(), format!("{what} {host}:{port}: {e}")))
    };
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| context(e, "resolving"))?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Frames are written whole; Nagle would only delay small messages.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(context(last, "connecting to"))
}

/// Connects to `proxy` and asks it for a tunnel to `host:port`.
///
/// # Errors
///
/// Transport errors for failing to reach the proxy; [`ProxyError::InvalidProxyStatus`] when it
/// refuses; [`ProxyError::InvalidProxyMessage`] when it does not speak its protocol.
pub(crate) async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, Error> {
    let mut tcp = tcp_connect(&proxy.host, proxy.port).await?;
    match proxy.kind {
        ProxyKind::HttpConnect => http_connect(&mut tcp, proxy, host, port).await?,
        ProxyKind::Socks5 | ProxyKind::Socks5h => socks5(&mut tcp, proxy, host, port).await?,
    }
    tracing::debug!(proxy = %proxy.host, kind = ?proxy.kind, "proxy tunnel open");
    Ok(tcp)
}

fn invalid_message(reason: &'static str) -> Error {
    ProxyError::InvalidProxyMessage { reason }.into()
}

fn refused(status: u16, reason: impl Into<String>) -> Error {
    ProxyError::InvalidProxyStatus { status, reason: reason.into() }.into()
}

/// An EOF from the proxy is a broken proxy conversation, not a transport failure.
fn eof_as(reason: &'static str) -> impl Fn(io::Error) -> Error {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            invalid_message(reason)
        } else {
            Error::io(e)
        }
    }
}

async fn http_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Error> {
    let authority =
        if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, password)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&token);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;

    let limits = HeadLimits::default();
    let (buf, head_len) = match palisade_conn::read_head(io, limits).await {
        Ok(read) => read,
        Err(Error::Transport(t)) if matches!(*t, palisade_error::TransportError::UnexpectedEof) => {
            return Err(invalid_message(
                "the proxy closed the connection before answering CONNECT",
            ));
        }
        Err(err) if err.category() == palisade_error::Category::Transport => return Err(err),
        Err(_) => return Err(invalid_message("the answer to CONNECT is not valid HTTP")),
    };
    let response = parse_response(&buf, &limits)
        .map_err(|_| invalid_message("the answer to CONNECT is not valid HTTP"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(refused(status.as_u16(), status.canonical_reason().unwrap_or("")));
    }
    // The server has not been sent anything yet, so it cannot have answered: bytes after the
    // proxy's head would be the proxy's own, and a tunnel that starts with them is not clean.
    if buf.len() > head_len {
        return Err(invalid_message("data after the answer to CONNECT"));
    }
    Ok(())
}

/// RFC 1928 reply codes, mapped to the nearest HTTP status so that retry decisions follow
/// [`Error::is_retryable`]: a target that may come back is 5xx, a refusal by rule or a request
/// the proxy cannot serve is 4xx.
fn socks_reply(code: u8) -> (u16, &'static str) {
    match code {
        0x01 => (502, "general SOCKS server failure"),
        0x02 => (403, "connection not allowed by ruleset"),
        0x03 => (502, "network unreachable"),
        0x04 => (502, "host unreachable"),
        0x05 => (502, "connection refused"),
        0x06 => (504, "TTL expired"),
        0x07 => (400, "command not supported"),
        0x08 => (400, "address type not supported"),
        _ => (502, "unknown SOCKS5 reply"),
    }
}

async fn socks5<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Error> {
    const VERSION: u8 = 5;
    const NO_AUTH: u8 = 0x00;
    const USER_PASSWORD: u8 = 0x02;
    const NO_ACCEPTABLE: u8 = 0xFF;
    let eof = eof_as("the proxy closed the connection during the SOCKS5 handshake");

    // RFC 1928 §3: version, methods offered.
    let greeting: &[u8] = match proxy.credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASSWORD],
        None => &[VERSION, 1, NO_AUTH],
    };
    io.write_all(greeting).await?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await.map_err(&eof)?;
    if choice[0] != VERSION {
        return Err(invalid_message("not a SOCKS5 proxy"));
    }
    match (choice[1], &proxy.credentials) {
        (NO_AUTH, _) => {}
        (USER_PASSWORD, Some((user, password))) => {
            // RFC 1929 §2: version 1, user and password of at most 255 bytes each.
            let (user, password) = (user.as_bytes(), password.as_bytes());
            let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(password.len()))
            else {
                return Err(ProxyError::InvalidProxy {
                    proxy: format!("socks5://{}:{}", proxy.host, proxy.port),
                    reason: "SOCKS5 user and password are at most 255 bytes each",
                }
                .into());
            };
            let mut auth = Vec::with_capacity(3 + user.len() + password.len());
            auth.extend_from_slice(&[1, ulen]);
            auth.extend_from_slice(user);
            auth.push(plen);
            auth.extend_from_slice(password);
            io.write_all(&auth).await?;
            let mut status = [0u8; 2];
            io.read_exact(&mut status).await.map_err(&eof)?;
            if status[0] != 1 {
                return Err(invalid_message("bad SOCKS5 authentication reply version"));
            }
            if status[1] != 0 {
                return Err(refused(407, "SOCKS5 authentication failed"));
            }
        }
        (NO_ACCEPTABLE, _) => {
            return Err(refused(407, "no acceptable SOCKS5 authentication method"));
        }
        _ => return Err(invalid_message("the proxy chose an authentication method not offered")),
    }

    // RFC 1928 §4: CONNECT to an IPv4 address, a domain name or an IPv6 address.
    let mut request = vec![VERSION, 0x01, 0x00];
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) if proxy.kind == ProxyKind::Socks5 => {
            let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
                Error::io(io::Error::new(e.kind(), format!("resolving {host}:{port}: {e}")))
            })?;
            let addr = addrs.next().ok_or_else(|| {
                Error::io(io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}")))
            })?;
            Some(addr.ip())
        }
        Err(_) => None,
    };
    match ip {
        Some(IpAddr::V4(v4)) => {
            request.push(0x01);
            request.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            request.push(0x04);
            request.extend_from_slice(&v6.octets());
        }
        None => {
            let len = u8::try_from(host.len()).map_err(|_| {
                Error::from(ProxyError::InvalidProxyMessage {
                    reason: "host name too long for SOCKS5",
                })
            })?;
            request.extend_from_slice(&[0x03, len]);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    io.write_all(&request).await?;

    // RFC 1928 §6: version, reply, reserved, bound address type, address, port.
    let mut reply = [0u8; 4];
    io.read_exact(&mut reply).await.map_err(&eof)?;
    if reply[0] != VERSION {
        return Err(invalid_message("bad SOCKS5 reply version"));
    }
    if reply[1] != 0 {
        let (status, reason) = socks_reply(reply[1]);
        return Err(refused(status, reason));
    }
    let addr_len = match reply[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await.map_err(&eof)?;
            usize::from(len[0])
        }
        _ => return Err(invalid_message("unknown address type in the SOCKS5 reply")),
    };
    let mut rest = [0u8; 255 + 2];
    io.read_exact(&mut rest[..addr_len + 2]).await.map_err(&eof)?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn chosen(url: &str, vars: &[(&str, &str)]) -> Option<Proxy> {
        from_env(&WsUrl::parse(url).unwrap(), env(vars)).unwrap()
    }

    #[test]
    fn proxy_urls_parse() {
        let p = Proxy::parse("http://proxy.local").unwrap();
        assert_eq!(
            (p.kind(), p.host(), p.port(), p.has_credentials()),
            (ProxyKind::HttpConnect, "proxy.local", 80, false)
        );
        let p = Proxy::parse("socks5://u%40x:p%3A@[::1]:1081/").unwrap();
        assert_eq!((p.kind(), p.host(), p.port()), (ProxyKind::Socks5, "::1", 1081));
        assert_eq!(p.credentials, Some(("u@x".into(), "p:".into())));
        assert_eq!(Proxy::parse("SOCKS5H://h").unwrap().port(), 1080);
        for bad in
            ["https://h", "ftp://h", "h:80", "http://", "http://h:0", "http://h:x", "http://[::1"]
        {
            match Proxy::parse(bad) {
                Err(Error::Proxy(p)) => {
                    assert!(matches!(*p, ProxyError::InvalidProxy { .. }), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let err = Proxy::parse("https://bob:hunter2@h").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn environment_chooses_by_scheme() {
        let vars = [
            ("HTTP_PROXY", "http://plain:1"),
            ("https_proxy", "http://secure:2"),
            ("HTTPS_PROXY", "http://ignored:3"),
            ("ALL_PROXY", "socks5://all:4"),
        ];
        assert_eq!(chosen("ws://a.example/", &vars).unwrap().host(), "plain");
        assert_eq!(chosen("wss://a.example/", &vars).unwrap().host(), "secure");
        assert_eq!(chosen("ws://a.example/", &vars[3..]).unwrap().host(), "all");
        assert_eq!(
            chosen("ws://a.example/", &[("http_proxy", " "), ("ALL_PROXY", "h:9")]).unwrap().port(),
            9
        );
        assert!(chosen("ws://a.example/", &[]).is_none());
        assert!(
            from_env(&WsUrl::parse("ws://a/").unwrap(), env(&[("http_proxy", "ftp://x")])).is_err()
        );
    }

    #[test]
    fn no_proxy_exempts_matching_hosts() {
        let proxy = ("http_proxy", "http://p:1");
        for (no_proxy, url, exempt) in [
            ("*", "ws://anything/", true),
            ("example.com", "ws://example.com/", true),
            ("example.com", "ws://a.example.com/", true),
            (".example.com", "ws://a.b.example.com/", true),
            ("*.example.com", "ws://a.example.com/", true),
            ("example.com", "ws://badexample.com/", false),
            ("example.com:8080", "ws://example.com:8080/", true),
            ("example.com:8080", "ws://example.com/", false),
            ("localhost, 127.0.0.1", "ws://127.0.0.1:9/", true),
            ("10.0.0.0/8", "ws://10.2.3.4/", true),
            ("10.0.0.0/8", "ws://11.2.3.4/", false),
            ("::1", "ws://[::1]:9/", true),
            ("[::1]:9", "ws://[::1]:9/", true),
            ("fd00::/8", "ws://[fd12::1]/", true),
            ("other.com,", "ws://example.com/", false),
        ] {
            let got = chosen(url, &[proxy, ("NO_PROXY", no_proxy)]).is_none();
            assert_eq!(got, exempt, "NO_PROXY={no_proxy} {url}");
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let p = Proxy::http("h", 1).with_credentials("bob", "hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
