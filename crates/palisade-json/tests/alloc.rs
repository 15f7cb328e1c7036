//! Allocations per message through the envelope, against serde_json alone into the same type,
//! counted with dhat: the figures the JSON chapter and the benchmarks state. The bounds are the
//! counts measured when this was written; a change that allocates more per message fails here.

#![allow(clippy::unwrap_used)]

use palisade_json::wire::{self, Inbound};
use palisade_json::{Codec, Limits};
use palisade_proto::Message;
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Event {
    Echo(Echo),
}

#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    seq: u64,
    text: String,
}

fn frame(size: usize) -> String {
    let head = r#"{"event":"echo","data":{"seq":1,"text":""#;
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let text: String = (0..pad).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    format!("{head}{text}{tail}")
}

/// Allocations (blocks, bytes) made by `work`, run `n` times, per run: the least of three
/// rounds. dhat counts the whole process, and the test harness's other threads allocate now and
/// then (a slow-test notice on a loaded machine, say); the quietest round is `work`'s own count.
fn per_run(n: u64, mut work: impl FnMut()) -> (f64, f64) {
    let mut least = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let before = dhat::HeapStats::get();
        for _ in 0..n {
            work();
        }
        let after = dhat::HeapStats::get();
        let blocks = (after.total_blocks - before.total_blocks) as f64 / n as f64;
        let bytes = (after.total_bytes - before.total_bytes) as f64 / n as f64;
        if blocks < least.0 {
            least = (blocks, bytes);
        }
    }
    least
}

#[test]
fn allocations_per_message_through_the_envelope() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let limits = Limits::default();
    // Decoding allocates what the typed value owns (the text's `String`), as serde_json alone
    // does; encoding allocates the text as `serde_json::to_string` does (growing it as it
    // goes), plus the header that lets the send queue share it without a copy.
    for size in [64, 1024] {
        let text = frame(size);
        let message = Message::text(text.clone());
        // What `JsonSocket::recv` does with a valid event.
        let (ours, ours_bytes) = per_run(1000, || {
            let decoded = wire::decode_typed::<Event>(&message, Codec::Json, &limits);
            std::hint::black_box(decoded.unwrap());
        });
        // The full path, taken by frames the fast one refuses (to say precisely why).
        let (full, full_bytes) = per_run(1000, || {
            let Ok(Inbound::Message { event, data, .. }) =
                wire::decode(&message, Codec::Json, &limits)
            else {
                panic!("a valid event")
            };
            let decoded: Event = wire::decode_message(event, data).unwrap();
            std::hint::black_box(decoded);
        });
        let (plain, plain_bytes) = per_run(1000, || {
            let decoded: Event = serde_json::from_str(&text).unwrap();
            std::hint::black_box(decoded);
        });
        let Event::Echo(echo) = serde_json::from_str::<Event>(&text).unwrap();
        let (enc, enc_bytes) = per_run(1000, || {
            std::hint::black_box(wire::encode_event(Codec::Json, "echo", &echo).unwrap());
        });
        let event = Event::Echo(echo);
        let (enc_plain, enc_plain_bytes) = per_run(1000, || {
            std::hint::black_box(serde_json::to_string(&event).unwrap());
        });
        println!(
            "{size} B: decode {ours} allocations / {ours_bytes} B (serde_json alone: {plain} / \
             {plain_bytes} B; the full path {full} / {full_bytes} B); encode {enc} / {enc_bytes} B (serde_json \
             alone: {enc_plain} / {enc_plain_bytes} B)"
        );
        assert!(ours <= plain, "{size} B: {ours} allocations to decode, serde_json {plain}");
        assert!(enc <= enc_plain + 1.0, "{size} B: {enc} allocations to encode");
    }
}
