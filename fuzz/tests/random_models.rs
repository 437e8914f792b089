//! Random models against an independent reference.
//!
//! `build.rs` writes `MODELC_RANDOM_MODELS` models (default 40, seeds from
//! `MODELC_RANDOM_SEED`, default 1) drawn from a grammar over every op of the language
//! (`src/gen.rs`). For each, this test regenerates the same model as data and evaluates
//! it with the reference below: plain f64 loops over a tensor type of its own, sharing no
//! code with modelc's runtime or compiler. Each model runs on `MODELC_RANDOM_CASES` cases
//! (default 24) chosen by proptest: symbolic dimensions of 0 to 3, random values and params,
//! and every input given as a view that is contiguous, reversed (negative stride), every
//! other element (stride 2), broadcast (zero stride) or transposed in memory. Checked:
//!
//! - the loss from `compute_gradients` and from the loss fetch against the reference's
//!   loss (f64 on the same f32 values);
//! - every gradient against the reference's f64 central finite differences, except where
//!   an evaluation comes within `KINK` of a kink of relu, abs, maximum, minimum or max
//!   (the difference would measure the kink) or a step straddles one;
//! - the metric (argmax, `==`) unless the reference sees a near-tie (a case whose loss
//!   reads a comparison of f32 values that is a near-tie, in a `where`, is skipped whole);
//! - index inputs (`as u32`, values below the bound the generator gave them, laid out
//!   like the f32 inputs) through `gather`, `one_hot`, `sparse_softmax_cross_entropy`,
//!   comparisons of indices and the shape ops, which the reference evaluates exactly;
//! - with an empty dimension, a loss or metric that averages over nothing must be an
//!   `Err` that says so (never `Ok(NaN)`), and a sum over nothing is 0;
//! - small CNNs (`conv2d`, `max_pool`, `avg_pool` on NHWC image inputs of every layout
//!   above) against plain loops with TF's geometry (`tf_geometry`), `max_pool` taking the
//!   first maximum and `avg_pool` averaging the cells inside the image; a `max_pool`
//!   window whose maximum comes within `KINK` of its runner-up is a kink like `max`'s
//!   (a tie of exact zeros is not: relus of negatives stay zeros under a step). In a
//!   metric, a relu or abs argument near 0 counts as a tie (its f32 sign decides `==`).
//!
//! `MODELC_RANDOM_VERBOSE=1` prints each model before running it (to find one that
//! crashes the process), `MODELC_RANDOM_ONLY=seed` runs only that model.
//!
//! Long runs: `MODELC_RANDOM_MODELS=2000 MODELC_RANDOM_CASES=20 cargo test -p modelc-fuzz
//! --release` (the models are compiled in: changing the count rebuilds the test);
//! `MODELC_RANDOM_CNN=1` (build time too) makes every dense layer or reduction to a
//! vector that may be a CNN one (default 0.6: 11 of the default 40 models hold one).

use modelc::ndarray::{ArrayD, ArrayView, ArrayViewD, Axis, Dimension, IxDyn, Slice};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

#[path = "../src/gen.rs"]
mod gen;

use gen::{Bin, Dim, Red, Spec, Un, E};

/// What one model's glue returns.
pub struct Outcome {
    /// `compute_gradients`: the loss and the trainable params' gradients, in declaration order.
    pub grads: Result<(f32, Vec<ArrayD<f32>>), String>,
    /// The loss fetch.
    pub loss: Result<f32, String>,
    /// The metric fetch, if the model has one.
    pub metric: Option<Result<f32, String>>,
}

/// A model's glue: the inputs' views (f32 inputs from the first slice, index inputs from
/// the second, each at its input's position) and the params' values in, what it
/// returned out.
pub type Run = fn(&[ArrayViewD<'_, f32>], &[ArrayViewD<'_, u32>], &[ArrayD<f32>]) -> Outcome;

/// One generated model.
pub struct Entry {
    pub seed: u64,
    pub text: &'static str,
    pub run: Run,
}

/// A dynamic view as the rank the generated method wants (strides kept).
fn v<'a, A, D: Dimension>(x: &ArrayViewD<'a, A>) -> ArrayView<'a, A, D> {
    x.clone().into_dimensionality::<D>().expect("the glue passes inputs of their declared rank")
}

mod models {
    #![allow(clippy::all, unused_imports, unused_variables)]
    use super::{v, ArrayD, ArrayViewD, Entry, Outcome};
    include!(concat!(env!("OUT_DIR"), "/models.rs"));
}

/// Closer than this (relative) to a kink, finite differences are not compared.
const KINK: f64 = 1e-3;
/// Closer than this (relative) to a tie, argmax and `==` may legitimately differ in f32.
const TIE: f64 = 1e-4;
/// The finite-difference step (f64 central differences: error about h^2).
const H: f64 = 1e-5;

// ---------------------------------------------------------------- the reference

