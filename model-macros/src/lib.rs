//! The `model!` proc macro. A thin shim: it converts the token stream and calls
//! [`modelc_core::expand`], where the whole compiler lives (so that it can be unit
//! tested, benchmarked and fuzzed without a compiler process).

#![warn(missing_docs)]

/// Compiles a model declared in the modelc model language into specialized Rust.
///
/// See the `modelc` crate documentation and `docs/model-language.md` for the language.
#[proc_macro]
pub fn model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    modelc_core::expand(input.into()).into()
}
