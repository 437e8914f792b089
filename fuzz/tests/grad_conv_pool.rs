//! The fused conv + bias + max_pool (`max_pool(conv2d(..) + b)`, which the compiler
//! computes as one kernel per image with a u8 argmax: `ops/pool.rs`, `fuse_conv_pool`)
//! against f64 finite differences of an f64 re-implementation of the same loss written
//! here (plain loops, TF's padding rule, the first maximum of each window over its valid
//! cells), as fuzz/tests/grad_conv.rs does for the conv alone (its comparison copied).
//!
//! Each model is `sum(c * square(max_pool(conv2d(x * s, w, ..) + b, ..)))` with random
//! weights `c` of the pooled shape and three params: the per-pixel scale `s` (its
//! gradient is the conv's input-gradient pass), the kernel `w` (the weight gradient
//! through the scatter of the u8 argmax) and the bias `b` (the scatter summed). The
//! variants: 16 output channels (the AVX-512 pooling path) and 3 (the portable one);
//! "valid" conv with floor pooling (5x4 -> 2x2: a dropped row); "same" conv pooled 3x3
//! stride 2 "same" (overlapping windows, padded cells); a strided conv pooled 2x2
//! stride 1 (overlapping) without a bias (its `b` is in the loss as `sum(b * b)`). Each test first checks that the compiler did
//! fuse (`explain()`), so a change to the rewrite's conditions cannot silently turn this
//! into a test of the unfused ops.
//!
//! Away from ties: random data and a small difference step (`1e-5` on a param, so that
//! a conv value moves by about 1e-5), so a window's two largest values are rarely that
//! close (with grad_conv.rs's `1e-3` they were, in every variant: errors of 2e-3 to
//! 9e-3 from a changed winner), and the default seeds are checked not to be; ties themselves are checked bit for bit against
//! the unfused ops in runtime/src/conv/fused.rs and tests/conv.rs. Tolerance `1e-4` as
//! grad_conv.rs; measured worst over the default cases 5.2e-7 to 7.3e-7 per variant
//! (`MODELC_GRAD_REPORT=1` prints them, with `-- --nocapture`).
//!
//! Cases: `MODELC_CONV_GRAD_CASES` (default 3: batches 1, 2 and 3; about a second of
//! test time) per variant. A long run can meet a near-tie, where the f32 forward pass and
//! the f64 reference pick different cells: `MODELC_CONV_GRAD_CASES=30` failed one case
//! of 90 at 1.7e-4 (`StridedNoBias16`, n = 3, seed 27), every other under 1e-6.

use modelc::model;
use modelc::ndarray::{Array, Array4};

/// TF's output size and zero rows/columns before the image along one axis.
fn geometry(size: usize, k: usize, stride: usize, dilation: usize, same: bool) -> (usize, usize) {
    let window = (k - 1) * dilation + 1;
    if same {
        let out = size.div_ceil(stride);
        let total = ((out - 1) * stride + window).saturating_sub(size);
        (out, total / 2)
    } else {
        ((size - window) / stride + 1, 0)
    }
}

/// One variant: the conv `(kh, kw, co, stride, same)` on 7x6x2 images and the pool
/// `(size, stride, same)`.
#[derive(Clone, Copy, Debug)]
struct Geo {
    k: usize,
    co: usize,
    stride: usize,
    same: bool,
    pk: usize,
    ps: usize,
    psame: bool,
    bias: bool,
}

const H: usize = 7;
const W: usize = 6;
const CI: usize = 2;

impl Geo {
    /// The conv's output `(oh, ow, pad top, pad left)`.
    fn conv(&self) -> (usize, usize, usize, usize) {
        let (oh, pt) = geometry(H, self.k, self.stride, 1, self.same);
        let (ow, pl) = geometry(W, self.k, self.stride, 1, self.same);
        (oh, ow, pt, pl)
    }
    /// The pooled output `(ph, pw, pad top, pad left)`.
    fn pool(&self) -> (usize, usize, usize, usize) {
        let (oh, ow, _, _) = self.conv();
        let (ph, pt) = geometry(oh, self.pk, self.ps, 1, self.psame);
        let (pw, pl) = geometry(ow, self.pk, self.ps, 1, self.psame);
        (ph, pw, pt, pl)
    }
}

