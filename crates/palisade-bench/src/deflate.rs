//! What the load generator needs to offer permessage-deflate (RFC 7692) and send compressed
//! messages: compressible text, compressed once per run, and a check of the server's answer.
//!
//! The generator never inflates: replies are counted from their headers, as uncompressed ones
//! are. Its frames are compressed with a 512-byte window (`client_max_window_bits=9`), which
//! every window the server may ask for reads, so the same frames are valid whatever the server
//! answers; each is compressed on its own, so that it stays valid whatever the server's inflater
//! kept from earlier messages (context takeover).

use flate2::{Compress, Compression, FlushCompress};

/// The extension offer: the one browsers send.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The window the generator compresses with: the smallest raw deflate allows in zlib.
const WINDOW_BITS: u8 = 9;

/// How many different messages a compressed run rotates through: with 1 KiB messages that is
/// 64 KiB of text, twice the largest window, so the server's compressor cannot just point back
/// at the previous copy of the same message.
pub const VARIANTS: usize = 64;

/// `size` bytes of JSON-like text, different for every `seed`: records of the kind a chat or
/// trading feed sends, with numbers and words drawn from a small vocabulary (it compresses
/// about 3:1 with zlib's default level, like real traffic of that kind).
pub fn text(size: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    const EVENTS: [&str; 4] = ["join", "message", "typing", "leave"];
    // A 64-bit linear congruential generator (Knuth's MMIX constants): deterministic, no crate.
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    let mut next = move || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut out = Vec::with_capacity(size + 128);
    out.push(b'[');
    while out.len() < size {
        let record = format!(
            "{{\"id\":{},\"room\":\"{}\",\"user\":\"{}-{}\",\"event\":\"{}\",\"ts\":{},\"text\":\"{} {} {}\"}},",
            next() % 1_000_000,
            WORDS[(next() % 16) as usize],
            WORDS[(next() % 16) as usize],
            next() % 1000,
            EVENTS[(next() % 4) as usize],
            1_700_000_000_000 + next() % 100_000_000,
            WORDS[(next() % 16) as usize],
            WORDS[(next() % 16) as usize],
            WORDS[(next() % 16) as usize],
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(size);
    out
}

/// Compresses `payload` as one permessage-deflate message: raw deflate, flushed with a sync
/// flush, the final `00 00 ff ff` removed (RFC 7692 §7.2.1).
pub fn compress(payload: &[u8]) -> Vec<u8> {
    let mut deflater = Compress::new_with_window_bits(Compression::default(), false, WINDOW_BITS);
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let before = deflater.total_in();
        let status = deflater.compress_vec(input, &mut out, FlushCompress::Sync);
        input = &input[(deflater.total_in() - before) as usize..];
        // A sync flush is complete when input is used up and output space was left over.
        if status.is_err() || (input.is_empty() && out.capacity() > out.len()) {
            break;
        }
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

/// Whether a `101` response's `Sec-WebSocket-Extensions` agrees to permessage-deflate.
pub fn agreed(extensions: Option<&str>) -> bool {
    extensions.is_some_and(|value| {
        value.split(',').any(|element| {
            element.split(';').next().is_some_and(|name| name.trim() == "permessage-deflate")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(data: &[u8], bits: u8) -> Vec<u8> {
        let mut inflater = Decompress::new_with_window_bits(false, bits);
        let mut input = data.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(1 << 20);
        inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("valid deflate");
        out
    }

    #[test]
    fn text_is_deterministic_sized_and_compressible() {
        for size in [16, 1024, 65_536] {
            let a = text(size, 7);
            assert_eq!(a.len(), size);
            assert_eq!(a, text(size, 7));
        }
        assert_ne!(text(1024, 1), text(1024, 2));
        let compressed = compress(&text(65_536, 3));
        let ratio = 65_536.0 / compressed.len() as f64;
        assert!((2.0..8.0).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn compressed_messages_inflate_with_any_window_and_after_each_other() {
        let messages: Vec<Vec<u8>> = (0..4).map(|seed| text(4096, seed)).collect();
        for bits in [9, 10, 15] {
            // One inflater for all of them, as a server with context takeover keeps it.
            let mut inflater = Decompress::new_with_window_bits(false, bits);
            for message in &messages {
                let mut input = compress(message);
                input.extend_from_slice(&[0, 0, 0xff, 0xff]);
                let mut out = Vec::with_capacity(8192);
                inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("valid");
                assert_eq!(&out, message, "window {bits}");
            }
        }
        assert_eq!(inflate(&compress(b""), 15), b"");
    }

    #[test]
    fn reads_the_answer() {
        assert!(agreed(Some("permessage-deflate; client_max_window_bits=10")));
        assert!(agreed(Some("x-other, permessage-deflate")));
        assert!(!agreed(Some("permessage-deflated")));
        assert!(!agreed(None));
    }
}
