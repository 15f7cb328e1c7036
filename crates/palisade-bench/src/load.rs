//! The load generator: C connections, each keeping W binary messages of S bytes in flight to an
//! echo server, with a warm-up before the measured interval. With [`Plan::deflate`] it offers
//! permessage-deflate and sends compressed JSON-like text (see [`crate::deflate`]).
//!
//! It is built to stay cheap so that the server is what is measured: every message is the same
//! pre-masked frame written from one shared buffer, replies are parsed only as far as their
//! headers (payloads are skipped, never copied or unmasked), and each connection writes all the
//! frames its replies released with one `write` call. The generator reports the CPU time it used
//! during the measured interval, as a fraction of one core, so a run can show it was not the
//! bottleneck.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::procfs;
use crate::{deflate, handshake};

/// How many connections share one source address: well under the 28,000 ephemeral ports Linux
/// offers per address by default.
pub const CONNECTIONS_PER_SOURCE: usize = 20_000;

/// The mask key of every frame the generator sends. RFC 6455 asks browsers for unpredictable keys;
/// a server must accept any key, and a fixed one lets the frame be masked once.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How long the connections may take to wind down after the measured interval before they are
/// counted as stalled.
const GRACE: Duration = Duration::from_secs(10);

/// One load run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The echo server.
    pub addr: SocketAddr,
    /// C: concurrent connections.
    pub connections: usize,
    /// S: payload bytes per message.
    pub size: usize,
    /// W: messages in flight per connection.
    pub window: usize,
    /// Load applied before measuring.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
    /// The server's process id, to report its CPU use too.
    pub server_pid: Option<u32>,
    /// The first loopback source address to use, counted from 127.0.0.0 (see [`sources_for`]).
    pub first_source: u32,
    /// Offer permessage-deflate (a run fails if the server does not agree) and send
    /// compressible text, compressed.
    pub deflate: bool,
    /// Send a JSON event of S bytes in a text frame, `{"event":"echo","data":{"seq":…,
    /// "text":…}}`, and expect the same event back (see [`json_event`]): the typed-echo case.
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Round trips completed in the measured interval.
    pub round_trips: u64,
    /// The measured interval as it actually ran.
    pub seconds: f64,
    /// Round-trip latency over the measured interval, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Payload bytes of the replies counted in `round_trips`, as they came on the wire
    /// (compressed, with permessage-deflate).
    pub reply_bytes: u64,
    /// Connections that failed (connect, handshake, unexpected frame, EOF, stall).
    pub errors: u64,
    /// The first error, for the log.
    pub first_error: Option<String>,
    /// The generator's CPU use over the measured interval, in cores.
    pub client_cpu: Option<f64>,
    /// The server's CPU use over the measured interval, in cores.
    pub server_cpu: Option<f64>,
    /// TCP segments the server's sockets sent over the measured interval (data and pure
    /// ACKs; see [`procfs::segments_out`]).
    pub server_segments: Option<u64>,
}

impl Outcome {
    /// Round trips per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.round_trips as f64 / self.seconds } else { 0.0 }
    }

    /// The run as one JSON object, the line `palisade-load` prints.
    pub fn to_json(&self, plan: &Plan) -> Value {
        let per_echo = |count: Option<u64>| {
            count.filter(|_| self.round_trips > 0).map(|n| n as f64 / self.round_trips as f64)
        };
        let quantile = |q: f64| {
            (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1e3)
        };
        json!({
            "connections": plan.connections,
            "size": plan.size,
            "window": plan.window,
            "deflate": plan.deflate,
            "json": plan.json,
            "round_trips": self.round_trips,
            "seconds": self.seconds,
            "rps": self.rate(),
            "mb_per_s": self.rate() * plan.size as f64 / 1e6,
            "p50_us": quantile(0.5),
            "p99_us": quantile(0.99),
            "errors": self.errors,
            "first_error": self.first_error,
            "client_cpu": self.client_cpu,
            "server_cpu": self.server_cpu,
            "server_segments": self.server_segments,
            "segments_per_echo": per_echo(self.server_segments),
            "reply_bytes_per_echo": per_echo(Some(self.reply_bytes)),
        })
    }
}

/// Where a run is; the connections read it after every read from the socket.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// State the connections share with the run.
#[derive(Debug)]
struct Shared {
    phase: AtomicU8,
    connected: AtomicUsize,
    failed: AtomicUsize,
}

