//! Applying and removing the client-to-server mask: the hot path of every received frame.
//!
//! RFC 6455 §5.3: every frame a client sends carries a 4-byte masking key, and octet `i` of the
//! payload is XORed with octet `i MOD 4` of the key. XOR is its own inverse, so one function both
//! masks and unmasks. A payload may arrive in several reads; [`apply_mask`] takes the payload
//! offset of its first byte so each piece can be unmasked as it comes, without buffering.
//!
//! # How it is fast
//!
//! The key is rotated once so that it lines up with the first byte of the slice; after that, any
//! run of bytes whose length is a multiple of 4 sees the same key, so the work is one wide XOR
//! per word:
//!
//! - Short slices (under 512 bytes, e.g. chat messages and control frames) go through one loop
//!   over `u32` words that LLVM vectorises to SSE2; aligning first costs more than it saves at
//!   these sizes.
//! - Longer slices are split where the data reaches 32-byte alignment, so the bulk loop's loads
//!   and stores never straddle a cache line (a payload usually starts 6, 8 or 14 bytes after a
//!   frame header, i.e. misaligned), and then XORed in 64-byte blocks of `u64` lanes. On
//!   x86_64 the bulk loop is compiled a second time with AVX2 enabled and chosen at run time.
//!
//! Everything is safe code except the call into the AVX2 copy, which is `unsafe` only because
//! Rust cannot know that the CPU has AVX2: the call is guarded by `is_x86_feature_detected!`.
//!
//! # Measured figures (why the one `unsafe` block stays)
//!
//! Criterion, GiB/s, on the project machine (an Intel Xeon with AVX2 and AVX-512, 2 cores shared
//! with other builds, so expect ±20 % between runs), payload starting 6 bytes past a 32-byte
//! boundary as it does after a masked frame header.
//!
//! `cargo bench -p palisade-proto --bench proto -- --warm-up-time 1 --measurement-time 3 'mask|utf8|frames'`:
//!
//! | bytes | `apply_mask` | plain loop | `fastwebsockets::unmask` | `memcpy` (the limit) |
//! |------:|-------------:|-----------:|-------------------------:|---------------------:|
//! |   125 |         10.1 |        2.6 |                     11.8 |                 43.2 |
//! |  4096 |         63.5 |        3.2 |                     32.7 |                 52.9 |
//! | 65536 |         30.5 |        2.7 |                     21.1 |                 28.1 |
//!
//! (`memcpy` copies the same bytes from a second buffer: the cost of touching them once. At
//! 4 KiB both buffers fit in L1 and masking in place can beat it.)
//!
//! The same code with the AVX2 dispatch removed (safe only) against as written, measured side by
//! side in one criterion run:
//!
//! | bytes | safe only (SSE2) | with AVX2 dispatch |
//! |------:|-----------------:|-------------------:|
//! |   125 |             11.9 |               14.9 |
//! |  1024 |             38.0 |               48.3 |
//! |  4096 |             57.5 |               80.4 |
//! | 65536 |             39.9 |               38.3 |
//!
//! (At 125 bytes both run the same word loop; the difference is noise.) So the AVX2 copy is worth +25–40 % from about 1 KiB up to what fits in L1; at 64 KiB the
//! loop is bound by L2 bandwidth (as is `memcpy`) and both are equal. Other `unsafe` designs were
//! measured and dropped because safe code matched them: `align_to_mut::<u128>` (the safe split at
//! the first aligned address does the same) and explicit SSE2 intrinsics (LLVM already emits the
//! same `pxor` loop from the word loops).
//!
//! Miri was not available on the project's stable toolchain (no `miri` component), so the tests
//! below have not run under it; the exhaustive test runs both bulk loops against the plain one on
//! every machine.
#![allow(unsafe_code)]

/// Slices at least this long are split at 32-byte alignment and go through the block loop.
///
/// Measured: below about 512 bytes the alignment prologue costs more than it saves.
const ALIGNED_MIN_LEN: usize = 512;

/// The bulk loop works in blocks of this many bytes: 8 `u64` lanes, i.e. 4 SSE2 or 2 AVX2
/// registers per iteration. A multiple of 4, so the key phase is the same after each block.
const BLOCK: usize = 64;

/// Where the bulk loop starts: the first 32-byte boundary, an AVX2 register's width.
const ALIGN: usize = 32;

/// XOR `buf` with the 4-byte `key`, where `buf[0]` is at byte `offset` of the payload (so a
/// payload that arrives in pieces can be unmasked piece by piece: offset = bytes already done).
///
/// Masking and unmasking are the same operation (RFC 6455 §5.3), so this does both.
///
/// ```
/// use palisade_proto::mask::apply_mask;
///
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut whole = *b"Hello, world";
/// apply_mask(&mut whole, key, 0);
///
/// // The same bytes unmasked in two pieces, as they might arrive from the network.
/// let mut pieces = whole;
/// let (first, rest) = pieces.split_at_mut(5);
/// apply_mask(first, key, 0);
/// apply_mask(rest, key, 5);
/// assert_eq!(&pieces, b"Hello, world");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    apply_mask_with(buf, key, offset, xor_blocks_best);
}

