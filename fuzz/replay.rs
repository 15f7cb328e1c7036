//! Replays committed fuzz corpora (`fuzz/corpus/<target>/`) through the targets' bodies on the
//! stable toolchain, shared by the replay tests of palisade-proto and palisade-json (each
//! includes this file with `#[path]`, next to its half of `fuzz/src/`). Not part of the fuzz
//! crate itself.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// A fuzz target's body.
pub(crate) type Target = fn(&[u8]);

/// Replays every file of every corpus in `targets` (target name, body), and fails on the first
/// corpus directory that is neither in `targets` nor in `elsewhere` (the targets the other
/// replay test runs), so that no corpus goes unreplayed.
pub(crate) fn replay(fuzz_dir: &Path, targets: &[(&str, Target)], elsewhere: &[&str]) {
    let corpus = fuzz_dir.join("corpus");
    let mut unreplayed: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", corpus.display()))
        .map(|entry| entry.expect("a readable directory entry").file_name())
        .filter(|name| {
            let name = name.to_str().unwrap_or_default();
            !targets.iter().any(|(target, _)| *target == name) && !elsewhere.contains(&name)
        })
        .collect();
    unreplayed.sort();
    assert!(unreplayed.is_empty(), "corpora no replay test knows: {unreplayed:?}");

    let mut failures = Vec::new();
    for (target, run) in targets {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus of {target} is empty");
        for file in files {
            let data = std::fs::read(&file).expect("a readable corpus file");
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{target}: {}: {message}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "these inputs failed:\n{}", failures.join("\n"));
}
