//! The Autobahn|Testsuite fuzzing-server client: runs every case against `wstest -m
//! fuzzingserver`, echoing every message (text as text, binary as binary), then asks for the
//! reports. `cargo xtask autobahn` runs the whole thing.
//!
//! Run it by hand, with the fuzzing server listening on port 9001:
//!
//! ```text
//! cargo run --release --example autobahn_client -- --url ws://127.0.0.1:9001 --agent palisade
//! ```
//!
//! It offers permessage-deflate on every connection (sections 12 and 13). It prints one line per case and the failures to connect; the verdicts are in the fuzzing
//! server's report directory (`reports/clients/index.html`).

use std::process::ExitCode;
use std::time::Duration;

use palisade::client::{Client, DeflateConfig};
use palisade::{CloseCode, Error};
use palisade::{Config, Message};

/// The suite's largest messages are 16 MiB.
const MAX_MESSAGE: usize = 16 << 20;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: autobahn_client [--url ws://127.0.0.1:9001] [--agent palisade]

The Autobahn|Testsuite client: runs every case of `wstest -m fuzzingserver`, then asks for
the reports.

  --url URL      the fuzzing server (default ws://127.0.0.1:9001)
  --agent NAME   the name the reports file our results under (default palisade)
  -h, --help     print this and exit
";

#[tokio::main]
async fn main() -> ExitCode {
    let mut url = "ws://127.0.0.1:9001".to_owned();
    let mut agent = "palisade".to_owned();
    let mut args = args::Args::new("autobahn_client", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.value("--url").trim_end_matches('/').to_owned(),
            "--agent" => agent = args.value("--agent"),
            other => args.unknown(other),
        }
    }
    match run(&url, &agent).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("autobahn_client: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, agent: &str) -> Result<(), Error> {
    let client = Client::new()
        .without_proxy()
        .with_open_timeout(Some(Duration::from_secs(60)))
        // Sections 12 and 13 need permessage-deflate; servers that decline it get plain frames.
        .with_compression(DeflateConfig::default())
        // The suite measures the protocol, not our keepalive.
        .with_config(
            Config::default().with_max_message_size(MAX_MESSAGE).with_keepalive(None, None),
        );

    let count = case_count(&client, url).await?;
    println!("{count} cases");
    for case in 1..=count {
        let case_url = format!("{url}/runCase?case={case}&agent={agent}");
        match client.connect(&case_url).await {
            Ok(ws) => {
                let end = echo(&ws).await;
                println!("case {case}/{count}: {end}");
            }
            Err(err) => println!("case {case}/{count}: could not connect: {err}"),
        }
    }
    let ws = client.connect(&format!("{url}/updateReports?agent={agent}")).await?;
    // The server closes once the reports are written.
    while ws.recv().await.is_ok() {}
    println!("reports updated");
    Ok(())
}

async fn case_count(client: &Client, url: &str) -> Result<u32, Error> {
    let ws = client.connect(&format!("{url}/getCaseCount")).await?;
    let count = match ws.recv().await? {
        Message::Text(text) => text.as_str().trim().parse().unwrap_or(0),
        Message::Binary(_) => 0,
    };
    let _ = ws.close(CloseCode::NORMAL, "").await;
    Ok(count)
}

/// Echoes until the connection ends; returns how it ended.
async fn echo(ws: &palisade::client::Connected) -> Error {
    loop {
        match ws.recv().await {
            Ok(message) => {
                if let Err(err) = ws.send(message).await {
                    return err;
                }
            }
            Err(err) => return err,
        }
    }
}
