//! The pipelined publisher: order and offsets under concurrent publishers, the bounded
//! queue, and the reaper in rooms without presence.

use std::collections::HashMap;

use futures_util::StreamExt;
use futures_util::future::join_all;
use palisade_rooms::{BackendError, RoomsError};

use super::*;

/// Reads `peer`'s `room.message`s until `count` have come: (offset, data) in arrival order.
async fn messages(peer: &mut Peer, count: usize) -> Vec<(Option<u64>, Value)> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let event = peer.next_event().await;
        if event["event"] == "room.message" {
            let data = &event["data"];
            seen.push((data["offset"].as_u64(), data["data"].clone()));
        }
    }
    seen
}

/// Several tasks publish into a room with a history at once, one of them many publications
/// at a time: each publication gets one offset, the offsets are consecutive in the order
/// members receive them on both nodes, each publisher's publications keep their order, and
/// publications made together by one caller get their offsets in the order they were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_consecutive_offsets_in_publish_order() {
    let redis = RedisServer::start();
    concurrent_publishers_get_consecutive_offsets_in_publish_order_over(&redis.url()).await;
}

pub(crate) async fn concurrent_publishers_get_consecutive_offsets_in_publish_order_over(url: &str) {
    let (a, b) = (Node::start(url).await, Node::start(url).await);
    let mut near = Peer::open(a.addr(), "near").await;
    let mut far = Peer::open(b.addr(), "far").await;
    let mut epoch = Value::Null;
    for peer in [&mut near, &mut far] {
        let reply = peer.join("feed-order").await;
        assert_eq!(reply["recovery"]["offset"], 0, "{reply}");
        epoch = reply["recovery"]["epoch"].clone();
    }

    const TASKS: u64 = 4;
    const EACH: u64 = 100;
    const BURST: u64 = 200;
    let mut publishers = Vec::new();
    for p in 0..TASKS {
        // Two publish from node A, two from node B: one room, one sequence of offsets.
        let rooms = if p % 2 == 0 { a.rooms.clone() } else { b.rooms.clone() };
        publishers.push(tokio::spawn(async move {
            for n in 0..EACH {
                rooms.broadcast("feed-order", "n", &json!({ "p": p, "n": n })).await.unwrap();
            }
        }));
    }
    // One caller with BURST publications on their way at once.
    let burst = {
        let rooms = a.rooms.clone();
        tokio::spawn(async move {
            let data: Vec<Value> = (0..BURST).map(|n| json!({ "p": TASKS, "n": n })).collect();
            let sent = join_all(data.iter().map(|d| rooms.broadcast("feed-order", "n", d))).await;
            assert!(sent.iter().all(Result::is_ok), "{sent:?}");
        })
    };
    for task in publishers {
        task.await.unwrap();
    }
    burst.await.unwrap();

    let total = (TASKS * EACH + BURST) as usize;
    let mut received = Vec::new();
    for peer in [&mut near, &mut far] {
        let seen = messages(peer, total).await;
        let offsets: Vec<u64> = seen.iter().map(|(o, _)| o.unwrap()).collect();
        assert_eq!(offsets, (1..=total as u64).collect::<Vec<_>>(), "consecutive, in order");
        let mut next: HashMap<u64, u64> = HashMap::new();
        let mut burst_offsets = Vec::new();
        for (offset, data) in &seen {
            let (p, n) = (data["p"].as_u64().unwrap(), data["n"].as_u64().unwrap());
            let expected = next.entry(p).or_default();
            assert_eq!(n, *expected, "publisher {p}'s publications in its order");
            *expected += 1;
            if p == TASKS {
                burst_offsets.push(offset.unwrap());
            }
        }
        assert!(burst_offsets.windows(2).all(|w| w[0] < w[1]), "{burst_offsets:?}");
        received.push(seen);
    }
    assert_eq!(received[0], received[1], "both nodes saw one sequence");
    // The stream holds that sequence too: a member recovering from 0 gets all of it.
    let mut late = Peer::open(b.addr(), "late").await;
    let recover = json!({ "epoch": epoch, "offset": 0 });
    let reply = late.ok("room.join", json!({ "room": "feed-order", "recover": recover })).await;
    assert_eq!(reply["recovery"]["recovered"], true, "{reply}");
    let history: Vec<(Option<u64>, Value)> = reply["recovery"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["offset"].as_u64(), p["data"].clone()))
        .collect();
    assert_eq!(history, received[0], "the history is the live sequence");
}

