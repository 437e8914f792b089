//! A hand-written binary cross-entropy trains like the fused `sigmoid_cross_entropy`
//! (issue 15, defect 3).
//!
//! With `p = sigmoid(z)`, `-(y ln(p) + (1 - y) ln(1 - p))` computes `0 * ln(0) = NaN` as
//! soon as f32 `sigmoid` rounds to exactly 1 (a logit above about 16.6), and its derivative
//! `(1 - y) / (1 - p)` is `0 / 0`: the NaN goes into the params. The simplifier's stable
//! rewrites (`ln(sigmoid(z)) -> -softplus(-z)`, `ln(1 - sigmoid(z)) -> -softplus(z)`,
//! `model-macros/core/src/simplify/stable.rs`) make each form below finite, with a
//! derivative of sigmoids only. Here each form trains next to the fused loss on the same
//! data from the same (zero) params, and the losses must agree to 1e-5 after every step
//! (relative to the loss where it is above 1), with finite params:
//!
//! - the separable case that poisoned the model before the rewrite (learning rate 5,
//!   full batch: the 62nd step returned NaN and wrote it into `w` and `b`);
//! - random data (noisy and soft labels, random step counts, learning rates up to
//!   the largest for which gradient descent is contracting: see the test) through
//!   proptest with a deterministic RNG: 64 cases by default, `MODELC_BCE_CASES=1000` for
//!   a long run.
//!
//! `explain()` of each form must name both rewrites, and its backward program must have
//! no `ln` and no division other than the mean's `1 / batch`.

use modelc::model;
use modelc::ndarray::Array2;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Loss agreement with the fused form after every step: absolute for losses up to 1,
/// relative above (a loss of 5 has an f32 ulp of 5e-7, and the two forms round
/// differently: `y softplus(-z) + (1 - y) softplus(z)` against `max(z, 0) - z y + ...`).
const LOSS_TOL: f32 = 1e-5;

model! {
    /// The reference: TensorFlow's fused, stable form.
    struct Fused {
        input x: [batch, 2];
        input y: [batch, 1];
        param w: [2, 1] = zeros;
        param b: [1] = zeros;
        loss l = mean(sigmoid_cross_entropy(matmul(x, w) + b, y));
        optimizer sgd(learning_rate = 5.0);
    }
}

/// A model with the same inputs, params and optimizer as [`Fused`] and the loss written
/// by hand, over `p = sigmoid(z)` (both names usable in the loss).
macro_rules! hand_written {
    ($name:ident, $($loss:tt)*) => {
        model! {
            struct $name {
                input x: [batch, 2];
                input y: [batch, 1];
                param w: [2, 1] = zeros;
                param b: [1] = zeros;
                let z = matmul(x, w) + b;
                let p = sigmoid(z);
                loss l = $($loss)*;
                optimizer sgd(learning_rate = 5.0);
            }
        }
    };
}

hand_written!(Textbook, mean(-(y * ln(p) + (1 - y) * ln(1 - p))));
hand_written!(FloatOne, mean(-(y * ln(p) + (1.0 - y) * ln(1.0 - p))));
hand_written!(OneLast, mean(-(y * ln(p) + (-y + 1) * ln(-p + 1))));
hand_written!(LogAlias, mean(-(y * log(p) + (1 - y) * log(1 - p))));
hand_written!(TwoMeans, -mean(y * ln(p)) - mean((1 - y) * ln(1 - p)));
hand_written!(LnFirst, mean(-(ln(p) * y + ln(1 - p) * (1 - y))));
hand_written!(NegatedTerms, mean(-y * ln(p) - (1 - y) * ln(1 - p)));
hand_written!(Inline, mean(-(y * ln(sigmoid(z)) + (1 - y) * ln(1 - sigmoid(z)))));
hand_written!(NoLets, mean(-(y * ln(sigmoid(matmul(x, w) + b)) + (1 - y) * ln(1 - sigmoid(matmul(x, w) + b)))));
hand_written!(SumOverBatch, sum(-(y * ln(p) + (1 - y) * ln(1 - p))) / batch);

