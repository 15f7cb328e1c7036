//! The `benchmarks.md` chapter and its charts, from the results of one `cargo xtask bench` run.
//!
//! The results file is the JSON object xtask writes:
//!
//! ```text
//! { "machine": { "cpu": "...", "cores": 2, "date": "...", "kernel": "..." },
//!   "mode": "full" | "quick" | "smoke", "warmup": 1.0, "duration": 5.0, "window": 1,
//!   "pinning": "...", "elapsed": 512.0,
//!   "servers": ["palisade", "tokio-tungstenite", "fastwebsockets"],
//!   "load": [ { "server": "palisade", <palisade-load load output> }, ... ],
//!   "pipelined": [ { "server": "palisade", <palisade-load load -w W output> }, ... ],
//!   "idle": [ { "server": "palisade", <palisade-load idle output> }, ... ],
//!   "compression": ["uncompressed", "deflate", "deflate lean"],
//!   "compressed": [ { "variant": "deflate", <palisade-load load --deflate output> }, ... ],
//!   "idle_compressed": [ { "variant": "deflate", <palisade-load idle --deflate output> }, ... ],
//!   "json_servers": ["palisade-json", "tungstenite + serde_json"],
//!   "json": [ { "server": "palisade-json", <palisade-load load --json output> }, ... ] }
//! ```
//!
//! [`write()`] puts `benchmarks.md` in the output directory and the charts in `bench/` under it.
//! Fragments written by other tools into that `bench/` directory (`micro.md`, the criterion
//! micro benchmarks, and `flate-backends.md`) are included into the chapter when present.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

mod pipelined;

/// The server every ratio is about.
const OURS: &str = "palisade";

/// One colour per server, in the order of the results' `servers`.
const COLOURS: [RGBColor; 4] =
    [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xff, 0x7f, 0x0e), RGBColor(0x2c, 0xa0, 0x2c), RED];

