//! What palisade-json's envelope costs over serde_json alone, per message: decoding a frame
//! into the application's typed event (size and depth checks, envelope, typed payload with
//! paths kept for error replies) against `serde_json::from_str` straight into the same type,
//! and encoding an event against `serde_json::to_string` of the same value.
//!
//! ```text
//! cargo bench -p palisade-json --bench envelope
//! ```
//!
//! Naming as in palisade-proto's benches (`cargo xtask bench --micro` relies on it): palisade's
//! measurement is the function `palisade`, `serde_json` is the contender, and the parameter
//! (the frame's size in bytes) is the row.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use palisade_json::wire::{self, Inbound};
use palisade_json::{Codec, Limits};
use palisade_proto::Message;
use serde::{Deserialize, Serialize};

/// The benchmark's event, as an application declares it.
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

/// Frame sizes: a small chat message and a 1 KiB one, as in the typed-echo load runs.
const SIZES: [usize; 2] = [64, 1024];

/// `{"event":"echo","data":{"seq":1,"text":"abc…"}}` of `size` bytes.
fn frame(size: usize) -> String {
    let head = r#"{"event":"echo","data":{"seq":1,"text":""#;
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let text: String = (0..pad).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    format!("{head}{text}{tail}")
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json_decode");
    let limits = Limits::default();
    for size in SIZES {
        let text = frame(size);
        let message = Message::text(text.clone());
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("palisade", size), |b| {
            b.iter(|| {
                let decoded =
                    wire::decode_typed::<Event>(black_box(&message), Codec::Json, &limits);
                black_box(decoded.expect("it decodes"))
            })
        });
        // The full path: what a frame the fast path refuses goes through, to be told why.
        group.bench_function(BenchmarkId::new("palisade_full_path", size), |b| {
            b.iter(|| {
                let inbound = wire::decode(black_box(&message), Codec::Json, &limits);
                let Ok(Inbound::Message { event, data, .. }) = inbound else {
                    panic!("the frame is a valid event")
                };
                let decoded: Event = wire::decode_message(event, data).expect("it decodes");
                black_box(decoded)
            })
        });
        group.bench_function(BenchmarkId::new("serde_json", size), |b| {
            b.iter(|| {
                let decoded: Event = serde_json::from_str(black_box(&text)).expect("it decodes");
                black_box(decoded)
            })
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json_encode");
    for size in SIZES {
        let Event::Echo(echo) = serde_json::from_str::<Event>(&frame(size)).expect("it decodes");
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("palisade", size), |b| {
            b.iter(|| wire::encode_event(Codec::Json, "echo", black_box(&echo)).expect("encodes"))
        });
        let event = Event::Echo(echo);
        group.bench_function(BenchmarkId::new("serde_json", size), |b| {
            b.iter(|| serde_json::to_string(black_box(&event)).expect("encodes"))
        });
    }
    group.finish();
}

// (`criterion_group!` generates an undocumented `pub fn`, hence the `allow`.)
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, bench_decode, bench_encode);
}
use group::benches;

criterion_main!(benches);
