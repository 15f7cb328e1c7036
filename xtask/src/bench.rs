//! `cargo xtask bench [--quick]`: palisade's echo example beside tokio-tungstenite and
//! fastwebsockets echo servers, measured in one run, written to `docs/src/benchmarks.md` with its
//! charts in `docs/src/bench/`.
//!
//! The work is split with the `palisade-bench` crate: this module builds the binaries, starts
//! each server pinned to CPU 0 (with `taskset`) and the load generator `palisade-load` on CPU 1,
//! collects the JSON line each run prints into `target/bench/results.json`, and finally asks
//! `palisade-load report` to render the chapter. Every process it starts is killed by its
//! process id when the run ends, whether it succeeded or not.
//!
//! Compressed runs follow: palisade's echo example uncompressed, with permessage-deflate, with
//! the lean preset and with zlib's streams kept between messages, driven with compressible text
//! ([`COMPRESSION`]), then their memory per idle connection after one message and after more
//! than a window's worth of messages each way ([`IDLE_MESSAGES`]). `--compression` runs that
//! part alone and writes its chapter to `target/bench-compression/`.
//!
//! Typed JSON runs follow: palisade's `json_echo` example (palisade-json's envelope) beside
//! the same typed echo written by hand with tokio-tungstenite and serde_json ([`JSON_SERVERS`]).
//!
//! Fan-out follows, in a module of its own ([`fanout`]): one room of 100 to 10,000 members
//! and one publisher, palisade's rooms beside hand-written tokio-tungstenite and fastwebsockets
//! fan-outs and two palisade nodes through Redis, written to `docs/src/bench/fanout.md`;
//! `--fanout` runs it alone, `--fanout-redis` only its two-node cases (one Redis, a Redis Cluster).
//!
//! `--pipelined` runs only the pipelined cases ([`PIPELINED`]) and the same shapes with one
//! message in flight ([`ONE_IN_FLIGHT`]), with the full run's rounds and durations, and
//! writes its chapter to `target/bench-pipelined/` instead of the book: a quick before and
//! after for work on the per-message path, whose Pipelined echo table can be copied into the
//! book from there.
//!
//! `--smoke` (the CI stage `bench-smoke`) runs a few seconds of load and 100 idle connections per
//! server, checks that every run completed without errors, and writes the chapter to
//! `target/bench-smoke/` instead of the book. It makes no assertion on any figure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cmd;

mod fanout;
mod micro;

/// The servers, as (name in the report, binary under `target/release/`).
const SERVERS: [(&str, &str); 3] = [
    ("palisade", "examples/echo"),
    ("tokio-tungstenite", "echo-tungstenite"),
    ("fastwebsockets", "echo-fastwebsockets"),
];

/// The compressed runs: palisade's echo example as (name in the report, its flags, whether the
/// load generator offers permessage-deflate). Neither peer supports permessage-deflate
/// (tokio-tungstenite 0.29 and fastwebsockets 0.10 have no such feature), so palisade is
/// compared with itself, uncompressed, on the same compressible text.
const COMPRESSION: [(&str, &[&str], bool); 4] = [
    ("uncompressed", &[], false),
    ("deflate", &["--deflate"], true),
    ("deflate lean", &["--deflate-lean"], true),
    ("deflate retained", &["--deflate-retained"], true),
];

/// Messages each idle compressed connection exchanges before it goes quiet: one, and 40 of
/// 1 KiB, more than the 32 KiB a 15-bit window holds, so that a connection keeping only its
/// windows' bytes holds all it ever will.
const IDLE_MESSAGES: [u64; 2] = [1, 40];

/// The typed JSON echo: palisade's through palisade-json, and the same by hand (parse into a
/// typed event with serde, answer, keep going on bad input), as (name, binary).
const JSON_SERVERS: [(&str, &str); 2] = [
    ("palisade-json", "examples/json_echo"),
    ("tungstenite + serde_json", "echo-json-tungstenite"),
];

/// CPU the servers run on; the load generator gets [`LOAD_CPU`].
pub(crate) const SERVER_CPU: &str = "0";
const LOAD_CPU: &str = "1";