/// What the test needs of each model, so that one loop runs them all.
trait Bce {
    fn name(&self) -> &'static str;
    fn explain(&self) -> &'static str;
    fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>, lr: f32) -> f32;
    fn params(&self) -> Vec<f32>;
}

macro_rules! impl_bce {
    ($($name:ident),*) => {$(
        impl Bce for $name {
            fn name(&self) -> &'static str {
                stringify!($name)
            }
            fn explain(&self) -> &'static str {
                $name::explain()
            }
            fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>, lr: f32) -> f32 {
                self.set_learning_rate(lr);
                self.train_step(x.view(), y.view()).unwrap()
            }
            fn params(&self) -> Vec<f32> {
                self.w.iter().chain(self.b.iter()).copied().collect()
            }
        }
    )*};
}

impl_bce!(Fused, Textbook, FloatOne, OneLast, LogAlias, TwoMeans, LnFirst, NegatedTerms, Inline, NoLets, SumOverBatch);

fn hand_written() -> Vec<Box<dyn Bce>> {
    vec![
        Box::new(Textbook::new()),
        Box::new(FloatOne::new()),
        Box::new(OneLast::new()),
        Box::new(LogAlias::new()),
        Box::new(TwoMeans::new()),
        Box::new(LnFirst::new()),
        Box::new(NegatedTerms::new()),
        Box::new(Inline::new()),
        Box::new(NoLets::new()),
        Box::new(SumOverBatch::new()),
    ]
}

/// 32 points on a line, the first half labelled 0, the second 1, with margins up to 2.4:
/// at learning rate 5 the largest logit passes 16.6 (where f32 `sigmoid` is exactly 1)
/// after 61 full-batch steps, so that the 62nd step's `ln(1 - p)` is `ln(0)`.
fn separable() -> (Array2<f32>, Array2<f32>) {
    let n = 32;
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        if j == 0 {
            (i as f32 - 15.5) / 32.0 * 4.95
        } else {
            ((i * 7) % 5) as f32 * 0.1 - 0.2
        }
    });
    let y = Array2::from_shape_fn((n, 1), |(i, _)| f32::from(u8::from(i >= n / 2)));
    (x, y)
}

/// Trains `model` next to a fresh [`Fused`] for `steps` steps at `lr`; every loss must
/// be finite and agree with the fused one to [`LOSS_TOL`], and the params must stay
/// finite. Returns the fused model's final loss, for the caller's own checks.
fn train_alongside(
    model: &mut dyn Bce,
    x: &Array2<f32>,
    y: &Array2<f32>,
    lr: f32,
    steps: usize,
) -> Result<f32, String> {
    let mut fused = Fused::new();
    let mut last = f32::NAN;
    for step in 1..=steps {
        let want = fused.step(x, y, lr);
        let got = model.step(x, y, lr);
        let params = model.params();
        if !got.is_finite() || params.iter().any(|v| !v.is_finite()) {
            return Err(format!("{}: step {step} at lr {lr}: loss {got}, params {params:?}", model.name()));
        }
        if (got - want).abs() > LOSS_TOL * want.abs().max(1.0) {
            return Err(format!(
                "{}: step {step} at lr {lr}: loss {got} but the fused loss is {want} (difference {:e})",
                model.name(),
                (got - want).abs()
            ));
        }
        last = want;
    }
    Ok(last)
}