/// Reference implementation: the plain byte-by-byte loop, exactly as RFC 6455 §5.3 states it.
///
/// Public (but hidden) so that the exhaustive test and the benchmarks can compare against it.
#[doc(hidden)]
pub fn apply_mask_plain(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        // Wrapping: 2^64 is a multiple of 4, so the key index stays right even for absurd offsets.
        *byte ^= key[offset.wrapping_add(i) % 4];
    }
}

/// The whole fast path, with the bulk loop passed in so the tests can run both bulk loops on
/// every machine (the AVX2 one is only chosen where the CPU has it).
#[inline(always)]
fn apply_mask_with(
    buf: &mut [u8],
    key: [u8; 4],
    offset: usize,
    bulk: impl FnOnce(&mut [u8], [u8; 4]),
) {
    let key = rotate(key, offset);
    if buf.len() < ALIGNED_MIN_LEN {
        xor_words(buf, key);
        return;
    }
    // Less than ALIGN ≤ ALIGNED_MIN_LEN ≤ buf.len(), so the split point is in bounds.
    let head_len = buf.as_ptr().addr().wrapping_neg() % ALIGN;
    let (head, body) = buf.split_at_mut(head_len);
    xor_words(head, key);
    bulk(body, rotate(key, head_len));
}

/// The key as seen from a slice that starts `offset` bytes into the payload: byte `j` of the
/// result is the key byte for byte `j` of the slice (RFC 6455 §5.3, `j = i MOD 4`).
///
/// Done on a `u32` rather than with `<[u8]>::rotate_left`, whose general-purpose algorithm
/// measured ~15 ns per call — as much as masking 1 KiB.
#[inline(always)]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Little-endian view: byte j of the word is key[j], and rotating right by 8·s bits moves
    // key[(j + s) % 4] into byte j. `offset % 4 * 8` is at most 24, so the cast is lossless.
    let shift = (offset % 4 * 8) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

/// XOR one `u32` word at a time, then the last 0–3 bytes. `key` is already rotated for `buf[0]`.
///
/// LLVM turns the word loop into a SSE2 loop of 32 bytes per iteration.
#[inline(always)]
fn xor_words(buf: &mut [u8], key: [u8; 4]) {
    let key_word = u32::from_ne_bytes(key);
    let (words, tail) = buf.as_chunks_mut::<4>();
    for word in words {
        *word = (u32::from_ne_bytes(*word) ^ key_word).to_ne_bytes();
    }
    // The tail starts on a multiple of 4, so key byte j goes with tail byte j.
    for (byte, key_byte) in tail.iter_mut().zip(key) {
        *byte ^= key_byte;
    }
}

/// XOR 64-byte blocks as eight `u64` lanes, then the remainder by words. Written in safe code
/// so that the compiler vectorises it for whatever instruction set the caller enables.
#[inline(always)]
fn xor_blocks(buf: &mut [u8], key: [u8; 4]) {
    let [k0, k1, k2, k3] = key;
    let key_lane = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let (blocks, rest) = buf.as_chunks_mut::<BLOCK>();
    for block in blocks {
        let (lanes, _) = block.as_chunks_mut::<8>();
        for lane in lanes {
            *lane = (u64::from_ne_bytes(*lane) ^ key_lane).to_ne_bytes();
        }
    }
    // BLOCK is a multiple of 4, so the key is still in phase for the remainder.
    xor_words(rest, key);
}

/// The same block loop compiled with AVX2 enabled: LLVM emits 32-byte `vpxor`s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn xor_blocks_avx2(buf: &mut [u8], key: [u8; 4]) {
    xor_blocks(buf, key);
}

