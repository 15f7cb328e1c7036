//! Allocation-free steady state: decoding a stream of small messages allocates nothing per
//! message beyond the payload `Bytes` (which share the read buffer's allocation).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use palisade_proto::connection::{Config, Connection, Event};
use palisade_proto::mask::apply_mask;
use palisade_proto::message::Message;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

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
    let _profiler = dhat::Profiler::builder().testing().build();
    const N: usize = 10_000;
    let mut wire = Vec::new();
    for i in 0..N {
        wire.extend(masked_text_frame(format!("message {i:05}").as_bytes(), [1, 2, 3, (i % 251) as u8]));
    }
    let mut conn = Connection::server(Config::default(), Instant::now());
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
