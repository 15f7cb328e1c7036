//! Reading an HTTP head (an upgrade request or its response) from a blocking stream, within
//! the head limits and a deadline: the blocking loop around the core's [`HeadReader`].

use std::io;
use std::time::Instant;

use bytes::BytesMut;
use palisade_error::{Error, InvalidMessage, TimeoutPhase, TransportError};
use palisade_proto::handshake::{HeadLimits, HeadReader};

use crate::transport::{Transport, is_timeout};

/// Reads from `io` until a complete head has arrived, checking `limits` as bytes come in.
/// Returns the bytes read and the head's length: what follows it is the first frames.
///
/// # Errors
///
/// The head's limit errors (`Security`, 414/431); [`TransportError::UnexpectedEof`] when the
/// stream ends before any byte; [`InvalidMessage::Incomplete`] when it ends inside a head;
/// [`Error::Timeout`] in `phase` when `deadline` passes.
pub(crate) fn read_head(
    io: &mut dyn Transport,
    limits: HeadLimits,
    deadline: Option<Instant>,
    phase: TimeoutPhase,
) -> Result<(BytesMut, usize), Error> {
    const CHUNK: usize = 1024;
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut reader = HeadReader::new(limits);
    let mut chunk = [0u8; CHUNK];
    loop {
        if let Some(len) = reader.feed(&buf)? {
            return Ok((buf, len));
        }
        io.set_read_timeout(remaining(deadline, phase)?).map_err(Error::io)?;
        match io.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(TransportError::UnexpectedEof.into()),
            Ok(0) => return Err(InvalidMessage::Incomplete.into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if is_timeout(&err) => return Err(Error::timeout(phase)),
            Err(err) => return Err(Error::io(err)),
        }
    }
}

/// The time left before `deadline`, as a socket timeout (`None`: no deadline).
///
/// # Errors
///
/// [`Error::Timeout`] in `phase` once the deadline has passed.
pub(crate) fn remaining(
    deadline: Option<Instant>,
    phase: TimeoutPhase,
) -> Result<Option<std::time::Duration>, Error> {
    let Some(deadline) = deadline else { return Ok(None) };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(Error::timeout(phase)) } else { Ok(Some(left)) }
}

/// Writes `bytes` completely within `deadline`.
pub(crate) fn write_all(
    io: &mut dyn Transport,
    bytes: &[u8],
    deadline: Option<Instant>,
    phase: TimeoutPhase,
) -> Result<(), Error> {
    io.set_write_timeout(remaining(deadline, phase)?).map_err(Error::io)?;
    match io.write_all(bytes).and_then(|()| io.flush()) {
        Ok(()) => Ok(()),
        Err(err) if is_timeout(&err) => Err(Error::timeout(phase)),
        Err(err) => Err(Error::io(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;

    /// A stream that hands out `input` in pieces of `step` bytes, then EOF.
    struct Pieces {
        input: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Pieces {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Pieces {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }

        fn set_write_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }

        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pieces(input: &[u8], step: usize) -> Pieces {
        Pieces { input: input.to_vec(), at: 0, step }
    }

    #[test]
    fn a_head_in_any_pieces_keeps_what_follows() {
        for step in [1, 3, 1024] {
            let mut io = pieces(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest", step);
            let (buf, len) =
                read_head(&mut io, HeadLimits::default(), None, TimeoutPhase::Handshake).unwrap();
            assert!(buf[..len].ends_with(b"\r\n\r\n"));
            assert!(b"rest".starts_with(&buf[len..]), "step {step}");
        }
    }

    #[test]
    fn an_empty_stream_is_an_eof_a_cut_head_is_incomplete_and_limits_hold() {
        let err =
            read_head(&mut pieces(b"", 8), HeadLimits::default(), None, TimeoutPhase::Response)
                .unwrap_err();
        assert!(matches!(err, Error::Transport(_)) && err.is_retryable(), "{err:?}");
        let err = read_head(
            &mut pieces(b"GET / HTTP/1.1\r\n", 8),
            HeadLimits::default(),
            None,
            TimeoutPhase::Handshake,
        )
        .unwrap_err();
        assert_eq!(err.status_to_send().map(|s| s.as_u16()), Some(400), "{err:?}");
        let limits = HeadLimits::default().with_max_head(64);
        let err = read_head(&mut pieces(&[b'a'; 4096], 512), limits, None, TimeoutPhase::Handshake)
            .unwrap_err();
        assert!(err.status_to_send().is_some_and(|s| s.as_u16() == 414 || s.as_u16() == 431));
    }

    #[test]
    fn a_passed_deadline_is_a_timeout_of_the_phase() {
        let past = Instant::now();
        let err = read_head(
            &mut pieces(b"GET", 1),
            HeadLimits::default(),
            Some(past),
            TimeoutPhase::Handshake,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Handshake), "{err:?}");
        assert_eq!(remaining(None, TimeoutPhase::Close).unwrap(), None);
    }
}
