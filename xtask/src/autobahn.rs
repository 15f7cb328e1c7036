//! `cargo xtask autobahn`: the Autobahn|Testsuite against our server and our client.
//!
//! ```text
//! cargo xtask autobahn [--server] [--client] [--blocking-server] [--blocking-client]
//!                       [--quick | --cases "1.*,2.*"] [--url ws://HOST:PORT] [--limit MINUTES]
//!                       [--setup]
//! ```
//!
//! - The virtualenv with `wstest` is made in `target/autobahn-venv` when missing ([`venv`]).
//! - `--server`: builds the `echo` example in release mode, starts it on a free port of
//!   127.0.0.1, waits for its `listening on ws://ADDR` line, runs `wstest -m fuzzingclient`
//!   against it, then stops it with SIGTERM (it must exit cleanly). With `--url`, tests a server
//!   already running there instead.
//! - `--client`: starts `wstest -m fuzzingserver` on a free port of 127.0.0.1 and runs the
//!   `autobahn_client` example against it, then stops wstest.
//! - `--blocking-server` and `--blocking-client`: the same for the blocking API, with the
//!   `blocking_echo` and `blocking_autobahn_client` examples.
//! - No side flag means all four (only `--server` with `--url`). `--cases` takes wstest's patterns; without it every case runs,
//!   all 517 of sections 1 to 13, the 216 of permessage-deflate (12 and 13) included. `--quick`
//!   leaves out the [`HEAVY`] ones, as `cargo xtask ci` does.
//! - `--setup` only makes the virtualenv and prints the suite's version (`.ci/run` uses it).
//!
//! `cargo xtask conformance` then writes the book's Conformance chapter from the reports
//! ([`conformance`]); in CI, this stage checks the committed chapter against its own run.
//!
//! Each side's reports go to `target/autobahn/{server,client,blocking-server,blocking-client}/` (open `index.html` there), with
//! the logs of wstest and of our example. The verdict follows [`report`]: every case OK, unless
//! `autobahn/expected.json` lists it with a reason.
//!
//! The suite's runs share a budget (making the virtualenv included, the cargo build not):
//! [`QUICK_LIMIT`] with `--quick` or in CI, [`FULL_LIMIT`] otherwise, or `--limit MINUTES`; any
//! process still running when it is spent is killed by its PID, and so is every process
//! the harness started when it returns early. All traffic stays on 127.0.0.1: the examples are
//! given a loopback address, and wstest's fuzzing server, which binds every interface on its own,
//! is started through a wrapper that binds it to 127.0.0.1.
//!
//! In `cargo xtask ci`, a missing example fails the stage (a skipped conformance run must not
//! look like a passed one) unless `PALISADE_AUTOBAHN_ALLOW_MISSING` names its side (`client`,
//! `server`, `blocking-server`, `blocking-client`, or several, comma-separated); run by hand, a
//! missing example is reported as skipped. The blocking sides are judged by the same lists of
//! `autobahn/expected.json` as the tokio ones (`server` and `client`): the protocol core is the
//! same, so they must behave the same.

pub(crate) mod conformance;
mod process;
mod report;
mod venv;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use self::process::Process;
use self::report::{Allowed, CaseId};
use crate::cmd;

/// Cases left out of the quick run (`--quick`, and `cargo xtask ci`): those of sections 12 and
/// 13 (permessage-deflate) that send 1,000 messages of 32 KiB to 128 KiB each. wstest
/// compresses and checks them in Python, which makes each take 10 to 30 s, over half an hour
/// per side for the 132 of them. Subcases 1 to 7 of every 12.x and 13.x (16 B to 16 KiB, every
/// window size and context takeover combination) stay in the quick run, against the echo
/// example started with `--deflate`.
pub(crate) const HEAVY: &[&str] = &[
    "12.*.8", "12.*.9", "12.*.10", "12.*.11", "12.*.12", "12.*.13", "12.*.14", "12.*.15",
    "12.*.16", "12.*.17", "12.*.18", "13.*.8", "13.*.9", "13.*.10", "13.*.11", "13.*.12",
    "13.*.13", "13.*.14", "13.*.15", "13.*.16", "13.*.17", "13.*.18",
];

