//! Issue 18's CNN train steps (item 5), f32, one thread: the generated `train_step`
//! against a hand-written ndarray step of the same math (what a Rust user writes without
//! modelc: im2col into an `Array2`, ndarray's `dot`, its own pooling, backward and SGD).
//!
//! - **C1** "Deep MNIST", batch 50: conv 5x5x32 same and relu, max_pool 2, conv 5x5x64
//!   same and relu, max_pool 2, flatten 3136, dense 1024 and relu, dropout 0.5, dense 10;
//!   4.10 GFLOP per step (forward, weight gradients, input gradients but the first layer's).
//! - **C2** LeNet-small, batch 64: conv 3x3x16 valid + relu, max_pool 2, conv 3x3x32
//!   valid + relu, max_pool 2, flatten 800, dense 10; 0.242 GFLOP per step.
//!
//! Both: softmax cross-entropy on u32 labels (batch mean), plain SGD at 0.01,
//! truncated-normal (std 0.1) weights, biases 0.1, 16 NHWC 28x28x1 random-normal batches
//! from a fixed seed, cycled (as `../shared/peers/peer_cnn.py`). Criterion's throughput is
//! in elements = FLOPs, so its `Gelem/s` reads as GFLOP/s per step.
//!
//! Before measuring, the setup asserts (so a `--test` run checks them too):
//! - the hand-written step is the generated step's math: from the same params, three
//!   steps of each (dropout at rate 0 in a twin of C1, since the two draw different
//!   masks) leave params whose changes agree to 1e-3 of their norm;
//! - the generated steps allocate nothing after their first call (a counting allocator).
//!
//! `cargo bench -p modelc-bench --bench cnn` (about a minute); `-- --test` runs the
//! checks and each step once; `MODELC_CNN_CPU=1` prints CPU ms per generated step
//! instead of criterion's wall times (`=c1` or `=c2`: that step only; see `cpu_report`);
//! `--features profile` prints each step's per-op profile (products and passes) instead. Figures and the peers' ratios: README, "Benchmarks".

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelc::model;
use modelc::ndarray::{s, Array1, Array2, Array4, ArrayView1, ArrayView2, ArrayView4, Axis, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The tests' counting allocator (one copy for the tests and this bench).
#[path = "../../tests/common/mod.rs"]
mod counting;
use counting::count;

model! {
    struct C1 {
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
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        optimizer sgd(learning_rate = 0.01);
    }
}

model! {
    /// C1 with dropout at rate 0 (the identity), for the same-math check only.
    struct C1Check {
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
        let h3 = dropout(relu(matmul(flatten(h2), w3) + b3), rate = 0.0);
        let logits = matmul(h3, w4) + b4;
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        optimizer sgd(learning_rate = 0.01);
    }
}

model! {
    struct C2 {
        input x: [batch, 28, 28, 1];
        input y: [batch] as u32;
        param k1: [3, 3, 1, 16] = truncated_normal(std = 0.1);
        param b1: [16] = constant(0.1);
        param k2: [3, 3, 16, 32] = truncated_normal(std = 0.1);
        param b2: [32] = constant(0.1);
        param w3: [800, 10] = truncated_normal(std = 0.1);
        param b3: [10] = constant(0.1);
        let h1 = max_pool(relu(conv2d(x, k1) + b1));
        let h2 = max_pool(relu(conv2d(h1, k2) + b2));
        let logits = matmul(flatten(h2), w3) + b3;
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        optimizer sgd(learning_rate = 0.01);
    }
}

const LR: f32 = 0.01;
const BATCHES: usize = 16;

/// FLOPs of one step (`2 * outputs * fan_in` per product and pass; no input gradient for
/// the first layer), as `peer_cnn.py --flops` counts them.
fn step_flops(batch: usize, convs: &[(usize, usize, usize)], dense: &[(usize, usize)]) -> u64 {
    // convs: (output pixels, fan_in, co); dense: (fan_in, out).
    let mut products: Vec<usize> = convs.iter().map(|&(p, f, c)| 2 * batch * p * f * c).collect();
    products.extend(dense.iter().map(|&(f, o)| 2 * batch * f * o));
    let forward: usize = products.iter().sum();
    (forward + forward + forward - products[0]) as u64
}

// --- the hand-written step ---------------------------------------------------------

/// A conv layer's geometry: a `k x k` kernel, stride 1, `pad` on each side ("same" for
/// odd `k` pads `(k - 1) / 2` on both sides, "valid" 0).
#[derive(Clone, Copy)]
struct Conv {
    k: usize,
    pad: usize,
}

impl Conv {
    fn out(self, size: usize) -> usize {
        size + 2 * self.pad - self.k + 1
    }

    /// `[n oh ow, k k ci]`: each output pixel's receptive field in HWIO order, so that
    /// `cols.dot(kernel as [k k ci, co])` is the convolution.
    fn im2col(self, x: ArrayView4<f32>) -> Array2<f32> {
        let (n, h, w, ci) = x.dim();
        let (oh, ow, k) = (self.out(h), self.out(w), self.k);
        let mut cols = Array2::zeros((n * oh * ow, k * k * ci));
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut row = cols.row_mut((b * oh + oy) * ow + ox);
                    for i in 0..k {
                        let Some(iy) = (oy + i).checked_sub(self.pad).filter(|&iy| iy < h) else { continue };
                        for j in 0..k {
                            let Some(ix) = (ox + j).checked_sub(self.pad).filter(|&ix| ix < w) else { continue };
                            let at = (i * k + j) * ci;
                            row.slice_mut(s![at..at + ci]).assign(&x.slice(s![b, iy, ix, ..]));
                        }
                    }
                }
            }
        }
        cols
    }

    /// The adjoint of `im2col`: every row's taps added back into the image they came from.
    fn col2im(self, cols: ArrayView2<f32>, (n, h, w, ci): (usize, usize, usize, usize)) -> Array4<f32> {
        let (oh, ow, k) = (self.out(h), self.out(w), self.k);
        let mut x = Array4::zeros((n, h, w, ci));
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = cols.row((b * oh + oy) * ow + ox);
                    for i in 0..k {
                        let Some(iy) = (oy + i).checked_sub(self.pad).filter(|&iy| iy < h) else { continue };
                        for j in 0..k {
                            let Some(ix) = (ox + j).checked_sub(self.pad).filter(|&ix| ix < w) else { continue };
                            let at = (i * k + j) * ci;
                            let mut cell = x.slice_mut(s![b, iy, ix, ..]);
                            cell += &row.slice(s![at..at + ci]);
                        }
                    }
                }
            }
        }
        x
    }
}

