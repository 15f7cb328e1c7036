//! Target `deflate_inflate`: permessage-deflate's inflater (RFC 7692 §7.2.2) on arbitrary
//! compressed input, for every window size and with and without context takeover.

use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress, Status};
use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use palisade_proto::Extension;
use palisade_proto::Role;
use palisade_proto::deflate::{Deflate, DeflateConfig, DeflateParams};
use palisade_proto::error::{CloseCode, Error};

/// Message size limits, chosen by three bits of the second input byte: from nothing at all to
/// more than a 4 KiB input can hold uncompressed, so that bombs cross the smaller ones.
const LIMITS: [usize; 8] = [0, 1, 16, 125, 1000, 4096, 65_536, 1 << 20];

/// The trailer RFC 7692 §7.2.2 appends to a message before inflating it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Target `deflate_inflate`: `data` is two setup bytes and then the frames of compressed
/// messages as a peer sent them: each a flags byte (bit 0: FIN), a little-endian 16-bit
/// length and that many payload bytes (the last one cut to what is left; a message left open
/// at the end is finished by an empty final frame).
///
/// The first byte picks the peer's window (bits 0–2: 8 to 15 bits), whether the peer resets
/// its compressor after each message (bit 3), our role (bit 4), and whether our codec keeps its
/// zlib streams between messages (bit 5, [`DeflateConfig::with_retained_streams`]) or, as by
/// default, keeps only the window's bytes and rebuilds a stream from them for each message; the
/// second picks the message size limit (bits 0–2) and a compression level for the round trip
/// (bits 3–6).
///
/// Two references inflate the same frames with the same context carried across messages: zlib
/// (zlib-rs, the engine under our codec) driven the plain way — whole frames into a large
/// buffer, no limit — and miniz_oxide, an independent inflater (which accepts distances
/// reaching before the start of the stream, where zlib refuses them, and refuses some invalid
/// codes earlier than zlib, which waits for more input).
///
/// A codec that rebuilds its stream for each message reads every message from a block
/// boundary, as RFC 7692 §7.2.1 has the sender end each one (with an empty stored block, whose
/// last four bytes it removes). A peer that ends a message inside a block breaks that rule, and
/// one continuous stream then reads the next message on from the middle of that block, while a
/// rebuilt one reads it as a new block: the two disagree, and both are legitimate readings of
/// invalid input. So with context takeover and rebuilt streams the reference is a third one,
/// zlib rebuilt the same way (a fresh stream per message with the last window of what was
/// inflated as its dictionary); while it agrees with the continuous zlib on every message so
/// far, miniz_oxide is compared as well.
///
/// Checks that the inflater never lets a message grow past the limit — neither its length nor
/// its buffer's capacity — and fails only with 1009 (too big) or 1002 (bad data); that what it
/// inflates equals what plain zlib makes of the same bytes, and what miniz_oxide makes of them
/// wherever it inflates them at all; that a message failed as too big inflates past the limit
/// in plain zlib, and, under a 15-bit window, one refused as invalid is refused by plain zlib
/// too (or has data after its final block; `check_failure` says why not under smaller ones);
/// and that every message inflated, compressed again by our own encoder with the same
/// parameters, inflates back to itself.
pub fn deflate_inflate(data: &[u8]) {
    let [setup, limits, stream @ ..] = data else { return };
    let bits = 8 + (setup & 0b111);
    let no_takeover = setup & 0b1000 != 0;
    let retain = setup & 0x20 != 0;
    let role = if setup & 0x10 == 0 { Role::Server } else { Role::Client };
    let max_len = LIMITS[usize::from(limits & 0b111)];
    let level = u32::from((limits >> 3) & 0b1111).min(9);

    // The parameters as agreed: the peer compresses with `bits`, with or without takeover.
    let mut params = DeflateParams::default();
    match role {
        Role::Server => {
            params.client_max_window_bits = bits;
            params.client_no_context_takeover = no_takeover;
        }
        Role::Client => {
            params.server_max_window_bits = bits;
            params.server_no_context_takeover = no_takeover;
        }
    }
    let config =
        DeflateConfig::default().with_level(level).with_threshold(0).with_retained_streams(retain);
    let mut ours = Deflate::new(role, params, &config);
    // zlib's smallest raw window is 9 bits; our codec inflates an 8-bit one with 9 too.
    let zlib_bits = bits.max(9);
    let mut zlib = Reference::zlib(zlib_bits);
    let mut miniz = Reference::miniz();
    // With takeover and rebuilt streams: the rebuilt reference, and whether it has agreed with
    // the continuous one on every message so far.
    let mut rebuilt = (!no_takeover && !retain).then(|| Rebuilt::new(zlib_bits));
    let mut continuous_agrees = true;

    for message in messages(stream) {
        let mut out = BytesMut::new();
        let mut verdict = Ok(());
        for (payload, fin) in &message {
            verdict = ours.decode(payload, *fin, &mut out, max_len);
            assert!(out.len() <= max_len, "inflated {} bytes, limit {max_len}", out.len());
            assert!(
                out.capacity() <= max_len,
                "a buffer of {} bytes for a limit of {max_len}",
                out.capacity()
            );
            if verdict.is_err() {
                break;
            }
        }
        let continuous = zlib.message(&message, max_len).map(|(out, _)| out);
        let expected = match rebuilt.as_mut() {
            None => continuous,
            Some(rebuilt) => {
                let expected = rebuilt.message(&message, max_len);
                continuous_agrees &= match (&expected, &continuous) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(_), Err(_)) => true,
                    _ => false,
                };
                expected
            }
        };
        match verdict {
            Ok(()) => {
                let expected = expected.unwrap_or_else(|e| {
                    panic!("we inflated {} bytes, plain zlib says {e:?}", out.len())
                });
                assert_eq!(out[..], expected[..], "the inflated bytes differ from plain zlib's");
                if !continuous_agrees {
                    // The peer broke the message boundaries; miniz_oxide reads on as one
                    // continuous stream does, and is not comparable from here on.
                    round_trip(role, params, &config, &out);
                    continue;
                }
                // Where miniz_oxide inflates too, it inflates the same bytes. It may refuse
                // where zlib waits for more input (it judges some invalid codes earlier), and
                // then its stream is over for the messages after.
                if let Ok((independent, _)) = miniz.message(&message, max_len) {
                    assert_eq!(out[..], independent[..], "the bytes differ from miniz_oxide's");
                }
                round_trip(role, params, &config, &out);
            }
            Err(err) => {
                check_failure(&err, expected, zlib_bits);
                // The connection fails: nothing after this message is read.
                return;
            }
        }
        if no_takeover {
            zlib = Reference::zlib(zlib_bits);
            miniz = Reference::miniz();
        }
    }
}