/// The f64 loss with `params = [s, w, b]` flattened row-major.
fn loss(g: &Geo, n: usize, params: &[Vec<f64>], x: &[f64], c: &[f64]) -> f64 {
    let (s, w, b) = (&params[0], &params[1], &params[2]);
    let (oh, ow, pt, pl) = g.conv();
    let (ph, pw, qt, ql) = g.pool();
    let mut y = vec![0.0; n * oh * ow * g.co];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..g.co {
                    let mut v = if g.bias { b[o] } else { 0.0 };
                    for i in 0..g.k {
                        for j in 0..g.k {
                            let iy = (oy * g.stride + i) as isize - pt as isize;
                            let ix = (ox * g.stride + j) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= H as isize || ix >= W as isize {
                                continue;
                            }
                            for ch in 0..CI {
                                let pix = (iy as usize * W + ix as usize) * CI + ch;
                                v += x[bi * H * W * CI + pix] * s[pix] * w[((i * g.k + j) * CI + ch) * g.co + o];
                            }
                        }
                    }
                    y[((bi * oh + oy) * ow + ox) * g.co + o] = v;
                }
            }
        }
    }
    let mut total = 0.0;
    for bi in 0..n {
        for py in 0..ph {
            for px in 0..pw {
                for o in 0..g.co {
                    let mut m: Option<f64> = None;
                    for i in 0..g.pk {
                        for j in 0..g.pk {
                            let iy = (py * g.ps + i) as isize - qt as isize;
                            let ix = (px * g.ps + j) as isize - ql as isize;
                            if iy < 0 || ix < 0 || iy >= oh as isize || ix >= ow as isize {
                                continue;
                            }
                            let v = y[((bi * oh + iy as usize) * ow + ix as usize) * g.co + o];
                            if m.is_none_or(|m| v > m) {
                                m = Some(v);
                            }
                        }
                    }
                    let m = m.expect("every window holds a cell");
                    total += c[((bi * ph + py) * pw + px) * g.co + o] * m * m;
                }
            }
        }
    }
    // Without a bias in the conv, the variant's loss adds `sum(b * b)` (every param
    // needs a gradient).
    if !g.bias {
        total += b.iter().map(|v| v * v).sum::<f64>();
    }
    total
}

trait Subject {
    const GEO: Geo;
    fn make(seed: u64) -> Self;
    fn params(&self) -> Vec<Vec<f64>>;
    fn gradients(&mut self, x: &Array4<f32>, c: &Array4<f32>) -> (f32, Vec<Vec<f64>>);
    fn explain() -> &'static str;
}

fn flat<D: modelc::ndarray::Dimension>(a: &Array<f32, D>) -> Vec<f64> {
    a.iter().map(|&v| f64::from(v)).collect()
}

macro_rules! variant {
    ($name:ident, $test:ident, $co:literal, [$ph:literal, $pw:literal], $geo:expr, $pre:expr, [$($pool:tt)*] $($extra:tt)*) => {
        model! {
            struct $name {
                input x: [batch, 7, 6, 2];
                input c: [batch, $ph, $pw, $co];
                param s: [7, 6, 2] = normal(std = 1.0);
                param w: [3, 3, 2, $co] = glorot_uniform;
                param b: [$co] = normal(std = 0.3);
                loss l = sum(c * square(max_pool($pre, $($pool)*))) $($extra)*;
                optimizer sgd(learning_rate = 0.1);
            }
        }

        impl Subject for $name {
            const GEO: Geo = $geo;
            fn make(seed: u64) -> Self {
                $name::with_seed(seed)
            }
            fn params(&self) -> Vec<Vec<f64>> {
                vec![flat(&self.s), flat(&self.w), flat(&self.b)]
            }
            fn gradients(&mut self, x: &Array4<f32>, c: &Array4<f32>) -> (f32, Vec<Vec<f64>>) {
                let (l, g) = self.compute_gradients(x.view(), c.view()).expect("shapes fit the model");
                (l, vec![flat(&g.s), flat(&g.w), flat(&g.b)])
            }
            fn explain() -> &'static str {
                $name::explain()
            }
        }

        #[test]
        fn $test() {
            let (ph, pw, _, _) = <$name as Subject>::GEO.pool();
            assert_eq!((ph, pw), ($ph, $pw), "{:?}", <$name as Subject>::GEO);
            check::<$name>(stringify!($name));
        }
    };
}

