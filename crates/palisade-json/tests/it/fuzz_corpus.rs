//! Replays the committed fuzz corpora of palisade-json's targets (`fuzz/corpus/<target>/`)
//! through the targets' bodies on the stable toolchain, as palisade-proto's test does for the
//! core's: the envelope (`json_envelope`) and the typed dispatch (`typed_dispatch`). The
//! bodies, and the invariants they check, are the fuzz crate's own.

use std::path::Path;

// The target bodies, shared with the fuzz crate's binaries. They are `pub` for those.
#[allow(unreachable_pub)]
#[path = "../../../../fuzz/src/json.rs"]
mod targets;

#[path = "../../../../fuzz/replay.rs"]
mod replay;

/// Each fuzz target on palisade-json, by the name of its corpus directory, and its body.
const TARGETS: &[(&str, replay::Target)] =
    &[("json_envelope", targets::json_envelope), ("typed_dispatch", targets::typed_dispatch)];

/// The core's targets, replayed by `crates/palisade-proto/tests/it/fuzz_corpus.rs`.
const ELSEWHERE: &[&str] = &[
    "handshake_request",
    "handshake_response",
    "extensions_header",
    "frame_decoder",
    "frame_header",
    "deflate_inflate",
    "connection",
];

#[test]
fn every_corpus_file_replays_without_panicking() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    replay::replay(&fuzz, TARGETS, ELSEWHERE);
}