/// The agent name our examples report as, and the key of their results in `index.json`.
const AGENT: &str = "palisade";
/// The time the quick run's sides may take together (the cargo build is not counted): four
/// sides, the tokio and the blocking ones.
const QUICK_LIMIT: Duration = Duration::from_secs(20 * 60);
/// The time a full run's sides may take together.
const FULL_LIMIT: Duration = Duration::from_secs(100 * 60);
/// How long a server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a long run reports how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Names the sides whose missing example `cargo xtask ci` tolerates.
const ALLOW_MISSING: &str = "PALISADE_AUTOBAHN_ALLOW_MISSING";

/// Runs wstest with the fuzzing server bound to 127.0.0.1 instead of every interface.
const LOOPBACK_WSTEST: &str = "\
import sys
from autobahntestsuite import fuzzing, wstest
listen = fuzzing.listenWS
fuzzing.listenWS = lambda factory, context=None: listen(factory, context, interface='127.0.0.1')
sys.argv[0] = 'wstest'
wstest.run()
";

/// `cargo xtask autobahn ARGS`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!(
                "error: {e}\n\nusage: cargo xtask autobahn [--server] [--client] \
                       [--blocking-server] [--blocking-client] [--quick | --cases \"1.*,2.*\"] [--url ws://HOST:PORT] \
                       [--limit MINUTES] [--setup]"
            );
            return ExitCode::from(2);
        }
    };
    match execute(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `autobahn` stage of `cargo xtask ci`: all four sides, the quick run, missing examples
/// failing.
pub(crate) fn ci() -> Result<(), String> {
    execute(&Options {
        server: true,
        client: true,
        blocking_server: true,
        blocking_client: true,
        quick: true,
        ci: true,
        ..Options::default()
    })?;
    // The Conformance chapter must say what these reports say (no run of its own).
    conformance::check_against(&Workspace::read()?.target.join("autobahn"))
}

#[derive(Debug, Default)]
struct Options {
    server: bool,
    client: bool,
    blocking_server: bool,
    blocking_client: bool,
    /// wstest case patterns; `None` for every case (outside [`HEAVY`] if `quick`).
    cases: Option<Vec<String>>,
    quick: bool,
    /// `--limit`, instead of [`QUICK_LIMIT`] or [`FULL_LIMIT`].
    limit: Option<Duration>,
    /// A server that is already running, tested instead of the echo example.
    url: Option<String>,
    setup_only: bool,
    ci: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or(format!("{flag} needs a value"))
            };
            match flag {
                "--server" => options.server = true,
                "--client" => options.client = true,
                "--blocking-server" => options.blocking_server = true,
                "--blocking-client" => options.blocking_client = true,
                "--setup" => options.setup_only = true,
                "--quick" => options.quick = true,
                "--limit" => {
                    let minutes = value()?;
                    let minutes: u64 = minutes
                        .parse()
                        .ok()
                        .filter(|&m| m > 0)
                        .ok_or(format!("--limit takes whole minutes, not `{minutes}`"))?;
                    options.limit = Some(Duration::from_secs(minutes * 60));
                }
                "--cases" => options.cases = Some(parse_cases(&value()?)?),
                "--url" => {
                    let url = value()?;
                    if !url.starts_with("ws://") {
                        return Err(format!("--url takes a ws:// URL, not `{url}`"));
                    }
                    options.url = Some(url);
                }
                _ => return Err(format!("unknown argument `{arg}`")),
            }
        }
        if options.quick && options.cases.is_some() {
            return Err("--quick and --cases pick cases each; give one".to_owned());
        }
        if options.url.is_some() && (options.blocking_server || options.blocking_client) {
            return Err("--url tests a running server; it takes no blocking side".to_owned());
        }
        if !options.server
            && !options.client
            && !options.blocking_server
            && !options.blocking_client
        {
            options.server = true;
            options.client = options.url.is_none();
            options.blocking_server = options.url.is_none();
            options.blocking_client = options.url.is_none();
        }
        Ok(options)
    }
}

