//! The macros' compile-time behaviour: every fixture under `ui/pass` compiles, and every one
//! under `ui/fail` fails with exactly its committed `.stderr` (one mistake per fixture).
//! Re-bless on purpose only: `TRYBUILD=overwrite cargo test -p palisade-macros --test ui`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
