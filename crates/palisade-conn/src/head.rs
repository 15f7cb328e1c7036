//! Reading an HTTP head (an upgrade request, its response, a proxy's answer) from a stream,
//! within limits: the one async loop around the protocol core's [`HeadReader`] that the server,
//! the client and the client's proxy support share.

use bytes::BytesMut;
use palisade_error::{Error, InvalidMessage, TransportError};
use palisade_proto::handshake::{HeadLimits, HeadReader};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads from `io` until a complete head has arrived, checking `limits` as bytes come in (the
/// reader's work is linear in the input, whatever the chunking). Returns the bytes read and the
/// head's length: what follows it is the start of the next layer's data.
///
/// # Errors
///
/// The head's limit errors (`Security`, 414/431), [`TransportError::UnexpectedEof`] when the
/// stream ends before any byte (the peer went away: retryable), and
/// [`InvalidMessage::Incomplete`] when it ends inside a head.
pub async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    limits: HeadLimits,
) -> Result<(BytesMut, usize), Error> {
    const CHUNK: usize = 1024;
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut reader = HeadReader::new(limits);
    loop {
        if let Some(len) = reader.feed(&buf)? {
            return Ok((buf, len));
        }
        buf.reserve(CHUNK);
        if io.read_buf(&mut buf).await.map_err(Error::io)? == 0 {
            return Err(if buf.is_empty() {
                TransportError::UnexpectedEof.into()
            } else {
                InvalidMessage::Incomplete.into()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heads_arrive_in_any_pieces_and_keep_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for piece in [&b"GET / HTTP/1.1\r\nHo"[..], b"st: x\r\n", b"\r\nrest"] {
                client.write_all(piece).await.expect("written");
            }
            client
        });
        let (buf, len) = read_head(&mut server, HeadLimits::default()).await.expect("a head");
        assert_eq!(&buf[len..], b"rest");
        assert!(buf[..len].ends_with(b"\r\n\r\n"));
        drop(writer.await);
    }

    #[tokio::test]
    async fn an_empty_stream_is_an_eof_and_a_cut_head_is_incomplete() {
        let mut empty: &[u8] = b"";
        let err = read_head(&mut empty, HeadLimits::default()).await.expect_err("nothing");
        assert!(matches!(err, Error::Transport(_)) && err.is_retryable(), "{err:?}");
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\n";
        let err = read_head(&mut cut, HeadLimits::default()).await.expect_err("cut");
        assert_eq!(err.status_to_send().map(|s| s.as_u16()), Some(400), "{err:?}");
    }

    #[tokio::test]
    async fn limits_are_checked_before_the_head_ends() {
        let mut limits = HeadLimits::default();
        limits.max_head = 64;
        let mut long: &[u8] = &[b'a'; 4096];
        let err = read_head(&mut long, limits).await.expect_err("too long");
        assert!(err.status_to_send().is_some_and(|s| s.as_u16() == 414 || s.as_u16() == 431));
    }
}