/// A publisher queue of 4: of 24 publications made at once, the 4 that fit go to Redis (and
/// to both nodes), the other 20 are refused with `Overloaded` at once and still reach this
/// node's members, each exactly once.
#[tokio::test]
async fn a_full_publish_queue_refuses_and_local_delivery_goes_on() {
    let redis = RedisServer::start();
    let backend =
        RedisBackend::connect(redis_config(&redis.url()).with_publish_queue(4)).await.unwrap();
    let a = Node::with_backend(backend, rooms_config()).await;
    let b = Node::start(&redis.url()).await;
    let mut near = Peer::open(a.addr(), "near").await;
    let mut far = Peer::open(b.addr(), "far").await;
    near.join("lobby").await;
    far.join("lobby").await;
    near.event("presence.join").await;

    // Fewer than 31 futures: `join_all` polls each once, in order, within one poll, and on
    // this one-thread runtime the publisher task cannot take any before all are made.
    let data: Vec<Value> = (0..24u64).map(|n| json!({ "n": n })).collect();
    let sent = join_all(data.iter().map(|d| a.rooms.broadcast("lobby", "n", d))).await;
    for (n, outcome) in sent.iter().enumerate() {
        match outcome {
            Ok(()) => assert!(n < 4, "publication {n} fit in the queue"),
            Err(RoomsError::Backend(BackendError::Overloaded { backend: "redis", limit: 4 })) => {
                assert!(n >= 4, "publication {n} was refused");
            }
            Err(other) => panic!("publication {n}: {other}"),
        }
    }
    let err = sent[4].as_ref().unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.reply().code().as_str(), "unavailable");

    let mut local: Vec<u64> =
        messages(&mut near, 24).await.iter().map(|(_, data)| data["n"].as_u64().unwrap()).collect();
    local.sort_unstable();
    assert_eq!(local, (0..24).collect::<Vec<_>>(), "every publication once on this node");
    let remote: Vec<u64> =
        messages(&mut far, 4).await.iter().map(|(_, data)| data["n"].as_u64().unwrap()).collect();
    assert_eq!(remote, [0, 1, 2, 3], "what Redis took, in order, on the other node");
    // Nothing more: a broadcast after the refused ones is the next thing `far` receives.
    a.rooms.broadcast("lobby", "n", &json!({ "n": 99 })).await.unwrap();
    assert_eq!(messages(&mut far, 1).await[0].1, json!({ "n": 99 }));
}

/// A dead node's members leave presence in the rooms that have it, and leave no
/// `presence.leave` behind in the rooms without (where nobody was told they joined).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_is_silent_in_rooms_without_presence() {
    let redis = RedisServer::start();
    let config = || {
        RoomsConfig::default().with_room_policy(|room| {
            let options = RoomOptions::default();
            if room.starts_with("quiet") { options.without_presence() } else { options }
        })
    };
    let a = Node::with_config(&redis.url(), config()).await;
    let runtime_b =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let url = redis.url();
    let b = runtime_b.spawn(async move { Node::with_config(&url, config()).await }).await.unwrap();
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    for room in ["quiet", "lobby"] {
        alice.join(room).await;
        bob.join(room).await;
    }
    assert_eq!(alice.event("presence.join").await["room"], "lobby");

    runtime_b.shutdown_background();
    let left = alice.event("presence.leave").await;
    assert_eq!((&left["room"], &left["user"]), (&json!("lobby"), &json!("bob")), "{left}");
    // The reaper is done once the dead node is out of the node set (its last step).
    let mut redis_conn =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let dead = b.rooms.node().to_owned();
    eventually("the reaper has finished", || {
        let mut conn = redis_conn.clone();
        let dead = dead.clone();
        async move {
            let nodes: Vec<String> = redis::cmd("SMEMBERS")
                .arg("palisade:nodes:{all}")
                .query_async(&mut conn)
                .await
                .unwrap();
            !nodes.contains(&dead)
        }
    })
    .await;
    let entries: usize = redis::cmd("HLEN")
        .arg("palisade:presence:{quiet}")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert_eq!(entries, 1, "bob's entry is gone from the quiet room too");
    // A publication after the reaping: whatever the reaper sent to the room came before it.
    a.rooms.broadcast("quiet", "after", &json!({})).await.unwrap();
    loop {
        let event = alice.next_event().await;
        assert_ne!(event["event"], "presence.leave", "{event}");
        if event["event"] == "room.message" {
            assert_eq!(event["data"]["event"], "after", "{event}");
            break;
        }
    }
    drop(b);
}