/// What one invocation measures.
#[derive(Debug)]
struct Matrix {
    mode: &'static str,
    /// (connections, message size), in the order they run: the most telling first, so that an
    /// interrupted run still has them.
    cases: Vec<(u64, u64)>,
    /// (connections, message size, messages in flight per connection) of the pipelined runs,
    /// against the same servers ([`PIPELINED`]).
    pipelined: Vec<(u64, u64, u64)>,
    idle: Vec<u64>,
    /// The cases and idle counts of [`COMPRESSION`].
    compressed: Vec<(u64, u64)>,
    idle_compressed: Vec<u64>,
    /// (connections, JSON message size) for the typed echo ([`JSON_SERVERS`]).
    json: Vec<(u64, u64)>,
    warmup: f64,
    duration: f64,
    /// Each load case runs this many times against each server, in rounds; the best run is
    /// kept (see [`keep_best`]).
    rounds: u32,
    window: u64,
    /// Where `benchmarks.md` and `bench/*.svg` go.
    out: PathBuf,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The pipelined cases, as (connections, size, messages in flight per connection): many
/// messages per read, so that a server's per-message work and its writes per message show,
/// where with one message in flight the kernel's round trip hides them.
const PIPELINED: [(u64, u64, u64); 4] = [(64, 16, 16), (64, KIB, 16), (1, 16, 64), (1, KIB, 64)];

/// The pipelined cases' shapes with one message in flight, for `--pipelined`: what work on
/// the pipelined path must not make worse.
const ONE_IN_FLIGHT: [(u64, u64); 4] = [(64, 16), (64, KIB), (1, 16), (1, KIB)];

impl Matrix {
    fn new(mode: &str, root: &Path) -> Self {
        match mode {
            "smoke" => Matrix {
                mode: "smoke",
                cases: vec![(4, 16)],
                pipelined: vec![(4, 16, 4)],
                idle: vec![100],
                compressed: vec![(4, KIB)],
                idle_compressed: vec![100],
                json: vec![(4, 64)],
                warmup: 0.2,
                duration: 1.0,
                rounds: 1,
                window: 1,
                out: root.join("target/bench-smoke"),
            },
            "compression" => Matrix {
                mode: "compression",
                cases: Vec::new(),
                pipelined: Vec::new(),
                idle: Vec::new(),
                json: Vec::new(),
                out: root.join("target/bench-compression"),
                ..Matrix::new("full", root)
            },
            "pipelined" => Matrix {
                mode: "pipelined",
                cases: ONE_IN_FLIGHT.to_vec(),
                pipelined: PIPELINED.to_vec(),
                idle: vec![],
                compressed: vec![],
                idle_compressed: vec![],
                json: vec![],
                warmup: 1.0,
                duration: 5.0,
                rounds: 2,
                window: 1,
                out: root.join("target/bench-pipelined"),
            },
            "quick" => Matrix {
                mode: "quick",
                cases: vec![(64, 16), (512, 16), (64, KIB), (64, 64 * KIB), (1, 16)],
                pipelined: PIPELINED.to_vec(),
                idle: vec![1_000],
                compressed: vec![(64, KIB)],
                idle_compressed: vec![1_000],
                json: vec![(64, 64), (64, KIB)],
                warmup: 0.5,
                duration: 2.0,
                rounds: 1,
                window: 1,
                out: root.join("docs/src"),
            },
            _ => {
                let mut cases = vec![(64, 16), (512, 16), (64, KIB), (64, 64 * KIB)];
                for conns in [1, 64, 512] {
                    for size in [16, KIB, 64 * KIB, MIB] {
                        if !cases.contains(&(conns, size)) {
                            cases.push((conns, size));
                        }
                    }
                }
                Matrix {
                    mode: "full",
                    cases,
                    pipelined: PIPELINED.to_vec(),
                    idle: vec![10_000, 50_000],
                    compressed: vec![(64, KIB), (512, KIB), (64, 16 * KIB), (64, 64 * KIB)],
                    idle_compressed: vec![10_000],
                    json: vec![(64, 64), (64, KIB), (512, KIB)],
                    warmup: 1.0,
                    duration: 5.0,
                    rounds: 2,
                    window: 1,
                    out: root.join("docs/src"),
                }
            }
        }
    }
}

/// `cargo xtask bench [--quick | --pipelined | --smoke | --micro | --compression | --fanout |
/// --fanout-redis | --fanout-page]`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let mode = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => "full",
        ["--quick"] => "quick",
        ["--pipelined"] => "pipelined",
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ["--smoke"] => "smoke",
        ["--micro"] => "micro",
        ["--fanout"] => "fanout",
        ["--compression"] => "compression",
        ["--fanout-redis"] => "fanout-redis",
        ["--fanout-page"] => "fanout-page",
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        "micro" => micro::run(),
        "fanout" => fanout::run("full"),
        "fanout-redis" => fanout::run("redis"),
        "fanout-page" => fanout::page_only(),
        _ => bench(mode),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The CI stage: the smoke run.
pub(crate) fn smoke() -> Result<(), String> {
    bench("smoke")
}

const USAGE: &str = "\
usage: cargo xtask bench [--quick | --pipelined | --smoke | --micro | --compression | --fanout
                          | --fanout-redis | --fanout-page]

  (none)         the full matrix, written to docs/src/benchmarks.md and docs/src/bench/
  --quick        fewer cases, shorter runs, one round (also written to the book)
  --pipelined    only the pipelined cases and their shapes at one message in flight, with the
                 full run's rounds and durations, written to target/bench-pipelined/
  --smoke        a few seconds of each kind of run, written to target/bench-smoke/ (CI)
  --micro        the in-process micro-benchmarks
  --compression  the compression cases alone, written to target/bench-compression/
  --fanout       the fan-out section alone
  --fanout-redis the two-node cases (one Redis, a Redis Cluster) alone,
                 results in target/bench/fanout-redis.json (the page left alone)
  --fanout-page  re-render the fan-out page from its last results";

