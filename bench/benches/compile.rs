//! What the compiler costs at build time: `modelc_core::expand()` (parse, check,
//! differentiate, simplify, emit) on the tutorial model, on a 20-layer MLP and on the C1
//! "Deep MNIST" CNN of `benches/cnn.rs` (two conv + relu + max_pool stages, dense 1024
//! with dropout, dense 10). Targets: under 20 ms and under 100 ms (issue 5), under 30 ms
//! (issue 18).

use criterion::{criterion_group, criterion_main, Criterion};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

fn tutorial() -> TokenStream {
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
    }
}

/// C1, as `benches/cnn.rs` and `examples/fashion_cnn.rs` declare it.
fn cnn() -> TokenStream {
    quote! {
        pub struct DeepMnist {
            input x: [batch, 28, 28, 1];
            input y: [batch] as u32;
            param k1: [5, 5, 1, 32] = truncated_normal(std = 0.1);
            param b1: [32] = constant(0.1);
            param k2: [5, 5, 32, 64] = truncated_normal(std = 0.1);
            param b2: [64] = constant(0.1);
            param w3: [3136, 1024] = truncated_normal(std = 0.1);
            param b3: [1024] = constant(0.1);
            param w4: [1024, 10] = truncated_normal(std = 0.1);
            param b4: [10] = constant(0.1);
            let h1 = max_pool(relu(conv2d(x, k1, padding = "same") + b1));
            let h2 = max_pool(relu(conv2d(h1, k2, padding = "same") + b2));
            let h3 = dropout(relu(matmul(flatten(h2), w3) + b3), rate = 0.5);
            let logits = matmul(h3, w4) + b4;
            output predicted = argmax(logits, axis = 1);
            loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
            metric accuracy = mean(argmax(logits, axis = 1) == y);
            optimizer sgd(learning_rate = 0.01);
        }
    }
}

/// An MLP with `layers` hidden layers of 64 units.
pub fn deep_mlp(layers: usize) -> TokenStream {
    let mut items = vec![quote!(input x: [batch, 64];), quote!(input y: [batch, 10];)];
    let mut prev = format_ident!("x");
    for i in 0..layers {
        let (w, b, h) = (format_ident!("w{}", i), format_ident!("b{}", i), format_ident!("h{}", i));
        items.push(quote!(param #w: [64, 64] = he_normal;));
        items.push(quote!(param #b: [64] = zeros;));
        items.push(quote!(let #h = relu(matmul(#prev, #w) + #b);));
        prev = h;
    }
    items.push(quote!(param wo: [64, 10] = glorot_uniform;));
    items.push(quote!(param bo: [10] = zeros;));
    items.push(quote!(let z = matmul(#prev, wo) + bo;));
    items.push(quote!(output probs = softmax(z);));
    items.push(quote!(loss l = mean(softmax_cross_entropy(z, y));));
    items.push(quote!(metric accuracy = mean(argmax(z, axis = 1) == argmax(y, axis = 1));));
    items.push(quote!(optimizer adam(learning_rate = 0.001);));
    quote!(pub struct Deep { #(#items)* })
}

fn bench(c: &mut Criterion) {
    let t = tutorial();
    c.bench_function("expand/tutorial", |b| b.iter(|| modelc_core::expand(t.clone())));
    let d = deep_mlp(20);
    c.bench_function("expand/mlp-20-layers", |b| b.iter(|| modelc_core::expand(d.clone())));
    let n = cnn();
    // A typo in the model above would time the error path: make sure it expands.
    assert!(!modelc_core::expand(n.clone()).to_string().contains("compile_error"), "the CNN model does not expand");
    c.bench_function("expand/cnn", |b| b.iter(|| modelc_core::expand(n.clone())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
