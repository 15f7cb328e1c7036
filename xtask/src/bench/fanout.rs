//! `cargo xtask bench --fanout` (and part of every `cargo xtask bench`): one room of N
//! members, one publisher, palisade's `examples/fanout.rs` beside the same fan-out written by
//! hand with tokio-tungstenite and fastwebsockets (each naive and expert: see
//! `palisade_bench::fanout_peer`), and two palisade nodes sharing the room through a real
//! `redis-server`. The load generator is `palisade-fanout` (`palisade_bench::fanout`).
//!
//! As in the echo benchmarks, the servers (and Redis) run on CPU 0 and the generator on CPU 1;
//! every case starts its servers afresh (a previous case's members leaving must not load the
//! next), and kills them by process id when it ends. Each run prints one JSON line;
//! the lines go to `target/bench/fanout.json`, and the page `docs/src/bench/fanout.md` is
//! written from them (`target/bench-smoke/fanout.md` for `--smoke`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Pinning, SERVER_CPU, Server, json_line, machine, nofile_hard_limit, target_dir};
use crate::cmd;

/// Where the page goes, from the workspace root; the Rooms chapter includes it.
const OUTPUT: &str = "docs/src/bench/fanout.md";

/// The fixed rate, in deliveries per second: well within what every server sustains.
const RATE: u64 = 200_000;

/// Flat out: publications on their way at most (see `palisade_bench::fanout`).
const WINDOW: u64 = 64;

/// Padding of each publication: its `room.message` frame is about 130 bytes.
const PAD: u64 = 32;

/// The servers on one node, as (name in the report, binary under `target/release/`, flags).
const SERVERS: [(&str, &str, &[&str]); 5] = [
    ("palisade", "examples/fanout", &[]),
    ("tungstenite naive", "fanout-tungstenite", &["--naive"]),
    ("tungstenite expert", "fanout-tungstenite", &["--expert"]),
    ("fastwebsockets naive", "fanout-fastwebsockets", &["--naive"]),
    ("fastwebsockets expert", "fanout-fastwebsockets", &["--expert"]),
];

/// The name of the two-node case in the report.
const REDIS_CASE: &str = "palisade ×2 + Redis";

/// The two-node case through a Redis Cluster of three shards (the room's traffic on one).
const CLUSTER_CASE: &str = "palisade ×2 + Redis Cluster";

/// The largest room of the two-node case: every size. (The benchmark's room has no presence,
/// so that a join through Redis neither reads the room's presence back nor tells everyone:
/// joining is linear.)
const REDIS_MAX_MEMBERS: u64 = 10_000;

