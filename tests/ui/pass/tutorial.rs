//! The tutorial model from the language contract compiles and trains.

use modelc::model;
use modelc::ndarray::Array2;

model! {
    /// Multinomial logistic regression: the TensorFlow 1.x MNIST tutorial model.
    pub struct SoftmaxRegression {
        input x: [batch, 784];             // placeholder; `batch` is bound at call time
        input y: [batch, 10];

        param w: [784, 10] = zeros;        // trainable variable
        param b: [10] = zeros;

        let a = softmax(matmul(x, w) + b); // graph nodes; Rust expression syntax

        output probs = a;                                          // fetchable tensor
        loss cross_entropy = mean(-sum(y * ln(a), axis = 1));      // the objective
        metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));

        optimizer sgd(learning_rate = 0.5);
    }
}

fn main() {
    let mut m = SoftmaxRegression::new();
    let x = Array2::<f32>::zeros((8, 784));
    let mut y = Array2::<f32>::zeros((8, 10));
    y.column_mut(3).fill(1.0);
    let first = m.train_step(x.view(), y.view()).unwrap();
    assert!((first - 10f32.ln()).abs() < 1e-5, "first loss {first}");
    let probs = m.probs(x.view()).unwrap();
    assert_eq!(probs.shape(), &[8, 10]);
    let loss = m.cross_entropy(x.view(), y.view()).unwrap();
    assert!(loss < first);
    let acc = m.accuracy(x.view(), y.view()).unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let (l, g) = m.compute_gradients(x.view(), y.view()).unwrap();
    assert_eq!(l, loss);
    m.apply_gradients(&g).unwrap();
    assert_eq!(m.global_step(), 2);
    assert_eq!(SoftmaxRegression::PARAMETERS, 7850);
    assert_eq!(m.learning_rate(), 0.5);
    assert_eq!(m.w.shape(), &[784, 10]);
}