fn bench(mode: &str) -> Result<(), String> {
    let started = Instant::now();
    let root = cmd::root();
    let matrix = Matrix::new(mode, &root);
    build()?;
    let release = target_dir(&root).join("release");
    let load = release.join("palisade-load");
    let work = target_dir(&root).join(match mode {
        "smoke" => "bench-smoke",
        "compression" => "bench-compression",
        "pipelined" => "bench-pipelined",
        _ => "bench",
    });
    std::fs::create_dir_all(work.join("logs")).map_err(|e| format!("{}: {e}", work.display()))?;
    let pin = Pinning::detect();

    let (idle_counts, idle_note) = cap_idle(&matrix.idle);
    if let Some(note) = &idle_note {
        println!("bench: {note}");
    }

    let mut results = json!({
        "machine": machine(),
        "mode": matrix.mode,
        "warmup": matrix.warmup,
        "duration": matrix.duration,
        "rounds": matrix.rounds,
        "window": matrix.window,
        "pinning": pin.describe(),
        "servers": SERVERS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "load": [],
        "pipelined": [],
        "idle": [],
        "compression": COMPRESSION.iter().map(|(name, _, _)| *name).collect::<Vec<_>>(),
        "compressed": [],
        "idle_compressed": [],
        "json_servers": JSON_SERVERS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "json": [],
        "idle_note": idle_note,
    });
    let results_path = work.join("results.json");
    let save = |results: &Value| {
        let text = serde_json::to_string_pretty(results).unwrap_or_default();
        std::fs::write(&results_path, text).map_err(|e| format!("{}: {e}", results_path.display()))
    };
    let mut problems = Vec::new();
    // Each run takes its source addresses from a fresh range, so that ports a previous run left in
    // TIME_WAIT never run out.
    let mut next_source = 1u32;

    // Throughput: all three servers up at once, each case run against each in turn, so that
    // noise from the machine spreads over the servers alike.
    if !matrix.cases.is_empty() || !matrix.pipelined.is_empty() {
        let mut servers = Vec::new();
        for (name, binary) in SERVERS {
            servers.push(Server::start(name, &release.join(binary), &[], &load, &pin, &work)?);
        }
        for round in 1..=matrix.rounds {
            for &(conns, size) in &matrix.cases {
                for server in &mut servers {
                    println!(
                        "bench: {} × {} B against {} (round {round})",
                        conns, size, server.name
                    );
                    let case = (conns, size);
                    let mut run = load_case(
                        &pin,
                        &load,
                        server,
                        &matrix,
                        (conns, size, matrix.window),
                        Payload::Binary,
                        next_source,
                    )?;
                    next_source += 1;
                    if let Some(problem) = failed(&run, server.name, case) {
                        problems.push(problem);
                    }
                    run["server"] = json!(server.name);
                    keep_best(&mut results["load"], run, "server");
                    save(&results)?;
                    if !server.alive() {
                        return Err(format!("{} exited during the run", server.name));
                    }
                }
            }
        }
        // Pipelined: the same servers, many messages in flight per connection.
        for round in 1..=matrix.rounds {
            for &(conns, size, window) in &matrix.pipelined {
                for server in &mut servers {
                    println!(
                        "bench: {conns} × {size} B, {window} in flight, against {} (round {round})",
                        server.name
                    );
                    let case = (conns, size, window);
                    let mut run = load_case(
                        &pin,
                        &load,
                        server,
                        &matrix,
                        case,
                        Payload::Binary,
                        next_source,
                    )?;
                    next_source += 1;
                    if let Some(problem) = failed(&run, server.name, (conns, size)) {
                        problems.push(problem);
                    }
                    run["server"] = json!(server.name);
                    keep_best(&mut results["pipelined"], run, "server");
                    save(&results)?;
                    if !server.alive() {
                        return Err(format!("{} exited during the run", server.name));
                    }
                }
            }
        }
    }

    // Idle memory: a fresh server for each count, so that nothing from earlier runs is counted.
    for &count in &idle_counts {
        for (name, binary) in SERVERS {
            println!("bench: {count} idle connections to {name}");
            let server = Server::start(name, &release.join(binary), &[], &load, &pin, &work)?;
            // Let the server finish starting before its memory is read.
            std::thread::sleep(Duration::from_millis(300));
            let mut run = idle_case(&pin, &load, &server, count, None, next_source)?;
            next_source += (count as u32).div_ceil(20_000) + 1;
            if run["opened"].as_u64() != Some(count) {
                problems.push(format!("{name} idle {count}: {}", run));
            }
            run["server"] = json!(name);
            push(&mut results["idle"], run);
            save(&results)?;
            drop(server);
        }
    }

    // Compression: palisade's echo example uncompressed, with permessage-deflate, and with the
    // lean preset, on compressible text; the same cases for each, one server per variant.
    let echo = release.join(SERVERS[0].1);
    if !matrix.compressed.is_empty() {
        let mut servers = Vec::new();
        for (name, flags, deflate) in COMPRESSION {
            servers.push((Server::start(name, &echo, flags, &load, &pin, &work)?, deflate));
        }
        for round in 1..=matrix.rounds {
            for &(conns, size) in &matrix.compressed {
                for (server, deflate) in &mut servers {
                    println!(
                        "bench: {conns} × {size} B of text against palisade {} (round {round})",
                        server.name
                    );
                    let case = (conns, size);
                    let payload = if *deflate { Payload::Deflate } else { Payload::Binary };
                    let mut run = load_case(
                        &pin,
                        &load,
                        server,
                        &matrix,
                        (conns, size, matrix.window),
                        payload,
                        next_source,
                    )?;
                    next_source += 1;
                    if let Some(problem) = failed(&run, server.name, case) {
                        problems.push(problem);
                    }
                    run["variant"] = json!(server.name);
                    keep_best(&mut results["compressed"], run, "variant");
                    save(&results)?;
                    if !server.alive() {
                        return Err(format!("palisade {} exited during the run", server.name));
                    }
                }
            }
        }
    }
    for &count in &matrix.idle_compressed {
        for (messages, (name, flags, deflate)) in
            IDLE_MESSAGES.iter().flat_map(|&m| COMPRESSION.iter().map(move |v| (m, *v)))
        {
            if !deflate && messages > 1 {
                // Without the extension the messages change nothing between them.
                continue;
            }
            println!(
                "bench: {count} idle connections to palisade {name} after {messages} message(s)"
            );
            let server = Server::start(name, &echo, flags, &load, &pin, &work)?;
            std::thread::sleep(Duration::from_millis(300));
            let deflate = deflate.then_some(messages);
            let mut run = idle_case(&pin, &load, &server, count, deflate, next_source)?;
            next_source += (count as u32).div_ceil(20_000) + 1;
            if run["opened"].as_u64() != Some(count) {
                problems.push(format!("palisade {name} idle {count}: {}", run));
            }
            run["variant"] = json!(name);
            push(&mut results["idle_compressed"], run);
            save(&results)?;
        }
    }

    // Typed JSON: both servers up at once, each case against each in turn, as above.
    if !matrix.json.is_empty() {
        let mut servers = Vec::new();
        for (name, binary) in JSON_SERVERS {
            servers.push(Server::start(name, &release.join(binary), &[], &load, &pin, &work)?);
        }
        for round in 1..=matrix.rounds {
            for &(conns, size) in &matrix.json {
                for server in &mut servers {
                    println!(
                        "bench: {conns} × {size} B JSON events against {} (round {round})",
                        server.name
                    );
                    let case = (conns, size);
                    let mut run = load_case(
                        &pin,
                        &load,
                        server,
                        &matrix,
                        (conns, size, matrix.window),
                        Payload::Json,
                        next_source,
                    )?;
                    next_source += 1;
                    if let Some(problem) = failed(&run, server.name, case) {
                        problems.push(problem);
                    }
                    run["server"] = json!(server.name);
                    keep_best(&mut results["json"], run, "server");
                    save(&results)?;
                    if !server.alive() {
                        return Err(format!("{} exited during the run", server.name));
                    }
                }
            }
        }
    }

    results["elapsed"] = json!(started.elapsed().as_secs_f64());
    save(&results)?;
    let mut report = Command::new(&load);
    report.args(["report", "--results"]).arg(&results_path).arg("--out").arg(&matrix.out);
    cmd::run(&mut report)?;
    println!(
        "bench: {} written in {:.0} s",
        matrix.out.join("benchmarks.md").display(),
        started.elapsed().as_secs_f64()
    );
    // The fan-out section writes a page of its own (not for the compression or pipelined
    // cases alone).
    if !matches!(matrix.mode, "compression" | "pipelined")
        && let Err(e) = fanout::run(matrix.mode)
    {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} run(s) had errors:\n  {}", problems.len(), problems.join("\n  ")))
    }
}

