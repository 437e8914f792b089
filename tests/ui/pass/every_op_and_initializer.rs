//! Every op of the language and every initializer, in one model that trains.

use modelc::model;
use modelc::ndarray::{Array1, Array2};

model! {
    pub struct Everything {
        input x: [batch, 4];
        input y: [batch, 3];
        input t: [batch, 3];

        param w_zeros: [4, 3] = zeros;
        param w_ones: [4, 3] = ones;
        param w_const: [3] = constant(0.5);
        param w_uniform: [4, 3] = uniform(low = -0.1, high = 0.1);
        param w_normal: [4, 3] = normal(mean = 0.0, std = 0.1);
        param w_trunc: [4, 3] = truncated_normal(std = 0.1);
        param w_glorot_u: [4, 3] = glorot_uniform;
        param w_glorot_n: [3, 4] = glorot_normal;
        param w_he: [4, 3] = he_normal;

        let h = matmul(x, w_zeros + w_ones + w_uniform + w_normal + w_trunc + w_glorot_u + w_he)
            + matmul(x, transpose(w_glorot_n)) + w_const;
        let e = exp(h) / 100.0 + ln(abs(h) + 1.0) + log(square(h) + 1.0) + sqrt(abs(h) + 1.0);
        let f = relu(h) + sigmoid(h) + tanh(h) + softplus(h) + pow(h, 3) * 0.01;
        let g = maximum(e, f) - minimum(e, f) + stop_gradient(h) * 0.0;
        let m = max(g, axis = 1, keepdims = true) + mean(g, axis = -1, keepdims = true) + sum(g, axis = 1, keepdims = true);
        let z = g - m * 0.1;

        output probs = softmax(z);
        output log_probs = log_softmax(z, axis = 1);
        output classes = argmax(z, axis = 1);
        output row_max = max(z, axis = 1);
        output total = sum(z) + mean(z);
        loss l = mean(softmax_cross_entropy(z, y)) + mean(sigmoid_cross_entropy(-z, t)) + 1.0e-3 * sum(square(h));
        metric accuracy = mean(argmax(z, axis = 1) == argmax(y, axis = 1));

        optimizer adam(learning_rate = 0.01);
    }
}

fn main() {
    let mut m = Everything::with_seed(42);
    let mut x = Array2::<f32>::zeros((6, 4));
    let mut y = Array2::<f32>::zeros((6, 3));
    for i in 0..6 {
        x[[i, i % 4]] = 1.0;
        y[[i, i % 3]] = 1.0;
    }
    let t = y.clone();
    let first = m.train_step(x.view(), y.view(), t.view()).unwrap();
    assert!(first.is_finite(), "first loss {first}");
    for _ in 0..5 {
        let l = m.train_step(x.view(), y.view(), t.view()).unwrap();
        assert!(l.is_finite());
    }
    let probs: Array2<f32> = m.probs(x.view()).unwrap();
    for row in probs.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-4);
    }
    let log_probs: Array2<f32> = m.log_probs(x.view()).unwrap();
    assert_eq!(log_probs.shape(), &[6, 3]);
    let classes: Array1<u32> = m.classes(x.view()).unwrap();
    assert!(classes.iter().all(|&c| c < 3));
    let row_max: Array1<f32> = m.row_max(x.view()).unwrap();
    assert_eq!(row_max.len(), 6);
    // A scalar output is a 0-d array.
    assert!(m.total(x.view()).unwrap().into_scalar().is_finite());
    let acc = m.accuracy(x.view(), y.view()).unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let check = m.check_gradients(x.view(), y.view(), t.view()).unwrap();
    assert_eq!(check.params.len(), 9);
    // The check must pass, not only run: every param probed in full (12 scalars, 3 for
    // w_const) and within 1e-4 (measured: 1.5e-5 absolute, the f32 loss's rounding over
    // the step 1e-2; a wrong derivative rule errs by the gradient's size, ~1e-3 here).
    assert!(check.loss.is_finite(), "{check}");
    for p in &check.params {
        let len = if p.name == "w_const" { 3 } else { 12 };
        assert_eq!(p.probed, len, "{check}");
    }
    assert!(check.passes(1e-4), "the gradient check failed:\n{check}");
    assert_eq!(m.w_const.len(), 3);
    assert!(m.w_ones.iter().all(|&v| v.is_finite()));
}
