//! Broadcast to 1,000 in-process members: one encoding shared by every member (what
//! `Rooms::broadcast` does) against one encoding per member (what a loop of `emit`s does).
//!
//! `cargo bench -p palisade-rooms --bench broadcast`
//!
//! - `encode/*`: the encoding alone — one `room.message` frame cloned 1,000 times, against
//!   1,000 frames encoded one by one.
//! - `deliver/*`: into 1,000 real connections (over in-memory pipes whose far ends are
//!   drained): `Rooms::broadcast` (encode once, each member's queue written by its own task)
//!   against `JsonSender::emit` to each member in turn; an iteration ends when every
//!   connection has written the message.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_conn::{Config, WebSocket};
use palisade_json::{Codec, JsonSender, JsonSocket, wire};
use palisade_proto::connection::Connection;
use palisade_rooms::{Publication, Rooms, RoomsConfig, Session};
use serde_json::json;

const MEMBERS: usize = 1000;

fn data() -> serde_json::Value {
    json!({ "from": "alice", "text": "the quick brown fox jumps over the lazy dog", "at": 1_733_400_000_u64 })
}

fn encode(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("encode");
    group.bench_function("once_shared_by_1000", |b| {
        b.iter(|| {
            let raw = serde_json::value::to_raw_value(&data).unwrap();
            let publication = Publication::encode("lobby", Some(7), "said", &raw, None).unwrap();
            for _ in 0..MEMBERS {
                black_box(publication.message());
            }
        })
    });
    group.bench_function("per_member_1000", |b| {
        b.iter(|| {
            for _ in 0..MEMBERS {
                let payload =
                    json!({ "room": "lobby", "offset": 7, "event": "said", "data": &data });
                black_box(wire::encode_event(Codec::Json, "room.message", &payload).unwrap());
            }
        })
    });
    group.finish();
}

/// 1,000 server-side connections over pipes whose far ends are read and discarded.
struct Members {
    sockets: Vec<JsonSocket>,
    sessions: Vec<Session>,
    senders: Vec<JsonSender>,
}

async fn members(rooms: &Rooms) -> Members {
    let mut out = Members { sockets: Vec::new(), sessions: Vec::new(), senders: Vec::new() };
    for i in 0..MEMBERS {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut theirs, &mut tokio::io::sink()).await;
        });
        let conn = Connection::server(Default::default(), std::time::Instant::now());
        let ws =
            WebSocket::from_parts(ours, conn, Config::default().with_keepalive(None, None), &[]);
        let socket = JsonSocket::new(ws);
        let session = rooms.connect(&socket, format!("user{i}"), json!({})).await.unwrap();
        rooms.join("lobby", session.member()).await.unwrap();
        out.senders.push(socket.sender());
        out.sockets.push(socket);
        out.sessions.push(session);
    }
    out
}

/// Waits until every connection has written `expected` messages.
async fn written(members: &Members, expected: u64) {
    while !members.senders.iter().all(|s| s.raw().stats().messages_out >= expected) {
        tokio::task::yield_now().await;
    }
}

fn deliver(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rooms = Rooms::new(RoomsConfig::default());
    let members = rt.block_on(members(&rooms));
    let data = data();
    let mut sent = 0u64;
    let mut group = c.benchmark_group("deliver");
    group.sample_size(30);
    group.bench_function("rooms_broadcast_1000", |b| {
        b.iter(|| {
            rt.block_on(async {
                rooms.broadcast("lobby", "said", &data).await.unwrap();
                sent += 1;
                written(&members, sent).await;
            })
        })
    });
    group.bench_function("emit_each_of_1000", |b| {
        b.iter(|| {
            rt.block_on(async {
                for sender in &members.senders {
                    let payload = json!({ "room": "lobby", "event": "said", "data": &data });
                    sender.emit("room.message", &payload).await.unwrap();
                }
                sent += 1;
                written(&members, sent).await;
            })
        })
    });
    group.finish();
    drop(members.sockets);
}

criterion_group!(benches, encode, deliver);
criterion_main!(benches);