/// What a load run sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    /// Binary messages.
    Binary,
    /// Compressible text, compressed (permessage-deflate offered).
    Deflate,
    /// JSON events in text frames, echoed as the same events.
    Json,
}

/// One `palisade-load load` run of `case` (connections, size, messages in flight) against
/// `server`, its source addresses starting at `source`; prints its summary.
fn load_case(
    pin: &Pinning,
    load: &Path,
    server: &Server,
    matrix: &Matrix,
    (conns, size, window): (u64, u64, u64),
    payload: Payload,
    source: u32,
) -> Result<Value, String> {
    let mut command = pin.load_command(load);
    command.args(["load", "--url", &server.url, "-c", &conns.to_string()]);
    command.args(["-s", &size.to_string(), "-w", &window.to_string()]);
    command.args(["--warmup", &matrix.warmup.to_string()]);
    command.args(["--duration", &matrix.duration.to_string()]);
    command.args(["--server-pid", &server.pid().to_string()]);
    command.args(["--first-source", &source.to_string()]);
    match payload {
        Payload::Binary => {}
        Payload::Deflate => {
            command.arg("--deflate");
        }
        Payload::Json => {
            command.arg("--json");
        }
    }
    let run = json_line(&mut command)?;
    println!("       {}", summary(&run));
    Ok(run)
}