/// Asks the test's Redis to hold every write command (PUBLISH and scripts included) for
/// `millis`, as a slow or stalled server would; reads are still answered.
pub(crate) fn pause_writes(redis: &RedisServer, millis: u64) {
    admin(redis, &format!("CLIENT PAUSE {millis} WRITE"));
}

/// Sends the test's Redis one inline command that answers `+OK`.
fn admin(redis: &RedisServer, command: &str) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut reply = [0u8; 5];
    tcp.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");
}

/// A node whose commands time out after 300 ms, with heartbeats far apart (a pause must not
/// make it look dead), and a member of its `lobby` that has had one publication: `n: 0`.
async fn node_for_pauses(redis: &RedisServer) -> (Node, Peer) {
    node_for_pauses_queueing(redis, 8192).await
}

/// [`node_for_pauses`] with room for `queue` publications waiting for Redis (and as many
/// waiting to come back).
async fn node_for_pauses_queueing(redis: &RedisServer, queue: usize) -> (Node, Peer) {
    let config = RedisConfig::new(redis.url())
        .with_publish_queue(queue)
        .with_heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .with_command_timeout(Duration::from_millis(300));
    let backend = RedisBackend::connect(config).await.unwrap();
    let a = Node::with_backend(backend, rooms_config()).await;
    let mut near = Peer::open(a.addr(), "near").await;
    near.join("lobby").await;
    a.rooms.broadcast("lobby", "n", &json!({ "n": 0 })).await.unwrap();
    assert_eq!(messages(&mut near, 1).await[0].1, json!({ "n": 0 }));
    (a, near)
}

/// A publication whose pipeline went out but got no answer within the command timeout (Redis
/// held it for a second) is a `Timeout` for its caller and is not delivered locally: Redis
/// publishes it once the pause ends, and this node's members get it then, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_publication_that_redis_runs_later_is_delivered_once() {
    let redis = RedisServer::start();
    let (a, mut near) = node_for_pauses(&redis).await;
    pause_writes(&redis, 1000);
    let held = a.rooms.broadcast("lobby", "n", &json!({ "n": 1 })).await;
    match held {
        Err(RoomsError::Backend(BackendError::Timeout { .. })) => {}
        other => panic!("a held publication times out: {other:?}"),
    }
    // Redis runs it when the pause ends; the member gets it then, once.
    assert_eq!(messages(&mut near, 1).await[0].1, json!({ "n": 1 }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.rooms.broadcast("lobby", "n", &json!({ "n": 2 })).await.unwrap();
    assert_eq!(messages(&mut near, 1).await[0].1, json!({ "n": 2 }), "no second copy of n=1");
}

/// A publication that timed out while Redis held it, and that Redis never ran because it
/// died first, reaches this node's members once the subscription is lost: not before (Redis
/// might still have run it), not twice, and in its place before what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_publication_that_redis_never_runs_is_delivered_when_it_dies() {
    let mut redis = RedisServer::start();
    let (a, mut near) = node_for_pauses(&redis).await;
    pause_writes(&redis, 10_000);
    let held = a.rooms.broadcast("lobby", "n", &json!({ "n": 1 })).await;
    assert!(matches!(held, Err(RoomsError::Backend(BackendError::Timeout { .. }))), "{held:?}");
    // Still uncertain: not delivered while Redis is up and may run it.
    let early = tokio::time::timeout(Duration::from_millis(300), near.ws.recv()).await;
    assert!(early.is_err(), "nothing while Redis may still run it: {early:?}");

    redis.kill();
    assert_eq!(messages(&mut near, 1).await, [(None, json!({ "n": 1 }))], "delivered here");
    // While Redis is down, what follows is delivered here too, after it.
    let refused = a.rooms.broadcast("lobby", "n", &json!({ "n": 2 })).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(messages(&mut near, 1).await, [(None, json!({ "n": 2 }))]);

    redis.restart();
    let rooms = a.rooms.clone();
    eventually("publications go through Redis again", || {
        let rooms = rooms.clone();
        async move { rooms.broadcast("lobby", "probe", &json!({})).await.is_ok() }
    })
    .await;
    // Whatever probes got through, and nothing else: no second copy of n=1.
    a.rooms.broadcast("lobby", "n", &json!({ "n": 3 })).await.unwrap();
    loop {
        let (_, data) = messages(&mut near, 1).await.remove(0);
        assert_ne!(data, json!({ "n": 1 }), "no second copy");
        if data == json!({ "n": 3 }) {
            break;
        }
    }
}