/// A row-major f64 tensor.
#[derive(Clone, Debug, PartialEq)]
struct T {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl T {
    fn scalar(v: f64) -> T {
        T { shape: vec![], data: vec![v] }
    }
    fn len(shape: &[usize]) -> usize {
        shape.iter().product()
    }
    fn map(&self, f: impl Fn(f64) -> f64) -> T {
        T { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }
    /// The flat index into `self` of output index `idx` under NumPy broadcasting.
    fn bindex(&self, idx: &[usize]) -> usize {
        let off = idx.len() - self.shape.len();
        let mut flat = 0;
        for (k, &d) in self.shape.iter().enumerate() {
            let i = if d == 1 { 0 } else { idx[off + k] };
            flat = flat * d + i;
        }
        flat
    }
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            assert!(da == db || da == 1 || db == 1, "reference: {a:?} and {b:?} do not broadcast");
            if da == 1 {
                db
            } else {
                da
            }
        })
        .collect()
}

/// Every index of `shape`, in row-major order.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n = T::len(shape);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0; shape.len()];
    for _ in 0..n {
        out.push(idx.clone());
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

fn zip(a: &T, b: &T, f: impl Fn(f64, f64) -> f64) -> T {
    let shape = broadcast_shape(&a.shape, &b.shape);
    let data = indices(&shape).iter().map(|i| f(a.data[a.bindex(i)], b.data[b.bindex(i)])).collect();
    T { shape, data }
}

/// The lanes along `axis`: (outer, len, inner) with element k of lane (o, i) at
/// `(o * len + k) * inner + i`.
fn lanes(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (T::len(&shape[..axis]), shape[axis], T::len(&shape[axis + 1..]))
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

fn compare(op: Bin, x: f64, y: f64) -> bool {
    match op {
        Bin::Eq => x == y,
        Bin::Ne => x != y,
        Bin::Lt => x < y,
        Bin::Le => x <= y,
        Bin::Gt => x > y,
        Bin::Ge => x >= y,
        other => unreachable!("not a comparison: {other:?}"),
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The reference evaluator. `params` are the (maybe perturbed) values; `center` the
/// unperturbed ones, read under `stop_gradient` so that finite differences see it as the
/// constant it is for the gradient.
struct Eval<'a> {
    inputs: &'a [T],
    params: &'a [T],
    center: &'a [T],
    dims: [usize; 2],
    /// The smallest relative distance to a kink met outside `stop_gradient`.
    kink: f64,
    /// A hash of every branch taken at a kink outside `stop_gradient`.
    branches: u64,
    /// The smallest relative distance to a tie of argmax or `==`.
    tie: f64,
    /// Whether an argument of relu or abs near 0 counts as a tie (in a metric only: in the
    /// loss it is a kink). Their 0 or tiny output in f32 decides a metric's `==`, e.g.
    /// `relu(layer_norm(a)) == 0` over a lane of values equal in f64 (the sparse
    /// cross-entropies of rows of equal logits, ln 2 each) but an ulp apart in f32.
    relu_ties: bool,
}

impl Eval<'_> {
    fn kink(&mut self, dist: f64, scale: f64, branch: bool, frozen: bool) {
        self.kink_at(dist, scale, u64::from(branch), frozen);
    }

    /// A kink with more than two branches (`max_pool`: which cell of the window wins).
    fn kink_at(&mut self, dist: f64, scale: f64, branch: u64, frozen: bool) {
        if frozen {
            return;
        }
        self.kink = self.kink.min(dist.abs() / (1.0 + scale.abs()));
        self.branches = self.branches.wrapping_mul(0x100_0000_01b3).wrapping_add(1 + branch);
    }

    fn eval(&mut self, e: &E, frozen: bool) -> T {
        match e {
            E::Input(i) => self.inputs[*i].clone(),
            E::Param(p) => {
                if frozen {
                    self.center[*p].clone()
                } else {
                    self.params[*p].clone()
                }
            }
            E::Lit(v) => T::scalar(*v),
            E::DimValue(s) => T::scalar(self.dims[*s] as f64),
            E::Un(Un::StopGradient, a) => self.eval(a, true),
            E::Un(u, a) => {
                let a = self.eval(a, frozen);
                match u {
                    Un::Neg => a.map(|x| -x),
                    Un::Exp => a.map(f64::exp),
                    Un::Ln | Un::Log => a.map(f64::ln),
                    Un::Sqrt => a.map(f64::sqrt),
                    Un::Square => a.map(|x| x * x),
                    Un::Sigmoid => a.map(|x| 1.0 / (1.0 + (-x).exp())),
                    Un::Tanh => a.map(f64::tanh),
                    Un::Softplus => a.map(softplus),
                    Un::Abs | Un::Relu => {
                        for &x in &a.data {
                            self.kink(x, 0.0, x > 0.0, frozen);
                            if self.relu_ties {
                                self.tie = self.tie.min(x.abs());
                            }
                        }
                        if *u == Un::Abs {
                            a.map(f64::abs)
                        } else {
                            a.map(|x| x.max(0.0))
                        }
                    }
                    Un::StopGradient => unreachable!("handled above"),
                }
            }
            E::Pow(a, k) => self.eval(a, frozen).map(|x| x.powf(*k)),
            E::Bin(op, a, b) => {
                let a = self.eval(a, frozen);
                let b = self.eval(b, frozen);
                match op {
                    Bin::Add => zip(&a, &b, |x, y| x + y),
                    Bin::Sub => zip(&a, &b, |x, y| x - y),
                    Bin::Mul => zip(&a, &b, |x, y| x * y),
                    Bin::Div => zip(&a, &b, |x, y| x / y),
                    Bin::SigmoidXent => zip(&a, &b, |z, y| z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()),
                    Bin::Ne | Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge => {
                        // Values compared (in a `where`'s condition): a flip under a step
                        // is a kink, and a near-tie may compare either way in f32. So may
                        // an exact tie in f64 (two computations of one value round apart
                        // in f32), but for two zeros (`relu` of two negatives: zero in f32
                        // too).
                        let d = zip(&a, &b, |x, y| x - y);
                        let s = zip(&a, &b, |x, y| x.abs() + y.abs());
                        for (dd, ss) in d.data.iter().zip(&s.data) {
                            self.kink(*dd, *ss, *dd > 0.0, frozen);
                            if *ss != 0.0 {
                                self.tie = self.tie.min(dd.abs() / (1.0 + ss));
                            }
                        }
                        zip(&a, &b, |x, y| f64::from(u8::from(compare(*op, x, y))))
                    }
                    Bin::Eq => {
                        let out = zip(&a, &b, |x, y| f64::from(u8::from(x == y)));
                        let d =
                            zip(&a, &b, |x, y| if x == y { f64::INFINITY } else { (x - y).abs() / (1.0 + x.abs()) });
                        self.tie = d.data.iter().fold(self.tie, |m, &x| m.min(x));
                        out
                    }
                    Bin::Maximum | Bin::Minimum => {
                        let d = zip(&a, &b, |x, y| x - y);
                        let s = zip(&a, &b, |x, y| x.abs() + y.abs());
                        for (dd, ss) in d.data.iter().zip(&s.data) {
                            self.kink(*dd, *ss, *dd > 0.0, frozen);
                        }
                        if *op == Bin::Maximum {
                            zip(&a, &b, f64::max)
                        } else {
                            zip(&a, &b, f64::min)
                        }
                    }
                }
            }
            E::MatMul(a, b) => {
                let (a, b) = (self.eval(a, frozen), self.eval(b, frozen));
                let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1]);
                assert_eq!(k, b.shape[0], "reference: matmul shapes");
                let mut data = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        data[i * n + j] = (0..k).map(|l| a.data[i * k + l] * b.data[l * n + j]).sum();
                    }
                }
                T { shape: vec![m, n], data }
            }
            E::Transpose(a) => {
                let a = self.eval(a, frozen);
                let (m, n) = (a.shape[0], a.shape[1]);
                let data = (0..n * m).map(|f| a.data[(f % m) * n + f / m]).collect();
                T { shape: vec![n, m], data }
            }
            E::Reduce { op, e, axis, keepdims } => {
                let a = self.eval(e, frozen);
                let Some(axis) = axis else {
                    if *op == Red::Max {
                        return self.reduce(&a, Red::Max, 0, false, frozen);
                    }
                    let s: f64 = a.data.iter().sum();
                    return T::scalar(if *op == Red::Mean { s / a.data.len() as f64 } else { s });
                };
                let axis = norm_axis(*axis, a.shape.len());
                self.reduce(&a, *op, axis, *keepdims, frozen)
            }
            E::Softmax { log, e, axis } => {
                let a = self.eval(e, frozen);
                let axis = norm_axis(axis.unwrap_or(-1), a.shape.len());
                let (outer, len, inner) = lanes(&a.shape, axis);
                let mut out = a.clone();
                for o in 0..outer {
                    for i in 0..inner {
                        let at = |k: usize| (o * len + k) * inner + i;
                        let m = (0..len).map(|k| a.data[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                        let s: f64 = (0..len).map(|k| (a.data[at(k)] - m).exp()).sum();
                        for k in 0..len {
                            let z = a.data[at(k)] - m;
                            out.data[at(k)] = if *log { z - s.ln() } else { z.exp() / s };
                        }
                    }
                }
                out
            }
            E::LayerNorm { e, axis, epsilon } => {
                let a = self.eval(e, frozen);
                let axis = norm_axis(axis.unwrap_or(-1), a.shape.len());
                let (outer, len, inner) = lanes(&a.shape, axis);
                let mut out = a.clone();
                for o in 0..outer {
                    for i in 0..inner {
                        let at = |k: usize| (o * len + k) * inner + i;
                        let mean = (0..len).map(|k| a.data[at(k)]).sum::<f64>() / len as f64;
                        let var = (0..len).map(|k| (a.data[at(k)] - mean).powi(2)).sum::<f64>() / len as f64;
                        for k in 0..len {
                            out.data[at(k)] = (a.data[at(k)] - mean) / (var + epsilon).sqrt();
                        }
                    }
                }
                out
            }
            // Fetches run in inference mode: the identity (and the loss only has rate 0).
            E::Dropout(e, _) => self.eval(e, frozen),
            E::ReduceAxes { op, e, axes, keepdims } => {
                let mut a = self.eval(e, frozen);
                let rank = a.shape.len();
                let mut axes: Vec<usize> = axes.iter().map(|&x| norm_axis(x, rank)).collect();
                // The highest axis first, so that the others keep their positions. A mean
                // of means over equal lanes is the mean.
                axes.sort_unstable_by(|x, y| y.cmp(x));
                for axis in axes {
                    a = self.reduce(&a, *op, axis, *keepdims, frozen);
                }
                a
            }
            E::Reshape { e, shape, .. } => {
                let a = self.eval(e, frozen);
                let shape = dims_of(shape, self.dims);
                assert_eq!(T::len(&shape), a.data.len(), "reference: reshape counts");
                T { shape, data: a.data }
            }
            E::Concat(list, axis) => {
                let parts: Vec<T> = list.iter().map(|x| self.eval(x, frozen)).collect();
                let mut shape = parts[0].shape.clone();
                shape[*axis] = parts.iter().map(|p| p.shape[*axis]).sum();
                let (outer, _, inner) = lanes(&shape, *axis);
                let mut data = Vec::with_capacity(T::len(&shape));
                for o in 0..outer {
                    for p in &parts {
                        let len = p.shape[*axis];
                        data.extend_from_slice(&p.data[o * len * inner..(o + 1) * len * inner]);
                    }
                }
                T { shape, data }
            }
            E::Slice { e, axis, start, end } => {
                let a = self.eval(e, frozen);
                let (outer, len, inner) = lanes(&a.shape, *axis);
                let mut data = Vec::new();
                for o in 0..outer {
                    data.extend_from_slice(&a.data[(o * len + start) * inner..(o * len + end) * inner]);
                }
                let mut shape = a.shape.clone();
                shape[*axis] = end - start;
                T { shape, data }
            }
            E::Where(c, a, b) => {
                let (c, a, b) = (self.eval(c, frozen), self.eval(a, frozen), self.eval(b, frozen));
                let shape = broadcast_shape(&broadcast_shape(&c.shape, &a.shape), &b.shape);
                let data = indices(&shape)
                    .iter()
                    .map(|i| if c.data[c.bindex(i)] != 0.0 { a.data[a.bindex(i)] } else { b.data[b.bindex(i)] })
                    .collect();
                T { shape, data }
            }
            E::Gather(table, ids) => {
                let (t, ids) = (self.eval(table, frozen), self.eval(ids, frozen));
                let row = T::len(&t.shape[1..]);
                let mut shape = ids.shape.clone();
                shape.extend_from_slice(&t.shape[1..]);
                let data = ids
                    .data
                    .iter()
                    .flat_map(|&id| t.data[id as usize * row..(id as usize + 1) * row].to_vec())
                    .collect();
                T { shape, data }
            }
            E::OneHot(ids, depth) => {
                let ids = self.eval(ids, frozen);
                let mut shape = ids.shape.clone();
                shape.push(*depth);
                let data = ids
                    .data
                    .iter()
                    .flat_map(|&id| (0..*depth).map(move |k| f64::from(u8::from(k as f64 == id))))
                    .collect();
                T { shape, data }
            }
            E::SparseXent(z, y) => {
                let (z, y) = (self.eval(z, frozen), self.eval(y, frozen));
                let c = *z.shape.last().expect("logits have a class axis");
                let data = y
                    .data
                    .iter()
                    .enumerate()
                    .map(|(o, &label)| {
                        let lane = &z.data[o * c..(o + 1) * c];
                        let m = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        m + lane.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - lane[label as usize]
                    })
                    .collect();
                T { shape: y.shape.clone(), data }
            }
            E::IndexCmp(op, a, b) => {
                let (a, b) = (self.eval(a, frozen), self.eval(b, frozen));
                zip(&a, &b, |x, y| f64::from(u8::from(compare(*op, x, y))))
            }
            E::Conv { x, w, stride, dilation, same } => {
                let (x, w) = (self.eval(x, frozen), self.eval(w, frozen));
                let &[n, h, wd, ci] = x.shape.as_slice() else { panic!("reference: conv2d of {:?}", x.shape) };
                let &[kh, kw, wci, co] = w.shape.as_slice() else { panic!("reference: kernel {:?}", w.shape) };
                assert_eq!(ci, wci, "reference: conv2d channels");
                let (oh, top) = tf_geometry(h, kh, stride[0], dilation[0], *same);
                let (ow, left) = tf_geometry(wd, kw, stride[1], dilation[1], *same);
                let mut data = vec![0.0; n * oh * ow * co];
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for o in 0..co {
                                let mut acc = 0.0;
                                for i in 0..kh {
                                    for j in 0..kw {
                                        // Padding cells are zeros: skipped.
                                        let iy = (oy * stride[0] + i * dilation[0]).checked_sub(top).filter(|&v| v < h);
                                        let ix =
                                            (ox * stride[1] + j * dilation[1]).checked_sub(left).filter(|&v| v < wd);
                                        let (Some(iy), Some(ix)) = (iy, ix) else { continue };
                                        for c in 0..ci {
                                            acc += x.data[((b * h + iy) * wd + ix) * ci + c]
                                                * w.data[((i * kw + j) * ci + c) * co + o];
                                        }
                                    }
                                }
                                data[((b * oh + oy) * ow + ox) * co + o] = acc;
                            }
                        }
                    }
                }
                T { shape: vec![n, oh, ow, co], data }
            }
            E::Pool { max, x, size, stride, same } => {
                let x = self.eval(x, frozen);
                let &[n, h, wd, c] = x.shape.as_slice() else { panic!("reference: pool of {:?}", x.shape) };
                let (oh, top) = tf_geometry(h, size[0], stride[0], 1, *same);
                let (ow, left) = tf_geometry(wd, size[1], stride[1], 1, *same);
                let mut data = vec![0.0; n * oh * ow * c];
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for ch in 0..c {
                                // The window's cells inside the image, in row-major scan order.
                                let mut cells = Vec::new();
                                for i in 0..size[0] {
                                    for j in 0..size[1] {
                                        let iy = (oy * stride[0] + i).checked_sub(top).filter(|&v| v < h);
                                        let ix = (ox * stride[1] + j).checked_sub(left).filter(|&v| v < wd);
                                        if let (Some(iy), Some(ix)) = (iy, ix) {
                                            cells.push(x.data[((b * h + iy) * wd + ix) * c + ch]);
                                        }
                                    }
                                }
                                assert!(!cells.is_empty(), "reference: a window with no cell of the image");
                                let v = if *max {
                                    // The first maximum wins (TF); the gap to the runner-up is a
                                    // kink (a step may hand the window to another cell), but for
                                    // a tie of exact zeros (relus of negatives, which stay zeros:
                                    // no gradient either way).
                                    let mut best = 0;
                                    for k in 1..cells.len() {
                                        if cells[k] > cells[best] {
                                            best = k;
                                        }
                                    }
                                    let second = (0..cells.len())
                                        .filter(|&k| k != best)
                                        .map(|k| cells[k])
                                        .fold(f64::NEG_INFINITY, f64::max);
                                    if cells.len() > 1 && !(cells[best] == 0.0 && second == 0.0) {
                                        self.kink_at(cells[best] - second, cells[best], best as u64, frozen);
                                    }
                                    cells[best]
                                } else {
                                    // The average over the cells inside the image only (TF).
                                    cells.iter().sum::<f64>() / cells.len() as f64
                                };
                                data[((b * oh + oy) * ow + ox) * c + ch] = v;
                            }
                        }
                    }
                }
                T { shape: vec![n, oh, ow, c], data }
            }
            E::SoftmaxXent(z, y) => {
                let (z, y) = (self.eval(z, frozen), self.eval(y, frozen));
                let r = z.shape.len();
                let (outer, len, _) = lanes(&z.shape, r - 1);
                let mut data = Vec::with_capacity(outer);
                for o in 0..outer {
                    let lane = &z.data[o * len..(o + 1) * len];
                    let m = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let lse = m + lane.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                    data.push((0..len).map(|k| -y.data[o * len + k] * (lane[k] - lse)).sum());
                }
                T { shape: z.shape[..r - 1].to_vec(), data }
            }
        }
    }

    fn reduce(&mut self, a: &T, op: Red, axis: usize, keepdims: bool, frozen: bool) -> T {
        let (outer, len, inner) = lanes(&a.shape, axis);
        let mut data = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let lane: Vec<f64> = (0..len).map(|k| a.data[(o * len + k) * inner + i]).collect();
                data.push(match op {
                    Red::Sum => lane.iter().sum(),
                    Red::Mean => lane.iter().sum::<f64>() / len as f64,
                    Red::Max | Red::Argmax => {
                        let mut best = 0;
                        for k in 1..len {
                            if lane[k] > lane[best] {
                                best = k;
                            }
                        }
                        // The gap to the runner-up: a tie (or near-tie) is a kink of max
                        // and a coin toss for argmax in f32.
                        let second = (0..len).filter(|&k| k != best).map(|k| lane[k]).fold(f64::NEG_INFINITY, f64::max);
                        if op == Red::Max {
                            if len > 1 {
                                self.kink(lane[best] - second, lane[best], best == 0, frozen);
                            }
                            lane.get(best).copied().unwrap_or(f64::NEG_INFINITY)
                        } else {
                            // An exact tie in f64 counts too: the tied values may come
                            // from computations that round apart in f32 (e.g. the sparse
                            // cross-entropies of rows of equal logits: ln 2 each).
                            if len > 1 {
                                self.tie = self.tie.min((lane[best] - second) / (1.0 + lane[best].abs()));
                            }
                            best as f64
                        }
                    }
                });
            }
        }
        let mut shape = a.shape.clone();
        if keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        T { shape, data }
    }
}

