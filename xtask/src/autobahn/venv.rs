//! The Python 2.7 virtualenv that holds the Autobahn|Testsuite, in `target/autobahn-venv`.
//!
//! The suite was never ported to Python 3, so it needs a Python 2.7: pyenv's, which the project's
//! machines and CI have in `~/.pyenv/versions/2.7.18`. Its pip is old but can install
//! `virtualenv<20.22` (the last line that still creates Python 2 environments); that goes into a
//! scratch directory with `pip install --target` — pyenv's own Python is never modified — and
//! makes the virtualenv, into which pip installs `autobahn/requirements.txt`, every version pinned.
//!
//! A stamp file in the virtualenv records what was installed. While it matches the requirements
//! the virtualenv is reused at once; when the requirements change, the virtualenv is made anew.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::process;
use crate::cmd;

/// The virtualenv release that makes the environment: 20.15.1 is the newest that runs on 2.7.
const VIRTUALENV: &str = "virtualenv==20.15.1";
/// The pinned packages, relative to the workspace root.
pub(super) const REQUIREMENTS: &str = "autobahn/requirements.txt";
/// Written last, so that an interrupted install is redone rather than trusted.
const STAMP: &str = "palisade-installed.txt";

/// A ready virtualenv.
#[derive(Debug)]
pub(super) struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The virtualenv's Python.
    pub(super) fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// The `wstest` script, which [`Self::python`] runs.
    pub(super) fn wstest(&self) -> PathBuf {
        self.dir.join("bin/wstest")
    }
}

/// Makes the virtualenv under `target` unless an up-to-date one is there, giving up at
/// `deadline`.
pub(super) fn ensure(target: &Path, deadline: Instant) -> Result<Venv, String> {
    let requirements_path = cmd::root().join(REQUIREMENTS);
    let requirements = std::fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let venv = Venv { dir: target.join("autobahn-venv") };
    let stamp = format!("{VIRTUALENV}\n{requirements}");
    let installed = std::fs::read_to_string(venv.dir.join(STAMP)).ok();
    if installed.as_deref() == Some(stamp.as_str()) && venv.wstest().is_file() {
        println!("autobahn: reusing {} (matches {REQUIREMENTS})", venv.dir.display());
        return Ok(venv);
    }

    let python = python2()?;
    let started = Instant::now();
    println!(
        "autobahn: making {} with {} ({VIRTUALENV}), then installing from {REQUIREMENTS}: {}",
        venv.dir.display(),
        python.display(),
        pins(&requirements).join(" ")
    );
    let bootstrap = target.join("autobahn-venv-bootstrap");
    for dir in [&venv.dir, &bootstrap] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
        }
    }
    let pip_install =
        ["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"];
    process::run_until(
        "pip install virtualenv",
        Command::new(&python).args(pip_install).arg("--target").arg(&bootstrap).arg(VIRTUALENV),
        deadline,
    )?;
    process::run_until(
        "virtualenv",
        Command::new(&python)
            .args(["-m", "virtualenv", "--no-download", "--no-periodic-update", "--app-data"])
            .arg(bootstrap.join("app-data"))
            .arg(&venv.dir)
            .env("PYTHONPATH", &bootstrap),
        deadline,
    )?;
    process::run_until(
        "pip install autobahntestsuite",
        Command::new(venv.python()).args(pip_install).arg("-r").arg(&requirements_path),
        deadline,
    )?;
    // The seed packages were copied into the virtualenv; the bootstrap is no longer needed.
    std::fs::remove_dir_all(&bootstrap)
        .map_err(|e| format!("cannot remove {}: {e}", bootstrap.display()))?;
    if !venv.wstest().is_file() {
        return Err(format!("{} is missing after the install", venv.wstest().display()));
    }
    std::fs::write(venv.dir.join(STAMP), stamp)
        .map_err(|e| format!("cannot write {}: {e}", venv.dir.join(STAMP).display()))?;
    println!(
        "autobahn: virtualenv ready in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        venv.dir.display()
    );
    Ok(venv)
}

/// The `name==version` lines of a requirements file.
fn pins(requirements: &str) -> Vec<&str> {
    requirements
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .collect()
}

/// Finds a Python 2.7: `$PALISADE_PYTHON2`, else the newest 2.7 under pyenv's root, else
/// `python2.7` on the `PATH`.
fn python2() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os("PALISADE_PYTHON2") {
        return Ok(python.into());
    }
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    if let Some(versions) = pyenv_root.map(|root| root.join("versions")) {
        let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(&versions)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let version: Vec<u32> =
                    name.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
                let python = entry.path().join("bin/python");
                (version.starts_with(&[2, 7]) && python.is_file()).then_some((version, python))
            })
            .collect();
        found.sort();
        if let Some((_, python)) = found.pop() {
            return Ok(python);
        }
    }
    if cmd::succeeds(Command::new("python2.7").arg("--version")) {
        return Ok("python2.7".into());
    }
    Err("no Python 2.7 found, which the Autobahn testsuite needs: the project's machines have \
         pyenv's in ~/.pyenv/versions/2.7.18; elsewhere `pyenv install 2.7.18`, or point \
         PALISADE_PYTHON2 at a python2.7"
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_skip_comments_and_blank_lines() {
        let text = "# The suite\n\nautobahntestsuite==25.10.1\nsix==1.16.0  # for py2\n";
        assert_eq!(pins(text), ["autobahntestsuite==25.10.1", "six==1.16.0"]);
    }

    #[test]
    fn the_committed_requirements_pin_every_package() {
        let text = std::fs::read_to_string(cmd::root().join(REQUIREMENTS)).unwrap();
        let pins = pins(&text);
        assert!(pins.iter().any(|pin| pin.starts_with("autobahntestsuite==")));
        for pin in pins {
            assert!(pin.contains("=="), "`{pin}` in {REQUIREMENTS} is not pinned");
        }
    }
}
