//! Every differentiable op's derivative against central finite differences, over
//! broadcasting, axes, negative axes and `keepdims`: property tests on random batch
//! sizes, values and initial params (with a deterministic RNG, so CI is reproducible).
//!
//! Each model's loss is `sum(c * f(...))` with random weights `c`, so that no gradient
//! is trivially symmetric. Ops with kinks (relu, abs, max, maximum, minimum) are fed
//! values kept away from their kinks (see `away_from_kinks`), because a finite
//! difference across a kink measures the kink, not the derivative.

use modelc::model;
use modelc::ndarray::{Array2, ArrayView2};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const TOL: f64 = 2e-2;

macro_rules! grad_test {
    ($test:ident, $model:ident, $kinks:expr) => {
        #[test]
        fn $test() {
            run(
                |seed, x, c| {
                    let mut m = $model::with_seed(seed);
                    m.check_gradients(x, c).map_err(|e| e.to_string())
                },
                $kinks,
            );
        }
    };
}

fn run(check: impl Fn(u64, ArrayView2<f32>, ArrayView2<f32>) -> Result<modelc::GradientCheck, String>, kinks: bool) {
    let mut runner = TestRunner::new_with_rng(
        Config { cases: 24, failure_persistence: None, ..Config::default() },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy =
        (1usize..6, 0u64..10_000, prop::collection::vec(-2.0f32..2.0, 18), prop::collection::vec(-1.0f32..1.0, 18));
    runner
        .run(&strategy, |(n, seed, xs, cs)| {
            let mut x = Array2::from_shape_fn((n, 3), |(i, j)| xs[(i * 3 + j) % 18]);
            if kinks {
                // |x| >= 0.3 and values of a row at least 0.3 apart: no ties, no zero
                // crossings within the finite-difference step.
                for (i, mut row) in x.rows_mut().into_iter().enumerate() {
                    let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = sign * (0.3 + 0.5 * j as f32 + 0.1 * v.abs());
                    }
                }
            }
            let c = Array2::from_shape_fn((n, 3), |(i, j)| cs[(i * 3 + j) % 18]);
            let result = check(seed, x.view(), c.view()).map_err(TestCaseError::fail)?;
            prop_assert!(result.loss.is_finite());
            prop_assert!(result.passes(TOL), "n = {}, seed = {}:\n{}", n, seed, result);
            Ok(())
        })
        .unwrap();
}

