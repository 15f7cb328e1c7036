//! The soak generator behind `palisade-load soak` (and `cargo xtask soak`): many connections
//! for a long time against palisade's `examples/soak.rs`, two workloads at once, every message
//! numbered and checked.
//!
//! - **Echo** (half the connections, on `/echo`): each connection keeps [`ECHO_WINDOW`] binary
//!   messages in flight, each carrying its connection's next sequence number, and checks that
//!   the echoes come back in the order sent.
//! - **Rooms** (the other half, on `/room/USER`, subprotocol `palisade.json.v1`): members join
//!   rooms of [`ROOM_SIZE`] through palisade-rooms' JSON protocol (`room.join`); the first
//!   [`PUBLISHERS_PER_ROOM`] members of each room publish a numbered `publish` every
//!   [`PUBLISH_EVERY`], and every other member checks that it receives each publisher's numbers
//!   exactly once and in order.
//!
//! A [`Tracker`] per stream of numbers classifies what arrives: the next number is fine, a
//! number past it is *reordered* (those skipped are remembered as missing), a missing number
//! that arrives late is taken off the missing list, anything else is *duplicated*. When the run
//! stops, publishers and echo senders stop, the generator waits (at most [`DRAIN`]) for what is
//! still on its way, and whatever was sent and never arrived is *lost*. A connection that ends
//! before the generator closes it (a close frame, EOF or error from the server) is an
//! *unexpected close*.
//!
//! The server's resident memory (`VmRSS` from `/proc/PID/status`) is read after the warm-up,
//! with every connection open and traffic flowing, and again at the end of the measured time,
//! before anything is closed: like with like.
//!
//! Unlike [`crate::load`], this generator decodes every frame with tokio-tungstenite and every
//! publication with serde_json: it is built to check, not to be fast.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::load::sources_for;
use crate::procfs;

/// Echo messages in flight per echo connection.
pub const ECHO_WINDOW: u64 = 4;
/// Members per room (the last room may have fewer).
pub const ROOM_SIZE: usize = 50;
/// Members of each room that publish.
pub const PUBLISHERS_PER_ROOM: usize = 2;
/// How often each publisher publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// How long the generator waits, after the run stops, for messages still on their way.
pub const DRAIN: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, at most, so that the server's accept queue never overflows.
const CONNECTING: usize = 64;
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One soak run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The soak server.
    pub addr: SocketAddr,
    /// Connections in all: half echo, half room members.
    pub connections: usize,
    /// Traffic before the first memory reading.
    pub warmup: Duration,
    /// The measured time, from the first memory reading to the second.
    pub duration: Duration,
    /// The server's process, whose resident memory is read.
    pub server_pid: Option<u32>,
    /// The first loopback source address, as in [`crate::load::Plan::first_source`].
    pub first_source: u32,
}

impl Plan {
    fn echo_connections(&self) -> usize {
        self.connections / 2
    }

    fn members(&self) -> usize {
        self.connections - self.echo_connections()
    }

    fn rooms(&self) -> usize {
        self.members().div_ceil(ROOM_SIZE)
    }

    fn publishers(&self) -> usize {
        (0..self.members()).filter(|&m| m % ROOM_SIZE < PUBLISHERS_PER_ROOM).count()
    }
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connecting and joining; nothing is sent yet.
    Setup,
    /// Sending.
    Run,
    /// No more sending: collect what is on its way, then close.
    Stop,
}

/// What every connection adds to.
#[derive(Debug, Default)]
struct Shared {
    /// Connections open (and, for members, joined).
    ready: AtomicUsize,
    /// Connections whose task has ended.
    finished: AtomicUsize,
    messages: AtomicU64,
    sent: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    unexpected_closes: AtomicU64,
    /// Failures that are none of the above: a refused handshake, a refused join, a message
    /// that is not what was sent.
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Publications sent, per member index (zero for members that do not publish).
    published: Vec<AtomicU64>,
    /// Publishers that have sent their last publication.
    publishers_done: AtomicUsize,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(what);
    }
}

