//! The Autobahn|Testsuite fuzzing-server client on the blocking API: runs every case against
//! `wstest -m fuzzingserver`, echoing every message (text as text, binary as binary), then asks
//! for the reports. `cargo xtask autobahn` runs it after `autobahn_client`.
//!
//! Run it by hand, with the fuzzing server listening on port 9001:
//!
//! ```text
//! cargo run --release --example blocking_autobahn_client -- --url ws://127.0.0.1:9001 --agent palisade
//! ```
//!
//! It offers permessage-deflate on every connection (sections 12 and 13). It prints one line
//! per case and the failures to connect; the verdicts are in the fuzzing server's report
//! directory (`reports/clients/index.html`).

use std::process::ExitCode;
use std::time::Duration;

use palisade::blocking::{Client, Config, DeflateConfig, WebSocket};
use palisade::{CloseCode, Error, Message};

/// The suite's largest messages are 16 MiB.
const MAX_MESSAGE: usize = 16 << 20;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: blocking_autobahn_client [--url ws://127.0.0.1:9001] [--agent palisade]

The Autobahn|Testsuite client on the blocking API: runs every case of `wstest -m
fuzzingserver`, then asks for the reports.

  --url URL      the fuzzing server (default ws://127.0.0.1:9001)
  --agent NAME   the name the reports file our results under (default palisade)
  -h, --help     print this and exit
";

fn main() -> ExitCode {
    let mut url = "ws://127.0.0.1:9001".to_owned();
    let mut agent = "palisade".to_owned();
    let mut args = args::Args::new("blocking_autobahn_client", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.value("--url").trim_end_matches('/').to_owned(),
            "--agent" => agent = args.value("--agent"),
            other => args.unknown(other),
        }
    }
    match run(&url, &agent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("blocking_autobahn_client: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(url: &str, agent: &str) -> Result<(), Error> {
    // ANCHOR: client
    let client = Client::new()
        .with_open_timeout(Some(Duration::from_secs(60)))
        // Sections 12 and 13 need permessage-deflate; servers that decline it get plain frames.
        .with_compression(DeflateConfig::default())
        // The suite measures the protocol, not our keepalive.
        .with_config(
            Config::default().with_max_message_size(MAX_MESSAGE).with_keepalive(None, None),
        );
    // ANCHOR_END: client

    let count = case_count(&client, url)?;
    println!("{count} cases");
    for case in 1..=count {
        let case_url = format!("{url}/runCase?case={case}&agent={agent}");
        match client.connect(&case_url) {
            Ok(ws) => println!("case {case}/{count}: {}", echo(ws)),
            Err(err) => println!("case {case}/{count}: could not connect: {err}"),
        }
    }
    let mut ws = client.connect(&format!("{url}/updateReports?agent={agent}"))?;
    // The server closes once the reports are written.
    while ws.recv().is_ok() {}
    println!("reports updated");
    Ok(())
}

fn case_count(client: &Client, url: &str) -> Result<u32, Error> {
    let mut ws = client.connect(&format!("{url}/getCaseCount"))?;
    let count = match ws.recv()? {
        Message::Text(text) => text.as_str().trim().parse().unwrap_or(0),
        Message::Binary(_) => 0,
    };
    let _ = ws.close(CloseCode::NORMAL, "");
    Ok(count)
}

// ANCHOR: echo
/// Echoes until the connection ends; returns how it ended.
fn echo(mut ws: WebSocket) -> Error {
    loop {
        let echoed = ws.recv().and_then(|message| ws.send(message));
        if let Err(err) = echoed {
            return err;
        }
    }
}
// ANCHOR_END: echo
