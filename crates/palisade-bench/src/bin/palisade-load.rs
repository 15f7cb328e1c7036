//! The load generator and benchmark helper behind `cargo xtask bench`.
//!
//! ```text
//! palisade-load load --url ws://127.0.0.1:9001/ -c 64 -s 16 [-w 1] [--warmup 1] [--duration 5]
//!                    [--server-pid PID] [--first-source 1] [--deflate | --json]
//! palisade-load idle --url ws://127.0.0.1:9001/ -n 10000 --server-pid PID [--settle 2]
//!                    [--first-source 1] [--deflate [--messages 1]]
//! palisade-load soak --url ws://127.0.0.1:9008/ [-c 2000] [--seconds 60] [--warmup 5]
//!                    [--server-pid PID] [--first-source 200]
//! palisade-load report --results FILE --out DIR
//! palisade-load exec [--nofile N] -- PROGRAM ARGS...
//! ```
//!
//! `--deflate` offers permessage-deflate and sends compressed text (the run fails if the server
//! does not agree). `--json` sends a JSON event of S bytes in a text frame and expects the same
//! event back (the typed-echo case: `examples/json_echo.rs`, `echo-json-tungstenite`). `load` and `idle` print one JSON object on standard output; `soak` prints progress lines, then one JSON object (see
//! `palisade_bench::soak`). `exec` raises the open-file limit
//! and replaces itself with PROGRAM (same process id), for servers that must hold 50,000 sockets.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use palisade_bench::{idle, load, report, soak};

/// Open files this process (and what `exec` starts) may hold.
const NOFILE: u64 = 200_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("load") => run_load(&args[1..]),
        Some("idle") => run_idle(&args[1..]),
        Some("soak") => run_soak(&args[1..]),
        Some("report") => run_report(&args[1..]),
        Some("exec") => run_exec(&args[1..]),
        _ => Err("usage: palisade-load load|idle|soak|report|exec ... (see its docs)".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--flag value` pairs.
struct Flags<'a>(&'a [String]);

impl Flags<'_> {
    fn get(&self, names: &[&str]) -> Option<&str> {
        self.0
            .iter()
            .position(|a| names.contains(&a.as_str()))
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    fn parse<T: std::str::FromStr>(&self, names: &[&str], default: Option<T>) -> Result<T, String> {
        match self.get(names) {
            Some(text) => text.parse().map_err(|_| format!("{} {text:?}: not a number", names[0])),
            None => default.ok_or_else(|| format!("{} is required", names[0])),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    fn seconds(&self, name: &str, default: f64) -> Result<Duration, String> {
        Ok(Duration::from_secs_f64(self.parse(&[name], Some(default))?))
    }

    fn addr(&self) -> Result<SocketAddr, String> {
        let url = self.get(&["--url"]).ok_or("--url ws://HOST:PORT/ is required")?;
        let hostport = url.strip_prefix("ws://").unwrap_or(url).trim_end_matches('/');
        hostport.parse().map_err(|_| format!("--url {url:?}: expected ws://IP:PORT/"))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

/// Raises the open-file limit to [`NOFILE`] (root may raise the hard limit too), or as far as
/// the hard limit allows.
fn raise_nofile() -> u64 {
    if rlimit::setrlimit(rlimit::Resource::NOFILE, NOFILE, NOFILE).is_ok() {
        return NOFILE;
    }
    rlimit::increase_nofile_limit(NOFILE).unwrap_or(0)
}

fn run_load(args: &[String]) -> Result<(), String> {
    let flags = Flags(args);
    let plan = load::Plan {
        addr: flags.addr()?,
        connections: flags.parse(&["-c", "--connections"], Some(1))?,
        size: flags.parse(&["-s", "--size"], Some(16))?,
        window: flags.parse(&["-w", "--window"], Some(1))?,
        warmup: flags.seconds("--warmup", 1.0)?,
        duration: flags.seconds("--duration", 5.0)?,
        server_pid: flags.get(&["--server-pid"]).map(str::parse).transpose().map_err(|_| "pid")?,
        first_source: flags.parse(&["--first-source"], Some(1))?,
        deflate: flags.has("--deflate"),
        json: flags.has("--json"),
    };
    if plan.json && plan.deflate {
        return Err("--json and --deflate do not go together".into());
    }
    if plan.connections == 0 || plan.window == 0 {
        return Err("--connections and --window must be at least 1".into());
    }
    raise_nofile();
    let outcome = runtime()?.block_on(load::run(plan.clone()));
    println!("{}", outcome.to_json(&plan));
    Ok(())
}

fn run_idle(args: &[String]) -> Result<(), String> {
    let flags = Flags(args);
    let plan = idle::Plan {
        addr: flags.addr()?,
        server_pid: flags.parse(&["--server-pid"], None)?,
        connections: flags.parse(&["-n", "--connections"], Some(1000))?,
        settle: flags.seconds("--settle", 2.0)?,
        first_source: flags.parse(&["--first-source"], Some(1))?,
        deflate: flags.has("--deflate"),
        messages: flags.parse(&["--messages"], Some(1))?,
    };
    let limit = raise_nofile();
    if limit < plan.connections as u64 + 100 {
        return Err(format!("{} connections need more open files than {limit}", plan.connections));
    }
    let outcome = runtime()?.block_on(idle::run(plan.clone()))?;
    println!("{}", outcome.to_json(&plan));
    Ok(())
}

fn run_soak(args: &[String]) -> Result<(), String> {
    let flags = Flags(args);
    let plan = soak::Plan {
        addr: flags.addr()?,
        connections: flags.parse(&["-c", "--connections"], Some(2000))?,
        warmup: flags.seconds("--warmup", 5.0)?,
        duration: flags.seconds("--seconds", 60.0)?,
        server_pid: flags.get(&["--server-pid"]).map(str::parse).transpose().map_err(|_| "pid")?,
        first_source: flags.parse(&["--first-source"], Some(200))?,
    };
    if plan.connections < 2 {
        return Err("--connections must be at least 2 (one echo, one room member)".into());
    }
    let limit = raise_nofile();
    if limit < plan.connections as u64 + 100 {
        return Err(format!("{} connections need more open files than {limit}", plan.connections));
    }
    let outcome = runtime()?.block_on(soak::run(plan.clone()));
    println!("{}", outcome.to_json(&plan));
    Ok(())
}

fn run_report(args: &[String]) -> Result<(), String> {
    let flags = Flags(args);
    let results = flags.get(&["--results"]).ok_or("--results FILE is required")?;
    let out = flags.get(&["--out"]).ok_or("--out DIR is required")?;
    let text = std::fs::read_to_string(results).map_err(|e| format!("{results}: {e}"))?;
    let results: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{results}: {e}"))?;
    report::write(&results, std::path::Path::new(out))
}

fn run_exec(args: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let split = args.iter().position(|a| a == "--").ok_or("exec needs -- PROGRAM ARGS")?;
    let (flags, command) = (Flags(&args[..split]), &args[split + 1..]);
    let want: u64 = flags.parse(&["--nofile"], Some(NOFILE))?;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, want, want).is_err() {
        rlimit::increase_nofile_limit(want).map_err(|e| format!("raising the file limit: {e}"))?;
    }
    let program = command.first().ok_or("exec needs a PROGRAM")?;
    // `exec` only returns on failure.
    let err = std::process::Command::new(program).args(&command[1..]).exec();
    Err(format!("exec {program}: {err}"))
}