/// TensorFlow's convolution and pooling geometry along one axis, written out here
/// independently of modelc: `(output size, padding before)` for an axis of `size`, a
/// kernel or window of `k` taps `dilation` apart, and `stride`. "same" gives
/// `ceil(size / stride)` outputs with `max((out - 1) * stride + window - size, 0)` padding,
/// the odd one after (at the bottom or right); "valid" no padding, `floor((size - window)
/// / stride) + 1` outputs.
fn tf_geometry(size: usize, k: usize, stride: usize, dilation: usize, same: bool) -> (usize, usize) {
    let window = (k - 1) * dilation + 1;
    if same {
        let out = size.div_ceil(stride);
        (out, ((out - 1) * stride + window).saturating_sub(size) / 2)
    } else {
        ((size - window) / stride + 1, 0)
    }
}

// ---------------------------------------------------------------- cases

fn dims_of(shape: &[Dim], dims: [usize; 2]) -> Vec<usize> {
    shape
        .iter()
        .map(|d| match d {
            Dim::S(k) => *k,
            Dim::Sym(s) => dims[*s],
        })
        .collect()
}

/// How an input is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Contiguous,
    /// One axis reversed: a negative stride.
    Reversed(usize),
    /// Every other element along one axis: stride 2.
    Stepped(usize),
    /// One axis broadcast from a single element: stride 0 (its values repeat).
    Broadcast(usize),
    /// Column-major: the axes reversed over a contiguous array.
    Transposed,
}

