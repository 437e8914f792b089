//! `conv2d`'s generated gradients (`compute_gradients`, f32) against f64 finite
//! differences of an f64 re-implementation of the same loss written here (plain loops,
//! sharing no code with the runtime or the compiler; TensorFlow's padding rule written
//! out in [`geometry`]).
//!
//! Each model is `loss l = sum(c * tanh(conv2d(x * s, w, ..)))` with a random weight `c`
//! per output element (so that no gradient is trivially symmetric) and two params: the
//! kernel `w` (its gradient is the weight-gradient pass) and a per-pixel scale `s` of
//! the image `[h, w, ci]` (its gradient is `sum over the batch of x * dx`: the
//! input-gradient pass). `tanh` keeps the loss non-linear in both, so a wrong gradient
//! cannot hide behind an exact linear difference. The variants: stride 1 and 2 (and
//! `[1, 2]`, `[2, 1]`), `"same"` and `"valid"`, dilation 1 and 2 (and `[2, 1]`), odd
//! (3x3) and even (2x4, 4x4, 2x3) kernels, a 7x6 image (h != w, odd h: "same" with
//! stride 2 pads unevenly, the extra row at the bottom as TF does); and three variants
//! with 32 input channels, where the compiler's kernel rule picks the direct input
//! gradient (the others take im2col's; forward and weight gradient are direct in all).
//!
//! **The comparison** is that of gradients/tests/gradients.rs (copied, not shared: that file
//! is another helper's): a fourth-order central difference with step `1e-3 *
//! max(|p|, 1)`, every scalar of a param probed up to 48 of them (else 48 spread over
//! it), plus two random directions over the whole param; the error of scalar i is
//! `|g_i - r_i| / max(|r_i|, rms(r))`. **The tolerance** `1e-4`: each output sums
//! `kh * kw * ci` <= 288 products, each gradient scalar up to `n * oh * ow * co` of them
//! (<= 378 here), through tanh; measured worst 1.0e-6 over 60 cases per variant (9.2e-7 over 20 for the ci = 32 ones)
//! (`MODELC_GRAD_REPORT=1` prints each variant's), so the tolerance is 100 times that.
//! Checked to fail: col2im reading the column padding for rows fails the input gradient
//! of the three variants whose row and column padding differ (errors 2 to 3); the
//! compiler padding the extra row at the top instead of the bottom fails four variants
//! and `the_comparison_catches_a_wrong_gradient`.
//!
//! Cases: `MODELC_CONV_GRAD_CASES` (default 3: batches 1, 2 and 3) per variant, then
//! random batches of 1-4 with other seeds; the default takes well under a second of test
//! time; `MODELC_CONV_GRAD_CASES=500` is a long run (a few minutes).

use modelc::model;
use modelc::ndarray::{Array, Array3, Array4};

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

/// One variant's geometry.
#[derive(Clone, Copy, Debug)]
struct Geo {
    h: usize,
    w: usize,
    ci: usize,
    kh: usize,
    kw: usize,
    co: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    same: bool,
}

impl Geo {
    fn out(&self) -> (usize, usize, usize, usize) {
        let (oh, pt) = geometry(self.h, self.kh, self.stride[0], self.dilation[0], self.same);
        let (ow, pl) = geometry(self.w, self.kw, self.stride[1], self.dilation[1], self.same);
        (oh, ow, pt, pl)
    }
}

/// The f64 loss `sum(c * tanh(conv2d(x * s, w)))` with `params = [s, w]` flattened
/// row-major, `x` `[n, h, w, ci]` and `c` `[n, oh, ow, co]` flattened too.
fn loss(g: &Geo, n: usize, params: &[Vec<f64>], x: &[f64], c: &[f64]) -> f64 {
    let (s, w) = (&params[0], &params[1]);
    let (oh, ow, pt, pl) = g.out();
    let mut total = 0.0;
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..g.co {
                    let mut y = 0.0;
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let iy = (oy * g.stride[0] + i * g.dilation[0]) as isize - pt as isize;
                            let ix = (ox * g.stride[1] + j * g.dilation[1]) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let (iy, ix) = (iy as usize, ix as usize);
                            for ch in 0..g.ci {
                                let pix = (iy * g.w + ix) * g.ci + ch;
                                let xv = x[b * g.h * g.w * g.ci + pix] * s[pix];
                                y += xv * w[((i * g.kw + j) * g.ci + ch) * g.co + o];
                            }
                        }
                    }
                    total += c[((b * oh + oy) * ow + ox) * g.co + o] * y.tanh();
                }
            }
        }
    }
    total
}

