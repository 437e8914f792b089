//! The macro never panics, whatever tokens it is given: random token soup, and every
//! truncation and single-token mutation of valid models, go through `expand()` and
//! `check()` under `catch_unwind`.

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::quote;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "struct",
    "pub",
    "input",
    "param",
    "let",
    "output",
    "loss",
    "metric",
    "optimizer",
    "matmul",
    "softmax",
    "sum",
    "mean",
    "axis",
    "keepdims",
    "x",
    "y",
    "w",
    "b",
    "batch",
    "zeros",
    "sgd",
    "adam",
    "learning_rate",
    "frozen",
    "argmax",
    "stop_gradient",
    "pow",
    "true",
    "max",
    "transpose",
    "relu",
    "log_softmax",
    "softmax_cross_entropy",
];
const PUNCTS: &[char] = &[';', ':', ',', '=', '+', '-', '*', '/', '#', '!', '<', '>', '.', '%'];

fn random_tree(rng: &mut Lcg, depth: usize) -> TokenTree {
    match rng.below(if depth > 3 { 4 } else { 6 }) {
        0 | 1 => TokenTree::Ident(Ident::new(WORDS[rng.below(WORDS.len())], Span::call_site())),
        2 => TokenTree::Punct(Punct::new(PUNCTS[rng.below(PUNCTS.len())], Spacing::Alone)),
        3 => match rng.below(4) {
            0 => TokenTree::Literal(Literal::usize_unsuffixed(rng.below(1000))),
            1 => TokenTree::Literal(Literal::f32_unsuffixed(rng.below(1000) as f32 / 7.0)),
            2 => TokenTree::Literal(Literal::usize_unsuffixed(0)),
            _ => TokenTree::Literal(Literal::string("s")),
        },
        _ => {
            let delim = [Delimiter::Brace, Delimiter::Bracket, Delimiter::Parenthesis][rng.below(3)];
            let n = rng.below(6);
            let inner: TokenStream = (0..n).map(|_| random_tree(rng, depth + 1)).collect();
            TokenTree::Group(Group::new(delim, inner))
        }
    }
}

fn must_not_panic(tokens: TokenStream) {
    let text = tokens.to_string();
    let t2 = tokens.clone();
    let result = std::panic::catch_unwind(move || {
        let _ = modelc_core::expand(tokens);
        let _ = modelc_core::check(t2);
    });
    assert!(result.is_ok(), "the compiler panicked on: {text}");
}

fn models() -> Vec<TokenStream> {
    vec![
        quote! {
            pub struct SoftmaxRegression {
                input x: [batch, 784];
                input y: [batch, 10];
                param w: [784, 10] = zeros;
                param b: [10] = zeros;
                let a = softmax(matmul(x, w) + b);
                output probs = a;
                loss cross_entropy = mean(-sum(y * ln(a), axis = 1));
                metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));
                optimizer sgd(learning_rate = 0.5);
            }
        },
        quote! {
            struct Mlp {
                input x: [n, 4];
                input t: [n, 2];
                #[frozen] param s: [4] = ones;
                param w1: [4, 8] = glorot_uniform;
                param b1: [8] = constant(0.1);
                param w2: [8, 2] = he_normal;
                let h = relu(matmul(x * s, w1) + b1);
                let z = matmul(h, w2);
                loss l = mean(sigmoid_cross_entropy(z, t)) + 0.01 * sum(square(w1));
                metric m = mean(max(z, axis = -1, keepdims = true) / (1.0 + abs(z)));
                optimizer adam(learning_rate = 0.01, clip_norm = 1.0, weight_decay = 0.0001);
            }
        },
    ]
}

/// Flattens groups one level so that truncation can cut inside brackets too.
fn truncations(tokens: &TokenStream) -> Vec<TokenStream> {
    let mut out = Vec::new();
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    for i in 0..=trees.len() {
        out.push(trees[..i].iter().cloned().collect());
    }
    // Truncate inside the body group at every position.
    if let Some(TokenTree::Group(body)) = trees.last() {
        let inner: Vec<TokenTree> = body.stream().into_iter().collect();
        for i in 0..=inner.len() {
            let mut t: Vec<TokenTree> = trees[..trees.len() - 1].to_vec();
            t.push(TokenTree::Group(Group::new(body.delimiter(), inner[..i].iter().cloned().collect())));
            out.push(t.into_iter().collect());
        }
    }
    out
}

fn mutations(tokens: &TokenStream, rng: &mut Lcg, count: usize) -> Vec<TokenStream> {
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    let Some(TokenTree::Group(body)) = trees.last() else { return vec![] };
    let inner: Vec<TokenTree> = body.stream().into_iter().collect();
    (0..count)
        .map(|_| {
            let mut m = inner.clone();
            let i = rng.below(m.len());
            match rng.below(3) {
                0 => {
                    m.remove(i);
                }
                1 => m[i] = random_tree(rng, 0),
                _ => m.insert(i, random_tree(rng, 0)),
            }
            let mut t: Vec<TokenTree> = trees[..trees.len() - 1].to_vec();
            t.push(TokenTree::Group(Group::new(body.delimiter(), m.into_iter().collect())));
            t.into_iter().collect()
        })
        .collect()
}

#[test]
fn random_token_soup_never_panics() {
    let mut rng = Lcg(42);
    for _ in 0..1500 {
        let n = rng.below(12);
        let mut tokens: TokenStream = (0..n).map(|_| random_tree(&mut rng, 0)).collect();
        if rng.below(2) == 0 {
            // Most soups should reach the item parser: wrap them in a model shell.
            let body = tokens;
            tokens = quote!(struct M { #body });
        }
        must_not_panic(tokens);
    }
}

#[test]
fn truncated_models_never_panic() {
    for model in models() {
        for t in truncations(&model) {
            must_not_panic(t);
        }
    }
}

#[test]
fn mutated_models_never_panic() {
    let mut rng = Lcg(7);
    for model in models() {
        for t in mutations(&model, &mut rng, 1500) {
            must_not_panic(t);
        }
    }
}