/// The best block loop this CPU can run.
#[inline(always)]
fn xor_blocks_best(buf: &mut [u8], key: [u8; 4]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: `xor_blocks_avx2` is safe code whose only requirement is that the CPU
        // supports AVX2, which `is_x86_feature_detected!` has just confirmed at run time.
        unsafe { xor_blocks_avx2(buf, key) };
        return;
    }
    xor_blocks(buf, key);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEYS: [[u8; 4]; 4] = [
        [0x00, 0x00, 0x00, 0x00],
        [0x01, 0x02, 0x03, 0x04],
        [0xff, 0x00, 0xa5, 0x5a],
        [0x37, 0xfa, 0x21, 0x3d],
    ];

    /// Offsets into the payload: every phase, and large ones that must wrap to the same phase.
    const OFFSETS: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 7, usize::MAX / 2 + 2, usize::MAX];

    /// Every length up to 300, then the lengths around the switch to the aligned block loop
    /// and around block boundaries, where an off-by-one would hide.
    fn lengths() -> impl Iterator<Item = usize> {
        (0..=300).chain(ALIGNED_MIN_LEN - 70..=ALIGNED_MIN_LEN + 70).chain([1023, 1024, 1025, 4097])
    }

    /// A buffer of distinct-looking bytes, so that a misplaced key byte changes the result.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(131) ^ (i >> 8)) as u8).collect()
    }

    /// Runs `fast` on a slice starting `align` bytes past a 32-byte boundary and checks it
    /// against the plain loop on the same bytes, and that nothing around the slice was touched.
    fn check(
        what: &str,
        fast: impl Fn(&mut [u8], [u8; 4], usize),
        len: usize,
        align: usize,
        key: [u8; 4],
        offset: usize,
    ) {
        let mut backing = pattern(len + 2 * ALIGN + 8);
        let start = backing.as_ptr().addr().wrapping_neg() % ALIGN + align;
        let mut expected = backing.clone();
        fast(&mut backing[start..start + len], key, offset);
        apply_mask_plain(&mut expected[start..start + len], key, offset);
        assert!(
            backing == expected,
            "{what}: len {len}, align {align}, key {key:?}, offset {offset}"
        );
    }

    #[test]
    fn fast_path_equals_plain_for_every_length_alignment_and_offset() {
        type BulkLoop = fn(&mut [u8], [u8; 4]);
        let bulk_loops: [(&str, BulkLoop); 2] =
            [("best bulk loop", xor_blocks_best), ("portable bulk loop", xor_blocks)];
        for (what, bulk) in bulk_loops {
            let fast = |buf: &mut [u8], key: [u8; 4], offset: usize| {
                apply_mask_with(buf, key, offset, bulk);
            };
            for len in lengths() {
                for align in 0..ALIGN {
                    for (i, &offset) in OFFSETS.iter().enumerate() {
                        // Every key on the short lengths, one (varying) key on the long ones.
                        if len <= 300 {
                            for key in KEYS {
                                check(what, fast, len, align, key, offset);
                            }
                        } else {
                            let key = KEYS[(i + align) % KEYS.len()];
                            check(what, fast, len, align, key, offset);
                        }
                    }
                }
            }
        }
        // The public function too, whatever bulk loop it picks on this machine.
        for len in [0, 1, 5, 300, ALIGNED_MIN_LEN, 4097] {
            for align in 0..ALIGN {
                check("apply_mask", apply_mask, len, align, KEYS[3], align);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_loop_equals_plain_when_the_cpu_has_it() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for len in [64, 65, 127, 128, 1000, 4096] {
            let mut fast = pattern(len);
            let mut plain = fast.clone();
            // SAFETY: AVX2 support was checked just above.
            unsafe { xor_blocks_avx2(&mut fast, KEYS[3]) };
            apply_mask_plain(&mut plain, KEYS[3], 0);
            assert_eq!(fast, plain, "len {len}");
        }
    }

    #[test]
    fn rfc_6455_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn masking_twice_restores_the_input() {
        for len in [0, 1, 3, 4, 17, 300, 511, 512, 513, 5000] {
            let original = pattern(len);
            let mut buf = original.clone();
            apply_mask(&mut buf, KEYS[2], 3);
            if len >= 4 {
                assert_ne!(buf, original, "len {len}: the mask did nothing");
            }
            apply_mask(&mut buf, KEYS[2], 3);
            assert_eq!(buf, original, "len {len}");
        }
    }

    proptest! {
        #[test]
        fn fast_equals_plain_on_random_input(
            data in prop::collection::vec(any::<u8>(), 0..3000),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
            start in 0usize..64,
        ) {
            let start = start.min(data.len());
            let mut fast = data.clone();
            let mut plain = data.clone();
            apply_mask(&mut fast[start..], key, offset);
            apply_mask_plain(&mut plain[start..], key, offset);
            prop_assert_eq!(fast, plain);
        }

        #[test]
        fn pieces_with_offsets_equal_one_call(
            data in prop::collection::vec(any::<u8>(), 0..3000),
            key in any::<[u8; 4]>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);

            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut pieces = data;
            for pair in cuts.windows(2) {
                apply_mask(&mut pieces[pair[0]..pair[1]], key, pair[0]);
            }
            prop_assert_eq!(pieces, whole);
        }

        #[test]
        fn masking_twice_is_the_identity(
            data in prop::collection::vec(any::<u8>(), 0..3000),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut buf = data.clone();
            apply_mask(&mut buf, key, offset);
            apply_mask(&mut buf, key, offset);
            prop_assert_eq!(buf, data);
        }
    }
}