#[test]
fn separable_data_at_learning_rate_5_stays_finite_and_matches_the_fused_loss() {
    let (x, y) = separable();
    for mut m in hand_written() {
        // 62 steps failed before the rewrite; 300 go far past the point where the
        // largest logit is 16.6.
        let loss = train_alongside(&mut *m, &x, &y, 5.0, 300).unwrap_or_else(|e| panic!("{e}"));
        assert!(loss < 0.05, "{}: the fused loss {loss} should be small by now", m.name());
    }
    // The data really is the hard case: after 61 steps f32 `sigmoid` of the largest logit
    // is exactly 1, so the 62nd step's `ln(1 - p)` was `ln(0)`.
    let mut fused = Fused::new();
    for _ in 0..61 {
        fused.step(&x, &y, 5.0);
    }
    let largest = x.dot(&fused.w).iter().map(|z| z + fused.b[0]).fold(f32::MIN, f32::max);
    assert_eq!(modelc::kernels::sigmoid(largest), 1.0, "the largest logit after 61 steps is {largest}");
}

#[test]
fn random_data_matches_the_fused_loss() {
    let cases = std::env::var("MODELC_BCE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let mut runner = TestRunner::new_with_rng(
        Config { cases, failure_persistence: None, ..Config::default() },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    // Rows, scale of x, label noise, soft labels, learning rate (as a fraction of the
    // largest stable one, below), steps; x and y values.
    let strategy = (
        (1usize..40, 0.1f32..6.0, 0.0f32..0.3, any::<bool>(), 0.05f32..1.0, 1usize..120),
        prop::collection::vec(-1.0f32..1.0, 80),
        prop::collection::vec(0.0f32..1.0, 40),
    );
    runner
        .run(&strategy, |((n, scale, noise, soft, lr_fraction, steps), xs, us)| {
            // Gradient descent on a loss with curvature up to h is only contracting for
            // learning rates below 2 / h; above it, it oscillates and amplifies every
            // rounding difference, so that no two f32 formulas of one loss agree for long
            // (the fused loss against itself summed in another order would not either).
            // Here h <= max sigmoid' * max |(x, 1)|^2 = (2 scale^2 + 1) / 4.
            let lr = lr_fraction * 8.0 / (2.0 * scale * scale + 1.0);
            let x = Array2::from_shape_fn((n, 2), |(i, j)| xs[i * 2 + j] * scale);
            let y = Array2::from_shape_fn((n, 1), |(i, _)| {
                let clean = f32::from(u8::from(x[(i, 0)] + 0.5 * x[(i, 1)] > 0.0));
                let flipped = if us[i] < noise { 1.0 - clean } else { clean };
                if soft {
                    0.8 * flipped + 0.1
                } else {
                    flipped
                }
            });
            for mut m in hand_written() {
                train_alongside(&mut *m, &x, &y, lr, steps).map_err(TestCaseError::fail)?;
            }
            Ok(())
        })
        .unwrap();
}

/// The `backward` section of an `explain()` text.
fn backward(text: &str) -> &str {
    let start = text.find("\nbackward").unwrap_or_else(|| panic!("no backward program:\n{text}"));
    let end = text[start..].find("\nfetches").map_or(text.len(), |e| start + e);
    &text[start..end]
}

#[test]
fn explain_names_the_rewrites_and_the_gradient_has_no_division_by_p() {
    for m in hand_written() {
        let text = m.explain();
        for rewrite in ["ln(sigmoid(x)) -> -softplus(-x)", "ln(1 - sigmoid(x)) -> -softplus(x)"] {
            assert!(text.contains(rewrite), "{}: `{rewrite}` is not listed:\n{text}", m.name());
        }
        let back = backward(text);
        // The mean's `1 / batch` is the only division (`d l / d w = ...` is a name).
        for line in back.lines().filter_map(|l| l.split_once(" = ")) {
            let rhs = line.1.replace("1 / batch", "");
            assert!(
                !rhs.contains('/') && !rhs.contains("ln("),
                "{}: a division or ln in the gradient:\n{text}",
                m.name()
            );
        }
        assert!(back.contains("sigmoid(-"), "{}: no sigmoid(-z) in the gradient:\n{text}", m.name());
    }
}
