//! Integration tests of the sans-I/O core, one binary (STYLE.md §5): a deterministic harness,
//! a conformance suite organised like the Autobahn|Testsuite's sections, property tests, and the
//! replay of the fuzz corpora.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod conformance;
mod fuzz_corpus;
mod harness;
mod roundtrip;
