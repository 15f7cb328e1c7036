//! `cargo xtask soak [--connections N] [--seconds S]`: palisade's `examples/soak.rs` under
//! echo and room-broadcast load for a long time (defaults: 2,000 connections, 60 s), every
//! message numbered and checked by `palisade-load soak` (`palisade_bench::soak`).
//!
//! It reuses the benchmarks' machinery ([`crate::bench`]): the release binaries, the server
//! started through `palisade-load exec` (which raises the open-file limit: 2,000 connections
//! with both ends on this machine hold over 4,000 descriptors) and pinned to CPU 0, the
//! generator on CPU 1, every process killed by its id at the end.
//!
//! Its last line is a contract that other tools read:
//!
//! ```text
//! soak: 2000 connections, 60 s, N messages, 0 lost, 0 duplicated, 0 reordered, 0 unexpected closes, RSS A → B MiB
//! ```
//!
//! It fails (exit code 1) when anything was lost, duplicated, reordered or closed unexpectedly,
//! when the generator met any other error, when the server died, or when the server's resident
//! memory at the end exceeds [`rss_bound`] of the memory after the warm-up.
//!
//! The CI stage `soak-smoke` runs it with 100 connections for 5 s ([`smoke`]).

use std::process::ExitCode;

use serde_json::Value;

use crate::bench::{Pinning, Server, target_dir};
use crate::cmd;

/// The defaults of `cargo xtask soak`.
const CONNECTIONS: u64 = 2_000;
const SECONDS: u64 = 60;

/// `cargo xtask soak [--connections N] [--seconds S]`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let (connections, seconds) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}\nusage: cargo xtask soak [--connections N] [--seconds S]");
            return ExitCode::from(2);
        }
    };
    let (result, line) = soak(connections, seconds);
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    // The contract: whatever happened, the last line is the summary, when there is one.
    if let Some(line) = line {
        println!("{line}");
    }
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The CI stage: 100 connections for 5 s.
pub(crate) fn smoke() -> Result<(), String> {
    let (result, line) = soak(100, 5);
    if let Some(line) = line {
        println!("{line}");
    }
    result
}

fn parse(args: &[String]) -> Result<(u64, u64), String> {
    let (mut connections, mut seconds) = (CONNECTIONS, SECONDS);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--connections" | "-c" => &mut connections,
            "--seconds" | "-s" => &mut seconds,
            other => return Err(format!("unknown argument `{other}`")),
        };
        let value = args.next().ok_or_else(|| format!("`{arg}` needs a value"))?;
        *target = value.parse().map_err(|_| format!("`{arg} {value}`: not a whole number"))?;
    }
    if connections < 2 || seconds == 0 {
        return Err("at least 2 connections (one echo, one room member) and 1 second".to_owned());
    }
    Ok((connections, seconds))
}

/// The warm-up before the first memory reading: a tenth of the run, between 1 and 5 s.
fn warmup(seconds: u64) -> u64 {
    (seconds / 10).clamp(1, 5)
}

/// The largest resident memory allowed at the end, for `start` after the warm-up (bytes): a
/// quarter more, or 16 MiB more when that is larger. Every connection is already open at the
/// start, so a server that holds on to nothing per message stays within it however long the
/// run; one that keeps something per message (a leak) grows with the messages and crosses it.
fn rss_bound(start: f64) -> f64 {
    start + (start / 4.0).max(16.0 * 1024.0 * 1024.0)
}

/// Runs the soak; returns its verdict and, when the generator got as far as a result, the
/// summary line.
fn soak(connections: u64, seconds: u64) -> (Result<(), String>, Option<String>) {
    let run = match measure(connections, seconds) {
        Ok(run) => run,
        Err(e) => return (Err(e), None),
    };
    let line = summary(connections, seconds, &run.result);
    (judge(&run.result, run.server_died), Some(line))
}

/// What [`measure`] brings back.
struct Run {
    /// The generator's JSON line.
    result: Value,
    /// The server was gone when the generator finished.
    server_died: bool,
}

