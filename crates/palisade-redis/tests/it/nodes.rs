//! Two nodes over one Redis: traffic and presence across them, Redis dying and coming back,
//! a node dying, recovery through the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// The next event within `wait`, if any.
pub(crate) async fn maybe_event(peer: &mut Peer, wait: Duration) -> Option<Value> {
    if let Some(event) = peer.events.pop_front() {
        return Some(event);
    }
    match tokio::time::timeout(wait, peer.ws.recv()).await {
        Ok(Ok(Message::Text(text))) => Some(serde_json::from_str(&text).unwrap()),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => None,
    }
}

/// Has `from` say `TAG 0`, `TAG 1` … in `room`, one each 100 ms, until `to` receives one of
/// them there, at most `attempts` times: whether it did.
pub(crate) async fn crosses(
    from: &Peer,
    to: &mut Peer,
    room: &str,
    tag: &str,
    attempts: usize,
) -> bool {
    for attempt in 0..attempts {
        let text = format!("{tag} {attempt}");
        from.send(json!({"event": "say", "data": {"room": room, "text": text}})).await;
        let mut crossed = false;
        while let Some(event) = maybe_event(to, Duration::from_millis(100)).await {
            if event["event"] == "room.message" && event["data"]["room"] == room {
                crossed = true;
            }
        }
        if crossed {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_private_messages_and_presence_cross_nodes() {
    let redis = RedisServer::start();
    broadcasts_private_messages_and_presence_cross_nodes_over(&redis.url()).await;
}

pub(crate) async fn broadcasts_private_messages_and_presence_cross_nodes_over(url: &str) {
    let (a, b) = (Node::start(url).await, Node::start(url).await);
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut bob = Peer::open(b.addr(), "bob").await;

    alice.join("lobby").await;
    let joined = bob.join("lobby").await;
    assert_eq!(joined["presence"].as_array().unwrap().len(), 2, "{joined}");
    let seen = alice.event("presence.join").await;
    assert_eq!(seen["user"], "bob");
    assert_eq!(seen["meta"]["node"], b.rooms.node());

    alice.send(json!({"event": "say", "data": {"room": "lobby", "text": "hi from a"}})).await;
    let message = bob.event("room.message").await;
    assert_eq!(
        message,
        json!({"room": "lobby", "event": "said", "data": {"from": "alice", "text": "hi from a"}})
    );
    bob.send(json!({"event": "say", "data": {"room": "lobby", "text": "hi from b"}})).await;
    assert_eq!(alice.event("room.message").await["data"]["text"], "hi from b");

    let sent =
        alice.ok("user.send", json!({"to": "bob", "event": "dm", "data": {"text": "psst"}})).await;
    assert_eq!(sent, json!({"sessions": 1}));
    assert_eq!(
        bob.event("user.message").await,
        json!({"from": "alice", "event": "dm", "data": {"text": "psst"}})
    );
    alice.refused("user.send", json!({"to": "zed", "event": "dm"}), "no_such_user").await;

    bob.send(json!({"event": "announce", "data": {"text": "all"}})).await;
    assert_eq!(alice.event("announce").await, json!({"text": "all"}));
    assert_eq!(bob.event("announce").await, json!({"text": "all"}));

    // A request between nodes: both answer with their members.
    assert_eq!(alice.ok("rooms", Value::Null).await, json!([{"name": "lobby", "members": 2}]));
    let listed = bob.ok("room.presence", json!({"room": "lobby"})).await;
    assert_eq!(listed["presence"].as_array().unwrap().len(), 2);

    drop(bob);
    assert_eq!(alice.event("presence.leave").await["user"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run() {
    let mut redis = RedisServer::start();
    let (a, b) = (Node::start(&redis.url()).await, Node::start(&redis.url()).await);
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut carol = Peer::open(a.addr(), "carol").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    for peer in [&mut alice, &mut carol, &mut bob] {
        peer.join("lobby").await;
    }

    redis.kill();
    // Local delivery goes on; the sender learns that the rest could not be reached.
    alice.send(json!({"event": "say", "data": {"room": "lobby", "text": "alone?"}})).await;
    assert_eq!(carol.event_past_presence("room.message").await["data"]["text"], "alone?");
    assert_eq!(alice.event_past_presence("failed").await["code"], "unavailable");
    // What needs Redis is a typed error reply; the connections stay up.
    alice.refused("room.presence", json!({"room": "lobby"}), "unavailable").await;
    alice.refused("user.send", json!({"to": "bob", "event": "dm"}), "unavailable").await;
    assert!(a.rooms.presence("lobby").await.unwrap_err().is_retryable());

    redis.restart();
    // Heartbeats register both nodes' sessions again, pub/sub subscribes again.
    let rooms = a.rooms.clone();
    eventually("presence is back", || {
        let rooms = rooms.clone();
        async move { rooms.presence("lobby").await.is_ok_and(|list| list.len() == 3) }
    })
    .await;
    let delivered = crosses(&alice, &mut bob, "lobby", "back", 100).await;
    assert!(delivered, "cross-node delivery resumed after the restart");
    let sent = alice.ok("user.send", json!({"to": "bob", "event": "dm", "data": {}})).await;
    assert_eq!(sent, json!({"sessions": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_members_leave_presence() {
    let redis = RedisServer::start();
    a_dead_nodes_members_leave_presence_over(&redis.url()).await;
}

pub(crate) async fn a_dead_nodes_members_leave_presence_over(url: &str) {
    let a = Node::start(url).await;
    // Node B runs on a runtime of its own, so that it can die at once: no cleanup, no goodbye.
    let runtime_b =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let url = url.to_owned();
    let b = runtime_b.spawn(async move { Node::start(&url).await }).await.unwrap();
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    assert_eq!(alice.event("presence.join").await["user"], "bob");

    runtime_b.shutdown_background();
    // Within the node timeout (500 ms) and a heartbeat, found and removed by node A.
    let left = alice.event("presence.leave").await;
    assert_eq!(left["user"], "bob");
    assert_eq!(a.rooms.presence("lobby").await.unwrap().len(), 1);
    alice.refused("user.send", json!({"to": "bob", "event": "dm"}), "no_such_user").await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_through_the_stream_on_another_node() {
    let redis = RedisServer::start();
    recovery_through_the_stream_on_another_node_over(&redis.url()).await;
}

pub(crate) async fn recovery_through_the_stream_on_another_node_over(url: &str) {
    let (a, b) = (Node::start(url).await, Node::start(url).await);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (rooms, published) = (a.rooms.clone(), published.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                rooms.broadcast("feed", "tick", &json!({ "n": n })).await.unwrap();
                published.store(n + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // On node B: join, read ten, go away.
    let mut carol = Peer::open(b.addr(), "carol").await;
    let reply = carol.join("feed").await;
    let epoch = reply["recovery"]["epoch"].as_str().unwrap().to_owned();
    let take = |publication: &Value, offset: &mut u64| {
        let o = publication["offset"].as_u64().unwrap();
        assert_eq!(o, *offset + 1, "no gap, no duplicate: {publication}");
        assert_eq!(publication["data"]["n"].as_u64().unwrap() + 1, o);
        *offset = o;
    };
    // The reply's offset is the position once its publications (those made while the join
    // went on) are processed.
    let handed = reply["recovery"]["publications"].as_array().unwrap();
    let mut offset = match handed.first() {
        Some(first) => first["offset"].as_u64().unwrap() - 1,
        None => reply["recovery"]["offset"].as_u64().unwrap(),
    };
    for p in handed {
        take(p, &mut offset);
    }
    assert_eq!(offset, reply["recovery"]["offset"].as_u64().unwrap(), "{reply}");
    for _ in 0..10 {
        let p = carol.event("room.message").await;
        take(&p, &mut offset);
    }
    drop(carol);
    let at = published.load(Ordering::SeqCst);
    eventually("30 more publications", || {
        let done = published.load(Ordering::SeqCst) >= at + 30;
        async move { done }
    })
    .await;

    // Back on node A, from the stream.
    let mut back = Peer::open(a.addr(), "carol").await;
    let recover = json!({ "epoch": epoch, "offset": offset });
    let reply = back.ok("room.join", json!({ "room": "feed", "recover": recover })).await;
    assert_eq!(reply["recovery"]["recovered"], true, "{reply}");
    assert!(reply["recovery"]["publications"].as_array().unwrap().len() >= 30);
    for p in reply["recovery"]["publications"].as_array().unwrap() {
        take(p, &mut offset);
    }
    assert_eq!(reply["recovery"]["offset"].as_u64().unwrap(), offset);
    for _ in 0..10 {
        let p = back.event("room.message").await;
        take(&p, &mut offset);
    }
    publisher.abort();
}

/// The connection's close code, once it closes.
async fn closed_with(peer: &Peer) -> CloseCode {
    loop {
        match tokio::time::timeout(WAIT, peer.ws.recv()).await.expect("closed within the wait") {
            Ok(_) => {}
            Err(err) => return err.connection_closed().expect("a close").code(),
        }
    }
}

/// One session per user across nodes, and a client that comes back on another node takes its
/// session over at once: on a live node, that node closes the old connection with 1000; on a
/// node that has just died (its heartbeat not yet expired), the session is unregistered and
/// leaves presence with its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_taken_over_across_nodes() {
    let redis = RedisServer::start();
    a_session_is_taken_over_across_nodes_over(&redis.url()).await;
}

pub(crate) async fn a_session_is_taken_over_across_nodes_over(url: &str) {
    let refuse = || rooms_config().with_sessions(SessionPolicy::Refuse);
    let a = Node::with_config(url, refuse()).await;
    let b = Node::with_config(url, refuse()).await;
    let mut old = Peer::open(a.addr(), "alice").await;
    old.join("lobby").await;
    assert_eq!(b.rooms.user_sessions("alice").await.unwrap(), 1);

    let mut new = Peer::open(b.addr(), &format!("alice+{}", old.session)).await;
    assert_eq!(closed_with(&old).await, CloseCode::NORMAL);
    new.join("lobby").await;
    eventually("a single session of alice", || async {
        a.rooms.user_sessions("alice").await.unwrap() == 1
    })
    .await;

    // Node C dies with carol on it; she comes back on A before C's heartbeat has expired.
    let runtime_c =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let url = url.to_owned();
    let c = runtime_c.spawn(async move { Node::with_config(&url, refuse()).await }).await.unwrap();
    let mut carol = Peer::open(c.addr(), "carol").await;
    carol.join("lobby").await;
    while new.next_event().await["data"]["user"] != "carol" {}
    let gone = carol.session.clone();
    runtime_c.shutdown_background();
    let mut back = Peer::open(a.addr(), &format!("carol+{gone}")).await;
    back.join("lobby").await;
    // The old session leaves presence with its node; the new one stays.
    loop {
        let event = new.next_event().await;
        if event["event"] == "presence.leave" && event["data"]["session"] == gone.as_str() {
            break;
        }
    }
    let present = b.rooms.presence("lobby").await.unwrap();
    let carols: Vec<_> = present.iter().filter(|p| p.user == "carol").collect();
    assert_eq!(carols.len(), 1);
    assert_eq!(carols[0].session.as_str(), back.session);
    drop(c);
}

/// The numbers of the `say` texts a peer receives as `room.message`, in arrival order,
/// shared with the test while a task reads them.
type Numbers = Arc<std::sync::Mutex<Vec<u64>>>;

/// Reads `peer`'s frames until it is dropped: numbered `room.message`s into `numbers`, the
/// codes of `failed` events into `failures`.
fn collect(peer: Peer, numbers: Numbers, failures: Arc<std::sync::Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        while let Ok(message) = peer.ws.recv().await {
            let Message::Text(text) = message else { continue };
            let event: Value = serde_json::from_str(&text).unwrap();
            match event["event"].as_str() {
                Some("room.message") => {
                    let n = event["data"]["data"]["text"].as_str().unwrap().parse().unwrap();
                    numbers.lock().unwrap().push(n);
                }
                Some("failed") => {
                    failures.lock().unwrap().push(event["data"]["code"].as_str().unwrap().into());
                }
                _ => {}
            }
        }
    });
}

/// Defence: a publication goes to this node's members first and to Redis second, so Redis
/// dying mid-broadcast costs only the other nodes' deliveries: the publisher's handler gets a
/// typed error for each publication Redis did not take (`unavailable`, retryable), the local
/// members receive every publication exactly once and in order all along, and once Redis is
/// back the backend reconnects and the other node's members receive publications again, still
/// in order and never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_mid_broadcast_keeps_local_delivery_going() {
    let mut redis = RedisServer::start();
    let (a, b) = (Node::start(&redis.url()).await, Node::start(&redis.url()).await);
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut carol = Peer::open(a.addr(), "carol").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    for peer in [&mut alice, &mut carol, &mut bob] {
        peer.join("lobby").await;
    }
    let (local, remote): (Numbers, Numbers) = Default::default();
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let publisher = alice.ws.sender();
    collect(alice, Numbers::default(), failures.clone());
    collect(carol, local.clone(), failures.clone());
    collect(bob, remote.clone(), failures.clone());

    // Alice publishes a numbered message every 2 ms until told to stop.
    let sent = Arc::new(AtomicU64::new(0));
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let publishing = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let say = json!({"event": "say", "data": {"room": "lobby", "text": n.to_string()}});
                publisher.send(say.to_string()).await.unwrap();
                sent.store(n + 1, Ordering::SeqCst);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                }
            }
        })
    };
    let count = |numbers: &Numbers| numbers.lock().unwrap().len();
    eventually("bob receives across nodes", || {
        let n = count(&remote);
        async move { n >= 20 }
    })
    .await;

    redis.kill();
    eventually("alice is told that publications failed", || {
        let n = failures.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    let local_during = count(&local);
    eventually("carol keeps receiving while Redis is down", || {
        let n = count(&local);
        async move { n >= local_during + 20 }
    })
    .await;

    redis.restart();
    let sent_at_restart = sent.load(Ordering::SeqCst);
    eventually("bob receives again after the restart", || {
        let last = remote.lock().unwrap().last().copied();
        async move { last.is_some_and(|n| n > sent_at_restart) }
    })
    .await;
    let _ = stop_tx.send(());
    publishing.await.unwrap();
    let total = sent.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + WAIT;
    while (count(&local) as u64) < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let local = local.lock().unwrap().clone();
    let missing: Vec<u64> = (0..total).filter(|n| !local.contains(n)).collect();
    assert_eq!(
        local,
        (0..total).collect::<Vec<_>>(),
        "every publication, once, in order; missing {missing:?}, {} failures",
        failures.lock().unwrap().len()
    );
    let remote = remote.lock().unwrap().clone();
    assert!(remote.windows(2).all(|w| w[0] < w[1]), "in order, never twice: {remote:?}");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.iter().all(|code| code == "unavailable"), "{failures:?}");
    println!(
        "{total} published, {} failed with `unavailable`, {} reached the other node",
        failures.len(),
        remote.len()
    );
}

/// A Redis that restarts empty loses every registration; the next heartbeat of each node
/// registers its sessions and their rooms again, in pipelines of at most 1,024 commands: here
/// 300 sessions in 2 rooms each, about 1,800 commands, so several pipelines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_restart_registers_hundreds_of_sessions_again() {
    let mut redis = RedisServer::start();
    let config =
        RoomsConfig::default().with_room_policy(|_| RoomOptions::default().without_presence());
    let a = Node::with_config(&redis.url(), config).await;
    const SESSIONS: usize = 300;
    let mut peers = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let mut peer = Peer::open(a.addr(), &format!("user{i}")).await;
        peer.join("quiet-a").await;
        peer.join("quiet-b").await;
        peers.push(peer);
    }
    assert_eq!(a.rooms.presence("quiet-a").await.unwrap().len(), SESSIONS);

    redis.kill();
    redis.restart();
    let rooms = a.rooms.clone();
    eventually("every session and its rooms registered again", || {
        let rooms = rooms.clone();
        async move {
            let (Ok(one), Ok(two)) =
                (rooms.presence("quiet-a").await, rooms.presence("quiet-b").await)
            else {
                return false;
            };
            one.len() == SESSIONS && two.len() == SESSIONS
        }
    })
    .await;
    for i in [0, SESSIONS / 2, SESSIONS - 1] {
        assert_eq!(a.rooms.user_sessions(&format!("user{i}")).await.unwrap(), 1);
    }
    drop(peers);
}