/// What one connection measured.
#[derive(Debug)]
struct ConnStats {
    round_trips: u64,
    latency: Histogram<u64>,
    reply_bytes: u64,
}

/// A histogram of latencies in nanoseconds, from 1 ns to 100 s at 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("the bounds are valid")
}

/// Runs `plan` on the current tokio runtime (the binary uses a single-threaded one).
pub async fn run(plan: Plan) -> Outcome {
    let shared =
        Arc::new(Shared { phase: AtomicU8::new(WARMUP), connected: 0.into(), failed: 0.into() });
    let frames =
        if plan.json { Frames::json(plan.size) } else { Frames::new(plan.size, plan.deflate) };
    let sources = sources_for(plan.addr, plan.connections, plan.first_source);
    let mut tasks = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        // Connections start at different messages, so that they do not all send the same one.
        let (shared, frames, addr) = (shared.clone(), frames.starting_at(i), plan.addr);
        let (source, window, deflate) = (sources[i % sources.len()], plan.window, plan.deflate);
        tasks.push(tokio::spawn(async move {
            let result = connection(addr, source, frames, window, deflate, &shared).await;
            if result.is_err() {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            result
        }));
    }
    // Warm-up starts once every connection has its handshake done (or has failed).
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < plan.connections
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(plan.warmup).await;

    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_time);
    // Segments only for a server whose CPU is measured too: `ss` costs a few milliseconds,
    // read just outside the measured interval.
    let segments = || plan.server_pid.and_then(|_| procfs::segments_out(plan.addr.port()));
    let segments_before = segments();
    let (client_before, server_before) = (procfs::own_cpu_time(), cpu(plan.server_pid));
    let started = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(plan.duration).await;
    shared.phase.store(STOP, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (client_after, server_after) = (procfs::own_cpu_time(), cpu(plan.server_pid));
    let segments_after = segments();
    let delta = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    let share = |before: Option<Duration>, after: Option<Duration>| {
        Some((after? - before?).as_secs_f64() / seconds)
    };

    let mut outcome = Outcome {
        round_trips: 0,
        seconds,
        latency: new_histogram(),
        reply_bytes: 0,
        errors: 0,
        first_error: None,
        client_cpu: share(client_before, client_after),
        server_cpu: share(server_before, server_after),
        server_segments: delta(segments_before, segments_after),
    };
    let deadline = tokio::time::Instant::now() + GRACE;
    for task in tasks {
        let result = match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("connection task failed: {join}")),
            Err(_) => Err(format!("no reply within {GRACE:?} of the end")),
        };
        match result {
            Ok(stats) => {
                outcome.round_trips += stats.round_trips;
                outcome.reply_bytes += stats.reply_bytes;
                // Both histograms have the same bounds, so adding cannot fail.
                let _ = outcome.latency.add(&stats.latency);
            }
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(e);
            }
        }
    }
    outcome
}

/// The source addresses to spread `connections` over for a loopback server: enough to stay
/// under [`CONNECTIONS_PER_SOURCE`] each, starting at 127.0.0.0 + `first` (so `first = 1` gives
/// 127.0.0.1, 127.0.0.2, …). Runs that follow each other use different `first`s, so that the
/// ports a previous run left in `TIME_WAIT` do not run out. Any other server gets the unspecified
/// address: the kernel's choice.
pub fn sources_for(addr: SocketAddr, connections: usize, first: u32) -> Vec<IpAddr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let count = connections.div_ceil(CONNECTIONS_PER_SOURCE).max(1) as u32;
            let base = u32::from(Ipv4Addr::new(127, 0, 0, 0)) + first.clamp(1, 0xff_fffe - count);
            (base..base + count).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))).collect()
        }
        IpAddr::V4(_) => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        IpAddr::V6(_) => vec![IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)],
    }
}

/// The messages a connection sends, as ready-masked frames, taken in turn.
#[derive(Debug, Clone)]
pub struct Frames {
    frames: Arc<[Vec<u8>]>,
    next: usize,
    /// The payload length of the echoes, when it is known (uncompressed runs).
    reply_len: Option<u64>,
    /// The opcode of the echoes: binary, or text for JSON.
    reply_opcode: u8,
}