/// The numbers of one stream seen so far.
#[derive(Debug, Default)]
pub struct Tracker {
    /// One past the highest number seen.
    next: u64,
    /// Numbers below `next` not seen yet.
    missing: BTreeSet<u64>,
}

/// How a number fitted its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one.
    InOrder,
    /// Past the next one: those in between are missing for now.
    Reordered,
    /// One that was missing, arriving late (already counted as reordered).
    Late,
    /// One seen before.
    Duplicated,
}

impl Tracker {
    /// Classifies `seq`.
    pub fn see(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            Seen::InOrder
        } else if seq > self.next {
            self.missing.extend(self.next..seq);
            self.next = seq + 1;
            Seen::Reordered
        } else if self.missing.remove(&seq) {
            Seen::Late
        } else {
            Seen::Duplicated
        }
    }

    /// Different numbers seen.
    pub fn distinct(&self) -> u64 {
        self.next - self.missing.len() as u64
    }

    /// Of the numbers `0..sent`, those never seen.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.distinct())
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages received and checked: echoes and deliveries.
    pub messages: u64,
    /// Messages sent: echo messages and publications.
    pub sent: u64,
    /// Messages received per second during the measured time.
    pub rate: f64,
    /// Messages sent and never received (see the module docs).
    pub lost: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Messages that arrived past one still missing.
    pub reordered: u64,
    /// Connections the server ended before the generator closed them.
    pub unexpected_closes: u64,
    /// Other failures: refused handshakes or joins, frames that were never sent.
    pub errors: u64,
    /// The first failure, for the log.
    pub first_error: Option<String>,
    /// The server's resident memory after the warm-up, in bytes.
    pub rss_start: Option<u64>,
    /// The server's resident memory at the end of the measured time, in bytes.
    pub rss_end: Option<u64>,
    /// The measured time.
    pub measured: Duration,
}

impl Outcome {
    /// The JSON line `palisade-load soak` prints last.
    pub fn to_json(&self, plan: &Plan) -> Value {
        let mib = |b: Option<u64>| b.map(|b| b as f64 / (1024.0 * 1024.0));
        json!({
            "connections": plan.connections,
            "echo_connections": plan.echo_connections(),
            "members": plan.members(),
            "rooms": plan.rooms(),
            "publishers": plan.publishers(),
            "warmup_s": plan.warmup.as_secs_f64(),
            "seconds": plan.duration.as_secs_f64(),
            "measured_s": self.measured.as_secs_f64(),
            "messages": self.messages,
            "sent": self.sent,
            "rate": self.rate,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "unexpected_closes": self.unexpected_closes,
            "errors": self.errors,
            "first_error": self.first_error,
            "rss_start_mib": mib(self.rss_start),
            "rss_end_mib": mib(self.rss_end),
        })
    }
}

