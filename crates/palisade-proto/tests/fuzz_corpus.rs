//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies on the stable toolchain, so that every seed, and every crash a fuzzer once found,
//! stays a regression test without libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

// The target bodies, shared with the fuzz crate's binaries. They are `pub` for those.
#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/lib.rs"]
mod targets;

/// A fuzz target's body.
type Target = fn(&[u8]);

/// Each fuzz target, by the name of its corpus directory, and its body. Adding a target is one
/// line here.
const TARGETS: &[(&str, Target)] = &[
    ("handshake_request", targets::handshake_request),
    ("handshake_response", targets::handshake_response),
    ("extensions_header", targets::extensions_header),
];

#[test]
fn every_corpus_file_replays_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
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
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(format!("{target}: {}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "these inputs panicked:\n{}", failures.join("\n"));
}
