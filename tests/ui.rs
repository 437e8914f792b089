//! trybuild UI tests: every mistake in a model is a compile error pointing at the
//! smallest offending tokens (tests/ui/fail/<topic>/<mistake>.rs with its .stderr),
//! and valid models compile and run (tests/ui/pass/*.rs).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*/*.rs");
    // The v2 op families: one file each (tests/ui/fail/v2_<family>.rs).
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
