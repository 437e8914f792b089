//! The diagnostics sink threaded through every stage of the compiler.
//!
//! Checks record an error and carry on, so that one expansion reports every mistake in
//! a model; [`Diag::check`] between stages stops the pipeline before a later stage can
//! see a broken model (serde's `Ctxt` pattern).

use proc_macro2::{Span, TokenStream};

/// The marker of a stage that recorded errors (they are in the [`Diag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// Collected compile errors.
#[derive(Default)]
pub struct Diag {
    errors: Vec<syn::Error>,
}

impl Diag {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Span, message: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records an error spanning all of `tokens` (first to last token, also on stable).
    pub fn spanned(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error produced by syn.
    pub fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// Whether any error has been recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The number of errors recorded.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether no error has been recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Err(Failed)` if any error was recorded: the stage boundary.
    pub fn check(&self) -> Result<(), Failed> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Failed)
        }
    }

    /// The messages recorded so far (for tests).
    pub fn messages(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.to_string()).collect()
    }

    /// The recorded errors (for tests that check spans).
    pub fn errors(&self) -> &[syn::Error] {
        &self.errors
    }

    /// Every error as a `compile_error!` invocation.
    pub fn to_compile_errors(&self) -> TokenStream {
        self.errors.iter().map(syn::Error::to_compile_error).collect()
    }
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a
/// plausible typo ("did you mean `softmax`?").
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = name.chars().count().div_ceil(3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, c)| d <= limit && d < c.chars().count().max(name.chars().count()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// ", did you mean `x`?" or the empty string.
pub fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(name, candidates) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("softmx", ["softmax", "sigmoid"]), Some("softmax"));
        assert_eq!(did_you_mean("matmull", ["matmul"]), Some("matmul"));
        assert_eq!(did_you_mean("zzz", ["softmax", "sigmoid"]), None);
        assert_eq!(did_you_mean("x", ["w"]), None);
    }
}
