//! Rooms, presence, private messages, policies and limits.

use palisade_json::{AppCode, ErrorReply};
use palisade_rooms::{RoomOptions, RoomsConfig, SessionPolicy};

use super::*;

#[tokio::test]
async fn members_join_hear_each_other_and_leave() {
    let node = Node::start(RoomsConfig::default()).await;
    let mut alice = Peer::open(node.addr(), "alice").await;
    let mut bob = Peer::open(node.addr(), "bob").await;
    let mut carol = Peer::open(node.addr(), "carol").await;

    let joined = alice.join("lobby").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["presence"].as_array().unwrap().len(), 1);
    assert!(joined.get("recovery").is_none(), "no recovery unless the room has it");

    let joined = bob.join("lobby").await;
    let users: Vec<&str> = joined["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&"alice") && users.contains(&"bob"));
    let seen = alice.event("presence.join").await;
    assert_eq!(
        seen,
        json!({"room": "lobby", "user": "bob", "session": bob.session, "meta": {"role": "member"}})
    );

    // To the room but the sender.
    alice.send(json!({"event": "say", "data": {"room": "lobby", "text": "hi"}})).await;
    let message = bob.event("room.message").await;
    assert_eq!(
        message,
        json!({"room": "lobby", "event": "said", "data": {"from": "alice", "text": "hi"}})
    );
    alice.quiet().await;

    // To the whole room; carol, outside it, hears nothing.
    assert_eq!(bob.ok("publish", json!({"room": "lobby", "count": 1})).await, 1);
    for peer in [&mut alice, &mut bob] {
        assert_eq!(peer.event("room.message").await["event"], "tick");
    }
    carol.quiet().await;

    assert_eq!(bob.ok("room.leave", json!({"room": "lobby"})).await, json!({"room": "lobby"}));
    let left = alice.event("presence.leave").await;
    assert_eq!(left["user"], "bob");
    bob.refused("room.leave", json!({"room": "lobby"}), "not_joined").await;
    // Out of the room: bob no longer hears it.
    alice.send(json!({"event": "say", "data": {"room": "lobby", "text": "still there?"}})).await;
    bob.quiet().await;
}

#[tokio::test]
async fn a_refused_join_is_an_error_reply_and_the_connection_goes_on() {
    let config = RoomsConfig::default().with_authorizer(|member, room| {
        if room.starts_with("staff") && member.meta()["role"] == "guest" {
            let code = AppCode::new("forbidden").expect("a valid code");
            return Err(ErrorReply::new(code, "members only"));
        }
        Ok(())
    });
    let node = Node::start(config).await;
    let mut guest = Peer::open(node.addr(), "guest1").await;
    let mut member = Peer::open(node.addr(), "dora").await;
    let error = guest.refused("room.join", json!({"room": "staff"}), "forbidden").await;
    assert_eq!(error["message"], "members only");
    member.join("staff").await;
    // Still connected, still served.
    guest.join("lobby").await;
    assert_eq!(node.rooms.presence("staff").await.unwrap().len(), 1);
}

#[tokio::test]
async fn private_messages_reach_every_session_of_a_user_or_say_no_such_user() {
    let node = Node::start(RoomsConfig::default()).await;
    let mut phone = Peer::open(node.addr(), "alice").await;
    let mut laptop = Peer::open(node.addr(), "alice").await;
    let mut bob = Peer::open(node.addr(), "bob").await;

    let sent =
        bob.ok("user.send", json!({"to": "alice", "event": "dm", "data": {"text": "psst"}})).await;
    assert_eq!(sent, json!({"sessions": 2}));
    for peer in [&mut phone, &mut laptop] {
        let message = peer.event("user.message").await;
        assert_eq!(message, json!({"from": "bob", "event": "dm", "data": {"text": "psst"}}));
    }
    let error = bob.refused("user.send", json!({"to": "zed", "event": "dm"}), "no_such_user").await;
    assert_eq!(error["message"], "no user of that name is connected");

    // The server's own `to_user`.
    assert_eq!(bob.ok("notify", json!({"user": "alice"})).await, 2);
    assert_eq!(phone.event("notice").await, json!({}));
    bob.refused("notify", json!({"user": "zed"}), "no_such_user").await;
    bob.quiet().await;
}

