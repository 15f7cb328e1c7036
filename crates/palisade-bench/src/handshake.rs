//! The opening handshake of RFC 6455 §4, as much of it as the load generator and the
//! fastwebsockets peer need: both sides are under our control, so this is not a validating parser.

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The GUID of RFC 6455 §1.3, appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest request or response head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The client's upgrade request for `ws://HOST/` with a fixed key (the generator is not a browser:
/// the key only has to be well formed), offering `extensions` if given.
pub fn client_request(host: &str, extensions: Option<&str>) -> String {
    let extensions =
        extensions.map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n")).unwrap_or_default();
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extensions}\r\n"
    )
}

/// The server's `101` response accepting `key`.
pub fn server_response(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
}

/// Reads an HTTP head (up to and including the blank line) into `buf`, and returns its length;
/// bytes after it stay in `buf`.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("HTTP head larger than 8 KiB"));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The value of header `name` (case-insensitive) in an HTTP head.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Whether a response head is `101 Switching Protocols`.
pub fn is_switching(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 101")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let head = b"GET / HTTP/1.1\r\nSec-WebSocket-Key: abc \r\nHost: x\r\n\r\n";
        assert_eq!(header(head, "sec-websocket-key"), Some("abc"));
        assert_eq!(header(head, "origin"), None);
    }

    #[tokio::test]
    async fn read_head_keeps_trailing_bytes() {
        let mut input: &[u8] = b"HTTP/1.1 101 OK\r\nA: b\r\n\r\n\x82\x00";
        let mut buf = Vec::new();
        let n = read_head(&mut input, &mut buf).await.expect("a complete head");
        assert!(is_switching(&buf[..n]));
        assert_eq!(&buf[n..], b"\x82\x00");
    }
}
