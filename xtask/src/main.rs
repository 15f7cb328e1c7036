//! Project automation for palisade, run as `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! This file only dispatches: each task is one module, and [`cmd`] holds what they share
//! (finding the workspace root, running cargo and echoing the command line).
//!
//! xtask depends on no palisade crate and on nothing but `serde_json`, so it builds in seconds
//! on a fresh machine and keeps working while the crates it checks are broken.

mod autobahn;
mod bench;
mod ci;
mod cmd;
mod help;
mod soak;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("autobahn") => autobahn::run(&args[1..]),
        Some("conformance") => autobahn::conformance::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        None | Some("help" | "--help" | "-h") => help::run(),
        Some(unknown) => {
            eprintln!("error: unknown task `{unknown}`\n");
            help::run();
            ExitCode::from(2)
        }
    }
}
