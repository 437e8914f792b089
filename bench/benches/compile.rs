//! What the compiler costs at build time: `modelc_core::expand()` (parse, check,
//! differentiate, simplify, emit) on the tutorial model and on a 20-layer MLP.
//! Targets (issue 5): under 20 ms and under 100 ms.

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
