//! The permessage-deflate codec (RFC 7692 §7.2): compress on send, inflate on receive, with the
//! inflated size bounded by the message limit.

use std::fmt;

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use palisade_error::{Error, PayloadTooBig, ProtocolError, SizeLimit};

use super::negotiation::DeflateParams;
use super::spare::{self, Position};
use super::window::History;
use super::{DeflateConfig, TAIL};
use crate::Role;
use crate::connection::Extension;
use crate::frame::RSV1;

/// Inflate writes at most this much per step, so the output buffer grows with what the data
/// really inflates to, never ahead of it.
const INFLATE_STEP: usize = 32 * 1024;

/// permessage-deflate for one connection, in one role: install it with
/// [`crate::Connection::set_extension`] after the handshake agreed on `params`.
///
/// Between messages it holds no zlib stream unless [`DeflateConfig::retain_streams`] is set:
/// without context takeover in a direction there is nothing to keep, and with it only the
/// window's bytes are kept (see the [module docs](super#memory-between-messages)). Compressors
/// come from the thread's and go back to it after each message.
pub struct Deflate {
    level: Compression,
    threshold: usize,
    /// Our compressor's window, in bits; 8 means we never compress (see the module docs).
    compress_bits: u8,
    compress_reset: bool,
    decompress_bits: u8,
    decompress_reset: bool,
    /// Keep the zlib streams of takeover directions between messages.
    retain: bool,
    /// Only while a message is compressed, or between messages when `retain` is set.
    compressor: Option<Compress>,
    /// Only while a message is inflated, or between messages when `retain` is set.
    decompressor: Option<Decompress>,
    /// With context takeover and without `retain`: the last bytes we compressed, and the last
    /// bytes we inflated, from which the next message's stream is rebuilt.
    sent: Option<History>,
    received: Option<History>,
    /// With `sent`: where our stream is, to find its compressor again among the thread's.
    position: Option<Position>,
    /// The peer ended its deflate stream (BFINAL) in the current message: the rest of the
    /// message must be empty, and the next one starts a new stream.
    stream_ended: bool,
}