/// `"1.*, 2.*"` → `["1.*", "2.*"]`, refusing what wstest would not match.
fn parse_cases(list: &str) -> Result<Vec<String>, String> {
    let cases: Vec<String> =
        list.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect();
    if cases.is_empty() {
        return Err("--cases needs at least one pattern, such as 1.* or 6.4.3".to_owned());
    }
    if let Some(bad) =
        cases.iter().find(|c| !c.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '*'))
    {
        return Err(format!("`{bad}` is not a case pattern such as 1.*, 6.4.3 or 9.*.1"));
    }
    Ok(cases)
}

/// wstest's matching: `*` is any run of characters, everything else is itself.
fn matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).any(|at| text.is_char_boundary(at) && matches(rest, &text[at..]))
        }
    }
}

fn is_heavy(id: &CaseId) -> bool {
    HEAVY.iter().any(|pattern| matches(pattern, id.as_str()))
}

/// Which cases wstest runs: the spec's `cases` and `exclude-cases`.
#[derive(Debug)]
struct Cases {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Cases {
    /// Cases asked for by name run even if they are heavy.
    fn new(asked: Option<&[String]>, quick: bool) -> Self {
        match asked {
            Some(asked) => Self { include: asked.to_vec(), exclude: Vec::new() },
            None => Self {
                include: vec!["*".to_owned()],
                exclude: if quick { HEAVY.iter().map(|&s| s.to_owned()).collect() } else { vec![] },
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
    /// The blocking API's echo server.
    BlockingServer,
    /// The blocking API's client.
    BlockingClient,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
            Side::BlockingServer => "blocking-server",
            Side::BlockingClient => "blocking-client",
        }
    }

    /// The example that plays our part.
    fn example(self) -> &'static str {
        match self {
            Side::Server => "echo",
            Side::Client => "autobahn_client",
            Side::BlockingServer => "blocking_echo",
            Side::BlockingClient => "blocking_autobahn_client",
        }
    }

    /// Whether our example is the client (wstest serves).
    fn is_client(self) -> bool {
        matches!(self, Side::Client | Side::BlockingClient)
    }
}

/// How many sides' suites run at once.
const PARALLEL_SIDES: usize = 2;

fn execute(options: &Options) -> Result<(), String> {
    let limit = options.limit.unwrap_or(if options.quick { QUICK_LIMIT } else { FULL_LIMIT });
    let mut deadline = Instant::now() + limit;
    let (server_allowed, client_allowed) =
        report::read_expected(&cmd::root().join(report::EXPECTED))?;
    let workspace = Workspace::read()?;
    let venv = venv::ensure(&workspace.target, deadline)?;
    if options.setup_only {
        let mut version = Command::new(venv.python());
        version.arg(venv.wstest()).arg("--autobahnversion");
        return cmd::run(&mut version);
    }

    let mut problems = Vec::new();
    let mut sides = Vec::new();
    let asked = [
        (options.server, Side::Server),
        (options.client, Side::Client),
        (options.blocking_server, Side::BlockingServer),
        (options.blocking_client, Side::BlockingClient),
    ];
    for side in asked.into_iter().filter(|(asked, _)| *asked).map(|(_, side)| side) {
        let needs_example = side != Side::Server || options.url.is_none();
        if !needs_example || workspace.examples.iter().any(|e| e == side.example()) {
            sides.push(side);
            continue;
        }
        let skipped = format!(
            "autobahn {}: skipped: example `{}` missing (no such example in the workspace)",
            side.name(),
            side.example()
        );
        if options.ci && !missing_allowed(side) {
            problems.push(format!("{skipped}; set {ALLOW_MISSING}={} to accept", side.name()));
        } else {
            println!("{skipped}");
        }
    }

    let examples: Vec<&str> = sides
        .iter()
        .filter(|&&side| side != Side::Server || options.url.is_none())
        .map(|side| side.example())
        .collect();
    if !examples.is_empty() {
        let started = Instant::now();
        let mut build = cmd::cargo(["build", "--release"]);
        for example in &examples {
            build.args(["--example", example]);
        }
        cmd::run(&mut build)?;
        deadline += started.elapsed();
    }

    let cases = Cases::new(options.cases.as_deref(), options.quick);
    let run = |side: Side| {
        if side.is_client() {
            run_client(side, &venv, &workspace.target, &cases, &client_allowed, deadline)
        } else {
            run_server(side, &venv, &workspace.target, &cases, &server_allowed, options, deadline)
        }
    };
    // Two sides at a time: each is one wstest (a Python process that keeps a core busy) and
    // one of ours, so two share this machine's two cores and the four take half as long. Each
    // has its own directory, port and log; their progress lines name them.
    let queue = std::sync::Mutex::new(sides.iter().copied().collect::<VecDeque<Side>>());
    let next = || queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
    let mut results: Vec<(Side, Result<String, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL_SIDES)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(side) = next() {
                        done.push((side, run(side)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    vec![(Side::Server, Err("a side's thread panicked".to_owned()))]
                })
            })
            .collect()
    });
    results.sort_by_key(|(side, _)| sides.iter().position(|s| s == side));
    let mut summaries = Vec::new();
    for (side, result) in results {
        match result {
            Ok(summary) => summaries.push(format!("autobahn {}: {summary}", side.name())),
            Err(e) => problems.push(format!("autobahn {}: {e}", side.name())),
        }
    }
    println!();
    for line in summaries.iter().chain(&problems) {
        println!("{line}");
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("{} problem(s) above", problems.len())) }
}