// Elementwise unary ops on x * w (w broadcast over rows).
model! { struct Exp { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * exp(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Ln { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * ln(square(x * w) + 1.0)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Log { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * log(exp(x * w) + 0.5)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Sqrt { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * sqrt(square(x - w) + 0.5)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Abs { input x: [n, 3]; input c: [n, 3]; param w: [3] = constant(1.5); loss l = sum(c * abs(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Relu { input x: [n, 3]; input c: [n, 3]; param w: [3] = constant(1.3); loss l = sum(c * relu(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Sigmoid { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * sigmoid(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Tanh { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * tanh(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Softplus { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * softplus(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Pow { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * pow(x * w, 3)); optimizer sgd(learning_rate = 0.1); } }
model! { struct PowFrac { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * pow(square(x * w) + 1.0, 1.5)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Neg { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * -(x * w)); optimizer sgd(learning_rate = 0.1); } }

// Binary ops and broadcasting: [n, 3] with [3], [1, 3], [n, 1], [] and a static [3, 3].
model! { struct AddSub { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * square(x + w - 2.0 * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Div { input x: [n, 3]; input c: [n, 3]; param w: [1, 3] = normal(std = 0.5); loss l = sum(c * (x / (square(w) + 1.0) + 1.0 / (square(x * w) + 2.0))); optimizer sgd(learning_rate = 0.1); } }
model! { struct Scalar { input x: [n, 3]; input c: [n, 3]; param s: [] = constant(0.7); loss l = sum(c * x * s * s) + s; optimizer sgd(learning_rate = 0.1); } }
model! { struct Column { input x: [n, 3]; input c: [n, 3]; param w: [3, 1] = normal(std = 0.5); loss l = sum(c * (x + transpose(w)) * matmul(x, w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Maximum { input x: [n, 3]; input c: [n, 3]; param w: [3] = constant(1.2); loss l = sum(c * maximum(x * w, 0.0) + c * minimum(x, w * 0.1)); optimizer sgd(learning_rate = 0.1); } }

// Reductions: every axis, negative axes, keepdims.
model! { struct SumAxis0 { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(sum(c * x * w, axis = 0) * w); optimizer sgd(learning_rate = 0.1); } }
model! { struct SumAxisNeg { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(square(sum(c * x * w, axis = -1))); optimizer sgd(learning_rate = 0.1); } }
model! { struct SumKeep { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * x * sum(x * w, axis = 1, keepdims = true)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Mean { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = mean(c * square(x * w)) + sum(mean(c * x * w, axis = 0) * w) + mean(square(mean(c * x, axis = -1, keepdims = true) * x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct MaxAxis { input x: [n, 3]; input c: [n, 3]; param w: [3] = constant(1.1); loss l = sum(max(x * w, axis = 1) * sum(c, axis = 1)) + sum(max(x * w, axis = -1, keepdims = true) * c); optimizer sgd(learning_rate = 0.1); } }

// Softmax family, over the last axis and over axis 0.
model! { struct Softmax { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * softmax(x * w)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Softmax0 { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * softmax(x * w, axis = 0)); optimizer sgd(learning_rate = 0.1); } }
model! { struct LogSoftmax { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * log_softmax(x * w)) + sum(c * log_softmax(x * w, axis = -2)); optimizer sgd(learning_rate = 0.1); } }
model! { struct LnSoftmax { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = mean(-sum(softmax(c) * ln(softmax(x * w)), axis = 1)); optimizer sgd(learning_rate = 0.1); } }
model! { struct SoftmaxXent { input x: [n, 3]; input c: [n, 3]; param w: [3, 3] = normal(std = 1.0); loss l = mean(softmax_cross_entropy(matmul(x, w), softmax(c))); optimizer sgd(learning_rate = 0.1); } }
model! { struct SigmoidXent { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(sigmoid_cross_entropy(x * w, sigmoid(c))); optimizer sgd(learning_rate = 0.1); } }
model! { struct LnSigmoid { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 1.0); loss l = sum(c * ln(sigmoid(x * w))); optimizer sgd(learning_rate = 0.1); } }

// Matrix products and transposes, params on either side.
model! { struct Matmul { input x: [n, 3]; input c: [n, 3]; param w: [3, 4] = normal(std = 0.5); param v: [4, 3] = normal(std = 0.5); loss l = sum(c * matmul(tanh(matmul(x, w)), v)); optimizer sgd(learning_rate = 0.1); } }
model! { struct Transpose { input x: [n, 3]; input c: [n, 3]; param w: [3, 3] = normal(std = 0.5); loss l = sum(c * transpose(matmul(w, transpose(x)))) + sum(matmul(transpose(c), x) * w); optimizer sgd(learning_rate = 0.1); } }

// stop_gradient blocks one path but not the other (finite differences cannot see that,
// so it has the exact test at the end); argmax and == only in metrics.
model! { struct StopGradient { input x: [n, 3]; input c: [n, 3]; param w: [3] = normal(std = 0.5); loss l = sum(c * x * w * stop_gradient(w)); metric m = mean(argmax(x * w, axis = 1) == argmax(c, axis = 1)); optimizer sgd(learning_rate = 0.1); } }

// A two-layer network with every piece together.
model! { struct Mlp { input x: [n, 3]; input c: [n, 3]; param w1: [3, 5] = glorot_uniform; param b1: [5] = constant(0.1); param w2: [5, 3] = glorot_normal; param b2: [3] = zeros; let h = tanh(matmul(x, w1) + b1); loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, softmax(c))); optimizer sgd(learning_rate = 0.1); } }

grad_test!(exp, Exp, false);
grad_test!(ln, Ln, false);
grad_test!(log_alias, Log, false);
grad_test!(sqrt, Sqrt, false);
grad_test!(abs, Abs, true);
grad_test!(relu, Relu, true);
grad_test!(sigmoid, Sigmoid, false);
grad_test!(tanh, Tanh, false);
grad_test!(softplus, Softplus, false);
grad_test!(pow_integer, Pow, false);
grad_test!(pow_fraction, PowFrac, false);
grad_test!(neg, Neg, false);
grad_test!(add_sub_broadcast, AddSub, false);
grad_test!(div_unit_axis_broadcast, Div, false);
grad_test!(scalar_param, Scalar, false);
grad_test!(column_broadcast_and_transpose, Column, false);
grad_test!(maximum_minimum, Maximum, true);
grad_test!(sum_axis_0, SumAxis0, false);
grad_test!(sum_negative_axis, SumAxisNeg, false);
grad_test!(sum_keepdims, SumKeep, false);
grad_test!(mean_all_axes_keepdims, Mean, false);
grad_test!(max_axis_keepdims, MaxAxis, true);
grad_test!(softmax_last_axis, Softmax, false);
grad_test!(softmax_axis_0, Softmax0, false);
grad_test!(log_softmax_both_axes, LogSoftmax, false);
grad_test!(ln_softmax_rewrite, LnSoftmax, false);
grad_test!(softmax_cross_entropy, SoftmaxXent, false);
grad_test!(sigmoid_cross_entropy, SigmoidXent, false);
grad_test!(ln_sigmoid_rewrite, LnSigmoid, false);
grad_test!(matmul_chain, Matmul, false);
grad_test!(transposes, Transpose, false);
grad_test!(mlp, Mlp, false);

#[test]
fn stop_gradient_really_stops_it() {
    // l = sum(c * x * w * sg(w)): d l / d w = sum over rows of c * x * w (one factor only).
    let x = Array2::from_shape_fn((2, 3), |(i, j)| (i + j) as f32 * 0.5 - 0.3);
    let c = Array2::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32 * 0.1 - 0.2);
    let mut m = StopGradient::with_seed(3);
    let (_, g) = m.compute_gradients(x.view(), c.view()).unwrap();
    let expected = (&c * &x * &m.w).sum_axis(modelc::ndarray::Axis(0));
    for (a, b) in g.w.iter().zip(expected.iter()) {
        assert!((a - b).abs() < 1e-6, "{} vs {}", g.w, expected);
    }
}
