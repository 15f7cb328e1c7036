//! The fan-out load generator behind `palisade-fanout`: N members in one room, spread over
//! one or more server nodes, and one publisher, all in this process. The publisher stamps
//! each publication with its clock (nanoseconds since the run began); members read the stamp of every
//! publication they receive and record the delivery latency.
//!
//! Two ways of publishing ([`Plan::rate`]):
//!
//! - **at a fixed rate** of D deliveries per second (D / N publications per second): the
//!   latency a member sees when the server keeps up, and what it loses when it does not;
//! - **flat out**: the publisher keeps at most [`Plan::window`] publications not yet
//!   delivered to every member, and publishes the next as soon as deliveries catch up (a
//!   closed loop; a stall of more than a second lets it go on, and the loss is counted).
//!
//! The server side is any server of palisade's fan-out protocol (`examples/fanout.rs`, the
//! peers of [`crate::fanout_peer`]). Frames other than `joined` and publications (palisade's
//! `presence.join`, sent to the room at every join) are counted apart: the run waits until
//! they stop before it publishes, and reports how long joining everyone took.
//!
//! Like [`crate::load`], it is built to be cheap: frames are parsed as far as their header and
//! the stamp, never decoded as JSON.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use crate::load::{new_histogram, sources_for};
use crate::{handshake, procfs};

/// The mask key of the publisher's frames (a server accepts any).
const MASK: [u8; 4] = [0x1d, 0x5a, 0xc3, 0x07];

/// Handshakes in progress at once, at most: a server busy with the joins before (palisade's
/// presence) must not see its accept queue overflow, which resets connections.
const CONNECTING: usize = 64;

/// How a publication starts on the wire (palisade-rooms' `room.message`).
const PUBLICATION: &[u8] = br#"{"event":"room.message""#;
/// How the member's welcome starts.
const JOINED: &[u8] = br#"{"event":"joined""#;

/// One fan-out run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The nodes members connect to (`/member`), in turn.
    pub nodes: Vec<SocketAddr>,
    /// Where the publisher connects (`/publish`).
    pub publish_at: SocketAddr,
    /// N: members in the room.
    pub members: usize,
    /// Deliveries per second to aim at, or `None` for flat out.
    pub rate: Option<u64>,
    /// Flat out: publications not yet delivered to every member, at most.
    pub window: u64,
    /// Padding bytes in each publication.
    pub pad: usize,
    /// Publishing before measuring.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
    /// The server side's processes (nodes, and Redis), whose CPU time is measured.
    pub server_pids: Vec<u32>,
    /// The first loopback source address, as in [`crate::load::Plan::first_source`].
    pub first_source: u32,
}

const SETUP: u8 = 0;
const WARMUP: u8 = 1;
const MEASURE: u8 = 2;
const STOP: u8 = 3;

/// What the members and the publisher share.
#[derive(Debug)]
struct Shared {
    /// The publisher's clock: stamps are nanoseconds since this instant.
    base: Instant,
    phase: AtomicU8,
    joined: AtomicUsize,
    failed: AtomicUsize,
    /// Publications received, in every phase.
    delivered: AtomicU64,
    /// Publications received while measuring.
    measured: AtomicU64,
    /// Frames that are neither `joined` nor publications (presence).
    other: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
    progress: Notify,
}

impl Shared {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(error);
    }
}

