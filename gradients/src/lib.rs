//! Nothing to use: this crate exists for its test, `tests/gradients.rs`, which checks
//! every op's gradient rule against f64 finite differences of an f64 loss. It is a crate
//! of its own, apart from `fuzz/`, because it is the one test whose run needs optimized
//! code (its f64 reference and finite differences: 15 s at `opt-level = 1`, over 200 s
//! at 0), while the fuzz crate's tests build 3-10x faster at 0 and still run in seconds
//! (the root `Cargo.toml`'s profile section). See `docs/testing.md`.
