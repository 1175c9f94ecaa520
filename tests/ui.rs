//! Compile tests for the attribute macros: what must compile, and what must
//! fail with an error on the user's token.
//!
//! The `.stderr` files depend on the compiler's wording; regenerate them
//! with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
