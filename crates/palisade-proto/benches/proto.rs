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
//!
//! Naming, which `cargo xtask bench --micro` relies on to write `docs/src/bench/micro.md`: in
//! each group, palisade's own measurement is the function `palisade` (variants of it start
//! with `palisade_`), every other function is a contender compared with it, and the parameter
//! is the row of the table (`16`, or `compress-1024` when one group measures two operations).

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

        group.bench_function(BenchmarkId::new("palisade", size), |b| {
            b.iter(|| utf8::validate(black_box(&text)));
        });
        group.bench_function(BenchmarkId::new("palisade_incremental_4k", size), |b| {
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
                let config = palisade_proto::ProtocolConfig::default()
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

/// Message sizes for frame encoding: as for decoding.
const ENCODE_SIZES: [usize; 3] = FRAME_SIZES;

/// Writing one text message as a frame, what a user pays per message sent: palisade's
/// `Connection::send` and `poll_transmit` until the queue is empty, against tungstenite's
/// `WebSocket::send` into a writer that discards (its write buffer, header, mask, flush) and its
/// lower-level `Frame::format` into a reused `Vec`, and `memcpy` of the payload.
///
/// Rows are `server-SIZE` (no mask: a server may hand a large payload to the transport
/// uncopied) and `client-SIZE` (the payload is copied and masked with a fresh key per frame).
/// As a client, tungstenite draws each key from `rand`'s thread RNG, palisade from the source
/// it is given (a counter here; the runtime's RNG costs a few nanoseconds more), and
/// `Frame::format` copies a masked payload into a fresh `Vec` before writing it.
fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for role in [palisade_proto::Role::Server, palisade_proto::Role::Client] {
        let name = match role {
            palisade_proto::Role::Server => "server",
            palisade_proto::Role::Client => "client",
        };
        for size in ENCODE_SIZES {
            let row = format!("{name}-{size}");
            let text = String::from_utf8(mixed_text(size)).expect("mixed_text is valid UTF-8");
            group.throughput(Throughput::Bytes(size as u64));

            let message = palisade_proto::Message::text(text.as_str());
            group.bench_function(BenchmarkId::new("palisade", &row), |b| {
                let config = palisade_proto::ProtocolConfig::default()
                    .with_keepalive(None, None)
                    .with_max_message_size(1 << 24)
                    .with_max_frame_size(1 << 24);
                let now = std::time::Instant::now();
                let mut conn = match role {
                    palisade_proto::Role::Server => palisade_proto::Connection::server(config, now),
                    palisade_proto::Role::Client => {
                        // A cheap deterministic key source; the runtime injects an RNG.
                        let mut counter = 0u32;
                        palisade_proto::Connection::client(
                            config,
                            move || {
                                counter = counter.wrapping_add(0x9e37_79b9);
                                counter.to_le_bytes()
                            },
                            now,
                        )
                    }
                };
                b.iter(|| {
                    conn.send(black_box(&message)).expect("the connection is open");
                    let mut written = 0;
                    while let Some(chunk) = conn.poll_transmit() {
                        written += black_box(chunk).len();
                    }
                    written
                })
            });

            let tungstenite_message = tungstenite::Message::text(text.as_str());
            group.bench_function(BenchmarkId::new("tungstenite", &row), |b| {
                let tungstenite_role = match role {
                    palisade_proto::Role::Server => tungstenite::protocol::Role::Server,
                    palisade_proto::Role::Client => tungstenite::protocol::Role::Client,
                };
                let mut ws = tungstenite::WebSocket::from_raw_socket(
                    Replay(std::io::Cursor::new(&[][..])),
                    tungstenite_role,
                    None,
                );
                b.iter(|| ws.send(black_box(tungstenite_message.clone())).expect("a sink"))
            });

            let payload = tungstenite::Bytes::from(text.clone().into_bytes());
            let mask = match role {
                palisade_proto::Role::Server => None,
                palisade_proto::Role::Client => Some([0x37, 0xfa, 0x21, 0x3d]),
            };
            group.bench_function(BenchmarkId::new("tungstenite_frame", &row), |b| {
                use tungstenite::protocol::frame::{Frame, coding};
                let mut out = Vec::with_capacity(size + 14);
                b.iter(|| {
                    out.clear();
                    let mut frame = Frame::message(
                        black_box(&payload).clone(),
                        coding::OpCode::Data(coding::Data::Text),
                        true,
                    );
                    frame.header_mut().mask = mask;
                    frame.format(&mut out).expect("writing to a Vec cannot fail");
                    out.len()
                })
            });

            memcpy(&mut group, &row, text.as_bytes());
        }
    }
    group.finish();
}

/// `memcpy` of `bytes` into a buffer allocated once, the physical limit beside each operation.
fn memcpy(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    row: &str,
    bytes: &[u8],
) {
    let mut target = vec![0u8; bytes.len()];
    group.bench_function(BenchmarkId::new("memcpy", row), |b| {
        b.iter(|| target.copy_from_slice(black_box(bytes)))
    });
}

/// An opening handshake as Chrome sends it (531 bytes), offering permessage-deflate.
const BROWSER_REQUEST: &str = "GET /chat?room=general HTTP/1.1\r\n\
    Host: chat.example.com\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
    Chrome/131.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: https://chat.example.com\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    \r\n";

/// Handshakes per second. Rows:
///
/// - `server-parse`: find the end of the head, parse it and validate it as an upgrade
///   (palisade: `HeadReader` then `UpgradeRequest::parse`, as palisade-server does; tungstenite:
///   its `TryParse` for the request, which checks the method and version only).
/// - `server-accept`: the same plus building and serializing the 101 response (tungstenite
///   checks the upgrade headers here, in `create_response`).
/// - `client-parse`: a client reading the 101 answer (palisade validates it against its key and
///   offers; tungstenite's validation is private, so only its parse is measured).
///
/// `httparse` alone, into a fixed header array, is the floor; `memcpy` of the head the limit.
fn bench_handshake(c: &mut Criterion) {
    use palisade_proto::handshake::{
        AcceptOptions, ClientHandshake, HeadLimits, HeadReader, ResponseOutcome, UpgradeRequest,
        parse_request, write_response,
    };
    use tungstenite::handshake::machine::TryParse;

    let limits = HeadLimits::default();
    let request = BROWSER_REQUEST.as_bytes();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));

    let palisade_parse = |request: &[u8]| {
        let mut reader = HeadReader::new(limits);
        let len = reader.feed(request).expect("within limits").expect("a complete head");
        UpgradeRequest::parse(&request[..len], &limits).expect("a valid upgrade")
    };
    let tungstenite_parse = |request: &[u8]| {
        let (_, parsed) = tungstenite::handshake::server::Request::try_parse(request)
            .expect("a valid request")
            .expect("a complete head");
        parsed
    };
    let httparse_request = |b: &mut criterion::Bencher<'_>| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            parsed.parse(black_box(request)).expect("a valid request").is_complete()
        })
    };

    group.bench_function(BenchmarkId::new("palisade", "server-parse"), |b| {
        b.iter(|| palisade_parse(black_box(request)))
    });
    group.bench_function(BenchmarkId::new("tungstenite", "server-parse"), |b| {
        b.iter(|| tungstenite_parse(black_box(request)))
    });
    group.bench_function(BenchmarkId::new("httparse", "server-parse"), httparse_request);
    // Where palisade's time goes: finding the end of the head, then parsing it into an
    // `http::Request` (which runs the head reader again, then httparse, then builds the
    // `HeaderMap`); the rest of `palisade` is the upgrade validation.
    group.bench_function(BenchmarkId::new("palisade_head_reader", "server-parse"), |b| {
        b.iter(|| HeadReader::new(limits).feed(black_box(request)).expect("within limits"))
    });
    group.bench_function(BenchmarkId::new("palisade_parse_request", "server-parse"), |b| {
        b.iter(|| parse_request(black_box(request), &limits).expect("a valid request"))
    });
    memcpy(&mut group, "server-parse", request);

    group.bench_function(BenchmarkId::new("palisade", "server-accept"), |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let upgrade = palisade_parse(black_box(request));
            let response = upgrade.accept(AcceptOptions::default()).expect("nothing to refuse");
            out.clear();
            write_response(&response, &[], &mut out);
            out.len()
        })
    });
    group.bench_function(BenchmarkId::new("tungstenite", "server-accept"), |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let parsed = tungstenite_parse(black_box(request));
            let response =
                tungstenite::handshake::server::create_response(&parsed).expect("a valid upgrade");
            out.clear();
            tungstenite::handshake::server::write_response(&mut out, &response)
                .expect("writing to a Vec cannot fail");
            out.len()
        })
    });
    group.bench_function(BenchmarkId::new("httparse", "server-accept"), httparse_request);
    memcpy(&mut group, "server-accept", request);

    let uri: http::Uri = "ws://chat.example.com/chat?room=general".parse().expect("a valid URI");
    let client = ClientHandshake::new(&uri, *b"the sample nonce")
        .and_then(|h| h.with_extensions("permessage-deflate; client_max_window_bits"))
        .expect("a valid client handshake");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n\
         \r\n",
        client.key().expect("an HTTP/1.1 handshake has a key").accept()
    );
    let response = response.as_bytes();
    group.bench_function(BenchmarkId::new("palisade", "client-parse"), |b| {
        b.iter(|| {
            let mut reader = HeadReader::new(limits);
            let len = reader.feed(black_box(response)).expect("within limits").expect("complete");
            match client.read_response(&response[..len], &limits).expect("a valid 101") {
                ResponseOutcome::Upgraded(negotiated) => negotiated,
                ResponseOutcome::NotUpgraded(_) => unreachable!("the response is a 101"),
            }
        })
    });
    group.bench_function(BenchmarkId::new("tungstenite", "client-parse"), |b| {
        b.iter(|| {
            tungstenite::handshake::client::Response::try_parse(black_box(response))
                .expect("a valid response")
                .expect("a complete head")
        })
    });
    group.bench_function(BenchmarkId::new("httparse", "client-parse"), |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            parsed.parse(black_box(response)).expect("a valid response").is_complete()
        })
    });
    memcpy(&mut group, "client-parse", response);
    group.finish();
}

