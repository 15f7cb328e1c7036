//! Python and Node peers for interop tests: a pinned venv with `websockets`, `websocket-client`,
//! `aiohttp`, `h2` and `wsproto`, a pinned `ws` under `target/interop-node` (npm), and child processes that are
//! always killed.
//!
//! - [`python`] creates `target/interop-venv` once (`python3 -m venv`, then `pip install` of
//!   [`PYTHON_PACKAGES`]), guarded by a lock file so that parallel tests and test binaries do it
//!   once; a venv made for other pins gets the new ones installed over it.
//! - [`Peer::spawn`] runs a script from `tests/interop/py/` with arguments and reads its
//!   stdout line by line; [`Peer::server`] starts `server.py` in a mode and returns its port.
//!   Scripts print `PORT <n>` when listening and end themselves after a timeout; the process
//!   is killed by PID when the [`Peer`] drops.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The pinned `websockets` release.
pub(crate) const WEBSOCKETS_VERSION: &str = "17.4";

/// The pinned `websocket-client` release (the synchronous client many scripts use; it sends
/// an `Origin` of its own by default).
pub(crate) const WEBSOCKET_CLIENT_VERSION: &str = "1.9.2";

/// The pinned `aiohttp` release (client and server).
pub(crate) const AIOHTTP_VERSION: &str = "3.14.5";

/// The pinned `h2` (python-hyper's HTTP/2 state machine, with RFC 8441's extended CONNECT) and
/// `wsproto` (a sans-I/O WebSocket) releases: together, an HTTP/2 WebSocket client that shares
/// no code with palisade or hyper.
pub(crate) const H2_VERSION: &str = "4.3.0";
pub(crate) const WSPROTO_VERSION: &str = "1.2.0";

/// What the venv holds, as pip requirements.
const PYTHON_PACKAGES: [(&str, &str); 5] = [
    ("websockets", WEBSOCKETS_VERSION),
    ("websocket-client", WEBSOCKET_CLIENT_VERSION),
    ("aiohttp", AIOHTTP_VERSION),
    ("h2", H2_VERSION),
    ("wsproto", WSPROTO_VERSION),
];

/// The pinned Node `ws` release.
pub(crate) const NODE_WS_VERSION: &str = "8.23.0";

/// The pinned `playwright-core` release, which drives Debian's `chromium` (it downloads no
/// browser of its own).
pub(crate) const PLAYWRIGHT_CORE_VERSION: &str = "1.58.2";

/// How long a peer may take to print a line we wait for.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A lock older than this was left by a killed test run.
const STALE_LOCK: Duration = Duration::from_secs(600);

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The venv's Python, with `websockets` installed; created on first use.
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let target = target_dir();
        std::fs::create_dir_all(&target).unwrap();
        let venv = target.join("interop-venv");
        let python = venv.join("bin").join("python");
        let pins: Vec<String> =
            PYTHON_PACKAGES.iter().map(|(name, version)| format!("{name}=={version}")).collect();
        // The marker names every pin, so that a change of pins installs again.
        let ready = venv.join(format!(".ready-{}", pins.join("-")));
        if ready.exists() {
            return python;
        }
        let _lock = LockFile::acquire(target.join("interop-venv.lock"), &ready);
        if !ready.exists() {
            run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run(std::process::Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(&pins));
            std::fs::write(&ready, pins.join("\n")).unwrap();
        }
        python
    })
}

/// A `node_modules` directory holding `ws` and `playwright-core`, installed with npm on first use under
/// `target/interop-node`.
pub(crate) fn node_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let target = target_dir();
        std::fs::create_dir_all(&target).unwrap();
        let prefix = target.join("interop-node");
        let modules = prefix.join("node_modules");
        let ready = prefix.join(format!(".ws-{NODE_WS_VERSION}-pw-{PLAYWRIGHT_CORE_VERSION}"));
        if ready.exists() {
            return modules;
        }
        let _lock = LockFile::acquire(target.join("interop-node.lock"), &ready);
        if !ready.exists() {
            std::fs::create_dir_all(&prefix).unwrap();
            run(std::process::Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(format!("ws@{NODE_WS_VERSION}"))
                .arg(format!("playwright-core@{PLAYWRIGHT_CORE_VERSION}")));
            std::fs::write(&ready, NODE_WS_VERSION).unwrap();
        }
        modules
    })
}

/// The chat example's npm packages (`ws`, `playwright-core`, pinned by
/// `examples/chat/package-lock.json`), installed with `npm ci` into `examples/chat/node_modules`
/// once per version of the lock file. A copy of the lock file in `node_modules/.palisade-lock`,
/// written when an install finished (here or by `.ci/run`), says which pins are installed, so
/// that parallel test processes wait for an install (under a lock file) instead of starting
/// Node on a half-installed tree.
#[cfg(feature = "json")]
pub(crate) fn chat_node_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let dir = chat_dir();
        let modules = dir.join("node_modules");
        let pins = std::fs::read(dir.join("package-lock.json")).unwrap();
        let marker = modules.join(".palisade-lock");
        let ready = || std::fs::read(&marker).is_ok_and(|installed| installed == pins);
        if ready() {
            return modules;
        }
        // Installed for other pins: the marker goes, so that the lock below is waited for.
        let _ = std::fs::remove_file(&marker);
        let target = target_dir();
        std::fs::create_dir_all(&target).unwrap();
        let _lock = LockFile::acquire(target.join("chat-node.lock"), &marker);
        if !ready() {
            run(std::process::Command::new("npm")
                .args(["ci", "--silent", "--no-audit", "--no-fund"])
                .current_dir(&dir));
            let partial = modules.join(".palisade-lock.partial");
            std::fs::write(&partial, &pins).unwrap();
            std::fs::rename(&partial, &marker).unwrap();
        }
        modules
    })
}

