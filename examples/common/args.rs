//! The examples' command lines, one convention for all: `-h`/`--help` prints the usage on
//! stdout and exits 0; an unknown argument, or an option without its value, is an error on
//! stderr that names it and points at `--help`, with exit code 2 (the usual code for a usage
//! error). Each example declares it with `#[path = "common/args.rs"] mod args;`.

#![allow(dead_code, reason = "each example uses the part of it that its command line needs")]

use std::process::exit;
use std::str::FromStr;

/// The arguments after the program name, read one at a time.
pub(crate) struct Args {
    name: &'static str,
    usage: &'static str,
    rest: std::iter::Skip<std::env::Args>,
}

impl Args {
    /// The process's arguments, for the example `name` whose help text is `usage` (its first
    /// line the synopsis, `usage: NAME …`).
    pub(crate) fn new(name: &'static str, usage: &'static str) -> Self {
        Self { name, usage, rest: std::env::args().skip(1) }
    }

    /// Reads an example's command line that takes no arguments at all.
    pub(crate) fn none(name: &'static str, usage: &'static str) {
        let mut args = Self::new(name, usage);
        if let Some(arg) = args.next() {
            args.unknown(&arg);
        }
    }

    /// The next argument; `-h` and `--help` print the usage and exit here.
    pub(crate) fn next(&mut self) -> Option<String> {
        let arg = self.rest.next()?;
        if arg == "-h" || arg == "--help" {
            print!("{}", self.usage);
            exit(0);
        }
        Some(arg)
    }

    /// The value that must follow `option`.
    pub(crate) fn value(&mut self, option: &str) -> String {
        match self.rest.next() {
            Some(value) => value,
            None => self.fail(&format!("`{option}` needs a value")),
        }
    }

    /// The value that must follow `option`, parsed.
    pub(crate) fn parsed<T: FromStr>(&mut self, option: &str) -> T {
        let value = self.value(option);
        match value.parse() {
            Ok(parsed) => parsed,
            Err(_) => self.fail(&format!("`{option}`: cannot parse `{value}`")),
        }
    }

    /// Ends the program: `arg` is not an argument this example knows.
    pub(crate) fn unknown(&self, arg: &str) -> ! {
        self.fail(&format!("unknown argument `{arg}`"))
    }

    /// Ends the program with a usage error.
    pub(crate) fn fail(&self, problem: &str) -> ! {
        eprintln!("{}: {problem}", self.name);
        eprintln!("{}", self.usage.lines().next().unwrap_or_default());
        eprintln!("Try `{} --help` for more.", self.name);
        exit(2);
    }
}
