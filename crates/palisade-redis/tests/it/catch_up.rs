//! A node that missed some of a room's publications (its subscription was down while they
//! were published) fetches them from the room's history before the next one, so that its
//! members' live stream has no gap.

use palisade_rooms::{BackendError, RoomsError};

use super::*;
use crate::publish::pause_writes;

/// A node like [`Node::start`]'s whose pub/sub reconnects no sooner than `first` after a
/// loss: time enough for the test to publish while it is not subscribed.
async fn slow_to_resubscribe(url: &str, first: Duration) -> Node {
    slow_to_resubscribe_with(url, first, rooms_config()).await
}

/// [`slow_to_resubscribe`] with these rooms.
async fn slow_to_resubscribe_with(url: &str, first: Duration, rooms: RoomsConfig) -> Node {
    let config = redis_config(url).with_backoff(first, first * 2);
    Node::with_backend(RedisBackend::connect(config).await.unwrap(), rooms).await
}

/// A command connection of the test's own.
async fn spy(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Closes the pub/sub connection subscribed to the most channels: node B's, which has a room
/// more than node A's. (Node A's must stay up: a node refuses to publish while its own pub/sub
/// is down.)
async fn cut_bs_subscription(conn: &mut redis::aio::MultiplexedConnection) {
    let list: String =
        redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(conn).await.unwrap();
    let field = |line: &str, name: &str| -> u64 {
        let value = line.split(' ').find_map(|f| f.strip_prefix(name));
        value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in {line}"))
    };
    let mut clients: Vec<(u64, u64)> =
        list.lines().map(|line| (field(line, "sub="), field(line, "id="))).collect();
    clients.sort_unstable();
    assert!(
        clients.len() == 2 && clients[0].0 < clients[1].0,
        "two nodes, B subscribed to more channels: {list}"
    );
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(clients[1].1)
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

/// How many connections are subscribed to `room`'s channel.
async fn subscribers(conn: &mut redis::aio::MultiplexedConnection, room: &str) -> u64 {
    let reply: (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("palisade:room:{{{room}}}"))
        .query_async(conn)
        .await
        .unwrap();
    reply.1
}

/// Checks that nobody is subscribed to `room`'s channel now (what was just published went by
/// node B), then waits until B is subscribed again.
async fn missed_then_resubscribed(conn: &mut redis::aio::MultiplexedConnection, room: &str) {
    assert_eq!(subscribers(conn, room).await, 0, "published while B was not subscribed");
    eventually("B subscribed again", || {
        let mut conn = conn.clone();
        async move { subscribers(&mut conn, room).await == 1 }
    })
    .await;
}

/// Reads `count` of `peer`'s `room.message`s and checks they are the offsets after `offset`,
/// in order, each carrying `n` one below its offset.
async fn expect_next(peer: &mut Peer, offset: &mut u64, count: u64) {
    for _ in 0..count {
        let p = peer.event("room.message").await;
        assert_eq!(p["offset"].as_u64(), Some(*offset + 1), "no gap, no duplicate: {p}");
        assert_eq!(p["data"]["n"].as_u64(), Some(*offset), "{p}");
        *offset += 1;
    }
}

/// Node B's pub/sub connection is cut while node A publishes 20 publications into a room with
/// a history; B's member gets them all, in order, before the first one published once B is
/// subscribed again. (Without the catch-up it gets offset 1, then 22.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_subscription_was_cut_catches_up_from_the_history() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let b = slow_to_resubscribe(&redis.url(), Duration::from_secs(1)).await;
    let mut conn = spy(&redis).await;
    let mut far = Peer::open(b.addr(), "far").await;
    far.join("feed-cut").await;
    a.rooms.broadcast("feed-cut", "n", &json!({ "n": 0 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 1).await;

    cut_bs_subscription(&mut conn).await;
    for n in 1..=20 {
        a.rooms.broadcast("feed-cut", "n", &json!({ "n": n })).await.unwrap();
    }
    missed_then_resubscribed(&mut conn, "feed-cut").await;
    a.rooms.broadcast("feed-cut", "n", &json!({ "n": 21 })).await.unwrap();
    expect_next(&mut far, &mut offset, 21).await;
    // Nothing twice after them.
    a.rooms.broadcast("feed-cut", "n", &json!({ "n": 22 })).await.unwrap();
    expect_next(&mut far, &mut offset, 1).await;
}

/// Node B's pub/sub connection is cut while node A publishes five publications, and then the
/// room goes quiet: B fetches them as soon as it is subscribed again, without waiting for a
/// next publication that may never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_gone_quiet_is_caught_up_once_the_node_subscribes_again() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let b = slow_to_resubscribe(&redis.url(), Duration::from_secs(1)).await;
    let mut conn = spy(&redis).await;
    let mut far = Peer::open(b.addr(), "far").await;
    far.join("feed-quiet").await;
    a.rooms.broadcast("feed-quiet", "n", &json!({ "n": 0 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 1).await;

    cut_bs_subscription(&mut conn).await;
    for n in 1..=5 {
        a.rooms.broadcast("feed-quiet", "n", &json!({ "n": n })).await.unwrap();
    }
    missed_then_resubscribed(&mut conn, "feed-quiet").await;
    expect_next(&mut far, &mut offset, 5).await;
}

/// A member joins node B while B's pub/sub connection is down: its join reply gives the room's
/// position, and what node A publishes before B is subscribed again reaches it all the same,
/// from the history, before the live stream. (Without the catch-up the live stream starts at
/// offset 11.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_made_while_the_subscription_is_down_misses_nothing() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let b = slow_to_resubscribe(&redis.url(), Duration::from_secs(1)).await;
    let mut conn = spy(&redis).await;
    let mut carol = Peer::open(b.addr(), "carol").await;
    // In a room without a history first: B's pub/sub connection has a channel more than A's.
    carol.join("lobby").await;

    cut_bs_subscription(&mut conn).await;
    let reply = carol.join("feed-down").await;
    let mut offset = reply["recovery"]["offset"].as_u64().unwrap();
    assert_eq!(offset, 0, "{reply}");
    for n in 0..10 {
        a.rooms.broadcast("feed-down", "n", &json!({ "n": n })).await.unwrap();
    }
    missed_then_resubscribed(&mut conn, "feed-down").await;
    a.rooms.broadcast("feed-down", "n", &json!({ "n": 10 })).await.unwrap();
    expect_next(&mut carol, &mut offset, 11).await;
}

/// One of node B's own publications is delivered to B's member directly (B's pub/sub was cut
/// while Redis held the publication) and is then among those B fetches from the history: the
/// member gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_publication_among_those_fetched_is_not_delivered_twice() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let b = slow_to_resubscribe(&redis.url(), Duration::from_secs(1)).await;
    let mut conn = spy(&redis).await;
    let mut far = Peer::open(b.addr(), "far").await;
    far.join("feed-own").await;
    a.rooms.broadcast("feed-own", "n", &json!({ "n": 0 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 1).await;

    // Redis holds B's publication for 400 ms (within B's 500 ms command timeout); meanwhile
    // B's subscription is cut, so B delivers it to its member itself when Redis answers. Redis
    // publishes it while B is not subscribed (for a second), and keeps it as offset 2.
    pause_writes(&redis, 400);
    let publishing = {
        let rooms = b.rooms.clone();
        tokio::spawn(async move { rooms.broadcast("feed-own", "n", &json!({ "n": 1 })).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cut_bs_subscription(&mut conn).await;
    // Answered within B's command timeout, or not: either way B's member gets it directly.
    match publishing.await.unwrap() {
        Ok(()) | Err(RoomsError::Backend(BackendError::Timeout { .. })) => {}
        Err(other) => panic!("{other:?}"),
    }
    let direct = far.event("room.message").await;
    assert_eq!(
        (direct["offset"].as_u64(), &direct["data"]),
        (None, &json!({ "n": 1 })),
        "{direct}"
    );
    // Offset 3, from node A while B is still not subscribed.
    a.rooms.broadcast("feed-own", "n", &json!({ "n": 2 })).await.unwrap();
    missed_then_resubscribed(&mut conn, "feed-own").await;

    // Once subscribed again, B fetches offsets 2 and 3: 2 is B's own, dropped; 3 is A's,
    // delivered; then the next one, live.
    a.rooms.broadcast("feed-own", "n", &json!({ "n": 3 })).await.unwrap();
    for n in [2, 3] {
        let next = far.event("room.message").await;
        assert_eq!(
            (next["offset"].as_u64(), &next["data"]),
            (Some(n + 1), &json!({ "n": n })),
            "{next}"
        );
    }
}

/// Redis restarts empty while node B waits a second to subscribe again; node A (quicker)
/// publishes five publications into the room's new epoch meanwhile. B's member, which had
/// offset 1 of the old epoch, gets all of the new one from offset 1, in order, before the next
/// live one. (Without the catch-up on a new epoch it gets offset 6 first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_a_node_catches_up_from_the_new_epoch() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let b = slow_to_resubscribe(&redis.url(), Duration::from_secs(1)).await;
    let mut far = Peer::open(b.addr(), "far").await;
    let reply = far.join("feed-epoch").await;
    let old = reply["recovery"]["epoch"].clone();
    a.rooms.broadcast("feed-epoch", "n", &json!({ "n": 0 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 1).await;

    redis.kill();
    redis.restart();
    let mut conn = spy(&redis).await;
    // Once A publishes again (its pub/sub back), five into the new epoch, before B is back.
    eventually("A publishes again", || {
        let rooms = a.rooms.clone();
        async move { rooms.broadcast("feed-epoch", "n", &json!({ "n": 0 })).await.is_ok() }
    })
    .await;
    for n in 1..5 {
        a.rooms.broadcast("feed-epoch", "n", &json!({ "n": n })).await.unwrap();
    }
    missed_then_resubscribed(&mut conn, "feed-epoch").await;
    a.rooms.broadcast("feed-epoch", "n", &json!({ "n": 5 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 6).await;
    let epoch: String =
        redis::cmd("GET").arg("palisade:epoch:{feed-epoch}").query_async(&mut conn).await.unwrap();
    assert_ne!(json!(epoch), old, "a new epoch");
}

/// A node fetches no more than the room's `history_size` of what it missed (the memory a
/// join's recovery may take, too): with a history of 5, node B misses 12 publications and its
/// member gets the last 5 of them, in order (Redis keeps more: `MAXLEN ~` trims by whole
/// blocks of entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_takes_no_more_than_the_rooms_history_size() {
    let redis = RedisServer::start();
    let small = || {
        RoomsConfig::default().with_room_policy(|_| {
            RoomOptions::default().with_recovery(Recovery::default().with_history_size(5))
        })
    };
    let a = Node::with_config(&redis.url(), small()).await;
    let b = slow_to_resubscribe_with(&redis.url(), Duration::from_secs(1), small()).await;
    let mut conn = spy(&redis).await;
    let mut far = Peer::open(b.addr(), "far").await;
    far.join("feed-small").await;
    a.rooms.broadcast("feed-small", "n", &json!({ "n": 0 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 1).await;

    cut_bs_subscription(&mut conn).await;
    for n in 1..=12 {
        a.rooms.broadcast("feed-small", "n", &json!({ "n": n })).await.unwrap();
    }
    let kept: u64 = redis::cmd("XLEN")
        .arg("palisade:stream:{feed-small}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(kept > 5, "Redis keeps more than the history size: {kept}");
    missed_then_resubscribed(&mut conn, "feed-small").await;
    let mut offset = 8;
    expect_next(&mut far, &mut offset, 5).await;
}

/// A publication whose offset jumps past the last one a node received (while its subscription
/// stayed up) makes the node fetch those between before it: the test takes offsets 2 and 3
/// in Redis itself (`INCR`, and `XADD` entries as an older version wrote them, without their
/// publisher), and node A's next publication, offset 4, reaches B's member after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_in_the_offsets_is_filled_from_the_history_first() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis.url()).await, Node::start(&redis.url()).await);
    let mut conn = spy(&redis).await;
    let mut far = Peer::open(b.addr(), "far").await;
    far.join("feed-jump").await;
    a.rooms.broadcast("feed-jump", "n", &json!({ "n": 0 })).await.unwrap();
    let mut offset = 0;
    expect_next(&mut far, &mut offset, 1).await;

    for n in [1, 2] {
        let offset: u64 = redis::cmd("INCR")
            .arg("palisade:seq:{feed-jump}")
            .query_async(&mut conn)
            .await
            .unwrap();
        let data =
            json!({ "room": "feed-jump", "offset": offset, "event": "n", "data": { "n": n } });
        let _: String = redis::cmd("XADD")
            .arg("palisade:stream:{feed-jump}")
            .arg(format!("{offset}-0"))
            .arg("d")
            .arg(data.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    a.rooms.broadcast("feed-jump", "n", &json!({ "n": 3 })).await.unwrap();
    expect_next(&mut far, &mut offset, 3).await;
}