/// Splits the stream into messages of (payload, fin) frames.
fn messages(mut stream: &[u8]) -> Vec<Vec<(&[u8], bool)>> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    while let [flags, rest @ ..] = stream {
        let (len, rest) = match rest {
            [lo, hi, rest @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
            _ => (0, &[][..]),
        };
        let (payload, rest) = rest.split_at(len.min(rest.len()));
        let fin = flags & 1 != 0;
        current.push((payload, fin));
        if fin {
            messages.push(std::mem::take(&mut current));
        }
        stream = rest;
    }
    if !current.is_empty() {
        current.push((&[][..], true));
        messages.push(current);
    }
    messages
}

/// What the independent inflater made of a message.
#[derive(Debug)]
enum Expected {
    /// Past the limit.
    TooBig,
    /// Not a deflate stream it can inflate.
    Invalid,
    /// The stream ended (BFINAL) and bytes other than the trailer followed.
    DataAfterEnd,
}

/// A raw inflater carrying its context from message to message as context takeover does
/// (RFC 7692 §7.2.2), and starting over after a final block.
enum Reference {
    Zlib(Decompress, u8),
    Miniz(Box<InflateState>),
}

/// What one call of a reference inflater did.
struct Step {
    consumed: usize,
    written: usize,
    /// `Some(true)` at the end of the stream, `Some(false)` otherwise, `None` on bad data.
    ended: Option<bool>,
}

impl Reference {
    fn zlib(bits: u8) -> Self {
        Self::Zlib(Decompress::new_with_window_bits(false, bits), bits)
    }

    fn miniz() -> Self {
        Self::Miniz(InflateState::new_boxed(DataFormat::Raw))
    }

    fn fresh(&self) -> Self {
        match self {
            Self::Zlib(_, bits) => Self::zlib(*bits),
            Self::Miniz(_) => Self::miniz(),
        }
    }

    fn step(&mut self, input: &[u8], buf: &mut [u8]) -> Step {
        match self {
            Self::Zlib(d, _) => {
                let (in_before, out_before) = (d.total_in(), d.total_out());
                let status = d.decompress(input, buf, FlushDecompress::Sync);
                let consumed = (d.total_in() - in_before) as usize;
                let written = (d.total_out() - out_before) as usize;
                let ended = match status {
                    Ok(Status::StreamEnd) => Some(true),
                    Ok(Status::Ok | Status::BufError) => Some(false),
                    Err(_) => None,
                };
                Step { consumed, written, ended }
            }
            Self::Miniz(state) => {
                let result = inflate(state, input, buf, MZFlush::Sync);
                let ended = match result.status {
                    Ok(MZStatus::StreamEnd) => Some(true),
                    Ok(_) | Err(MZError::Buf) => Some(false),
                    Err(_) => None,
                };
                Step { consumed: result.bytes_consumed, written: result.bytes_written, ended }
            }
        }
    }