/// 2x2 max pool, stride 2, floor: the pooled image and each output's chosen cell (0..4,
/// the first maximum in scan order, as TensorFlow).
fn max_pool(x: ArrayView4<f32>) -> (Array4<f32>, Array4<u8>) {
    let (n, h, w, c) = x.dim();
    let (oh, ow) = (h / 2, w / 2);
    let mut out = Array4::zeros((n, oh, ow, c));
    let mut arg = Array4::zeros((n, oh, ow, c));
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let (mut best, mut at) = (x[[b, 2 * oy, 2 * ox, ch]], 0u8);
                    for (cell, (dy, dx)) in [(0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                        let v = x[[b, 2 * oy + dy, 2 * ox + dx, ch]];
                        if v > best {
                            (best, at) = (v, cell as u8 + 1);
                        }
                    }
                    out[[b, oy, ox, ch]] = best;
                    arg[[b, oy, ox, ch]] = at;
                }
            }
        }
    }
    (out, arg)
}

/// The gradient of [`max_pool`]: each output's gradient to its chosen cell.
fn max_pool_grad(g: ArrayView4<f32>, arg: ArrayView4<u8>, dim: (usize, usize, usize, usize)) -> Array4<f32> {
    let mut dx = Array4::zeros(dim);
    for ((b, oy, ox, ch), &a) in arg.indexed_iter() {
        let (dy, dxx) = (usize::from(a / 2), usize::from(a % 2));
        dx[[b, 2 * oy + dy, 2 * ox + dxx, ch]] = g[[b, oy, ox, ch]];
    }
    dx
}