/// Publications that timed out wait to come back at most `publish_queue` at a time: one more,
/// and all of them are delivered here at once, in order; when Redis runs them after all, their
/// copies are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_publications_past_the_queue_are_delivered_here_at_once() {
    let redis = RedisServer::start();
    let (a, mut near) = node_for_pauses_queueing(&redis, 4).await;
    pause_writes(&redis, 10_000);
    let four: Vec<Value> = (1..=4).map(|n| json!({ "n": n })).collect();
    let held = join_all(four.iter().map(|data| a.rooms.broadcast("lobby", "n", data))).await;
    assert!(held.iter().all(Result::is_err), "{held:?}");
    // Four wait: nothing yet.
    let early = tokio::time::timeout(Duration::from_millis(200), near.ws.recv()).await;
    assert!(early.is_err(), "nothing while four wait: {early:?}");
    // The fifth is one too many: all five, here, in order, at once (well before the next
    // heartbeat, 2 s after the node's start, fails on the paused Redis and delivers them too).
    assert!(a.rooms.broadcast("lobby", "n", &json!({ "n": 5 })).await.is_err());
    let here = tokio::time::timeout(Duration::from_millis(500), messages(&mut near, 5))
        .await
        .expect("delivered at once");
    let here: Vec<Value> = here.into_iter().map(|(_, data)| data).collect();
    assert_eq!(here, (1..=5).map(|n| json!({ "n": n })).collect::<Vec<_>>());

    // Redis runs them now: their copies come back and are dropped.
    admin(&redis, "CLIENT UNPAUSE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.rooms.broadcast("lobby", "n", &json!({ "n": 6 })).await.unwrap();
    assert_eq!(messages(&mut near, 1).await[0].1, json!({ "n": 6 }), "no second copies");
}

/// Has node `a` publish `{"n": 0}` in `room`, catches it on the room's channel and publishes
/// the same bytes there twice more.
async fn sent_twice_more(redis: &RedisServer, a: &Node, room: &str) {
    let channel = format!("palisade:room:{{{room}}}");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut spy = client.get_async_pubsub().await.unwrap();
    spy.subscribe(&channel).await.unwrap();
    let mut caught = spy.on_message();
    a.rooms.broadcast(room, "n", &json!({ "n": 0 })).await.unwrap();
    let payload: Vec<u8> = tokio::time::timeout(WAIT, caught.next())
        .await
        .expect("the publication on the channel")
        .unwrap()
        .get_payload()
        .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..2 {
        let _: () =
            redis::cmd("PUBLISH").arg(&channel).arg(&payload).query_async(&mut conn).await.unwrap();
    }
}

/// A publication that reaches a node twice (as one would while a cluster client has two
/// connections subscribed to a shard for a moment) is delivered to its members once: the
/// test catches a publication on the room's channel and publishes the same bytes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_that_comes_twice_is_delivered_once() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let mut peer = Peer::open(a.addr(), "alice").await;
    peer.join("feed-twice").await;

    sent_twice_more(&redis, &a, "feed-twice").await;
    a.rooms.broadcast("feed-twice", "n", &json!({ "n": 1 })).await.unwrap();

    let seen = messages(&mut peer, 2).await;
    assert_eq!(seen, [(Some(1), json!({ "n": 0 })), (Some(2), json!({ "n": 1 }))]);
    // And nothing after them.
    a.rooms.broadcast("feed-twice", "n", &json!({ "n": 2 })).await.unwrap();
    assert_eq!(messages(&mut peer, 1).await, [(Some(3), json!({ "n": 2 }))]);
}

/// A `MONITOR` line's arguments: each between double quotes, with Redis's escapes.
fn monitored_args(line: &str) -> Vec<Vec<u8>> {
    let rest = &line[line.find("] ").map_or(0, |i| i + 2)..];
    let mut bytes = rest.bytes();
    let mut args = Vec::new();
    while let Some(b) = bytes.next() {
        if b != b'"' {
            continue;
        }
        let mut arg = Vec::new();
        while let Some(c) = bytes.next() {
            match c {
                b'"' => break,
                b'\\' => match bytes.next() {
                    Some(b'n') => arg.push(b'\n'),
                    Some(b'r') => arg.push(b'\r'),
                    Some(b't') => arg.push(b'\t'),
                    Some(b'a') => arg.push(7),
                    Some(b'b') => arg.push(8),
                    Some(b'x') => {
                        let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                        arg.push(u8::from_str_radix(&hex, 16).unwrap());
                    }
                    Some(other) => arg.push(other),
                    None => {}
                },
                other => arg.push(other),
            }
        }
        args.push(arg);
    }
    args
}

