//! Every differentiable op's generated gradient (`compute_gradients`, f32) against f64
//! finite differences of an f64 re-implementation of the same loss written here (plain
//! loops over `Vec<f64>`, sharing no code with the runtime), with a per-op tolerance.
//!
//! Each model exists twice (`models!`): `narrow` ([n, 3] inputs, [3]-wide params; proptest
//! over batch sizes 1-5 with batch 1 always first) and `wide` ([n, 70] inputs, matmul
//! params [70, 20] and [70, 70]; batches 300, 530 and 1). The wide shapes cross the
//! matrix kernels' blocking (runtime/src/sgemm/driver.rs: tiles of 6 x 16, `MC` = 168 rows,
//! `KC` = 384 / `KC_512` = 512 deep: a weight gradient over 530 rows is 530 deep, its
//! forward product 300 or 530 rows tall; the thin kernels take sides <= 16, so batch 1
//! and the [3]-wide models go there) and the elementwise and reduction loops' blocks.
//!
//! Each model's loss is `sum(c * f(...))` with random weights `c`, so that no gradient is
//! trivially symmetric. Ops with kinks (relu, abs, max, maximum, minimum) are fed values
//! kept away from their kinks and from ties (see `Data::AwayFromKinks`), because a finite
//! difference across a kink measures the kink, not the derivative.
//!
//! **The comparison** ([`compare`]). The reference gradient is a fourth-order central
//! difference of the f64 loss with step `1e-3 * max(|p|, 1)`: truncation ~ h^4 f^(5) / 30,
//! rounding ~ 2^-53 |L| / h, both far below what f32 gives (the exact gradients written
//! by hand in `wrong_rules_fail` agree with it to 1e-8 or better, f32 errs by ~1e-6), so
//! the difference between the two is the generated code's own error. A param's
//! scalars are all probed up to 48 of them, else 48 spread over it, plus two random
//! directions over the whole param (so that every scalar counts). The error of scalar i
//! is `|g_i - r_i| / max(|r_i|, rms(r))`: relative where the component is of the param's
//! usual size, and relative to the rms where it is small by cancellation (its rounding
//! is that of the terms that cancelled, which are of the rms' size). A directional
//! derivative's error is the same with `rms(r) * |v|` as the floor.
//!
//! **The tolerances** (`tol` in each `grad_test!`) follow from f32 rounding: a value
//! computed in f32 carries a relative error of about `u = 2^-24 = 6e-8` per operation,
//! the runtime's exp/ln/tanh/sigmoid polynomials up to 3 ulp (kernels.rs tests them), a
//! sum of k terms about `sqrt(k) u` (random-walk rounding; the kernels sum in blocks and
//! lanes), and a derivative `f'(z)` evaluated at a rounded `z` carries `|z f''(z) / f'(z)|`
//! times z's error (its condition, <= ~10 for the ops and ranges here). So:
//! - elementwise ops (sigmoid_cross_entropy and the ln(sigmoid) rewrites included),
//!   broadcasting, reductions (`5e-5`): a param broadcast over up to 600 rows sums 600
//!   terms (~ 25 u = 1.5e-6) of a few operations each; measured worst 2.8e-6 (200 to 800
//!   narrow and 25 to 100 wide cases per op).
//! - the scalar param (`1e-4`): its one gradient adds three sums that can cancel, and
//!   no rms floor helps a single scalar; measured worst 1.2e-5.
//! - softmax, log_softmax, softmax_cross_entropy, the ln(softmax) rewrite (`1e-4`): a row or column
//!   sum of 70-600 terms inside the derivative, then the rowsum term subtracted; measured
//!   worst 4.5e-6.
//! - matrix products, transposes, the MLP (`1e-4`): two or three chained products of depth
//!   up to 600, through tanh; measured worst 5.7e-6.
//! - gather (`5e-5`): its gradient is a scatter-add, each table row the sum of the
//!   adjoint rows its id names (up to all n), the elementwise reasoning; the ids are
//!   `argmax`es of the inputs, which finite differences do not move.
//! - sparse_softmax_cross_entropy (`1e-4`): the dense cross-entropy's gradient with a
//!   one-hot label, after a layer: the softmax family's and the MLP's reasoning.
//!
//! Each is 8 to 22 times the worst measured error and 200 to 400 times tighter than the
//! old 2e-2; every wrong rule tried in `wrong_rules_fail` errs by 0.5 or more, and
//! making the compiler's own tanh rule `1 - t` fails tanh, both matmul chains, the MLP
//! and `wrong_rules_fail`.
//!
//! Cases: `MODELC_GRAD_CASES` (default 24) proptest cases per op on the narrow models,
//! and `max(3, MODELC_GRAD_CASES / 8)` on the wide ones (batch 300, 530, 1, then random
//! batches). The default runs in 10-30 s of test time (2 cores, quiet to loaded); `MODELC_GRAD_CASES=2000` is a long run
//! (about an hour on one core).

use std::ops::{Add, Div, Mul, Neg, Sub};

use modelc::ndarray::{Array, Array2, ArrayView2, Dimension};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

// ------------------------------------------------------------------------- the models