impl fmt::Debug for Deflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflate")
            .field("level", &self.level.level())
            .field("threshold", &self.threshold)
            .field("compress_bits", &self.compress_bits)
            .field("compress_reset", &self.compress_reset)
            .field("decompress_bits", &self.decompress_bits)
            .field("decompress_reset", &self.decompress_reset)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl Deflate {
    /// The codec for `role`, with the parameters agreed on and this end's level and threshold.
    pub fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        let (ours, theirs) = match role {
            Role::Server => (
                (params.server_max_window_bits, params.server_no_context_takeover),
                (params.client_max_window_bits, params.client_no_context_takeover),
            ),
            Role::Client => (
                (params.client_max_window_bits, params.client_no_context_takeover),
                (params.server_max_window_bits, params.server_no_context_takeover),
            ),
        };
        let compress_bits = ours.0.clamp(8, 15);
        // A larger window inflates every stream a smaller one does; zlib's smallest raw window
        // is 9 bits.
        let decompress_bits = theirs.0.clamp(9, 15);
        let retain = config.retain_streams;
        let sent = (!ours.1 && !retain && compress_bits >= 9).then(|| History::new(compress_bits));
        Self {
            level: Compression::new(config.level.min(9)),
            threshold: config.threshold,
            compress_bits,
            compress_reset: ours.1,
            decompress_bits,
            decompress_reset: theirs.1,
            retain,
            compressor: None,
            decompressor: None,
            // The peer's window bounds how far back its inflater can look, and ours bounds how
            // far back we refer: 2^bits bytes of the stream are all the context there is.
            position: sent.is_some().then(Position::new),
            sent,
            received: (!theirs.1 && !retain).then(|| History::new(decompress_bits)),
            stream_ended: false,
        }
    }

    /// Compresses `payload` into `out` with a sync flush, leaving the trailer on.
    fn deflate(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        let (level, bits) = (self.level, self.compress_bits);
        let mut c = match self.compressor.take() {
            Some(c) => c,
            None => {
                let (mut c, continued) = spare::take(self.position, level, bits);
                // Context takeover without our stream at hand: the new stream starts from the
                // bytes the peer's inflater still has in its window.
                if !continued && let Some(sent) = self.sent.as_mut().filter(|h| !h.is_empty()) {
                    c.set_dictionary(sent.as_slice())
                        .map_err(|_| ProtocolError::InvalidCompressedData)?;
                }
                c
            }
        };
        // On failure the connection fails: the compressor is dropped, not reused.
        compress_sync(&mut c, payload, out)?;
        if let Some(sent) = self.sent.as_mut() {
            sent.extend(payload);
        }
        if self.retain && !self.compress_reset {
            self.compressor = Some(c);
        } else {
            if let Some(position) = self.position.as_mut() {
                position.messages += 1;
            }
            spare::give_back(self.position, level, bits, c);
        }
        Ok(())
    }

    /// Inflates `input` into `out`, never letting `out` grow past `max_len`.
    fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), Error> {
        let bits = self.decompress_bits;
        if self.decompressor.is_none() {
            let mut d = Decompress::new_with_window_bits(false, bits);
            // Context takeover without a kept stream: the peer's next message may refer back
            // into what we inflated before.
            if let Some(received) = self.received.as_mut().filter(|h| !h.is_empty()) {
                d.set_dictionary(received.as_slice())
                    .map_err(|_| ProtocolError::InvalidCompressedData)?;
            }
            self.decompressor = Some(d);
        }
        let d = self.decompressor.as_mut().expect("invariant: set just above");
        while !input.is_empty() || !self.stream_ended {
            if self.stream_ended {
                // RFC 7692 §7.2.2: after a final block only the appended trailer may follow;
                // anything else is data we cannot inflate.
                return Err(ProtocolError::InvalidCompressedData.into());
            }
            let room = max_len - out.len();
            // Sized by the input (deflate rarely beats 4:1 on text in one step; more steps
            // follow when it does), so a small message does not pin a large buffer.
            let step = room.min(INFLATE_STEP).min((input.len() * 4).max(1024));
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let (status, produced) = if room == 0 {
                // At the limit: one more byte means too big. It comes first in the stream when
                // zlib also finds bad data further on in the same call (the byte past the limit
                // was written before), so it is checked first.
                let mut probe = [0u8; 1];
                let status = d.decompress(input, &mut probe, FlushDecompress::Sync);
                let produced = (d.total_out() - out_before) as usize;
                if produced > 0 {
                    return Err(too_big(max_len));
                }
                (status.map_err(|_| ProtocolError::InvalidCompressedData)?, 0)
            } else {
                let start = out.len();
                grow(out, step, max_len);
                out.resize(start + step, 0);
                let status = d.decompress(input, &mut out[start..], FlushDecompress::Sync);
                let produced = (d.total_out() - out_before) as usize;
                out.truncate(start + produced);
                (status.map_err(|_| ProtocolError::InvalidCompressedData)?, produced)
            };
            let consumed = (d.total_in() - in_before) as usize;
            input = &input[consumed..];
            match status {
                Status::StreamEnd => {
                    self.stream_ended = true;
                    // The trailer we appended after a final block is not part of the stream.
                    if TAIL.ends_with(input) {
                        input = &[];
                    }
                    return if input.is_empty() {
                        Ok(())
                    } else {
                        Err(ProtocolError::InvalidCompressedData.into())
                    };
                }
                Status::Ok | Status::BufError => {
                    if consumed == 0 && produced == 0 {
                        // zlib needs more input than this frame holds.
                        return Ok(());
                    }
                }
            }
            if input.is_empty() && room > 0 && produced < step {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        if let Some(position) = self.position {
            spare::forget(position.owner);
        }
    }
}

/// Makes room for `additional` more bytes in `out` without ever giving it a capacity beyond
/// `max_len` (`BytesMut::reserve` may double it, to almost twice the limit). The buffer doubles
/// up to the limit by a copy, so the peak while growing is 1.5 times the limit at most.
fn grow(out: &mut BytesMut, additional: usize, max_len: usize) {
    let needed = out.len() + additional;
    if needed <= out.capacity() {
        return;
    }
    let target = (out.capacity() * 2).max(needed).min(max_len.max(needed));
    let mut bigger = BytesMut::with_capacity(target);
    bigger.extend_from_slice(out);
    *out = bigger;
}

/// Compresses all of `payload` into `out` with a sync flush, leaving the trailer on.
fn compress_sync(c: &mut Compress, payload: &[u8], out: &mut BytesMut) -> Result<(), Error> {
    let mut input = payload;
    loop {
        let start = out.len();
        let room = (input.len() / 2).max(1024);
        out.resize(start + room, 0);
        let (in_before, out_before) = (c.total_in(), c.total_out());
        let result = c.compress(input, &mut out[start..], FlushCompress::Sync);
        let consumed = (c.total_in() - in_before) as usize;
        let produced = (c.total_out() - out_before) as usize;
        out.truncate(start + produced);
        input = &input[consumed..];
        result.map_err(|_| ProtocolError::InvalidCompressedData)?;
        // The flush is complete once all input is in and zlib left output space unused.
        if input.is_empty() && produced < room {
            return Ok(());
        }
    }
}

fn too_big(max_len: usize) -> Error {
    PayloadTooBig { size: None, max: max_len as u64, what: SizeLimit::Message }.into()
}

impl Extension for Deflate {
    fn rsv_bits(&self) -> u8 {
        RSV1
    }

    fn decode(
        &mut self,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), Error> {
        if self.stream_ended && !payload.is_empty() {
            return Err(ProtocolError::InvalidCompressedData.into());
        }
        let before = out.len();
        if !self.stream_ended {
            self.inflate(payload, out, max_len)?;
        }
        // RFC 7692 §7.2.2: append 0x00 0x00 0xff 0xff to the message's payload, then inflate.
        if fin && !self.stream_ended {
            self.inflate(&TAIL, out, max_len)?;
        }
        if let Some(received) = self.received.as_mut() {
            received.extend(&out[before..]);
        }
        if !fin {
            return Ok(());
        }
        if self.decompress_reset || self.stream_ended {
            // No context takeover: the next message starts a fresh stream. After a final block,
            // zlib cannot continue either way, and nothing before it may be referred to.
            self.decompressor = None;
            if let Some(received) = self.received.as_mut() {
                received.clear();
            }
        } else if !self.retain {
            // The window's bytes are in `received`; the stream is rebuilt from them.
            self.decompressor = None;
        }
        self.stream_ended = false;
        Ok(())
    }

    fn encode(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<Option<u8>, Error> {
        // RFC 7692 §6.1: a message may always go uncompressed (RSV1 clear). We do so for short
        // messages, and for all when the agreed window is one zlib cannot compress with. An
        // empty one too, whatever the threshold: a sync flush with no new input after an
        // earlier one produces nothing at all (zlib refuses to flush twice in a row), not the
        // empty stored block the trailer is cut from.
        if payload.is_empty() || payload.len() < self.threshold || self.compress_bits < 9 {
            return Ok(None);
        }
        out.reserve(payload.len() / 2 + 16);
        self.deflate(payload, out)?;
        // RFC 7692 §7.2.1: remove the trailing 0x00 0x00 0xff 0xff of the sync flush.
        // A sync flush always ends with it (an empty stored block).
        debug_assert!(out.ends_with(&TAIL), "a sync flush ends with an empty stored block");
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.compress_reset {
            // Without context takeover nothing depends on this message having been
            // compressed, so it may go out as it is when deflate did not help.
            if out.len() >= payload.len() {
                out.clear();
                return Ok(None);
            }
        }
        Ok(Some(RSV1))
    }
}
