//! The fan-out load generator behind `cargo xtask bench --fanout` (see
//! `palisade_bench::fanout`): N members in one room, spread over the nodes given, and one
//! publisher; prints one JSON object.
//!
//! ```text
//! palisade-fanout --node ws://127.0.0.1:9007/ [--node ws://…]… [--publish ws://…] -n 1000
//!                 [--rate DELIVERIES_PER_S | --window 64] [--pad 32] [--warmup 1]
//!                 [--duration 3] [--server-pid PID]… [--first-source 1]
//! ```
//!
//! Without `--rate` the publisher goes flat out. `--publish` defaults to the first node.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use palisade_bench::fanout;

/// Open files this process may hold: one per member.
const NOFILE: u64 = 200_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let all = |name: &str| -> Vec<&str> {
        args.iter()
            .enumerate()
            .filter(|(_, a)| *a == name)
            .filter_map(|(i, _)| args.get(i + 1).map(String::as_str))
            .collect()
    };
    let one = |name: &str| all(name).last().copied();
    let number = |name: &str, default: f64| -> Result<f64, String> {
        one(name)
            .map_or(Ok(default), |v| v.parse().map_err(|_| format!("{name} {v:?}: not a number")))
    };
    let addr = |url: &str| -> Result<SocketAddr, String> {
        let hostport = url.strip_prefix("ws://").unwrap_or(url).trim_end_matches('/');
        hostport.parse().map_err(|_| format!("{url:?}: expected ws://IP:PORT/"))
    };
    let nodes = all("--node").into_iter().map(addr).collect::<Result<Vec<_>, _>>()?;
    let Some(&first) = nodes.first() else { return Err("at least one --node is required".into()) };
    let plan = fanout::Plan {
        publish_at: one("--publish").map(addr).transpose()?.unwrap_or(first),
        nodes,
        members: number("-n", 100.0)? as usize,
        rate: one("--rate").map(|v| v.parse().map_err(|_| format!("--rate {v:?}"))).transpose()?,
        window: number("--window", 64.0)? as u64,
        pad: number("--pad", 32.0)? as usize,
        warmup: Duration::from_secs_f64(number("--warmup", 1.0)?),
        duration: Duration::from_secs_f64(number("--duration", 3.0)?),
        server_pids: all("--server-pid")
            .into_iter()
            .map(|p| p.parse().map_err(|_| format!("--server-pid {p:?}")))
            .collect::<Result<_, String>>()?,
        first_source: number("--first-source", 1.0)? as u32,
    };
    if plan.members == 0 || plan.window == 0 || plan.rate == Some(0) {
        return Err("-n, --window and --rate must be at least 1".into());
    }
    let limit = raise_nofile();
    if limit < plan.members as u64 + 50 {
        return Err(format!("{} members need more open files than {limit}", plan.members));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let line = runtime.block_on(fanout::run(plan));
    println!("{line}");
    // The members' tasks are still reading; they end with the runtime.
    runtime.shutdown_background();
    Ok(())
}

/// Raises the open-file limit as far as allowed; returns it.
fn raise_nofile() -> u64 {
    if rlimit::setrlimit(rlimit::Resource::NOFILE, NOFILE, NOFILE).is_ok() {
        return NOFILE;
    }
    rlimit::increase_nofile_limit(NOFILE).unwrap_or(0)
}