/// One conv + bias + relu + max_pool stage's forward: what its backward needs.
struct Stage {
    cols: Array2<f32>,
    /// The relu's output, `[n, oh, ow, co]`.
    act: Array4<f32>,
    arg: Array4<u8>,
    pooled: Array4<f32>,
}

fn stage(x: ArrayView4<f32>, conv: Conv, k: ArrayView4<f32>, bias: ArrayView1<f32>) -> Stage {
    let (n, h, w, _) = x.dim();
    let (kh, kw, ci, co) = k.dim();
    let cols = conv.im2col(x);
    let kernel = k.into_shape_with_order((kh * kw * ci, co)).expect("HWIO is standard layout");
    let mut z = cols.dot(&kernel);
    z += &bias;
    z.mapv_inplace(|v| v.max(0.0));
    let act = z.into_shape_with_order((n, conv.out(h), conv.out(w), co)).expect("a fresh array");
    let (pooled, arg) = max_pool(act.view());
    Stage { cols, act, arg, pooled }
}

/// A stage's backward from the gradient of its pooled output: `(dk, db, dcols)` with
/// `dcols` the gradient of the im2col rows (the caller col2im's it if it needs `dx`).
fn stage_grad(
    st: &Stage,
    g: ArrayView4<f32>,
    k: ArrayView4<f32>,
    need_dx: bool,
) -> (Array4<f32>, Array1<f32>, Option<Array2<f32>>) {
    let (kh, kw, ci, co) = k.dim();
    let mut dz = max_pool_grad(g, st.arg.view(), st.act.dim());
    Zip::from(&mut dz).and(&st.act).for_each(|d, &a| {
        if a <= 0.0 {
            *d = 0.0;
        }
    });
    let rows = dz.len() / co;
    let dz = dz.into_shape_with_order((rows, co)).expect("a fresh array");
    let dk = st.cols.t().dot(&dz).into_shape_with_order((kh, kw, ci, co)).expect("a fresh array");
    let db = dz.sum_axis(Axis(0));
    let dcols = need_dx.then(|| dz.dot(&k.into_shape_with_order((kh * kw * ci, co)).expect("HWIO").t()));
    (dk, db, dcols)
}

/// `mean(sparse_softmax_cross_entropy(z, y))`'s gradient, `(softmax(z) - one_hot(y)) / n`,
/// and the loss.
fn xent_grad(z: &Array2<f32>, y: ArrayView1<u32>) -> (f32, Array2<f32>) {
    let n = z.nrows() as f32;
    let mut g = z.clone();
    let mut loss = 0.0;
    for (r, (mut row, &label)) in g.rows_mut().into_iter().zip(y).enumerate() {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        loss += max + sum.ln() - z[[r, label as usize]];
        row.mapv_inplace(|v| v / sum / n);
        row[label as usize] -= 1.0 / n;
    }
    (loss / n, g)
}

fn sgd<D: modelc::ndarray::Dimension>(p: &mut modelc::ndarray::Array<f32, D>, g: &modelc::ndarray::Array<f32, D>) {
    p.scaled_add(-LR, g);
}

/// C1's params and step, by hand.
#[derive(Clone)]
struct HandC1 {
    k1: Array4<f32>,
    b1: Array1<f32>,
    k2: Array4<f32>,
    b2: Array1<f32>,
    w3: Array2<f32>,
    b3: Array1<f32>,
    w4: Array2<f32>,
    b4: Array1<f32>,
    rng: ChaCha8Rng,
    /// The dropout rate (0.5; 0 for the same-math check).
    rate: f32,
}

const SAME5: Conv = Conv { k: 5, pad: 2 };
const VALID3: Conv = Conv { k: 3, pad: 0 };

