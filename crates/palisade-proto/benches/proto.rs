//! Benchmarks of palisade-proto's hot paths, with other crates' equivalents and the physical
//! limit beside them.
//!
//! Run all of them, or one group by name:
//!
//! ```text
//! cargo bench -p palisade-proto --bench proto
//! cargo bench -p palisade-proto --bench proto -- --warm-up-time 1 --measurement-time 3 'mask|utf8|frames'
//! ```
//!
//! Each group is one `fn bench_<group>(c: &mut Criterion)` listed in `criterion_group!` at the
//! bottom; to add one, write the function and add its name to that list.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use palisade_proto::mask::{apply_mask, apply_mask_plain};
use palisade_proto::utf8::{self, Utf8Validator};

/// Payload sizes for masking: a small chat message, a typical read, a large frame.
const MASK_SIZES: [usize; 3] = [125, 4 * 1024, 64 * 1024];

/// Where the payload starts relative to a 32-byte boundary: 6 is where it lands after the
/// 2-byte header and 4-byte key of a masked frame of up to 125 bytes (RFC 6455 §5.2), if the
/// read buffer itself is aligned. Aligned data would flatter every contender.
const MASK_MISALIGNMENT: usize = 6;

/// Message sizes for UTF-8 validation.
const UTF8_SIZES: [usize; 3] = [16, 1024, 64 * 1024];

/// How the incremental validator gets its input: reads of this size, cut anywhere.
const UTF8_PIECE: usize = 4 * 1024;

fn bench_mask(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("mask");
    for size in MASK_SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut backing: Vec<u8> = (0..size + 64).map(|i| i as u8).collect();
        let start = backing.as_ptr().addr().wrapping_neg() % 32 + MASK_MISALIGNMENT;
        let payload = &mut backing[start..start + size];

        group.bench_function(BenchmarkId::new("palisade", size), |b| {
            b.iter(|| apply_mask(black_box(&mut *payload), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("plain_loop", size), |b| {
            b.iter(|| apply_mask_plain(black_box(&mut *payload), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("fastwebsockets", size), |b| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut *payload), black_box(key)));
        });
        // tungstenite 0.27 masks in `tungstenite::protocol::frame::mask::apply_mask`, but the
        // `mask` module is private and nothing re-exports it, so it cannot be measured alone.

        // The physical limit: copying the same number of bytes once (read + write, like XOR
        // in place).
        let source = payload.to_vec();
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| payload.copy_from_slice(black_box(&source)));
        });
    }
    group.finish();
}

fn bench_utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in UTF8_SIZES {
        let text = mixed_text(size);
        group.throughput(Throughput::Bytes(text.len() as u64));

        group.bench_function(BenchmarkId::new("validate", size), |b| {
            b.iter(|| utf8::validate(black_box(&text)));
        });
        group.bench_function(BenchmarkId::new("incremental_4k_pieces", size), |b| {
            let mut validator = Utf8Validator::new();
            b.iter(|| -> Result<(), u64> {
                validator.reset();
                for piece in black_box(&text).chunks(UTF8_PIECE) {
                    validator.feed(piece)?;
                }
                validator.finish()
            });
        });
        group.bench_function(BenchmarkId::new("std", size), |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).is_ok());
        });
    }
    group.finish();
}

/// Exactly `size` bytes of valid UTF-8, mostly ASCII with 2-, 3- and 4-byte characters mixed
/// in, like chat text in several languages; padded with ASCII where a character would not fit.
fn mixed_text(size: usize) -> Vec<u8> {
    const SAMPLE: &str = "κόσμε, Grüße 日本語のテキスト 😀 the quick brown fox; ";
    let mut text = String::with_capacity(size);
    for ch in SAMPLE.chars().cycle() {
        if text.len() + ch.len_utf8() > size {
            break;
        }
        text.push(ch);
    }
    while text.len() < size {
        text.push('.');
    }
    text.into_bytes()
}

/// Message sizes for frame decoding: a tiny event, a typical JSON message, a large blob.
const FRAME_SIZES: [usize; 3] = [16, 1024, 64 * 1024];

/// Masked text frames, as a client sends them, totalling about 1 MiB (at least 16 frames).
fn client_frames(size: usize) -> (Vec<u8>, usize) {
    let count = ((1 << 20) / size).max(16);
    let payload = mixed_text(size);
    let mut wire = Vec::with_capacity(count * (size + 14));
    for i in 0..count {
        let key = [0x11, 0x22, 0x33, i as u8];
        palisade_proto::frame::FrameHeader {
            fin: true,
            rsv: 0,
            opcode: palisade_proto::frame::OpCode::Text,
            mask: Some(key),
            payload_len: size as u64,
        }
        .encode(&mut wire);
        let start = wire.len();
        wire.extend_from_slice(&payload);
        apply_mask(&mut wire[start..], key, 0);
    }
    (wire, count)
}

/// An in-memory stream for tungstenite: reads the prepared frames, discards writes.
struct Replay<'a>(std::io::Cursor<&'a [u8]>);

impl std::io::Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Frame decode, unmasking and UTF-8 validation of whole text messages, server side: messages
/// per second, palisade's sans-I/O connection against tungstenite's `WebSocket` over the same
/// bytes in memory.
fn bench_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frames");
    for size in FRAME_SIZES {
        let (wire, count) = client_frames(size);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("palisade", size), &wire, |b, wire| {
            b.iter(|| {
                let config = palisade_proto::Config::default()
                    .with_keepalive(None, None)
                    .with_max_message_size(1 << 24)
                    .with_max_frame_size(1 << 24);
                let mut conn =
                    palisade_proto::Connection::server(config, std::time::Instant::now());
                conn.handle_bytes(wire);
                let mut n = 0;
                while let Some(event) = conn.poll_event() {
                    black_box(event.is_ok());
                    n += 1;
                }
                assert_eq!(n, count);
            })
        });
        group.bench_with_input(BenchmarkId::new("tungstenite", size), &wire, |b, wire| {
            b.iter(|| {
                let mut ws = tungstenite::WebSocket::from_raw_socket(
                    Replay(std::io::Cursor::new(wire.as_slice())),
                    tungstenite::protocol::Role::Server,
                    None,
                );
                let mut n = 0;
                while let Ok(message) = ws.read() {
                    black_box(message.is_text());
                    n += 1;
                }
                assert_eq!(n, count);
            })
        });
    }
    group.finish();
}

// The list of groups: one `bench_*` function each. To add a group (e.g. `bench_frames` for
// frame decoding), write its function above and add its name to `targets`.
// (`criterion_group!` generates an undocumented `pub fn`, hence the `allow`.)
#[allow(missing_docs)]
mod groups {
    use super::*;

    criterion_group! {
        name = benches;
        config = Criterion::default();
        targets =
            bench_mask,
            bench_utf8,
            bench_frames,
    }
}
criterion_main!(groups::benches);