/// Has node `a` publish `{"n": 0}` in `room` (a room with a history) and catches its
/// `EVALSHA` with `MONITOR`: the command, and a connection to send it on.
async fn captured_evalsha(
    redis: &RedisServer,
    a: &Node,
    room: &str,
) -> (redis::Cmd, redis::aio::MultiplexedConnection) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut monitor = client.get_async_monitor().await.unwrap().into_on_message::<String>();
    a.rooms.broadcast(room, "n", &json!({ "n": 0 })).await.unwrap();
    let args = loop {
        let line = tokio::time::timeout(WAIT, monitor.next())
            .await
            .expect("the script within the wait")
            .unwrap();
        let args = monitored_args(&line);
        if args.first().is_some_and(|name| name.eq_ignore_ascii_case(b"EVALSHA")) {
            break args;
        }
    };
    let mut cmd = redis::cmd("EVALSHA");
    for arg in &args[1..] {
        cmd.arg(arg.as_slice());
    }
    (cmd, client.get_multiplexed_async_connection().await.unwrap())
}

/// The script's record of each node's last publication in a room (`PREFIX:sent:{ROOM}`) keeps
/// at most 64 nodes and then starts over: the test sends the node's captured `EVALSHA` again
/// as 70 other nodes (its last argument, `NODE\nNUMBER`, changed); each runs, and the record
/// never holds more than 65.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_of_publishing_nodes_starts_over_past_64() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let mut peer = Peer::open(a.addr(), "alice").await;
    peer.join("feed-nodes").await;
    let (evalsha, mut conn) = captured_evalsha(&redis, &a, "feed-nodes").await;
    let args: Vec<Vec<u8>> = evalsha
        .args_iter()
        .filter_map(|arg| if let redis::Arg::Simple(a) = arg { Some(a.to_vec()) } else { None })
        .collect();
    let mut most = 0;
    for n in 0..70 {
        let mut cmd = redis::cmd("EVALSHA");
        for arg in &args[1..args.len() - 1] {
            cmd.arg(arg.as_slice());
        }
        cmd.arg(format!("other-{n}\n1"));
        let offset: i64 = cmd.query_async(&mut conn).await.unwrap();
        assert_eq!(offset, n + 2, "another node's publication runs");
        let kept: usize = redis::cmd("HLEN")
            .arg("palisade:sent:{feed-nodes}")
            .query_async(&mut conn)
            .await
            .unwrap();
        most = most.max(kept);
    }
    assert_eq!(most, 65, "64 nodes and the one past them, then it starts over");
}

/// A publication's script that reaches Redis a second time (as in a pipeline sent again after
/// a cluster's redirection, its first commands run already) is not run again: the test catches
/// the node's `EVALSHA` with `MONITOR` and sends it twice more itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_sent_twice_runs_once() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url()).await;
    let mut peer = Peer::open(a.addr(), "alice").await;
    peer.join("feed-once").await;
    let (evalsha, mut conn) = captured_evalsha(&redis, &a, "feed-once").await;
    for _ in 0..2 {
        let ran: i64 = evalsha.query_async(&mut conn).await.unwrap();
        assert_eq!(ran, 0, "not run again");
    }
    let seq: u64 =
        redis::cmd("GET").arg("palisade:seq:{feed-once}").query_async(&mut conn).await.unwrap();
    assert_eq!(seq, 1, "one offset taken");
    a.rooms.broadcast("feed-once", "n", &json!({ "n": 1 })).await.unwrap();
    let seen = messages(&mut peer, 2).await;
    assert_eq!(seen, [(Some(1), json!({ "n": 0 })), (Some(2), json!({ "n": 1 }))]);
}

/// A publication without an offset (a room without a history) that reaches another node twice
/// (as after a pipeline sent again while its slot moved) is delivered to that node's members
/// once: the test catches node A's publication on the room's channel and publishes the same
/// bytes twice more; node B's member gets it once, then the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_publication_from_another_node_that_comes_twice_is_delivered_once() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis.url()).await, Node::start(&redis.url()).await);
    let mut far = Peer::open(b.addr(), "far").await;
    far.join("lobby-twice").await;

    sent_twice_more(&redis, &a, "lobby-twice").await;
    a.rooms.broadcast("lobby-twice", "n", &json!({ "n": 1 })).await.unwrap();
    let seen = messages(&mut far, 2).await;
    assert_eq!(seen, [(None, json!({ "n": 0 })), (None, json!({ "n": 1 }))]);
}
