//! `cargo xtask bench --micro`: the criterion benchmarks of the protocol core.

use crate::cmd;

/// The criterion micro benchmarks of the protocol core, each beside its tungstenite or
/// fastwebsockets equivalent and `memcpy`: masking, UTF-8 validation, frame decoding.
pub(super) fn run() -> Result<(), String> {
    cmd::run(&mut cmd::cargo([
        "bench",
        "--package",
        "palisade-proto",
        "--bench",
        "proto",
        "--",
        "--warm-up-time",
        "1",
        "--measurement-time",
        "3",
    ]))
}
