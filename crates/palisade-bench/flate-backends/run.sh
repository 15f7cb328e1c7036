#!/usr/bin/env bash
# Measures flate2's three backends on the same messages, one build each, then prints the
# markdown table for docs/src/bench/flate-backends.md. zlib-ng needs cmake and a C compiler.
# Pass criterion options to shorten the run, e.g. ./run.sh --warm-up-time 1 --measurement-time 2
set -euo pipefail
cd "$(dirname "$0")"
rm -rf target/criterion
for backend in zlib-rs zlib-ng miniz; do
    cargo bench --features "$backend" --bench backends -- "$@"
done
cargo run --quiet --features zlib-rs --bin table
