//! The macro never panics, whatever tokens it is given: every input goes through
//! `expand()` and `check()` under `catch_unwind`, and `expand()` must return tokens
//! that parse as Rust items (the generated model, or `compile_error!`s and a stub).
//!
//! The inputs:
//! - the corpus: every `model! { ... }` body of the repository's tests, ui pass cases and
//!   examples (read from the files, so new models join by themselves), plus two written
//!   here; each must expand without a diagnostic (else the corpus is stale);
//! - every truncation of every corpus model, at the top level and inside its body;
//! - mutated models (proptest): deletion, duplication, swaps, replacement of a token by
//!   another of the same model or by one of a vocabulary (every op name of
//!   `lower::OPS`, keywords, initializers, optimizers and their arguments, numbers such
//!   as `0`, `-1`, `1e40`, `u64::MAX`-like and `u128::MAX`-like literals, huge
//!   dimensions), wrapping in and unwrapping of groups, at any depth;
//! - random token streams (proptest), half of them inside a `struct M { ... }` shell;
//! - [`REGRESSIONS`]: every input that once panicked, fixed.
//!
//! Deterministic: proptest runs on a fixed ChaCha seed and writes no regression files.
//! The default runs [`DEFAULT_CASES`] mutated models and as many random streams (a few
//! seconds); `MODELC_FUZZ_CASES=20000 cargo test -q -p modelc-core --test no_panic`
//! runs that many of each (and `MODELC_FUZZ_SEED=<u64>` picks another seed).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use quote::quote;

/// Mutated models and random streams per run without `MODELC_FUZZ_CASES`.
const DEFAULT_CASES: u32 = 1500;

fn cases() -> u32 {
    std::env::var("MODELC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn runner() -> TestRunner {
    let seed: u64 = std::env::var("MODELC_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases: cases(), failure_persistence: None, max_shrink_iters: 4096, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

thread_local! {
    /// Whether this thread is inside [`run`], whose panics are recorded, not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The message and location of the last recorded panic on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records the panics of [`run`] instead of printing
/// them, so that proptest's shrinking does not flood the output; every other panic (a
/// test's own assertion) goes to the default hook.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                return default(info);
            }
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
        }));
    });
}

/// The stack rustc gives the thread that expands proc macros (8 MiB): the core must fit
/// in it. Every test runs its cases on such a thread ([`on_rustc_stack`]).
const RUSTC_STACK: usize = 8 << 20;

/// Runs `f` on a thread with rustc's stack, propagating its panic (a failed test).
fn on_rustc_stack(f: impl FnOnce() + Send + 'static) {
    let joined = std::thread::Builder::new().stack_size(RUSTC_STACK).spawn(f).unwrap().join();
    if let Err(e) = joined {
        std::panic::resume_unwind(e);
    }
}

/// `Err(description)` if `expand` or `check` panics on `tokens`, or if `expand`'s output
/// is not a sequence of Rust items.
fn run(tokens: &TokenStream) -> Result<(), String> {
    quiet_panics();
    let (t1, t2) = (tokens.clone(), tokens.clone());
    QUIET.with(|q| q.set(true));
    let out = std::panic::catch_unwind(move || {
        let out = modelc_core::expand(t1);
        let _ = modelc_core::check(t2);
        out
    });
    QUIET.with(|q| q.set(false));
    let out = match out {
        Ok(out) => out.to_string(),
        Err(_) => {
            let why = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
            return Err(format!("the compiler panicked ({why}) on: {tokens}"));
        }
    };
    // rustc parses the output with a stack that grows; syn recurses on nested
    // expressions, so it gets a large one. (Tokens are not Send: they cross as text.)
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let out = TokenStream::from_str(&out).map_err(|e| format!("expand() gave unlexable text ({e})"))?;
            syn::parse2::<syn::File>(out)
                .map(drop)
                .map_err(|e| format!("expand() gave tokens that are not Rust items ({e})"))
        })
        .unwrap()
        .join()
        .unwrap()
        .map_err(|e| format!("{e} for: {tokens}"))
}

fn must_not_panic(tokens: TokenStream) {
    if let Err(e) = run(&tokens) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------
// The corpus.

/// The workspace root (two levels above this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `model! { ... }` / `modelc::model! { ... }` body in `tokens`, at any depth.
fn find_models(tokens: TokenStream, out: &mut Vec<TokenStream>) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, t) in trees.iter().enumerate() {
        if let TokenTree::Group(g) = t {
            let is_model = i >= 2
                && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '!')
                && matches!(&trees[i - 2], TokenTree::Ident(id) if id == "model");
            if is_model {
                out.push(g.stream());
            } else {
                find_models(g.stream(), out);
            }
        }
    }
}