    /// Inflates one message, frame by frame and then the trailer, up to `max_len + 1` bytes.
    /// After a final block, as RFC 7692 leaves open, it takes what palisade takes: the rest of
    /// that frame may be the start of the trailer, and later frames must be empty.
    /// Returns the bytes, and whether the stream ended (a final block).
    fn message(
        &mut self,
        frames: &[(&[u8], bool)],
        max_len: usize,
    ) -> Result<(Vec<u8>, bool), Expected> {
        let mut out = Vec::new();
        let mut ended = false;
        for (payload, _) in frames {
            if ended {
                if !payload.is_empty() {
                    return Err(Expected::DataAfterEnd);
                }
                continue;
            }
            match self.inflate(payload, &mut out, max_len)? {
                None => {}
                Some(rest) if TAIL.ends_with(rest) => ended = true,
                Some(_) => return Err(Expected::DataAfterEnd),
            }
        }
        // A final block may also end inside the trailer, whose rest is then ignored.
        if !ended && self.inflate(&TAIL, &mut out, max_len)?.is_some() {
            ended = true;
        }
        if ended {
            // The next message starts a new stream.
            *self = self.fresh();
        }
        Ok((out, ended))
    }

    /// Inflates `input` onto `out`; `Some` with the bytes left after the end of the stream.
    fn inflate<'a>(
        &mut self,
        mut input: &'a [u8],
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<Option<&'a [u8]>, Expected> {
        let mut buf = [0u8; 8192];
        loop {
            let step = self.step(input, &mut buf);
            input = &input[step.consumed..];
            out.extend_from_slice(&buf[..step.written]);
            if out.len() > max_len {
                return Err(Expected::TooBig);
            }
            match step.ended {
                Some(true) => return Ok(Some(input)),
                Some(false) if step.consumed > 0 || step.written > 0 => {}
                // No progress: all the input is used (a message may end mid-stream; context
                // takeover goes on with the next one).
                Some(false) => return Ok(None),
                None => return Err(Expected::Invalid),
            }
        }
    }
}

/// Plain zlib as a codec that keeps only the window's bytes between messages drives it: each
/// message inflated by a fresh stream whose dictionary is the last window of what was inflated
/// before (nothing after a final block).
struct Rebuilt {
    bits: u8,
    window: Vec<u8>,
}

impl Rebuilt {
    fn new(bits: u8) -> Self {
        Self { bits, window: Vec::new() }
    }

    fn message(&mut self, frames: &[(&[u8], bool)], max_len: usize) -> Result<Vec<u8>, Expected> {
        let mut d = Decompress::new_with_window_bits(false, self.bits);
        if !self.window.is_empty() {
            d.set_dictionary(&self.window).expect("a raw stream takes a dictionary before input");
        }
        let (out, ended) = Reference::Zlib(d, self.bits).message(frames, max_len)?;
        if ended {
            self.window.clear();
        } else {
            self.window.extend_from_slice(&out);
            let excess = self.window.len().saturating_sub(1 << self.bits);
            self.window.drain(..excess);
        }
        Ok(out)
    }
}

/// A failure is a typed error with the right close code, and plain zlib agrees that the
/// message is bad.
///
/// With a window under 15 bits, zlib judges a distance against its window and also against
/// what the current call has written, so plain zlib, writing whole messages at once, accepts
/// distances beyond the agreed window that our codec, writing in steps, refuses (rightly: the
/// peer compressed with a larger window than agreed, RFC 7692 §7.1.2). Only a 15-bit window,
/// which every deflate distance fits, makes the two verdicts comparable.
fn check_failure(err: &Error, expected: Result<Vec<u8>, Expected>, bits: u8) {
    match err.close_code() {
        Some(CloseCode::MESSAGE_TOO_BIG) => {
            assert!(
                matches!(expected, Err(Expected::TooBig)),
                "failed as too big ({err}), plain zlib says {expected:?}"
            );
        }
        Some(CloseCode::PROTOCOL_ERROR) => {
            assert!(
                bits < 15 || matches!(expected, Err(Expected::Invalid | Expected::DataAfterEnd)),
                "refused as invalid ({err}), plain zlib inflates {expected:?}"
            );
        }
        code => panic!("inflate failed with {err} and close code {code:?}"),
    }
}

/// Compresses `message` as the peer would, with the same parameters, and inflates it with a
/// fresh codec for our role: the result is `message` again.
fn round_trip(role: Role, params: DeflateParams, config: &DeflateConfig, message: &[u8]) {
    let peer = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut sender = Deflate::new(peer, params, config);
    let mut receiver = Deflate::new(role, params, config);
    // Twice, so that the second message relies on the first's context when takeover is on.
    for _ in 0..2 {
        let mut encoded = BytesMut::new();
        let rsv = sender.encode(message, &mut encoded).expect("compressing never fails");
        let back = match rsv {
            None => message.to_vec(),
            Some(_) => {
                let mut out = BytesMut::new();
                receiver
                    .decode(&encoded, true, &mut out, message.len())
                    .expect("our own compression inflates within the message's own size");
                out.to_vec()
            }
        };
        assert_eq!(back, message, "a round trip through our own codec changed the message");
    }
}