fn missing_allowed(side: Side) -> bool {
    std::env::var(ALLOW_MISSING)
        .is_ok_and(|value| value.split(',').any(|name| name.trim() == side.name()))
}

/// What the harness needs from `cargo metadata`.
struct Workspace {
    target: PathBuf,
    examples: Vec<String>,
}

impl Workspace {
    fn read() -> Result<Self, String> {
        let stdout =
            cmd::stdout(&mut cmd::cargo(["metadata", "--no-deps", "--format-version", "1"]))?;
        let metadata: Value = serde_json::from_slice(&stdout)
            .map_err(|e| format!("cargo metadata printed something that is not JSON: {e}"))?;
        let target = metadata["target_directory"]
            .as_str()
            .ok_or("cargo metadata's output has no target_directory")?
            .into();
        let examples = metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|package| package["targets"].as_array().into_iter().flatten())
            .filter(|target| {
                target["kind"].as_array().is_some_and(|k| k.contains(&json!("example")))
            })
            .filter_map(|target| target["name"].as_str().map(str::to_owned))
            .collect();
        Ok(Self { target, examples })
    }
}

/// `wstest -m fuzzingclient` against `side`'s echo example, or against `options.url`.
fn run_server(
    side: Side,
    venv: &venv::Venv,
    target: &Path,
    cases: &Cases,
    allowed: &Allowed,
    options: &Options,
    deadline: Instant,
) -> Result<String, String> {
    let name = side.name();
    let dir = fresh_dir(&target.join("autobahn").join(name))?;
    let (mut echo, url) = match &options.url {
        Some(url) => (None, url.clone()),
        None => {
            let (echo, url) = start_echo(side.example(), target, &dir, deadline)?;
            (Some(echo), url)
        }
    };
    let spec = json!({
        "outdir": dir,
        "servers": [{"agent": AGENT, "url": url}],
        "cases": cases.include,
        "exclude-cases": cases.exclude,
        "exclude-agent-cases": {},
    });
    let spec_path = write_spec(&dir, &spec)?;
    let log = dir.join("wstest.log");
    let mut command = Command::new(venv.python());
    command.arg("-u").arg(venv.wstest()).args(["-m", "fuzzingclient", "-s"]).arg(&spec_path);
    let mut wstest = Process::spawn_logged("wstest fuzzingclient", &mut command, &log)?;
    println!("autobahn {name}: testing {url}; wstest's log is {}", log.display());
    let started = Instant::now();
    let finished = wstest.wait_until(deadline, PROGRESS_EVERY, || progress(name, &log, started))?;

    let mut problems = Vec::new();
    match finished {
        Some(status) if status.success() => {}
        Some(status) => problems.push(format!("{} failed ({status})", wstest.name())),
        None => {
            wstest.kill()?;
            problems.push(format!("{} ran out of time and was killed", wstest.name()));
        }
    }
    if !problems.is_empty() {
        print!("{}", process::tail(&log, 20));
    }
    if let Some(echo) = &mut echo {
        match echo.stop(STOP_GRACE)? {
            (_, true) => problems.push(format!(
                "echo did not exit within {}s of SIGTERM (it must shut down gracefully)",
                STOP_GRACE.as_secs()
            )),
            (status, false) if !status.success() => {
                problems.push(format!("echo ended with {status} after SIGTERM, not a clean exit"));
            }
            (_, false) => {}
        }
        if !problems.is_empty() {
            print!("{}", process::tail(&dir.join("echo.log"), 20));
        }
    }
    conclude(name, &dir, &log, allowed, started, problems)
}