impl HandC1 {
    fn step(&mut self, x: ArrayView4<f32>, y: ArrayView1<u32>) -> f32 {
        let n = x.dim().0;
        let s1 = stage(x, SAME5, self.k1.view(), self.b1.view());
        let s2 = stage(s1.pooled.view(), SAME5, self.k2.view(), self.b2.view());
        let flat = s2.pooled.view().into_shape_with_order((n, 3136)).expect("a fresh array");
        let mut h3 = flat.dot(&self.w3);
        h3 += &self.b3;
        h3.mapv_inplace(|v| v.max(0.0));
        let keep = 1.0 / (1.0 - self.rate);
        let mask =
            Array2::from_shape_simple_fn(h3.dim(), || if self.rng.gen::<f32>() >= self.rate { keep } else { 0.0 });
        let d3 = &h3 * &mask;
        let mut z = d3.dot(&self.w4);
        z += &self.b4;
        let (loss, dz) = xent_grad(&z, y);
        let dw4 = d3.t().dot(&dz);
        let db4 = dz.sum_axis(Axis(0));
        let mut dh3 = dz.dot(&self.w4.t()) * &mask;
        Zip::from(&mut dh3).and(&h3).for_each(|d, &h| {
            if h <= 0.0 {
                *d = 0.0;
            }
        });
        let dw3 = flat.t().dot(&dh3);
        let db3 = dh3.sum_axis(Axis(0));
        let dflat = dh3.dot(&self.w3.t()).into_shape_with_order(s2.pooled.dim()).expect("a fresh array");
        let (dk2, db2, dcols2) = stage_grad(&s2, dflat.view(), self.k2.view(), true);
        let dp1 = SAME5.col2im(dcols2.expect("asked for").view(), s1.pooled.dim());
        let (dk1, db1, _) = stage_grad(&s1, dp1.view(), self.k1.view(), false);
        sgd(&mut self.k1, &dk1);
        sgd(&mut self.b1, &db1);
        sgd(&mut self.k2, &dk2);
        sgd(&mut self.b2, &db2);
        sgd(&mut self.w3, &dw3);
        sgd(&mut self.b3, &db3);
        sgd(&mut self.w4, &dw4);
        sgd(&mut self.b4, &db4);
        loss
    }
}

/// C2's params and step, by hand.
#[derive(Clone)]
struct HandC2 {
    k1: Array4<f32>,
    b1: Array1<f32>,
    k2: Array4<f32>,
    b2: Array1<f32>,
    w3: Array2<f32>,
    b3: Array1<f32>,
}

impl HandC2 {
    fn step(&mut self, x: ArrayView4<f32>, y: ArrayView1<u32>) -> f32 {
        let n = x.dim().0;
        let s1 = stage(x, VALID3, self.k1.view(), self.b1.view());
        let s2 = stage(s1.pooled.view(), VALID3, self.k2.view(), self.b2.view());
        let flat = s2.pooled.view().into_shape_with_order((n, 800)).expect("a fresh array");
        let mut z = flat.dot(&self.w3);
        z += &self.b3;
        let (loss, dz) = xent_grad(&z, y);
        let dw3 = flat.t().dot(&dz);
        let db3 = dz.sum_axis(Axis(0));
        let dflat = dz.dot(&self.w3.t()).into_shape_with_order(s2.pooled.dim()).expect("a fresh array");
        let (dk2, db2, dcols2) = stage_grad(&s2, dflat.view(), self.k2.view(), true);
        let dp1 = VALID3.col2im(dcols2.expect("asked for").view(), s1.pooled.dim());
        let (dk1, db1, _) = stage_grad(&s1, dp1.view(), self.k1.view(), false);
        sgd(&mut self.k1, &dk1);
        sgd(&mut self.b1, &db1);
        sgd(&mut self.k2, &dk2);
        sgd(&mut self.b2, &db2);
        sgd(&mut self.w3, &dw3);
        sgd(&mut self.b3, &db3);
        loss
    }
}

