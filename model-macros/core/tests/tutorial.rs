//! Snapshots of the core's output for the tutorial model: `explain()` (the derivation a
//! user reads) and the generated code, pretty-printed. Review a change with
//! `cargo insta review` (or `INSTA_UPDATE=always cargo test` and read the diff).

use quote::quote;

fn tutorial() -> proc_macro2::TokenStream {
    quote! {
        /// Multinomial logistic regression: the TensorFlow 1.x MNIST tutorial model.
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

fn compiled() -> modelc_core::autodiff::Compiled {
    match modelc_core::compile(tutorial()) {
        Ok(c) => c,
        Err(d) => panic!("{:?}", d.messages()),
    }
}

#[test]
fn explain_snapshot() {
    let text = modelc_core::ir::explain::explain_text(&compiled());
    assert!(text.contains("d cross_entropy / d w = matmul(transpose(x), t1)"), "{text}");
    insta::assert_snapshot!("tutorial_explain", text);
}

#[test]
fn expansion_snapshot() {
    let file: syn::File = syn::parse2(modelc_core::emit::model(&compiled())).expect("the expansion parses");
    insta::assert_snapshot!("tutorial_expansion", prettyplease::unparse(&file));
}