/// Starts the echo example `example` on a free port and returns it with the URL it says it
/// listens on.
fn start_echo(
    example: &str,
    target: &Path,
    dir: &Path,
    deadline: Instant,
) -> Result<(Process, String), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let log_path = dir.join("echo.log");
    let mut log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let stderr =
        log.try_clone().map_err(|e| format!("cannot reopen {}: {e}", log_path.display()))?;
    let mut command = Command::new(target.join("release/examples").join(example));
    // The log is a file: tracing's colour codes would only clutter it.
    // `--deflate`: sections 12 and 13 negotiate permessage-deflate; the others offer nothing
    // and run uncompressed as before.
    command.args(["--addr", &addr.to_string(), "--deflate"]).env("NO_COLOR", "1");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    let mut echo = Process::spawn("echo", &mut command)?;
    let stdout = echo.take_stdout().expect("the echo's stdout is piped just above");
    // The line is read here; everything the example prints goes to its log, so that its output
    // is kept and its pipe never fills.
    let (found, listening) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                let _ = found.send(url.to_owned());
            }
        }
    });
    let wait = deadline.min(Instant::now() + START_LIMIT).saturating_duration_since(Instant::now());
    match listening.recv_timeout(wait) {
        Ok(url) if url.starts_with("ws://") => Ok((echo, url)),
        Ok(url) => Err(format!("echo says it listens on `{url}`, not a ws:// URL")),
        Err(RecvTimeoutError::Timeout) => Err(format!(
            "echo printed no `listening on ws://ADDR` line within {}s\n{}",
            wait.as_secs(),
            process::tail(&log_path, 20)
        )),
        Err(RecvTimeoutError::Disconnected) => {
            let status = echo.stop(STOP_GRACE).map(|(status, _)| status.to_string());
            Err(format!(
                "echo closed its stdout ({}) without printing `listening on ws://ADDR`\n{}",
                status.unwrap_or_else(|e| e),
                process::tail(&log_path, 20)
            ))
        }
    }
}

