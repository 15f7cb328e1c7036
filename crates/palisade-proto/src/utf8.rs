//! UTF-8 validation of text messages, whole or as they arrive in pieces.
//!
//! RFC 6455 §8.1: a text message must be valid UTF-8 (RFC 3629), and an endpoint that receives
//! invalid UTF-8 fails the connection with close code 1007. A message may arrive in many frames
//! and each frame in many reads; [`Utf8Validator`] checks each piece as it comes and fails **as
//! soon as** the bytes so far cannot be the start of valid UTF-8 — not at the end of the message —
//! so a peer cannot make us buffer a huge message that was doomed from its first bad byte
//! (Autobahn cases 6.4.x test exactly this).
//!
//! The bulk of every piece is checked by `simdutf8` (SIMD, chosen at run time). Only the code
//! point that straddles two pieces is stitched together here, a byte at a time, and each partial
//! sequence is judged by `std::str::from_utf8`, whose "incomplete" verdict (`error_len() == None`)
//! means precisely "a prefix of valid UTF-8". Positions reported are those
//! `std::str::from_utf8` would report for the whole message (`valid_up_to`): the first byte of
//! the first bad sequence.
//!
//! # Speed
//!
//! `cargo bench -p palisade-proto --bench proto -- utf8`, mixed ASCII and 2–4-byte text, GiB/s
//! on the project machine (2 shared cores, ±20 %):
//!
//! | bytes | [`validate`] | [`Utf8Validator`], 4 KiB pieces | `std::str::from_utf8` |
//! |------:|-------------:|--------------------------------:|----------------------:|
//! |    16 |         0.68 |                            0.65 |                  0.54 |
//! |  1024 |         7.96 |                            7.81 |                  0.97 |
//! | 65536 |         8.47 |                            7.34 |                  0.86 |

/// Pieces shorter than this are validated by std: `simdutf8`'s set-up costs more than it saves
/// below a 64-byte block (measured: 16-byte pieces went from ~23 ns to ~17 ns per message).
const SIMD_MIN_LEN: usize = 64;

