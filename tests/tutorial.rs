//! The TensorFlow tutorial model end to end, on synthetic data (the real-data run is
//! the `mnist_softmax` example): first loss, training, stability, errors.

use modelc::model;
use modelc::ndarray::{Array2, ArrayView2};

model! {
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

/// A small separable problem: class k lights up pixels 78k..78k+78.
fn data(n: usize) -> (Array2<f32>, Array2<f32>) {
    let mut x = Array2::<f32>::zeros((n, 784));
    let mut y = Array2::<f32>::zeros((n, 10));
    for i in 0..n {
        let k = (i * 7 + 3) % 10;
        for j in 0..78 {
            x[[i, 78 * k + j]] = ((i + j) % 5) as f32 / 5.0 + 0.2;
        }
        y[[i, k]] = 1.0;
    }
    (x, y)
}

#[test]
fn first_loss_is_ln_10_and_the_loss_falls() {
    let (x, y) = data(100);
    let mut m = SoftmaxRegression::new();
    let first = m.train_step(x.view(), y.view()).unwrap();
    assert!((first - 10f32.ln()).abs() < 1e-6, "first loss {first}");
    let mut last = first;
    for _ in 0..20 {
        last = m.train_step(x.view(), y.view()).unwrap();
    }
    assert!(last < 0.1 * first, "loss went from {first} to {last}");
    assert_eq!(m.accuracy(x.view(), y.view()).unwrap(), 1.0);
    assert_eq!(m.global_step(), 21);
    let p = m.probs(x.view()).unwrap();
    assert_eq!(p.shape(), &[100, 10]);
    for row in p.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn the_stable_rewrite_keeps_the_loss_finite_for_huge_logits() {
    let (x, y) = data(10);
    let mut m = SoftmaxRegression::new();
    // Logits of +-1e4: ln(softmax(z)) would be ln(0) = -inf without the rewrite.
    m.b.assign(&modelc::ndarray::arr1(&[1e4, -1e4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]));
    let loss = m.cross_entropy(x.view(), y.view()).unwrap();
    assert!(loss.is_finite(), "loss {loss}");
    assert!(loss > 1e3, "loss {loss}");
    let (l2, g) = m.compute_gradients(x.view(), y.view()).unwrap();
    assert_eq!(loss, l2);
    assert!(g.w.iter().chain(g.b.iter()).all(|v| v.is_finite()));
    assert!(SoftmaxRegression::explain().contains("ln(softmax(z)) -> log_softmax(z)"));
}

#[test]
fn compute_then_apply_equals_train_step() {
    let (x, y) = data(50);
    let mut a = SoftmaxRegression::with_seed(7);
    let mut b = a.clone();
    let la = a.train_step(x.view(), y.view()).unwrap();
    let (lb, g) = b.compute_gradients(x.view(), y.view()).unwrap();
    b.apply_gradients(&g).unwrap();
    assert_eq!(la, lb);
    assert_eq!(a.w, b.w);
    assert_eq!(a.b, b.b);
    // The in-place form gives the same gradients.
    let mut g2 = SoftmaxRegressionGradients::zeros();
    let l3 = b.compute_gradients_into(x.view(), y.view(), &mut g2).unwrap();
    let (l4, g3) = b.compute_gradients(x.view(), y.view()).unwrap();
    assert_eq!((l3, &g2), (l4, &g3));
}

#[test]
fn gradients_match_finite_differences() {
    let (x, y) = data(20);
    let mut m = SoftmaxRegression::new();
    m.train_step(x.view(), y.view()).unwrap();
    let check = m.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(2e-2), "{check}");
    assert_eq!(check.params.len(), 2);
}

fn snapshot(m: &SoftmaxRegression) -> (Array2<f32>, Vec<f32>, u64) {
    (m.w.clone(), m.b.to_vec(), m.global_step())
}

#[test]
fn a_failed_call_changes_nothing() {
    let (x, y) = data(20);
    let mut m = SoftmaxRegression::new();
    m.train_step(x.view(), y.view()).unwrap();
    let before = snapshot(&m);
    let bad_x = Array2::<f32>::zeros((20, 783));
    let err = m.train_step(bad_x.view(), y.view()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("input `x`") && msg.contains("784") && msg.contains("783"), "{msg}");
    let short_y: ArrayView2<f32> = y.slice(modelc::ndarray::s![..10, ..]);
    let err = m.train_step(x.view(), short_y).unwrap_err().to_string();
    assert!(err.contains("dimension `batch` is 10 here but 20 in input `x`"), "{err}");
    assert!(matches!(m.cross_entropy(bad_x.view(), y.view()), Err(modelc::Error::Shape { input: "x", .. })));
    let mut g = SoftmaxRegressionGradients::zeros();
    g.b = modelc::ndarray::Array1::zeros(9);
    match m.apply_gradients(&g) {
        Err(modelc::Error::GradientShape { mismatches }) => {
            assert_eq!(mismatches.len(), 1);
            assert_eq!((mismatches[0].name, mismatches[0].found.clone()), ("b", vec![9]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(before, snapshot(&m));
}

#[test]
fn introspection() {
    assert_eq!(SoftmaxRegression::PARAMETERS, 7850);
    let m = SoftmaxRegression::new();
    let vars = m.trainable_variables();
    assert_eq!(vars.len(), 2);
    assert_eq!((vars[0].name, vars[0].shape.clone()), ("w", vec![784, 10]));
    let explain = SoftmaxRegression::explain();
    assert!(explain.contains("d cross_entropy / d w = matmul(transpose(x), t1)"), "{explain}");
    assert!(explain.contains("(softmax(matmul(x, w) + b) * rowsum(y) - y) / batch"), "{explain}");
    assert!(SoftmaxRegression::graph_dot().starts_with("digraph"));
    let cost = SoftmaxRegression::cost(100);
    // The forward product alone is 2 * 100 * 784 * 10 FLOPs.
    let probs = cost.fetches.iter().find(|f| f.0 == "probs").unwrap().1;
    assert!(probs >= 2 * 100 * 784 * 10, "{cost}");
    assert!(cost.train_step > 3 * 2 * 100 * 784 * 10 / 2, "{cost}");
    assert!(cost.workspace_bytes > 0);
    assert_eq!(m.learning_rate(), 0.5);
}

#[test]
fn fused_sgd_train_step_matches_compute_then_apply_over_many_steps() {
    let (x, y) = data(64);
    let mut fused = SoftmaxRegression::with_seed(1);
    let mut split = fused.clone();
    for _ in 0..25 {
        let a = fused.train_step(x.view(), y.view()).unwrap();
        let (b, g) = split.compute_gradients(x.view(), y.view()).unwrap();
        split.apply_gradients(&g).unwrap();
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let diff = (&fused.w - &split.w).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
    assert!(diff < 1e-4, "params drifted apart by {diff}");
    assert_eq!(fused.global_step(), split.global_step());
}
