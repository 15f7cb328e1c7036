//! Replays the committed fuzz corpora of the protocol core's targets (`fuzz/corpus/<target>/`)
//! through the targets' bodies on the stable toolchain, so that every seed, and every crash a
//! fuzzer once found, stays a regression test without libFuzzer. The bodies, and the
//! invariants they check, are the fuzz crate's own: this module includes them rather than
//! restating them.

use std::path::Path;

// The target bodies, shared with the fuzz crate's binaries. They are `pub` for those.
#[allow(unreachable_pub)]
#[path = "../../../../fuzz/src/proto/mod.rs"]
mod targets;

#[path = "../../../../fuzz/replay.rs"]
mod replay;

/// Each fuzz target on the core, by the name of its corpus directory, and its body. Adding a
/// target is one line here; a corpus directory no replay test knows fails the test.
const TARGETS: &[(&str, replay::Target)] = &[
    ("handshake_request", targets::handshake_request),
    ("handshake_response", targets::handshake_response),
    ("extensions_header", targets::extensions_header),
    ("frame_decoder", targets::frame_decoder),
    ("frame_header", targets::frame_header),
    ("deflate_inflate", targets::deflate_inflate),
    ("connection", targets::connection),
];

/// The targets on palisade-json, replayed by `crates/palisade-json/tests/it/fuzz_corpus.rs`
/// (this crate's tests cannot depend on palisade-json).
const ELSEWHERE: &[&str] = &["json_envelope", "typed_dispatch"];

#[test]
fn every_corpus_file_replays_without_panicking() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    replay::replay(&fuzz, TARGETS, ELSEWHERE);
}