/// Validates a text message that arrives in pieces.
///
/// Feed every piece in order with [`feed`](Self::feed), then call [`finish`](Self::finish) when
/// the message is complete, then [`reset`](Self::reset) before the next message. After an error
/// the validator keeps returning the same error until it is reset.
///
/// ```
/// use palisade_proto::utf8::Utf8Validator;
///
/// let mut v = Utf8Validator::new();
/// // "é" is C3 A9; here it is split between two pieces.
/// assert_eq!(v.feed(b"caf\xC3"), Ok(()));
/// assert_eq!(v.feed(b"\xA9!"), Ok(()));
/// assert_eq!(v.finish(), Ok(()));
///
/// // A surrogate (ED A0 ..) fails in the piece that proves it, before the message ends.
/// v.reset();
/// assert_eq!(v.feed(b"ok \xED"), Ok(()));
/// assert_eq!(v.feed(b"\xA0\x80 more"), Err(3));
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a code point cut off at the end of the last piece (RFC 3629 §3: at most
    /// 4 bytes, so at most 3 are ever pending), completed from the next piece.
    pending: [u8; 4],
    /// How many bytes of `pending` are in use: 0 to 3 between calls.
    pending_len: u8,
    /// Bytes of the message validated so far; `pending` starts at this position.
    validated: u64,
    /// Where the message turned out invalid, once it has.
    failed: Option<u64>,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next piece. Err(position) as soon as the bytes so far cannot be the prefix of
    /// valid UTF-8, where position is the offset IN THE WHOLE MESSAGE of the first byte that
    /// makes it invalid (the start of the bad sequence).
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), u64> {
        if let Some(position) = self.failed {
            return Err(position);
        }
        let piece = self.complete_pending(piece)?;
        if piece.is_empty() {
            return Ok(());
        }

        // Short pieces: `simdutf8` only pays from about a SIMD register's worth of input, so
        // let std find the verdict and the position in one pass.
        if piece.len() < SIMD_MIN_LEN {
            return match std::str::from_utf8(piece) {
                Ok(_) => self.settle(piece, piece.len(), None),
                Err(e) => self.settle(piece, e.valid_up_to(), e.error_len()),
            };
        }

        // Common case: everything but a cut-off code point at the end is valid, which the
        // faster `basic` validator can confirm without working out positions.
        let (body, tail) = piece.split_at(incomplete_tail_start(piece));
        if simdutf8::basic::from_utf8(body).is_ok() {
            self.validated += body.len() as u64;
            return self.stash(tail);
        }

        // Something is wrong (or a cut-off sequence hides before the tail): let `compat`
        // find the first bad byte exactly, or the viable cut-off sequence at the end.
        match simdutf8::compat::from_utf8(piece) {
            Ok(_) => self.settle(piece, piece.len(), None),
            Err(e) => self.settle(piece, e.valid_up_to(), e.error_len()),
        }
    }

    /// The message is complete: Err(position) if it ends inside a code point.
    ///
    /// Does not reset: call [`reset`](Self::reset) before the next message.
    pub fn finish(&mut self) -> Result<(), u64> {
        if let Some(position) = self.failed {
            return Err(position);
        }
        if self.pending_len > 0 {
            // RFC 3629 §3: a truncated sequence is invalid; std reports its first byte.
            return Err(self.fail(self.validated));
        }
        Ok(())
    }

    /// Reset for the next message (keeps nothing).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Completes the code point left pending by the last piece with bytes from the start of
    /// `piece`, one byte at a time so that a byte which can never continue it fails at once.
    /// Returns the rest of the piece.
    fn complete_pending<'a>(&mut self, mut piece: &'a [u8]) -> Result<&'a [u8], u64> {
        while self.pending_len > 0 {
            let Some((&byte, rest)) = piece.split_first() else { break };
            piece = rest;
            // pending_len ≤ 3 here (a viable cut-off sequence is never 4 bytes), so in bounds.
            self.pending[usize::from(self.pending_len)] = byte;
            self.pending_len += 1;
            match std::str::from_utf8(&self.pending[..usize::from(self.pending_len)]) {
                Ok(_) => {
                    self.validated += u64::from(self.pending_len);
                    self.pending_len = 0;
                }
                // Still a prefix of a valid code point: take the next byte.
                Err(e) if e.error_len().is_none() => {}
                // The bad sequence starts at the pending code point's first byte.
                Err(_) => return Err(self.fail(self.validated)),
            }
        }
        Ok(piece)
    }

    /// Keeps `tail`, the last bytes of a piece that do not form a whole code point, for the
    /// next piece, after checking that they can still become one.
    fn stash(&mut self, tail: &[u8]) -> Result<(), u64> {
        if tail.is_empty() {
            return Ok(());
        }
        match std::str::from_utf8(tail) {
            Ok(_) => {
                // Whole after all (an ASCII or complete tail): nothing to carry over.
                self.validated += tail.len() as u64;
                Ok(())
            }
            Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 && tail.len() < 4 => {
                self.pending[..tail.len()].copy_from_slice(tail);
                // tail.len() < 4: the cast is lossless.
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(e) if e.error_len().is_none() => {
                // A complete code point before a cut-off one; cannot come from `feed`'s
                // callers, but handle it rather than assume it.
                let (good, rest) = tail.split_at(e.valid_up_to());
                self.validated += good.len() as u64;
                self.stash(rest)
            }
            Err(e) => Err(self.fail(self.validated + e.valid_up_to() as u64)),
        }
    }

    /// Takes a validator's verdict on a whole piece (std's and `simdutf8::compat`'s errors
    /// mean the same): the first `valid_up_to` bytes are valid; then either a bad sequence
    /// (`error_len` is `Some`) or a cut-off code point to carry over to the next piece.
    fn settle(
        &mut self,
        piece: &[u8],
        valid_up_to: usize,
        error_len: Option<usize>,
    ) -> Result<(), u64> {
        let (good, rest) = piece.split_at(valid_up_to);
        self.validated += good.len() as u64;
        match error_len {
            Some(_) => Err(self.fail(self.validated)),
            None => self.stash(rest),
        }
    }

    /// Records the failure so that later calls report it again, and returns it.
    fn fail(&mut self, position: u64) -> u64 {
        self.failed = Some(position);
        position
    }
}

/// Validate a complete buffer in one go (fast path used for unfragmented messages):
/// Err(position of first invalid byte).
///
/// The position is `std::str::from_utf8`'s `valid_up_to`; a buffer that ends inside a code
/// point is invalid, with the position of that code point's first byte.
pub fn validate(bytes: &[u8]) -> Result<(), u64> {
    // `basic` is the fastest check; only a failure needs `compat` to find the position.
    if simdutf8::basic::from_utf8(bytes).is_ok() {
        return Ok(());
    }
    match simdutf8::compat::from_utf8(bytes) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.valid_up_to() as u64),
    }
}