/// The memory one input's view borrows, and how to view it.
struct Backing {
    base: ArrayD<f32>,
    /// For an index input: `base` mapped to ids below its bound (the same layout).
    ids: Option<ArrayD<u32>>,
    layout: Layout,
    shape: Vec<usize>,
}

/// `base` seen through `layout` as a view of `shape`.
fn lay<'a, A>(base: &'a ArrayD<A>, layout: Layout, shape: &[usize]) -> ArrayViewD<'a, A> {
    let mut v = base.view();
    match layout {
        Layout::Contiguous => {}
        Layout::Reversed(a) => v.invert_axis(Axis(a)),
        Layout::Stepped(a) => v.slice_axis_inplace(Axis(a), Slice::new(0, None, 2)),
        Layout::Broadcast(_) => {
            return base.broadcast(IxDyn(shape)).expect("a size-1 axis broadcasts");
        }
        Layout::Transposed => v = v.reversed_axes(),
    }
    v
}

impl Backing {
    fn new(shape: Vec<usize>, layout: Layout, bound: Option<usize>, rng: &mut gen::Rng) -> Backing {
        let mut value = || ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 3.0 - 1.5) as f32;
        let layout = match layout {
            _ if shape.is_empty() => Layout::Contiguous,
            Layout::Reversed(a) => Layout::Reversed(a % shape.len()),
            Layout::Stepped(a) => Layout::Stepped(a % shape.len()),
            Layout::Broadcast(a) => Layout::Broadcast(a % shape.len()),
            l => l,
        };
        let mut base_shape = shape.clone();
        match layout {
            Layout::Stepped(a) => base_shape[a] = 2 * shape[a],
            Layout::Broadcast(a) => base_shape[a] = 1,
            Layout::Transposed => base_shape.reverse(),
            _ => {}
        }
        let base = ArrayD::from_shape_fn(IxDyn(&base_shape), |_| value());
        // Values in [-1.5, 1.5) to ids in 0..bound, every id about equally often.
        let ids = bound.map(|b| base.mapv(|v| (((v + 1.5) / 3.0 * b as f32) as u32).min(b as u32 - 1)));
        Backing { base, ids, layout, shape }
    }

    fn view(&self) -> ArrayViewD<'_, f32> {
        lay(&self.base, self.layout, &self.shape)
    }

    fn ids_view(&self) -> Option<ArrayViewD<'_, u32>> {
        self.ids.as_ref().map(|ids| lay(ids, self.layout, &self.shape))
    }
}