/// What was wrong with a load run, if it had errors or completed nothing.
fn failed(run: &Value, name: &str, (conns, size): (u64, u64)) -> Option<String> {
    let bad = run["errors"].as_u64() != Some(0) || run["round_trips"].as_u64() == Some(0);
    bad.then(|| format!("{name} {conns}×{size}: {}", summary(run)))
}

/// One `palisade-load idle` run of `count` connections to `server`, each exchanging `deflate`
/// compressed messages if given; prints the memory per connection.
fn idle_case(
    pin: &Pinning,
    load: &Path,
    server: &Server,
    count: u64,
    deflate: Option<u64>,
    source: u32,
) -> Result<Value, String> {
    let mut command = pin.load_command(load);
    command.args(["idle", "--url", &server.url, "-n", &count.to_string()]);
    command.args(["--server-pid", &server.pid().to_string()]);
    command.args(["--first-source", &source.to_string()]);
    if let Some(messages) = deflate {
        command.args(["--deflate", "--messages", &messages.to_string()]);
    }
    let run = json_line(&mut command)?;
    let per = run["bytes_per_connection"].as_f64().unwrap_or(0.0) / 1024.0;
    println!("       {per:.1} KiB per connection, {} failed", run["failed"]);
    Ok(run)
}

/// Adds `run` to `list`, or, if a run of the same server (`key`), connections and size is
/// already there, keeps whichever completed more round trips and records both rates in
/// `round_rps`. Interference from outside (another process, the hypervisor) only ever takes
/// throughput away, so the best of a few short runs is a steadier estimate of what a server
/// can do than one long run; the report says how many rounds each figure is the best of.
fn keep_best(list: &mut Value, mut run: Value, key: &str) {
    let same = |other: &Value| {
        other[key] == run[key]
            && other["connections"] == run["connections"]
            && other["size"] == run["size"]
    };
    let rate = |v: &Value| v["rps"].as_f64().unwrap_or(0.0);
    let Some(runs) = list.as_array_mut() else { return };
    let Some(index) = runs.iter().position(same) else {
        run["round_rps"] = json!([rate(&run)]);
        runs.push(run);
        return;
    };
    let mut rates = runs[index]["round_rps"].as_array().cloned().unwrap_or_default();
    rates.push(json!(rate(&run)));
    if rate(&run) > rate(&runs[index]) {
        runs[index] = run;
    }
    runs[index]["round_rps"] = json!(rates);
}