/// Runs `plan` on the current tokio runtime and returns its JSON line.
pub async fn run(plan: Plan) -> Value {
    let shared = Arc::new(Shared {
        base: Instant::now(),
        phase: AtomicU8::new(SETUP),
        joined: 0.into(),
        failed: 0.into(),
        delivered: 0.into(),
        measured: 0.into(),
        other: 0.into(),
        latency: Mutex::new(new_histogram()),
        first_error: Mutex::new(None),
        progress: Notify::new(),
    });
    let sources = sources_for(plan.nodes[0], plan.members, plan.first_source);
    let setup = Instant::now();
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    for i in 0..plan.members {
        let (shared, addr) = (shared.clone(), plan.nodes[i % plan.nodes.len()]);
        let source = sources[i % sources.len()];
        let connecting = connecting.clone();
        tokio::spawn(async move {
            if let Err(e) = member(addr, source, &shared, &connecting).await {
                shared.fail(e);
            }
        });
    }
    // Everyone in, then quiet: palisade sends `presence.join` to the room at every join.
    let deadline = Instant::now() + Duration::from_secs(300);
    while shared.joined.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < plan.members
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = u64::MAX;
    while shared.other.load(Ordering::Relaxed) != seen && Instant::now() < deadline {
        seen = shared.other.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let setup = setup.elapsed().as_secs_f64() - 0.5;
    let presence_frames = shared.other.load(Ordering::Relaxed);
    let live = (plan.members - shared.failed.load(Ordering::Relaxed)) as u64;

    let published = Arc::new(AtomicU64::new(0));
    shared.phase.store(WARMUP, Ordering::Relaxed);
    let publisher = tokio::spawn(publisher(plan.clone(), shared.clone(), published.clone(), live));
    tokio::time::sleep(plan.warmup).await;

    let cpu = |pids: &[u32]| pids.iter().map(|&pid| procfs::cpu_time(pid)).collect::<Vec<_>>();
    let (client_before, server_before) = (procfs::own_cpu_time(), cpu(&plan.server_pids));
    let started = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(plan.duration).await;
    shared.phase.store(STOP, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (client_after, server_after) = (procfs::own_cpu_time(), cpu(&plan.server_pids));
    let share = |before: Option<Duration>, after: Option<Duration>| {
        Some((after? - before?).as_secs_f64() / seconds)
    };
    let server_cpus: Vec<Option<f64>> =
        server_before.iter().zip(&server_after).map(|(b, a)| share(*b, *a)).collect();
    let server_cpu: Option<f64> = server_cpus.iter().copied().sum();
    let publisher_error = match publisher.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(format!("publisher task: {e}")),
    };
    let measured = shared.measured.load(Ordering::Relaxed);

    // What is still on its way gets a moment to arrive; whatever does not is lost.
    let expected = published.load(Ordering::Relaxed) * live;
    let drain = Instant::now() + Duration::from_secs(15);
    let (mut last, mut last_change) = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    while last < expected
        && Instant::now() < drain
        && last_change.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let latency = shared.latency.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let quantile =
        |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1e3);
    let rate = measured as f64 / seconds;
    let errors =
        shared.failed.load(Ordering::Relaxed) as u64 + u64::from(publisher_error.is_some());
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .or(publisher_error);
    json!({
        "members": plan.members,
        "nodes": plan.nodes.len(),
        "mode": if plan.rate.is_some() { "rate" } else { "flat" },
        "target_dps": plan.rate,
        "window": plan.window,
        "pad": plan.pad,
        "setup_s": setup,
        "presence_frames": presence_frames,
        "published": published.load(Ordering::Relaxed),
        "deliveries": measured,
        "seconds": seconds,
        "dps": rate,
        "server_cpu": server_cpu,
        "server_cpus": server_cpus,
        "cpu_us_per_delivery": server_cpu.filter(|_| measured > 0).map(|cpu| cpu * 1e6 / rate),
        "p50_us": quantile(0.5),
        "p99_us": quantile(0.99),
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "errors": errors,
        "first_error": first_error,
        "client_cpu": share(client_before, client_after),
    })
}

/// Opens a connection from `source` to `path` on `addr` and completes the handshake, offering
/// palisade-json's subprotocol (the peers ignore it). Returns the stream and any bytes that
/// came after the `101`.
async fn connect(
    addr: SocketAddr,
    source: IpAddr,
    path: &str,
) -> Result<(TcpStream, Vec<u8>), String> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if !source.is_unspecified() {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
    }
    let mut stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: palisade.json.v1\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("handshake write: {e}"))?;
    let mut buf = Vec::new();
    let head = handshake::read_head(&mut stream, &mut buf)
        .await
        .map_err(|e| format!("handshake read: {e}"))?;
    if !handshake::is_switching(&buf[..head]) {
        let line = String::from_utf8_lossy(&buf[..head]);
        return Err(format!("handshake refused: {}", line.lines().next().unwrap_or("")));
    }
    Ok((stream, buf.split_off(head)))
}

