//! The body of a refusal (a non-101 answer), read up to a limit so that, say, the JSON of a 401
//! can be shown — never more, whatever the server announces.

use bytes::BytesMut;
use http::{HeaderMap, StatusCode, header};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How the body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Chunked,
    Length(u64),
    UntilClose,
}

fn framing(status: StatusCode, headers: &HeaderMap) -> Framing {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::None;
    }
    let chunked = headers.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|c| c.trim().eq_ignore_ascii_case("chunked")))
    });
    if chunked {
        return Framing::Chunked;
    }
    match headers.get(header::CONTENT_LENGTH).map(|v| v.to_str().map(|s| s.trim().parse::<u64>())) {
        Some(Ok(Ok(len))) => Framing::Length(len),
        // No length, or one that does not parse: read until the server closes, bounded anyway.
        _ => Framing::UntilClose,
    }
}

/// Reads the body that follows a response head into `body`, keeping at most `max` bytes.
/// `buf` holds the bytes already read past the head.
///
/// Any read error ends the body where it is: the refusal is what matters, and the body is only
/// its explanation. The caller bounds the time (dropping this future keeps what `body` holds).
pub(crate) async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    status: StatusCode,
    headers: &HeaderMap,
    mut buf: BytesMut,
    max: usize,
    body: &mut Vec<u8>,
) {
    match framing(status, headers) {
        Framing::None => {}
        Framing::Length(len) => {
            let want = usize::try_from(len).unwrap_or(usize::MAX).min(max);
            body.extend_from_slice(&buf[..buf.len().min(want)]);
            while body.len() < want {
                buf.clear();
                buf.reserve((want - body.len()).min(16 * 1024));
                match io.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => body.extend_from_slice(&buf[..buf.len().min(want - body.len())]),
                }
            }
        }
        Framing::UntilClose => {
            body.extend_from_slice(&buf[..buf.len().min(max)]);
            while body.len() < max {
                buf.clear();
                buf.reserve((max - body.len()).min(16 * 1024));
                match io.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => body.extend_from_slice(&buf[..buf.len().min(max - body.len())]),
                }
            }
        }
        Framing::Chunked => {
            // Chunk overhead is bounded too: size lines, extensions and trailers cannot make
            // us buffer more than this.
            let raw_max = max.saturating_mul(2).saturating_add(4096);
            loop {
                let (decoded, complete) = dechunk(&buf, max);
                *body = decoded;
                if complete || body.len() >= max || buf.len() >= raw_max {
                    break;
                }
                buf.reserve(16 * 1024);
                match io.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

/// Decodes as much of the chunked body `raw` (RFC 9112 §7.1) as is there, up to `max` bytes.
/// Returns the data and whether the last chunk was reached (or the input is malformed, which
/// ends it too).
fn dechunk(raw: &[u8], max: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = raw[pos..].windows(2).position(|w| w == b"\r\n") else {
            // A size line longer than any sane one is malformed.
            return (out, raw.len() - pos > 1024);
        };
        let line = &raw[pos..pos + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { return (out, true) };
        if size == 0 {
            return (out, true);
        }
        let data_start = pos + line_end + 2;
        let available = raw.len().saturating_sub(data_start).min(size);
        let room = max - out.len();
        out.extend_from_slice(&raw[data_start..data_start + available.min(room)]);
        if out.len() >= max {
            return (out, true);
        }
        if available < size || raw.len() < data_start + size + 2 {
            return (out, false);
        }
        pos = data_start + size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_the_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(framing(StatusCode::NO_CONTENT, &h), Framing::None);
        assert_eq!(framing(StatusCode::UNAUTHORIZED, &h), Framing::UntilClose);
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert_eq!(framing(StatusCode::UNAUTHORIZED, &h), Framing::Length(12));
        h.insert(header::TRANSFER_ENCODING, "gzip, Chunked".parse().unwrap());
        assert_eq!(framing(StatusCode::UNAUTHORIZED, &h), Framing::Chunked);
        h.remove(header::TRANSFER_ENCODING);
        h.insert(header::CONTENT_LENGTH, "x".parse().unwrap());
        assert_eq!(framing(StatusCode::UNAUTHORIZED, &h), Framing::UntilClose);
    }

    #[test]
    fn chunks_decode_incrementally_and_within_the_limit() {
        let raw = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        assert_eq!(dechunk(raw, 100), (b"Wikipedia".to_vec(), true));
        assert_eq!(dechunk(&raw[..11], 100), (b"Wi".to_vec(), false));
        assert_eq!(dechunk(&raw[..15], 100), (b"Wiki".to_vec(), false));
        assert_eq!(dechunk(raw, 6), (b"Wikipe".to_vec(), true));
        assert_eq!(dechunk(b"zz\r\n", 100), (Vec::new(), true));
        assert_eq!(dechunk(&[b'1'; 2000], 100), (Vec::new(), true));
    }

    #[tokio::test]
    async fn bodies_are_cut_at_the_limit() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "100000".parse().unwrap());
        let data = vec![b'x'; 100_000];
        let mut body = Vec::new();
        read(
            &mut &data[10..],
            StatusCode::FORBIDDEN,
            &h,
            BytesMut::from(&data[..10]),
            1000,
            &mut body,
        )
        .await;
        assert_eq!(body.len(), 1000);

        // The connection ends before Content-Length: keep what arrived.
        let mut body = Vec::new();
        read(&mut &b"abc"[..], StatusCode::FORBIDDEN, &h, BytesMut::new(), 1000, &mut body).await;
        assert_eq!(body, b"abc");

        let h = HeaderMap::new();
        let mut body = Vec::new();
        read(&mut &data[..], StatusCode::FORBIDDEN, &h, BytesMut::new(), 64, &mut body).await;
        assert_eq!(body.len(), 64);
    }
}