/// Runs the fan-out cases of `mode` (`full`, `quick` or `smoke`; `redis`: the two-node cases
/// alone at every size, its results in `target/bench/fanout-redis.json` and the page left
/// alone, for work on the Redis backend).
pub(super) fn run(mode: &str) -> Result<(), String> {
    let redis_only = mode == "redis";
    let started = Instant::now();
    let root = cmd::root();
    cmd::run(&mut cmd::cargo(["build", "--release", "--package", "palisade-bench", "--bins"]))?;
    cmd::run(&mut cmd::cargo([
        "build",
        "--release",
        "--package",
        "palisade",
        "--example",
        "fanout",
    ]))?;
    let release = target_dir(&root).join("release");
    let smoke = mode == "smoke";
    let work = target_dir(&root).join(if smoke { "bench-smoke" } else { "bench" });
    std::fs::create_dir_all(work.join("logs")).map_err(|e| format!("{}: {e}", work.display()))?;
    let pin = Pinning::detect();

    let wanted: &[u64] = match mode {
        "smoke" => &[100],
        "quick" => &[1_000],
        _ => &[100, 1_000, 10_000],
    };
    // The generator holds one file per member, the server as many; neither goes past the
    // hard limit.
    let hard = nofile_hard_limit().unwrap_or(u64::MAX);
    let sizes: Vec<u64> = wanted.iter().map(|&n| n.min(hard.saturating_sub(200))).collect();
    let size_note = wanted.iter().any(|&n| n > hard.saturating_sub(200)).then(|| {
        format!(
            "rooms above {} members were lowered: the hard open-file limit here is {hard}",
            hard - 200
        )
    });
    let modes: &[Option<u64>] = if smoke { &[None] } else { &[Some(RATE), None] };
    let (warmup, duration) = match mode {
        "smoke" => (0.2, 1.0),
        "quick" => (0.5, 1.5),
        _ => (1.0, 3.0),
    };
    let redis = redis_server();
    if redis.is_none() {
        if redis_only {
            return Err("--fanout-redis needs redis-server".into());
        }
        println!("bench: no redis-server: the two-node cases are skipped");
    }

    let mut results = json!({
        "machine": machine(),
        "mode": mode,
        "pinning": pin.describe(),
        "warmup": warmup,
        "duration": duration,
        "rate": RATE,
        "window": WINDOW,
        "pad": PAD,
        "size_note": size_note,
        "nofile_hard_limit": hard,
        "runs": [],
    });
    let results_path = work.join(if redis_only { "fanout-redis.json" } else { "fanout.json" });
    let save = |results: &Value| {
        let text = serde_json::to_string_pretty(results).unwrap_or_default();
        std::fs::write(&results_path, text).map_err(|e| format!("{}: {e}", results_path.display()))
    };
    let generator = release.join("palisade-fanout");
    let load = release.join("palisade-load");
    let mut problems = Vec::new();
    // A fresh range of loopback source addresses per run, so that TIME_WAIT never runs out.
    let mut source = 100u32;
    for &members in &sizes {
        for &rate in modes {
            let mut cases: Vec<&str> = if redis_only {
                Vec::new()
            } else {
                SERVERS.iter().map(|(name, _, _)| *name).collect()
            };
            if redis.is_some() && members <= REDIS_MAX_MEMBERS {
                cases.push(REDIS_CASE);
                cases.push(CLUSTER_CASE);
            }
            for name in cases {
                let how = rate.map_or("flat out".to_owned(), |r| format!("at {r} deliveries/s"));
                println!("bench: fan-out to {members} members of {name}, {how}");
                let mut servers = Vec::new();
                let mut redis_processes = Vec::new();
                if name == REDIS_CASE || name == CLUSTER_CASE {
                    let binary = redis.as_deref().unwrap_or(Path::new("redis-server"));
                    let mode = if rate.is_some() { "rate" } else { "flat" };
                    let (flag, url) = if name == REDIS_CASE {
                        let log = work.join("logs").join(format!("redis-{members}-{mode}.log"));
                        let process = RedisProcess::start(binary, &pin, &log, &[])?;
                        let url = process.url();
                        redis_processes.push(process);
                        ("--redis", url)
                    } else {
                        let dir = work.join("logs").join(format!("cluster-{members}-{mode}"));
                        let shards = start_cluster(binary, &pin, &dir)?;
                        let seeds: Vec<String> = shards.iter().map(RedisProcess::url).collect();
                        redis_processes.extend(shards);
                        ("--redis-cluster", seeds.join(","))
                    };
                    let node = release.join("examples/fanout");
                    for node_name in ["palisade node A", "palisade node B"] {
                        let flags = [flag, url.as_str()];
                        // The backend's state changes (pub/sub lost, reconnected) are one
                        // warning each: worth having in the node's log.
                        servers.push(Server::start_logging(
                            node_name,
                            &node,
                            &flags,
                            &load,
                            &pin,
                            &work,
                            "error,palisade_redis=warn",
                        )?);
                    }
                } else {
                    let (_, binary, flags) =
                        SERVERS.iter().find(|(n, _, _)| *n == name).expect("a name from SERVERS");
                    servers.push(Server::start(
                        name,
                        &release.join(binary),
                        flags,
                        &load,
                        &pin,
                        &work,
                    )?);
                }
                let mut command = pin.load_command(&generator);
                for server in &servers {
                    command.args([
                        "--node",
                        &server.url,
                        "--server-pid",
                        &server.pid().to_string(),
                    ]);
                }
                for process in &redis_processes {
                    command.args(["--server-pid", &process.pid().to_string()]);
                }
                command.args(["-n", &members.to_string(), "--window", &WINDOW.to_string()]);
                command.args(["--pad", &PAD.to_string(), "--first-source", &source.to_string()]);
                command.args([
                    "--warmup",
                    &warmup.to_string(),
                    "--duration",
                    &duration.to_string(),
                ]);
                if let Some(rate) = rate {
                    command.args(["--rate", &rate.to_string()]);
                }
                source += 1;
                let mut line = json_line(&mut command)?;
                println!("       {}", summary(&line));
                if line["errors"].as_u64() != Some(0) || line["deliveries"].as_u64() == Some(0) {
                    problems.push(format!("{name}, {members} members, {how}: {}", summary(&line)));
                }
                line["server"] = json!(name);
                if let Some(runs) = results["runs"].as_array_mut() {
                    runs.push(line);
                }
                save(&results)?;
                drop(servers);
                drop(redis_processes);
            }
        }
    }
    results["elapsed"] = json!(started.elapsed().as_secs_f64());
    save(&results)?;
    if !redis_only {
        let out = if smoke { work.join("fanout.md") } else { root.join(OUTPUT) };
        std::fs::write(&out, page(&results)).map_err(|e| format!("{}: {e}", out.display()))?;
        println!("bench: {} written in {:.0} s", out.display(), started.elapsed().as_secs_f64());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} fan-out run(s) had errors:\n  {}", problems.len(), problems.join("\n  ")))
    }
}

