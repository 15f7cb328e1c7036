//! The `test` stage: the workspace's tests, then its doctests, counted.
//!
//! cargo-nextest runs the tests when it is installed (one process per test, a clearer report);
//! it does not run doctests, so `cargo test --doc` follows it. Without nextest, `cargo test`
//! runs both at once, and running `--doc` again would count the doctests twice.
//!
//! Both runs use `--no-fail-fast` so that a failure still reports the full count.

use std::io::IsTerminal;
use std::process::Command;

use super::Context;
use crate::cmd;

/// Tests that passed and failed, summed over every runner invocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Tests that passed.
    pub(crate) passed: u64,
    /// Tests that failed or timed out.
    pub(crate) failed: u64,
}

/// The nextest filter that leaves the macros' UI suite to the `ui` stage.
const WITHOUT_UI: &str = "not (package(palisade-macros) & binary(ui))";

/// Where the chat example's browser tests find Chromium (Debian's build; a test tool's own
/// browser download fails on the project's machines).
const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs the tests (the macros' UI suite apart, with nextest) and records their count in
/// `context`.
pub(super) fn run(context: &mut Context) -> Result<(), String> {
    ensure_chromium()?;
    if nextest() {
        let (tests, output) = cmd::run_tee(&mut runner(&["nextest", "run", "-E", WITHOUT_UI]));
        context.tests.add_nextest(&output);
        let (doctests, output) = cmd::run_tee(&mut runner(&["test", "--doc"]));
        context.tests.add_cargo_test(&output);
        tests.and(doctests)
    } else {
        println!("cargo-nextest is not installed: running cargo test, doctests included");
        let (tests, output) = cmd::run_tee(&mut runner(&["test"]));
        context.tests.add_cargo_test(&output);
        tests
    }
}

/// The macros' trybuild suite on its own: it compiles the facade and every fixture in a target
/// directory of its own (minutes on a fresh clone), which under nextest's per-test timeout and
/// beside the other tests would be killed as a hang. Counted like the other tests. With
/// `cargo test` (no nextest) the `test` stage has run it already.
pub(super) fn ui(context: &mut Context) -> Result<(), String> {
    if !nextest() {
        println!("cargo-nextest is not installed: the test stage ran the UI suite");
        return Ok(());
    }
    let (result, output) =
        cmd::run_tee(&mut cmd::cargo(["test", "--package", "palisade-macros", "--test", "ui"]));
    context.tests.add_cargo_test(&output);
    result
}

fn nextest() -> bool {
    cmd::succeeds(&mut cmd::cargo(["nextest", "--version"]))
}

/// Installs Debian's `chromium` with apt-get when it is missing and this runs as root (as CI
/// does, and `.ci/run` before it); otherwise says what to install.
fn ensure_chromium() -> Result<(), String> {
    if std::path::Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    let root = cmd::stdout(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim_ascii() == b"0");
    if !root {
        return Err(format!(
            "the chat example's browser tests need Debian's chromium at {CHROMIUM}: \
             run `apt-get install chromium` as root"
        ));
    }
    println!("  chromium is missing: installing it with apt-get (once)");
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `cargo SUBCOMMAND` over the whole workspace, keeping the colours a terminal would get although
/// the output now goes through a pipe.
fn runner(subcommand: &[&str]) -> Command {
    let mut cmd = cmd::cargo(subcommand);
    cmd.args(["--workspace", "--all-features", "--no-fail-fast"]);
    if std::io::stdout().is_terminal() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    cmd
}

impl Tally {
    /// Adds the `test result: ok. N passed; N failed; …` lines that libtest prints once per test
    /// binary and once per crate's doctests.
    pub(crate) fn add_cargo_test(&mut self, output: &str) {
        for line in output.lines().map(strip_ansi) {
            if let Some(rest) = line.trim_start().strip_prefix("test result:") {
                self.add_counts(rest);
            }
        }
    }

    /// Adds nextest's final line, `Summary [ 1.2s] N tests run: N passed, N failed, N skipped`.
    pub(crate) fn add_nextest(&mut self, output: &str) {
        let summary = output
            .lines()
            .rev()
            .map(strip_ansi)
            .find(|line| line.trim_start().starts_with("Summary ["));
        if let Some(counts) = summary.as_deref().and_then(|line| line.split_once(" run:")) {
            self.add_counts(counts.1);
        }
    }

    /// Adds each `N passed` and `N failed` (or `N timed out`) found in `text`.
    fn add_counts(&mut self, text: &str) {
        let words: Vec<&str> = text.split([' ', ',', ';']).filter(|w| !w.is_empty()).collect();
        for pair in words.windows(2) {
            let Ok(n) = pair[0].parse::<u64>() else { continue };
            match pair[1] {
                "passed" => self.passed += n,
                "failed" | "timed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// `line` without ANSI colour sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip the parameters up to and including the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_test_results_are_summed_over_binaries_and_doctests() {
        let output = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests palisade_error
test result: FAILED. 10 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.20s
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let mut tally = Tally::default();
        tally.add_cargo_test(output);
        assert_eq!(tally, Tally { passed: 13, failed: 2 });
    }

    #[test]
    fn nextest_summary_is_read_with_or_without_colour() {
        let mut tally = Tally::default();
        tally.add_nextest(
            "        PASS [   0.004s] xtask ci::test::tests::x\n\
             ────────────\n     Summary [   0.021s] 124 tests run: 124 passed, 0 skipped\n",
        );
        assert_eq!(tally, Tally { passed: 124, failed: 0 });

        let mut tally = Tally::default();
        tally.add_nextest(
            "\u{1b}[32;1m     Summary\u{1b}[0m [   2.500s] \u{1b}[1m10\u{1b}[0m/12 tests run: \
             \u{1b}[1m7\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m (1 slow), 2 failed, 1 timed out, \
             0 skipped\n",
        );
        assert_eq!(tally, Tally { passed: 7, failed: 3 });
    }

    #[test]
    fn output_without_a_summary_counts_nothing() {
        let mut tally = Tally::default();
        tally.add_nextest("error: could not compile `palisade-proto`\n");
        tally.add_cargo_test("error[E0425]: cannot find value `x`\n");
        assert_eq!(tally, Tally::default());
    }
}