/// The models, at one width: `$d` the inputs' and broadcast params' width, `$h` the
/// hidden width of the matrix products.
macro_rules! models {
    ($module:ident, $d:tt, $h:tt) => {
        #[allow(dead_code)]
        mod $module {
            use modelc::model;

            // Elementwise unary ops on x * w (w broadcast over rows).
            model! { pub struct Exp { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * exp(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Ln { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * ln(square(x * w) + 1.0)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Log { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * log(exp(x * w) + 0.5)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Sqrt { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * sqrt(square(x - w) + 0.5)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Abs { input x: [n, $d]; input c: [n, $d]; param w: [$d] = constant(1.5); loss l = sum(c * abs(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Relu { input x: [n, $d]; input c: [n, $d]; param w: [$d] = constant(1.3); loss l = sum(c * relu(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Sigmoid { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * sigmoid(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Tanh { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * tanh(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Softplus { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * softplus(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Pow { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * pow(x * w, 3)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct PowFrac { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * pow(square(x * w) + 1.0, 1.5)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Neg { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * -(x * w)); optimizer sgd(learning_rate = 0.1); } }

            // Binary ops and broadcasting both ways: [n, d] with [d], [1, d], [n, 1], [],
            // [n, 1] with [1, d], params on either side.
            model! { pub struct AddSub { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * square(x + w - 2.0 * w)) + sum(c * (w - x) * w); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Div { input x: [n, $d]; input c: [n, $d]; param w: [1, $d] = normal(std = 0.5); loss l = sum(c * (x / (square(w) + 1.0) + 1.0 / (square(x * w) + 2.0) + w / (square(x) + 1.0))); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Scalar { input x: [n, $d]; input c: [n, $d]; param s: [] = constant(0.7); loss l = sum(c * x * s * s) + s + sum(s - c * x / s); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Column { input x: [n, $d]; input c: [n, $d]; param w: [$d, 1] = normal(std = 0.5); loss l = sum(c * (x + transpose(w)) * matmul(x, w)) + sum(c * (matmul(x, w) - transpose(w))); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Maximum { input x: [n, $d]; input c: [n, $d]; param w: [$d] = constant(1.2); loss l = sum(c * maximum(x * w, 0.0) + c * minimum(x, w * 0.1)); optimizer sgd(learning_rate = 0.1); } }

            // Reductions: every axis, negative axes, keepdims.
            model! { pub struct SumAxis0 { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(sum(c * x * w, axis = 0) * w); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct SumAxisNeg { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(square(sum(c * x * w, axis = -1))); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct SumKeep { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * x * sum(x * w, axis = 1, keepdims = true)) + sum(c * sum(x * w, axis = -2, keepdims = true)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Mean { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = mean(c * square(x * w)) + sum(mean(c * x * w, axis = 0) * w) + mean(square(mean(c * x, axis = -1, keepdims = true) * x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct MaxAxis { input x: [n, $d]; input c: [n, $d]; param w: [$d] = constant(1.1); loss l = sum(max(x * w, axis = 1) * sum(c, axis = 1)) + sum(max(x * w, axis = -1, keepdims = true) * c) + sum(max(x * w, axis = 0) * w); optimizer sgd(learning_rate = 0.1); } }

            // Softmax family, over the last axis and over axis 0.
            model! { pub struct Softmax { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * softmax(x * w)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Softmax0 { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * softmax(x * w, axis = 0)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct LogSoftmax { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * log_softmax(x * w)) + sum(c * log_softmax(x * w, axis = -2)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct LnSoftmax { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = mean(-sum(softmax(c) * ln(softmax(x * w)), axis = 1)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct SoftmaxXent { input x: [n, $d]; input c: [n, $d]; param w: [$d, $d] = glorot_normal; loss l = mean(softmax_cross_entropy(matmul(x, w), softmax(c))); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct SigmoidXent { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(sigmoid_cross_entropy(x * w, sigmoid(c))); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct LnSigmoid { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * ln(sigmoid(x * w))); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct HandBce { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); let p = sigmoid(x * w); let y = sigmoid(c * 3.0); loss l = mean(-(y * ln(p) + (1.0 - y) * ln(1.0 - p))); optimizer sgd(learning_rate = 0.1); } }

            // Matrix products and transposes, params on either side.
            model! { pub struct Matmul { input x: [n, $d]; input c: [n, $d]; param w: [$d, $h] = glorot_normal; param v: [$h, $d] = glorot_normal; loss l = sum(c * matmul(tanh(matmul(x, w)), v)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct MatmulSquare { input x: [n, $d]; input c: [n, $d]; param w: [$d, $d] = glorot_normal; param v: [$d, $d] = glorot_normal; loss l = sum(c * matmul(tanh(matmul(x, w)), v)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Transpose { input x: [n, $d]; input c: [n, $d]; param w: [$d, $d] = glorot_normal; loss l = sum(c * transpose(matmul(w, transpose(x)))) + sum(matmul(transpose(c), x) * w); optimizer sgd(learning_rate = 0.1); } }

            // stop_gradient blocks one path but not the other; argmax and == only in metrics.
            model! { pub struct StopGradient { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * x * w * stop_gradient(w)); metric m = mean(argmax(x * w, axis = 1) == argmax(c, axis = 1)); optimizer sgd(learning_rate = 0.1); } }

            // Shape ops (issue 17): reshape (of a param: a copy; of a computed node: a
            // view) and flatten; sums, means and maxes over several axes (the max's block
            // within one row, where AwayFromKinks keeps values apart); concat along both
            // axes; slices with negative bounds; where/select with literal branches and
            // the comparisons as conditions.
            model! { pub struct Reshape { input x: [n, $d]; input c: [n, $d]; param w: [$d, $h] = glorot_normal; let h = tanh(matmul(x, w)); loss l = sum(c * matmul(h, reshape(w, [$h, $d]))) + sum(sum(reshape(square(h + 0.5), [n, $h, 1]), axis = [1, 2]) * sum(c, axis = 1)) + sum(c * flatten(reshape(x * 2.0, [-1, 1, $d])) * x); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct MultiAxis { input x: [n, $d]; input c: [n, $d]; param w: [$d] = constant(1.1); let t = reshape(x * w, [n, 1, $d]); loss l = sum(max(t, axis = [1, 2]) * sum(c, axis = 1)) + sum(max(t, axis = [-1, -2], keepdims = true)) + sum(sum(reshape(c * x * w, [n, $d, 1]), axis = [1, 2]) * sum(c, axis = 1)) + sum(mean(reshape(c * square(x * w), [n, 1, $d]), axis = [0, 2])) + sum(x * w, axis = [0, 1]); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct ConcatSlice { input x: [n, $d]; input c: [n, $d]; param w: [$d, $h] = glorot_normal; param v: [$d] = normal(std = 0.5); let a = x * v; let h = tanh(matmul(concat([x, c], axis = 1), concat([w, square(w)], axis = 0))); let j = concat([a, h, a * 0.5], axis = -1); loss l = sum(square(slice(j, axis = 1, start = 1, end = -1))) + sum(c * slice(j, axis = 1, start = -$d)) + sum(slice(h, axis = 1, start = 0, end = 1) * sum(c, axis = 1, keepdims = true)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Where { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 0.5); loss l = sum(c * where(x > 0.0, x * w, square(x * w) * 0.5)) + sum(c * select(c - x <= 0.5, w, 1.0)) + sum(c * where((x < -0.5) + (x >= 1.0) != 0.0, 2.0, tanh(x * w))); optimizer sgd(learning_rate = 0.1); } }

            // A two-layer network with every piece together.
            model! { pub struct Mlp { input x: [n, $d]; input c: [n, $d]; param w1: [$d, $h] = glorot_uniform; param b1: [$h] = constant(0.1); param w2: [$h, $d] = glorot_normal; param b2: [$d] = zeros; let h = tanh(matmul(x, w1) + b1); loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, softmax(c))); optimizer sgd(learning_rate = 0.1); } }

            // Normalization and dropout (ops/norm.rs, ops/random.rs): layer_norm over the
            // last axis, over axis 0 with its own epsilon, and inside a layer with a scale
            // and a shift; dropout with the mask recovered from `p`'s gradient (see
            // `dropout_with_the_mask_it_drew`).
            model! { pub struct LayerNorm { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); param v: [$d] = normal(std = 0.5); loss l = sum(c * layer_norm(x * w + v)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct LayerNorm0 { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); loss l = sum(c * layer_norm(tanh(x * w) + x, axis = 0, epsilon = 0.01)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct LayerNormMlp { input x: [n, $d]; input c: [n, $d]; param w1: [$d, $h] = glorot_uniform; param g: [$h] = normal(mean = 1.0, std = 0.2); param b1: [$h] = constant(0.1); param w2: [$h, $d] = glorot_normal; let h = tanh(layer_norm(matmul(x, w1)) * g + b1); loss l = sum(c * matmul(h, w2)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct Dropout { input x: [n, $d]; input c: [n, $d]; param w: [$d] = normal(std = 1.0); param p: [$d] = zeros; let h = dropout(x * w, rate = 0.4); loss l = sum(c * tanh(h)) + sum(h * p); optimizer sgd(learning_rate = 0.1); } }

            // Index ops (ops/index.rs) on ids computed from the inputs (`argmax` of a row:
            // u32 below $d, so every id is in range at compile time): gather, whose
            // gradient is a scatter-add into the table (ids repeat across rows), directly
            // and through u32 reshapes; sparse_softmax_cross_entropy on labels picked by a
            // u32 `where`, after a layer and on a sliced param.
            model! { pub struct Gather { input x: [n, $d]; input c: [n, $d]; param emb: [$d, $d] = normal(std = 0.5); let ids = argmax(c, axis = 1); loss l = sum(c * tanh(gather(emb, ids) * x)) + sum(c * reshape(gather(emb, reshape(argmax(x, axis = 1), [n, 1])), [n, $d])) + sum(x * sum(gather(emb, concat([reshape(ids, [n, 1]), reshape(argmax(x, axis = 1), [n, 1])], axis = 1)), axis = 1)); optimizer sgd(learning_rate = 0.1); } }
            model! { pub struct SparseXent { input x: [n, $d]; input c: [n, $d]; param w: [$d, $h] = glorot_normal; param v: [$h, $d] = glorot_normal; let y = where(sum(x, axis = 1) > 0.0, argmax(c, axis = 1), argmax(x, axis = 1)); loss l = mean(sparse_softmax_cross_entropy(matmul(tanh(matmul(x, w)), v), y)) + sum(sparse_softmax_cross_entropy(x * slice(v, axis = 0, start = 0, end = 1), argmax(c, axis = 1)) * sum(c, axis = 1)); optimizer sgd(learning_rate = 0.1); } }
        }
    };
}

models!(narrow, 3, 4);
models!(wide, 70, 20);

/// A generated model as the checks see it: its params and its gradients, as [`T`]s in
/// declaration order.
trait Subject {
    fn make(seed: u64) -> Self;
    fn params(&self) -> Vec<T>;
    fn gradients(&mut self, x: ArrayView2<f32>, c: ArrayView2<f32>) -> (f32, Vec<T>);
}

macro_rules! subjects {
    ($($model:ident { $($p:ident),* })*) => {
        subjects!(@ narrow $($model { $($p),* })*);
        subjects!(@ wide $($model { $($p),* })*);
    };
    (@ $module:ident $($model:ident { $($p:ident),* })*) => {$(
        impl Subject for $module::$model {
            fn make(seed: u64) -> Self {
                $module::$model::with_seed(seed)
            }
            fn params(&self) -> Vec<T> {
                vec![$(T::from_array(&self.$p)),*]
            }
            fn gradients(&mut self, x: ArrayView2<f32>, c: ArrayView2<f32>) -> (f32, Vec<T>) {
                let (loss, g) = self.compute_gradients(x, c).expect("the inputs have the declared shapes");
                (loss, vec![$(T::from_array(&g.$p)),*])
            }
        }
    )*};
}

subjects! {
    Exp { w } Ln { w } Log { w } Sqrt { w } Abs { w } Relu { w } Sigmoid { w } Tanh { w }
    Softplus { w } Pow { w } PowFrac { w } Neg { w } AddSub { w } Div { w } Scalar { s }
    Column { w } Maximum { w } SumAxis0 { w } SumAxisNeg { w } SumKeep { w } Mean { w }
    MaxAxis { w } Softmax { w } Softmax0 { w } LogSoftmax { w } LnSoftmax { w }
    SoftmaxXent { w } SigmoidXent { w } LnSigmoid { w } HandBce { w } Matmul { w, v }
    MatmulSquare { w, v } Transpose { w } StopGradient { w } Mlp { w1, b1, w2, b2 }
    LayerNorm { w, v } LayerNorm0 { w } LayerNormMlp { w1, g, b1, w2 } Dropout { w, p }
    Reshape { w } MultiAxis { w } ConcatSlice { w, v } Where { w } Gather { emb } SparseXent { w, v }
}

// ------------------------------------------------------------- the f64 reference

/// A row-major f64 matrix: the reference's only type. A 1-D tensor of length k is the
/// row [1, k] (NumPy broadcasts it along the last axis), a scalar [1, 1].
#[derive(Clone, Debug, PartialEq)]
struct T {
    r: usize,
    c: usize,
    v: Vec<f64>,
}

impl AsRef<T> for T {
    fn as_ref(&self) -> &T {
        self
    }
}

impl T {
    fn from_fn(r: usize, c: usize, f: impl Fn(usize, usize) -> f64) -> T {
        let mut v = Vec::with_capacity(r * c);
        for i in 0..r {
            for j in 0..c {
                v.push(f(i, j));
            }
        }
        T { r, c, v }
    }

    fn scalar(s: f64) -> T {
        T { r: 1, c: 1, v: vec![s] }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.c + j]
    }

    /// A param or gradient of rank 0, 1 or 2, exactly (f32 -> f64 is exact).
    fn from_array<D: Dimension>(a: &Array<f32, D>) -> T {
        let (r, c) = match *a.shape() {
            [] => (1, 1),
            [k] => (1, k),
            [r, c] => (r, c),
            ref s => panic!("the test models have params of rank <= 2, not {s:?}"),
        };
        T { r, c, v: a.iter().map(|&x| f64::from(x)).collect() }
    }

    fn from_view(a: ArrayView2<f32>) -> T {
        T { r: a.nrows(), c: a.ncols(), v: a.iter().map(|&x| f64::from(x)).collect() }
    }
}

/// NumPy broadcasting of one axis.
fn bdim(a: usize, b: usize) -> usize {
    match (a, b) {
        (a, b) if a == b => a,
        (1, b) => b,
        (a, 1) => a,
        _ => panic!("reference: cannot broadcast {a} with {b}"),
    }
}

fn zip(a: &T, b: &T, f: impl Fn(f64, f64) -> f64) -> T {
    let (r, c) = (bdim(a.r, b.r), bdim(a.c, b.c));
    let pick = |t: &T, i: usize, j: usize| t.at(if t.r == 1 { 0 } else { i }, if t.c == 1 { 0 } else { j });
    T::from_fn(r, c, |i, j| f(pick(a, i, j), pick(b, i, j)))
}

macro_rules! binary_ops {
    ($($tr:ident $method:ident $f:expr;)*) => {$(
        impl $tr<&T> for &T { type Output = T; fn $method(self, o: &T) -> T { zip(self, o, $f) } }
        impl $tr<T> for &T { type Output = T; fn $method(self, o: T) -> T { zip(self, &o, $f) } }
        impl $tr<&T> for T { type Output = T; fn $method(self, o: &T) -> T { zip(&self, o, $f) } }
        impl $tr<T> for T { type Output = T; fn $method(self, o: T) -> T { zip(&self, &o, $f) } }
        impl $tr<f64> for T { type Output = T; fn $method(self, o: f64) -> T { zip(&self, &T::scalar(o), $f) } }
        impl $tr<f64> for &T { type Output = T; fn $method(self, o: f64) -> T { zip(self, &T::scalar(o), $f) } }
        impl $tr<T> for f64 { type Output = T; fn $method(self, o: T) -> T { zip(&T::scalar(self), &o, $f) } }
        impl $tr<&T> for f64 { type Output = T; fn $method(self, o: &T) -> T { zip(&T::scalar(self), o, $f) } }
    )*};
}

binary_ops! {
    Add add |a, b| a + b;
    Sub sub |a, b| a - b;
    Mul mul |a, b| a * b;
    Div div |a, b| a / b;
}

impl Neg for T {
    type Output = T;
    fn neg(self) -> T {
        map(self, |a| -a)
    }
}

impl Neg for &T {
    type Output = T;
    fn neg(self) -> T {
        map(self, |a| -a)
    }
}

fn map(a: impl AsRef<T>, f: impl Fn(f64) -> f64) -> T {
    let a = a.as_ref();
    T { r: a.r, c: a.c, v: a.v.iter().map(|&x| f(x)).collect() }
}

fn exp(a: impl AsRef<T>) -> T {
    map(a, f64::exp)
}
fn ln(a: impl AsRef<T>) -> T {
    map(a, f64::ln)
}
fn sqrt(a: impl AsRef<T>) -> T {
    map(a, f64::sqrt)
}
fn square(a: impl AsRef<T>) -> T {
    map(a, |x| x * x)
}
fn abs(a: impl AsRef<T>) -> T {
    map(a, f64::abs)
}
fn relu(a: impl AsRef<T>) -> T {
    map(a, |x| x.max(0.0))
}
fn sigmoid_1(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
fn sigmoid(a: impl AsRef<T>) -> T {
    map(a, sigmoid_1)
}
fn tanh(a: impl AsRef<T>) -> T {
    map(a, f64::tanh)
}
fn softplus(a: impl AsRef<T>) -> T {
    map(a, |x| x.max(0.0) + (-x.abs()).exp().ln_1p())
}
fn powi(a: impl AsRef<T>, k: i32) -> T {
    map(a, |x| x.powi(k))
}
fn powf(a: impl AsRef<T>, k: f64) -> T {
    map(a, |x| x.powf(k))
}
fn maximum(a: impl AsRef<T>, b: impl AsRef<T>) -> T {
    zip(a.as_ref(), b.as_ref(), f64::max)
}
fn minimum(a: impl AsRef<T>, b: impl AsRef<T>) -> T {
    zip(a.as_ref(), b.as_ref(), f64::min)
}
/// TensorFlow's `max(x, 0) - x z + ln(1 + e^-|x|)`.
fn sigmoid_xent(x: impl AsRef<T>, z: impl AsRef<T>) -> T {
    zip(x.as_ref(), z.as_ref(), |x, z| x.max(0.0) - x * z + (-x.abs()).exp().ln_1p())
}

fn sum(a: impl AsRef<T>) -> f64 {
    a.as_ref().v.iter().sum()
}
fn mean(a: impl AsRef<T>) -> f64 {
    let a = a.as_ref();
    sum(a) / a.v.len() as f64
}

/// A reduction along `axis` (0 or 1) with `f` over the lane's values; the result is
/// [1, c] along axis 0, [r, 1] along axis 1 with `keep`, [1, r] without (1-D).
fn reduce(a: impl AsRef<T>, axis: usize, keep: bool, f: impl Fn(&[f64]) -> f64) -> T {
    let a = a.as_ref();
    match axis {
        0 => T::from_fn(1, a.c, |_, j| f(&(0..a.r).map(|i| a.at(i, j)).collect::<Vec<_>>())),
        1 if keep => T::from_fn(a.r, 1, |i, _| f(&a.v[i * a.c..(i + 1) * a.c])),
        1 => T::from_fn(1, a.r, |_, i| f(&a.v[i * a.c..(i + 1) * a.c])),
        _ => panic!("reference: axis {axis} of a matrix"),
    }
}
fn sum_axis(a: impl AsRef<T>, axis: usize, keep: bool) -> T {
    reduce(a, axis, keep, |l| l.iter().sum())
}
fn mean_axis(a: impl AsRef<T>, axis: usize, keep: bool) -> T {
    reduce(a, axis, keep, |l| l.iter().sum::<f64>() / l.len() as f64)
}
fn max_axis(a: impl AsRef<T>, axis: usize, keep: bool) -> T {
    reduce(a, axis, keep, |l| l.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// `f` applied to every lane along `axis` (the lane's values in, the same count out).
fn lanes(a: impl AsRef<T>, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> T {
    let a = a.as_ref();
    let mut out = a.clone();
    if axis == 1 {
        for i in 0..a.r {
            out.v[i * a.c..(i + 1) * a.c].copy_from_slice(&f(&a.v[i * a.c..(i + 1) * a.c]));
        }
    } else {
        for j in 0..a.c {
            let lane = f(&(0..a.r).map(|i| a.at(i, j)).collect::<Vec<_>>());
            for (i, v) in lane.into_iter().enumerate() {
                out.v[i * a.c + j] = v;
            }
        }
    }
    out
}
fn log_softmax_lane(l: &[f64]) -> Vec<f64> {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = l.iter().map(|&x| (x - m).exp()).sum::<f64>().ln() + m;
    l.iter().map(|&x| x - lse).collect()
}
fn log_softmax(a: impl AsRef<T>, axis: usize) -> T {
    lanes(a, axis, log_softmax_lane)
}
fn softmax(a: impl AsRef<T>, axis: usize) -> T {
    lanes(a, axis, |l| log_softmax_lane(l).into_iter().map(f64::exp).collect())
}
/// `-sum(y * log_softmax(z), -1)`: [1, n] (1-D).
fn softmax_xent(z: impl AsRef<T>, y: impl AsRef<T>) -> T {
    -sum_axis(y.as_ref() * log_softmax(z, 1), 1, false)
}

fn matmul(a: impl AsRef<T>, b: impl AsRef<T>) -> T {
    let (a, b) = (a.as_ref(), b.as_ref());
    assert_eq!(a.c, b.r, "reference: matmul of {}x{} and {}x{}", a.r, a.c, b.r, b.c);
    let mut out = T { r: a.r, c: b.c, v: vec![0.0; a.r * b.c] };
    for i in 0..a.r {
        for k in 0..a.c {
            let aik = a.v[i * a.c + k];
            let brow = &b.v[k * b.c..(k + 1) * b.c];
            for (o, &bkj) in out.v[i * b.c..(i + 1) * b.c].iter_mut().zip(brow) {
                *o += aik * bkj;
            }
        }
    }
    out
}
fn transpose(a: impl AsRef<T>) -> T {
    let a = a.as_ref();
    T::from_fn(a.c, a.r, |i, j| a.at(j, i))
}

// The shape ops' references (issue 17): row-major reshapes, concatenation, slices, where.

/// The same elements, row-major, as an r x c matrix.
fn reshape(a: impl AsRef<T>, r: usize, c: usize) -> T {
    let a = a.as_ref();
    assert_eq!(a.v.len(), r * c, "reference: reshape of {}x{} to {r}x{c}", a.r, a.c);
    T { r, c, v: a.v.clone() }
}
/// Side by side (axis 1).
fn hcat(parts: &[&T]) -> T {
    let r = parts[0].r;
    let c = parts.iter().map(|p| p.c).sum();
    let mut v = Vec::with_capacity(r * c);
    for i in 0..r {
        for p in parts {
            v.extend_from_slice(&p.v[i * p.c..(i + 1) * p.c]);
        }
    }
    T { r, c, v }
}
/// One above the other (axis 0).
fn vcat(parts: &[&T]) -> T {
    let c = parts[0].c;
    T { r: parts.iter().map(|p| p.r).sum(), c, v: parts.iter().flat_map(|p| p.v.iter().copied()).collect() }
}
/// Columns `s..e`.
fn cols(a: &T, s: usize, e: usize) -> T {
    T::from_fn(a.r, e - s, |i, j| a.at(i, s + j))
}
/// `cond != 0 ? a : b`, broadcasting.
fn select(cond: &T, a: &T, b: &T) -> T {
    let picked = zip(cond, &zip(a, b, |a, _| a), |c, a| if c != 0.0 { a } else { f64::NAN });
    let other = zip(cond, &zip(a, b, |_, b| b), |c, b| if c != 0.0 { f64::NAN } else { b });
    zip(&picked, &other, |p, o| if p.is_nan() { o } else { p })
}
fn cmp(a: &T, b: f64, f: impl Fn(f64, f64) -> bool) -> T {
    map(a, |x| f64::from(u8::from(f(x, b))))
}

/// A model's loss in f64: `(params in declaration order, x, c) -> loss`.
type Loss = fn(&[T], &T, &T) -> f64;

// ------------------------------------------------------ finite differences, comparison

/// Most scalars of one param probed one by one (the rest count through the directions).
const PROBES: usize = 48;
/// Random directions over a whole param.
const DIRECTIONS: usize = 2;

/// The reference's derivatives of one param: at the probed scalars, and along random
/// directions.
struct Reference {
    indices: Vec<usize>,
    values: Vec<f64>,
    directions: Vec<(Vec<f64>, f64)>,
}

/// The fourth-order central difference of `loss` along `dir` (a unit vector on one
/// scalar, or a random direction) of param `k`.
fn derivative(loss: Loss, params: &[T], k: usize, dir: &[(usize, f64)], x: &T, c: &T) -> f64 {
    let scale = dir.iter().map(|&(i, _)| params[k].v[i].abs()).fold(1.0, f64::max);
    let h = 1e-3 * scale;
    let at = |t: f64| {
        let mut p = params.to_vec();
        for &(i, d) in dir {
            p[k].v[i] += t * d;
        }
        loss(&p, x, c)
    };
    (at(-2.0 * h) - 8.0 * at(-h) + 8.0 * at(h) - at(2.0 * h)) / (12.0 * h)
}

fn reference(loss: Loss, params: &[T], k: usize, x: &T, c: &T, rng: &mut Rng) -> Reference {
    let len = params[k].v.len();
    let indices: Vec<usize> = if len <= PROBES {
        (0..len).collect()
    } else {
        // An even spread with a random offset, so that other cases probe other scalars.
        let offset = rng.below(len / PROBES);
        (0..PROBES).map(|i| (offset + i * len / PROBES).min(len - 1)).collect()
    };
    let values = indices.iter().map(|&i| derivative(loss, params, k, &[(i, 1.0)], x, c)).collect();
    let directions = (0..DIRECTIONS)
        .map(|_| {
            let v: Vec<f64> = (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let dir: Vec<(usize, f64)> = v.iter().copied().enumerate().collect();
            let d = derivative(loss, params, k, &dir, x, c);
            (v, d)
        })
        .collect();
    Reference { indices, values, directions }
}

/// How far `grad` is from the reference: the worst error over the probed scalars and the
/// directions (see the file's header), with where it is.
fn compare(grad: &T, r: &Reference) -> (f64, String) {
    let rms = (r.values.iter().map(|v| v * v).sum::<f64>() / r.values.len().max(1) as f64).sqrt();
    let floor = rms.max(1e-30);
    let mut worst = (0.0, String::from("no scalar"));
    for (&i, &want) in r.indices.iter().zip(&r.values) {
        let got = grad.v[i];
        let err = (got - want).abs() / want.abs().max(floor);
        if err > worst.0 || err.is_nan() {
            worst = (err, format!("scalar {i}: generated {got:e}, reference {want:e} (rms {rms:e})"));
        }
    }
    for (n, (v, want)) in r.directions.iter().enumerate() {
        let got: f64 = grad.v.iter().zip(v).map(|(g, v)| g * v).sum();
        let norm = v.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = (got - want).abs() / want.abs().max(floor * norm);
        if err > worst.0 || err.is_nan() {
            worst = (err, format!("direction {n}: generated {got:e}, reference {want:e}"));
        }
    }
    worst
}

// ------------------------------------------------------------------ data and drivers

/// SplitMix64: the test's own deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Data {
    /// x uniform in [-2, 2].
    Smooth,
    /// |x| >= 0.3, and the values of a row at least 0.03 apart (a random permutation of
    /// 0.05-spaced magnitudes, random signs): no zero crossings and no ties within the
    /// finite differences' step, for abs, relu, max, maximum, minimum.
    AwayFromKinks,
}

fn inputs(n: usize, d: usize, data: Data, rng: &mut Rng) -> (Array2<f32>, Array2<f32>) {
    let mut x = Array2::<f32>::zeros((n, d));
    for mut row in x.rows_mut() {
        let mut perm: Vec<usize> = (0..d).collect();
        for i in (1..d).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        for (j, v) in row.iter_mut().enumerate() {
            *v = match data {
                Data::Smooth => rng.uniform(-2.0, 2.0) as f32,
                Data::AwayFromKinks => {
                    let sign = if rng.next() & 1 == 0 { 1.0 } else { -1.0 };
                    (sign * (0.3 + 0.05 * perm[j] as f64 + 0.02 * rng.uniform(0.0, 1.0))) as f32
                }
            };
        }
    }
    let c = Array2::from_shape_fn((n, d), |_| rng.uniform(-1.0, 1.0) as f32);
    (x, c)
}

/// The worst errors of one case: the loss's, and each param's gradient's.
struct Outcome {
    loss: f64,
    params: Vec<(f64, String)>,
}

fn run_case<M: Subject>(n: usize, d: usize, seed: u64, data: Data, loss: Loss) -> Outcome {
    let mut rng = Rng(seed);
    let (x, c) = inputs(n, d, data, &mut rng);
    let mut model = M::make(seed);
    let params = model.params();
    let (loss32, grads) = model.gradients(x.view(), c.view());
    let (xt, ct) = (T::from_view(x.view()), T::from_view(c.view()));
    let want = loss(&params, &xt, &ct);
    let loss_err = (f64::from(loss32) - want).abs() / want.abs().max(((n * d) as f64).sqrt());
    let params = (0..params.len())
        .map(|k| {
            assert_eq!((grads[k].r, grads[k].c), (params[k].r, params[k].c), "gradient {k} has its param's shape");
            let r = reference(loss, &params, k, &xt, &ct, &mut rng);
            compare(&grads[k], &r)
        })
        .collect();
    Outcome { loss: loss_err, params }
}

/// The loss's tolerance, relative to `max(|loss|, sqrt(n d))`: the losses sum `n d`
/// terms of size ~1 with random signs (`c`), so `|loss|` ~ `sqrt(n d)`, and f32 rounds
/// each term (up to ~10 u through exp and the like) and the running sum, ~ 10 u sqrt(n d)
/// relative to that, 1.2e-4 at 42,000 terms. The loss only shows that the reference is
/// the model's loss; the gradients are what is checked tightly.
const LOSS_TOL: f64 = 1e-3;

/// Checks one case: the loss against [`LOSS_TOL`], every param's gradient against `tol`.
fn check_outcome(o: &Outcome, tol: f64, what: &str) -> Result<(), String> {
    if o.loss.is_nan() || o.loss > LOSS_TOL {
        return Err(format!("{what}: the loss differs from the reference by {:e} (tol {LOSS_TOL:e})", o.loss));
    }
    for (k, (err, at)) in o.params.iter().enumerate() {
        if err.is_nan() || *err > tol {
            return Err(format!("{what}: param {k}: error {err:e} > tol {tol:e} at {at}"));
        }
    }
    Ok(())
}

/// `MODELC_GRAD_CASES`, or 24.
fn cases() -> u32 {
    std::env::var("MODELC_GRAD_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24)
}

/// Prints every case's worst errors when `MODELC_GRAD_REPORT` is set (how the tolerances
/// were calibrated).
fn report(name: &str, what: &str, o: &Outcome) {
    if std::env::var_os("MODELC_GRAD_REPORT").is_some() {
        let worst = o.params.iter().map(|p| p.0).fold(0.0, f64::max);
        eprintln!("{name:<24} {what:<22} loss {:.2e}  grad {worst:.2e}", o.loss);
    }
}

/// The narrow model on random batches of 1-5 (batch 1 first), then the wide one on
/// batches 300, 530 and 1, then random ones.
fn check<N: Subject, W: Subject>(name: &str, data: Data, tol: f64, loss: Loss) {
    // Batch 1 first, always.
    let what = "narrow n = 1, seed = 1";
    let o = run_case::<N>(1, 3, 1, data, loss);
    report(name, what, &o);
    if let Err(e) = check_outcome(&o, tol, what) {
        panic!("{name}: {e}");
    }
    let mut runner = TestRunner::new_with_rng(
        Config { cases: cases(), failure_persistence: None, ..Config::default() },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner
        .run(&(1usize..6, 0u64..1_000_000), |(n, seed)| {
            let what = format!("narrow n = {n}, seed = {seed}");
            let o = run_case::<N>(n, 3, seed, data, loss);
            report(name, &what, &o);
            check_outcome(&o, tol, &what).map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut rng = Rng(0x5eed ^ name.len() as u64);
    for i in 0..(cases() / 8).max(3) {
        let n = [300, 530, 1].get(i as usize).copied().unwrap_or_else(|| 1 + rng.below(600));
        let seed = rng.next() % 1_000_000;
        let what = format!("wide n = {n}, seed = {seed}");
        let o = run_case::<W>(n, 70, seed, data, loss);
        report(name, &what, &o);
        if let Err(e) = check_outcome(&o, tol, &what) {
            panic!("{name}: {e}");
        }
    }
}

macro_rules! grad_test {
    ($test:ident, $model:ident, $data:ident, tol = $tol:expr, |$p:ident, $x:ident, $c:ident| $loss:expr) => {
        // A module per op (`exp::gradient`): the reference's functions keep the ops' names.
        mod $test {
            use super::*;

            pub const TOL: f64 = $tol;

            pub fn loss($p: &[T], $x: &T, $c: &T) -> f64 {
                $loss
            }

            #[test]
            fn gradient() {
                check::<narrow::$model, wide::$model>(stringify!($test), Data::$data, TOL, loss);
            }
        }
    };
}

// ------------------------------------------------------------------------ the checks

grad_test!(exp, Exp, Smooth, tol = 5e-5, |p, x, c| sum(c * exp(x * &p[0])));
grad_test!(ln, Ln, Smooth, tol = 5e-5, |p, x, c| sum(c * ln(square(x * &p[0]) + 1.0)));
grad_test!(log_alias, Log, Smooth, tol = 5e-5, |p, x, c| sum(c * ln(exp(x * &p[0]) + 0.5)));
grad_test!(sqrt, Sqrt, Smooth, tol = 5e-5, |p, x, c| sum(c * sqrt(square(x - &p[0]) + 0.5)));
grad_test!(abs, Abs, AwayFromKinks, tol = 5e-5, |p, x, c| sum(c * abs(x * &p[0])));
grad_test!(relu, Relu, AwayFromKinks, tol = 5e-5, |p, x, c| sum(c * relu(x * &p[0])));
grad_test!(sigmoid, Sigmoid, Smooth, tol = 5e-5, |p, x, c| sum(c * sigmoid(x * &p[0])));
grad_test!(tanh, Tanh, Smooth, tol = 5e-5, |p, x, c| sum(c * tanh(x * &p[0])));
grad_test!(softplus, Softplus, Smooth, tol = 5e-5, |p, x, c| sum(c * softplus(x * &p[0])));
grad_test!(pow_integer, Pow, Smooth, tol = 5e-5, |p, x, c| sum(c * powi(x * &p[0], 3)));
grad_test!(pow_fraction, PowFrac, Smooth, tol = 5e-5, |p, x, c| sum(c * powf(square(x * &p[0]) + 1.0, 1.5)));
grad_test!(neg, Neg, Smooth, tol = 5e-5, |p, x, c| sum(c * -(x * &p[0])));
grad_test!(add_sub_broadcast_both_ways, AddSub, Smooth, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    sum(c * square(x + w - 2.0 * w)) + sum(c * (w - x) * w)
});
grad_test!(div_unit_axis_broadcast, Div, Smooth, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    sum(c * (x / (square(w) + 1.0) + 1.0 / (square(x * w) + 2.0) + w / (square(x) + 1.0)))
});
grad_test!(scalar_param, Scalar, Smooth, tol = 1e-4, |p, x, c| {
    let s = &p[0];
    sum(c * x * s * s) + s.v[0] + sum(s - c * x / s)
});
grad_test!(column_and_row_broadcast, Column, Smooth, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    sum(c * (x + transpose(w)) * matmul(x, w)) + sum(c * (matmul(x, w) - transpose(w)))
});
grad_test!(maximum_minimum, Maximum, AwayFromKinks, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    sum(c * maximum(x * w, T::scalar(0.0)) + c * minimum(x, w * 0.1))
});
grad_test!(sum_axis_0, SumAxis0, Smooth, tol = 5e-5, |p, x, c| sum(sum_axis(c * x * &p[0], 0, false) * &p[0]));
grad_test!(sum_negative_axis, SumAxisNeg, Smooth, tol = 5e-5, |p, x, c| sum(square(sum_axis(c * x * &p[0], 1, false))));
grad_test!(sum_keepdims, SumKeep, Smooth, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    sum(c * x * sum_axis(x * w, 1, true)) + sum(c * sum_axis(x * w, 0, true))
});
grad_test!(mean_all_axes_keepdims, Mean, Smooth, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    mean(c * square(x * w)) + sum(mean_axis(c * x * w, 0, false) * w) + mean(square(mean_axis(c * x, 1, true) * x * w))
});
grad_test!(max_axis_keepdims, MaxAxis, AwayFromKinks, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    sum(max_axis(x * w, 1, false) * sum_axis(c, 1, false))
        + sum(max_axis(x * w, 1, true) * c)
        + sum(max_axis(x * w, 0, false) * w)
});
grad_test!(softmax_last_axis, Softmax, Smooth, tol = 1e-4, |p, x, c| sum(c * softmax(x * &p[0], 1)));
grad_test!(softmax_axis_0, Softmax0, Smooth, tol = 1e-4, |p, x, c| sum(c * softmax(x * &p[0], 0)));
grad_test!(log_softmax_both_axes, LogSoftmax, Smooth, tol = 1e-4, |p, x, c| {
    sum(c * log_softmax(x * &p[0], 1)) + sum(c * log_softmax(x * &p[0], 0))
});
grad_test!(ln_softmax_rewrite, LnSoftmax, Smooth, tol = 1e-4, |p, x, c| {
    mean(-sum_axis(softmax(c, 1) * ln(softmax(x * &p[0], 1)), 1, false))
});
grad_test!(softmax_cross_entropy, SoftmaxXent, Smooth, tol = 1e-4, |p, x, c| mean(softmax_xent(
    matmul(x, &p[0]),
    softmax(c, 1)
)));
grad_test!(sigmoid_cross_entropy, SigmoidXent, Smooth, tol = 5e-5, |p, x, c| sum(sigmoid_xent(x * &p[0], sigmoid(c))));
grad_test!(ln_sigmoid_rewrite, LnSigmoid, Smooth, tol = 5e-5, |p, x, c| sum(c * ln(sigmoid(x * &p[0]))));
grad_test!(hand_written_binary_cross_entropy, HandBce, Smooth, tol = 5e-5, |p, x, c| {
    let q = sigmoid(x * &p[0]);
    let y = sigmoid(c * 3.0);
    mean(-(&y * ln(&q) + (1.0 - &y) * ln(1.0 - &q)))
});
grad_test!(matmul_chain, Matmul, Smooth, tol = 1e-4, |p, x, c| sum(c * matmul(tanh(matmul(x, &p[0])), &p[1])));
grad_test!(matmul_square, MatmulSquare, Smooth, tol = 1e-4, |p, x, c| sum(c * matmul(tanh(matmul(x, &p[0])), &p[1])));
grad_test!(transposes, Transpose, Smooth, tol = 1e-4, |p, x, c| {
    let w = &p[0];
    sum(c * transpose(matmul(w, transpose(x)))) + sum(matmul(transpose(c), x) * w)
});
// stop_gradient: finite differences of a reference see both factors of w, so it has
// the exact test below.
// -------------------------------------------------------------- shape ops (issue 17)
// Tolerances as for the reductions and the products they contain (see the header).

grad_test!(reshape_and_flatten, Reshape, Smooth, tol = 1e-4, |p, x, c| {
    let w = &p[0];
    let h = tanh(matmul(x, w));
    sum(c * matmul(&h, reshape(w, w.c, w.r)))
        + sum(sum_axis(square(&h + 0.5), 1, false) * sum_axis(c, 1, false))
        + sum(c * (x * 2.0) * x)
});
grad_test!(reductions_over_several_axes, MultiAxis, AwayFromKinks, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    let t = x * w;
    sum(max_axis(&t, 1, false) * sum_axis(c, 1, false))
        + sum(max_axis(&t, 1, false))
        + sum(sum_axis(c * &t, 1, false) * sum_axis(c, 1, false))
        + mean(c * square(&t))
        + sum(&t)
});
grad_test!(concat_and_slice, ConcatSlice, Smooth, tol = 1e-4, |p, x, c| {
    let (w, v) = (&p[0], &p[1]);
    let a = x * v;
    let h = tanh(matmul(hcat(&[x, c]), vcat(&[w, &square(w)])));
    let half = &a * 0.5;
    let j = hcat(&[&a, &h, &half]);
    sum(square(cols(&j, 1, j.c - 1))) + sum(c * cols(&j, j.c - x.c, j.c)) + sum(cols(&h, 0, 1) * sum_axis(c, 1, true))
});
grad_test!(where_select_comparisons, Where, Smooth, tol = 5e-5, |p, x, c| {
    let w = &p[0];
    let xw = x * w;
    let first = select(&cmp(x, 0.0, |a, b| a > b), &xw, &(square(&xw) * 0.5));
    let second = select(&cmp(&(c - x), 0.5, |a, b| a <= b), w, &T::scalar(1.0));
    let cond = cmp(&(cmp(x, -0.5, |a, b| a < b) + cmp(x, 1.0, |a, b| a >= b)), 0.0, |a, b| a != b);
    let third = select(&cond, &T::scalar(2.0), &tanh(&xw));
    sum(c * first) + sum(c * second) + sum(c * third)
});

grad_test!(mlp, Mlp, Smooth, tol = 1e-4, |p, x, c| {
    let h = tanh(matmul(x, &p[0]) + &p[1]);
    mean(softmax_xent(matmul(&h, &p[2]) + &p[3], softmax(c, 1)))
});

// ------------------------------------------------- normalization and dropout

/// f64 layer norm of each lane along `axis`, biased variance.
fn layer_norm(a: impl AsRef<T>, axis: usize, eps: f64) -> T {
    lanes(a, axis, |l| {
        let n = l.len() as f64;
        let mean = l.iter().sum::<f64>() / n;
        let var = l.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        l.iter().map(|v| (v - mean) / (var + eps).sqrt()).collect()
    })
}

// layer_norm's gradient divides by sigma and subtracts two row means from g: a row of
// 3 (narrow) to 70 (wide) terms, then the broadcast sum over up to 600 rows of the
// params (the elementwise tolerance's reasoning) through one more subtraction that can
// cancel: `1e-4`, as softmax's; measured worst 1.3e-5 (200 narrow and 25 wide cases).
// Along axis 0 the operand is `tanh(x w) + x`, not `x w`: a column `x[:, j] w_j`
// normalized over the batch does not depend on `w_j` (but for epsilon), so its gradient
// would be all cancellation, measuring nothing. Even so a batch of 2 normalizes each
// column to nearly `(+-1, -+1)` whatever its values: the gradient is mostly
// cancellation there, measured worst 3.4e-5 (all at n = 2; 9.5e-6 wide): `3e-4`.
grad_test!(layer_norm_last_axis, LayerNorm, Smooth, tol = 1e-4, |p, x, c| sum(c * layer_norm(
    x * &p[0] + &p[1],
    1,
    1e-5
)));
grad_test!(layer_norm_axis_0, LayerNorm0, Smooth, tol = 3e-4, |p, x, c| sum(c * layer_norm(
    tanh(x * &p[0]) + x,
    0,
    0.01
)));
grad_test!(layer_norm_in_a_layer, LayerNormMlp, Smooth, tol = 1e-4, |p, x, c| {
    let h = tanh(layer_norm(matmul(x, &p[0]), 1, 1e-5) * &p[1] + &p[2]);
    sum(c * matmul(&h, &p[3]))
});

// ------------------------------------------------------------------- index ops

/// The index of each row's first maximum (argmax along axis 1).
fn argmax_rows(a: &T) -> Vec<usize> {
    (0..a.r)
        .map(|i| {
            let row = &a.v[i * a.c..(i + 1) * a.c];
            (1..a.c).fold(0, |best, j| if row[j] > row[best] { j } else { best })
        })
        .collect()
}
/// `gather(table, ids)`: row `ids[i]` of the table as row `i`.
fn gather(table: &T, ids: &[usize]) -> T {
    T::from_fn(ids.len(), table.c, |i, j| table.at(ids[i], j))
}
/// `-log_softmax(z)[i, y[i]]` per row: [1, n] (1-D).
fn sparse_xent(z: impl AsRef<T>, y: &[usize]) -> T {
    let ls = log_softmax(z, 1);
    T::from_fn(1, y.len(), |_, i| -ls.at(i, y[i]))
}

// gather's gradient is a scatter-add (and `gather_sum`'s, the sum over a bag of ids, a
// scatter of each bag's row to all its ids): each table row sums the adjoint rows whose id
// names it, `c * tanh'(e x) * x` (a few operations each) plus `c`, over up to all n
// rows (n = 530 and 70 ids: ~8 a row, narrow: 3 ids over 1-5 rows): the elementwise
// ops' broadcast-sum reasoning, `5e-5`. The ids come from `argmax` of the inputs, which
// the finite differences do not move, and a tie in f32 is one in f64 (the same values):
// the reference picks the same rows. sparse_softmax_cross_entropy's gradient is
// softmax_cross_entropy's with a one-hot label (`softmax(z) - onehot(y)`, the row sum of
// 3 or 70 exponentials inside), then the matrix products' chain: `1e-4`, as the dense
// cross-entropy and the MLP.
grad_test!(gather_scatter_add, Gather, Smooth, tol = 5e-5, |p, x, c| {
    let (ids, by_x) = (argmax_rows(c), argmax_rows(x));
    // The third term is an embedding bag of two ids per row (`gather_sum`, its gradient
    // the bag scatter): the sum of the two rows.
    let bag = gather(&p[0], &ids) + gather(&p[0], &by_x);
    sum(c * tanh(gather(&p[0], &ids) * x)) + sum(c * gather(&p[0], &by_x)) + sum(x * bag)
});
grad_test!(sparse_softmax_cross_entropy, SparseXent, Smooth, tol = 1e-4, |p, x, c| {
    let (by_c, by_x) = (argmax_rows(c), argmax_rows(x));
    let positive = sum_axis(x, 1, false);
    let y: Vec<usize> = (0..x.r).map(|i| if positive.v[i] > 0.0 { by_c[i] } else { by_x[i] }).collect();
    let z = matmul(tanh(matmul(x, &p[0])), &p[1]);
    let first_row = T::from_fn(1, p[1].c, |_, j| p[1].at(0, j));
    mean(sparse_xent(z, &y)) + sum(sparse_xent(x * first_row, &by_c) * sum_axis(c, 1, false))
});

/// `dropout` through `compute_gradients`, with the mask it drew: `Dropout`'s loss is
/// `sum(c * tanh(h)) + sum(h * p)` with `h = dropout(x * w)` and `p = 0`, so on a batch of
/// one row `d l / d p = h = mask * x * w` gives the mask back (each value must be 0 or
/// `1 / (1 - 0.4)`). The f64 reference is then the loss with that mask fixed (passed as
/// the second row of `c`), and both gradients are held against its finite differences
/// as every op's are (tolerance: elementwise, `5e-5`). Ten draws at each width, every one a
/// fresh mask (a step draws anew).
#[test]
fn dropout_with_the_mask_it_drew() {
    fn loss(p: &[T], x: &T, cm: &T) -> f64 {
        let c = T::from_fn(1, cm.c, |_, j| cm.at(0, j));
        let mask = T::from_fn(1, cm.c, |_, j| cm.at(1, j));
        let h = mask * x * &p[0];
        sum(c * tanh(&h)) + sum(h * &p[1])
    }
    fn draws<M: Subject>(d: usize, seed: u64) {
        let scale = 1.0 / (1.0 - f64::from(0.4f32));
        let mut m = M::make(seed);
        let mut rng = Rng(seed);
        let mut dropped = 0;
        for draw in 0..10 {
            let (x, c) = inputs(1, d, Data::Smooth, &mut rng);
            let params = m.params();
            let (loss32, g) = m.gradients(x.view(), c.view());
            let (xt, ct) = (T::from_view(x.view()), T::from_view(c.view()));
            let mask: Vec<f64> = (0..d)
                .map(|j| {
                    let ratio = g[1].v[j] / (xt.v[j] * params[0].v[j]);
                    let kept = (ratio - scale).abs() < 1e-5 * scale;
                    assert!(kept || ratio.abs() < 1e-6, "draw {draw}: mask value {ratio} is neither 0 nor {scale}");
                    dropped += usize::from(!kept);
                    if kept {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect();
            let cm = T { r: 2, c: d, v: ct.v.iter().copied().chain(mask).collect() };
            let want = loss(&params, &xt, &cm);
            assert!(
                (f64::from(loss32) - want).abs() <= LOSS_TOL * want.abs().max(1.0),
                "draw {draw}: loss {loss32} vs {want}"
            );
            for (k, grad) in g.iter().enumerate() {
                let r = reference(loss, &params, k, &xt, &cm, &mut rng);
                let (err, at) = compare(grad, &r);
                assert!(err <= 5e-5, "draw {draw}: param {k}: error {err:e} at {at}");
            }
        }
        // Some dropped and some kept over the draws (10 d Bernoulli(0.4) draws).
        assert!(dropped > 0 && dropped < 10 * d, "{dropped} of {} dropped", 10 * d);
    }
    draws::<narrow::Dropout>(3, 11);
    draws::<wide::Dropout>(70, 12);
}

#[test]
fn stop_gradient_really_stops_it() {
    // l = sum(c * x * w * sg(w)): d l / d w = sum over rows of c * x * sg(w) (one factor
    // only); checked exactly against the f64 sum, at both widths.
    fn exact<M: Subject>(n: usize, d: usize, seed: u64) {
        let mut rng = Rng(seed);
        let (x, c) = inputs(n, d, Data::Smooth, &mut rng);
        let mut m = M::make(seed);
        let w = m.params().remove(0);
        let (_, g) = m.gradients(x.view(), c.view());
        let want = sum_axis(T::from_view(c.view()) * T::from_view(x.view()) * &w, 0, false);
        let floor = (want.v.iter().map(|v| v * v).sum::<f64>() / want.v.len() as f64).sqrt();
        for (a, b) in g[0].v.iter().zip(&want.v) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(floor), "n = {n}: {:?} vs {:?}", g[0].v, want.v);
        }
    }
    exact::<narrow::StopGradient>(2, 3, 3);
    exact::<wide::StopGradient>(300, 70, 4);
    exact::<wide::StopGradient>(1, 70, 5);
}

/// The comparison rejects a wrong derivative rule at the tolerance it accepts the
/// generated gradient with: for each rule, the gradient of one param is computed in f64
/// by hand twice, once with the right rule and once with a classic mistake, and both are
/// held against the same finite differences as the generated gradient. The right one and
/// the generated one must pass, the wrong one must fail (by far: each errs by 0.5 or more).
#[test]
fn wrong_rules_fail() {
    type Grad = fn(&[T], &T, &T) -> T;
    #[allow(clippy::too_many_arguments)]
    fn rule<M: Subject>(name: &str, n: usize, d: usize, loss: Loss, tol: f64, k: usize, right: Grad, wrong: Grad) {
        let seed = 7 + n as u64;
        let mut rng = Rng(seed);
        let (x, c) = inputs(n, d, Data::Smooth, &mut rng);
        let mut m = M::make(seed);
        let params = m.params();
        let (_, generated) = m.gradients(x.view(), c.view());
        let (xt, ct) = (T::from_view(x.view()), T::from_view(c.view()));
        let r = reference(loss, &params, k, &xt, &ct, &mut rng);
        let what = format!("{name}, n = {n}, d = {d}");
        let (g, at) = compare(&generated[k], &r);
        assert!(g <= tol, "{what}: the generated gradient errs by {g:e} > {tol:e} at {at}");
        let (ok, at) = compare(&right(&params, &xt, &ct), &r);
        assert!(ok <= tol, "{what}: the right rule by hand errs by {ok:e} > {tol:e} at {at}");
        let (bad, _) = compare(&wrong(&params, &xt, &ct), &r);
        assert!(bad > tol, "{what}: the wrong rule errs by only {bad:e} <= {tol:e}");
        if std::env::var_os("MODELC_GRAD_REPORT").is_some() {
            eprintln!("{what}: generated {g:.1e}, right rule {ok:.1e}, wrong rule {bad:.1e} (tol {tol:e})");
        }
    }

    // tanh' = 1 - t^2, not 1 - t.
    fn tanh_rule(p: &[T], x: &T, c: &T, wrong: bool) -> T {
        let t = tanh(x * &p[0]);
        let dt = if wrong { 1.0 - &t } else { 1.0 - &t * &t };
        sum_axis(c * x * dt, 0, false)
    }
    // sigmoid' = s (1 - s), not s.
    fn sigmoid_rule(p: &[T], x: &T, c: &T, wrong: bool) -> T {
        let s = sigmoid(x * &p[0]);
        let ds = if wrong { s.clone() } else { &s * (1.0 - &s) };
        sum_axis(c * x * ds, 0, false)
    }
    // softmax's vector-Jacobian product s * (g - rowsum(g * s)), not s * g.
    fn softmax_rule(p: &[T], x: &T, c: &T, wrong: bool) -> T {
        let s = softmax(x * &p[0], 1);
        let dz = if wrong { &s * c } else { &s * (c - sum_axis(c * &s, 1, true)) };
        sum_axis(x * dz, 0, false)
    }
    // d l / d h = g v^T, not g v (v is square, so the shapes allow the mistake).
    fn matmul_rule(p: &[T], x: &T, c: &T, wrong: bool) -> T {
        let h = tanh(matmul(x, &p[0]));
        let dh = if wrong { matmul(c, &p[1]) } else { matmul(c, transpose(&p[1])) };
        matmul(transpose(x), dh * (1.0 - &h * &h))
    }
    // A [d] param broadcast over rows: its gradient sums over axis 0, not axis 1 (n = d,
    // so the shapes allow the mistake).
    fn sum_to_rule(p: &[T], x: &T, c: &T, wrong: bool) -> T {
        let w = &p[0];
        let g = -2.0 * c * (x - w) + c * (2.0 * w - x);
        sum_axis(g, if wrong { 1 } else { 0 }, false)
    }

    macro_rules! rules {
        ($($name:literal $model:ident $test:ident $k:literal $f:ident;)*) => {$(
            for (n, d) in [(5, 3), (300, 70)] {
                let right: Grad = |p, x, c| $f(p, x, c, false);
                let wrong: Grad = |p, x, c| $f(p, x, c, true);
                if d == 3 {
                    rule::<narrow::$model>($name, n, d, $test::loss, $test::TOL, $k, right, wrong);
                } else {
                    rule::<wide::$model>($name, n, d, $test::loss, $test::TOL, $k, right, wrong);
                }
            }
        )*};
    }
    rules! {
        "tanh' = 1 - t" Tanh tanh 0 tanh_rule;
        "sigmoid' = s" Sigmoid sigmoid 0 sigmoid_rule;
        "softmax without the rowsum term" Softmax softmax_last_axis 0 softmax_rule;
        "matmul's gradient through w, not w^T" MatmulSquare matmul_square 0 matmul_rule;
    }
    for (n, d) in [(3, 3), (70, 70)] {
        let right: Grad = |p, x, c| sum_to_rule(p, x, c, false);
        let wrong: Grad = |p, x, c| sum_to_rule(p, x, c, true);
        let name = "sum_to over the wrong axis";
        let (loss, tol) = (add_sub_broadcast_both_ways::loss, add_sub_broadcast_both_ways::TOL);
        if d == 3 {
            rule::<narrow::AddSub>(name, n, d, loss, tol, 0, right, wrong);
        } else {
            rule::<wide::AddSub>(name, n, d, loss, tol, 0, right, wrong);
        }
    }
}