/// Message sizes for permessage-deflate.
const DEFLATE_SIZES: [usize; 3] = [1024, 16 * 1024, 64 * 1024];

/// permessage-deflate (RFC 7692) with the default parameters (context takeover, 15-bit windows,
/// level 1), throughput in bytes of *uncompressed* payload. Rows are `compress-SIZE` and
/// `inflate-SIZE`. `palisade` keeps only the windows' bytes between messages and rebuilds zlib's
/// streams from them for each message; `palisade_retained` keeps the streams
/// (`DeflateConfig::with_retained_streams`); `palisade_64` is 64 default codecs compressing in
/// turn, more than a thread keeps compressors for, so that every message rebuilds its stream
/// from the window's bytes; `palisade_lean` is the codec under
/// `DeflateConfig::lean` (no context takeover, 10-bit windows), which starts every message
/// from a reset compressor and a new decompressor.
///
/// palisade's codec is driven through the `Extension` hook exactly as `Connection::send` and
/// the receive path call it (a fresh output buffer per message); the contender is flate2 (the
/// same zlib-rs backend) used directly for raw deflate with a sync flush into a reused `Vec`,
/// so the difference is what palisade's buffer handling and checks cost. tungstenite 0.27 has
/// no permessage-deflate at all (no feature, no extension hook), so it has no column here.
///
/// The messages are distinct JSON-like records cycled in order, about 1 MiB of them, so that
/// with context takeover no message finds an exact copy of itself in the 32 KiB window, which
/// would flatter every contender.
fn bench_deflate(c: &mut Criterion) {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use palisade_proto::Extension;
    use palisade_proto::deflate::{Deflate, DeflateConfig, DeflateParams};

    let config = DeflateConfig::default();
    let codec = |role| Deflate::new(role, DeflateParams::default(), &config);
    let retained = DeflateConfig::default().with_retained_streams(true);
    let retained_codec = |role| Deflate::new(role, DeflateParams::default(), &retained);
    let mut group = c.benchmark_group("deflate");
    for size in DEFLATE_SIZES {
        let messages = json_messages(size, ((1 << 20) / size).max(16));
        group.throughput(Throughput::Bytes(size as u64));

        // The wire payloads, compressed in order by a server (trailer removed, RFC 7692
        // §7.2.1), and the same with the trailer put back for zlib.
        let mut sender = codec(palisade_proto::Role::Server);
        let compressed: Vec<bytes::BytesMut> = messages
            .iter()
            .map(|m| {
                let mut out = bytes::BytesMut::new();
                let rsv = sender.encode(m, &mut out).expect("compressing cannot fail");
                assert_eq!(rsv, Some(palisade_proto::frame::RSV1), "JSON text compresses");
                out
            })
            .collect();
        let with_tail: Vec<Vec<u8>> =
            compressed.iter().map(|c| [&c[..], &[0x00, 0x00, 0xff, 0xff]].concat()).collect();
        let wire: usize = compressed.iter().map(|c| c.len()).sum();
        let plain: usize = messages.iter().map(Vec::len).sum();
        eprintln!(
            "deflate {size}: compressed to {:.1} % of the text",
            100.0 * wire as f64 / plain as f64
        );

        // The lean preset: no context takeover, 10-bit windows, so zlib's state is built and
        // dropped for every message.
        let lean = DeflateConfig::lean();
        let lean_params = DeflateConfig::lean()
            .accept_offer(&lean.offer())
            .expect("the lean offer is acceptable to a lean server")
            .params;
        let lean_codec = |role| Deflate::new(role, lean_params, &lean);
        let mut lean_sender = lean_codec(palisade_proto::Role::Server);
        let compressed_lean: Vec<bytes::BytesMut> = messages
            .iter()
            .map(|m| {
                let mut out = bytes::BytesMut::new();
                let rsv = lean_sender.encode(m, &mut out).expect("compressing cannot fail");
                assert_eq!(rsv, Some(palisade_proto::frame::RSV1), "JSON text compresses");
                out
            })
            .collect();

        let row = format!("compress-{size}");
        group.bench_function(BenchmarkId::new("palisade_lean", &row), |b| {
            let mut sender = lean_codec(palisade_proto::Role::Server);
            let mut next = messages.iter().cycle();
            b.iter(|| {
                let message = next.next().expect("cycling a non-empty list");
                let mut out = bytes::BytesMut::new();
                sender.encode(black_box(message), &mut out).expect("compressing cannot fail");
                out
            })
        });
        group.bench_function(BenchmarkId::new("palisade", &row), |b| {
            let mut sender = codec(palisade_proto::Role::Server);
            let mut next = messages.iter().cycle();
            b.iter(|| {
                let message = next.next().expect("cycling a non-empty list");
                let mut out = bytes::BytesMut::new();
                sender.encode(black_box(message), &mut out).expect("compressing cannot fail");
                out
            })
        });
        group.bench_function(BenchmarkId::new("palisade_64", &row), |b| {
            // 64 connections sending in turn: more than a thread keeps compressors for, so each
            // message rebuilds its stream from the window's bytes.
            let mut senders: Vec<Deflate> =
                (0..64).map(|_| codec(palisade_proto::Role::Server)).collect();
            let mut turn = (0..senders.len()).cycle();
            let mut next = messages.iter().cycle();
            b.iter(|| {
                let message = next.next().expect("cycling a non-empty list");
                let sender = &mut senders[turn.next().expect("cycling a non-empty range")];
                let mut out = bytes::BytesMut::new();
                sender.encode(black_box(message), &mut out).expect("compressing cannot fail");
                out
            })
        });
        group.bench_function(BenchmarkId::new("palisade_retained", &row), |b| {
            let mut sender = retained_codec(palisade_proto::Role::Server);
            let mut next = messages.iter().cycle();
            b.iter(|| {
                let message = next.next().expect("cycling a non-empty list");
                let mut out = bytes::BytesMut::new();
                sender.encode(black_box(message), &mut out).expect("compressing cannot fail");
                out
            })
        });
        group.bench_function(BenchmarkId::new("flate2", &row), |b| {
            // The same level as palisade's default, so that the codec is what differs.
            let level = Compression::new(config.level);
            let mut compress = Compress::new_with_window_bits(level, false, 15);
            let mut out = Vec::with_capacity(size + 1024);
            let mut next = messages.iter().cycle();
            b.iter(|| {
                let message = black_box(next.next().expect("cycling a non-empty list"));
                out.clear();
                let start = compress.total_in();
                loop {
                    let done = (compress.total_in() - start) as usize;
                    compress
                        .compress_vec(&message[done..], &mut out, FlushCompress::Sync)
                        .expect("compressing cannot fail");
                    // Complete once all input is in and the flush did not fill the buffer.
                    if (compress.total_in() - start) as usize == message.len()
                        && out.len() < out.capacity()
                    {
                        break;
                    }
                    out.reserve(1024);
                }
                out.len()
            })
        });
        memcpy(&mut group, &row, &messages[0]);

        let row = format!("inflate-{size}");
        group.bench_function(BenchmarkId::new("palisade_lean", &row), |b| {
            let mut receiver = lean_codec(palisade_proto::Role::Client);
            let mut next = compressed_lean.iter().cycle();
            b.iter(|| {
                let payload = next.next().expect("cycling a non-empty list");
                let mut out = bytes::BytesMut::new();
                receiver.decode(black_box(payload), true, &mut out, 1 << 24).expect("valid data");
                out
            })
        });
        group.bench_function(BenchmarkId::new("palisade", &row), |b| {
            let mut receiver = codec(palisade_proto::Role::Client);
            let mut check = bytes::BytesMut::new();
            receiver.decode(&compressed[0], true, &mut check, 1 << 24).expect("valid data");
            assert_eq!(check[..], messages[0][..], "inflating restores the message");
            let mut receiver = codec(palisade_proto::Role::Client);
            let mut next = compressed.iter().cycle();
            b.iter(|| {
                let payload = next.next().expect("cycling a non-empty list");
                let mut out = bytes::BytesMut::new();
                receiver.decode(black_box(payload), true, &mut out, 1 << 24).expect("valid data");
                out
            })
        });
        group.bench_function(BenchmarkId::new("palisade_retained", &row), |b| {
            let mut receiver = retained_codec(palisade_proto::Role::Client);
            let mut next = compressed.iter().cycle();
            b.iter(|| {
                let payload = next.next().expect("cycling a non-empty list");
                let mut out = bytes::BytesMut::new();
                receiver.decode(black_box(payload), true, &mut out, 1 << 24).expect("valid data");
                out
            })
        });
        group.bench_function(BenchmarkId::new("flate2", &row), |b| {
            let mut decompress = Decompress::new_with_window_bits(false, 15);
            let mut out = Vec::with_capacity(size);
            decompress
                .decompress_vec(&with_tail[0], &mut out, FlushDecompress::Sync)
                .expect("valid data");
            assert_eq!(out, messages[0], "inflating restores the message");
            let mut decompress = Decompress::new_with_window_bits(false, 15);
            let mut next = with_tail.iter().cycle();
            b.iter(|| {
                let payload = next.next().expect("cycling a non-empty list");
                out.clear();
                decompress
                    .decompress_vec(black_box(payload), &mut out, FlushDecompress::Sync)
                    .expect("valid data");
                out.len()
            })
        });
        memcpy(&mut group, &row, &messages[0]);
    }
    group.finish();
}