/// `wstest -m fuzzingserver` with `side`'s client example as its client.
fn run_client(
    side: Side,
    venv: &venv::Venv,
    target: &Path,
    cases: &Cases,
    allowed: &Allowed,
    deadline: Instant,
) -> Result<String, String> {
    let name = side.name();
    let dir = fresh_dir(&target.join("autobahn").join(name))?;
    let port = free_port()?;
    let url = format!("ws://127.0.0.1:{port}");
    let spec = json!({
        "url": url,
        "outdir": dir,
        "cases": cases.include,
        "exclude-cases": cases.exclude,
        "exclude-agent-cases": {},
    });
    let spec_path = write_spec(&dir, &spec)?;
    let log = dir.join("wstest.log");
    let wrapper = dir.join("wstest_loopback.py");
    std::fs::write(&wrapper, LOOPBACK_WSTEST)
        .map_err(|e| format!("cannot write {}: {e}", wrapper.display()))?;
    let mut command = Command::new(venv.python());
    // `-u 0`: no web server for browsing the reports (it would bind port 8080 on every interface).
    command.arg("-u").arg(&wrapper).args(["-m", "fuzzingserver", "-u", "0", "-s"]).arg(&spec_path);
    let mut wstest = Process::spawn_logged("wstest fuzzingserver", &mut command, &log)?;
    wait_accepting(&mut wstest, port, deadline.min(Instant::now() + START_LIMIT), &log)?;

    let example = side.example();
    let client_log = dir.join(format!("{example}.log"));
    let mut command = Command::new(target.join("release/examples").join(example));
    command.args(["--url", &url, "--agent", AGENT]);
    let mut client = Process::spawn_logged(example, &mut command, &client_log)?;
    println!("autobahn {name}: wstest serves {url}; logs in {}", dir.display());
    let started = Instant::now();
    let finished = client.wait_until(deadline, PROGRESS_EVERY, || progress(name, &log, started))?;
    let mut problems = Vec::new();
    match finished {
        Some(status) if status.success() => {}
        Some(status) => problems.push(format!("{example} failed ({status})")),
        None => {
            client.kill()?;
            problems.push(format!("{example} ran out of time and was killed"));
        }
    }
    if !problems.is_empty() {
        print!("{}", process::tail(&client_log, 20));
    }
    // The reports are written when the client asks for updateReports, before it exits.
    if let (_, true) = wstest.stop(STOP_GRACE)? {
        println!("autobahn {name}: wstest needed SIGKILL to stop");
    }
    conclude(name, &dir, &log, allowed, started, problems)
}

