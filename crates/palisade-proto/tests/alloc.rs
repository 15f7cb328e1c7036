//! Allocation-free steady state: decoding a stream of small messages allocates nothing per
//! message beyond the payload `Bytes` (which share the read buffer's allocation). A
//! permessage-deflate bomb costs at most the message limit plus zlib's fixed state. And an idle
//! connection with context takeover holds its windows' bytes, not zlib's streams.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Instant;

use flate2::{Compress, Compression, FlushCompress};
use palisade_proto::Role;
use palisade_proto::connection::{Connection, Event, ProtocolConfig};
use palisade_proto::deflate::{Deflate, DeflateConfig, DeflateParams};
use palisade_proto::mask::apply_mask;
use palisade_proto::message::Message;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// dhat allows one profiler at a time, and counts every thread's allocations while one runs:
/// the tests take turns, from their first allocation to their last.
static PROFILER: Mutex<()> = Mutex::new(());

fn masked_text_frame(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    let start = f.len();
    f.extend_from_slice(payload);
    apply_mask(&mut f[start..], key, 0);
    f
}

#[test]
fn reading_small_messages_allocates_nothing_per_message() {
    let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    let _profiler = dhat::Profiler::builder().testing().build();
    const N: usize = 10_000;
    let mut wire = Vec::new();
    for i in 0..N {
        wire.extend(masked_text_frame(
            format!("message {i:05}").as_bytes(),
            [1, 2, 3, (i % 251) as u8],
        ));
    }
    let mut conn = Connection::server(ProtocolConfig::default(), Instant::now());
    conn.read_buffer().reserve(wire.len());
    // Warm up: the first message promotes the read buffer to a shared one (one allocation).
    let first = 2 + 4 + "message 00000".len();
    conn.handle_bytes(&wire[..first]);
    assert!(matches!(conn.poll_event(), Some(Ok(Event::Message(_)))));

    let before = dhat::HeapStats::get();
    conn.handle_bytes(&wire[first..]);
    let mut received = 0;
    while let Some(event) = conn.poll_event() {
        let Ok(Event::Message(Message::Text(t))) = event else { panic!("{event:?}") };
        assert!(t.starts_with("message "));
        received += 1;
    }
    let after = dhat::HeapStats::get();
    assert_eq!(received, N - 1);
    let allocations = after.total_blocks - before.total_blocks;
    assert!(allocations == 0, "{allocations} allocations for {} messages", N - 1);
}

#[test]
fn deflate_bomb_heap_stays_near_the_limit() {
    let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    const LIMIT: usize = 1 << 20;
    // 10 MB of zeros, deflated to about 10 KB, in one masked compressed frame.
    let zeros = vec![0u8; 10_000_000];
    let mut c = Compress::new(Compression::best(), false);
    let mut bomb = Vec::with_capacity(64 * 1024);
    c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync).unwrap();
    drop(zeros);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    bomb.truncate(bomb.len() - 4);
    let key = [9, 8, 7, 6];
    let mut wire = vec![0xC2, 0x80 | 126];
    wire.extend_from_slice(&(bomb.len() as u16).to_be_bytes());
    wire.extend_from_slice(&key);
    let start = wire.len();
    wire.extend_from_slice(&bomb);
    apply_mask(&mut wire[start..], key, 0);

    let _profiler = dhat::Profiler::builder().testing().build();
    let mut conn =
        Connection::server(ProtocolConfig::default().with_max_message_size(LIMIT), Instant::now());
    conn.set_extension(Box::new(Deflate::new(
        Role::Server,
        DeflateParams::default(),
        &DeflateConfig::default(),
    )));
    conn.handle_bytes(&wire);
    let err = conn.poll_event().unwrap().unwrap_err();
    assert_eq!(err.close_code().map(|c| c.0), Some(1009), "{err:?}");
    let peak = dhat::HeapStats::get().max_bytes;
    // The inflated prefix (at most LIMIT, plus half of it while the buffer last doubled), the
    // frame read, zlib's 32 KiB window and tables: nowhere near the 10 MB inflated.
    assert!(peak < LIMIT * 3 / 2 + 256 * 1024, "peak heap {peak} bytes for a {LIMIT}-byte limit");
    eprintln!("bomb: peak heap {peak} bytes for a {LIMIT}-byte limit");
}

