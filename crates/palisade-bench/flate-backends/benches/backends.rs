//! Raw deflate with a sync flush, as permessage-deflate uses it (RFC 7692 §7.2.1), compressing
//! and inflating distinct JSON-like messages with context takeover, level 6, at 15-bit windows
//! and, where the backend lets the window be chosen, 10-bit windows (palisade's lean preset).
//! Throughput is in bytes of uncompressed payload. The group is the backend's name, so the
//! three builds leave their results side by side in `target/criterion/`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flate_backends::{BACKEND, WINDOW_BITS, json_messages};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const SIZES: [usize; 3] = [1024, 16 * 1024, 64 * 1024];

fn compressor(bits: u8) -> Compress {
    let level = Compression::new(6);
    if bits == 15 {
        return Compress::new(level, false);
    }
    #[cfg(any(feature = "zlib-rs", feature = "zlib-ng"))]
    return Compress::new_with_window_bits(level, false, bits);
    #[cfg(not(any(feature = "zlib-rs", feature = "zlib-ng")))]
    unreachable!("{BACKEND} cannot choose the window")
}

fn decompressor(bits: u8) -> Decompress {
    if bits == 15 {
        return Decompress::new(false);
    }
    #[cfg(any(feature = "zlib-rs", feature = "zlib-ng"))]
    return Decompress::new_with_window_bits(false, bits);
    #[cfg(not(any(feature = "zlib-rs", feature = "zlib-ng")))]
    unreachable!("{BACKEND} cannot choose the window")
}

/// Compresses `message` with a sync flush, appending to `out` (trailer included).
fn compress(c: &mut Compress, message: &[u8], out: &mut Vec<u8>) {
    let start = c.total_in();
    loop {
        let done = (c.total_in() - start) as usize;
        c.compress_vec(&message[done..], out, FlushCompress::Sync)
            .expect("compressing cannot fail");
        // The flush is complete once all input is in and it did not fill the buffer.
        if (c.total_in() - start) as usize == message.len() && out.len() < out.capacity() {
            return;
        }
        out.reserve(1024);
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(BACKEND);
    let windows: &[u8] = if WINDOW_BITS { &[15, 10] } else { &[15] };
    for &bits in windows {
        for size in SIZES {
            // About 1 MiB of distinct messages, so none finds a copy of itself in the window.
            let messages = json_messages(size, ((1 << 20) / size).max(16));
            let mut c = compressor(bits);
            let compressed: Vec<Vec<u8>> = messages
                .iter()
                .map(|m| {
                    let mut out = Vec::with_capacity(size + 1024);
                    compress(&mut c, m, &mut out);
                    out
                })
                .collect();
            let wire: usize = compressed.iter().map(Vec::len).sum();
            let plain: usize = messages.iter().map(Vec::len).sum();
            eprintln!(
                "{BACKEND} {bits}-bit window, {size} B messages: compressed to {:.1} %",
                100.0 * wire as f64 / plain as f64
            );
            let mut d = decompressor(bits);
            let mut check = Vec::with_capacity(size);
            d.decompress_vec(&compressed[0], &mut check, FlushDecompress::Sync).expect("valid");
            assert_eq!(check, messages[0], "inflating restores the message");

            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new(format!("compress-{bits}"), size), |b| {
                let mut c = compressor(bits);
                let mut out = Vec::with_capacity(size + 1024);
                let mut next = messages.iter().cycle();
                b.iter(|| {
                    out.clear();
                    compress(&mut c, black_box(next.next().expect("not empty")), &mut out);
                    out.len()
                })
            });
            group.bench_function(BenchmarkId::new(format!("inflate-{bits}"), size), |b| {
                let mut d = decompressor(bits);
                let mut out = Vec::with_capacity(size);
                let mut next = compressed.iter().cycle();
                b.iter(|| {
                    out.clear();
                    d.decompress_vec(
                        black_box(next.next().expect("not empty")),
                        &mut out,
                        FlushDecompress::Sync,
                    )
                    .expect("valid data");
                    out.len()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