fn push(list: &mut Value, item: Value) {
    if let Some(list) = list.as_array_mut() {
        list.push(item);
    }
}

/// Open files a process may hold, at most: the hard limit, which only a process with
/// `CAP_SYS_RESOURCE` may raise.
pub(crate) fn nofile_hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line.split_whitespace().nth(4)?;
    if hard == "unlimited" { Some(u64::MAX) } else { hard.parse().ok() }
}

/// The idle connection counts this machine can hold: each server and the load generator need
/// one file per connection, and neither can go past the hard open-file limit. Counts above it
/// are lowered to just under it, with a note for the report.
fn cap_idle(counts: &[u64]) -> (Vec<u64>, Option<String>) {
    let Some(hard) = nofile_hard_limit() else { return (counts.to_vec(), None) };
    // Room for the listener, the runtime's own descriptors and standard streams.
    let cap = hard.saturating_sub(100);
    let mut capped: Vec<u64> = counts.iter().map(|&n| n.min(cap)).collect();
    capped.dedup();
    let note = counts.iter().any(|&n| n > cap).then(|| {
        format!(
            "idle counts above {cap} were lowered to {cap}: the hard open-file limit here is \
             {hard}, and raising it needs CAP_SYS_RESOURCE, which this machine does not grant"
        )
    });
    (capped, note)
}

/// One line of a load run for the log.
fn summary(run: &Value) -> String {
    let number = |field: &str| run[field].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:.0} round trips/s, p50 {:.0} µs, p99 {:.0} µs, server CPU {:.2}, generator CPU {:.2}, \
         {:.2} segments per echo, {} errors{}",
        number("rps"),
        number("p50_us"),
        number("p99_us"),
        number("server_cpu"),
        number("client_cpu"),
        number("segments_per_echo"),
        run["errors"],
        run["first_error"].as_str().map(|e| format!(" (first: {e})")).unwrap_or_default(),
    )
}