fn measure(connections: u64, seconds: u64) -> Result<Run, String> {
    let root = cmd::root();
    cmd::run(&mut cmd::cargo(["build", "--release", "--package", "palisade-bench", "--bins"]))?;
    cmd::run(&mut cmd::cargo([
        "build",
        "--release",
        "--package",
        "palisade",
        "--example",
        "soak",
    ]))?;
    let release = target_dir(&root).join("release");
    let load = release.join("palisade-load");
    let work = target_dir(&root).join("soak");
    std::fs::create_dir_all(work.join("logs")).map_err(|e| format!("{}: {e}", work.display()))?;
    let pin = Pinning::detect();
    let mut server =
        Server::start("palisade-soak", &release.join("examples/soak"), &[], &load, &pin, &work)?;
    println!(
        "soak: server on {} (process {}), log in {}",
        server.url,
        server.pid(),
        work.join("logs/palisade-soak.log").display()
    );
    let mut command = pin.load_command(&load);
    command.args(["soak", "--url", &server.url, "--connections", &connections.to_string()]);
    command.args(["--seconds", &seconds.to_string(), "--warmup", &warmup(seconds).to_string()]);
    command.args(["--server-pid", &server.pid().to_string()]);
    let (status, output) = cmd::run_tee(&mut command);
    let server_died = !server.alive();
    drop(server);
    status?;
    let line = output.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let result = serde_json::from_str(line)
        .map_err(|e| format!("the soak generator printed {line:?}: {e}"))?;
    Ok(Run { result, server_died })
}

/// The contract line.
fn summary(connections: u64, seconds: u64, result: &Value) -> String {
    let count = |field: &str| result[field].as_u64().unwrap_or(0);
    let mib =
        |field: &str| result[field].as_f64().map_or_else(|| "?".to_owned(), |m| format!("{m:.1}"));
    format!(
        "soak: {connections} connections, {seconds} s, {} messages, {} lost, {} duplicated, \
         {} reordered, {} unexpected closes, RSS {} → {} MiB",
        count("messages"),
        count("lost"),
        count("duplicated"),
        count("reordered"),
        count("unexpected_closes"),
        mib("rss_start_mib"),
        mib("rss_end_mib"),
    )
}

/// What was wrong with a run, if anything.
fn judge(result: &Value, server_died: bool) -> Result<(), String> {
    let mut problems = Vec::new();
    for field in ["lost", "duplicated", "reordered", "unexpected_closes", "errors"] {
        match result[field].as_u64() {
            Some(0) => {}
            Some(n) => problems.push(format!("{n} {}", field.replace('_', " "))),
            None => problems.push(format!("no `{field}` in the result")),
        }
    }
    if let Some(first) = result["first_error"].as_str() {
        problems.push(format!("first error: {first}"));
    }
    if result["messages"].as_u64().unwrap_or(0) == 0 {
        problems.push("no message was checked".to_owned());
    }
    if server_died {
        problems.push("the server exited during the run".to_owned());
    }
    match (result["rss_start_mib"].as_f64(), result["rss_end_mib"].as_f64()) {
        (Some(start), Some(end)) => {
            let bound = rss_bound(start * 1024.0 * 1024.0) / (1024.0 * 1024.0);
            if end > bound {
                problems.push(format!(
                    "the server's memory grew from {start:.1} to {end:.1} MiB, past the bound of \
                     {bound:.1} MiB"
                ));
            }
        }
        _ => problems.push("the server's memory could not be read".to_owned()),
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(lost: u64, start: f64, end: f64) -> Value {
        json!({ "messages": 1234, "lost": lost, "duplicated": 0, "reordered": 0,
                "unexpected_closes": 0, "errors": 0, "first_error": null,
                "rss_start_mib": start, "rss_end_mib": end })
    }

    #[test]
    fn the_last_line_has_the_contract_shape() {
        assert_eq!(
            summary(2000, 60, &result(0, 40.04, 41.26)),
            "soak: 2000 connections, 60 s, 1234 messages, 0 lost, 0 duplicated, 0 reordered, \
             0 unexpected closes, RSS 40.0 → 41.3 MiB"
        );
    }

    #[test]
    fn losses_and_growth_fail_the_run() {
        assert_eq!(judge(&result(0, 40.0, 56.0), false), Ok(()));
        assert!(judge(&result(1, 40.0, 40.0), false).unwrap_err().contains("1 lost"));
        assert!(judge(&result(0, 40.0, 56.1), false).unwrap_err().contains("bound of 56.0"));
        assert!(judge(&result(0, 200.0, 250.0), false).is_ok());
        assert!(judge(&result(0, 40.0, 40.0), true).unwrap_err().contains("exited"));
    }

    #[test]
    fn arguments_have_defaults_and_are_checked() {
        let args = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&[]), Ok((2000, 60)));
        assert_eq!(args(&["--connections", "100", "--seconds", "5"]), Ok((100, 5)));
        assert!(args(&["--connections"]).is_err());
        assert!(args(&["--seconds", "x"]).is_err());
        assert!(args(&["--fast"]).is_err());
        assert_eq!((warmup(5), warmup(60), warmup(3600)), (1, 5, 5));
    }
}
