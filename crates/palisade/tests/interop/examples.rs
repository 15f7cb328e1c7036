//! The examples whose command lines are contracts, driven over real TCP with palisade's client
//! and Python `websockets` side by side; and every example's command line: `--help` and an
//! unknown argument, run on the binaries that `cargo test` builds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use palisade::Message;
use palisade::client::Client;

use crate::support::Peer;

#[path = "../../../../examples/broadcast.rs"]
#[allow(dead_code, reason = "the example's `main` is not run here; its `serve` is")]
mod broadcast;

/// `broadcast`: each text message is acknowledged to its sender (`ack:` and the message) and
/// pushed unchanged to every other client, palisade's and Python's alike, in order; binary
/// messages are not relayed.
#[tokio::test]
async fn broadcast_acks_the_sender_and_pushes_to_every_other_client() {
    let running = broadcast::serve("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", running.local_addr());
    let mut py = Peer::spawn("client.py", &["listen", &url, "3"]);
    assert_eq!(py.line().await, "OPEN");
    let client = Client::new().with_keepalive(None, None);
    let a = client.connect(&url).await.unwrap();
    let b = client.connect(&url).await.unwrap();
    // Every connection is registered before the first message goes out.
    while running.connections() < 3 {
        tokio::task::yield_now().await;
    }
    a.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    for text in ["one", "two", "three"] {
        a.send(text).await.unwrap();
    }
    for text in ["one", "two", "three"] {
        assert_eq!(a.recv().await.unwrap(), Message::text(format!("ack:{text}")));
        assert_eq!(b.recv().await.unwrap(), Message::text(text));
        assert_eq!(py.line().await, format!("RECV {text}"));
    }
    assert_eq!(py.line().await, "CLOSED 1000");
    a.close(palisade::CloseCode::NORMAL, "").await.unwrap();
    b.close(palisade::CloseCode::NORMAL, "").await.unwrap();
    let summary = running.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(summary.aborted, 0);
}

#[cfg(feature = "macros")]
#[path = "../../../../examples/typed_todo.rs"]
#[allow(dead_code, reason = "the example's `main` is not run here; its `serve` and `client` are")]
#[allow(clippy::duplicate_mod)]
mod typed_todo;

/// `typed_todo`: the typed client against the typed server, over TCP — a reply, a validation
/// refusal with its path, a typed error with its details, and the pushes in order.
#[cfg(feature = "macros")]
#[tokio::test]
async fn typed_todo_client_and_server() {
    let running = typed_todo::serve("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", running.local_addr());
    let seen = typed_todo::client(&url).await.unwrap();
    assert_eq!(
        seen,
        [
            "added #1 \"buy milk\"",
            "refused: validation_failed: the data failed validation: a title has 1 to 200 characters (at data.title)",
            "no item #999",
            "done #1 true",
            "list: 0 item(s)",
            "list: 1 item(s)",
            "list: 1 item(s)",
            "list: 0 item(s)",
        ]
    );
    let summary = running.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(summary.aborted, 0);
}

#[path = "../../../../examples/coming_from_python.rs"]
#[allow(dead_code, reason = "the example's `main` reads the command line; its `run` is called")]
// Both examples declare the examples' shared `common/args.rs`, so this crate holds two copies.
#[allow(clippy::duplicate_mod)]
mod coming_from_python;

/// The Coming from Python chapter's mapping holds: every exception of Python's `websockets`
/// (and simple-websocket's and Starlette's) has its palisade error, close code, status,
/// category, retry class and `match` arm, checked by the example the chapter includes.
#[test]
fn the_coming_from_python_mapping_holds() {
    coming_from_python::run().unwrap();
}

/// Every example in `examples/`: `--help` prints its usage on stdout and exits 0 (without
/// starting anything); an unknown argument exits 2 with an error on stderr that names the
/// argument and points at `--help`.
#[test]
fn every_example_answers_help_and_refuses_unknown_arguments() {
    let dir = examples_dir();
    let names = example_names();
    assert!(names.len() >= 13, "{names:?}");
    for name in &names {
        if name.starts_with("json_") && !cfg!(feature = "json") {
            continue;
        }
        let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.exists(),
            "{} is missing: `cargo test` builds the examples, `cargo test --test interop` alone \
             does not (run `cargo build --examples` first)",
            binary.display()
        );
        let help = run(&binary, "--help");
        assert_eq!(help.status.code(), Some(0), "{name} --help: {help:?}");
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert!(stdout.starts_with(&format!("usage: {name}")), "{name} --help: {stdout}");

        let bogus = run(&binary, "--bogus");
        assert_eq!(bogus.status.code(), Some(2), "{name} --bogus: {bogus:?}");
        let stderr = String::from_utf8_lossy(&bogus.stderr);
        assert!(stderr.contains("unknown argument `--bogus`"), "{name}: {stderr}");
        assert!(stderr.contains(&format!("`{name} --help`")), "{name}: {stderr}");
        assert!(bogus.stdout.is_empty(), "{name} --bogus started anyway");
    }
}

/// Runs `binary arg` with a deadline: an example that ignored the argument and started serving
/// would otherwise never end.
fn run(binary: &Path, arg: &str) -> std::process::Output {
    let mut child = Command::new(binary)
        .arg(arg)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{} {arg} did not end within 20 s", binary.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `target/<profile>/examples`, next to the `deps` directory this test binary runs from.
pub(crate) fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).expect("the test runs from <profile>/deps");
    profile.join("examples")
}

/// The stems of `examples/*.rs`: every example of the workspace.
fn example_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