fn to_t(x: &ArrayViewD<'_, f32>) -> T {
    T { shape: x.shape().to_vec(), data: x.iter().map(|&v| f64::from(v)).collect() }
}

fn close(found: f64, expected: f64, rtol: f64, atol: f64) -> bool {
    (found - expected).abs() <= atol + rtol * expected.abs().max(found.abs())
}

/// Whether an error says that something averages over an empty dimension (modelc's
/// `EmptyReduction`: "`l` averages over `n`, which is 0 in this call; a mean over nothing has
/// no value").
fn mentions_empty(e: &str) -> bool {
    let e = e.to_lowercase();
    e.contains("empty") || e.contains("over nothing")
}

/// What one case did, for the summary.
#[derive(Default)]
struct Tally {
    cases: usize,
    gradients_compared: usize,
    gradients_skipped_at_kinks: usize,
    empty_errs: usize,
    metrics_compared: usize,
    metrics_skipped_at_ties: usize,
    losses_skipped_at_ties: usize,
}

/// Runs one case; `Err` describes the mismatch.
fn check_case(entry: &Entry, spec: &Spec, case: &Case, tally: &mut Tally) -> Result<(), String> {
    let dims = [case.n, case.m];
    let mut rng = gen::Rng::new(case.values);
    let backings: Vec<Backing> = spec
        .inputs
        .iter()
        .enumerate()
        .map(|(k, d)| Backing::new(dims_of(&d.shape, dims), case.layouts[k % case.layouts.len()], d.bound, &mut rng))
        .collect();
    let views: Vec<ArrayViewD<'_, f32>> = backings.iter().map(Backing::view).collect();
    // Index inputs' views (an f32 input's entry is never read: its own view, as ids of 0).
    let nothing = ArrayD::<u32>::zeros(IxDyn(&[0]));
    let id_views: Vec<ArrayViewD<'_, u32>> =
        backings.iter().map(|b| b.ids_view().unwrap_or_else(|| nothing.view())).collect();
    let inputs: Vec<T> = backings
        .iter()
        .zip(views.iter().zip(&id_views))
        .map(|(b, (x, u))| {
            if b.ids.is_some() {
                T { shape: u.shape().to_vec(), data: u.iter().map(|&v| f64::from(v)).collect() }
            } else {
                to_t(x)
            }
        })
        .collect();
    let params32: Vec<ArrayD<f32>> = spec
        .params
        .iter()
        .map(|p| {
            let shape = dims_of(&p.shape, dims);
            ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
            })
        })
        .collect();
    let params: Vec<T> = params32.iter().map(|p| to_t(&p.view())).collect();

    let describe = || {
        let mut s = format!("model seed {}:\n{}\nn = {}, m = {}\n", entry.seed, entry.text, case.n, case.m);
        for (d, (b, t)) in spec.inputs.iter().zip(backings.iter().zip(&inputs)) {
            s += &format!("  input {} {:?} as {:?}: {:?}\n", d.name, t.shape, b.layout, t.data);
        }
        for (d, t) in spec.params.iter().zip(&params) {
            s += &format!("  param {} {:?}: {:?}\n", d.name, t.shape, t.data);
        }
        s
    };

    let mut ev = Eval {
        inputs: &inputs,
        params: &params,
        center: &params,
        dims,
        kink: f64::INFINITY,
        branches: 0,
        tie: f64::INFINITY,
        relu_ties: false,
    };
    let reference = ev.eval(&spec.loss, false);
    let (kink, branches) = (ev.kink, ev.branches);
    let expected = reference.data[0];
    let out = (entry.run)(&views, &id_views, &params32);
    tally.cases += 1;
    if ev.tie < TIE {
        // A `where` whose f32 condition is a near-tie: f32 may pick the other branch.
        tally.losses_skipped_at_ties += 1;
        return Ok(());
    }

    // The loss.
    let empty = dims.contains(&0);
    if !expected.is_finite() {
        if !empty {
            // Generated domains keep every value finite on non-empty inputs.
            return Err(format!("{}the reference loss is {expected}: the generator made an invalid model", describe()));
        }
        // An average over nothing: a clear `Err`, never `Ok(NaN)`.
        for (what, r) in
            [("compute_gradients", out.grads.as_ref().map(|g| g.0)), ("loss fetch", out.loss.as_ref().copied())]
        {
            match r {
                Err(e) if mentions_empty(e) => {}
                other => {
                    return Err(format!(
                        "{}the loss has no value (reference {expected}: a mean or max over an empty dimension): {what} must be an Err saying so, found {other:?}",
                        describe()
                    ))
                }
            }
        }
        tally.empty_errs += 1;
        return check_metric(spec, &mut ev, &out, &describe, tally);
    }
    // An empty dimension may also be refused when the mean over it is later summed
    // away (a sum over nothing is 0, so the reference is finite): an `Err` that says so
    // is fine, as long as both calls agree.
    if empty {
        if let (Err(a), Err(b)) = (&out.grads, &out.loss) {
            if mentions_empty(a) && mentions_empty(b) {
                tally.empty_errs += 1;
                return check_metric(spec, &mut ev, &out, &describe, tally);
            }
        }
    }
    let (loss, grads) = match &out.grads {
        Ok((l, g)) => (*l as f64, g),
        Err(e) => return Err(format!("{}compute_gradients failed: {e} (reference loss {expected})", describe())),
    };
    let fetched = match &out.loss {
        Ok(l) => *l as f64,
        Err(e) => return Err(format!("{}the loss fetch failed: {e} (reference loss {expected})", describe())),
    };
    for (what, l) in [("compute_gradients' loss", loss), ("the loss fetch", fetched)] {
        if !close(l, expected, 1e-4, 1e-4) {
            return Err(format!("{}{what} is {l}, the reference's {expected}", describe()));
        }
    }

    // Every trainable param's gradient against central differences.
    let trainable: Vec<usize> = (0..spec.params.len()).filter(|&p| !spec.params[p].frozen).collect();
    if trainable.len() != grads.len() {
        return Err(format!("{}{} gradients for {} trainable params", describe(), grads.len(), trainable.len()));
    }
    if kink < KINK {
        tally.gradients_skipped_at_kinks += 1;
    } else {
        let mut fds: Vec<Vec<Option<f64>>> = Vec::new();
        for &p in &trainable {
            let mut fd = Vec::new();
            for j in 0..params[p].data.len() {
                let at = |delta: f64| {
                    let mut moved = params.clone();
                    moved[p].data[j] += delta;
                    let mut e = Eval { params: &moved, kink: f64::INFINITY, branches: 0, tie: f64::INFINITY, ..ev };
                    let l = e.eval(&spec.loss, false).data[0];
                    (l, e.branches)
                };
                let h = H * (1.0 + params[p].data[j].abs());
                let ((lp, bp), (lm, bm)) = (at(h), at(-h));
                // A step that changes a branch measures the kink, not the derivative.
                fd.push(if bp == branches && bm == branches { Some((lp - lm) / (2.0 * h)) } else { None });
            }
            fds.push(fd);
        }
        let scale = fds.iter().flatten().flatten().fold(0.0f64, |m, g| m.max(g.abs()));
        for ((&p, fd), g) in trainable.iter().zip(&fds).zip(grads) {
            let name = &spec.params[p].name;
            if g.shape() != params[p].shape.as_slice() {
                return Err(format!(
                    "{}the gradient of {name} has shape {:?}, the param {:?}",
                    describe(),
                    g.shape(),
                    params[p].shape
                ));
            }
            for (j, (r, &found)) in fd.iter().zip(g.iter()).enumerate() {
                let Some(r) = *r else { continue };
                tally.gradients_compared += 1;
                if !close(found as f64, r, 1e-3, 1e-4 * (1.0 + scale)) {
                    return Err(format!(
                        "{}d l / d {name}[{j}] is {found}, the reference's finite difference {r} (all: {:?}, model: {:?})",
                        describe(),
                        fd,
                        g.iter().collect::<Vec<_>>()
                    ));
                }
            }
        }
    }
    check_metric(spec, &mut ev, &out, &describe, tally)
}