/// `cargo xtask bench --fanout-page`: writes the page again from the last run's results
/// (`target/bench/fanout.json`), for a change to the page's layout without a new measurement.
pub(super) fn page_only() -> Result<(), String> {
    let root = cmd::root();
    let path = target_dir(&root).join("bench/fanout.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let results: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = root.join(OUTPUT);
    std::fs::write(&out, page(&results)).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("bench: {} written", out.display());
    Ok(())
}

/// One line of a run for the log.
fn summary(run: &Value) -> String {
    let number = |field: &str| run[field].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:.0} deliveries/s, {:.3} µs server CPU per delivery, p50 {:.1} ms, p99 {:.1} ms, {} lost, \
         generator CPU {:.2}, joined in {:.1} s, {} errors{}",
        number("dps"),
        number("cpu_us_per_delivery"),
        number("p50_us") / 1e3,
        number("p99_us") / 1e3,
        run["lost"],
        number("client_cpu"),
        number("setup_s"),
        run["errors"],
        run["first_error"].as_str().map(|e| format!(" (first: {e})")).unwrap_or_default(),
    )
}

/// `redis-server`, if this machine has one (`PALISADE_REDIS_SERVER` names another).
fn redis_server() -> Option<PathBuf> {
    let binary = std::env::var("PALISADE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    cmd::succeeds(Command::new(&binary).arg("--version").stdout(Stdio::null()))
        .then(|| PathBuf::from(binary))
}

/// A `redis-server` on a free loopback port, without persistence, pinned with the servers,
/// logging to a file of its own (a subscriber it disconnects, say, for overrunning its output
/// buffer limit, is a line there); killed by its process id when dropped.
struct RedisProcess {
    child: Child,
    port: u16,
}

/// A port nobody listens on now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl RedisProcess {
    /// With `extra` arguments after the port, persistence and log ones.
    fn start(binary: &Path, pin: &Pinning, log: &Path, extra: &[String]) -> Result<Self, String> {
        let port = free_port()?;
        let mut command = pin.command(SERVER_CPU, binary);
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        command.args(["--appendonly", "no"]).arg("--logfile").arg(log).args(extra);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child =
            command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let process = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("redis-server did not listen on {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(process)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        // SIGKILL to exactly this process id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slots of each of the three shards of [`start_cluster`].
const CLUSTER_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// A Redis Cluster of three `redis-server`s (no replicas, no persistence, pinned with the
/// servers, their configuration and logs in `dir`): the slots split in three with `CLUSTER
/// ADDSLOTSRANGE`, the shards met with `CLUSTER MEET`, returned once every shard sees the whole
/// cluster.
fn start_cluster(binary: &Path, pin: &Pinning, dir: &Path) -> Result<Vec<RedisProcess>, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut shards = Vec::new();
    let mut buses = Vec::new();
    for i in 0..3 {
        let bus = free_port()?;
        let config = dir.join(format!("nodes-{i}.conf"));
        let extra = [
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-port".to_owned(),
            bus.to_string(),
            "--cluster-config-file".to_owned(),
            config.display().to_string(),
            "--dir".to_owned(),
            dir.display().to_string(),
        ];
        shards.push(RedisProcess::start(binary, pin, &dir.join(format!("redis-{i}.log")), &extra)?);
        buses.push(bus);
    }
    for (shard, (first, last)) in shards.iter().zip(CLUSTER_RANGES) {
        let (first, last) = (first.to_string(), last.to_string());
        resp(shard.port, &["CLUSTER", "ADDSLOTSRANGE", &first, &last])?;
    }
    for (shard, bus) in shards.iter().zip(&buses).skip(1) {
        let (port, bus) = (shard.port.to_string(), bus.to_string());
        resp(shards[0].port, &["CLUSTER", "MEET", "127.0.0.1", &port, &bus])?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for shard in &shards {
        loop {
            let info = resp(shard.port, &["CLUSTER", "INFO"])?;
            if info.contains("cluster_state:ok")
                && info.contains("cluster_known_nodes:3")
                && info.contains("cluster_slots_ok:16384")
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the Redis Cluster did not form within 20 s: {info}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(shards)
}

/// Sends one command to the Redis on `port` and reads its reply: a status, a number or a bulk
/// string as text, an error reply as `Err`.
fn resp(port: u16, args: &[&str]) -> Result<String, String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let failed = |e: std::io::Error| format!("redis on {port}, {}: {e}", args.join(" "));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(failed)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(failed)?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(request, "${}\r\n{arg}\r\n", arg.len());
    }
    stream.write_all(request.as_bytes()).map_err(failed)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(failed)?;
    let line = line.trim_end();
    match line.split_at_checked(1) {
        Some(("+" | ":", rest)) => Ok(rest.to_owned()),
        Some(("$", len)) => {
            let len: usize = len.parse().map_err(|_| format!("redis on {port}: {line}"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).map_err(failed)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(format!("redis on {port}, {}: {line}", args.join(" "))),
    }
}

/// The page: how it was measured, then a table per way of publishing.
fn page(results: &Value) -> String {
    let machine = &results["machine"];
    let runs = results["runs"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "<!-- Written by `cargo xtask bench --fanout`; do not edit. -->\n");
    let _ = writeln!(
        out,
        "Measured on {} ({} cores, Linux {}), {}; {}. Each figure is one run of {} s after {} s \
         of warm-up, every case with its servers started afresh.\n",
        machine["cpu"].as_str().unwrap_or("an unknown CPU"),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["date"].as_str().unwrap_or("at an unknown date"),
        results["pinning"].as_str().unwrap_or(""),
        results["duration"],
        results["warmup"],
    );
    let _ = writeln!(
        out,
        "One room, one publisher, every member on its own connection; each publication is a \
         `room.message` text frame of about 130 bytes. *Deliveries/s*: publications received by \
         members, per second. *CPU/delivery*: the server processes' CPU time (user + system, \
         from `/proc`; for the two-node cases both nodes and Redis, all three shards of the \
         cluster) divided by the deliveries. \
         *× best peer*: that CPU against the lowest of the four hand-written forms at the same \
         size. *Latency*: from the publisher's clock when it wrote the publication to the \
         member's when it read it (both in the generator). *Lost*: publications a member never \
         received (every server drops a member's oldest message when 1,024 wait). *Gen. CPU*: \
         the load generator's share of its core — near 1.0, the generator and not the server \
         may be the limit.\n"
    );
    if let Some(note) = results["size_note"].as_str() {
        let _ = writeln!(out, "{note}.\n");
    } else if let Some(hard) = results["nofile_hard_limit"].as_u64() {
        let _ = writeln!(
            out,
            "The hard open-file limit here is {}: rooms up to 10,000 members fit (the generator \
             holds one file per member, the server as many).\n",
            thousands(hard as f64)
        );
    }
    let _ = writeln!(
        out,
        "The room has no presence (`RoomOptions::without_presence`: no `presence.join` to the \
         room at every join, no presence list in every join's reply), as the hand-written peers \
         have none; with presence, joining N members sends about N²/2 presence frames.\n"
    );
    let sections = [
        (
            "rate",
            format!(
                "At a fixed rate of {} deliveries per second",
                thousands(results["rate"].as_f64().unwrap_or(0.0))
            ),
        ),
        (
            "flat",
            format!(
                "Flat out: at most {} publications on their way to the slowest members",
                results["window"]
            ),
        ),
    ];
    for (mode, title) in sections {
        let rows: Vec<&Value> = runs.iter().filter(|r| r["mode"] == mode).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "#### {title}\n");
        let _ = writeln!(
            out,
            "| members | server | deliveries/s | CPU/delivery | × best peer | p50 | p99 | lost | gen. CPU |"
        );
        let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for run in &rows {
            let best = rows
                .iter()
                .filter(|r| r["members"] == run["members"])
                .filter(|r| {
                    r["server"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("naive") || s.ends_with("expert"))
                })
                .filter_map(|r| r["cpu_us_per_delivery"].as_f64())
                .fold(f64::INFINITY, f64::min);
            let cpu = run["cpu_us_per_delivery"].as_f64();
            let ratio = cpu
                .filter(|_| best.is_finite())
                .map_or("–".to_owned(), |c| format!("{:.2}", c / best));
            let ms = |field: &str| {
                run[field].as_f64().map_or("–".to_owned(), |us| format!("{:.1} ms", us / 1e3))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run["members"],
                run["server"].as_str().unwrap_or("?"),
                thousands(run["dps"].as_f64().unwrap_or(0.0)),
                cpu.map_or("–".to_owned(), |c| format!("{c:.3} µs")),
                ratio,
                ms("p50_us"),
                ms("p99_us"),
                run["lost"],
                run["client_cpu"].as_f64().map_or("–".to_owned(), |c| format!("{c:.2}")),
            );
        }
        let _ = writeln!(out);
    }
    let setups: Vec<String> = runs
        .iter()
        .filter(|r| {
            r["mode"] == "flat" && r["server"].as_str().is_some_and(|s| s.starts_with("palisade"))
        })
        .map(|r| {
            format!(
                "{} members of {}: {:.1} s, {} presence frames",
                r["members"],
                r["server"].as_str().unwrap_or("?"),
                r["setup_s"].as_f64().unwrap_or(0.0),
                r["presence_frames"]
            )
        })
        .collect();
    if !setups.is_empty() {
        let _ = writeln!(
            out,
            "Joining (not measured above): time from the first connection to a quiet room, and \
             the presence frames the generator saw — {}.\n",
            setups.join("; ")
        );
    }
    out
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn the_page_compares_with_the_best_peer() {
        let run = |server: &str, cpu: f64| {
            json!({ "mode": "flat", "members": 100, "server": server, "dps": 1000.0,
                    "cpu_us_per_delivery": cpu, "p50_us": 1000.0, "p99_us": 2000.0,
                    "lost": 0, "client_cpu": 0.5, "setup_s": 0.1, "presence_frames": 4950 })
        };
        let results = json!({ "machine": {}, "runs": [
            run("palisade", 1.0), run("tungstenite naive", 4.0), run("tungstenite expert", 0.5),
        ]});
        let page = page(&results);
        assert!(page.contains("| 100 | palisade | 1,000 | 1.000 µs | 2.00 |"), "{page}");
        assert!(page.contains("| 100 | tungstenite expert | 1,000 | 0.500 µs | 1.00 |"), "{page}");
        assert!(page.contains("100 members of palisade: 0.1 s, 4950 presence frames"), "{page}");
    }
}
