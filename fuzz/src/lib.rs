//! The bodies of palisade's fuzz targets, one function per target.
//!
//! The binaries in `fuzz_targets/` call these under libFuzzer. Two stable tests replay the
//! committed corpora (`corpus/<target>/`) through the same functions, so that every seed, and
//! every crash a fuzzer once found, stays a regression test without libFuzzer:
//!
//! - `proto/`: the protocol core's targets, replayed by
//!   `crates/palisade-proto/tests/it/fuzz_corpus.rs`;
//! - `json.rs`: palisade-json's, replayed by `crates/palisade-json/tests/it/fuzz_corpus.rs`.
//!
//! Each test includes its half as a module (a crate's tests may use only what that crate may
//! depend on), and fails when a corpus directory is replayed by neither.
//!
//! To add a target: a function in one half, a file in `fuzz_targets/`, a `[[bin]]` in
//! `Cargo.toml`, a seed directory in `corpus/`, and one line in the replay test's table.

mod json;
mod proto;

pub use json::{json_envelope, typed_dispatch};
pub use proto::{
    connection, deflate_inflate, extensions_header, frame_decoder, frame_header, handshake_request,
    handshake_response,
};