impl Frames {
    /// One frame of `size` bytes, or with `deflate` [`deflate::VARIANTS`] different compressed
    /// messages of `size` bytes of text each.
    pub fn new(size: usize, deflate: bool) -> Self {
        if !deflate {
            return Self {
                frames: vec![masked_frame(size)].into(),
                next: 0,
                reply_len: Some(size as u64),
                reply_opcode: 0x2,
            };
        }
        let frames = (0..deflate::VARIANTS as u64)
            .map(|seed| masked(&deflate::compress(&deflate::text(size, seed)), 0x80 | 0x40 | 0x2))
            .collect();
        Self { frames, next: 0, reply_len: None, reply_opcode: 0x2 }
    }

    /// One text frame with a JSON event of `size` bytes ([`json_event`]); the echo is the same
    /// event, of the same length when the server writes its fields in their order without
    /// spaces (serde's compact output).
    pub fn json(size: usize) -> Self {
        let payload = json_event(size);
        let len = payload.len() as u64;
        Self {
            frames: vec![masked(&payload, 0x81)].into(),
            next: 0,
            reply_len: Some(len),
            reply_opcode: 0x1,
        }
    }

    /// The same frames, starting at the `i`th.
    pub fn starting_at(&self, i: usize) -> Self {
        Self { next: i % self.frames.len(), ..self.clone() }
    }

    /// The next frame to send.
    pub fn next_frame(&mut self) -> &[u8] {
        let frame = &self.frames[self.next];
        self.next = (self.next + 1) % self.frames.len();
        frame
    }

    /// The length of the longest frame, to judge what fits in socket buffers.
    fn max_len(&self) -> usize {
        self.frames.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Opens a TCP connection from `source` and completes the WebSocket handshake, offering
/// permessage-deflate if `deflate` (and failing if the server does not agree). Returns the
/// stream and any bytes that arrived after the `101` response.
pub async fn connect(
    addr: SocketAddr,
    source: IpAddr,
    deflate: bool,
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
    let request = handshake::client_request(&addr.to_string(), deflate.then_some(deflate::OFFER));
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("handshake write: {e}"))?;
    let mut buf = Vec::new();
    let head = handshake::read_head(&mut stream, &mut buf)
        .await
        .map_err(|e| format!("handshake read: {e}"))?;
    if !handshake::is_switching(&buf[..head]) {
        let line = String::from_utf8_lossy(&buf[..head]);
        return Err(format!("handshake refused: {}", line.lines().next().unwrap_or("")));
    }
    if deflate && !deflate::agreed(handshake::header(&buf[..head], "sec-websocket-extensions")) {
        return Err("the server did not agree to permessage-deflate".to_owned());
    }
    Ok((stream, buf.split_off(head)))
}

/// One connection: handshake, then echo round trips until the run stops.
async fn connection(
    addr: SocketAddr,
    source: IpAddr,
    frames: Frames,
    window: usize,
    deflate: bool,
    shared: &Shared,
) -> Result<ConnStats, String> {
    let (stream, leftover) = connect(addr, source, deflate).await?;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let (read, write) = stream.into_split();
    let (reply_len, reply_opcode) = (frames.reply_len, frames.reply_opcode);
    if window * frames.max_len() <= INLINE_WRITES {
        // Everything in flight fits in the socket buffers: write from the reader, which saves a
        // wake-up per batch.
        let sink = Sink::Inline { write, frames, batch: Vec::new() };
        return reader(read, leftover, sink, (reply_opcode, reply_len), window, shared).await;
    }
    // The writer runs beside the reader so that a large message being written never stops the
    // replies from being read (which could deadlock both ends on full socket buffers).
    let (sends, to_send) = mpsc::unbounded_channel();
    let writer = writer(write, to_send, frames);
    let reader =
        reader(read, leftover, Sink::Writer(sends), (reply_opcode, reply_len), window, shared);
    let (read_result, write_result) = tokio::join!(reader, writer);
    let stats = read_result?;
    write_result?;
    Ok(stats)
}

/// Up to this many bytes in flight per connection, the reader writes the next messages itself.
const INLINE_WRITES: usize = 32 * 1024;

/// Where the reader sends the messages its replies released.
enum Sink {
    /// Written by the reader.
    Inline { write: OwnedWriteHalf, frames: Frames, batch: Vec<u8> },
    /// Counted to the writer running beside the reader.
    Writer(mpsc::UnboundedSender<usize>),
}

impl Sink {
    async fn send(&mut self, count: usize) -> Result<(), String> {
        match self {
            Sink::Inline { write, frames, batch } => {
                let bytes: &[u8] = if count == 1 {
                    frames.next_frame()
                } else {
                    batch.clear();
                    for _ in 0..count {
                        batch.extend_from_slice(frames.next_frame());
                    }
                    batch
                };
                write.write_all(bytes).await.map_err(|e| format!("write: {e}"))
            }
            Sink::Writer(sends) => sends.send(count).map_err(|_| "writer gone".to_owned()),
        }
    }
}

/// Writes a frame for every count received, batching what has queued up.
async fn writer(
    mut write: OwnedWriteHalf,
    mut to_send: mpsc::UnboundedReceiver<usize>,
    mut frames: Frames,
) -> Result<(), String> {
    let mut batch = Vec::new();
    while let Some(mut count) = to_send.recv().await {
        while let Ok(more) = to_send.try_recv() {
            count += more;
        }
        let result = if frames.max_len() >= 16 * 1024 || count == 1 {
            let mut result = Ok(());
            for _ in 0..count {
                result = write.write_all(frames.next_frame()).await;
                if result.is_err() {
                    break;
                }
            }
            result
        } else {
            batch.clear();
            for _ in 0..count {
                batch.extend_from_slice(frames.next_frame());
            }
            write.write_all(&batch).await
        };
        result.map_err(|e| format!("write: {e}"))?;
    }
    Ok(())
}

/// What the reader is in the middle of.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    opcode: u8,
    fin: bool,
    len: u64,
    remaining: u64,
}