/// `examples/chat`: the chat's page, its JavaScript client and their tests.
#[cfg(feature = "json")]
pub(crate) fn chat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/chat")
}

/// A command running the example binary `name` (built by `cargo test`) with `args`.
pub(crate) fn example_command(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(example_binary(name));
    command.args(args);
    command
}

/// The path of the example binary `name`, which `cargo test` builds.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    let binary =
        crate::examples::examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "{} is missing: `cargo test` builds the examples", binary.display());
    binary
}

fn run(command: &mut std::process::Command) {
    let status = command.status().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A lock file created with `create_new`; removed on drop.
struct LockFile(PathBuf);

impl LockFile {
    /// Waits for the lock, or for `done` to appear (another process did the work).
    fn acquire(path: PathBuf, done: &Path) -> Option<Self> {
        let started = SystemTime::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Some(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if done.exists() {
                        return None;
                    }
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .unwrap_or_default();
                    if age > STALE_LOCK {
                        let _ = std::fs::remove_file(&path);
                    }
                    assert!(
                        started.elapsed().unwrap_or_default() < STALE_LOCK,
                        "waited too long for {}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A Python process; killed (by PID) when dropped.
pub(crate) struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// Runs `tests/interop/py/<script>` with `args` in the venv.
    pub(crate) fn spawn(script: &str, args: &[&str]) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/py").join(script);
        let mut child = Command::new(python())
            .arg("-u")
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stdout = child.stdout.take().unwrap();
        Self { child, lines: BufReader::new(stdout).lines() }
    }

    /// Runs `tests/interop/node/ws.js` with `args` under Node, with `ws` installed.
    pub(crate) fn spawn_node(args: &[&str]) -> Self {
        Self::spawn_node_script("ws.js", args)
    }

    /// Runs `tests/interop/node/<script>` with `args` under Node, with the pinned packages.
    pub(crate) fn spawn_node_script(script: &str, args: &[&str]) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node").join(script);
        let mut child = Command::new("node")
            .arg(&path)
            .args(args)
            .env("NODE_PATH", node_modules())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stdout = child.stdout.take().unwrap();
        Self { child, lines: BufReader::new(stdout).lines() }
    }

    /// Runs `command` (stdout piped, read line by line; stderr inherited).
    pub(crate) fn command(command: Command) -> Self {
        Self::command_with_stderr(command, Stdio::inherit())
    }

    /// Runs `command` with stdout piped and read line by line, stderr going to `stderr`.
    pub(crate) fn command_with_stderr(mut command: Command, stderr: Stdio) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        Self { child, lines: BufReader::new(stdout).lines() }
    }

    /// Runs the example binary `name` (built by `cargo test`) with `args`.
    pub(crate) fn example(name: &str, args: &[&str]) -> Self {
        Self::command(example_command(name, args))
    }

    /// Runs `examples/chat/tests/<script>` under Node with `args`, its packages installed, as
    /// the leader of a process group of its own: what it starts (chat servers, Chromium) is in
    /// that group, which [`NodeGroup`] kills if the test ends before the script does.
    #[cfg(feature = "json")]
    pub(crate) fn chat_node(script: &str, args: &[&str]) -> Self {
        chat_node_modules();
        let dir = chat_dir();
        let mut command = Command::new("node");
        command.arg(dir.join("tests").join(script)).args(args).current_dir(&dir);
        #[cfg(unix)]
        command.process_group(0);
        Self::command(command)
    }

    /// Starts `server.py MODE [PORT]` and waits until it listens; returns it and its port.
    pub(crate) async fn server(mode: &str, port: Option<u16>) -> (Self, u16) {
        let port_arg = port.map(|p| p.to_string());
        let mut args = vec![mode];
        args.extend(port_arg.as_deref());
        let mut peer = Self::spawn("server.py", &args);
        let line = peer.line_starting("PORT ").await;
        let port = line["PORT ".len()..].trim().parse().unwrap();
        (peer, port)
    }

    /// The next line the peer prints.
    pub(crate) async fn line(&mut self) -> String {
        match tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("the peer ended its output"),
            Ok(Err(e)) => panic!("reading the peer's output: {e}"),
            Err(_) => panic!("the peer printed nothing for {LINE_TIMEOUT:?}"),
        }
    }

    /// The next line starting with `prefix` (others are skipped).
    pub(crate) async fn line_starting(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line().await;
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process and waits for it to end.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits (bounded) for the process to end by itself (for client scripts).
    #[allow(dead_code, reason = "for peers that end by themselves, such as Python clients")]
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(LINE_TIMEOUT, self.child.wait())
            .await
            .expect("the peer did not end in time")
            .unwrap()
    }
}

/// The process group of a Node script started by [`Peer::chat_node`]: killed on drop unless
/// the script ended by itself ([`NodeGroup::ended`]), so that a failed test leaves no chat
/// server or browser of the script's behind.
#[cfg(feature = "json")]
pub(crate) struct NodeGroup {
    pgid: Option<u32>,
}

#[cfg(feature = "json")]
impl NodeGroup {
    /// The group whose leader is `node`.
    pub(crate) fn of(node: &Peer) -> Self {
        Self { pgid: node.pid() }
    }

    /// The script ended by itself, after stopping what it started: nothing to kill.
    pub(crate) fn ended(mut self) {
        self.pgid = None;
    }
}

#[cfg(feature = "json")]
impl Drop for NodeGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // The group's id is the script's PID: only what the script started is in it.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // `kill_on_drop` does the same; this makes it explicit and immediate.
        let _ = self.child.start_kill();
    }
}