/// The models of the repository's tests, ui pass cases and examples, and two of our own.
fn corpus() -> Vec<TokenStream> {
    let root = root();
    let mut files = Vec::new();
    for dir in ["tests", "tests/ui/pass", "fuzz/tests", "examples"] {
        let entries = std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("{}: {e}", root.join(dir).display()));
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut models = own_models();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let tokens = TokenStream::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        find_models(tokens, &mut models);
    }
    // Bodies inside `macro_rules!` templates (`$name`) are not models until expanded.
    models.retain(|m| !m.to_string().contains('$'));
    // (gradients/tests/gradients.rs writes its models through a macro_rules! template, so they are
    // not in the corpus; the random models of fuzz/ are not either.)
    assert!(models.len() >= 20, "the corpus shrank to {} models: were the tests moved?", models.len());
    models
}

fn own_models() -> Vec<TokenStream> {
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

#[test]
fn the_corpus_is_valid() {
    on_rustc_stack(|| {
        for m in corpus() {
            let d = modelc_core::check(m.clone());
            assert!(!d.has_errors(), "a corpus model has errors: {m}");
        }
    });
}

// ---------------------------------------------------------------------------------
// The vocabulary.

/// Words a mutation may put anywhere: every op, keywords, initializers, optimizers and
/// their arguments, names the models use.
fn words() -> Vec<&'static str> {
    let mut w: Vec<&'static str> = modelc_core::lower::OPS.to_vec();
    w.extend([
        "struct",
        "pub",
        "input",
        "param",
        "let",
        "output",
        "loss",
        "metric",
        "optimizer",
        "axis",
        "keepdims",
        "true",
        "false",
        "frozen",
        "doc",
        "x",
        "y",
        "w",
        "b",
        "batch",
        "n",
        "self",
        "Self",
        "crate",
        "new",
        "train_step",
        "zeros",
        "ones",
        "constant",
        "uniform",
        "normal",
        "truncated_normal",
        "glorot_uniform",
        "glorot_normal",
        "he_normal",
        "low",
        "high",
        "mean",
        "std",
        "sgd",
        "momentum",
        "adam",
        "rmsprop",
        "adagrad",
        "learning_rate",
        "beta1",
        "beta2",
        "epsilon",
        "rho",
        "centered",
        "nesterov",
        "initial_accumulator_value",
        "clip_norm",
        "weight_decay",
        "schedule",
        "exponential_decay",
        "decay_steps",
        "decay_rate",
    ]);
    w
}

/// Literals a mutation may put anywhere: zero, one, negative, huge, tiny, fractional.
fn literal(i: usize) -> TokenTree {
    const LITS: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "10",
        "784",
        "0.0",
        "0.5",
        "1.0",
        "1e40",
        "1e-45",
        "3.4e38",
        "1e308",
        "1e400",
        "4294967295",
        "4294967296",
        "2147483648",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "340282366920938463463374607431768211455",
        "4611686018427387904",
        "1usize",
        "1.5f32",
        "2f64",
        "'c'",
        "\"s\"",
        "b'x'",
        "true",
    ];
    let s = LITS[i % LITS.len()];
    match s {
        "true" => TokenTree::Ident(Ident::new("true", Span::call_site())),
        _ => TokenStream::from_str(s).unwrap().into_iter().next().unwrap(),
    }
}

const PUNCTS: &[char] =
    &[';', ':', ',', '=', '+', '-', '*', '/', '#', '!', '<', '>', '.', '%', '&', '|', '^', '?', '@'];

/// A vocabulary token: `k` picks the kind and the element.
fn vocab_token(k: u32) -> TokenTree {
    let words = words();
    let i = (k / 4) as usize;
    match k % 4 {
        0 | 1 => TokenTree::Ident(Ident::new(words[i % words.len()], Span::call_site())),
        2 => TokenTree::Punct(Punct::new(
            PUNCTS[i % PUNCTS.len()],
            if i.is_multiple_of(3) { Spacing::Joint } else { Spacing::Alone },
        )),
        _ => literal(i),
    }
}

// ---------------------------------------------------------------------------------
// Mutations, addressed by preorder position over every token tree of a stream.

/// Every leaf token of a stream (the model's own vocabulary).
fn leaves(ts: &TokenStream, out: &mut Vec<TokenTree>) {
    for t in ts.clone() {
        match t {
            TokenTree::Group(g) => leaves(&g.stream(), out),
            other => out.push(other),
        }
    }
}

