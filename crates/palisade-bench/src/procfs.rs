//! Resident memory and CPU time of a process, read from `/proc`, and the TCP segments a
//! server's sockets sent, from `ss` (Linux only; elsewhere the readers return `None` and the
//! report says so).

use std::time::Duration;

/// `VmRSS` of process `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time used so far by process `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_time(&stat)
}

/// TCP segments sent so far by the established sockets whose local port is `port` (a server's
/// accepted connections): the sum of their `segs_out`, from `ss -ti`. Unlike the host-wide
/// `OutSegs` of `/proc/net/snmp`, this counts only the server's sockets, whatever else runs on
/// the machine (the load generator's own segments, other processes' loopback traffic).
pub fn segments_out(port: u16) -> Option<u64> {
    let filter = format!("( sport = :{port} )");
    let output = std::process::Command::new("ss")
        .args(["-tinH", "state", "established", &filter])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(sum_segs_out(&String::from_utf8_lossy(&output.stdout)))
}

/// The sum of the `segs_out:N` fields in the output of `ss -ti`.
fn sum_segs_out(text: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|field| field.strip_prefix("segs_out:"))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// CPU time of this process.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time(std::process::id())
}

/// `utime + stime` from the text of `/proc/PID/stat`, in clock ticks of 10 ms (`USER_HZ` is 100
/// on every Linux architecture the benchmarks run on).
fn parse_cpu_time(stat: &str) -> Option<Duration> {
    // The command name is in parentheses and may contain spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3 of the full line, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        assert_eq!(parse_cpu_time(stat), Some(Duration::from_millis(3000)));
    }

    #[test]
    fn reads_our_own_process() {
        assert!(rss_bytes(std::process::id()).is_some_and(|rss| rss > 0));
        assert!(own_cpu_time().is_some());
    }

    #[test]
    fn sums_segs_out_over_sockets() {
        let text = "ESTAB 0 0 127.0.0.1:9000 127.0.0.2:4000\n\t cubic rtt:0.1/0.05 \
                    segs_out:120 segs_in:118 data_segs_out:60\n\
                    ESTAB 0 0 127.0.0.1:9000 127.0.0.2:4001\n\t segs_out:7 segs_in:9\n";
        assert_eq!(sum_segs_out(text), 127);
    }
}
