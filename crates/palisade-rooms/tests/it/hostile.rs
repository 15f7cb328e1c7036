//! Hostile members (issue #17): each test states the defence, asserts the error reply, bounds
//! the server's memory from `/proc/self/status` (the server runs in this process) and checks that
//! a fresh client is served right after.

use palisade_json::{AppCode, ErrorReply};
use palisade_rooms::{Recovery, RoomOptions};

use super::*;

/// How much the peak resident set may grow during one attack.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// `VmHWM` of this process in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Defence: `max_rooms_per_session` (default 64) bounds what one session may join; a storm of
/// 1,000 joins in one burst gets 64 `ok` replies and 936 `too_many_rooms`, every one answered,
/// and the connection goes on.
#[tokio::test]
async fn a_join_storm_is_bounded_by_the_rooms_per_session() {
    let node = Node::start(RoomsConfig::default()).await;
    let before = peak_rss_kib();
    let mut storm = Peer::open(node.addr(), "storm").await;
    for id in 0..1_000u64 {
        storm
            .send(json!({"event": "room.join", "id": id, "data": {"room": format!("r{id}")}}))
            .await;
    }
    let (mut ok, mut refused) = (0, 0);
    while ok + refused < 1_000 {
        let frame = storm.frame().await;
        if frame.get("reply").is_none() {
            continue;
        }
        match frame["status"].as_str() {
            Some("ok") => ok += 1,
            Some("error") => {
                assert_eq!(frame["error"]["code"], "too_many_rooms", "{frame}");
                refused += 1;
            }
            _ => panic!("{frame}"),
        }
    }
    assert_eq!((ok, refused), (64, 936));
    storm.next_id = 1_000;
    assert_eq!(storm.ok("rooms", Value::Null).await.as_array().unwrap().len(), 64);
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    let mut fresh = Peer::open(node.addr(), "fresh").await;
    assert_eq!(fresh.join("lobby").await["room"], "lobby");
}

/// Defence: the authorizer runs before recovery, so a join that asks to recover a room the
/// member may not see is refused with the authorizer's reply and carries no publication.
#[tokio::test]
async fn a_recovery_request_for_a_forbidden_room_is_refused_and_leaks_nothing() {
    let config = RoomsConfig::default()
        .with_authorizer(|member, room| {
            if room.starts_with("staff") && member.meta()["role"] == "guest" {
                let code = AppCode::new("forbidden").expect("a valid code");
                return Err(ErrorReply::new(code, "members only"));
            }
            Ok(())
        })
        .with_room_policy(|_| {
            RoomOptions::default().with_recovery(Recovery::default().with_history_size(100))
        });
    let node = Node::start(config).await;
    let mut dora = Peer::open(node.addr(), "dora").await;
    let epoch = dora.join("staff").await["recovery"]["epoch"].as_str().unwrap().to_owned();
    for n in 0..10 {
        node.rooms.broadcast("staff", "tick", &json!({ "secret": n })).await.unwrap();
    }
    let mut guest = Peer::open(node.addr(), "guest1").await;
    for recover in [json!({"epoch": epoch, "offset": 0}), json!({"epoch": "guess", "offset": 3})] {
        let reply = guest.request("room.join", json!({"room": "staff", "recover": recover})).await;
        assert_eq!(reply["status"], "error", "{reply}");
        assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
        assert!(!reply.to_string().contains("secret"), "{reply}");
    }
    assert_eq!(node.rooms.presence("staff").await.unwrap().len(), 1);
    // Still connected, still served; and a fresh client too.
    guest.join("lobby").await;
    let mut fresh = Peer::open(node.addr(), "fresh").await;
    assert_eq!(fresh.join("lobby").await["room"], "lobby");
}

/// Defence: each member's queue is bounded (`queue_capacity`, default 1024; a listener that does
/// not read is the slow-consumer policy's, see `slow.rs`); a member flooding a room with 5,000
/// messages reaches a listener that keeps reading once and in order, and memory stays bounded.
#[tokio::test]
async fn a_broadcast_storm_from_one_member_reaches_a_reading_listener_in_order() {
    const STORM: u64 = 5_000;
    let node = Node::start(RoomsConfig::default()).await;
    let before = peak_rss_kib();
    let mut alice = Peer::open(node.addr(), "alice").await;
    let mut bob = Peer::open(node.addr(), "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice.event("presence.join").await;
    let storm = tokio::spawn(async move {
        for n in 0..STORM {
            alice
                .send(json!({"event": "say", "data": {"room": "lobby", "text": n.to_string()}}))
                .await;
        }
        alice
    });
    for n in 0..STORM {
        let message = bob.event("room.message").await;
        assert_eq!(message["event"], "said");
        assert_eq!(message["data"]["text"], n.to_string(), "once and in order");
    }
    let mut alice = storm.await.unwrap();
    alice.quiet().await;
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB);
    let mut fresh = Peer::open(node.addr(), "fresh").await;
    assert_eq!(fresh.join("lobby").await["room"], "lobby");
}