// --- setup and checks ----------------------------------------------------------------

/// `BATCHES` batches of NHWC 28x28x1 standard-normal images (Box-Muller over a ChaCha8
/// stream) and labels in 0..10.
fn batches(batch: usize, seed: u64) -> Vec<(Array4<f32>, Array1<u32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..BATCHES)
        .map(|_| {
            let x = Array4::from_shape_simple_fn((batch, 28, 28, 1), || {
                let (u, v): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            });
            let y = Array1::from_shape_simple_fn(batch, || rng.gen_range(0..10u32));
            (x, y)
        })
        .collect()
}

/// How far apart two runs' param changes are: `|a - b| / |a - start|` over all params
/// (flattened and concatenated).
fn relative_change_gap(start: &[Vec<f32>], a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut gap, mut change) = (0.0f64, 0.0f64);
    for ((s, a), b) in start.iter().zip(a).zip(b) {
        assert_eq!((s.len(), a.len()), (b.len(), b.len()));
        for ((&s, &a), &b) in s.iter().zip(a).zip(b) {
            gap += f64::from(a - b).powi(2);
            change += f64::from(a - s).powi(2);
        }
    }
    (gap / change).sqrt()
}

fn flat<D: modelc::ndarray::Dimension>(a: &modelc::ndarray::Array<f32, D>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn check_c1(data: &[(Array4<f32>, Array1<u32>)]) {
    let mut m = C1Check::with_seed(42);
    let mut h = HandC1 {
        k1: m.k1.clone(),
        b1: m.b1.clone(),
        k2: m.k2.clone(),
        b2: m.b2.clone(),
        w3: m.w3.clone(),
        b3: m.b3.clone(),
        w4: m.w4.clone(),
        b4: m.b4.clone(),
        rng: ChaCha8Rng::seed_from_u64(1),
        rate: 0.0,
    };
    let params = |m: &C1Check| {
        vec![flat(&m.k1), flat(&m.b1), flat(&m.k2), flat(&m.b2), flat(&m.w3), flat(&m.b3), flat(&m.w4), flat(&m.b4)]
    };
    let start = params(&m);
    for (x, y) in &data[..3] {
        let (lg, lh) = (m.train_step(x.view(), y.view()).expect("a C1 step"), h.step(x.view(), y.view()));
        assert!((lg - lh).abs() <= 1e-3 * lg.abs().max(1.0), "C1 loss: generated {lg}, hand-written {lh}");
    }
    let hand =
        vec![flat(&h.k1), flat(&h.b1), flat(&h.k2), flat(&h.b2), flat(&h.w3), flat(&h.b3), flat(&h.w4), flat(&h.b4)];
    let gap = relative_change_gap(&start, &params(&m), &hand);
    assert!(
        gap < 1e-3,
        "C1: the hand-written step's param changes differ from the generated step's by {gap:.2e} of their norm"
    );
    println!("C1 same-math check: param changes after 3 steps agree to {gap:.1e} of their norm");
}

fn check_c2(data: &[(Array4<f32>, Array1<u32>)]) {
    let mut m = C2::with_seed(42);
    let mut h = HandC2 {
        k1: m.k1.clone(),
        b1: m.b1.clone(),
        k2: m.k2.clone(),
        b2: m.b2.clone(),
        w3: m.w3.clone(),
        b3: m.b3.clone(),
    };
    let params = |m: &C2| vec![flat(&m.k1), flat(&m.b1), flat(&m.k2), flat(&m.b2), flat(&m.w3), flat(&m.b3)];
    let start = params(&m);
    for (x, y) in &data[..3] {
        let (lg, lh) = (m.train_step(x.view(), y.view()).expect("a C2 step"), h.step(x.view(), y.view()));
        assert!((lg - lh).abs() <= 1e-3 * lg.abs().max(1.0), "C2 loss: generated {lg}, hand-written {lh}");
    }
    let hand = vec![flat(&h.k1), flat(&h.b1), flat(&h.k2), flat(&h.b2), flat(&h.w3), flat(&h.b3)];
    let gap = relative_change_gap(&start, &params(&m), &hand);
    assert!(
        gap < 1e-3,
        "C2: the hand-written step's param changes differ from the generated step's by {gap:.2e} of their norm"
    );
    println!("C2 same-math check: param changes after 3 steps agree to {gap:.1e} of their norm");
}

fn bench(c: &mut Criterion) {
    let c1_data = batches(50, 7);
    let c2_data = batches(64, 7);
    check_c1(&c1_data);
    check_c2(&c2_data);

    let c1_flops = step_flops(50, &[(784, 25, 32), (196, 800, 64)], &[(3136, 1024), (1024, 10)]);
    let c2_flops = step_flops(64, &[(676, 9, 16), (121, 144, 32)], &[(800, 10)]);
    assert_eq!(c1_flops, 4_102_451_200, "C1's FLOPs as peer_cnn.py --flops counts them");
    println!("C1: {:.3} GFLOP per step; C2: {:.3} GFLOP per step", c1_flops as f64 / 1e9, c2_flops as f64 / 1e9);

    let mut g1 = C1::with_seed(42);
    let mut g2 = C2::with_seed(42);
    let mut h1 = HandC1 {
        k1: g1.k1.clone(),
        b1: g1.b1.clone(),
        k2: g1.k2.clone(),
        b2: g1.b2.clone(),
        w3: g1.w3.clone(),
        b3: g1.b3.clone(),
        w4: g1.w4.clone(),
        b4: g1.b4.clone(),
        rng: ChaCha8Rng::seed_from_u64(1),
        rate: 0.5,
    };
    let mut h2 = HandC2 {
        k1: g2.k1.clone(),
        b1: g2.b1.clone(),
        k2: g2.k2.clone(),
        b2: g2.b2.clone(),
        w3: g2.w3.clone(),
        b3: g2.b3.clone(),
    };
    // The first call sizes the workspace; after it, nothing.
    let (x, y) = &c1_data[0];
    g1.train_step(x.view(), y.view()).expect("a C1 step");
    let (x, y) = &c2_data[0];
    g2.train_step(x.view(), y.view()).expect("a C2 step");
    if modelc::profile::ENABLED {
        // `--features profile`: the per-op profile of each step (the log allocates, so
        // no allocation check and no timing after it).
        profile_steps("C1", &mut |i| drop(g1.train_step(c1_data[i].0.view(), c1_data[i].1.view())));
        profile_steps("C2", &mut |i| drop(g2.train_step(c2_data[i].0.view(), c2_data[i].1.view())));
        return;
    }
    let (x1, y1) = &c1_data[1];
    let (x2, y2) = &c2_data[1];
    let allocs = (
        count(|| {
            let _ = g1.train_step(x1.view(), y1.view());
        }),
        count(|| {
            let _ = g2.train_step(x2.view(), y2.view());
        }),
    );
    assert_eq!(allocs, (0, 0), "allocations in one generated C1 and C2 step after the first");
    println!("allocations per generated step after the first: C1 0, C2 0");

    if let Some(only) = std::env::var_os("MODELC_CNN_CPU") {
        // `MODELC_CNN_CPU=c2`: that step only (for `perf record`); any other value: both.
        let only = only.to_string_lossy().into_owned();
        let secs: f64 = std::env::var("MODELC_CNN_CPU_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
        let mut i = 0;
        if only != "c2" {
            cpu_report("c1/modelc", secs, || {
                i = (i + 1) % BATCHES;
                let _ = g1.train_step(c1_data[i].0.view(), c1_data[i].1.view());
            });
        }
        if only != "c1" {
            cpu_report("c2/modelc", secs, || {
                i = (i + 1) % BATCHES;
                let _ = g2.train_step(c2_data[i].0.view(), c2_data[i].1.view());
            });
        }
        return;
    }

    let mut group = c.benchmark_group("cnn");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(10);
    group.throughput(Throughput::Elements(c1_flops));
    let mut i = 0;
    group.bench_function(BenchmarkId::new("c1", "modelc"), |b| {
        b.iter(|| {
            i = (i + 1) % BATCHES;
            g1.train_step(c1_data[i].0.view(), c1_data[i].1.view())
        })
    });
    group.bench_function(BenchmarkId::new("c1", "ndarray"), |b| {
        b.iter(|| {
            i = (i + 1) % BATCHES;
            h1.step(c1_data[i].0.view(), c1_data[i].1.view())
        })
    });
    group.throughput(Throughput::Elements(c2_flops));
    group.bench_function(BenchmarkId::new("c2", "modelc"), |b| {
        b.iter(|| {
            i = (i + 1) % BATCHES;
            g2.train_step(c2_data[i].0.view(), c2_data[i].1.view())
        })
    });
    group.bench_function(BenchmarkId::new("c2", "ndarray"), |b| {
        b.iter(|| {
            i = (i + 1) % BATCHES;
            h2.step(c2_data[i].0.view(), c2_data[i].1.view())
        })
    });
    group.finish();
}

/// `--features profile`: the per-op profile of 40 runs of `step` (batch `i % BATCHES`;
/// `modelc::profile::report`: medians over the runs).
fn profile_steps(name: &str, step: &mut dyn FnMut(usize)) {
    let _ = modelc::profile::take();
    let runs: Vec<(u64, Vec<modelc::profile::Record>)> = (0..40)
        .map(|i| {
            let start = std::time::Instant::now();
            step(i % BATCHES);
            (start.elapsed().as_nanos() as u64, modelc::profile::take())
        })
        .collect();
    // A step's call sequence can differ from run to run (the non-finite guard stages an
    // update only when its bound asks for it): the report takes the runs of the most
    // common sequence.
    let key = |r: &[modelc::profile::Record]| r.iter().map(|x| (x.name, x.dims)).collect::<Vec<_>>();
    let common = runs
        .iter()
        .max_by_key(|(_, r)| runs.iter().filter(|(_, q)| key(q) == key(r)).count())
        .map(|(_, r)| key(r))
        .unwrap_or_default();
    let runs: Vec<_> = runs.into_iter().filter(|(_, r)| key(r) == common).collect();
    println!("{name}, median of {} of 40 steps (one call sequence):\n{}", runs.len(), modelc::profile::report(&runs));
}

/// This thread's CPU time in clock ticks (utime + stime of /proc/thread-self/stat).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// `MODELC_CNN_CPU=1`: each generated step run for about `MODELC_CNN_CPU_SECS` (default
/// 2) seconds of this thread's CPU time, printed as CPU ms per step beside the wall ms
/// (as `conv.rs`'s `MODELC_CONV_CPU`): on the shared 2-core machine the wall time swings
/// by 30-60% with the other agents' load, the CPU time a step gets much less. Linux only
/// (10 ms ticks: within 1% at 2 s). For before/after ratios of the generated step; the
/// peers' figures are wall times, so the side-by-side ratios use criterion's.
fn cpu_report(label: &str, secs: f64, mut step: impl FnMut()) {
    let Some(t0) = cpu_ticks() else {
        println!("{label}: no /proc/thread-self/stat");
        return;
    };
    let (start, mut calls) = (std::time::Instant::now(), 0u64);
    let target = (secs * 100.0) as u64;
    while cpu_ticks().unwrap_or(u64::MAX) - t0 < target {
        step();
        calls += 1;
    }
    let cpu = (cpu_ticks().unwrap_or(t0) - t0) as f64 * 10.0 / calls as f64;
    let wall = start.elapsed().as_secs_f64() * 1e3 / calls as f64;
    println!("{label}: {cpu:.3} CPU ms per step, {wall:.3} wall ms ({calls} steps)");
}

criterion_group!(benches, bench);
criterion_main!(benches);
