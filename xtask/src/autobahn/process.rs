//! Child processes that are always bounded in time and always reaped: a [`Process`] that goes out
//! of scope while still running is killed by its PID, so an early return or a panic in the
//! harness never leaves a server listening behind it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;

/// How often a waiting loop looks at its child.
const POLL: Duration = Duration::from_millis(100);

/// A running child, known by the name the log gives it.
#[derive(Debug)]
pub(super) struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Starts `command` after echoing its command line.
    pub(super) fn spawn(name: &str, command: &mut Command) -> Result<Self, String> {
        cmd::echo(command);
        let child = command.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    /// Starts `command` with both its output streams going to the file `log` (created anew).
    pub(super) fn spawn_logged(
        name: &str,
        command: &mut Command,
        log: &Path,
    ) -> Result<Self, String> {
        let file =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let copy = file.try_clone().map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        Self::spawn(name, command.stdin(Stdio::null()).stdout(file).stderr(copy))
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the child has exited, without waiting.
    pub(super) fn exited(&mut self) -> Result<Option<ExitStatus>, String> {
        self.child.try_wait().map_err(|e| format!("cannot wait for {}: {e}", self.name))
    }

    /// Waits for the child to exit until `deadline`, calling `tick` every `every` meanwhile (to
    /// report progress). `None` means the deadline passed first; the child is still running.
    pub(super) fn wait_until(
        &mut self,
        deadline: Instant,
        every: Duration,
        mut tick: impl FnMut(),
    ) -> Result<Option<ExitStatus>, String> {
        let mut next_tick = Instant::now() + every;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now >= next_tick {
                tick();
                next_tick = now + every;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Asks the child to stop with SIGTERM, then kills it with SIGKILL if it has not exited
    /// within `grace`. Returns its exit status, and whether the SIGKILL was needed.
    pub(super) fn stop(&mut self, grace: Duration) -> Result<(ExitStatus, bool), String> {
        if let Some(status) = self.exited()? {
            return Ok((status, false));
        }
        // std has no SIGTERM, and xtask takes no libc dependency for one call: kill(1) by PID.
        let pid = self.child.id().to_string();
        if !cmd::succeeds(Command::new("kill").args(["-TERM", &pid])) {
            println!("autobahn: `kill -TERM {pid}` failed; killing {} instead", self.name);
        }
        if let Some(status) = self.wait_until(Instant::now() + grace, grace, || {})? {
            return Ok((status, false));
        }
        println!(
            "autobahn: {} (pid {pid}) still running {}s after SIGTERM: killing it",
            self.name,
            grace.as_secs()
        );
        Ok((self.kill()?, true))
    }

    /// Kills the child with SIGKILL and reaps it.
    pub(super) fn kill(&mut self) -> Result<ExitStatus, String> {
        if let Some(status) = self.exited()? {
            return Ok(status);
        }
        // An error here means it exited between the two calls; `wait` below tells.
        let _ = self.child.kill();
        self.child.wait().map_err(|e| format!("cannot wait for {}: {e}", self.name))
    }

    /// Takes the child's standard output, when it was piped.
    pub(super) fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            println!("autobahn: killing {} (pid {})", self.name, self.child.id());
            let _ = self.kill();
        }
    }
}

/// Runs `command` in the foreground (its output going to ours) and kills it if it is still
/// running at `deadline`.
pub(super) fn run_until(
    name: &str,
    command: &mut Command,
    deadline: Instant,
) -> Result<(), String> {
    let mut process = Process::spawn(name, command.stdin(Stdio::null()))?;
    match process.wait_until(deadline, Duration::from_secs(60), || {
        println!("autobahn: still waiting for {name}");
    })? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("{name} failed ({status})")),
        None => {
            process.kill()?;
            Err(format!("{name} did not finish in time and was killed"))
        }
    }
}

/// The last `lines` lines of the file at `path`, for showing a log after a failure.
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read(path) else {
        return format!("({} cannot be read)", path.display());
    };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut shown = format!("last lines of {}:\n", path.display());
    for line in &all[start..] {
        shown.push_str("    | ");
        // wstest's list of cases is one very long line.
        match line.char_indices().nth(300) {
            Some((cut, _)) => shown.push_str(&format!("{}…", &line[..cut])),
            None => shown.push_str(line),
        }
        shown.push('\n');
    }
    shown
}
