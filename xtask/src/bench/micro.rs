//! `cargo xtask bench --micro`: the criterion benchmarks of the protocol core, then their
//! figures written to the book as `docs/src/bench/micro.md`.
//!
//! The benches live in `crates/palisade-proto/benches/proto.rs` and, for the JSON envelope,
//! `crates/palisade-json/benches/envelope.rs`. Criterion leaves each
//! measurement in `target/criterion/<group>/<function>/<parameter>/new/`: `benchmark.json`
//! names it and gives its throughput (bytes or elements per iteration), `estimates.json` gives
//! the time per iteration. This module reads those two files for every benchmark the run just
//! made and writes one table per group: a row per parameter, a column per function, and for
//! each contender the ratio of palisade's throughput to its own. The naming it relies on
//! (`palisade` is the reference, `palisade_*` are variants of it) is documented in `proto.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cmd;

/// Criterion's timing options for this run: short, so the whole suite takes minutes.
const CRITERION_ARGS: [&str; 4] = ["--warm-up-time", "1", "--measurement-time", "3"];

/// Where the fragment goes, from the workspace root; the benchmark chapter includes it.
const OUTPUT: &str = "docs/src/bench/micro.md";

/// The groups in the order the fragment shows them, each with what it measures. A group not
/// listed comes after these, without a description.
const GROUPS: [(&str, &str); 8] = [
    (
        "mask",
        "XOR-masking a payload in place, starting 6 bytes past a 32-byte boundary as in a \
         read buffer. `plain_loop` is palisade's portable fallback.",
    ),
    (
        "utf8",
        "Validating mixed-script text: whole (`palisade`), fed in 4 KiB pieces \
         (`palisade_incremental_4k`), and `std::str::from_utf8`.",
    ),
    (
        "frames",
        "Server side, decoding about 1 MiB of masked client text frames of the row's size into \
         messages (unmask, UTF-8 check): messages per second.",
    ),
    (
        "encode",
        "Sending one text message, as a server (unmasked) and a client (masked): palisade's \
         `send` + `poll_transmit`, tungstenite's `WebSocket::send` and its `Frame::format`. A \
         palisade server queues payloads over 4 KiB without copying them, so its 64 KiB figure \
         is bookkeeping alone; the copy happens in the socket write.",
    ),
    (
        "handshake",
        "Opening handshakes per second: a 531-byte Chrome upgrade request parsed and validated \
         (`server-parse`), the same plus the 101 response written (`server-accept`), and a \
         client reading the 101 (`client-parse`). httparse alone is the floor; \
         `palisade_head_reader` and `palisade_parse_request` are the first steps of `palisade`.",
    ),
    (
        "deflate",
        "permessage-deflate with context takeover, 15-bit windows, level 1 (the default), over \
         distinct JSON-like messages, in bytes of uncompressed payload. `flate2` is the same \
         zlib-rs backend called directly at the same level; `palisade` keeps only the windows' \
         bytes between messages and finds its compressor again on the thread, \
         `palisade_64` is 64 such connections compressing in turn (each message rebuilds its \
         stream from the window's bytes), `palisade_retained` keeps zlib's streams, \
         `palisade_lean` is the lean preset (no context takeover, 10-bit windows). \
         tungstenite has no permessage-deflate.",
    ),
    (
        "json_decode",
        "A JSON event of the row's size in bytes, `{\"event\":\"echo\",\"data\":{\"seq\":1,\
         \"text\":…}}`, decoded into the application's typed enum: palisade-json's envelope \
         (size and depth checks, envelope rules, typed payload) against `serde_json::from_str` \
         straight into the same type. `palisade_full_path` is the path a refused frame takes \
         (a value tree, for the error's path and message).",
    ),
    (
        "json_encode",
        "The same event encoded: palisade-json's envelope into a text message, against \
         `serde_json::to_string` of the tagged enum.",
    ),
];

