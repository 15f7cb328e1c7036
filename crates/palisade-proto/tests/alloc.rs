//! Allocation-free steady state: decoding a stream of small messages allocates nothing per
//! message beyond the payload `Bytes` (which share the read buffer's allocation). And a
//! permessage-deflate bomb costs at most the message limit plus zlib's fixed state.

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

/// dhat allows one profiler at a time; the tests take turns.
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

    let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
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
