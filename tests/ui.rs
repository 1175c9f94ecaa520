//! Compile tests for the attribute macros: what must compile, and what must
//! fail with an error on the user's token.
//!
//! The `.stderr` files depend on the compiler's wording; regenerate them
//! with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    // trybuild builds its project with cargo's default dev profile (full
    // debug info), not the workspace's: 36 binaries of ~90 MB and 13 GB of
    // `target/tests/trybuild`. Checking what compiles needs none.
    // SAFETY: the one test of this binary, before it starts any thread.
    unsafe { std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "false") };
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