/// Runs the benches, then writes [`OUTPUT`] from the results of this run.
pub(super) fn run() -> Result<(), String> {
    let started = SystemTime::now();
    for (package, bench) in [("palisade-proto", "proto"), ("palisade-json", "envelope")] {
        let mut args = vec!["bench", "--package", package, "--bench", bench, "--"];
        args.extend(CRITERION_ARGS);
        cmd::run(&mut cmd::cargo(&args))?;
    }

    let root = cmd::root();
    let criterion = super::target_dir(&root).join("criterion");
    // Files written before the run started belong to an earlier one (a renamed function, a
    // group since removed); a little slack covers coarse file-system timestamps.
    let since = started.checked_sub(Duration::from_secs(2)).unwrap_or(started);
    let results = read_results(&criterion, Some(since))?;
    if results.is_empty() {
        return Err(format!("no criterion results under {}", criterion.display()));
    }
    let machine = super::machine();
    let text = render(&results, &Machine::from_json(&machine), &CRITERION_ARGS.join(" "));
    let out = root.join(OUTPUT);
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("bench: {} benchmarks written to {}", results.len(), out.display());
    Ok(())
}

/// What one iteration of a benchmark processes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Throughput {
    Bytes(u64),
    Elements(u64),
}

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq)]
struct Measurement {
    group: String,
    function: String,
    parameter: String,
    throughput: Option<Throughput>,
    /// Median time per iteration, in nanoseconds.
    median_ns: f64,
}

impl Measurement {
    /// Units per second at the median time, or `None` without a throughput.
    fn per_second(&self) -> Option<f64> {
        let units = match self.throughput? {
            Throughput::Bytes(n) | Throughput::Elements(n) => n as f64,
        };
        (self.median_ns > 0.0).then(|| units * 1e9 / self.median_ns)
    }
}

/// Parses criterion's `benchmark.json`: the group, function and parameter, and the throughput.
fn parse_benchmark(text: &str) -> Result<(String, String, String, Option<Throughput>), String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("benchmark.json: {e}"))?;
    let field = |name: &str| json[name].as_str().unwrap_or_default().to_owned();
    let group = field("group_id");
    if group.is_empty() {
        return Err("benchmark.json: no group_id".to_owned());
    }
    let throughput = match &json["throughput"] {
        Value::Object(map) => map.iter().find_map(|(kind, n)| {
            let n = n.as_u64()?;
            match kind.as_str() {
                "Bytes" | "BytesDecimal" => Some(Throughput::Bytes(n)),
                "Bits" => Some(Throughput::Bytes(n / 8)),
                "Elements" => Some(Throughput::Elements(n)),
                _ => None,
            }
        }),
        _ => None,
    };
    Ok((group, field("function_id"), field("value_str"), throughput))
}

/// Parses criterion's `estimates.json`: the median time per iteration, in ns.
fn parse_estimates(text: &str) -> Result<f64, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("estimates.json: {e}"))?;
    json["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| "estimates.json: no median.point_estimate".to_owned())
}

/// Every benchmark under `dir` (criterion's output directory) whose `new/benchmark.json` was
/// written at or after `since`, sorted by group, function and parameter.
fn read_results(dir: &Path, since: Option<SystemTime>) -> Result<Vec<Measurement>, String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries =
            std::fs::read_dir(&current).map_err(|e| format!("{}: {e}", current.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            // `base` and `change` hold older runs; only `new` is this one.
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(m) = read_measurement(&path, since)? {
                    found.push(m);
                }
            } else {
                pending.push(path);
            }
        }
    }
    found.sort_by(|a, b| {
        (&a.group, &a.function, row_key(&a.parameter)).cmp(&(
            &b.group,
            &b.function,
            row_key(&b.parameter),
        ))
    });
    Ok(found)
}

fn read_measurement(new: &Path, since: Option<SystemTime>) -> Result<Option<Measurement>, String> {
    let read = |name: &str| -> Result<Option<String>, String> {
        let path: PathBuf = new.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    };
    if let Some(since) = since {
        let modified = std::fs::metadata(new.join("benchmark.json")).and_then(|m| m.modified());
        if modified.is_ok_and(|t| t < since) {
            return Ok(None);
        }
    }
    let (Some(benchmark), Some(estimates)) = (read("benchmark.json")?, read("estimates.json")?)
    else {
        return Ok(None);
    };
    let (group, function, parameter, throughput) = parse_benchmark(&benchmark)?;
    let median_ns = parse_estimates(&estimates)?;
    Ok(Some(Measurement { group, function, parameter, throughput, median_ns }))
}