/// Builds the load generator, the peer servers and palisade's echo example, in release mode.
fn build() -> Result<(), String> {
    cmd::run(&mut cmd::cargo(["build", "--release", "--package", "palisade-bench", "--bins"]))?;
    cmd::run(&mut cmd::cargo([
        "build",
        "--release",
        "--package",
        "palisade",
        "--example",
        "echo",
        "--example",
        "json_echo",
    ]))
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// How processes are pinned to CPUs.
#[derive(Debug)]
pub(crate) enum Pinning {
    Taskset,
    /// No `taskset` (or fewer than two CPUs): the kernel schedules everything.
    None,
}

impl Pinning {
    pub(crate) fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 && cmd::succeeds(Command::new("taskset").arg("--version")) {
            Pinning::Taskset
        } else {
            println!("bench: no taskset or a single CPU: servers and load are not pinned");
            Pinning::None
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Pinning::Taskset => {
                "each server pinned to CPU 0 and the load generator to CPU 1 (`taskset`)"
            }
            Pinning::None => "no CPU pinning (no `taskset` on this machine)",
        }
    }

    pub(crate) fn command(&self, cpu: &str, program: &Path) -> Command {
        match self {
            Pinning::Taskset => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpu]).arg(program);
                command
            }
            Pinning::None => Command::new(program),
        }
    }

    pub(crate) fn load_command(&self, load: &Path) -> Command {
        self.command(LOAD_CPU, load)
    }
}

/// A server process, killed by its process id when dropped.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    child: Child,
    pub(crate) url: String,
}

impl Server {
    /// Starts `binary` with `flags` through `palisade-load exec` (which raises the open-file
    /// limit and then becomes the server, keeping the process id) on an ephemeral port, and
    /// waits for its `listening on ws://ADDR` line.
    pub(crate) fn start(
        name: &'static str,
        binary: &Path,
        flags: &[&str],
        load: &Path,
        pin: &Pinning,
        work: &Path,
    ) -> Result<Self, String> {
        Self::start_logging(name, binary, flags, load, pin, work, "error")
    }

    /// [`Server::start`], logging what `filter` (`RUST_LOG`) lets through to
    /// `WORK/logs/NAME.log`.
    pub(crate) fn start_logging(
        name: &'static str,
        binary: &Path,
        flags: &[&str],
        load: &Path,
        pin: &Pinning,
        work: &Path,
        filter: &str,
    ) -> Result<Self, String> {
        let log_path = work.join("logs").join(format!("{}.log", name.replace(' ', "-")));
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut command = pin.command(SERVER_CPU, load);
        command.args(["exec", "--"]).arg(binary).args(["--addr", "127.0.0.1:0"]).args(flags);
        command.env("RUST_LOG", filter).stdout(Stdio::piped()).stderr(log);
        let mut child =
            command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining, so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server { name, child, url: String::new() };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => match line.strip_prefix("listening on ") {
                Some(url) => server.url = format!("{}/", url.trim().trim_end_matches('/')),
                None => return Err(format!("{name} printed {line:?}, not `listening on ws://…`")),
            },
            Err(_) => {
                return Err(format!(
                    "{name} did not print `listening on` within 20 s; see {}",
                    log_path.display()
                ));
            }
        }
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `Child::kill` sends SIGKILL to exactly this process id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` and parses the last line of its standard output as JSON.
fn json_line(command: &mut Command) -> Result<Value, String> {
    let stdout = cmd::stdout(command)?;
    let text = String::from_utf8_lossy(&stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("load generator printed {line:?}: {e}"))
}

/// CPU model, core count, kernel and date, for the report.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown", |(_, model)| model.trim());
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "kernel": output("uname", &["-r"]),
        "date": output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_best_keeps_the_fastest_run_and_every_rate() {
        let mut list = json!([]);
        let run = |server: &str, conns: u64, rps: f64| json!({ "server": server, "connections": conns, "size": 16, "rps": rps });
        keep_best(&mut list, run("a", 64, 100.0), "server");
        keep_best(&mut list, run("b", 64, 50.0), "server");
        keep_best(&mut list, run("a", 512, 70.0), "server");
        keep_best(&mut list, run("a", 64, 120.0), "server");
        keep_best(&mut list, run("a", 64, 110.0), "server");
        let runs = list.as_array().expect("a list");
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0]["rps"], 120.0);
        assert_eq!(runs[0]["round_rps"], json!([100.0, 120.0, 110.0]));
        assert_eq!(runs[1]["round_rps"], json!([50.0]));
        assert_eq!(runs[2]["connections"], 512);
    }
}
