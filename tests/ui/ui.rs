//! Compile errors (trybuild): every mistake in a model is a compile error pointing at the
//! smallest offending tokens. `fail/<topic>.rs` holds one `model!` per mistake (several
//! blocks in a file: the macro reports every error of each), and `fail/<topic>.stderr`
//! every message with its span, so that the whole directory is one `cargo check` of a few
//! files instead of one build per mistake. New cases: docs/testing.md, "Compile errors".
//!
//! The valid models (`pass/*.rs`) are not here: they are test targets of this crate of
//! their own (`harness = false`, see Cargo.toml), built with the workspace's other tests.
//!
//! `TRYBUILD=overwrite cargo test -q -p modelc-ui --test ui` rewrites the snapshots;
//! `MODELC_UI_VERBOSE=1` shows the `Compiling ...` lines of trybuild's own cargo.

#[test]
fn compile_errors() {
    // trybuild's first cargo run (building modelc and its dependencies for the cases)
    // inherits this process's output and prints a line per crate; `-q` on the outer
    // cargo does not reach it, the config variable does.
    if std::env::var_os("MODELC_UI_VERBOSE").is_none() {
        std::env::set_var("CARGO_TERM_QUIET", "true");
    }
    trybuild::TestCases::new().compile_fail("fail/*.rs");
}