/// Rows sort by the text before a trailing number, then by the number: `client-16`,
/// `client-1024`, `server-16`.
fn row_key(parameter: &str) -> (String, u64) {
    let split = parameter.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (text, number) = parameter.split_at(split);
    (text.trim_end_matches('-').to_owned(), number.parse().unwrap_or(0))
}

/// The machine line of the fragment.
#[derive(Debug, PartialEq)]
struct Machine {
    cpu: String,
    cores: u64,
    date: String,
}

impl Machine {
    /// From [`super::machine`]'s JSON.
    fn from_json(json: &Value) -> Self {
        Machine {
            cpu: json["cpu"].as_str().unwrap_or("unknown CPU").to_owned(),
            cores: json["cores"].as_u64().unwrap_or(0),
            date: json["date"].as_str().unwrap_or("unknown date").to_owned(),
        }
    }
}

/// The markdown fragment: a heading, how and where it was measured, one table per group.
fn render(results: &[Measurement], machine: &Machine, criterion_args: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Micro benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench --micro` (criterion, `{criterion_args}`) on {}, {} \
         cores, {}. The benches are in `crates/palisade-proto/benches/proto.rs`. Each figure is \
         throughput at criterion's median time per iteration; **palisade ÷ X** is palisade's \
         throughput over X's, so above 1 palisade is faster. `memcpy` copies the same bytes \
         once: the physical limit, not a contender. Sizes are payload bytes.",
        machine.cpu, machine.cores, machine.date
    );

    let mut groups: BTreeMap<(usize, &str), Vec<&Measurement>> = BTreeMap::new();
    for m in results {
        let order = GROUPS.iter().position(|(g, _)| *g == m.group).unwrap_or(GROUPS.len());
        groups.entry((order, m.group.as_str())).or_default().push(m);
    }
    for ((_, group), measurements) in groups {
        let _ = writeln!(out, "\n#### {group}\n");
        if let Some((_, about)) = GROUPS.iter().find(|(g, _)| *g == group) {
            let _ = writeln!(out, "{about}\n");
        }
        out.push_str(&table(&measurements));
    }
    out
}

/// One group's table.
fn table(measurements: &[&Measurement]) -> String {
    let mut functions: Vec<&str> = Vec::new();
    let mut rows: Vec<&str> = Vec::new();
    for m in measurements {
        if !functions.contains(&m.function.as_str()) {
            functions.push(&m.function);
        }
        if !rows.contains(&m.parameter.as_str()) {
            rows.push(&m.parameter);
        }
    }
    functions.sort_by_key(|f| column_key(f));
    rows.sort_by_key(|r| row_key(r));
    let find = |function: &str, row: &str| {
        measurements.iter().find(|m| m.function == function && m.parameter == row)
    };
    let has_reference = functions.contains(&"palisade");

    let mut header = vec!["".to_owned()];
    for f in &functions {
        header.push(format!("`{f}`"));
        if has_reference && !is_palisade(f) {
            header.push(format!("palisade ÷ {f}"));
        }
    }
    let mut out = line(&header);
    out.push_str(&line(&header.iter().map(|_| "---:".to_owned()).collect::<Vec<_>>()));
    for row in rows {
        let reference = find("palisade", row).and_then(|m| m.per_second());
        let mut cells = vec![row_label(row)];
        for f in &functions {
            let measurement = find(f, row);
            cells.push(measurement.map_or_else(String::new, |m| rate(m)));
            if has_reference && !is_palisade(f) {
                let ratio = match (reference, measurement.and_then(|m| m.per_second())) {
                    (Some(ours), Some(theirs)) if theirs > 0.0 => ratio(ours / theirs),
                    _ => String::new(),
                };
                cells.push(ratio);
            }
        }
        out.push_str(&line(&cells));
    }
    out
}

/// A ratio with two significant digits at least: `1.25×`, `0.043×`, `0.0021×`.
fn ratio(r: f64) -> String {
    match r {
        r if r >= 0.1 => format!("{r:.2}×"),
        r if r >= 0.01 => format!("{r:.3}×"),
        r => format!("{r:.4}×"),
    }
}

fn is_palisade(function: &str) -> bool {
    function == "palisade" || function.starts_with("palisade_")
}

/// Columns: palisade, its variants, the contenders by name, memcpy last.
fn column_key(function: &str) -> (u8, String) {
    let rank = match function {
        "palisade" => 0,
        f if is_palisade(f) => 1,
        "memcpy" => 3,
        _ => 2,
    };
    (rank, function.to_owned())
}

fn line(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// `1024` → `1 KiB`, `compress-65536` → `compress, 64 KiB`, `server-parse` unchanged.
fn row_label(parameter: &str) -> String {
    let split = parameter.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (text, number) = parameter.split_at(split);
    let Ok(n) = number.parse::<u64>() else { return parameter.to_owned() };
    let size = match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    };
    match text.trim_end_matches('-') {
        "" => size,
        text => format!("{text}, {size}"),
    }
}

/// A throughput for a table cell: bytes in GiB/s or MiB/s, elements per second with k or M.
fn rate(m: &Measurement) -> String {
    let Some(per_second) = m.per_second() else {
        return format!("{:.0} ns", m.median_ns);
    };
    match m.throughput {
        Some(Throughput::Bytes(_)) => {
            let gib = per_second / f64::from(1u32 << 30);
            if gib >= 1.0 {
                format!("{gib:.2} GiB/s")
            } else {
                format!("{:.0} MiB/s", per_second / f64::from(1u32 << 20))
            }
        }
        _ => match per_second {
            p if p >= 1e6 => format!("{:.2} M/s", p / 1e6),
            p if p >= 1e3 => format!("{:.0} k/s", p / 1e3),
            p => format!("{p:.0}/s"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A criterion output directory with the two files of one benchmark, as criterion 0.7
    /// writes them (abridged to the fields read).
    fn write_benchmark(
        root: &Path,
        function: &str,
        parameter: &str,
        throughput: &str,
        median_ns: f64,
    ) {
        let dir = root.join("encode").join(function).join(parameter).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        let benchmark = format!(
            r#"{{"group_id":"encode","function_id":"{function}","value_str":"{parameter}",
            "throughput":{throughput},"full_id":"encode/{function}/{parameter}",
            "directory_name":"encode/{function}/{parameter}","title":"encode/{function}/{parameter}"}}"#
        );
        std::fs::write(dir.join("benchmark.json"), benchmark).unwrap();
        let estimate = |point: f64| {
            format!(
                r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{point},
                "upper_bound":{point}}},"point_estimate":{point},"standard_error":1.0}}"#
            )
        };
        let estimates = format!(
            r#"{{"mean":{},"median":{},"median_abs_dev":{},"slope":null,"std_dev":{}}}"#,
            estimate(median_ns * 1.1),
            estimate(median_ns),
            estimate(1.0),
            estimate(2.0),
        );
        std::fs::write(dir.join("estimates.json"), estimates).unwrap();
        // An older run's result beside it, which must be ignored.
        let base = dir.with_file_name("base");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("estimates.json"), "not read").unwrap();
    }

    fn fixture(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-micro-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write_benchmark(&root, "palisade", "server-1024", r#"{"Bytes":1024}"#, 100.0);
        write_benchmark(&root, "tungstenite", "server-1024", r#"{"Bytes":1024}"#, 200.0);
        write_benchmark(&root, "memcpy", "server-1024", r#"{"Bytes":1024}"#, 50.0);
        write_benchmark(&root, "palisade", "server-16", r#"{"Bytes":16}"#, 10.0);
        root
    }

    #[test]
    fn parses_criterion_files() {
        let root = fixture("parse");
        let results = read_results(&root, None).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(results.len(), 4);
        let first = &results[0];
        assert_eq!(first.group, "encode");
        assert_eq!(first.function, "memcpy");
        assert_eq!(first.parameter, "server-1024");
        assert_eq!(first.throughput, Some(Throughput::Bytes(1024)));
        assert!((first.median_ns - 50.0).abs() < 1e-9);
        // 1024 bytes in 50 ns.
        assert!((first.per_second().unwrap() - 20.48e9).abs() < 1.0);
        // Sorted numerically within a function: 16 before 1024.
        assert_eq!(results[1].parameter, "server-16");
        assert_eq!(results[2].parameter, "server-1024");
    }

    #[test]
    fn skips_results_older_than_the_run() {
        let root = fixture("since");
        let later = SystemTime::now() + Duration::from_secs(3600);
        let results = read_results(&root, Some(later)).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(results.is_empty());
    }

    #[test]
    fn parses_elements_and_rejects_garbage() {
        let parsed = parse_benchmark(
            r#"{"group_id":"frames","function_id":"palisade","value_str":"16",
            "throughput":{"Elements":65536}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            (
                "frames".to_owned(),
                "palisade".to_owned(),
                "16".to_owned(),
                Some(Throughput::Elements(65536))
            )
        );
        let no_throughput = parse_benchmark(r#"{"group_id":"g","throughput":null}"#).unwrap();
        assert_eq!(no_throughput.3, None);
        assert!(parse_benchmark("{").is_err());
        assert!(parse_benchmark(r#"{"function_id":"x"}"#).is_err());
        assert!(parse_estimates(r#"{"mean":{}}"#).is_err());
    }

    #[test]
    fn renders_one_table_per_group_with_ratios() {
        let root = fixture("render");
        let results = read_results(&root, None).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let machine = Machine { cpu: "Test CPU".to_owned(), cores: 2, date: "today".to_owned() };
        let text = render(&results, &machine, "--quick");
        assert!(text.starts_with("### Micro benchmarks\n"), "{text}");
        assert!(text.contains("Test CPU, 2 cores, today"), "{text}");
        assert!(text.contains("\n#### encode\n"), "{text}");
        assert!(text.contains(
            "|  | `palisade` | `tungstenite` | palisade ÷ tungstenite | `memcpy` | palisade ÷ memcpy |"
        ), "{text}");
        // 1024 B in 100 ns is 9.54 GiB/s; twice tungstenite's; half memcpy's.
        assert!(
            text.contains(
                "| server, 1 KiB | 9.54 GiB/s | 4.77 GiB/s | 2.00× | 19.07 GiB/s | 0.50× |"
            ),
            "{text}"
        );
        // Rows in numeric order, missing cells empty.
        let small = text.find("| server, 16 B | 1.49 GiB/s |  |  |  |  |").unwrap();
        assert!(small < text.find("| server, 1 KiB |").unwrap(), "{text}");
    }

    #[test]
    fn labels_and_rates() {
        assert_eq!(row_label("16"), "16 B");
        assert_eq!(row_label("65536"), "64 KiB");
        assert_eq!(row_label("inflate-16384"), "inflate, 16 KiB");
        assert_eq!(row_label("server-parse"), "server-parse");
        assert_eq!(row_key("client-1024"), ("client".to_owned(), 1024));
        let m = |throughput, median_ns| Measurement {
            group: "g".to_owned(),
            function: "f".to_owned(),
            parameter: "p".to_owned(),
            throughput,
            median_ns,
        };
        assert_eq!(rate(&m(Some(Throughput::Elements(1)), 2000.0)), "500 k/s");
        assert_eq!(rate(&m(Some(Throughput::Elements(1)), 500.0)), "2.00 M/s");
        assert_eq!(rate(&m(Some(Throughput::Bytes(1 << 20)), 1e9)), "1 MiB/s");
        assert_eq!(rate(&m(None, 42.0)), "42 ns");
        assert_eq!(ratio(1.234), "1.23×");
        assert_eq!(ratio(0.0432), "0.043×");
        assert_eq!(ratio(0.00213), "0.0021×");
    }
}