/// A generated model under test.
trait Subject {
    const GEO: Geo;
    fn make(seed: u64) -> Self;
    /// `[s, w]`, flattened, as f64.
    fn params(&self) -> Vec<Vec<f64>>;
    /// The f32 loss and `[ds, dw]`.
    fn gradients(&mut self, x: &Array4<f32>, c: &Array4<f32>) -> (f32, Vec<Vec<f64>>);
}

fn flat<D: modelc::ndarray::Dimension>(a: &Array<f32, D>) -> Vec<f64> {
    a.iter().map(|&v| f64::from(v)).collect()
}

macro_rules! variant {
    ($name:ident, $test:ident, [$h:literal, $w:literal, $ci:literal], [$kh:literal, $kw:literal, $co:literal],
     [$oh:literal, $ow:literal], $geo:expr, $($attrs:tt)*) => {
        model! {
            struct $name {
                input x: [batch, $h, $w, $ci];
                input c: [batch, $oh, $ow, $co];
                param s: [$h, $w, $ci] = normal(std = 1.0);
                param w: [$kh, $kw, $ci, $co] = glorot_uniform;
                loss l = sum(c * tanh(conv2d(x * s, w $($attrs)*)));
                optimizer sgd(learning_rate = 0.1);
            }
        }

        impl Subject for $name {
            const GEO: Geo = $geo;
            fn make(seed: u64) -> Self {
                $name::with_seed(seed)
            }
            fn params(&self) -> Vec<Vec<f64>> {
                vec![flat(&self.s), flat(&self.w)]
            }
            fn gradients(&mut self, x: &Array4<f32>, c: &Array4<f32>) -> (f32, Vec<Vec<f64>>) {
                let (l, g) = self.compute_gradients(x.view(), c.view()).expect("shapes fit the model");
                (l, vec![flat(&g.s), flat(&g.w)])
            }
        }

        #[test]
        fn $test() {
            // The model's declared output size is TF's: a wrong `[$oh, $ow]` here would be
            // a wrong test, caught before any number is compared.
            let (oh, ow, _, _) = <$name as Subject>::GEO.out();
            assert_eq!((oh, ow), ($oh, $ow), "{:?}", <$name as Subject>::GEO);
            check::<$name>(stringify!($name));
        }
    };
}

const fn geo(k: [usize; 3], stride: [usize; 2], dilation: [usize; 2], same: bool) -> Geo {
    Geo { h: 7, w: 6, ci: 2, kh: k[0], kw: k[1], co: k[2], stride, dilation, same }
}

variant!(ValidS1, valid_stride_1, [7, 6, 2], [3, 3, 3], [5, 4], geo([3, 3, 3], [1, 1], [1, 1], false),);
variant!(SameS1, same_stride_1, [7, 6, 2], [3, 3, 3], [7, 6], geo([3, 3, 3], [1, 1], [1, 1], true), , padding = "same");
variant!(SameS2, same_stride_2, [7, 6, 2], [3, 3, 3], [4, 3], geo([3, 3, 3], [2, 2], [1, 1], true), , stride = 2, padding = "same");
variant!(ValidS2Even, valid_stride_2_even_kernel, [7, 6, 2], [2, 4, 3], [3, 2], geo([2, 4, 3], [2, 2], [1, 1], false), , stride = 2);
variant!(SameEven, same_even_kernel, [7, 6, 2], [2, 4, 3], [7, 6], geo([2, 4, 3], [1, 1], [1, 1], true), , padding = "same");
variant!(SameS2Even4, same_stride_2_kernel_4, [7, 6, 2], [4, 4, 2], [4, 3], geo([4, 4, 2], [2, 2], [1, 1], true), , stride = 2, padding = "same");
variant!(ValidD2, valid_dilation_2, [7, 6, 2], [3, 3, 3], [3, 2], geo([3, 3, 3], [1, 1], [2, 2], false), , dilation = 2);
variant!(SameD2S21, same_dilation_2_stride_2_1, [7, 6, 2], [3, 3, 3], [4, 6], geo([3, 3, 3], [2, 1], [2, 2], true), , stride = [2, 1], padding = "same", dilation = 2);
variant!(SameS12D21Even, same_stride_1_2_dilation_2_1_even, [7, 6, 2], [2, 3, 3], [7, 3], geo([2, 3, 3], [1, 2], [2, 1], true), , stride = [1, 2], padding = "same", dilation = [2, 1]);
// 32 input channels: the compiler's rule takes the direct input gradient (stride 1,
// ci >= 16, `ops/conv.rs` `strategy`) here, im2col's above; forward and weight gradient
// are direct in every variant.
const fn wide(k: [usize; 3], dilation: [usize; 2], same: bool) -> Geo {
    Geo { h: 7, w: 6, ci: 32, kh: k[0], kw: k[1], co: k[2], stride: [1, 1], dilation, same }
}
variant!(SameS1Ci32, same_stride_1_ci_32, [7, 6, 32], [3, 3, 3], [7, 6], wide([3, 3, 3], [1, 1], true), , padding = "same");
variant!(SameD21EvenCi32, same_dilation_2_1_even_ci_32, [7, 6, 32], [2, 4, 3], [7, 6], wide([2, 4, 3], [2, 1], true), , padding = "same", dilation = [2, 1]);
variant!(ValidD2Ci32, valid_dilation_2_ci_32, [7, 6, 32], [2, 2, 3], [5, 4], wide([2, 2, 3], [2, 2], false), , dilation = 2);

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

