//! Running tools from the workspace root, with the command line echoed first so a CI log shows
//! exactly what to run again by hand.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The workspace root: the directory above `xtask/`.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits directly in the workspace root")
        .to_path_buf()
}

/// `cargo ARGS` in the workspace root, using the cargo that runs xtask (`$CARGO`) so that the
/// toolchain is the same one.
pub(crate) fn cargo<I: AsRef<OsStr>>(args: impl IntoIterator<Item = I>) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    tool(program, args)
}

/// `PROGRAM ARGS` in the workspace root.
pub(crate) fn tool<I: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = I>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root());
    cmd
}

/// Whether `cmd` runs and exits with success, with its output discarded: for probing tools.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|status| status.success())
}

/// Runs `cmd` with its output going straight to ours.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    echo(cmd);
    let status = cmd.status();
    check(cmd, status)
}

/// Runs `cmd` and returns its standard output; its standard error goes to ours.
pub(crate) fn stdout(cmd: &mut Command) -> Result<Vec<u8>, String> {
    echo(cmd);
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", line(cmd)))?;
    check(cmd, Ok(output.status))?;
    Ok(output.stdout)
}

/// Runs `cmd`, passing its output through line by line while keeping a copy of both streams,
/// for the callers that read a summary out of it. The copy is returned even when `cmd` fails.
pub(crate) fn run_tee(cmd: &mut Command) -> (Result<(), String>, String) {
    echo(cmd);
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return (Err(format!("cannot run `{}`: {e}", line(cmd))), String::new()),
    };
    let stdout = child.stdout.take().expect("stdout is piped just above");
    let stderr = child.stderr.take().expect("stderr is piped just above");
    // Both pipes must be drained at once, or a child that fills one blocks forever.
    let stderr_copy = std::thread::spawn(move || tee(stderr, std::io::stderr()));
    let mut text = tee(stdout, std::io::stdout());
    text.push_str(&stderr_copy.join().unwrap_or_default());
    let status = child.wait();
    (check(cmd, status), text)
}

/// Copies `from` to `to` a line at a time and returns what went through.
fn tee(from: impl Read, mut to: impl Write) -> String {
    let mut reader = BufReader::new(from);
    let mut text = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Our own output going away (a closed pipe) must not stop the child being drained.
        let _ = to.write_all(&line).and_then(|()| to.flush());
        text.push_str(&String::from_utf8_lossy(&line));
    }
    text
}

/// Prints the command line, as every runner here does before it starts a command.
pub(crate) fn echo(cmd: &Command) {
    println!("$ {}", line(cmd));
}

fn check(cmd: &Command, status: std::io::Result<ExitStatus>) -> Result<(), String> {
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{}` failed ({status})", line(cmd))),
        Err(e) => Err(format!("cannot run `{}`: {e}", line(cmd))),
    }
}

/// The command as a shell line: variables set for it, the program's file name, the arguments.
fn line(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!("{}={:?}", key.to_string_lossy(), value.to_string_lossy()));
        }
    }
    let program = Path::new(cmd.get_program());
    words.push(program.file_name().unwrap_or(program.as_os_str()).to_string_lossy().into_owned());
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