/// Where a code point cut off by the end of `bytes` starts, or `bytes.len()` if the last code
/// point looks whole. Only looks at the lead byte's length bits (RFC 3629 §3); whether the
/// bytes are really valid is for the validators to say.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    // A code point is at most 4 bytes, so a cut-off one has its lead in the last 3.
    for (back, &byte) in bytes.iter().rev().take(3).enumerate() {
        let is_continuation = byte & 0b1100_0000 == 0b1000_0000;
        if is_continuation {
            continue;
        }
        let needs = match byte {
            0b1100_0000..=0b1101_1111 => 2,
            0b1110_0000..=0b1110_1111 => 3,
            0b1111_0000..=0b1111_0111 => 4,
            _ => 1,
        };
        // `back + 1` bytes from the lead to the end.
        return if needs > back + 1 { bytes.len() - back - 1 } else { bytes.len() };
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What std says about the whole message: the verdict, and for invalid input that bytes
    /// prove invalid (rather than a truncated end), the index of the byte that proves it.
    fn std_verdict(bytes: &[u8]) -> (Result<(), u64>, Option<usize>) {
        match std::str::from_utf8(bytes) {
            Ok(_) => (Ok(()), None),
            Err(e) => {
                let start = e.valid_up_to();
                let proof = e.error_len().map(|len| {
                    // A valid lead byte (RFC 3629 §4: C2..F4) is proven bad by the byte after
                    // the longest prefix it starts; any other byte is bad in itself.
                    if (0xC2..=0xF4).contains(&bytes[start]) { start + len } else { start }
                });
                (Err(start as u64), proof)
            }
        }
    }

    /// Feeds `bytes` cut at `cuts` (sorted, within bounds) and checks the verdict, the position,
    /// and that the error comes from the earliest call that could know it: the feed() of the
    /// piece holding the proving byte, or finish() for a truncated end.
    fn check_pieces(bytes: &[u8], cuts: &[usize]) {
        let (expected, proof) = std_verdict(bytes);
        let mut validator = Utf8Validator::new();
        let mut start = 0;
        let ends = cuts.iter().copied().chain([bytes.len()]);
        for end in ends {
            let verdict = validator.feed(&bytes[start..end]);
            let holds_proof = proof.is_some_and(|p| (start..end).contains(&p));
            if holds_proof {
                assert_eq!(verdict, expected, "{bytes:x?} cut at {cuts:?}: piece {start}..{end}");
                // Sticky: later calls say the same.
                assert_eq!(validator.feed(b"a"), expected);
                assert_eq!(validator.finish(), expected);
                return;
            }
            assert_eq!(verdict, Ok(()), "{bytes:x?} cut at {cuts:?}: piece {start}..{end}");
            start = end;
        }
        assert_eq!(validator.finish(), expected, "{bytes:x?} cut at {cuts:?}: finish");
    }

    /// Checks one message every way: whole, by `validate`, a byte at a time, cut once at every
    /// position, and (when short) cut twice at every pair of positions.
    fn check_all_ways(bytes: &[u8]) {
        let (expected, _) = std_verdict(bytes);
        assert_eq!(validate(bytes), expected, "validate {bytes:x?}");
        check_pieces(bytes, &[]);
        check_pieces(bytes, &(0..=bytes.len()).collect::<Vec<_>>());
        for cut in 0..=bytes.len() {
            check_pieces(bytes, &[cut]);
        }
        if bytes.len() <= 24 {
            for first in 0..=bytes.len() {
                for second in first..=bytes.len() {
                    check_pieces(bytes, &[first, second]);
                }
            }
        }
    }

    /// Checks `bytes` alone, between short valid text (positions offset; std's path for short
    /// pieces) and between long valid text (pieces of 64 bytes and more go through `simdutf8`).
    fn check_case(bytes: &[u8]) {
        check_all_ways(bytes);
        for prefix in ["Grüße, κόσμε ".to_owned(), "Grüße, κόσμε ".repeat(6)] {
            let mut framed = prefix.into_bytes();
            framed.extend_from_slice(bytes);
            framed.extend_from_slice(" — fin 🎉".as_bytes());
            check_all_ways(&framed);
        }
    }

    fn encode(c: char) -> Vec<u8> {
        c.to_string().into_bytes()
    }

    // Valid input (Autobahn 6.1–6.3, 6.5, 6.7–6.9).

    #[test]
    fn empty_message_is_valid() {
        check_all_ways(b"");
        assert_eq!(Utf8Validator::new().finish(), Ok(()));
    }

    #[test]
    fn valid_text_mixed_widths() {
        check_case("Hello-µ@ßöäüàá-UTF-8!!".as_bytes());
        check_case("κόσμε".as_bytes());
        check_case("日本語のテキスト, 𝄞 and 😀".as_bytes());
    }

    #[test]
    fn width_boundaries_rfc_3629() {
        // RFC 3629 §3: the first and last code point of each encoded width, and around the
        // surrogate gap and U+FFFF (noncharacters are valid UTF-8).
        let boundaries = [
            '\u{0}',
            '\u{7F}',
            '\u{80}',
            '\u{7FF}',
            '\u{800}',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ];
        for c in boundaries {
            check_case(&encode(c));
        }
        let all: String = boundaries.iter().collect();
        check_case(all.as_bytes());
    }

    // Invalid input (Autobahn 6.4, 6.6, 6.10–6.21).

    #[test]
    fn fails_fast_in_the_middle_of_a_message() {
        // Autobahn 6.4.1–6.4.4 shapes: valid text, then a byte that can never be valid.
        check_case(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4\x90\x80\x80\x65\x64");
        check_case(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited");
        check_case(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4");
        check_case(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4\x90");
    }

    #[test]
    fn above_u10ffff() {
        // RFC 3629 §3: nothing above U+10FFFF; F4 90.. and F5..F7 leads, and the old 5- and
        // 6-byte forms.
        check_case(b"\xF4\x90\x80\x80");
        check_case(b"\xF4\x90");
        check_case(b"\xF7\xBF\xBF\xBF");
        check_case(b"\xF5\x80\x80\x80");
        check_case(b"\xF8\x88\x80\x80\x80");
        check_case(b"\xFB\xBF\xBF\xBF\xBF");
        check_case(b"\xFC\x84\x80\x80\x80\x80");
        check_case(b"\xFD\xBF\xBF\xBF\xBF\xBF");
    }

    #[test]
    fn bytes_that_never_appear() {
        // RFC 3629 §1: C0, C1, F5..FF never appear in UTF-8.
        for byte in [0xC0, 0xC1, 0xF5, 0xF8, 0xFC, 0xFE, 0xFF] {
            check_case(&[byte]);
            check_case(&[byte, b'a']);
        }
        check_case(b"\xFE\xFE\xFF\xFF");
    }

    #[test]
    fn stray_continuation_bytes() {
        check_case(b"\x80");
        check_case(b"\xBF");
        check_case(b"\x80\xBF");
        check_case(b"\x80\xBF\x80\xBF\x80\xBF\x80");
        let all: Vec<u8> = (0x80..=0xBF).collect();
        check_case(&all);
        // One continuation byte too many after a whole code point.
        check_case(b"\xC3\xA9\xA9");
        check_case(b"\xF0\x9F\x98\x80\x80");
    }

    #[test]
    fn lonely_start_bytes() {
        for lead in 0xC2..=0xF4u8 {
            check_all_ways(&[lead, b' ']);
        }
        check_case(b"\xC2 \xE0 \xF0 ");
    }

    #[test]
    fn truncated_sequences() {
        // At the end of the message: only finish() can tell.
        for truncated in [
            &b"\xC2"[..],
            b"\xDF",
            b"\xE0\xA0",
            b"\xEF\xBF",
            b"\xF0\x90\x80",
            b"\xF4\x8F\xBF",
            b"\xE1",
            b"\xF3\x80",
        ] {
            check_case(truncated);
        }
        // Autobahn 6.14: incomplete sequences one after another.
        check_case(b"\xC2\xE0\xA0\xF0\x90\x80\xDF\xEF\xBF\xF4\x8F\xBF");
    }

    #[test]
    fn overlong_forms() {
        // RFC 3629 §3 and §10: overlong forms are invalid (the '/' attack of §10).
        for overlong in [
            &b"\xC0\xAF"[..],
            b"\xE0\x80\xAF",
            b"\xF0\x80\x80\xAF",
            // The largest overlong of each width.
            b"\xC1\xBF",
            b"\xE0\x9F\xBF",
            b"\xF0\x8F\xBF\xBF",
            // Overlong NUL.
            b"\xC0\x80",
            b"\xE0\x80\x80",
            b"\xF0\x80\x80\x80",
            b"\xE0\x80",
        ] {
            check_case(overlong);
        }
    }

    #[test]
    fn utf16_surrogates() {
        // RFC 3629 §3: U+D800..U+DFFF are not characters and must not be encoded.
        for surrogate in [
            &b"\xED\xA0\x80"[..],
            b"\xED\xAD\xBF",
            b"\xED\xAE\x80",
            b"\xED\xAF\xBF",
            b"\xED\xB0\x80",
            b"\xED\xBE\x80",
            b"\xED\xBF\xBF",
            b"\xED\xA0",
            // Paired surrogates (CESU-8) are invalid too.
            b"\xED\xA0\x80\xED\xB0\x80",
            b"\xED\xAF\xBF\xED\xBF\xBF",
        ] {
            check_case(surrogate);
        }
        // The code points just outside the gap are fine.
        check_case(b"\xED\x9F\xBF\xEE\x80\x80");
    }

    #[test]
    fn every_two_byte_prefix_matches_std() {
        // Every lead byte with every second byte: the fail-fast verdict for each pair.
        for first in 0..=u8::MAX {
            for second in 0..=u8::MAX {
                check_pieces(&[first, second], &[1]);
                check_pieces(&[first, second, 0xBF, 0x80], &[1, 2]);
            }
        }
    }

    #[test]
    fn long_pieces_through_simdutf8() {
        let text = "ascii and κόσμε and 日本語 and 😀 ".repeat(100);
        let bytes = text.as_bytes();
        for piece_len in [1, 2, 3, 5, 63, 64, 65, 4096] {
            let cuts: Vec<usize> = (piece_len..bytes.len()).step_by(piece_len).collect();
            check_pieces(bytes, &cuts);
        }
        let mut bad = bytes.to_vec();
        for position in [0, 1, 70, 1000, bad.len() - 1] {
            let saved = bad[position];
            bad[position] = 0xFF;
            for piece_len in [1, 7, 64, 4096] {
                let cuts: Vec<usize> = (piece_len..bad.len()).step_by(piece_len).collect();
                check_pieces(&bad, &cuts);
            }
            bad[position] = saved;
        }
    }

    #[test]
    fn reset_starts_positions_from_zero() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"abc\xC3"), Ok(()));
        validator.reset();
        // Without the reset, the pending C3 would swallow this A9 as a continuation.
        assert_eq!(validator.feed(b"\xA9"), Err(0));
        validator.reset();
        assert_eq!(validator.feed("é".as_bytes()), Ok(()));
        assert_eq!(validator.finish(), Ok(()));
    }

    /// Text that is mostly valid, with the occasional stray byte or cut-off code point.
    fn mostly_text() -> impl Strategy<Value = Vec<u8>> {
        let atom = prop_oneof![
            6 => any::<char>().prop_map(encode),
            2 => prop::char::range('\0', '\u{7F}').prop_map(encode),
            1 => any::<u8>().prop_map(|b| vec![b]),
            1 => any::<char>().prop_map(|c| {
                let mut bytes = encode(c);
                bytes.pop();
                bytes
            }),
        ];
        prop::collection::vec(atom, 0..120).prop_map(|atoms| atoms.concat())
    }

    fn cut_points(len: usize, picks: &[prop::sample::Index]) -> Vec<usize> {
        let mut cuts: Vec<usize> = picks.iter().map(|p| p.index(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    proptest! {
        #[test]
        fn incremental_matches_std_on_mostly_text(
            bytes in mostly_text(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let cuts = cut_points(bytes.len(), &picks);
            check_pieces(&bytes, &cuts);
            prop_assert_eq!(validate(&bytes), std_verdict(&bytes).0);
        }

        #[test]
        fn incremental_matches_std_on_random_bytes(
            random in prop::collection::vec(any::<u8>(), 0..40),
            valid_prefix in prop::sample::select(vec![0, 1, 63, 64, 100]),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            // A valid ASCII prefix of some length moves the random bytes into `simdutf8`'s
            // path and across its 64-byte blocks.
            let mut bytes = vec![b'x'; valid_prefix];
            bytes.extend_from_slice(&random);
            let cuts = cut_points(bytes.len(), &picks);
            check_pieces(&bytes, &cuts);
            prop_assert_eq!(validate(&bytes), std_verdict(&bytes).0);
        }

        #[test]
        fn valid_text_is_valid_however_it_is_cut(
            text in any::<String>(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let cuts = cut_points(text.len(), &picks);
            let mut validator = Utf8Validator::new();
            let mut start = 0;
            for end in cuts.iter().copied().chain([text.len()]) {
                prop_assert_eq!(validator.feed(&text.as_bytes()[start..end]), Ok(()));
                start = end;
            }
            prop_assert_eq!(validator.finish(), Ok(()));
        }
    }
}
