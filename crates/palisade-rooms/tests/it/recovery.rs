//! Recovery of missed publications: cut TCP under a steady publisher and come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_rooms::{Recovery, RoomOptions, RoomsConfig};

use super::*;

/// Rooms named `feed…` keep a large history, rooms named `tiny…` five publications.
fn recovering() -> RoomsConfig {
    RoomsConfig::default().with_room_policy(|room| {
        if room.starts_with("feed") {
            RoomOptions::default().with_recovery(Recovery::default().with_history_size(100_000))
        } else if room.starts_with("tiny") {
            RoomOptions::default().with_recovery(Recovery::default().with_history_size(5))
        } else {
            RoomOptions::default()
        }
    })
}

/// The next publication, skipping presence events.
async fn publication(peer: &mut Peer) -> Value {
    loop {
        let event = peer.next_event().await;
        match event["event"].as_str() {
            Some("room.message") => return event["data"].clone(),
            Some("presence.join" | "presence.leave") => continue,
            _ => panic!("unexpected {event}"),
        }
    }
}

/// What one client has seen of the feed: every offset in order, each publication's `n`.
struct Seen {
    epoch: String,
    offset: u64,
    ns: Vec<u64>,
}

impl Seen {
    /// Takes a publication, which must follow the last one exactly.
    fn take(&mut self, publication: &Value) {
        let offset = publication["offset"].as_u64().unwrap();
        assert_eq!(offset, self.offset + 1, "no gap, no duplicate: {publication}");
        self.offset = offset;
        // The publisher is the feed's only one: its n-th publication has offset n + 1.
        let n = publication["data"]["n"].as_u64().unwrap();
        assert_eq!(n + 1, offset);
        self.ns.push(n);
    }

    /// Takes a join reply: its publications, then its position.
    fn joined(&mut self, reply: &Value) {
        let recovery = &reply["recovery"];
        for publication in recovery["publications"].as_array().unwrap() {
            self.take(publication);
        }
        assert_eq!(recovery["offset"].as_u64().unwrap(), self.offset, "{reply}");
        self.epoch = recovery["epoch"].as_str().unwrap().to_owned();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_stream_then_back_with_nothing_lost_or_repeated() {
    let node = Node::start(recovering()).await;
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (rooms, published) = (node.rooms.clone(), published.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                rooms.broadcast("feed", "tick", &json!({ "n": n })).await.unwrap();
                published.store(n + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let cut = Cut::to(node.addr()).await;
    let mut early = Peer::open(cut.addr, "early").await;
    let mut silent = Peer::open(cut.addr, "silent").await;

    // `early` joins and reads a while; its first position is the join's.
    let reply = early.join("feed").await;
    assert_eq!(reply["recovery"]["recovered"], false);
    assert_eq!(reply["recovery"]["reason"], "not_requested");
    let start = reply["recovery"]["offset"].as_u64().unwrap();
    let mut seen_early = Seen { epoch: String::new(), offset: start, ns: Vec::new() };
    seen_early.joined(&reply);
    // `silent` joins and is cut before it reads a single publication.
    let reply = silent.join("feed").await;
    let mut seen_silent = Seen {
        epoch: String::new(),
        offset: reply["recovery"]["offset"].as_u64().unwrap(),
        ns: Vec::new(),
    };
    seen_silent.joined(&reply);
    let silent_start = seen_silent.offset;
    for _ in 0..20 {
        let p = publication(&mut early).await;
        seen_early.take(&p);
    }

    cut.cut();
    let at_cut = published.load(Ordering::SeqCst);
    eventually("50 more publications while away", || {
        published.load(Ordering::SeqCst) >= at_cut + 50
    })
    .await;

    for (user, seen) in [("early", &mut seen_early), ("silent", &mut seen_silent)] {
        let mut back = Peer::open(node.addr(), user).await;
        let recover = json!({ "epoch": seen.epoch, "offset": seen.offset });
        let reply = back.ok("room.join", json!({ "room": "feed", "recover": recover })).await;
        assert_eq!(reply["recovery"]["recovered"], true, "{reply}");
        assert_eq!(reply["recovery"]["reason"], Value::Null);
        assert!(reply["recovery"]["publications"].as_array().unwrap().len() >= 50);
        seen.joined(&reply);
        // And the live stream carries on from there.
        for _ in 0..20 {
            let p = publication(&mut back).await;
            seen.take(&p);
        }
    }
    publisher.abort();
    // Every publication from the join on, once, in order.
    let expected: Vec<u64> = (start..start + seen_early.ns.len() as u64).collect();
    assert_eq!(seen_early.ns, expected);
    let expected: Vec<u64> = (silent_start..silent_start + seen_silent.ns.len() as u64).collect();
    assert_eq!(seen_silent.ns, expected);
    assert!(seen_silent.ns.len() >= 70);
}

#[tokio::test]
async fn the_join_reply_says_why_it_could_not_recover() {
    let node = Node::start(recovering()).await;
    let mut alice = Peer::open(node.addr(), "alice").await;
    let reply = alice.join("tiny").await;
    let epoch = reply["recovery"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(reply["recovery"]["offset"], 0);
    alice.ok("room.leave", json!({"room": "tiny"})).await;
    // Ten publications; the history keeps five.
    for n in 0..10 {
        node.rooms.broadcast("tiny", "tick", &json!({ "n": n })).await.unwrap();
    }
    let cases = [
        (json!({"epoch": epoch, "offset": 0}), Some("trimmed"), 0),
        (json!({"epoch": "not-this-one", "offset": 3}), Some("epoch_changed"), 0),
        (json!({"epoch": epoch, "offset": 99}), Some("unknown_offset"), 0),
        (json!({"epoch": epoch, "offset": 5}), None, 5),
        (json!({"epoch": epoch, "offset": 10}), None, 0),
    ];
    for (recover, reason, count) in cases {
        let reply = alice.ok("room.join", json!({"room": "tiny", "recover": recover})).await;
        let recovery = &reply["recovery"];
        assert_eq!(recovery["recovered"], reason.is_none(), "{recover} → {reply}");
        assert_eq!(recovery["reason"], json!(reason), "{recover} → {reply}");
        assert_eq!(recovery["epoch"], json!(epoch));
        assert_eq!(recovery["offset"], 10, "the position to go on from, recovered or not");
        let publications = recovery["publications"].as_array().unwrap();
        assert_eq!(publications.len(), count);
        if count > 0 {
            assert_eq!(publications[0]["offset"], 6);
            assert_eq!(publications[0]["data"], json!({"n": 5}));
        }
        alice.ok("room.leave", json!({"room": "tiny"})).await;
    }
}