/// Most scalars of one param probed one by one (the rest count through the directions).
const PROBES: usize = 48;
/// Random directions over a whole param.
const DIRECTIONS: usize = 2;
/// See the file's header.
const TOL: f64 = 1e-4;

/// The reference's derivatives of one param: at the probed scalars, and along random
/// directions.
struct Reference {
    indices: Vec<usize>,
    values: Vec<f64>,
    directions: Vec<(Vec<f64>, f64)>,
}

/// The fourth-order central difference of `f` along `dir` of param `k`.
fn derivative(f: &dyn Fn(&[Vec<f64>]) -> f64, params: &[Vec<f64>], k: usize, dir: &[(usize, f64)]) -> f64 {
    let scale = dir.iter().map(|&(i, _)| params[k][i].abs()).fold(1.0, f64::max);
    let h = 1e-3 * scale;
    let at = |t: f64| {
        let mut p = params.to_vec();
        for &(i, d) in dir {
            p[k][i] += t * d;
        }
        f(&p)
    };
    (at(-2.0 * h) - 8.0 * at(-h) + 8.0 * at(h) - at(2.0 * h)) / (12.0 * h)
}

fn reference(f: &dyn Fn(&[Vec<f64>]) -> f64, params: &[Vec<f64>], k: usize, rng: &mut Rng) -> Reference {
    let len = params[k].len();
    let indices: Vec<usize> = if len <= PROBES {
        (0..len).collect()
    } else {
        let offset = rng.below(len / PROBES);
        (0..PROBES).map(|i| (offset + i * len / PROBES).min(len - 1)).collect()
    };
    let values = indices.iter().map(|&i| derivative(f, params, k, &[(i, 1.0)])).collect();
    let directions = (0..DIRECTIONS)
        .map(|_| {
            let v: Vec<f64> = (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let dir: Vec<(usize, f64)> = v.iter().copied().enumerate().collect();
            (v.clone(), derivative(f, params, k, &dir))
        })
        .collect();
    Reference { indices, values, directions }
}

/// How far `grad` is from the reference: the worst error, with where it is.
fn compare(grad: &[f64], r: &Reference) -> (f64, String) {
    let rms = (r.values.iter().map(|v| v * v).sum::<f64>() / r.values.len().max(1) as f64).sqrt();
    let floor = rms.max(1e-30);
    let mut worst = (0.0, String::from("no scalar"));
    for (&i, &want) in r.indices.iter().zip(&r.values) {
        let got = grad[i];
        let err = (got - want).abs() / want.abs().max(floor);
        if err > worst.0 || err.is_nan() {
            worst = (err, format!("scalar {i}: generated {got:e}, reference {want:e} (rms {rms:e})"));
        }
    }
    for (n, (v, want)) in r.directions.iter().enumerate() {
        let got: f64 = grad.iter().zip(v).map(|(g, v)| g * v).sum();
        let norm = v.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = (got - want).abs() / want.abs().max(floor * norm);
        if err > worst.0 || err.is_nan() {
            worst = (err, format!("direction {n}: generated {got:e}, reference {want:e}"));
        }
    }
    worst
}

/// `MODELC_CONV_GRAD_CASES`, or 3.
fn cases() -> usize {
    std::env::var("MODELC_CONV_GRAD_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

/// One case: batch `n`, params and data from `seed`; `Err` with the worst error.
fn run_case<M: Subject>(n: usize, seed: u64) -> Result<(f64, f64), String> {
    let g = M::GEO;
    let (oh, ow, _, _) = g.out();
    let mut rng = Rng(seed);
    let x = Array4::from_shape_fn((n, g.h, g.w, g.ci), |_| rng.uniform(-1.0, 1.0) as f32);
    let c = Array4::from_shape_fn((n, oh, ow, g.co), |_| rng.uniform(-1.0, 1.0) as f32);
    let mut model = M::make(seed);
    let params = model.params();
    let (l32, grads) = model.gradients(&x, &c);
    let (xf, cf) = (flat(&x), flat(&c));
    let f = |p: &[Vec<f64>]| loss(&g, n, p, &xf, &cf);
    let want = f(&params);
    let loss_err = (f64::from(l32) - want).abs() / want.abs().max(((n * oh * ow * g.co) as f64).sqrt());
    if loss_err > 1e-4 {
        return Err(format!("n = {n}, seed = {seed}: loss {l32} vs reference {want}"));
    }
    let mut worst: f64 = 0.0;
    for (k, name) in ["s (the input gradient)", "w (the weight gradient)"].iter().enumerate() {
        assert_eq!(grads[k].len(), params[k].len(), "gradient {k} has its param's size");
        let (err, at) = compare(&grads[k], &reference(&f, &params, k, &mut rng));
        if err.is_nan() || err > TOL {
            return Err(format!("n = {n}, seed = {seed}: d l / d {name}: error {err:e} > {TOL:e} at {at}"));
        }
        worst = worst.max(err);
    }
    Ok((loss_err, worst))
}

fn check<M: Subject>(name: &str) {
    let mut rng = Rng(0x00c0_ffee);
    let mut worst: f64 = 0.0;
    for i in 0..cases() {
        let n = if i < 3 { i + 1 } else { 1 + rng.below(4) };
        match run_case::<M>(n, 1 + i as u64) {
            Ok((_, w)) => worst = worst.max(w),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    if std::env::var_os("MODELC_GRAD_REPORT").is_some() {
        eprintln!("{name:<16} worst gradient error {worst:.2e}");
    }
}

/// A test of the test: a gradient one ulp-scale off passes, a wrong one fails.
#[test]
fn the_comparison_catches_a_wrong_gradient() {
    let g = SameS2::GEO;
    let (oh, ow, _, _) = g.out();
    let mut rng = Rng(5);
    let x = Array4::from_shape_fn((2, g.h, g.w, g.ci), |_| rng.uniform(-1.0, 1.0) as f32);
    let c = Array4::from_shape_fn((2, oh, ow, g.co), |_| rng.uniform(-1.0, 1.0) as f32);
    let mut m = SameS2::with_seed(9);
    let params = m.params();
    let (_, grads) = m.gradients(&x, &c);
    let (xf, cf) = (flat(&x), flat(&c));
    let f = |p: &[Vec<f64>]| loss(&g, 2, p, &xf, &cf);
    let r = reference(&f, &params, 1, &mut rng);
    assert!(compare(&grads[1], &r).0 < TOL);
    // Padding the extra row at the top instead (PyTorch-style symmetric rounding up)
    // moves every window: the reference with that geometry must not match.
    let shifted = |p: &[Vec<f64>]| {
        let s = Array3::from_shape_vec((g.h, g.w, g.ci), p[0].clone()).expect("s");
        let mut xs = Array4::from_shape_vec((2, g.h, g.w, g.ci), xf.clone()).expect("x");
        xs *= &s;
        // Shift the image down one row: the same as one more zero row on top.
        let mut down = Array4::<f64>::zeros((2, g.h, g.w, g.ci));
        down.slice_mut(modelc::ndarray::s![.., 1.., .., ..]).assign(&xs.slice(modelc::ndarray::s![
            ..,
            ..g.h - 1,
            ..,
            ..
        ]));
        let ones = vec![vec![1.0; g.h * g.w * g.ci], p[1].clone()];
        loss(&g, 2, &ones, down.as_slice().expect("standard"), &cf)
    };
    let wrong = reference(&shifted, &params, 1, &mut rng);
    assert!(compare(&grads[1], &wrong).0 > 1e-2);
}
