//! The pipelined section of the chapter: many messages in flight per connection, where a
//! server's own work per message and its writes per message show.

use std::fmt::Write as _;

use serde_json::Value;

use super::{OURS, or_dash, size_label, thousands};

/// Writes the section for the `pipelined` runs of `raw`, if any, for `servers` in order.
pub(super) fn section(md: &mut String, raw: &Value, servers: &[String]) {
    let Some(runs) = raw["pipelined"].as_array().filter(|runs| !runs.is_empty()) else { return };
    let mut cases: Vec<(u64, u64, u64)> = Vec::new();
    for run in runs {
        let field = |name: &str| run[name].as_u64();
        if let (Some(conns), Some(size), Some(window)) =
            (field("connections"), field("size"), field("window"))
            && !cases.contains(&(conns, size, window))
        {
            cases.push((conns, size, window));
        }
    }
    let find = |server: &str, (conns, size, window): (u64, u64, u64)| {
        runs.iter().find(|r| {
            r["server"] == server
                && r["connections"] == conns
                && r["size"] == size
                && r["window"] == window
        })
    };
    let _ = writeln!(
        md,
        "## Pipelined echo\n\n\
         Each connection keeps several messages in flight, so that a read brings many of them: \
         the kernel's cost per message shrinks and the server's own work, and how many writes \
         it makes, show. **CPU µs/msg** is the server's CPU time (user and system, \
         `/proc/PID/stat`) over its round trips; **segs/echo** is the TCP segments the server's \
         sockets sent (data and pure ACKs: the sum of `segs_out` in `ss -ti` for its port, \
         read just before and after the measured interval) per round trip — one per reply for a \
         server that writes each reply on its own, fewer for one that gathers replies into one \
         write. `ss` counts only the server's sockets, unlike the host-wide `OutSegs` of \
         `/proc/net/snmp`, which other processes on a shared machine would add to (and \
         `syscw` of `/proc/PID/io` does not count `sendto`, which tokio's sockets use). The last column is palisade's CPU per message over the best peer's (lower is \
         better).\n"
    );
    let mut header = "| connections | size | in flight |".to_owned();
    let mut rule = "|---:|---:|---:|".to_owned();
    for s in servers {
        let _ = write!(header, " {s}: round trips/s | CPU µs/msg | segs/echo | p99 µs |");
        rule.push_str("---:|---:|---:|---:|");
    }
    header.push_str(" CPU/msg vs best peer |");
    rule.push_str("---:|");
    let _ = writeln!(md, "{header}\n{rule}");
    for &case in &cases {
        let mut row = format!("| {} | {} | {} |", case.0, size_label(case.1), case.2);
        for s in servers {
            let run = find(s, case);
            let number = |field: &str| run.and_then(|run| run[field].as_f64());
            let _ = write!(
                row,
                " {} | {} | {} | {} |",
                or_dash(number("rps").map(thousands)),
                or_dash(run.and_then(cpu_per_message).map(|us| format!("{us:.2}"))),
                or_dash(number("segments_per_echo").map(|n| format!("{n:.2}"))),
                or_dash(number("p99_us").map(thousands)),
            );
        }
        let ours = find(OURS, case).and_then(cpu_per_message);
        let best_peer = servers
            .iter()
            .filter(|s| *s != OURS)
            .filter_map(|s| find(s, case).and_then(cpu_per_message))
            .min_by(f64::total_cmp);
        let ratio = ours.zip(best_peer).map(|(ours, peer)| format!("{:.2}×", ours / peer));
        let _ = writeln!(row, " {} |", or_dash(ratio));
        md.push_str(&row);
    }
    let _ = writeln!(md);
}

/// Server CPU per round trip, in µs.
fn cpu_per_message(run: &Value) -> Option<f64> {
    let (cpu, rps) = (run["server_cpu"].as_f64()?, run["rps"].as_f64()?);
    (rps > 0.0).then(|| cpu / rps * 1e6)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_per_case_with_the_ratio_to_the_best_peer() {
        let run = |server: &str, cpu: f64, segs: f64| {
            json!({ "server": server, "connections": 64, "size": 16, "window": 16,
                    "rps": 100_000.0, "server_cpu": cpu, "segments_per_echo": segs,
                    "p99_us": 900.0 })
        };
        let raw = json!({ "pipelined": [run("palisade", 0.5, 0.2), run("a", 1.0, 1.0),
                                        run("b", 0.8, 1.0)] });
        let servers = ["palisade", "a", "b"].map(str::to_owned);
        let mut md = String::new();
        section(&mut md, &raw, &servers);
        assert!(md.contains("## Pipelined echo"), "{md}");
        // 0.5 / 1e5 s = 5 µs against the best peer's 8 µs.
        assert!(md.contains("| 64 | 16 B | 16 | 100,000 | 5.00 | 0.20 | 900 |"), "{md}");
        assert!(md.contains("| 0.62× |"), "{md}");
    }
}