fn check_metric(
    spec: &Spec,
    ev: &mut Eval<'_>,
    out: &Outcome,
    describe: &dyn Fn() -> String,
    tally: &mut Tally,
) -> Result<(), String> {
    let (Some(metric), Some(found)) = (&spec.metric, &out.metric) else { return Ok(()) };
    let case_empty = ev.dims.contains(&0);
    ev.tie = f64::INFINITY;
    ev.relu_ties = true;
    let expected = ev.eval(metric, false).data[0];
    if ev.tie < TIE {
        tally.metrics_skipped_at_ties += 1;
        return Ok(());
    }
    tally.metrics_compared += 1;
    match found {
        Err(e) if case_empty && mentions_empty(e) => Ok(()),
        Ok(v) if expected.is_finite() && close(*v as f64, expected, 1e-5, 1e-5) => Ok(()),
        other => Err(format!("{}the metric is {other:?}, the reference's {expected}", describe())),
    }
}

/// One proptest case: symbolic dimensions, a seed for the values, the inputs' layouts.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    m: usize,
    values: u64,
    layouts: Vec<Layout>,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        3 => Just(Layout::Contiguous),
        1 => (0usize..3).prop_map(Layout::Reversed),
        1 => (0usize..3).prop_map(Layout::Stepped),
        1 => (0usize..3).prop_map(Layout::Broadcast),
        1 => Just(Layout::Transposed),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let dim = prop_oneof![1 => Just(0usize), 2 => Just(1usize), 3 => Just(2usize), 3 => Just(3usize)];
    (dim.clone(), dim, any::<u64>(), prop::collection::vec(layout(), 4)).prop_map(|(n, m, values, layouts)| Case {
        n,
        m,
        values,
        layouts,
    })
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