/// Writes the chapter and its charts for `results` into `out`.
pub fn write(results: &Value, out: &Path) -> Result<(), String> {
    let results = Results::new(results);
    let charts = out.join("bench");
    std::fs::create_dir_all(&charts).map_err(|e| format!("{}: {e}", charts.display()))?;
    let mut images = Vec::new();
    if !results.cases.is_empty() {
        throughput_chart(&results, &charts.join("throughput.svg"))?;
        latency_chart(&results, &charts.join("latency.svg"))?;
        images.extend(["throughput", "latency"]);
    }
    if !results.idle_counts.is_empty() {
        memory_chart(&results, &charts.join("memory.svg"))?;
        images.push("memory");
    }
    if !results.compressed_cases.is_empty() {
        compression_chart(&results, &charts.join("compression.svg"))?;
        images.push("compression");
    }
    let mut md = markdown(&results, &images);
    for (fragment, heading) in FRAGMENTS {
        if charts.join(fragment).is_file() {
            let _ = writeln!(
                md,
                "
## {heading}

{{{{#include bench/{fragment}}}}}"
            );
        }
    }
    let chapter = out.join("benchmarks.md");
    std::fs::write(&chapter, md).map_err(|e| format!("{}: {e}", chapter.display()))
}

/// Fragments other tools leave in `bench/`, and the heading each goes under.
const FRAGMENTS: [(&str, &str); 2] =
    [("micro.md", "Protocol core (criterion)"), ("flate-backends.md", "Compression backends")];

/// The results, indexed.
struct Results<'a> {
    raw: &'a Value,
    servers: Vec<String>,
    /// (connections, size) in matrix order.
    cases: Vec<(u64, u64)>,
    idle_counts: Vec<u64>,
    /// The compression variants, and their cases and idle counts.
    variants: Vec<String>,
    compressed_cases: Vec<(u64, u64)>,
    /// (connections, messages exchanged before going quiet).
    idle_compressed_counts: Vec<(u64, u64)>,
}

impl<'a> Results<'a> {
    fn new(raw: &'a Value) -> Self {
        let servers = raw["servers"]
            .as_array()
            .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let runs = raw["load"].as_array().map(Vec::as_slice).unwrap_or_default();
        let cases: BTreeSet<(u64, u64)> = runs
            .iter()
            .filter_map(|r| Some((r["size"].as_u64()?, r["connections"].as_u64()?)))
            .collect();
        let cases = cases.into_iter().map(|(size, conns)| (conns, size)).collect();
        let idle = raw["idle"].as_array().map(Vec::as_slice).unwrap_or_default();
        let idle_counts: BTreeSet<u64> =
            idle.iter().filter_map(|r| r["connections"].as_u64()).collect();
        let variants = raw["compression"]
            .as_array()
            .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let compressed = raw["compressed"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut compressed_cases = Vec::new();
        for run in compressed {
            if let (Some(conns), Some(size)) = (run["connections"].as_u64(), run["size"].as_u64())
                && !compressed_cases.contains(&(conns, size))
            {
                compressed_cases.push((conns, size));
            }
        }
        let idle = raw["idle_compressed"].as_array().map(Vec::as_slice).unwrap_or_default();
        // Runs from before `messages` was recorded exchanged one message.
        let idle_compressed_counts: BTreeSet<(u64, u64)> = idle
            .iter()
            .filter_map(|r| Some((r["connections"].as_u64()?, r["messages"].as_u64().unwrap_or(1))))
            .filter(|&(_, messages)| messages > 0)
            .collect();
        Self {
            raw,
            servers,
            cases,
            idle_counts: idle_counts.into_iter().collect(),
            variants,
            compressed_cases,
            idle_compressed_counts: idle_compressed_counts.into_iter().collect(),
        }
    }

    fn compressed(&self, variant: &str, (conns, size): (u64, u64)) -> Option<&'a Value> {
        self.raw["compressed"]
            .as_array()?
            .iter()
            .find(|r| r["variant"] == variant && r["connections"] == conns && r["size"] == size)
    }

    fn compressed_number(&self, variant: &str, case: (u64, u64), field: &str) -> Option<f64> {
        self.compressed(variant, case)?[field].as_f64()
    }

    /// Bytes per idle connection of `variant` after `messages` (uncompressed connections
    /// exchange none, so their one run stands for every count of messages).
    fn idle_compressed(&self, variant: &str, conns: u64, messages: u64) -> Option<f64> {
        let run = self.raw["idle_compressed"].as_array()?.iter().find(|r| {
            let exchanged = r["messages"].as_u64().unwrap_or(1);
            r["variant"] == variant
                && r["connections"] == conns
                && (exchanged == messages || (exchanged == 0 && r["deflate"] == false))
        })?;
        (run["opened"].as_u64()? > 0).then(|| run["bytes_per_connection"].as_f64())?
    }

    fn load(&self, server: &str, (conns, size): (u64, u64)) -> Option<&'a Value> {
        self.raw["load"]
            .as_array()?
            .iter()
            .find(|r| r["server"] == server && r["connections"] == conns && r["size"] == size)
    }

    fn idle(&self, server: &str, conns: u64) -> Option<&'a Value> {
        self.raw["idle"]
            .as_array()?
            .iter()
            .find(|r| r["server"] == server && r["connections"] == conns)
    }

    fn number(&self, server: &str, case: (u64, u64), field: &str) -> Option<f64> {
        self.load(server, case)?[field].as_f64()
    }

    fn per_connection(&self, server: &str, conns: u64) -> Option<f64> {
        let run = self.idle(server, conns)?;
        (run["opened"].as_u64()? > 0).then(|| run["bytes_per_connection"].as_f64())?
    }
}

/// `16 B`, `1 KiB`, `64 KiB`, `1 MiB`.
pub fn size_label(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn thousands(value: f64) -> String {
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

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "–".to_owned())
}

fn markdown(r: &Results<'_>, images: &[&str]) -> String {
    let m = &r.raw["machine"];
    let text = |v: &Value| v.as_str().unwrap_or("unknown").to_owned();
    let peers: Vec<&String> = r.servers.iter().filter(|s| *s != OURS).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "palisade's `echo` example next to echo servers of the same shape on \
         [tokio-tungstenite](https://crates.io/crates/tokio-tungstenite) and \
         [fastwebsockets](https://crates.io/crates/fastwebsockets), measured in one run on one \
         machine by `cargo xtask bench` (mode: {}). This page is generated: run the command again \
         to replace it with figures from your machine.\n",
        text(&r.raw["mode"])
    );
    let _ = writeln!(
        md,
        "- **Machine:** {}, {} cores, Linux {}; run on {}, taking {:.0} s.\n\
         - **Caveat:** every figure comes from **one run on a shared 2-core virtual machine**; \
         differences under about 10% are noise, and a single case can be off by more when the \
         host takes the CPU away during it.\n\
         - **Setup:** {}. Every server is single-threaded (a current-thread tokio runtime, one \
         task per connection, messages up to 16 MiB).\n\
         - **Load:** `palisade-load` keeps {} binary message(s) in flight per connection, \
         {} s of warm-up, then {} s measured. A round trip is one message sent and its \
         echo received; latency is measured from the moment the generator queues a message. \
         {}\n",
        text(&m["cpu"]),
        m["cores"].as_u64().unwrap_or(0),
        text(&m["kernel"]),
        text(&m["date"]),
        r.raw["elapsed"].as_f64().unwrap_or(0.0),
        text(&r.raw["pinning"]),
        r.raw["window"].as_u64().unwrap_or(1),
        r.raw["warmup"].as_f64().unwrap_or(0.0),
        r.raw["duration"].as_f64().unwrap_or(0.0),
        match r.raw["rounds"].as_u64().unwrap_or(1) {
            0 | 1 => String::new(),
            n => format!(
                "Every case ran {n} times against every server, in {n} rounds over the whole \
                 matrix; each figure is the run with the most round trips (outside interference \
                 only ever lowers throughput), and `round_rps` in the results file lists all."
            ),
        },
    );

    targets(&mut md, r);

    if !r.cases.is_empty() {
        let _ = writeln!(md, "## Echo throughput\n\nRound trips per second (higher is better).\n");
        let mut header = "| connections | size |".to_owned();
        let mut rule = "|---:|---:|".to_owned();
        for s in &r.servers {
            let _ = write!(header, " {s} |");
            rule.push_str("---:|");
        }
        for p in &peers {
            let _ = write!(header, " {OURS} / {p} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for &case in &r.cases {
            let mut row = format!("| {} | {} |", case.0, size_label(case.1));
            for s in &r.servers {
                let rps = r.number(s, case, "rps").map(thousands);
                let _ = write!(row, " {} |", or_dash(rps));
            }
            for p in &peers {
                let ratio = r
                    .number(OURS, case, "rps")
                    .zip(r.number(p, case, "rps"))
                    .filter(|(_, theirs)| *theirs > 0.0)
                    .map(|(ours, theirs)| format!("{:.2}×", ours / theirs));
                let _ = write!(row, " {} |", or_dash(ratio));
            }
            let _ = writeln!(md, "{row}");
        }
        if images.contains(&"throughput") {
            let _ = writeln!(
                md,
                "\n![Round trips per second relative to tokio-tungstenite](bench/throughput.svg)\n"
            );
        }

        let _ =
            writeln!(md, "## Latency\n\nRound-trip latency, p50 / p99 in µs (lower is better).\n");
        let mut header = "| connections | size |".to_owned();
        let mut rule = "|---:|---:|".to_owned();
        for s in &r.servers {
            let _ = write!(header, " {s} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for &case in &r.cases {
            let mut row = format!("| {} | {} |", case.0, size_label(case.1));
            for s in &r.servers {
                let cell = r
                    .number(s, case, "p50_us")
                    .zip(r.number(s, case, "p99_us"))
                    .map(|(p50, p99)| format!("{} / {}", thousands(p50), thousands(p99)));
                let _ = write!(row, " {} |", or_dash(cell));
            }
            let _ = writeln!(md, "{row}");
        }
        if images.contains(&"latency") {
            let _ = writeln!(md, "\n![p99 round-trip latency](bench/latency.svg)\n");
        }

        let _ = writeln!(
            md,
            "## Every run\n\nMB/s counts echoed payload in each direction. CPU is the share of \
             one core used during the measured interval: a server at 1.00 is saturated; the load \
             generator staying well under 1.00 shows it was not the bottleneck.\n\n\
             | server | connections | size | round trips/s | MB/s | server CPU | generator CPU | errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &case in &r.cases {
            for s in &r.servers {
                let Some(run) = r.load(s, case) else { continue };
                let f = |field: &str, digits: usize| {
                    or_dash(run[field].as_f64().map(|v| format!("{v:.digits$}")))
                };
                let errors = run["errors"].as_u64().unwrap_or(0);
                let _ = writeln!(
                    md,
                    "| {s} | {} | {} | {} | {} | {} | {} | {errors} |",
                    case.0,
                    size_label(case.1),
                    or_dash(run["rps"].as_f64().map(thousands)),
                    f("mb_per_s", 1),
                    f("server_cpu", 2),
                    f("client_cpu", 2),
                );
            }
        }
        let _ = writeln!(md);
    }

    pipelined::section(&mut md, r.raw, &r.servers);

    if !r.idle_counts.is_empty() {
        let _ = writeln!(
            md,
            "## Memory per idle connection\n\nThe server's resident memory (`VmRSS`) read \
             before and after opening N connections that complete the handshake and then send \
             nothing, divided by N (lower is better). Everything the server keeps per connection \
             counts: socket, task, buffers, and the allocator's slack.\n"
        );
        let mut header = "| connections |".to_owned();
        let mut rule = "|---:|".to_owned();
        for s in &r.servers {
            let _ = write!(header, " {s} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for &n in &r.idle_counts {
            let mut row = format!("| {} |", thousands(n as f64));
            for s in &r.servers {
                let cell = r.per_connection(s, n).map(|b| format!("{:.1} KiB", b / 1024.0));
                let failed = r.idle(s, n).and_then(|run| run["failed"].as_u64()).unwrap_or(0);
                let note = if failed > 0 { format!(" ({failed} failed)") } else { String::new() };
                let _ = write!(row, " {}{note} |", or_dash(cell));
            }
            let _ = writeln!(md, "{row}");
        }
        if let Some(note) = r.raw["idle_note"].as_str() {
            let _ = writeln!(md, "\nNote: {note}.");
        }
        if images.contains(&"memory") {
            let _ = writeln!(md, "\n![Memory per idle connection](bench/memory.svg)\n");
        }
    }

    compression(&mut md, r, images);
    typed_json(&mut md, r);

    let _ = writeln!(
        md,
        "## Reproducing\n\n\
         ```text\n\
         cargo xtask bench            # the full matrix, about 15 minutes\n\
         cargo xtask bench --quick    # a subset, under 3 minutes\n\
         cargo xtask bench --micro    # the criterion benchmarks below, about 10 minutes\n\
         cargo xtask bench --compression   # the compression section alone, written to \
         target/bench-compression/\n\
         crates/palisade-bench/flate-backends/run.sh   # the flate2 backends (needs cmake)\n\
         ```\n\n\
         The peer servers are `crates/palisade-bench/src/bin/echo-tungstenite.rs` and \
         `echo-fastwebsockets.rs`, each following its crate's own echo example; the load \
         generator is `palisade-load` in the same crate. The load generator writes \
         pre-masked frames prepared before the run (compressed ones too, with `--deflate`) and \
         skips reply payloads without copying them."
    );
    md
}

/// The typed JSON echo: palisade-json's envelope against the same echo written by hand.
fn typed_json(md: &mut String, r: &Results<'_>) {
    let Some(runs) = r.raw["json"].as_array().filter(|runs| !runs.is_empty()) else { return };
    let servers: Vec<&str> = r.raw["json_servers"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut cases: Vec<(u64, u64)> = Vec::new();
    for run in runs {
        if let (Some(conns), Some(size)) = (run["connections"].as_u64(), run["size"].as_u64())
            && !cases.contains(&(conns, size))
        {
            cases.push((conns, size));
        }
    }
    let find = |server: &str, (conns, size): (u64, u64)| {
        runs.iter()
            .find(|r| r["server"] == server && r["connections"] == conns && r["size"] == size)
    };
    // Server CPU per round trip, in µs: what the server spends on each message, which the
    // rate alone hides once the load generator saturates first.
    let cpu_per_message = |run: &Value| {
        let (cpu, rps) = (run["server_cpu"].as_f64()?, run["rps"].as_f64()?);
        (rps > 0.0).then(|| cpu / rps * 1e6)
    };
    let _ = writeln!(
        md,
        "## Typed JSON

         A typed echo: each message is a JSON event, `{{\"event\":\"echo\",\"data\":         {{\"seq\":1,\"text\":\"…\"}}}}` padded to the size, parsed into a typed value, and          answered with the same event. palisade's `json_echo` example does it through          palisade-json (envelope, limits, error replies, strike policy); the peer is the same          echo written by hand with tokio-tungstenite and serde_json          (`crates/palisade-bench/src/bin/echo-json-tungstenite.rs`). Server CPU per message is          the server's CPU time over its round trips (lower is better).
"
    );
    let mut header = "| connections | size |".to_owned();
    let mut rule = "|---:|---:|".to_owned();
    for s in &servers {
        let _ = write!(header, " {s}: round trips/s | CPU µs/msg | p50 / p99 µs |");
        rule.push_str("---:|---:|---:|");
    }
    if servers.len() == 2 {
        let _ = write!(header, " CPU/msg {} / {} |", servers[0], servers[1]);
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for &case in &cases {
        let mut row = format!("| {} | {} |", case.0, size_label(case.1));
        for s in &servers {
            let run = find(s, case);
            let rps = run.and_then(|run| run["rps"].as_f64()).map(thousands);
            let cpu = run.and_then(cpu_per_message).map(|us| format!("{us:.2}"));
            let lat = run.and_then(|run| {
                Some(format!(
                    "{} / {}",
                    thousands(run["p50_us"].as_f64()?),
                    thousands(run["p99_us"].as_f64()?)
                ))
            });
            let _ = write!(row, " {} | {} | {} |", or_dash(rps), or_dash(cpu), or_dash(lat));
        }
        if servers.len() == 2 {
            let ratio = find(servers[0], case)
                .and_then(cpu_per_message)
                .zip(find(servers[1], case).and_then(cpu_per_message))
                .map(|(ours, theirs)| format!("{:.2}×", ours / theirs));
            let _ = write!(row, " {} |", or_dash(ratio));
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md);
}

/// The compressed runs: palisade against itself, uncompressed and with both presets.
fn compression(md: &mut String, r: &Results<'_>, images: &[&str]) {
    if r.compressed_cases.is_empty() && r.idle_compressed_counts.is_empty() {
        return;
    }
    let base = r.variants.first().cloned().unwrap_or_default();
    let others: Vec<&String> = r.variants.iter().skip(1).collect();
    let _ = writeln!(
        md,
        "## Compression\n\n\
         palisade's `echo` example uncompressed, with permessage-deflate (`--deflate`: 15-bit \
         windows, context takeover, level 1, only the windows' bytes kept between messages), \
         with the lean preset (`--deflate-lean`: 10-bit windows, no context takeover) and with \
         zlib's streams kept between messages (`--deflate-retained`). The load generator sends JSON-like text that zlib \
         compresses about 3:1, rotating through {} different messages per connection, each \
         compressed once before the run; it never inflates the echoes, so the server's cost is \
         what shows. Neither peer supports permessage-deflate, so the comparison is with \
         palisade itself. MB/s counts uncompressed payload.\n",
        crate::deflate::VARIANTS
    );
    if !r.compressed_cases.is_empty() {
        let mut header = "| connections | size |".to_owned();
        let mut rule = "|---:|---:|".to_owned();
        for v in &r.variants {
            let _ = write!(header, " {v} |");
            rule.push_str("---:|");
        }
        for v in &others {
            let _ = write!(header, " {v} / {base} |");
            rule.push_str("---:|");
        }
        for v in &r.variants {
            let _ = write!(header, " CPU µs/msg {v} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(
            md,
            "Round trips per second (higher is better), and the server's CPU time per round \
             trip (lower is better).\n"
        );
        let _ = writeln!(md, "{header}\n{rule}");
        for &case in &r.compressed_cases {
            let mut row = format!("| {} | {} |", case.0, size_label(case.1));
            for v in &r.variants {
                let rps = r.compressed_number(v, case, "rps").map(thousands);
                let _ = write!(row, " {} |", or_dash(rps));
            }
            for v in &others {
                let ratio = r
                    .compressed_number(v, case, "rps")
                    .zip(r.compressed_number(&base, case, "rps"))
                    .filter(|(_, b)| *b > 0.0)
                    .map(|(x, b)| format!("{:.2}×", x / b));
                let _ = write!(row, " {} |", or_dash(ratio));
            }
            for v in &r.variants {
                let cpu = r
                    .compressed_number(v, case, "server_cpu")
                    .zip(r.compressed_number(v, case, "rps"))
                    .filter(|(_, rps)| *rps > 0.0)
                    .map(|(cpu, rps)| format!("{:.1}", cpu / rps * 1e6));
                let _ = write!(row, " {} |", or_dash(cpu));
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
        // What the echoes weigh on the wire: the server's compression ratio.
        let mut header = "| connections | size |".to_owned();
        let mut rule = "|---:|---:|".to_owned();
        for v in &r.variants {
            let _ = write!(header, " wire / text {v} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(
            md,
            "The server's echoes on the wire, as a share of the text they carry (payload bytes; \
             lower is better).\n\n{header}\n{rule}"
        );
        for &case in &r.compressed_cases {
            let mut row = format!("| {} | {} |", case.0, size_label(case.1));
            for v in &r.variants {
                let share = r
                    .compressed_number(v, case, "reply_bytes_per_echo")
                    .map(|bytes| format!("{:.1}%", bytes / case.1 as f64 * 100.0));
                let _ = write!(row, " {} |", or_dash(share));
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
        let mut header = "| connections | size |".to_owned();
        let mut rule = "|---:|---:|".to_owned();
        for v in &r.variants {
            let _ = write!(header, " p50 / p99 µs {v} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for &case in &r.compressed_cases {
            let mut row = format!("| {} | {} |", case.0, size_label(case.1));
            for v in &r.variants {
                let cell = r
                    .compressed_number(v, case, "p50_us")
                    .zip(r.compressed_number(v, case, "p99_us"))
                    .map(|(p50, p99)| format!("{} / {}", thousands(p50), thousands(p99)));
                let _ = write!(row, " {} |", or_dash(cell));
            }
            let _ = writeln!(md, "{row}");
        }
        if images.contains(&"compression") {
            let _ = writeln!(md, "\n![Compressed echo throughput](bench/compression.svg)");
        }
        let _ = writeln!(md);
    }
    if !r.idle_compressed_counts.is_empty() {
        let _ = writeln!(
            md,
            "Memory per idle connection: each connection agrees to the extension (or not, \
             uncompressed), exchanges 1 KiB messages one at a time, and goes quiet, so the \
             server holds whatever compression state it keeps between messages. After 40 \
             messages more than a 32 KiB window has passed each way.\n"
        );
        let mut header = "| connections | messages |".to_owned();
        let mut rule = "|---:|---:|".to_owned();
        for v in &r.variants {
            let _ = write!(header, " {v} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for &(n, messages) in &r.idle_compressed_counts {
            let mut row = format!("| {} | {messages} |", thousands(n as f64));
            for v in &r.variants {
                let cell =
                    r.idle_compressed(v, n, messages).map(|b| format!("{:.1} KiB", b / 1024.0));
                let _ = write!(row, " {} |", or_dash(cell));
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
    }
}

/// The targets of the benchmark issue, checked against this run.
fn targets(md: &mut String, r: &Results<'_>) {
    const BEST_PEER: &str = "fastwebsockets";
    if !r.servers.iter().any(|s| s == BEST_PEER) {
        return;
    }
    let _ = writeln!(md, "## Targets\n");
    let compared: Vec<(u64, u64, f64)> = r
        .cases
        .iter()
        .filter_map(|&case| {
            let ours = r.number(OURS, case, "rps")?;
            let theirs = r.number(BEST_PEER, case, "rps").filter(|v| *v > 0.0)?;
            Some((case.0, case.1, ours / theirs))
        })
        .collect();
    if !compared.is_empty() {
        let ahead = compared.iter().filter(|c| c.2 >= 1.0).count();
        let behind: Vec<String> = compared
            .iter()
            .filter(|c| c.2 < 1.0)
            .map(|&(conns, size, ratio)| format!("{conns} × {} ({ratio:.2}×)", size_label(size)))
            .collect();
        let _ = write!(
            md,
            "- **Throughput ≥ fastwebsockets everywhere:** palisade is at or above it in {ahead} \
             of {} cases",
            compared.len()
        );
        if behind.is_empty() {
            let _ = writeln!(md, ".");
        } else {
            let _ = writeln!(md, "; below it at {}.", behind.join(", "));
        }
    }
    if let Some(&n) = r.idle_counts.last()
        && let Some(ours) = r.per_connection(OURS, n)
    {
        let kib = ours / 1024.0;
        let verdict = if kib < 4.0 {
            "met, and under the 4 KiB aim"
        } else if kib < 6.0 {
            "met"
        } else {
            "missed"
        };
        let _ = writeln!(
            md,
            "- **Idle memory < 6 KiB per connection (aim < 4 KiB):** {kib:.1} KiB at {} \
                 connections — {verdict}.",
            thousands(n as f64)
        );
    }
    let _ = writeln!(md);
}

/// The x-axis label of a case: `64 × 1 KiB`.
fn case_label((conns, size): (u64, u64)) -> String {
    format!("{conns}×{}", size_label(size))
}

/// Grouped bars, one group per category and one bar per server; `log` for a log-scale y axis.
fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    servers: &[String],
    categories: &[String],
    values: &dyn Fn(&str, usize) -> Option<f64>,
    log: bool,
) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let width = (160 + 90 * categories.len()).max(640) as u32;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let all: Vec<f64> = servers
        .iter()
        .flat_map(|s| (0..categories.len()).filter_map(|i| values(s, i)))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let top = all.iter().copied().fold(0.0, f64::max).max(1e-9);
    let bottom = all.iter().copied().fold(f64::INFINITY, f64::min).min(top);
    let n = categories.len() as f64;
    let group = 0.8 / servers.len().max(1) as f64;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            categories.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(categories.len() + 1)
                .x_label_formatter(&label)
                .y_label_formatter(&|v: &f64| {
                    if *v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
                })
                .y_desc(y_label)
                .draw()
                .map_err(|e| failed(&e))?;
            for (k, server) in servers.iter().enumerate() {
                let colour = COLOURS[k % COLOURS.len()];
                let bars = (0..categories.len()).filter_map(|i| {
                    let v = values(server, i)?;
                    let x0 = i as f64 - 0.4 + group * k as f64;
                    Some(Rectangle::new([(x0, $base), (x0 + group * 0.9, v)], colour.filled()))
                });
                chart.draw_series(bars).map_err(|e| failed(&e))?.label(server.as_str()).legend(
                    move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()),
                );
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| failed(&e))?;
        }};
    }
    if log {
        let low = 10f64.powf(bottom.log10().floor());
        let high = 10f64.powf(top.log10().ceil()).max(low * 10.0);
        let chart = builder
            .build_cartesian_2d(-0.5..n - 0.5, (low..high).log_scale())
            .map_err(|e| failed(&e))?;
        draw!(chart, low);
    } else {
        let chart =
            builder.build_cartesian_2d(-0.5..n - 0.5, 0.0..top * 1.3).map_err(|e| failed(&e))?;
        draw!(chart, 0.0);
    }
    root.present().map_err(|e| failed(&e))
}

fn throughput_chart(r: &Results<'_>, path: &Path) -> Result<(), String> {
    let baseline = r.servers.iter().find(|s| s.contains("tungstenite")).cloned();
    let categories: Vec<String> = r.cases.iter().map(|&c| case_label(c)).collect();
    let values = |server: &str, i: usize| {
        let case = r.cases[i];
        let rps = r.number(server, case, "rps")?;
        match &baseline {
            Some(base) => Some(rps / r.number(base, case, "rps").filter(|v| *v > 0.0)?),
            None => Some(rps),
        }
    };
    let y = if baseline.is_some() { "round trips/s ÷ tokio-tungstenite" } else { "round trips/s" };
    bar_chart(
        path,
        "Echo throughput (higher is better)",
        y,
        &r.servers,
        &categories,
        &values,
        false,
    )
}

fn latency_chart(r: &Results<'_>, path: &Path) -> Result<(), String> {
    let categories: Vec<String> = r.cases.iter().map(|&c| case_label(c)).collect();
    let values = |server: &str, i: usize| r.number(server, r.cases[i], "p99_us");
    bar_chart(path, "p99 latency (lower is better)", "µs", &r.servers, &categories, &values, true)
}

fn compression_chart(r: &Results<'_>, path: &Path) -> Result<(), String> {
    let categories: Vec<String> = r.compressed_cases.iter().map(|&c| case_label(c)).collect();
    let values =
        |variant: &str, i: usize| r.compressed_number(variant, r.compressed_cases[i], "rps");
    bar_chart(
        path,
        "Echo of compressible text, palisade (higher is better)",
        "round trips/s",
        &r.variants,
        &categories,
        &values,
        true,
    )
}

fn memory_chart(r: &Results<'_>, path: &Path) -> Result<(), String> {
    let categories: Vec<String> =
        r.idle_counts.iter().map(|&n| format!("{} idle", thousands(n as f64))).collect();
    let values =
        |server: &str, i: usize| Some(r.per_connection(server, r.idle_counts[i])? / 1024.0);
    bar_chart(
        path,
        "Memory per idle connection (lower is better)",
        "KiB per connection",
        &r.servers,
        &categories,
        &values,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_sizes_and_counts() {
        assert_eq!(size_label(16), "16 B");
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(64 << 10), "64 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn writes_chapter_and_charts() {
        let run = |server: &str, rps: f64| {
            json!({ "server": server, "connections": 64, "size": 16, "rps": rps,
                    "mb_per_s": 1.0, "p50_us": 100.0, "p99_us": 300.0, "errors": 0,
                    "client_cpu": 0.5, "server_cpu": 1.0 })
        };
        let idle = |server: &str, bytes: f64| {
            json!({ "server": server, "connections": 1000, "opened": 1000, "failed": 0,
                    "bytes_per_connection": bytes })
        };
        let results = json!({
            "machine": { "cpu": "Test CPU", "cores": 2, "date": "today", "kernel": "6.1" },
            "mode": "smoke", "warmup": 1.0, "duration": 2.0, "window": 1, "pinning": "none",
            "servers": ["palisade", "tokio-tungstenite", "fastwebsockets"],
            "load": [run("palisade", 200.0), run("tokio-tungstenite", 100.0), run("fastwebsockets", 160.0)],
            "idle": [idle("palisade", 2048.0), idle("tokio-tungstenite", 138_000.0), idle("fastwebsockets", 6300.0)],
            "compression": ["uncompressed", "deflate", "deflate lean"],
            "compressed": [
                json!({ "variant": "uncompressed", "connections": 64, "size": 1024, "rps": 1000.0,
                        "p50_us": 50.0, "p99_us": 90.0, "server_cpu": 1.0, "errors": 0 }),
                json!({ "variant": "deflate", "connections": 64, "size": 1024, "rps": 500.0,
                        "p50_us": 80.0, "p99_us": 150.0, "server_cpu": 1.0, "errors": 0,
                        "reply_bytes_per_echo": 300.0 }),
                json!({ "variant": "deflate lean", "connections": 64, "size": 1024, "rps": 250.0,
                        "p50_us": 90.0, "p99_us": 200.0, "server_cpu": 1.0, "errors": 0 }),
            ],
            "idle_compressed": [
                json!({ "variant": "uncompressed", "connections": 1000, "opened": 1000, "bytes_per_connection": 9216.0,
                        "deflate": false, "messages": 0 }),
                json!({ "variant": "deflate", "connections": 1000, "opened": 1000, "bytes_per_connection": 307_200.0 }),
                json!({ "variant": "deflate", "connections": 1000, "opened": 1000, "bytes_per_connection": 40_960.0,
                        "deflate": true, "messages": 40 }),
                json!({ "variant": "deflate lean", "connections": 1000, "opened": 1000, "bytes_per_connection": 10_240.0 }),
            ],
        });
        let dir =
            std::env::temp_dir().join(format!("palisade-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bench")).expect("a temporary directory");
        std::fs::write(dir.join("bench/micro.md"), "### Micro\n").expect("a fragment");
        write(&results, &dir).expect("the report is written");
        let md = std::fs::read_to_string(dir.join("benchmarks.md")).expect("the chapter");
        assert!(md.contains("| 64 | 16 B | 200 | 100 | 160 | 2.00× | 1.25× |"), "{md}");
        assert!(md.contains("| 1,000 | 2.0 KiB |"), "{md}");
        assert!(md.contains("Test CPU"));
        assert!(
            md.contains(
                "| 64 | 1 KiB | 1,000 | 500 | 250 | 0.50× | 0.25× | 1000.0 | 2000.0 | 4000.0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 64 | 1 KiB | – | 29.3% | – |"), "{md}");
        // Runs without `messages` exchanged one; uncompressed ones stand for every count.
        assert!(md.contains("| 1,000 | 1 | 9.0 KiB | 300.0 KiB | 10.0 KiB |"), "{md}");
        assert!(md.contains("| 1,000 | 40 | 9.0 KiB | 40.0 KiB | – |"), "{md}");
        assert!(md.contains("{{#include bench/micro.md}}"), "{md}");
        assert!(!md.contains("flate-backends.md"), "{md}");
        for chart in ["throughput", "latency", "memory", "compression"] {
            let svg = std::fs::read_to_string(dir.join(format!("bench/{chart}.svg"))).expect("svg");
            assert!(svg.starts_with("<svg"), "{chart}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