/// A masked compressed text frame carrying `payload`, compressed on its own (as a peer's first
/// message, or any message of a peer without context takeover, is).
fn masked_compressed_frame(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut data = Vec::with_capacity(payload.len() + 1024);
    c.compress_vec(payload, &mut data, FlushCompress::Sync).unwrap();
    assert!(data.ends_with(&[0, 0, 0xff, 0xff]));
    data.truncate(data.len() - 4);
    let mut f = vec![0xC1, 0x80 | 126];
    f.extend_from_slice(&(data.len() as u16).to_be_bytes());
    f.extend_from_slice(&key);
    let start = f.len();
    f.extend_from_slice(&data);
    apply_mask(&mut f[start..], key, 0);
    f
}

/// Text that compresses about 3:1, different for each `seed`.
fn chat(seed: usize, len: usize) -> String {
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "golf", "kilo", "lima", "oscar"];
    let mut out = String::with_capacity(len + 64);
    let mut i = seed;
    while out.len() < len {
        i = i.wrapping_mul(2_654_435_761).wrapping_add(97) % 1_000_003;
        out.push_str(&format!(
            "{{\"user\":\"{}\",\"seq\":{i},\"text\":\"{}\"}},",
            words[i % 9],
            words[(i / 9) % 9]
        ));
    }
    out.truncate(len);
    out
}

/// Heap bytes each of `n` server connections holds after `messages` 1 KiB compressed messages
/// each way, beside the same connections without the extension (`config: None`).
fn heap_per_connection(config: Option<&DeflateConfig>, n: usize, messages: usize) -> usize {
    let open = |config: Option<&DeflateConfig>| {
        let mut conn = Connection::server(ProtocolConfig::default(), Instant::now());
        if let Some(config) = config {
            conn.set_extension(Box::new(Deflate::new(
                Role::Server,
                DeflateParams::default(),
                config,
            )));
        }
        for m in 0..messages {
            let text = chat(m, 1024);
            let frame = if config.is_some() {
                masked_compressed_frame(text.as_bytes(), [1, 2, 3, m as u8])
            } else {
                let mut f = vec![0x81, 0x80 | 126];
                f.extend_from_slice(&(text.len() as u16).to_be_bytes());
                f.extend_from_slice(&[0; 4]);
                f.extend_from_slice(text.as_bytes());
                f
            };
            conn.handle_bytes(&frame);
            let Some(Ok(Event::Message(got))) = conn.poll_event() else { panic!("no message") };
            // The echo, compressed with context takeover.
            conn.send(&got).unwrap();
            while conn.poll_transmit().is_some() {}
        }
        conn
    };
    // The first connections fill this thread's compressors (16 at most), which all of them
    // share: they are not counted per connection.
    let warm: Vec<Connection> = (0..20).map(|_| open(config)).collect();
    let before = dhat::HeapStats::get().curr_bytes;
    let held: Vec<Connection> = (0..n).map(|_| open(config)).collect();
    let after = dhat::HeapStats::get().curr_bytes;
    drop((warm, held));
    (after - before) / n
}

#[test]
fn idle_takeover_connection_holds_its_windows_not_zlib_streams() {
    const KIB: usize = 1024;
    let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    let _profiler = dhat::Profiler::builder().testing().build();
    let default = DeflateConfig::default();
    let retained = DeflateConfig::default().with_retained_streams(true);
    assert!(!default.retain_streams);

    let plain = heap_per_connection(None, 100, 1);
    let one = heap_per_connection(Some(&default), 100, 1);
    let full = heap_per_connection(Some(&default), 100, 40);
    let kept = heap_per_connection(Some(&retained), 20, 1);
    eprintln!(
        "heap per connection: {plain} B uncompressed; deflate after one message {one} B, \
         after 40 {full} B; with retained streams {kept} B"
    );
    // (An uncompressed connection may hold more than a compressed one: its larger frames leave
    // it a larger read buffer. So the figures are compared with each other.)
    // After one message each way: those bytes and the connection, no zlib stream (a
    // decompressor alone is about 40 KiB).
    assert!(one < 16 * KIB, "{one} B after one message");
    // However much has passed, the windows add at most their 2 × 32 KiB.
    assert!(full <= one + 64 * KIB, "{full} B after 40 messages, {one} B after one");
    assert!(full > one + 60 * KIB, "the windows fill: {full} B");
    // Keeping zlib's streams crosses the 64 KiB per connection this mode stays under.
    assert!(kept > one + 256 * KIB, "retained streams: {kept} B");
}
