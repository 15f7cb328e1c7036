//! A wrong handler signature is a compile error that says what a handler is: one fixture per
//! mistake in `tests/ui/fail/`, with the compiler's message committed beside it.

#[test]
fn wrong_handler_signatures_fail_to_compile_with_a_useful_message() {
    trybuild::TestCases::new().compile_fail("tests/ui/fail/*.rs");
}
