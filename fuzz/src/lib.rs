//! Nothing to use: this crate exists for its test, `tests/random_models.rs`, which runs
//! random models written by `build.rs` (from the generator in `src/gen.rs`) against an
//! independent f64 reference. See `docs/testing.md`.