fn count(ts: &[TokenTree]) -> usize {
    ts.iter()
        .map(|t| match t {
            TokenTree::Group(g) => 1 + count(&g.stream().into_iter().collect::<Vec<_>>()),
            _ => 1,
        })
        .sum()
}

/// The preorder positions (as [`at`] counts them) of every literal.
fn literal_positions(ts: &[TokenTree]) -> Vec<usize> {
    fn walk(ts: &[TokenTree], next: &mut usize, out: &mut Vec<usize>) {
        for t in ts {
            if matches!(t, TokenTree::Literal(_)) {
                out.push(*next);
            }
            *next += 1;
            if let TokenTree::Group(g) = t {
                walk(&g.stream().into_iter().collect::<Vec<_>>(), next, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(ts, &mut 0, &mut out);
    out
}

/// The text of the token at preorder position `pos`, if it is a literal.
fn literal_at(ts: &[TokenTree], pos: usize) -> Option<String> {
    let mut ts = ts.to_vec();
    let (mut pos, mut found) = (pos, None);
    at(&mut ts, &mut pos, &mut |list, i| {
        if let TokenTree::Literal(l) = &list[i] {
            found = Some(l.to_string());
        }
    });
    found
}

/// Applies `f` to the sibling list that holds preorder position `pos` and that
/// position's index in it; returns whether it was found.
fn at(ts: &mut Vec<TokenTree>, pos: &mut usize, f: &mut dyn FnMut(&mut Vec<TokenTree>, usize)) -> bool {
    let mut i = 0;
    while i < ts.len() {
        if *pos == 0 {
            f(ts, i);
            return true;
        }
        *pos -= 1;
        if let TokenTree::Group(g) = &ts[i] {
            let mut inner: Vec<TokenTree> = g.stream().into_iter().collect();
            if at(&mut inner, pos, f) {
                let mut ng = Group::new(g.delimiter(), inner.into_iter().collect());
                ng.set_span(g.span());
                ts[i] = TokenTree::Group(ng);
                return true;
            }
        }
        i += 1;
    }
    false
}

/// One mutation: `(kind, where, what)`.
type Mutation = (u8, u32, u32);

fn mutate(model: &TokenStream, mutations: &[Mutation]) -> TokenStream {
    let mut pool = Vec::new();
    leaves(model, &mut pool);
    let mut ts: Vec<TokenTree> = model.clone().into_iter().collect();
    for &(kind, wh, what) in mutations {
        let n = count(&ts);
        if n == 0 {
            ts.push(vocab_token(what));
            continue;
        }
        let mut pos = wh as usize % n;
        if kind % 10 >= 8 {
            // Aim at a literal (a dimension, a constant, a hyperparameter, an axis): the
            // mutations most likely to keep the model valid and reach the later stages.
            // Kind 9 replaces every equal literal, as changing a dimension everywhere
            // does (`10` -> `4611686018427387904` in `y: [batch, 10]`, `w: [784, 10]`,
            // `b: [10]`), so that the shapes still agree.
            let lits = literal_positions(&ts);
            if !lits.is_empty() {
                let mut pos = lits[wh as usize % lits.len()];
                let mut old = String::new();
                at(&mut ts, &mut pos, &mut |list, i| old = list[i].to_string());
                let targets: Vec<usize> = if kind % 10 == 9 {
                    lits.into_iter().filter(|&p| literal_at(&ts, p).is_some_and(|l| l == old)).collect()
                } else {
                    vec![lits[wh as usize % lits.len()]]
                };
                for p in targets {
                    let mut pos = p;
                    at(&mut ts, &mut pos, &mut |list, i| list[i] = literal(what as usize));
                }
            }
            continue;
        }
        at(&mut ts, &mut pos, &mut |list, i| match kind % 10 {
            0 => {
                list.remove(i);
            }
            1 => {
                let t = list[i].clone();
                list.insert(i, t);
            }
            2 => {
                if i + 1 < list.len() {
                    list.swap(i, i + 1);
                }
            }
            3 => list[i] = pool[what as usize % pool.len()].clone(),
            4 => list[i] = vocab_token(what),
            5 => list.insert(i, vocab_token(what)),
            6 => {
                // Wrap in a group, or unwrap a group into its contents.
                if let TokenTree::Group(g) = &list[i] {
                    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                    list.splice(i..=i, inner);
                } else {
                    let delim = [Delimiter::Parenthesis, Delimiter::Bracket, Delimiter::Brace, Delimiter::None]
                        [what as usize % 4];
                    list[i] = TokenTree::Group(Group::new(delim, list[i].clone().into()));
                }
            }
            _ => {
                // Truncate the list here.
                list.truncate(i);
            }
        });
    }
    ts.into_iter().collect()
}

/// Random token streams from a stack machine: open a group, close one, or a leaf.
fn random_stream(codes: &[u32]) -> TokenStream {
    let mut stack: Vec<(Delimiter, Vec<TokenTree>)> = vec![(Delimiter::None, Vec::new())];
    for &c in codes {
        match c % 10 {
            0 if stack.len() < 6 => stack
                .push(([Delimiter::Brace, Delimiter::Bracket, Delimiter::Parenthesis][(c / 10) as usize % 3], vec![])),
            1 if stack.len() > 1 => {
                let (d, inner) = stack.pop().unwrap();
                stack.last_mut().unwrap().1.push(TokenTree::Group(Group::new(d, inner.into_iter().collect())));
            }
            _ => stack.last_mut().unwrap().1.push(vocab_token(c / 10)),
        }
    }
    while stack.len() > 1 {
        let (d, inner) = stack.pop().unwrap();
        stack.last_mut().unwrap().1.push(TokenTree::Group(Group::new(d, inner.into_iter().collect())));
    }
    stack.pop().unwrap().1.into_iter().collect()
}

// ---------------------------------------------------------------------------------
// The tests.

#[test]
fn truncated_models_never_panic() {
    on_rustc_stack(|| {
        let mut n = 0;
        for model in corpus() {
            let trees: Vec<TokenTree> = model.clone().into_iter().collect();
            for i in 0..=trees.len() {
                must_not_panic(trees[..i].iter().cloned().collect());
                n += 1;
            }
            // Inside the body's braces at every position.
            if let Some(TokenTree::Group(body)) = trees.last() {
                let inner: Vec<TokenTree> = body.stream().into_iter().collect();
                for i in 0..=inner.len() {
                    let mut t: Vec<TokenTree> = trees[..trees.len() - 1].to_vec();
                    t.push(TokenTree::Group(Group::new(body.delimiter(), inner[..i].iter().cloned().collect())));
                    must_not_panic(t.into_iter().collect());
                    n += 1;
                }
            }
        }
        eprintln!("truncated_models_never_panic: {n} cases");
    });
}

#[test]
fn mutated_models_never_panic() {
    on_rustc_stack(|| {
        let models = corpus();
        let strategy = (0..models.len(), proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 1..5));
        let result = runner().run(&strategy, |(m, muts)| {
            let tokens = mutate(&models[m], &muts);
            run(&tokens).map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        eprintln!("mutated_models_never_panic: {} cases over {} models", cases(), models.len());
    });
}

#[test]
fn random_token_streams_never_panic() {
    on_rustc_stack(|| {
        let strategy = (any::<bool>(), proptest::collection::vec(any::<u32>(), 0..60));
        let result = runner().run(&strategy, |(shell, codes)| {
            let body = random_stream(&codes);
            let tokens = if shell { quote!(struct M { #body }) } else { body };
            run(&tokens).map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        eprintln!("random_token_streams_never_panic: {} cases", cases());
    });
}

/// Inputs that once panicked (each names what it broke), kept as fixed cases.
const REGRESSIONS: &[&str] = &[
    // 2^64 scalars in one param: "attempt to multiply with overflow" counting them.
    "struct M { param w: [4294967296, 4294967296] = zeros; loss l = sum(w); optimizer adam(learning_rate = 0.1); }",
    "struct M { param w: [4611686018427387904, 4611686018427387904] = zeros; loss l = sum(w); optimizer sgd(learning_rate = 0.1); }",
    // Nine params of 2^61 - 1 scalars: their sum overflows `usize`.
    "struct M { param a: [2305843009213693951] = zeros; param b: [2305843009213693951] = zeros; \
     param c: [2305843009213693951] = zeros; param d: [2305843009213693951] = zeros; \
     param e: [2305843009213693951] = zeros; param f: [2305843009213693951] = zeros; \
     param g: [2305843009213693951] = zeros; param h: [2305843009213693951] = zeros; \
     param i: [2305843009213693951] = zeros; \
     loss l = sum(a) + sum(b) + sum(c) + sum(d) + sum(e) + sum(f) + sum(g) + sum(h) + sum(i); \
     optimizer adam(learning_rate = 0.1); }",
];

#[test]
fn former_panics_stay_fixed() {
    on_rustc_stack(|| {
        for src in REGRESSIONS {
            must_not_panic(TokenStream::from_str(src).unwrap());
        }
    });
}

/// `MODELC_FUZZ_FILE=path`: every line of the file as one input (to try candidates by
/// hand); every failure is listed, not only the first.
#[test]
fn inputs_from_a_file_never_panic() {
    on_rustc_stack(|| {
        let Ok(path) = std::env::var("MODELC_FUZZ_FILE") else { return };
        let text = std::fs::read_to_string(&path).unwrap();
        let failures: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| run(&TokenStream::from_str(l).unwrap()).err())
            .collect();
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    });
}

/// How deep the deep models go. The macro users run in a debug build is unoptimized
/// (cargo's `build-override` default), and so is this test (the root `Cargo.toml`): there
/// 1000 nested parentheses overflowed the 8 MiB stack before the nesting limit
/// (`modelc_core::lower::MAX_NESTING`, 128) and 500 fit. Long chains are lowered,
/// fused and printed without recursion per term, so they go far past it.
const LONG: usize = 2000;

/// A model that wraps `expr` as its loss.
fn with_loss(expr: &str) -> String {
    format!("struct M {{ param w: [3] = zeros; loss l = sum({expr}); optimizer sgd(learning_rate = 0.1); }}")
}

/// Deep models expand on rustc's stack (a stack overflow is an abort that takes rustc
/// down, worse than a panic): long chains of lets, of sums and of products are valid;
/// nesting past the limit (brackets, prefix operators, calls) is one spanned error.
#[test]
fn deep_models_fit_in_rustc_stack() {
    on_rustc_stack(|| {
        let max = modelc_core::lower::MAX_NESTING;
        let lets: String = (0..LONG).map(|i| format!("let a{} = a{i} * 1.0001 + 0.5; ", i + 1)).collect();
        let chain = format!(
            "struct M {{ input x: [b, 3]; param w: [3, 2] = zeros; let a0 = matmul(x, w); {lets} \
             loss l = mean(a{LONG}); optimizer sgd(learning_rate = 0.1); }}"
        );
        let products: String = (0..LONG / 10).map(|i| format!("let a{} = matmul(a{i}, v); ", i + 1)).collect();
        let products = format!(
            "struct M {{ input x: [b, 3]; param v: [3, 3] = zeros; let a0 = x; {products} \
             loss l = mean(a{}); optimizer sgd(learning_rate = 0.1); }}",
            LONG / 10
        );
        // Just inside the limit: `sum(` and the struct's braces are two of the brackets.
        let inside = max - 3;
        let valid = [
            chain,
            products,
            with_loss(&vec!["w"; LONG].join(" + ")),
            with_loss(&vec!["w"; LONG].join(" * ")),
            with_loss(&format!("{}w{}", "(".repeat(inside), " + 1.0)".repeat(inside))),
            with_loss(&format!("{}w{}", "-(".repeat(inside), ")".repeat(inside))),
            with_loss(&format!("{}w", "-".repeat(inside))),
            with_loss(&format!("{}w{}", "exp(".repeat(inside), ")".repeat(inside))),
        ];
        for src in valid {
            let tokens = TokenStream::from_str(&src).unwrap();
            let d = modelc_core::check(tokens.clone());
            assert!(!d.has_errors(), "a deep model is valid: {:?}", d.messages());
            must_not_panic(tokens);
        }
        let deep = 10 * max;
        let brackets = format!("brackets nested more than {max} deep");
        let operators = format!("more than {max} operators in a row");
        let too_deep = [
            (with_loss(&format!("{}w{}", "(".repeat(deep), " + 1.0)".repeat(deep))), &brackets),
            (with_loss(&format!("{}w{}", "exp(".repeat(deep), ")".repeat(deep))), &brackets),
            (with_loss(&format!("{}w{}", "-(".repeat(deep), ")".repeat(deep))), &brackets),
            (with_loss(&format!("{}w", "-".repeat(deep))), &operators),
            (with_loss(&format!("{}w", "- ".repeat(max + 1))), &operators),
        ];
        for (src, want) in too_deep {
            let tokens = TokenStream::from_str(&src).unwrap();
            let d = modelc_core::check(tokens.clone());
            assert_eq!(d.messages().len(), 1, "one error: {:?}", d.messages());
            assert!(d.messages()[0].contains(want.as_str()), "{:?}", d.messages());
            must_not_panic(tokens);
        }
    });
}
