//! The `model!` proc macro. A thin shim: it converts the token stream and calls
//! [`modelc_core::expand`], where the whole compiler lives (so that it can be unit
//! tested, benchmarked and fuzzed without a compiler process).

#![warn(missing_docs)]

/// Compiles a model into specialized Rust. Write it as `modelc::model!`, whose page
/// carries the language reference (`docs/model-language.md`) with examples that run;
/// the generated code names `::modelc`, so `modelc` must be a dependency.
#[proc_macro]
pub fn model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    modelc_core::expand(input.into()).into()
}
