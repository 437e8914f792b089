//! The modelc compiler as a plain library. The pipeline, in order:
//!
//! 1. [`syntax`]: parse the `model!` body into a syntax tree (every item separately, so
//!    every syntax error is reported);
//! 2. [`lower`]: resolve names, ops and arguments, infer and check every shape, and
//!    lower expressions to the primitive-op graph ([`ir`], [`ops`]);
//! 3. [`simplify`]: algebraic identities, constant folding, stable rewrites;
//! 4. [`autodiff`]: differentiate the loss in reverse mode w.r.t. every trainable param,
//!    building the derivative as more graph nodes; then simplify again;
//! 5. [`emit`]: generate the model's Rust code (or, on error, the errors plus a stub
//!    with the same API, so that the user sees only the real mistakes).
//!
//! [`Diag`](diag::Diag) collects errors; `diag.check()` between stages keeps later stages
//! from ever seeing a broken model. Nothing here panics on user input.

#![warn(missing_docs)]

pub mod autodiff;
pub mod diag;
pub mod emit;
pub mod ir;
pub mod lower;
pub mod model;
pub mod ops;
pub mod shape;
pub mod simplify;
pub mod syntax;

use proc_macro2::TokenStream;

/// Expands a `model!` invocation: the generated code, or compile errors (plus a stub).
pub fn expand(input: TokenStream) -> TokenStream {
    let mut diag = diag::Diag::new();
    let Some(def) = syntax::parse_model(input, &mut diag) else {
        return diag.to_compile_errors();
    };
    let model = lower::lower(&def, &mut diag);
    if diag.check().is_err() {
        return emit::fallback(&def, &model, &diag);
    }
    let compiled = autodiff::compile(model, &mut diag);
    if diag.check().is_err() {
        return emit::fallback(&def, &compiled.model, &diag);
    }
    emit::model(&compiled)
}

/// Like [`expand`], but returns the diagnostics instead of `compile_error!` tokens (for
/// tests and tools).
pub fn check(input: TokenStream) -> diag::Diag {
    let mut diag = diag::Diag::new();
    if let Some(def) = syntax::parse_model(input, &mut diag) {
        let model = lower::lower(&def, &mut diag);
        if diag.check().is_ok() {
            let _ = autodiff::compile(model, &mut diag);
        }
    }
    diag
}

/// Compiles a valid model up to emission (for tests, tools and `explain`).
pub fn compile(input: TokenStream) -> Result<autodiff::Compiled, diag::Diag> {
    let mut diag = diag::Diag::new();
    let Some(def) = syntax::parse_model(input, &mut diag) else { return Err(diag) };
    let model = lower::lower(&def, &mut diag);
    if diag.check().is_err() {
        return Err(diag);
    }
    let compiled = autodiff::compile(model, &mut diag);
    if diag.check().is_err() {
        return Err(diag);
    }
    Ok(compiled)
}