/// `count` distinct messages of exactly `size` bytes of JSON-like text: arrays of chat events
/// built from a small vocabulary by a fixed pseudo-random sequence, so every run compresses the
/// same bytes. (The last record is cut off at `size`; nothing here parses it.)
fn json_messages(size: usize, count: usize) -> Vec<Vec<u8>> {
    const USERS: [&str; 8] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    const ROOMS: [&str; 4] = ["general", "random", "support", "release-planning"];
    const EVENTS: [&str; 4] = ["message", "typing", "presence", "reaction"];
    const WORDS: [&str; 24] = [
        "the", "build", "is", "green", "again", "after", "merging", "deploy", "tonight", "review",
        "please", "latency", "looks", "fine", "on", "staging", "ship", "it", "thanks", "for",
        "checking", "logs", "broken", "fixed",
    ];
    // xorshift64: deterministic and good enough to pick words.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut id = 100_000u64;
    let mut ts = 1_763_760_000_000u64;
    (0..count)
        .map(|_| {
            let mut text = String::with_capacity(size + 256);
            text.push('[');
            while text.len() < size {
                id += 1 + next(3) as u64;
                ts += next(5_000) as u64;
                let words: Vec<&str> =
                    (0..3 + next(10)).map(|_| WORDS[next(WORDS.len())]).collect();
                text.push_str(&format!(
                    "{{\"id\":{id},\"ts\":{ts},\"user\":\"{}\",\"room\":\"{}\",\"event\":\"{}\",\
                     \"text\":\"{}\",\"seen\":{}}},",
                    USERS[next(USERS.len())],
                    ROOMS[next(ROOMS.len())],
                    EVENTS[next(EVENTS.len())],
                    words.join(" "),
                    next(2) == 1,
                ));
            }
            text.truncate(size);
            text.into_bytes()
        })
        .collect()
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
            bench_encode,
            bench_handshake,
            bench_deflate,
    }
}
criterion_main!(groups::benches);