/// Runs `plan`, printing progress lines on standard output.
pub async fn run(plan: Plan) -> Outcome {
    let members = plan.members();
    let shared = Arc::new(Shared {
        published: (0..members).map(|_| AtomicU64::new(0)).collect(),
        ..Shared::default()
    });
    let (phase_tx, phase) = watch::channel(Phase::Setup);
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let sources = sources_for(plan.addr, plan.connections, plan.first_source);
    let mut tasks = Vec::with_capacity(plan.connections);
    for n in 0..plan.connections {
        let source = sources[n % sources.len()];
        let (shared, phase, connecting) = (shared.clone(), phase.clone(), connecting.clone());
        let addr = plan.addr;
        let echo = n < plan.echo_connections();
        let member = n.saturating_sub(plan.echo_connections());
        tasks.push(tokio::spawn(async move {
            if echo {
                echo_connection(addr, source, &shared, phase, &connecting).await;
            } else {
                room_member(addr, source, member, &shared, phase, &connecting).await;
            }
            shared.finished.fetch_add(1, Ordering::Relaxed);
        }));
    }

    // Setup: everyone connected (and joined), or given up.
    let started = Instant::now();
    loop {
        let (ready, finished) =
            (shared.ready.load(Ordering::Relaxed), shared.finished.load(Ordering::Relaxed));
        if ready + finished >= plan.connections {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "soak: {} connections open in {:.1} s ({} echo, {} members in {} rooms, {} publishers)",
        shared.ready.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        plan.echo_connections(),
        members,
        plan.rooms(),
        plan.publishers(),
    );

    let _ = phase_tx.send(Phase::Run);
    tokio::time::sleep(plan.warmup).await;
    let rss = || plan.server_pid.and_then(procfs::rss_bytes);
    let rss_start = rss();
    let measure_start = Instant::now();
    let messages_start = shared.messages.load(Ordering::Relaxed);
    println!(
        "soak: warm-up of {:.0} s done, server RSS {}",
        plan.warmup.as_secs_f64(),
        show_mib(rss_start)
    );
    let mut last = (measure_start, messages_start);
    while measure_start.elapsed() < plan.duration {
        let left = plan.duration.saturating_sub(measure_start.elapsed());
        tokio::time::sleep(left.min(PROGRESS_EVERY)).await;
        let now = (Instant::now(), shared.messages.load(Ordering::Relaxed));
        let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
        println!(
            "soak: {:>4.0} s, {} messages, {:.0} messages/s, {} lost so far, {} unexpected \
             closes, server RSS {}",
            measure_start.elapsed().as_secs_f64(),
            now.1,
            rate,
            shared.lost.load(Ordering::Relaxed),
            shared.unexpected_closes.load(Ordering::Relaxed),
            show_mib(rss()),
        );
        last = now;
    }
    let rss_end = rss();
    let measured = measure_start.elapsed();
    let measured_messages = shared.messages.load(Ordering::Relaxed) - messages_start;

    let _ = phase_tx.send(Phase::Stop);
    println!("soak: stopping; waiting for what is on its way");
    for task in tasks {
        if let Err(e) = task.await {
            shared.error(format!("a connection's task failed: {e}"));
        }
    }
    let first_error = shared.first_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Outcome {
        messages: shared.messages.load(Ordering::Relaxed),
        sent: shared.sent.load(Ordering::Relaxed),
        rate: measured_messages as f64 / measured.as_secs_f64(),
        lost: shared.lost.load(Ordering::Relaxed),
        duplicated: shared.duplicated.load(Ordering::Relaxed),
        reordered: shared.reordered.load(Ordering::Relaxed),
        unexpected_closes: shared.unexpected_closes.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
        rss_start,
        rss_end,
        measured,
    }
}

fn show_mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
}

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket from `source` to `path`, offering `subprotocol`.
async fn open(
    addr: SocketAddr,
    source: IpAddr,
    path: &str,
    subprotocol: Option<&str>,
    connecting: &Semaphore,
) -> Result<Ws, String> {
    let _permit = connecting.acquire().await.map_err(|e| e.to_string())?;
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if !source.is_unspecified() {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut request =
        format!("ws://{addr}{path}").into_client_request().map_err(|e| e.to_string())?;
    if let Some(protocol) = subprotocol {
        let value = HeaderValue::from_str(protocol).map_err(|e| e.to_string())?;
        request.headers_mut().insert("sec-websocket-protocol", value);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| format!("handshake {path}: {e}"))?;
    Ok(ws)
}

/// Waits until the run leaves `phase` (or the run is gone); returns the new phase.
async fn past(phase: &mut watch::Receiver<Phase>, current: Phase) -> Phase {
    let _ = phase.wait_for(|p| *p != current).await;
    *phase.borrow()
}

/// What ended a connection's reading, when it was not the generator's close.
fn unexpected(end: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match end {
        None => "the server ended the connection (EOF)".to_owned(),
        Some(Ok(Message::Close(frame))) => format!("the server closed the connection: {frame:?}"),
        Some(Ok(other)) => format!("unexpected {other:?}"),
        Some(Err(e)) => format!("the connection failed: {e}"),
    }
}

/// Resolves at the end of the drain, once the run is stopping; never before.
async fn drained(stopping: Option<tokio::time::Instant>) {
    match stopping {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Closes with 1000 and reads until the server's close arrives (bounded).
async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// One echo connection: [`ECHO_WINDOW`] numbered binary messages in flight while the run
/// lasts, each echo checked.
async fn echo_connection(
    addr: SocketAddr,
    source: IpAddr,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
    connecting: &Semaphore,
) {
    let mut ws = match open(addr, source, "/echo", None, connecting).await {
        Ok(ws) => ws,
        Err(e) => return shared.error(e),
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    if past(&mut phase, Phase::Setup).await != Phase::Run {
        return close(ws).await;
    }
    let message = |seq: u64| Message::binary(seq.to_le_bytes().repeat(2));
    let mut tracker = Tracker::default();
    let mut sent = 0u64;
    for _ in 0..ECHO_WINDOW {
        if ws.send(message(sent)).await.is_err() {
            break;
        }
        sent += 1;
    }
    shared.sent.fetch_add(sent, Ordering::Relaxed);
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        if stopping.is_some() && tracker.distinct() >= sent {
            break;
        }
        let next = tokio::select! {
            next = ws.next() => next,
            _ = phase.changed(), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + DRAIN);
                continue;
            }
            () = drained(stopping) => break,
        };
        let bytes = match next {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            end => {
                shared.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                shared.error(unexpected(end));
                shared.lost.fetch_add(tracker.lost(sent), Ordering::Relaxed);
                return;
            }
        };
        let seq = match <[u8; 16]>::try_from(&bytes[..]) {
            Ok(b) if b[..8] == b[8..] => {
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            _ => {
                shared.error(format!("an echo that was never sent: {bytes:02x?}"));
                continue;
            }
        };
        if seq >= sent {
            shared.error(format!("an echo of {seq}, which was never sent"));
            continue;
        }
        shared.messages.fetch_add(1, Ordering::Relaxed);
        match tracker.see(seq) {
            Seen::InOrder | Seen::Late => {}
            Seen::Reordered => {
                shared.reordered.fetch_add(1, Ordering::Relaxed);
            }
            Seen::Duplicated => {
                shared.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
        if stopping.is_none() {
            if ws.send(message(sent)).await.is_err() {
                continue;
            }
            sent += 1;
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.lost.fetch_add(tracker.lost(sent), Ordering::Relaxed);
    close(ws).await;
}

/// One room member: joins its room, publishes if it is one of the room's first
/// [`PUBLISHERS_PER_ROOM`], and checks every publication of the others.
async fn room_member(
    addr: SocketAddr,
    source: IpAddr,
    index: usize,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
    connecting: &Semaphore,
) {
    let path = format!("/room/u{index}");
    let mut ws = match open(addr, source, &path, Some("palisade.json.v1"), connecting).await {
        Ok(ws) => ws,
        Err(e) => return shared.error(e),
    };
    let room_number = index / ROOM_SIZE;
    let room = format!("r{room_number}");
    let join = json!({ "event": "room.join", "id": 1, "data": { "room": room } });
    if let Err(e) = ws.send(Message::text(join.to_string())).await {
        return shared.error(format!("{path}: sending room.join: {e}"));
    }
    // The reply, past the presence events of members joining at the same time.
    loop {
        let frame = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(end) => return shared.error(format!("{path}: joining: {}", unexpected(end))),
            Err(_) => return shared.error(format!("{path}: no reply to room.join in 30 s")),
        };
        let value: Value = serde_json::from_str(frame.as_str()).unwrap_or(Value::Null);
        if value["reply"] == 1 {
            if value["status"] != "ok" {
                return shared.error(format!("{path}: room.join refused: {value}"));
            }
            break;
        }
    }
    shared.ready.fetch_add(1, Ordering::Relaxed);
    if past(&mut phase, Phase::Setup).await != Phase::Run {
        return close(ws).await;
    }

    let first = room_number * ROOM_SIZE;
    let last = (first + ROOM_SIZE).min(shared.published.len());
    let publishers: Vec<usize> =
        (first..last).filter(|&m| m % ROOM_SIZE < PUBLISHERS_PER_ROOM && m != index).collect();
    let publishes = index % ROOM_SIZE < PUBLISHERS_PER_ROOM;
    let total_publishers =
        (0..shared.published.len()).filter(|&m| m % ROOM_SIZE < PUBLISHERS_PER_ROOM).count();
    let mut trackers: HashMap<usize, Tracker> = HashMap::new();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<tokio::time::Instant> = None;
    let all_arrived = |trackers: &HashMap<usize, Tracker>| {
        shared.publishers_done.load(Ordering::Acquire) == total_publishers
            && publishers.iter().all(|p| {
                let sent = shared.published[*p].load(Ordering::Acquire);
                trackers.get(p).map_or(0, Tracker::distinct) >= sent
            })
    };
    loop {
        if stopping.is_some() && all_arrived(&trackers) {
            break;
        }
        let next = tokio::select! {
            next = ws.next() => next,
            _ = tick.tick(), if publishes || stopping.is_some() => {
                if stopping.is_some() {
                    // Draining: look again whether everything has arrived.
                    continue;
                }
                let publish = json!({ "event": "publish", "data": { "room": room, "seq": seq } });
                if let Err(e) = ws.send(Message::text(publish.to_string())).await {
                    shared.error(format!("{path}: publishing: {e}"));
                    continue;
                }
                seq += 1;
                shared.published[index].store(seq, Ordering::Release);
                shared.sent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ = phase.changed(), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + DRAIN);
                if publishes {
                    shared.publishers_done.fetch_add(1, Ordering::AcqRel);
                }
                continue;
            }
            () = drained(stopping) => break,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            end => {
                shared.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("{path}: {}", unexpected(end)));
                if publishes && stopping.is_none() {
                    shared.publishers_done.fetch_add(1, Ordering::AcqRel);
                }
                break;
            }
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        match value["event"].as_str() {
            Some("room.message") if value["data"]["event"] == "pub" => {}
            Some("presence.join" | "presence.leave") => continue,
            _ => {
                shared.error(format!("{path}: unexpected frame {text}"));
                continue;
            }
        }
        let publication = &value["data"]["data"];
        let from = publication["from"].as_str().and_then(|f| f.strip_prefix('u'));
        let (Some(from), Some(n)) =
            (from.and_then(|f| f.parse::<usize>().ok()), publication["seq"].as_u64())
        else {
            shared.error(format!("{path}: a publication without sender or number: {text}"));
            continue;
        };
        if !publishers.contains(&from) {
            shared.error(format!("{path}: a publication from u{from}, not of this room"));
            continue;
        }
        shared.messages.fetch_add(1, Ordering::Relaxed);
        match trackers.entry(from).or_default().see(n) {
            Seen::InOrder | Seen::Late => {}
            Seen::Reordered => {
                shared.reordered.fetch_add(1, Ordering::Relaxed);
            }
            Seen::Duplicated => {
                shared.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for p in &publishers {
        let sent = shared.published[*p].load(Ordering::Acquire);
        let lost = trackers.get(p).map_or(sent, |t| t.lost(sent));
        shared.lost.fetch_add(lost, Ordering::Relaxed);
    }
    close(ws).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_tells_order_gaps_late_arrivals_and_duplicates() {
        let mut t = Tracker::default();
        assert_eq!(t.see(0), Seen::InOrder);
        assert_eq!(t.see(1), Seen::InOrder);
        assert_eq!(t.see(4), Seen::Reordered);
        assert_eq!((t.distinct(), t.lost(5)), (3, 2));
        assert_eq!(t.see(2), Seen::Late);
        assert_eq!(t.see(2), Seen::Duplicated);
        assert_eq!(t.see(4), Seen::Duplicated);
        assert_eq!(t.see(3), Seen::Late);
        assert_eq!((t.distinct(), t.lost(5), t.lost(7)), (5, 0, 2));
    }

    #[test]
    fn connections_split_into_echo_members_rooms_and_publishers() {
        let plan = Plan {
            addr: "127.0.0.1:1".parse().expect("an address"),
            connections: 2000,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            server_pid: None,
            first_source: 1,
        };
        assert_eq!((plan.echo_connections(), plan.members()), (1000, 1000));
        assert_eq!((plan.rooms(), plan.publishers()), (20, 40));
        let small = Plan { connections: 101, ..plan };
        assert_eq!((small.echo_connections(), small.members()), (50, 51));
        assert_eq!((small.rooms(), small.publishers()), (2, 3));
    }
}
