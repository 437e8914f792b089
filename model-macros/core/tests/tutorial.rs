//! The tutorial model through the whole core: explain() and the expansion.

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

#[test]
fn explain_shows_the_fused_gradient() {
    let c = match modelc_core::compile(tutorial()) {
        Ok(c) => c,
        Err(d) => panic!("{:?}", d.messages()),
    };
    let text = modelc_core::ir::explain::explain_text(&c);
    println!("{text}");
    let ts = modelc_core::emit::model(&c);
    let file: syn::File = syn::parse2(ts).unwrap();
    println!("{}", prettyplease::unparse(&file));
}
