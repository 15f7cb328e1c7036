//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies on the stable toolchain, so that every seed, and every crash a fuzzer once found,
//! stays a regression test without libFuzzer. The bodies, and the invariants they check, are
//! the fuzz crate's own: this module includes them rather than restating them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

// The target bodies, shared with the fuzz crate's binaries. They are `pub` for those.
#[allow(unreachable_pub)]
#[path = "../../../../fuzz/src/lib.rs"]
mod targets;

/// A fuzz target's body.
type Target = fn(&[u8]);

/// Each fuzz target, by the name of its corpus directory, and its body. Adding a target is one
/// line here; a corpus directory without a line fails the test.
const TARGETS: &[(&str, Target)] = &[
    ("handshake_request", targets::handshake_request),
    ("handshake_response", targets::handshake_response),
    ("extensions_header", targets::extensions_header),
    ("frame_decoder", targets::frame_decoder),
    ("frame_header", targets::frame_header),
];

#[test]
fn every_corpus_file_replays_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut unreplayed: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", corpus.display()))
        .map(|entry| entry.expect("a readable directory entry").file_name())
        .filter(|name| !TARGETS.iter().any(|(target, _)| name.to_str() == Some(target)))
        .collect();
    unreplayed.sort();
    assert!(unreplayed.is_empty(), "corpora with no entry in TARGETS: {unreplayed:?}");

    let mut failures = Vec::new();
    for (target, run) in TARGETS {
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