/// One member: reads frames until the connection fails, counting publications and their
/// latency.
async fn member(
    addr: SocketAddr,
    source: IpAddr,
    shared: &Shared,
    connecting: &Semaphore,
) -> Result<(), String> {
    let permit = connecting.acquire().await.map_err(|e| e.to_string())?;
    let (mut stream, leftover) = connect(addr, source, "/member").await?;
    drop(permit);
    let mut buf = vec![0u8; 64 * 1024];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let (mut start, mut end) = (0usize, leftover.len());
    let mut stamps = Vec::new();
    let mut pongs = Vec::new();
    loop {
        let mut publications = 0u64;
        let mut other = 0u64;
        pongs.clear();
        while let Some((opcode, header, len)) = header(&buf[start..end]) {
            if end - start < header + len {
                if header + len > buf.len() {
                    return Err(format!("a frame of {len} bytes, larger than the buffer"));
                }
                break;
            }
            let payload = &buf[start + header..start + header + len];
            start += header + len;
            match opcode {
                0x1 if payload.starts_with(PUBLICATION) => {
                    publications += 1;
                    stamps.push(stamp(payload).ok_or("a publication without a stamp")?);
                }
                0x1 if payload.starts_with(JOINED) => {
                    shared.joined.fetch_add(1, Ordering::Relaxed);
                }
                0x1 => other += 1,
                0x8 => return Err("the server closed the connection".into()),
                // RFC 6455 §5.5.2: a ping gets a pong with its payload (palisade's keepalive
                // closes a member that does not answer, and joining 10,000 takes a while).
                0x9 => masked(0x8a, payload, &mut pongs),
                _ => {}
            }
        }
        if !pongs.is_empty() {
            stream.write_all(&pongs).await.map_err(|e| format!("pong: {e}"))?;
        }
        if start == end {
            (start, end) = (0, 0);
        } else if start > buf.len() / 2 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if other > 0 {
            shared.other.fetch_add(other, Ordering::Relaxed);
        }
        if publications > 0 {
            if shared.phase.load(Ordering::Relaxed) == MEASURE {
                shared.measured.fetch_add(publications, Ordering::Relaxed);
                let now = shared.base.elapsed().as_nanos() as u64;
                let mut latency = shared.latency.lock().unwrap_or_else(PoisonError::into_inner);
                for &t in &stamps {
                    let _ = latency.record(now.saturating_sub(t).max(1));
                }
            }
            stamps.clear();
            shared.delivered.fetch_add(publications, Ordering::Relaxed);
            shared.progress.notify_one();
        }
        let n = stream.read(&mut buf[end..]).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the TCP connection".into());
        }
        end += n;
    }
}

/// The header of an unmasked server frame: opcode, header length and payload length, once
/// the header is complete.
fn header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let [b0, b1, ..] = *bytes else { return None };
    let (len, header) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)), 4),
        127 => (usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?, 10),
        len => (usize::from(len), 2),
    };
    Some((b0 & 0x0f, header, len))
}

/// The publisher's stamp in a publication: the digits after `"t":`.
fn stamp(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(4).position(|w| w == br#""t":"#)? + 4;
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

/// The publisher: publishes until the run stops, at the plan's rate or flat out.
async fn publisher(
    plan: Plan,
    shared: Arc<Shared>,
    published: Arc<AtomicU64>,
    live: u64,
) -> Result<(), String> {
    let (mut stream, _) =
        connect(plan.publish_at, IpAddr::from([127, 0, 0, 1]), "/publish").await?;
    let pad: String = (0..plan.pad).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let started = tokio::time::Instant::now();
    let mut count = 0u64;
    let mut frame = Vec::new();
    while shared.phase.load(Ordering::Relaxed) != STOP {
        match plan.rate {
            Some(rate) => {
                let per_second = rate as f64 / plan.members as f64;
                let due = started + Duration::from_secs_f64(count as f64 / per_second);
                tokio::time::sleep_until(due).await;
            }
            None => {
                // Wait until at most `window` publications are still on their way.
                let stall = Instant::now() + Duration::from_secs(1);
                while shared.delivered.load(Ordering::Relaxed)
                    < (count + 1).saturating_sub(plan.window) * live
                    && Instant::now() < stall
                    && shared.phase.load(Ordering::Relaxed) != STOP
                {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(20), shared.progress.notified())
                            .await;
                }
            }
        }
        let t = shared.base.elapsed().as_nanos() as u64;
        let payload = format!(r#"{{"event":"publish","data":{{"t":{t},"pad":"{pad}"}}}}"#);
        frame.clear();
        masked(0x81, payload.as_bytes(), &mut frame);
        stream.write_all(&frame).await.map_err(|e| format!("publish: {e}"))?;
        count += 1;
        published.store(count, Ordering::Relaxed);
    }
    Ok(())
}

/// `payload` as a masked frame with first byte `b0` (FIN and opcode), appended to `out`.
fn masked(b0: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(b0);
    let len = payload.len();
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_read_from_a_publication() {
        let payload = br#"{"event":"room.message","data":{"room":"bench","event":"tick","data":{"t":1234,"pad":"x"}}}"#;
        assert!(payload.starts_with(PUBLICATION));
        assert_eq!(stamp(payload), Some(1234));
        assert_eq!(stamp(b"{}"), None);
    }

    #[test]
    fn headers_give_their_lengths() {
        assert_eq!(header(&[0x81, 5]), Some((1, 2, 5)));
        assert_eq!(header(&[0x81, 126, 1, 0]), Some((1, 4, 256)));
        assert_eq!(header(&[0x81, 126, 1]), None);
        let mut frame = Vec::new();
        masked(0x81, b"hello", &mut frame);
        assert_eq!(&frame[..2], &[0x81, 0x85]);
        let unmasked: Vec<u8> =
            frame[6..].iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
        assert_eq!(unmasked, b"hello");
    }
}