#[tokio::test]
async fn one_session_per_user_when_the_policy_says_so() {
    let node = Node::start(RoomsConfig::default().with_sessions(SessionPolicy::Refuse)).await;
    let first = Peer::open(node.addr(), "alice").await;
    let mut second = Peer::connect(node.addr(), "alice").await;
    assert_eq!(second.event("refused").await["code"], "session_refused");
    assert_eq!(second.closed_with().await, CloseCode::POLICY_VIOLATION);
    // Once the first has gone, the name is free again.
    first.ws.close(CloseCode::NORMAL, "").await.unwrap();
    let rooms = node.rooms.clone();
    let mut freed = false;
    for _ in 0..200 {
        if rooms.user_sessions("alice").await.unwrap() == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(freed, "the first session left the registry");
    Peer::open(node.addr(), "alice").await;
}

/// A client that comes back (its old connection perhaps half-open) takes its session over:
/// the old one is closed with 1000 "session replaced" and leaves its rooms; a session of
/// another user is never replaced; the policy still refuses a second live session.
#[tokio::test]
async fn a_session_is_taken_over_by_its_successor() {
    let node = Node::start(RoomsConfig::default().with_sessions(SessionPolicy::Refuse)).await;
    let mut old = Peer::open(node.addr(), "alice").await;
    old.join("r").await;
    let mut bob = Peer::open(node.addr(), "bob").await;
    bob.join("r").await;

    // Carol naming alice's session is carol: alice's session stays.
    let mut carol = Peer::open(node.addr(), &format!("carol+{}", old.session)).await;
    carol.join("r").await;
    old.join("s").await;

    let mut new = Peer::open(node.addr(), &format!("alice+{}", old.session)).await;
    assert_ne!(new.session, old.session);
    assert_eq!(old.closed_with().await, CloseCode::NORMAL);
    loop {
        let event = bob.next_event().await;
        if event["event"] == "presence.leave" && event["data"]["session"] == old.session.as_str() {
            assert_eq!(event["data"]["user"], "alice");
            break;
        }
    }
    new.join("r").await;
    assert_eq!(node.rooms.user_sessions("alice").await.unwrap(), 1);

    // Naming a session that is gone replaces nothing: alice has a live one.
    let mut again = Peer::connect(node.addr(), &format!("alice+{}", old.session)).await;
    assert_eq!(again.event("refused").await["code"], "session_refused");
    assert_eq!(again.closed_with().await, CloseCode::POLICY_VIOLATION);
    new.ok("room.presence", json!({"room": "r"})).await;
}

/// A room without presence: no presence list in the join's reply, no `presence.join` or
/// `presence.leave` to its members (joining N members sends O(N) frames), and its traffic as
/// usual; `room.presence` still answers. Other rooms keep theirs.
#[tokio::test]
async fn a_room_without_presence_sends_none() {
    let config = RoomsConfig::default().with_room_policy(|room| {
        let options = RoomOptions::default();
        if room.starts_with("wide") { options.without_presence() } else { options }
    });
    let node = Node::start(config).await;
    let mut alice = Peer::open(node.addr(), "alice").await;
    let mut bob = Peer::open(node.addr(), "bob").await;
    assert_eq!(alice.join("wide").await["presence"], json!([]));
    assert_eq!(bob.join("wide").await["presence"], json!([]));
    alice.send(json!({"event": "say", "data": {"room": "wide", "text": "hi"}})).await;
    // The first thing alice's room sends bob is the message: no presence event before it.
    assert_eq!(bob.event("room.message").await["data"]["text"], "hi");
    let listed = bob.ok("room.presence", json!({"room": "wide"})).await;
    assert_eq!(listed["presence"].as_array().map(Vec::len), Some(2), "{listed}");
    bob.ok("room.leave", json!({"room": "wide"})).await;
    alice.quiet().await;

    alice.join("lobby").await;
    bob.join("lobby").await;
    assert_eq!(alice.event("presence.join").await["user"], "bob");
}

#[tokio::test]
async fn every_limit_is_an_error_reply() {
    let config = RoomsConfig::default().with_max_room_name(8).with_max_rooms_per_session(2);
    let node = Node::start(config).await;
    let mut alice = Peer::open(node.addr(), "alice").await;
    let error = alice.refused("room.join", json!({"room": "ninechars"}), "invalid_room").await;
    assert_eq!(error["details"], json!({"max": 8}));
    alice.refused("room.join", json!({"room": ""}), "invalid_room").await;
    alice.join("a").await;
    alice.refused("room.join", json!({"room": "a"}), "already_joined").await;
    alice.join("b").await;
    let error = alice.refused("room.join", json!({"room": "c"}), "too_many_rooms").await;
    assert_eq!(error["details"], json!({"max": 2}));
    alice.refused("room.presence", json!({"room": "c"}), "not_joined").await;
    // Bad data for a room request is the JSON layer's `invalid_payload`, and an unknown event
    // is still `unknown_event`.
    alice.refused("room.join", json!({"name": "a"}), "invalid_payload").await;
    alice.refused("nope", json!({}), "unknown_event").await;
    // Leaving makes room for another.
    alice.ok("room.leave", json!({"room": "a"})).await;
    assert_eq!(alice.join("lobby").await["room"], "lobby");
}

#[tokio::test]
async fn presence_lists_metadata_and_follows_disconnects() {
    let node = Node::start(RoomsConfig::default()).await;
    let mut alice = Peer::open(node.addr(), "alice").await;
    let mut guest = Peer::open(node.addr(), "guest7").await;
    alice.join("lobby").await;
    guest.join("lobby").await;
    alice.event("presence.join").await;

    let listed = alice.ok("room.presence", json!({"room": "lobby"})).await;
    let mut entries: Vec<(String, Value)> = listed["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["user"].as_str().unwrap().to_owned(), p["meta"].clone()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        entries,
        [
            ("alice".to_owned(), json!({"role": "member"})),
            ("guest7".to_owned(), json!({"role": "guest"}))
        ]
    );
    let rooms = alice.ok("rooms", Value::Null).await;
    assert_eq!(rooms, json!([{"name": "lobby", "members": 2}]));

    // The guest's connection goes: the others see it leave.
    drop(guest);
    let left = alice.event("presence.leave").await;
    assert_eq!(left["user"], "guest7");
    assert_eq!(node.rooms.presence("lobby").await.unwrap().len(), 1);
}

#[tokio::test]
async fn broadcast_to_all_reaches_every_session() {
    let node = Node::start(RoomsConfig::default()).await;
    let mut peers = Vec::new();
    for user in ["a", "b", "c"] {
        peers.push(Peer::open(node.addr(), user).await);
    }
    peers[0].send(json!({"event": "announce", "data": {"text": "closing soon"}})).await;
    for peer in &mut peers {
        assert_eq!(peer.event("announce").await, json!({"text": "closing soon"}));
    }
}