/// Reads replies, matches each to the oldest message in flight, and asks the writer for a new
/// message per reply. Replies must be whole messages of `reply_opcode`, of `reply_len` bytes
/// if given.
async fn reader(
    mut read: OwnedReadHalf,
    leftover: Vec<u8>,
    mut sink: Sink,
    (reply_opcode, reply_len): (u8, Option<u64>),
    window: usize,
    shared: &Shared,
) -> Result<ConnStats, String> {
    let mut stats = ConnStats { round_trips: 0, latency: new_histogram(), reply_bytes: 0 };
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let now = Instant::now();
    in_flight.extend(std::iter::repeat_n(now, window));
    sink.send(window).await?;

    let mut buf = vec![0u8; 64 * 1024];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let (mut start, mut end) = (0usize, leftover.len());
    let mut current: Option<InFrame> = None;
    loop {
        let (mut done, mut done_bytes) = (0usize, 0u64);
        loop {
            let frame = match current {
                Some(frame) => frame,
                None => match parse_header(&buf[start..end]) {
                    Some((frame, header_len)) => {
                        start += header_len;
                        frame
                    }
                    None => break,
                },
            };
            let take = frame.remaining.min((end - start) as u64);
            start += take as usize;
            let frame = InFrame { remaining: frame.remaining - take, ..frame };
            if frame.remaining > 0 {
                current = Some(frame);
                break;
            }
            current = None;
            match frame.opcode {
                op if op == reply_opcode
                    && frame.fin
                    && reply_len.is_none_or(|len| frame.len == len) =>
                {
                    done += 1;
                    done_bytes += frame.len;
                }
                // Pings and pongs from a keepalive: nothing to do within a short run.
                0x9 | 0xA => {}
                0x8 => return Err("the server closed the connection".into()),
                opcode => {
                    return Err(format!(
                        "unexpected frame: opcode {opcode:#x}, fin {}, {} bytes (expected {})",
                        frame.fin,
                        frame.len,
                        reply_len.map_or("any length".to_owned(), |len| format!("{len} bytes"))
                    ));
                }
            }
        }
        if start == end {
            (start, end) = (0, 0);
        } else if start > buf.len() / 2 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }

        if done > 0 {
            let now = Instant::now();
            let phase = shared.phase.load(Ordering::Relaxed);
            if phase == MEASURE {
                stats.reply_bytes += done_bytes;
            }
            for _ in 0..done {
                let sent = in_flight.pop_front().ok_or("more replies than messages sent")?;
                if phase == MEASURE {
                    stats.round_trips += 1;
                    let nanos = now.duration_since(sent).as_nanos() as u64;
                    let _ = stats.latency.record(nanos.max(1));
                }
            }
            if phase == STOP {
                return Ok(stats);
            }
            in_flight.extend(std::iter::repeat_n(now, done));
            sink.send(done).await?;
        }

        let n = read.read(&mut buf[end..]).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the TCP connection".into());
        }
        end += n;
    }
}

