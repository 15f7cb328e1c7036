//! `cargo xtask ci`: every check CI runs, cheapest first.
//!
//! Each stage prints `==> stage NAME` when it starts and `<== stage NAME ok|FAILED in 1.2s`
//! when it ends. The first failure stops the run (later stages would only cost CI time), but the
//! summary table is still printed, and the process exits non-zero. The last line is always the
//! test count, `tests: N passed, N failed`, which CI's judge reads.
//!
//! To add a stage (interop, autobahn, trybuild, fuzz corpus, example smoke), write a function
//! `fn(&mut Context) -> Result<(), String>` — in a module of its own under `ci/` when it is
//! more than a command line — and add one entry to [`STAGES`] at the place its cost puts it.

mod book;
mod deps;
mod test;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cmd;

/// One step of the CI run.
pub(crate) struct Stage {
    /// The name printed in the log, and accepted by `cargo xtask ci NAME`.
    pub(crate) name: &'static str,
    /// One line for `cargo xtask help`.
    pub(crate) about: &'static str,
    /// Runs the stage; `Err` says what failed.
    run: fn(&mut Context) -> Result<(), String>,
}

/// What stages report back to the run, beyond success.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// Tests counted by the stages that run tests.
    tests: test::Tally,
}

/// The stages, in the order they run: cheapest first, so a formatting slip fails in a second
/// rather than after a full build.
pub(crate) const STAGES: &[Stage] = &[
    Stage { name: "fmt", about: "cargo fmt --all --check", run: fmt },
    Stage {
        name: "deps",
        about: "the dependency rules of STYLE.md §2, read from cargo metadata",
        run: deps::check,
    },
    Stage {
        name: "clippy",
        about: "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        run: clippy,
    },
    Stage {
        name: "test",
        about: "cargo nextest (or cargo test) on the workspace, then the doctests",
        run: test::run,
    },
    Stage {
        name: "ui",
        about: "the macros' trybuild UI suite (tests/ui/{pass,fail}), alone: it builds the \
                facade in a target of its own",
        run: test::ui,
    },
    Stage {
        name: "doc",
        about: "cargo doc --no-deps --workspace --all-features, warnings denied",
        run: doc,
    },
    Stage {
        name: "book",
        about: "the book's {{#include}} anchors resolve, then mdbook build docs",
        run: book::build,
    },
    Stage {
        name: "autobahn",
        about: "the Autobahn testsuite against the echo and autobahn_client examples \
                (cargo xtask autobahn)",
        run: autobahn,
    },
    Stage {
        name: "bench-smoke",
        about: "cargo xtask bench --smoke: the benchmark harness runs against all three echo \
                servers (no timing assertions; writes to target/bench-smoke/)",
        run: bench_smoke,
    },
    Stage {
        name: "soak-smoke",
        about: "cargo xtask soak --connections 100 --seconds 5: echo and room broadcast, every \
                message checked, the server's memory bounded",
        run: soak_smoke,
    },
];

/// How a stage ended.
enum Outcome {
    Ok(Duration),
    Failed(Duration),
    /// Not run because an earlier stage failed.
    Skipped,
}

/// Runs the stages named in `args` (all of them when `args` is empty).
pub(crate) fn run(args: &[String]) -> ExitCode {
    let selected = match select(args) {
        Ok(selected) => selected,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut context = Context::default();
    let mut outcomes = Vec::with_capacity(selected.len());
    let mut failed = false;
    for stage in selected {
        if failed {
            outcomes.push((stage.name, Outcome::Skipped));
            continue;
        }
        println!("==> stage {}", stage.name);
        let started = Instant::now();
        let result = (stage.run)(&mut context);
        let took = started.elapsed();
        match result {
            Ok(()) => {
                println!("<== stage {} ok in {:.1}s", stage.name, took.as_secs_f64());
                outcomes.push((stage.name, Outcome::Ok(took)));
            }
            Err(e) => {
                println!("error: {e}");
                println!("<== stage {} FAILED in {:.1}s", stage.name, took.as_secs_f64());
                outcomes.push((stage.name, Outcome::Failed(took)));
                failed = true;
            }
        }
    }
    summarize(&outcomes);
    println!("tests: {} passed, {} failed", context.tests.passed, context.tests.failed);
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The stages to run, in CI order, refusing names that are not stages.
fn select(args: &[String]) -> Result<Vec<&'static Stage>, String> {
    if let Some(unknown) = args.iter().find(|a| !STAGES.iter().any(|s| s.name == a.as_str())) {
        let names: Vec<&str> = STAGES.iter().map(|s| s.name).collect();
        return Err(format!("unknown stage `{unknown}`; the stages are {}", names.join(", ")));
    }
    Ok(STAGES.iter().filter(|s| args.is_empty() || args.iter().any(|a| a == s.name)).collect())
}

fn summarize(outcomes: &[(&str, Outcome)]) {
    let width = outcomes.iter().map(|(name, _)| name.len()).max().unwrap_or(0).max("total".len());
    let mut total = Duration::ZERO;
    println!("\nsummary:");
    for (name, outcome) in outcomes {
        let (word, time) = match outcome {
            Outcome::Ok(took) => ("ok", Some(*took)),
            Outcome::Failed(took) => ("FAILED", Some(*took)),
            Outcome::Skipped => ("skipped", None),
        };
        total += time.unwrap_or_default();
        let time = time.map_or_else(|| "-".to_owned(), |t| format!("{:.1}s", t.as_secs_f64()));
        println!("  {name:width$}  {word:7}  {time:>7}");
    }
    let verdict =
        if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Failed(_))) { "FAILED" } else { "ok" };
    println!("  {:width$}  {verdict:7}  {:>7}", "total", format!("{:.1}s", total.as_secs_f64()));
}

fn fmt(_: &mut Context) -> Result<(), String> {
    cmd::run(&mut cmd::cargo(["fmt", "--all", "--check"]))
}

fn clippy(_: &mut Context) -> Result<(), String> {
    cmd::run(&mut cmd::cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn doc(_: &mut Context) -> Result<(), String> {
    let mut flags = std::env::var("RUSTDOCFLAGS").unwrap_or_default();
    flags.push_str(" -D warnings");
    cmd::run(
        cmd::cargo(["doc", "--no-deps", "--workspace", "--all-features"])
            .env("RUSTDOCFLAGS", flags.trim_start()),
    )
}

fn autobahn(_: &mut Context) -> Result<(), String> {
    crate::autobahn::ci()
}

fn bench_smoke(_: &mut Context) -> Result<(), String> {
    crate::bench::smoke()
}

fn soak_smoke(_: &mut Context) -> Result<(), String> {
    crate::soak::smoke()
}