variant!(
    ValidFloor16,
    valid_conv_floor_pool_16_channels,
    16,
    [2, 2],
    Geo { k: 3, co: 16, stride: 1, same: false, pk: 2, ps: 2, psame: false, bias: true },
    conv2d(x * s, w) + b,
    [2]
);
variant!(
    SameOverlap3,
    same_conv_overlapping_same_pool_3_channels,
    3,
    [4, 3],
    Geo { k: 3, co: 3, stride: 1, same: true, pk: 3, ps: 2, psame: true, bias: true },
    conv2d(x * s, w, padding = "same") + b,
    [size = 3, stride = 2, padding = "same"]
);
variant!(
    StridedNoBias16,
    strided_conv_stride_1_pool_no_bias_16_channels,
    16,
    [3, 2],
    Geo { k: 3, co: 16, stride: 2, same: true, pk: 2, ps: 1, psame: false, bias: false },
    conv2d(x * s, w, stride = 2, padding = "same"),
    [size = 2, stride = 1] + sum(b * b)
);

/// SplitMix64.
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
}

const TOL: f64 = 1e-4;

/// The fourth-order central difference of `f` at scalar `i` of param `k`.
fn derivative(f: &dyn Fn(&[Vec<f64>]) -> f64, params: &[Vec<f64>], k: usize, i: usize) -> f64 {
    // A small step (the loss is f64: rounding errs by about 1e-16 / h): a conv value
    // moves by about 1e-5, so a window's winner changes only at a near-tie that close.
    let h = 1e-5 * params[k][i].abs().max(1.0);
    let at = |t: f64| {
        let mut p = params.to_vec();
        p[k][i] += t;
        f(&p)
    };
    (at(-2.0 * h) - 8.0 * at(-h) + 8.0 * at(h) - at(2.0 * h)) / (12.0 * h)
}

/// `MODELC_CONV_GRAD_CASES`, or 3.
fn cases() -> usize {
    std::env::var("MODELC_CONV_GRAD_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

fn check<M: Subject>(name: &str) {
    assert!(
        M::explain().contains("max_pool(conv2d(x, w) + b) -> one kernel per image"),
        "{name} is not fused: {}",
        M::explain()
    );
    let g = M::GEO;
    let (ph, pw, _, _) = g.pool();
    let mut worst: f64 = 0.0;
    for case in 0..cases() {
        let (n, seed) = (1 + case % 3, 1 + case as u64);
        let mut rng = Rng(seed);
        let x = Array4::from_shape_fn((n, H, W, CI), |_| rng.uniform(-1.0, 1.0) as f32);
        let c = Array4::from_shape_fn((n, ph, pw, g.co), |_| rng.uniform(-1.0, 1.0) as f32);
        let mut model = M::make(seed);
        let params = model.params();
        let (l32, grads) = model.gradients(&x, &c);
        let (xf, cf) = (flat(&x), flat(&c));
        let f = |p: &[Vec<f64>]| loss(&g, n, p, &xf, &cf);
        let want = f(&params);
        assert!((f64::from(l32) - want).abs() <= 1e-4 * want.abs().max(1.0), "{name}, n = {n}: loss {l32} vs {want}");
        for (k, what) in ["s (input gradient)", "w (weight gradient)", "b (bias)"].iter().enumerate() {
            let reference: Vec<f64> = (0..params[k].len()).map(|i| derivative(&f, &params, k, i)).collect();
            let rms = (reference.iter().map(|v| v * v).sum::<f64>() / reference.len() as f64).sqrt().max(1e-30);
            for (i, (&got, &r)) in grads[k].iter().zip(&reference).enumerate() {
                let err = (got - r).abs() / r.abs().max(rms);
                assert!(err <= TOL, "{name}, n = {n}, seed {seed}: d l / d {what}[{i}]: generated {got:e}, reference {r:e}, error {err:e}");
                worst = worst.max(err);
            }
        }
    }
    if std::env::var_os("MODELC_GRAD_REPORT").is_some() {
        eprintln!("{name:<16} worst gradient error {worst:.2e}");
    }
}
