//! The backend over a Redis Cluster of three primaries, started by each test like the single
//! Redis (on 127.0.0.1, free ports, each `redis-server` killed by its PID): the scenarios of
//! `nodes` again, rooms spread over the shards on sharded channels, and one shard dying
//! mid-run.

use std::collections::HashMap;
use std::path::PathBuf;

use palisade_rooms::{BackendError, RoomsError};

use super::nodes::*;
use super::publish::concurrent_publishers_get_consecutive_offsets_in_publish_order_over;
use super::*;

/// The slots of each of the three primaries.
const RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

struct Shard {
    port: u16,
    /// The cluster bus port.
    bus: u16,
    child: Option<Child>,
}

/// Three `redis-server`s in cluster mode, without replicas or persistence. A shard that dies
/// leaves the others serving their slots (`cluster-require-full-coverage no`).
pub(crate) struct RedisCluster {
    shards: Vec<Shard>,
    /// Where the shards keep their cluster configuration (`nodes-PORT.conf`).
    dir: PathBuf,
}

impl RedisCluster {
    pub(crate) fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "palisade-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self { shards: Vec::new(), dir };
        for _ in 0..3 {
            let shard = (0..10)
                .find_map(|_| {
                    let (port, bus) = (free_port(), free_port());
                    let child = spawn_redis(port, &cluster.args(port, bus))?;
                    Some(Shard { port, bus, child: Some(child) })
                })
                .expect("free ports for a shard");
            cluster.shards.push(shard);
        }
        for (shard, (first, last)) in RANGES.into_iter().enumerate() {
            let _: () = cluster
                .query(shard, &["CLUSTER", "ADDSLOTSRANGE", &first.to_string(), &last.to_string()]);
        }
        for shard in 1..3 {
            let (port, bus) = (cluster.shards[shard].port, cluster.shards[shard].bus);
            let _: () = cluster
                .query(0, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string(), &bus.to_string()]);
        }
        cluster.wait_whole();
        cluster
    }

    /// The seed nodes, separated by commas (as `redis_config` takes them).
    pub(crate) fn url(&self) -> String {
        let urls: Vec<String> =
            self.shards.iter().map(|s| format!("redis://127.0.0.1:{}/", s.port)).collect();
        urls.join(",")
    }

    /// Runs a command on one shard.
    fn query<T: redis::FromRedisValue>(&self, shard: usize, args: &[&str]) -> T {
        self.try_query(shard, args).unwrap()
    }

    fn try_query<T: redis::FromRedisValue>(
        &self,
        shard: usize,
        args: &[&str],
    ) -> redis::RedisResult<T> {
        let url = format!("redis://127.0.0.1:{}/", self.shards[shard].port);
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
    }

    /// Waits until every shard sees three nodes and every slot served.
    fn wait_whole(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        for shard in 0..3 {
            loop {
                // A shard that has just started may still refuse or reset a connection.
                let info: String = self.try_query(shard, &["CLUSTER", "INFO"]).unwrap_or_default();
                if info.contains("cluster_state:ok")
                    && info.contains("cluster_known_nodes:3")
                    && info.contains("cluster_slots_ok:16384")
                {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "the cluster did not form: {info}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The shard that serves `name`'s hash tag.
    fn shard_of(&self, name: &str) -> usize {
        let slot: u16 = self.query(0, &["CLUSTER", "KEYSLOT", name]);
        RANGES.iter().position(|(first, last)| (*first..=*last).contains(&slot)).unwrap()
    }

    /// A shard's cluster options.
    fn args(&self, port: u16, bus: u16) -> Vec<String> {
        let config = self.dir.join(format!("nodes-{port}.conf"));
        let dir = self.dir.to_str().unwrap();
        [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
            "--cluster-config-file",
            config.to_str().unwrap(),
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
            "--dir",
            dir,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts a shard again with its cluster configuration (its slots, its peers), and waits
    /// until it answers.
    fn restart(&mut self, shard: usize) {
        let Shard { port, bus, .. } = self.shards[shard];
        let child = spawn_redis(port, &self.args(port, bus)).expect("a shard restarts on its port");
        self.shards[shard].child = Some(child);
    }

    /// Kills one shard (SIGKILL, by PID) and waits for its end.
    fn kill(&mut self, shard: usize) {
        if let Some(mut child) = self.shards[shard].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for shard in 0..self.shards.len() {
            self.kill(shard);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_private_messages_and_presence_cross_nodes_over_a_cluster() {
    let cluster = RedisCluster::start();
    broadcasts_private_messages_and_presence_cross_nodes_over(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_members_leave_presence_over_a_cluster() {
    let cluster = RedisCluster::start();
    a_dead_nodes_members_leave_presence_over(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_through_the_stream_on_another_node_over_a_cluster() {
    let cluster = RedisCluster::start();
    recovery_through_the_stream_on_another_node_over(&cluster.url()).await;
}

/// The cluster's registration script, which cannot read the heartbeat keys itself, refuses a
/// second session and lets a take-over through, across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_taken_over_across_nodes_over_a_cluster() {
    let cluster = RedisCluster::start();
    a_session_is_taken_over_across_nodes_over(&cluster.url()).await;
}

/// On a cluster each publication is a request of its own, sent while the previous ones are
/// still out: one room's still reach its shard in order, on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_consecutive_offsets_in_publish_order_over_a_cluster() {
    let cluster = RedisCluster::start();
    concurrent_publishers_get_consecutive_offsets_in_publish_order_over(&cluster.url()).await;
}

/// Room names, one served by each shard (in shard order).
fn one_room_per_shard(cluster: &RedisCluster) -> Vec<String> {
    rooms_named(cluster, "room")
}

/// [`one_room_per_shard`] with names starting with `prefix` (`feed` for rooms with a history).
fn rooms_named(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    let mut rooms: Vec<Option<String>> = vec![None; 3];
    for n in 0.. {
        let room = format!("{prefix}-{n}");
        let shard = cluster.shard_of(&room);
        rooms[shard].get_or_insert(room);
        if rooms.iter().all(Option::is_some) {
            break;
        }
    }
    rooms.into_iter().map(Option::unwrap).collect()
}

/// Each room's channel is a sharded channel on the shard that holds the room's keys: the
/// nodes subscribe there (`PUBSUB SHARDCHANNELS` on each shard lists its rooms alone), and a
/// broadcast in any of them crosses to the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_shards_on_sharded_channels() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (a, b) = (Node::start(&url).await, Node::start(&url).await);
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    let rooms = one_room_per_shard(&cluster);
    for room in &rooms {
        alice.join(room).await;
        bob.join(room).await;
    }
    for (shard, room) in rooms.iter().enumerate() {
        let mut channels: Vec<String> = cluster.query(shard, &["PUBSUB", "SHARDCHANNELS"]);
        channels.retain(|c| c.starts_with("palisade:room:"));
        assert_eq!(channels, [format!("palisade:room:{{{room}}}")], "shard {shard}");
    }
    for room in &rooms {
        alice.send(json!({"event": "say", "data": {"room": room, "text": room}})).await;
        let message = bob.event_past_presence("room.message").await;
        assert_eq!(message["room"], room.as_str());
        assert_eq!(message["data"]["text"], room.as_str());
    }
}

/// One shard dies: the rooms on the other shards go on across nodes; a broadcast in a room of
/// the dead shard reaches this node's members and tells the sender, with a typed error, that
/// the other nodes were not reached; once the shard is back (empty), the backend subscribes
/// again and its rooms cross nodes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_dying_stops_only_its_rooms() {
    let mut cluster = RedisCluster::start();
    let url = cluster.url();
    let (a, b) = (Node::start(&url).await, Node::start(&url).await);
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut carol = Peer::open(a.addr(), "carol").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    let rooms = one_room_per_shard(&cluster);
    for room in &rooms {
        for peer in [&mut alice, &mut carol, &mut bob] {
            peer.join(room).await;
        }
    }
    let dying = 0;
    let (dead_room, live_room) = (&rooms[dying], &rooms[1]);
    cluster.kill(dying);

    let say =
        |room: &str, text: &str| json!({"event": "say", "data": {"room": room, "text": text}});
    // The dead shard's room: local delivery, a typed error.
    alice.send(say(dead_room, "local only")).await;
    assert_eq!(carol.event_past_presence("room.message").await["data"]["text"], "local only");
    let failed = alice.event_past_presence("failed").await;
    assert!(["unavailable", "timeout"].contains(&failed["code"].as_str().unwrap()), "{failed}");
    // A live shard's room crosses nodes (once the backend has subscribed again).
    let crossed = crosses(&alice, &mut bob, live_room, "live", 100).await;
    assert!(crossed, "a live shard's room crosses nodes while another shard is down");

    cluster.restart(dying);
    cluster.wait_whole();
    let back = std::time::Instant::now();
    // Reconnecting to a restarted shard can take a while on a loaded machine.
    let crossed = crosses(&alice, &mut bob, dead_room, "back", 300).await;
    assert!(crossed, "the shard's room crosses nodes again once it is back");
    println!("crossing again {:?} after the shard was back", back.elapsed());
}

/// A room's slot moves to another shard (resharding: `CLUSTER SETSLOT … MIGRATING/IMPORTING`,
/// `MIGRATE` of its keys, `CLUSTER SETSLOT … NODE`): Redis unsubscribes the nodes from the
/// room's sharded channel on the old shard, the nodes subscribe it again on the new one, and
/// the room crosses nodes as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_slot_moving_to_another_shard_keeps_it_crossing_nodes() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (a, b) = (Node::start(&url).await, Node::start(&url).await);
    let mut alice = Peer::open(a.addr(), "alice").await;
    let mut bob = Peer::open(b.addr(), "bob").await;
    let room = one_room_per_shard(&cluster).remove(0);
    alice.join(&room).await;
    bob.join(&room).await;
    let say = |text: &str| json!({"event": "say", "data": {"room": room, "text": text}});
    alice.send(say("before")).await;
    assert_eq!(bob.event_past_presence("room.message").await["data"]["text"], "before");

    let slot = start_moving(&cluster, &room);
    finish_moving(&cluster, &slot);

    subscribed_on(&cluster, 1, &room, 2).await;
    let crossed = crosses(&alice, &mut bob, &room, "after", 100).await;
    assert!(crossed, "the room crosses nodes from its new shard");
}

/// Starts moving `room`'s slot from shard 0 to shard 1 and moves its keys (`SETSLOT …
/// IMPORTING` and `MIGRATING`, `MIGRATE`): shard 0 still serves the slot, and answers `ASK`
/// for the keys that have gone. The slot's number.
fn start_moving(cluster: &RedisCluster, room: &str) -> String {
    let slot: u16 = cluster.query(0, &["CLUSTER", "KEYSLOT", room]);
    let (slot, port) = (slot.to_string(), cluster.shards[1].port.to_string());
    let from: String = cluster.query(0, &["CLUSTER", "MYID"]);
    let to: String = cluster.query(1, &["CLUSTER", "MYID"]);
    let _: () = cluster.query(1, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from]);
    let _: () = cluster.query(0, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to]);
    let keys: Vec<String> = cluster.query(0, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]);
    assert!(!keys.is_empty(), "the room's presence is a key of its slot");
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    let _: () = cluster.query(0, &migrate);
    slot
}

/// Ends a move [`start_moving`] began: shard 1 serves the slot (`SETSLOT … NODE` on every
/// shard), and shard 0 answers `MOVED`.
fn finish_moving(cluster: &RedisCluster, slot: &str) {
    let to: String = cluster.query(1, &["CLUSTER", "MYID"]);
    for shard in [1, 0, 2] {
        let _: () = cluster.query(shard, &["CLUSTER", "SETSLOT", slot, "NODE", &to]);
    }
}

/// Waits until `count` connections are subscribed to `room`'s sharded channel on `shard`.
async fn subscribed_on(cluster: &RedisCluster, shard: usize, room: &str, count: i64) {
    let channel = format!("palisade:room:{{{room}}}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let subscribers: Vec<redis::Value> =
            cluster.query(shard, &["PUBSUB", "SHARDNUMSUB", &channel]);
        if subscribers.get(1) == Some(&redis::Value::Int(count)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} subscribed on shard {shard}: {subscribers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A room with a history whose slot moves to another shard while a node publishes into it:
/// the publication made while the keys have gone but the slot has not (`ASK`) waits for the
/// move to end, and it and the first after the move (`MOVED`, the node's map of slots still
/// the old one) are published once each (not refused); the other node's member gets both, in
/// order. A member joining meanwhile (its presence entry, the room's position: single
/// commands, `ASK` too) waits as well, and gets what follows the position its reply gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_go_on_while_a_rooms_slot_moves() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (a, b) = (Node::start(&url).await, Node::start(&url).await);
    let mut bob = Peer::open(b.addr(), "bob").await;
    let room = rooms_named(&cluster, "feed").remove(0);
    bob.join(&room).await;
    let publish = |n: u64| {
        let (rooms, room) = (a.rooms.clone(), room.clone());
        async move { rooms.broadcast(&room, "n", &json!({ "n": n })).await }
    };
    publish(0).await.unwrap();
    let first = bob.event_past_presence("room.message").await;
    assert_eq!((first["offset"].as_u64(), &first["data"]), (Some(1), &json!({ "n": 0 })));

    let slot = start_moving(&cluster, &room);
    let publishing = tokio::spawn(publish(1));
    let mut carol = Peer::open(b.addr(), "carol").await;
    let joining = {
        let room = room.clone();
        tokio::spawn(async move {
            let reply = carol.join(&room).await;
            (carol, reply)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!publishing.is_finished(), "the publication waits for the move");
    finish_moving(&cluster, &slot);
    publishing.await.unwrap().expect("published once the slot has moved (ASK, then MOVED)");
    let (mut carol, reply) = joining.await.unwrap();
    let position = reply["recovery"]["offset"].as_u64().expect("the room's position");
    assert!((1..=2).contains(&position), "{reply}");
    subscribed_on(&cluster, 1, &room, 1).await;
    publish(2).await.expect("published once the slot has moved");

    for (offset, n) in [(2, 1), (3, 2)] {
        let p = bob.event_past_presence("room.message").await;
        assert_eq!((p["offset"].as_u64(), &p["data"]), (Some(offset), &json!({ "n": n })), "{p}");
    }
    for offset in position + 1..=3 {
        let p = carol.event_past_presence("room.message").await;
        let n = offset - 1;
        assert_eq!((p["offset"].as_u64(), &p["data"]), (Some(offset), &json!({ "n": n })), "{p}");
    }
    let presence: HashMap<String, String> =
        cluster.query(1, &["HGETALL", &format!("palisade:presence:{{{room}}}")]);
    assert_eq!(presence.len(), 2, "both members' entries on the new shard: {presence:?}");
    let seq: String = cluster.query(1, &["GET", &format!("palisade:seq:{{{room}}}")]);
    assert_eq!(seq, "3", "each publication ran once");
}

/// A slot that stays on the move: a publication whose keys have gone to the new shard is sent
/// again for up to two seconds, then refused with a typed error (and delivered to the publishing
/// node's own members all the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_gives_up_on_a_slot_that_stays_on_the_move() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let a = Node::start(&url).await;
    let mut alice = Peer::open(a.addr(), "alice").await;
    let room = rooms_named(&cluster, "feed").remove(0);
    alice.join(&room).await;
    a.rooms.broadcast(&room, "n", &json!({ "n": 0 })).await.unwrap();
    assert_eq!(alice.event_past_presence("room.message").await["data"], json!({ "n": 0 }));

    start_moving(&cluster, &room);
    let started = std::time::Instant::now();
    let refused = a.rooms.broadcast(&room, "n", &json!({ "n": 1 })).await;
    let waited = started.elapsed();
    assert!(
        matches!(refused, Err(RoomsError::Backend(BackendError::Unavailable { .. }))),
        "{refused:?}"
    );
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(6)).contains(&waited),
        "sent again for up to two seconds: {waited:?}"
    );
    let local = alice.event_past_presence("room.message").await;
    assert_eq!((local["offset"].as_u64(), &local["data"]), (None, &json!({ "n": 1 })), "{local}");
}