#[test]
fn every_generated_model_compiles() {
    let rejected: Vec<String> = models::REJECTED
        .iter()
        .map(|(seed, text, why)| format!("model seed {seed}:\n{text}\nrejected: {why}\n"))
        .collect();
    assert!(rejected.is_empty(), "the compiler rejected {} valid models:\n{}", rejected.len(), rejected.join("\n"));
}

#[test]
fn random_models_match_the_reference() {
    let cases = env_usize("MODELC_RANDOM_CASES", 24) as u32;
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let verbose = std::env::var_os("MODELC_RANDOM_VERBOSE").is_some();
    let only = std::env::var("MODELC_RANDOM_ONLY").ok().and_then(|v| v.trim().parse::<u64>().ok());
    for entry in models::MODELS.iter().filter(|e| only.is_none_or(|s| s == e.seed)) {
        if verbose {
            eprintln!("model seed {}:\n{}", entry.seed, entry.text);
        }
        let spec = gen::generate(entry.seed);
        assert_eq!(gen::model_text("M", &spec), entry.text, "build.rs and the test disagree on model {}", entry.seed);
        let mut runner = TestRunner::new_with_rng(
            Config { cases, failure_persistence: None, ..Config::default() },
            TestRng::from_seed(RngAlgorithm::ChaCha, &{
                let mut s = [7u8; 32];
                s[..8].copy_from_slice(&entry.seed.to_le_bytes());
                s
            }),
        );
        let last = std::cell::RefCell::new(String::new());
        let t = std::cell::RefCell::new(Tally::default());
        let result = runner.run(&case(), |c| {
            if verbose {
                eprintln!("  {c:?}");
            }
            match check_case(entry, &spec, &c, &mut t.borrow_mut()) {
                Ok(()) => Ok(()),
                Err(why) => {
                    *last.borrow_mut() = why.clone();
                    Err(TestCaseError::fail(why))
                }
            }
        });
        if let Err(e) = result {
            // `last` is the minimal (shrunk) case: proptest's last failing run.
            let minimal = match e {
                proptest::test_runner::TestError::Fail(_, c) => format!("{c:?}"),
                other => other.to_string(),
            };
            failures.push(format!("{}\nminimal case: {minimal}", last.borrow()));
        }
        let t = t.into_inner();
        tally.cases += t.cases;
        tally.gradients_compared += t.gradients_compared;
        tally.gradients_skipped_at_kinks += t.gradients_skipped_at_kinks;
        tally.empty_errs += t.empty_errs;
        tally.metrics_compared += t.metrics_compared;
        tally.metrics_skipped_at_ties += t.metrics_skipped_at_ties;
        tally.losses_skipped_at_ties += t.losses_skipped_at_ties;
    }
    println!(
        "{} models x {cases} cases ({} run, shrinking included): {} gradient entries compared, {} cases' gradients skipped at kinks, \
         {} empty-average errors, {} metrics compared, {} skipped at ties, {} cases skipped at a near-tie in the loss",
        models::MODELS.len(),
        tally.cases,
        tally.gradients_compared,
        tally.gradients_skipped_at_kinks,
        tally.empty_errs,
        tally.metrics_compared,
        tally.metrics_skipped_at_ties,
        tally.losses_skipped_at_ties
    );
    assert!(
        failures.is_empty(),
        "{} of {} models disagree with the reference:\n\n{}",
        failures.len(),
        models::MODELS.len(),
        failures.join("\n\n")
    );
}
