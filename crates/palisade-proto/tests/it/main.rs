//! Integration tests of the sans-I/O core, one binary (STYLE.md §5): a deterministic harness,
//! a conformance suite organised like the Autobahn|Testsuite's sections, and property tests.

mod conformance;
mod harness;
mod roundtrip;