/// Waits until `port` accepts a TCP connection, or fails if `server` exits or `until` passes.
fn wait_accepting(
    server: &mut Process,
    port: u16,
    until: Instant,
    log: &Path,
) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = server.exited()? {
            return Err(format!(
                "{} exited ({status}) before listening\n{}",
                server.name(),
                process::tail(log, 20)
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "{} did not listen on {addr} in time\n{}",
                server.name(),
                process::tail(log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads and judges one side's report, prints it, and returns a one-line summary or every
/// problem found (those of the run, `problems`, first).
fn conclude(
    side: &str,
    dir: &Path,
    log: &Path,
    allowed: &Allowed,
    started: Instant,
    mut problems: Vec<String>,
) -> Result<String, String> {
    let took = started.elapsed().as_secs_f64();
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let planned = report::planned_cases(&output).unwrap_or_default();
    let outcomes = match report::read_index(dir, AGENT) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            problems.push(e);
            BTreeMap::new()
        }
    };
    let verdict = report::judge(&planned, &outcomes, allowed, is_heavy);
    println!(
        "\nautobahn {side}: {} cases in {took:.1}s (reports in {})",
        outcomes.len(),
        dir.display()
    );
    if !outcomes.is_empty() {
        report::print_table(&outcomes);
    }
    if !verdict.accepted.is_empty() {
        println!("accepted without OK ({}):", report::EXPECTED);
        for (id, behaviour, reason) in &verdict.accepted {
            println!("  {id}: {behaviour}: {reason}");
        }
    }
    for id in &verdict.stale {
        println!("warning: {id} passes now; remove it from `{side}` in {}", report::EXPECTED);
    }
    if !verdict.unexpected.is_empty() {
        println!("failed ({}):", verdict.unexpected.len());
        for id in &verdict.unexpected {
            report::print_failure(dir, id, &outcomes[id]);
        }
        problems.push(format!(
            "{} case(s) not OK: {}",
            verdict.unexpected.len(),
            abbreviate(&verdict.unexpected, 40)
        ));
    }
    // Without an index every planned case is missing, which says nothing more.
    if !verdict.missing.is_empty() && !outcomes.is_empty() {
        problems.push(format!(
            "{} planned case(s) have no result (did the peer stop?): {}",
            verdict.missing.len(),
            abbreviate(&verdict.missing, 20)
        ));
    }
    if planned.is_empty() && problems.is_empty() {
        problems
            .push(format!("wstest printed no case list (`Cases = [...]`) in {}", log.display()));
    }
    if problems.is_empty() {
        Ok(format!(
            "ok: {} cases, {} OK, {} accepted by {}, in {took:.1}s",
            outcomes.len(),
            verdict.passed,
            verdict.accepted.len(),
            report::EXPECTED
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// The first `max` ids, then how many more there are.
fn abbreviate(ids: &[CaseId], max: usize) -> String {
    let shown: Vec<&str> = ids.iter().take(max).map(CaseId::as_str).collect();
    match ids.len().checked_sub(max) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(" ")),
        _ => shown.join(" "),
    }
}

/// Prints how many cases wstest has started so far, read from its log.
fn progress(side: &str, log: &Path, started: Instant) {
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let running: Vec<&str> =
        output.lines().filter_map(|line| line.strip_prefix("Running test case ID ")).collect();
    let last = running.last().and_then(|line| line.split_whitespace().next()).unwrap_or("none yet");
    println!(
        "autobahn {side}: {} cases started in {:.0}s, the last {last}",
        running.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A free TCP port on 127.0.0.1, found by binding port 0 and letting it go.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind 127.0.0.1:0 to find a free port: {e}"))?;
    listener.local_addr().map(|addr| addr.port()).map_err(|e| format!("cannot read the port: {e}"))
}

/// `dir`, emptied, so that no report from an earlier run is read as this run's.
fn fresh_dir(dir: &Path) -> Result<PathBuf, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir.to_path_buf())
}

fn write_spec(dir: &Path, spec: &Value) -> Result<PathBuf, String> {
    let path = dir.join("spec.json");
    let text = serde_json::to_string_pretty(spec).expect("a serde_json::Value always serializes");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn both_sides_and_the_default_cases_without_flags() {
        let options = Options::parse(&[]).unwrap();
        assert!(options.server && options.client && options.cases.is_none());
        assert!(options.blocking_server && options.blocking_client);
        let options = Options::parse(&args("--client --cases=1.*,2.1")).unwrap();
        assert!(!options.server && options.client && !options.blocking_client);
        assert_eq!(options.cases.unwrap(), ["1.*", "2.1"]);
        let options = Options::parse(&args("--blocking-client")).unwrap();
        assert!(!options.server && !options.client && options.blocking_client);
        assert!(Options::parse(&args("--url ws://127.0.0.1:9001 --blocking-server")).is_err());
        let options = Options::parse(&args("--url ws://127.0.0.1:9001")).unwrap();
        assert!(options.server && !options.client && !options.blocking_server);
        assert!(Options::parse(&args("--cases")).is_err());
        assert!(Options::parse(&args("--cases 1;rm")).is_err());
        assert!(Options::parse(&args("--url http://x")).is_err());
        assert!(Options::parse(&args("--serve")).is_err());
    }

    #[test]
    fn patterns_match_like_wstest() {
        assert!(matches("12.*", "12.1.3"));
        assert!(!matches("12.*", "1.2.1"));
        assert!(!matches("1.*", "12.1.1"));
        assert!(matches("9.*.1", "9.4.1"));
        assert!(!matches("9.*.1", "9.4.2"));
        assert!(matches("*", "1.1.1"));
        assert!(matches("6.4.3", "6.4.3"));
        assert!(is_heavy(&CaseId::parse("13.7.18").unwrap()));
        assert!(!is_heavy(&CaseId::parse("13.7.7").unwrap()));
        assert!(!is_heavy(&CaseId::parse("10.1.1").unwrap()));
    }

    #[test]
    fn every_case_runs_unless_quick() {
        assert!(Cases::new(None, false).exclude.is_empty());
        assert_eq!(Cases::new(None, true).exclude, HEAVY);
        let asked = vec!["12.1.18".to_owned()];
        let cases = Cases::new(Some(&asked), false);
        assert_eq!((cases.include, cases.exclude), (asked, vec![]));
    }

    #[test]
    fn quick_and_limit_flags() {
        let options = Options::parse(&args("--quick --limit 3")).unwrap();
        assert!(options.quick);
        assert_eq!(options.limit, Some(Duration::from_secs(180)));
        assert!(Options::parse(&args("--quick --cases 1.*")).is_err());
        assert!(Options::parse(&args("--limit 0")).is_err());
        assert!(Options::parse(&args("--limit soon")).is_err());
    }
}
