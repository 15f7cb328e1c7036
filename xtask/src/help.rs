//! `cargo xtask help`: the tasks and the stages of `cargo xtask ci`.
//!
//! The stage list is read from [`crate::ci::STAGES`], so it cannot drift from what `ci` runs.

use std::process::ExitCode;

use crate::ci;

/// Prints the usage text.
pub(crate) fn run() -> ExitCode {
    println!(
        "cargo xtask <task>

Tasks:
  ci [STAGE...]   run CI's checks, cheapest first, stopping at the first failure;
                  with STAGE names, run only those (in CI order)
  autobahn        the Autobahn testsuite against the echo example (--server) and the
                  autobahn_client example (--client), both by default; every case
                  (over an hour), or --quick (CI's cases, ~4 minutes), or --cases \"1.*,2.*\";
                  --url ws://HOST:PORT tests a running server instead
  conformance     docs/src/conformance.md from the last autobahn run's reports
                  (--check: only compare)
  bench           echo throughput and idle memory of palisade, tokio-tungstenite and
                  fastwebsockets, written to docs/src/benchmarks.md (--quick: a subset
                  in under 3 minutes; --pipelined: only the pipelined cases and their
                  shapes at one message in flight, written to target/bench-pipelined/;
                  --micro: the criterion benches of the protocol core;
                  --compression: only palisade with and without permessage-deflate,
                  written to target/bench-compression/;
                  --fanout: only the fan-out of one room to 100-10,000 members against
                  hand-written peers and across two nodes through Redis (one, and a
                  cluster), written to docs/src/bench/fanout.md; --fanout-redis: only
                  the two-node cases,
                  results in target/bench/fanout-redis.json, the page left alone;
                  --fanout-page: that page again from the last run's results)
  soak            echo and room broadcast over 2,000 connections for 60 s against the
                  soak example (--connections N, --seconds S): every message numbered
                  and checked; fails on any message lost, duplicated or reordered, any
                  unexpected close, or the server's memory growing; the last line is
                  `soak: N connections, S s, … RSS A → B MiB`
  help            print this text

Stages of `ci`:"
    );
    let width = ci::STAGES.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for stage in ci::STAGES {
        println!("  {:width$}  {}", stage.name, stage.about);
    }
    println!(
        "
`bash .ci/run` installs the tools CI needs when they are missing, then runs `cargo xtask ci`.
The last line `ci` prints is `tests: N passed, N failed`."
    );
    ExitCode::SUCCESS
}
