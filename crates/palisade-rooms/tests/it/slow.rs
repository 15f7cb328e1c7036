//! Slow consumers: one member that stops reading delays nobody and holds at most its queue.

use palisade_rooms::{MemberStats, RoomsConfig, SessionId, SlowConsumer};

use super::*;

const CAPACITY: usize = 16;
/// Enough to fill the loopback socket's buffers and the connection's write buffer many times.
const COUNT: u64 = 400;

/// Publishes `COUNT` large messages to a room with a fast and a slow member under `policy`;
/// the fast one reads everything as it comes. Returns the slow member's peer and stats, and
/// the fast peer (kept connected: its leaving would be one more event in the slow queue).
async fn run(policy: SlowConsumer) -> (Peer, MemberStats, Peer) {
    let config = RoomsConfig::default().with_queue_capacity(CAPACITY).with_slow_consumer(policy);
    let node = Node::start(config).await;
    let mut fast = Peer::open(node.addr(), "fast").await;
    let mut slow = Peer::open(node.addr(), "slow").await;
    fast.join("big").await;
    slow.join("big").await;
    fast.event("presence.join").await;
    let fast_member = node.rooms.member(&SessionId::from(fast.session.clone())).unwrap();
    let slow_member = node.rooms.member(&SessionId::from(slow.session.clone())).unwrap();
    let reader = tokio::spawn(async move {
        for n in 0..COUNT {
            let message = fast.event("room.message").await;
            assert_eq!(message["data"]["n"], n, "the fast member gets every message, in order");
        }
        fast
    });
    let pad = "x".repeat(64 * 1024);
    for n in 0..COUNT {
        node.rooms.broadcast("big", "blob", &json!({ "n": n, "pad": pad })).await.unwrap();
        // The fast member keeps up whatever the slow one does.
        eventually("the fast member's queue drains", || fast_member.stats().queued == 0).await;
    }
    let fast =
        tokio::time::timeout(WAIT, reader).await.expect("the fast member read everything").unwrap();
    let stats = slow_member.stats();
    assert!(stats.max_queued <= CAPACITY, "bounded: {stats:?}");
    assert!(stats.dropped > 0, "the slow member fell behind: {stats:?}");
    (slow, stats, fast)
}

/// The `n` of every blob the slow peer reads until `last` or the end.
async fn drain(slow: &mut Peer, expected: u64) -> Vec<u64> {
    let mut ns = Vec::new();
    while (ns.len() as u64) < expected {
        let message = slow.event("room.message").await;
        ns.push(message["data"]["n"].as_u64().unwrap());
    }
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest() {
    let (mut slow, stats, _fast) = run(SlowConsumer::DropOldest).await;
    let ns = drain(&mut slow, COUNT - stats.dropped).await;
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(ns.last(), Some(&(COUNT - 1)), "the newest was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_the_oldest() {
    let (mut slow, stats, _fast) = run(SlowConsumer::DropNewest).await;
    let ns = drain(&mut slow, COUNT - stats.dropped).await;
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(ns.last(), Some(&(COUNT - stats.dropped - 1)), "the newest were dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_slow_member_with_its_code() {
    let (slow, stats, _fast) = run(SlowConsumer::Close(CloseCode::TRY_AGAIN_LATER)).await;
    assert!(stats.closed_slow);
    assert_eq!(stats.queued, 0, "its queue is gone at once");
    assert_eq!(slow.closed_with().await, CloseCode::TRY_AGAIN_LATER);
}