/// Parses a frame header: the frame and the header's length, or `None` when incomplete.
fn parse_header(bytes: &[u8]) -> Option<(InFrame, usize)> {
    let [b0, b1, ..] = *bytes else { return None };
    let masked = b1 & 0x80 != 0;
    let (len, mut header_len) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        len => (u64::from(len), 2),
    };
    if masked {
        header_len += 4;
    }
    if bytes.len() < header_len {
        return None;
    }
    let frame = InFrame { opcode: b0 & 0x0f, fin: b0 & 0x80 != 0, len, remaining: len };
    Some((frame, header_len))
}

/// The length of the frame at the start of `bytes`, header included, once all of it is there.
pub fn complete_frame(bytes: &[u8]) -> Option<usize> {
    let (frame, header_len) = parse_header(bytes)?;
    let len = header_len + usize::try_from(frame.len).ok()?;
    (bytes.len() >= len).then_some(len)
}

/// A masked binary frame carrying `size` bytes, as a client sends it.
pub fn masked_frame(size: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    masked(&payload, 0x82)
}

/// A JSON event of `size` bytes (at least its 46 bytes of structure):
/// `{"event":"echo","data":{"seq":1,"text":"abc…"}}`, the text padding it to the size.
pub fn json_event(size: usize) -> Vec<u8> {
    const HEAD: &str = r#"{"event":"echo","data":{"seq":1,"text":""#;
    const TAIL: &str = r#""}}"#;
    let pad = size.saturating_sub(HEAD.len() + TAIL.len());
    let mut out = Vec::with_capacity(HEAD.len() + pad + TAIL.len());
    out.extend_from_slice(HEAD.as_bytes());
    out.extend((0..pad).map(|i| b'a' + (i % 26) as u8));
    out.extend_from_slice(TAIL.as_bytes());
    out
}

/// A frame with first byte `b0` (FIN, RSV bits, opcode) carrying `payload`, masked with [`MASK`].
fn masked(payload: &[u8], b0: u8) -> Vec<u8> {
    let size = payload.len();
    let mut frame = Vec::with_capacity(size + 14);
    frame.push(b0);
    match size {
        0..=125 => frame.push(0x80 | size as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_unmask_to_the_payload() {
        for size in [0, 1, 125, 126, 65_535, 65_536] {
            let frame = masked_frame(size);
            let (header, header_len) = parse_header(&frame).expect("a complete header");
            assert_eq!((header.opcode, header.fin, header.len), (2, true, size as u64));
            let payload: Vec<u8> =
                frame[header_len..].iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
            assert_eq!(payload.len(), size);
            assert!(payload.iter().enumerate().all(|(i, &b)| b == b'a' + (i % 26) as u8));
        }
    }

    #[test]
    fn compressed_frames_rotate_and_carry_rsv1() {
        let mut frames = Frames::new(1024, true);
        assert_eq!(frames.frames.len(), deflate::VARIANTS);
        assert_eq!(frames.reply_len, None);
        let first = frames.next_frame().to_vec();
        assert_eq!(first[0], 0xc2, "FIN, RSV1, binary");
        let (header, header_len) = parse_header(&first).expect("a complete header");
        assert!(header.len < 1024, "compressed: {} bytes", header.len);
        assert_eq!(first.len(), header_len + header.len as usize);
        assert_ne!(frames.next_frame(), first.as_slice());
        let mut later = frames.starting_at(deflate::VARIANTS);
        assert_eq!(later.next_frame(), first.as_slice());
        assert_eq!(Frames::new(16, false).reply_len, Some(16));
    }

    #[test]
    fn incomplete_headers_wait_for_more() {
        let frame = masked_frame(70_000);
        for cut in 0..14 {
            assert!(parse_header(&frame[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn many_connections_use_several_sources() {
        let addr: SocketAddr = "127.0.0.1:9001".parse().expect("an address");
        assert_eq!(sources_for(addr, 512, 1), [IpAddr::from([127, 0, 0, 1])]);
        let many = sources_for(addr, 50_000, 255);
        assert_eq!(many, [[127, 0, 0, 255], [127, 0, 1, 0], [127, 0, 1, 1]].map(IpAddr::from));
        let remote: SocketAddr = "10.0.0.1:9001".parse().expect("an address");
        assert!(sources_for(remote, 50_000, 1)[0].is_unspecified());
    }
}
