//! The random-model generator, shared by `build.rs` (which writes each model as a
//! `model! { .. }` block) and by the test (which regenerates the same model from the same
//! seed as data for its reference interpreter). It shares no code with modelc: it knows
//! the model language only as text.
//!
//! Generation is type-directed: `expr(shape)` builds an expression of exactly that shape,
//! choosing among every op of the language whose result can have it, and creates the
//! inputs and params its leaves need on the way (params get static shapes, so symbolic
//! dimensions reach them only through broadcasting). Domains are kept valid by
//! construction: `ln`, `sqrt`, fractional and negative `pow` and divisors only ever see
//! arguments made positive (`square(e) + 0.5`, `exp(e)`, `sigmoid(e)`, ...). Kinks (relu,
//! abs, maximum, minimum, max) are left in; the test measures how close each evaluation
//! comes to one and excludes finite differences that straddle one.
//!
//! **Index tensors.** `ids(shape, bound)` builds a u32 expression whose values are below
//! `bound`: an index input (declared `as u32`, filled by the test with values below its
//! bound), or reshapes, flattens, concatenations, slices and `where`s of such. They feed
//! `gather` (a table of `bound` rows), `one_hot(.., depth = bound)`,
//! `sparse_softmax_cross_entropy` (`bound` classes) and comparisons of indices. The shape
//! ops (`reshape`, `flatten`, `concat`, `slice`, `where`), reductions over two axes and
//! `dropout(.., rate = 0.0)` (the identity, also in the loss) take f32 operands too. These
//! arms replace draws of the older ones (the model count, and so the build time, is the
//! same).
//!
//! **CNNs.** A dense layer (`matmul` to `[d0, k]`) or a one-axis reduction to a vector is,
//! in a share `cnn_share()` of the draws (0.6; `MODELC_RANDOM_CNN`), a small CNN instead (`cnn`): NHWC images (rank 4, static
//! height, width and channels, the batch `d0` as drawn) through up to two `conv2d`,
//! `max_pool` and `avg_pool` with random kernel / window sizes, strides, dilations and
//! paddings that fit (`image`, built bottom-up: each op's output size follows from its
//! input's), then `flatten` and a dense param, or `sum` / `mean` / `max` over the image's
//! height and width (a global pooling) or over everything but the batch. Rank 4 occurs only
//! there (`MAX_RANK` bounds the rest), but the elementwise ops, broadcasting and the shape
//! and index ops of `expr` also make the images' leaves.

#![allow(dead_code)]

use std::fmt::Write as _;

/// A dimension of a declared or inferred shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A static size (at least 1).
    S(usize),
    /// A symbolic dimension, by index into [`SYMS`].
    Sym(usize),
}

/// The symbolic dimensions a model may use.
pub const SYMS: [&str; 2] = ["n", "m"];

/// A shape.
pub type Shape = Vec<Dim>;

/// Elementwise unary ops, as written in the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Un {
    Neg,
    Exp,
    Ln,
    Log,
    Sqrt,
    Square,
    Abs,
    Relu,
    Sigmoid,
    Tanh,
    Softplus,
    StopGradient,
}

/// Binary ops (operators and the two-argument elementwise calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    /// The other comparisons (f32 or u32 operands, 1.0 / 0.0).
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Maximum,
    Minimum,
    SigmoidXent,
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Red {
    Sum,
    Mean,
    Max,
    Argmax,
}

/// An expression of the model language.
#[derive(Clone, Debug, PartialEq)]
pub enum E {
    Input(usize),
    Param(usize),
    Lit(f64),
    /// A symbolic dimension used as a scalar value.
    DimValue(usize),
    Un(Un, Box<E>),
    Pow(Box<E>, f64),
    Bin(Bin, Box<E>, Box<E>),
    MatMul(Box<E>, Box<E>),
    Transpose(Box<E>),
    /// `op(e)` over all axes (`axis: None`) or one axis as written (maybe negative).
    Reduce {
        op: Red,
        e: Box<E>,
        axis: Option<i64>,
        keepdims: bool,
    },
    /// `softmax(e)` / `log_softmax(e)` with the axis as written (`None`: the default, -1).
    Softmax {
        log: bool,
        e: Box<E>,
        axis: Option<i64>,
    },
    SoftmaxXent(Box<E>, Box<E>),
    /// `layer_norm(e, axis, epsilon)`: epsilon is always written and at least 0.1, so that
    /// a lane of (nearly) equal values (a broadcast param along the lane) stays
    /// well-conditioned: `1 / sqrt(epsilon)` bounds how much f32 rounding is amplified.
    LayerNorm {
        e: Box<E>,
        axis: Option<i64>,
        epsilon: f64,
    },
    /// `dropout(e, rate)`, in metrics at any rate: a fetch runs in inference mode, where it
    /// is the identity; in the loss only at rate 0 (the identity in training too: any other
    /// rate would draw masks the reference cannot know; tests/dropout.rs and
    /// tests/gradients.rs check training mode).
    Dropout(Box<E>, f64),
    /// `sum` / `mean` / `max` over two or more axes (as written, maybe negative).
    ReduceAxes {
        op: Red,
        e: Box<E>,
        axes: Vec<i64>,
        keepdims: bool,
    },
    /// `reshape(e, shape)` (`flatten` when `flatten`: `shape` is then what it gives).
    Reshape {
        e: Box<E>,
        shape: Shape,
        flatten: bool,
    },
    /// `concat([a, b, ..], axis)` along a static axis.
    Concat(Vec<E>, usize),
    /// `slice(e, axis, start, end)` of a static axis.
    Slice {
        e: Box<E>,
        axis: usize,
        start: usize,
        end: usize,
    },
    /// `where(cond, a, b)`: cond f32 (a comparison), branches both f32 or both u32.
    Where(Box<E>, Box<E>, Box<E>),
    /// `gather(table, ids)`.
    Gather(Box<E>, Box<E>),
    /// `one_hot(ids, depth)`.
    OneHot(Box<E>, usize),
    /// `sparse_softmax_cross_entropy(logits, labels)`.
    SparseXent(Box<E>, Box<E>),
    /// A comparison of two index tensors (exact: no kink, no tie).
    IndexCmp(Bin, Box<E>, Box<E>),
    /// `conv2d(x, w, stride, padding, dilation)`: an NHWC image `[n, h, w, ci]` (static h,
    /// w, ci) and an HWIO kernel `[kh, kw, ci, co]` (a param); `same` is `padding = "same"`.
    Conv {
        x: Box<E>,
        w: Box<E>,
        stride: [usize; 2],
        dilation: [usize; 2],
        same: bool,
    },
    /// `max_pool` (`max`) or `avg_pool(x, size, stride, padding)` of an NHWC image.
    Pool {
        max: bool,
        x: Box<E>,
        size: [usize; 2],
        stride: [usize; 2],
        same: bool,
    },
}

/// A declared input or param.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub name: String,
    pub shape: Shape,
    /// For params: no path to the loss outside `stop_gradient` (declared `#[frozen]`).
    pub frozen: bool,
    /// For index inputs (`as u32`): the values are below this.
    pub bound: Option<usize>,
}

/// One random model.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub inputs: Vec<Decl>,
    pub params: Vec<Decl>,
    pub loss: E,
    pub metric: Option<E>,
}

/// splitmix64: small, seedable, and the same everywhere (no dependency for build.rs).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const MAX_INPUTS: usize = 4;
const MAX_PARAMS: usize = 4;
const MAX_RANK: usize = 3;
/// How often a dense layer (`matmul`) or a one-axis reduction to a vector is a CNN
/// instead: 0.6, or `MODELC_RANDOM_CNN` (0 to 1) when set at build time (a run that
/// hunts in the CNN ops sets 1). Read with `option_env!`, so that `build.rs` and the test
/// (compiled by the same cargo command) draw the same models.
fn cnn_share() -> f64 {
    option_env!("MODELC_RANDOM_CNN").and_then(|v| v.trim().parse().ok()).unwrap_or(0.6)
}

struct Gen {
    rng: Rng,
    inputs: Vec<Decl>,
    params: Vec<Decl>,
}

fn has_sym(s: &[Dim]) -> bool {
    s.iter().any(|d| matches!(d, Dim::Sym(_)))
}

impl Gen {
    fn dim(&mut self) -> Dim {
        if self.rng.chance(0.35) {
            Dim::Sym(if self.rng.chance(0.7) { 0 } else { 1 })
        } else {
            Dim::S(1 + self.rng.below(4))
        }
    }

    fn shape(&mut self, rank: usize) -> Shape {
        (0..rank).map(|_| self.dim()).collect()
    }

    fn bound_syms(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for d in self.inputs.iter().flat_map(|i| i.shape.iter()) {
            if let Dim::Sym(s) = d {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
        }
        out
    }

    /// A leaf of exactly this shape.
    fn leaf(&mut self, shape: &Shape) -> E {
        if shape.is_empty() && self.rng.chance(0.35) {
            let syms = self.bound_syms();
            if !syms.is_empty() && self.rng.chance(0.3) {
                return E::DimValue(self.rng.pick(&syms));
            }
            return E::Lit(self.rng.pick(&[0.5, 2.0, 1.5, -0.75, 3.0]));
        }
        // Params need static shapes. The limits are soft: a leaf that fits nothing
        // existing gets a new declaration anyway.
        let want_param = !has_sym(shape) && self.rng.chance(0.55);
        let (pool, prefix) = if want_param { (&mut self.params, "p") } else { (&mut self.inputs, "x") };
        let limit = if want_param { MAX_PARAMS } else { MAX_INPUTS };
        let same: Vec<usize> =
            (0..pool.len()).filter(|&i| pool[i].shape == *shape && pool[i].bound.is_none()).collect();
        let index = if !same.is_empty() && (pool.len() >= limit || self.rng.chance(0.5)) {
            same[self.rng.below(same.len())]
        } else {
            pool.push(Decl {
                name: format!("{prefix}{}", pool.len()),
                shape: shape.clone(),
                frozen: false,
                bound: None,
            });
            pool.len() - 1
        };
        if want_param {
            E::Param(index)
        } else {
            E::Input(index)
        }
    }

    /// An operand shape that broadcasts to `shape`: leading axes dropped and axes set to 1.
    /// With `for_param`, symbolic axes always go, so that a param can fill it.
    fn sub_shape(&mut self, shape: &Shape, for_param: bool) -> Shape {
        let mut s: Shape = shape
            .iter()
            .map(|&d| if (for_param && matches!(d, Dim::Sym(_))) || self.rng.chance(0.25) { Dim::S(1) } else { d })
            .collect();
        while !s.is_empty() && s[0] == Dim::S(1) && self.rng.chance(0.6) {
            s.remove(0);
        }
        s
    }

    /// Two operand shapes whose broadcast is exactly `shape`.
    fn operand_shapes(&mut self, shape: &Shape) -> (Shape, Shape) {
        if self.rng.chance(0.35) {
            return (shape.clone(), shape.clone());
        }
        let for_param = self.rng.chance(0.4);
        let a = self.sub_shape(shape, for_param);
        // b keeps every axis that a lost (so the broadcast is exact), and maybe drops others.
        let off = shape.len() - a.len();
        let mut b: Shape = Vec::new();
        for (i, &d) in shape.iter().enumerate() {
            let a_has = i >= off && a[i - off] == d;
            b.push(if a_has && d != Dim::S(1) && self.rng.chance(0.5) { Dim::S(1) } else { d });
        }
        // Only one operand may lose leading axes, or the broadcast would lose them too.
        while a.len() == shape.len() && !b.is_empty() && b[0] == Dim::S(1) && self.rng.chance(0.5) {
            b.remove(0);
        }
        if self.rng.chance(0.5) {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// An expression whose values are positive (at least about 0.1), for `ln`, `sqrt`,
    /// fractional powers and divisors.
    fn positive(&mut self, shape: &Shape, depth: usize) -> E {
        let e = Box::new(self.expr(shape, depth));
        match self.rng.below(7) {
            0 => E::Bin(Bin::Add, Box::new(E::Un(Un::Square, e)), Box::new(E::Lit(0.5))),
            1 => E::Un(Un::Exp, Box::new(E::Un(Un::Tanh, e))),
            2 => E::Un(Un::Sigmoid, e),
            3 => E::Bin(Bin::Add, Box::new(E::Un(Un::Softplus, e)), Box::new(E::Lit(0.25))),
            4 => E::Bin(Bin::Sub, Box::new(E::Lit(1.0)), Box::new(E::Un(Un::Sigmoid, e))),
            5 if !shape.is_empty() => E::Softmax { log: false, e, axis: None },
            _ => E::Bin(Bin::Add, Box::new(E::Un(Un::Abs, e)), Box::new(E::Lit(0.5))),
        }
    }

    /// An index input of this shape with values below `bound`: an existing one whose
    /// bound is at most `bound`, or a new one.
    fn index_leaf(&mut self, shape: &Shape, bound: usize) -> E {
        let same: Vec<usize> = (0..self.inputs.len())
            .filter(|&i| self.inputs[i].shape == *shape && self.inputs[i].bound.is_some_and(|b| b <= bound))
            .collect();
        if !same.is_empty() && (self.inputs.len() >= MAX_INPUTS || self.rng.chance(0.5)) {
            return E::Input(self.rng.pick(&same));
        }
        let k = self.inputs.len();
        self.inputs.push(Decl { name: format!("i{k}"), shape: shape.clone(), frozen: false, bound: Some(bound) });
        E::Input(k)
    }

    /// A u32 expression of exactly this shape (rank at least 1) with values below `bound`.
    fn ids(&mut self, shape: &Shape, bound: usize, depth: usize) -> E {
        if depth > 0 && self.rng.chance(0.6) {
            let d = depth - 1;
            if self.rng.chance(0.15) {
                let cond = self.condition(shape, d);
                let (a, b) = (self.ids(shape, bound, d), self.ids(shape, bound, d));
                return E::Where(Box::new(cond), Box::new(a), Box::new(b));
            }
            if let Some(e) = self.moved(shape, d, Some(bound)) {
                return e;
            }
        }
        self.index_leaf(shape, bound)
    }

    /// An operand: f32 (`bound` None) or indices below `bound`.
    fn operand(&mut self, shape: &Shape, depth: usize, bound: Option<usize>) -> E {
        match bound {
            Some(b) => self.ids(shape, b, depth),
            None => self.expr(shape, depth),
        }
    }

    /// A `where` condition of this shape: a comparison of f32 values (`<`, `<=`, `>`,
    /// `>=`: a flip under a finite-difference step is a kink the reference tracks) or of
    /// indices (exact).
    fn condition(&mut self, shape: &Shape, depth: usize) -> E {
        let op = self.rng.pick(&[Bin::Lt, Bin::Le, Bin::Gt, Bin::Ge]);
        if !shape.is_empty() && self.rng.chance(0.4) {
            let bound = 2 + self.rng.below(3);
            let op = self.rng.pick(&[Bin::Eq, Bin::Ne, Bin::Lt, Bin::Le, Bin::Gt, Bin::Ge]);
            let (a, b) = (self.ids(shape, bound, depth), self.ids(shape, bound, depth));
            return E::IndexCmp(op, Box::new(a), Box::new(b));
        }
        let (a, b) = (self.expr(shape, depth), self.expr(shape, depth));
        E::Bin(op, Box::new(a), Box::new(b))
    }

    /// A shape op whose result has exactly `shape`: a reshape (two adjacent axes merged or
    /// one split), a flatten, a concatenation or a slice along a static axis, of f32 or
    /// index operands; `None` if the one drawn does not fit `shape`.
    fn moved(&mut self, shape: &Shape, depth: usize, bound: Option<usize>) -> Option<E> {
        let r = shape.len();
        let statics: Vec<usize> = (0..r).filter(|&i| matches!(shape[i], Dim::S(_))).collect();
        match self.rng.below(4) {
            0 if r >= 1 => {
                let mut options: Vec<Shape> = Vec::new();
                for i in 0..r.saturating_sub(1) {
                    let merged = match (shape[i], shape[i + 1]) {
                        (Dim::S(a), Dim::S(b)) => Some(Dim::S(a * b)),
                        (Dim::S(1), d) | (d, Dim::S(1)) => Some(d),
                        _ => None,
                    };
                    if let Some(m) = merged {
                        let mut src = shape.clone();
                        src.splice(i..i + 2, [m]);
                        options.push(src);
                    }
                }
                if r < MAX_RANK {
                    for &i in &statics {
                        let Dim::S(k) = shape[i] else { continue };
                        let splits: &[(usize, usize)] = if k == 4 { &[(2, 2), (1, 4)] } else { &[(k, 1), (1, k)] };
                        let (a, b) = self.rng.pick(splits);
                        let mut src = shape.clone();
                        src.splice(i..=i, [Dim::S(a), Dim::S(b)]);
                        options.push(src);
                    }
                }
                if options.is_empty() {
                    return None;
                }
                let src = options.swap_remove(self.rng.below(options.len()));
                let e = self.operand(&src, depth, bound);
                Some(E::Reshape { e: Box::new(e), shape: shape.clone(), flatten: false })
            }
            1 if r == 2 => {
                // flatten([d0, a, b]) = [d0, a * b], flatten([d0]) = [d0, 1].
                let Dim::S(k) = shape[1] else { return None };
                let src = if k == 1 && self.rng.chance(0.3) {
                    vec![shape[0]]
                } else {
                    let (a, b) = if k == 4 {
                        (2, 2)
                    } else if self.rng.chance(0.5) {
                        (1, k)
                    } else {
                        (k, 1)
                    };
                    vec![shape[0], Dim::S(a), Dim::S(b)]
                };
                let e = self.operand(&src, depth, bound);
                Some(E::Reshape { e: Box::new(e), shape: shape.clone(), flatten: true })
            }
            2 => {
                let axes: Vec<usize> = statics.iter().copied().filter(|&i| shape[i] != Dim::S(1)).collect();
                if axes.is_empty() {
                    return None;
                }
                let axis = self.rng.pick(&axes);
                let Dim::S(k) = shape[axis] else { return None };
                let first = 1 + self.rng.below(k - 1);
                let parts = if k - first >= 2 && self.rng.chance(0.3) {
                    vec![first, 1, k - first - 1]
                } else {
                    vec![first, k - first]
                };
                let list = parts
                    .into_iter()
                    .map(|len| {
                        let mut s = shape.clone();
                        s[axis] = Dim::S(len);
                        self.operand(&s, depth, bound)
                    })
                    .collect();
                Some(E::Concat(list, axis))
            }
            _ => {
                if statics.is_empty() {
                    return None;
                }
                let axis = self.rng.pick(&statics);
                let Dim::S(k) = shape[axis] else { return None };
                let extra = 1 + self.rng.below(2);
                let start = self.rng.below(extra + 1);
                let mut src = shape.clone();
                src[axis] = Dim::S(k + extra);
                let e = self.operand(&src, depth, bound);
                Some(E::Slice { e: Box::new(e), axis, start, end: start + k })
            }
        }
    }

    /// An f32 expression of this shape made by an index op: `gather`, `one_hot`,
    /// `sparse_softmax_cross_entropy` or a comparison of indices.
    fn index_op(&mut self, shape: &Shape, depth: usize) -> Option<E> {
        let r = shape.len();
        let last = shape.last().copied();
        match self.rng.below(4) {
            0 if r >= 2 => {
                let Some(Dim::S(k)) = last else { return None };
                let rows = 2 + self.rng.below(3);
                let table = self.expr(&vec![Dim::S(rows), Dim::S(k)], depth);
                let ids = self.ids(&shape[..r - 1].to_vec(), rows, depth);
                Some(E::Gather(Box::new(table), Box::new(ids)))
            }
            1 if r >= 2 => {
                let Some(Dim::S(k)) = last else { return None };
                Some(E::OneHot(Box::new(self.ids(&shape[..r - 1].to_vec(), k, depth)), k))
            }
            2 if (1..MAX_RANK).contains(&r) => {
                let classes = 2 + self.rng.below(3);
                let mut zs = shape.clone();
                zs.push(Dim::S(classes));
                let z = self.expr(&zs, depth);
                let y = self.ids(shape, classes, depth);
                Some(E::SparseXent(Box::new(z), Box::new(y)))
            }
            3 if r >= 1 => Some(self.condition_of_indices(shape, depth)),
            _ => None,
        }
    }

    fn condition_of_indices(&mut self, shape: &Shape, depth: usize) -> E {
        let bound = 2 + self.rng.below(3);
        let op = self.rng.pick(&[Bin::Eq, Bin::Ne, Bin::Lt, Bin::Le, Bin::Gt, Bin::Ge]);
        let (a, b) = (self.ids(shape, bound, depth), self.ids(shape, bound, depth));
        E::IndexCmp(op, Box::new(a), Box::new(b))
    }

    /// A param of exactly this shape: an existing one or a new one.
    fn param_leaf(&mut self, shape: &Shape) -> E {
        let same: Vec<usize> = (0..self.params.len()).filter(|&i| self.params[i].shape == *shape).collect();
        if !same.is_empty() && self.rng.chance(0.5) {
            return E::Param(self.rng.pick(&same));
        }
        let k = self.params.len();
        self.params.push(Decl { name: format!("p{k}"), shape: shape.clone(), frozen: false, bound: None });
        E::Param(k)
    }

    /// A CNN ending in `shape`: `[d0, k]` as a dense layer over the flattened image
    /// (`matmul(flatten(img), p)`) or, for a few channels, a global pooling over the
    /// image's height and width; `[d0]` as a reduction over height, width and channels.
    fn cnn(&mut self, shape: &Shape, depth: usize) -> Option<E> {
        let depth = depth.clamp(1, 2);
        match *shape.as_slice() {
            [d0, Dim::S(k)] => {
                if k <= 3 && self.rng.chance(0.3) {
                    let (img, _) = self.image(d0, depth, Some(k));
                    let axes = if self.rng.chance(0.5) { vec![1, 2] } else { vec![-3, -2] };
                    let op = self.rng.pick(&[Red::Sum, Red::Mean, Red::Max]);
                    return Some(E::ReduceAxes { op, e: Box::new(img), axes, keepdims: false });
                }
                let (img, [h, w, c]) = self.image(d0, depth, None);
                let f = h * w * c;
                let flat = E::Reshape { e: Box::new(img), shape: vec![d0, Dim::S(f)], flatten: true };
                let dense = self.param_leaf(&vec![Dim::S(f), Dim::S(k)]);
                Some(E::MatMul(Box::new(flat), Box::new(dense)))
            }
            [d0] => {
                let (img, _) = self.image(d0, depth, None);
                let op = self.rng.pick(&[Red::Sum, Red::Mean, Red::Max]);
                Some(E::ReduceAxes { op, e: Box::new(img), axes: vec![1, 2, 3], keepdims: false })
            }
            _ => None,
        }
    }

    /// An f32 NHWC image `[d0, h, w, c]` (static h, w, c; `c` is `want_c` when given) and
    /// its `[h, w, c]`: up to `depth` convolutions and poolings, bottom-up (their output
    /// size follows from their input's), over an image input (maybe times a per-cell
    /// param) or an elementwise expression of image inputs and broadcast params; each conv
    /// maybe followed by a bias and `relu` or `tanh`. Sizes stay small (images up to 6x6,
    /// 1-2 channels; kernels and windows up to 3x3, strides up to 2 or 3, dilation up to
    /// 2), so that the reference's finite differences stay cheap. A "valid" window never
    /// exceeds its image (the compiler rejects that); "same" may.
    fn image(&mut self, d0: Dim, depth: usize, want_c: Option<usize>) -> (E, [usize; 3]) {
        if depth == 0 || self.rng.chance(0.2) {
            let (h, w) = (2 + self.rng.below(5), 2 + self.rng.below(5));
            let c = want_c.unwrap_or(1 + self.rng.below(2));
            let shape = vec![d0, Dim::S(h), Dim::S(w), Dim::S(c)];
            let e = match self.rng.below(3) {
                0 => self.expr(&shape, 1),
                k => {
                    let i = self.inputs.len();
                    self.inputs.push(Decl { name: format!("x{i}"), shape, frozen: false, bound: None });
                    // Times a per-cell param, so that a pooling right above has a gradient.
                    if k == 1 {
                        let p = self.param_leaf(&vec![Dim::S(h), Dim::S(w), Dim::S(c)]);
                        E::Bin(Bin::Mul, Box::new(E::Input(i)), Box::new(p))
                    } else {
                        E::Input(i)
                    }
                }
            };
            return (e, [h, w, c]);
        }
        let d = depth - 1;
        if self.rng.chance(0.55) {
            let co = want_c.unwrap_or(1 + self.rng.below(2));
            let (x, [h, w, ci]) = self.image(d0, d, None);
            let same = self.rng.chance(0.5);
            let mut kernel = [1 + self.rng.below(3), 1 + self.rng.below(3)];
            let mut dilation = [1, 1];
            for d in &mut dilation {
                if self.rng.chance(0.25) {
                    *d = 2;
                }
            }
            let stride = [1 + self.rng.below(2), 1 + self.rng.below(2)];
            let size = [h, w];
            let mut out = [0; 2];
            for a in 0..2 {
                if !same {
                    // "valid": shrink the window until it fits.
                    while (kernel[a] - 1) * dilation[a] + 1 > size[a] {
                        if dilation[a] > 1 {
                            dilation[a] = 1;
                        } else {
                            kernel[a] -= 1;
                        }
                    }
                }
                let window = (kernel[a] - 1) * dilation[a] + 1;
                out[a] = if same { size[a].div_ceil(stride[a]) } else { (size[a] - window) / stride[a] + 1 };
            }
            let w_param = self.param_leaf(&vec![Dim::S(kernel[0]), Dim::S(kernel[1]), Dim::S(ci), Dim::S(co)]);
            let mut e = E::Conv { x: Box::new(x), w: Box::new(w_param), stride, dilation, same };
            match self.rng.below(4) {
                0 => {
                    let b = self.param_leaf(&vec![Dim::S(co)]);
                    e = E::Un(Un::Relu, Box::new(E::Bin(Bin::Add, Box::new(e), Box::new(b))));
                }
                1 => {
                    let b = self.param_leaf(&vec![Dim::S(co)]);
                    e = E::Bin(Bin::Add, Box::new(e), Box::new(b));
                }
                2 => e = E::Un(Un::Tanh, Box::new(e)),
                _ => {}
            }
            (e, [out[0], out[1], co])
        } else {
            let (x, [h, w, c]) = self.image(d0, d, want_c);
            let max = self.rng.chance(0.5);
            let same = self.rng.chance(0.5);
            let mut size = [1 + self.rng.below(3), 1 + self.rng.below(3)];
            let stride = if self.rng.chance(0.4) { size } else { [1 + self.rng.below(3), 1 + self.rng.below(3)] };
            let dims = [h, w];
            let mut out = [0; 2];
            for a in 0..2 {
                if !same {
                    size[a] = size[a].min(dims[a]);
                }
                out[a] = if same { dims[a].div_ceil(stride[a]) } else { (dims[a] - size[a]) / stride[a] + 1 };
            }
            (E::Pool { max, x: Box::new(x), size, stride, same }, [out[0], out[1], c])
        }
    }

    /// An expression of exactly this shape.
    fn expr(&mut self, shape: &Shape, depth: usize) -> E {
        if depth == 0 || self.rng.chance(0.15) {
            return self.leaf(shape);
        }
        let d = depth - 1;
        let r = shape.len();
        loop {
            match self.rng.below(20) {
                0 | 1 => {
                    let u = self.rng.pick(&[
                        Un::Neg,
                        Un::Square,
                        Un::Abs,
                        Un::Relu,
                        Un::Sigmoid,
                        Un::Tanh,
                        Un::Softplus,
                        Un::StopGradient,
                    ]);
                    return E::Un(u, Box::new(self.expr(shape, d)));
                }
                2 => {
                    // exp of something bounded, so that values stay in f32's range.
                    let inner = self.expr(shape, d);
                    let inner = if self.rng.chance(0.5) { E::Un(Un::Tanh, Box::new(inner)) } else { inner };
                    return E::Un(Un::Exp, Box::new(inner));
                }
                3 => {
                    let u = self.rng.pick(&[Un::Ln, Un::Log, Un::Sqrt]);
                    return E::Un(u, Box::new(self.positive(shape, d)));
                }
                4 => {
                    let k = self.rng.pick(&[2.0, 3.0, 1.5, 0.5, -1.0, -0.5]);
                    let base = if k == 2.0 || k == 3.0 { self.expr(shape, d) } else { self.positive(shape, d) };
                    return E::Pow(Box::new(base), k);
                }
                5..=7 => {
                    let (sa, sb) = self.operand_shapes(shape);
                    let op = self.rng.pick(&[
                        Bin::Add,
                        Bin::Sub,
                        Bin::Mul,
                        Bin::Div,
                        Bin::Maximum,
                        Bin::Minimum,
                        Bin::SigmoidXent,
                        Bin::Mul,
                        Bin::Add,
                    ]);
                    let a = self.expr(&sa, d);
                    let b = if op == Bin::Div { self.positive(&sb, d) } else { self.expr(&sb, d) };
                    return E::Bin(op, Box::new(a), Box::new(b));
                }
                8 | 9 if r == 2 => {
                    // A dense layer over a flattened CNN, or a global pooling, in some of them.
                    if self.rng.chance(cnn_share()) {
                        if let Some(e) = self.cnn(shape, d) {
                            return e;
                        }
                    }
                    let k = self.dim();
                    let a = self.expr(&vec![shape[0], k], d);
                    let b = self.expr(&vec![k, shape[1]], d);
                    return E::MatMul(Box::new(a), Box::new(b));
                }
                10 if r == 2 => {
                    return E::Transpose(Box::new(self.expr(&vec![shape[1], shape[0]], d)));
                }
                11 | 12 if r < MAX_RANK => {
                    if r == 1 && self.rng.chance(cnn_share()) {
                        if let Some(e) = self.cnn(shape, d) {
                            return e;
                        }
                    }
                    // Reduce one axis of an expression with one more axis.
                    let keepdims = self.rng.chance(0.3);
                    let p = self.rng.below(r + 1);
                    let mut inner = shape.clone();
                    if keepdims {
                        // `shape` must have a 1 at p: only possible if it does already.
                        let ones: Vec<usize> = (0..r).filter(|&i| shape[i] == Dim::S(1)).collect();
                        if ones.is_empty() {
                            continue;
                        }
                        let p = self.rng.pick(&ones);
                        inner[p] = self.dim();
                        let axis = if self.rng.chance(0.5) { p as i64 } else { p as i64 - r as i64 };
                        let op = self.rng.pick(&[Red::Sum, Red::Mean, Red::Max]);
                        return E::Reduce { op, e: Box::new(self.expr(&inner, d)), axis: Some(axis), keepdims };
                    }
                    inner.insert(p, self.dim());
                    let rank = r as i64 + 1;
                    let axis = if self.rng.chance(0.5) { p as i64 } else { p as i64 - rank };
                    let op = self.rng.pick(&[Red::Sum, Red::Mean, Red::Max]);
                    // `max` of a vector may omit the axis.
                    let axis = if op == Red::Max && rank == 1 && self.rng.chance(0.3) { None } else { Some(axis) };
                    return E::Reduce { op, e: Box::new(self.expr(&inner, d)), axis, keepdims };
                }
                13 if r == 0 => {
                    let rank = 1 + self.rng.below(MAX_RANK);
                    let inner = self.shape(rank);
                    let op = if self.rng.chance(0.5) { Red::Sum } else { Red::Mean };
                    return E::Reduce { op, e: Box::new(self.expr(&inner, d)), axis: None, keepdims: false };
                }
                14 if r >= 1 => {
                    let log = self.rng.chance(0.5);
                    let axis = match self.rng.below(3) {
                        0 => None,
                        1 => Some(self.rng.below(r) as i64),
                        _ => Some(self.rng.below(r) as i64 - r as i64),
                    };
                    // Normalizations share the arm (same shape, an axis): a third are layer norms.
                    if self.rng.chance(0.33) {
                        let epsilon = self.rng.pick(&[0.1, 0.5, 1.0]);
                        return E::LayerNorm { e: Box::new(self.expr(shape, d)), axis, epsilon };
                    }
                    return E::Softmax { log, e: Box::new(self.expr(shape, d)), axis };
                }
                15 if r < MAX_RANK => {
                    let mut inner = shape.clone();
                    inner.push(self.dim());
                    let z = self.expr(&inner, d);
                    let y = if self.rng.chance(0.5) {
                        E::Softmax { log: false, e: Box::new(self.expr(&inner, d)), axis: None }
                    } else {
                        self.expr(&inner, d)
                    };
                    return E::SoftmaxXent(Box::new(z), Box::new(y));
                }
                16 => {
                    // Each shape op fits some shapes only: a few tries.
                    for _ in 0..3 {
                        if let Some(e) = self.moved(shape, d, None) {
                            return e;
                        }
                    }
                }
                17 if self.rng.chance(0.4) => {
                    let cond = self.condition(shape, d);
                    let (sa, sb) = self.operand_shapes(shape);
                    let (a, b) = (self.expr(&sa, d), self.expr(&sb, d));
                    return E::Where(Box::new(cond), Box::new(a), Box::new(b));
                }
                18 => {
                    for _ in 0..3 {
                        if let Some(e) = self.index_op(shape, d) {
                            return e;
                        }
                    }
                }
                19 if r + 2 <= MAX_RANK => {
                    // A reduction over two axes of an expression with two more.
                    let mut inner = shape.clone();
                    let p = self.rng.below(r + 1);
                    inner.insert(p, self.dim());
                    let q = self.rng.below(r + 2);
                    inner.insert(q, self.dim());
                    let rank = inner.len() as i64;
                    let (lo, hi) = (p.min(q) as i64, p.max(q) as i64 + i64::from(p >= q));
                    let axes = vec![lo, if self.rng.chance(0.5) { hi } else { hi - rank }];
                    let op = self.rng.pick(&[Red::Sum, Red::Mean, Red::Max]);
                    return E::ReduceAxes { op, e: Box::new(self.expr(&inner, d)), axes, keepdims: false };
                }
                19 => return E::Dropout(Box::new(self.expr(shape, d)), 0.0),
                _ => {}
            }
        }
    }

    /// The metric: argmax and `==`, which only metrics may use (argmax's u32 indices only
    /// feed comparisons).
    fn metric(&mut self) -> E {
        let rank = 1 + self.rng.below(2);
        let shape = self.shape(rank);
        let axis = self.rng.below(rank) as i64 - if self.rng.chance(0.5) { rank as i64 } else { 0 };
        let a = self.expr(&shape, 2);
        let a = if self.rng.chance(0.3) { E::Dropout(Box::new(a), self.rng.pick(&[0.1, 0.5, 0.9])) } else { a };
        let b = self.expr(&shape, 2);
        let agg = if self.rng.chance(0.5) { Red::Mean } else { Red::Sum };
        let cmp = match self.rng.below(3) {
            0 => E::Bin(
                Bin::Eq,
                Box::new(E::Reduce { op: Red::Argmax, e: Box::new(a), axis: Some(axis), keepdims: false }),
                Box::new(E::Reduce { op: Red::Argmax, e: Box::new(b), axis: Some(axis), keepdims: false }),
            ),
            1 => E::Bin(Bin::Eq, Box::new(E::Un(Un::Relu, Box::new(a))), Box::new(E::Un(Un::Relu, Box::new(b)))),
            _ => {
                // Indices are u32: no arithmetic takes them, so a metric over them compares
                // two (here with the reduced axis kept).
                let keepdims = self.rng.chance(0.5);
                E::Bin(
                    Bin::Eq,
                    Box::new(E::Reduce { op: Red::Argmax, e: Box::new(a), axis: Some(axis), keepdims }),
                    Box::new(E::Reduce { op: Red::Argmax, e: Box::new(b), axis: Some(axis), keepdims }),
                )
            }
        };
        E::Reduce { op: agg, e: Box::new(cmp), axis: None, keepdims: false }
    }
}

/// The params `e` reaches outside `stop_gradient`.
fn live_params(e: &E, out: &mut Vec<usize>) {
    match e {
        E::Param(p) => {
            if !out.contains(p) {
                out.push(*p)
            }
        }
        E::Input(_) | E::Lit(_) | E::DimValue(_) => {}
        E::Un(Un::StopGradient, _) => {}
        E::Un(_, a)
        | E::Pow(a, _)
        | E::Transpose(a)
        | E::Softmax { e: a, .. }
        | E::LayerNorm { e: a, .. }
        | E::Dropout(a, _) => live_params(a, out),
        E::Reduce { op, e, .. } => {
            if *op != Red::Argmax {
                live_params(e, out)
            }
        }
        E::Bin(Bin::Eq | Bin::Ne | Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge, _, _) | E::IndexCmp(..) | E::OneHot(..) => {}
        E::Bin(_, a, b) | E::MatMul(a, b) | E::SoftmaxXent(a, b) | E::Gather(a, b) | E::SparseXent(a, b) => {
            live_params(a, out);
            live_params(b, out);
        }
        E::ReduceAxes { e: a, .. } | E::Reshape { e: a, .. } | E::Slice { e: a, .. } => live_params(a, out),
        E::Concat(list, _) => list.iter().for_each(|a| live_params(a, out)),
        E::Conv { x, w, .. } => {
            live_params(x, out);
            live_params(w, out);
        }
        E::Pool { x, .. } => live_params(x, out),
        // The condition is a comparison: no gradient.
        E::Where(_, a, b) => {
            live_params(a, out);
            live_params(b, out);
        }
    }
}

/// The model for `seed`: always at least one trainable param; params the loss cannot
/// differentiate are declared `#[frozen]` (the compiler rejects them otherwise).
pub fn generate(seed: u64) -> Spec {
    let mut attempt = 0u64;
    loop {
        let mut g = Gen {
            rng: Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(attempt)),
            inputs: Vec::new(),
            params: Vec::new(),
        };
        attempt += 1;
        let depth = 2 + g.rng.below(3);
        let rank = g.rng.below(MAX_RANK + 1);
        let shape = g.shape(rank);
        let body = g.expr(&shape, depth);
        let op = if g.rng.chance(0.6) { Red::Sum } else { Red::Mean };
        let loss = if shape.is_empty() && g.rng.chance(0.5) {
            body
        } else {
            E::Reduce { op, e: Box::new(body), axis: None, keepdims: false }
        };
        let metric = if g.rng.chance(0.6) { Some(g.metric()) } else { None };
        let mut live = Vec::new();
        live_params(&loss, &mut live);
        if live.is_empty() || g.inputs.is_empty() {
            continue;
        }
        for (i, p) in g.params.iter_mut().enumerate() {
            p.frozen = !live.contains(&i);
        }
        return Spec { inputs: g.inputs, params: g.params, loss, metric };
    }
}

fn fmt_lit(v: f64) -> String {
    if v < 0.0 {
        format!("(-{:?})", -v)
    } else {
        format!("{v:?}")
    }
}

/// The expression as model-language text.
pub fn text(spec: &Spec, e: &E) -> String {
    let t = |e: &E| text(spec, e);
    match e {
        E::Input(i) => spec.inputs[*i].name.clone(),
        E::Param(p) => spec.params[*p].name.clone(),
        E::Lit(v) => fmt_lit(*v),
        E::DimValue(s) => SYMS[*s].to_string(),
        E::Un(Un::Neg, a) => format!("-({})", t(a)),
        E::Un(u, a) => {
            let name = match u {
                Un::Neg => unreachable!(),
                Un::Exp => "exp",
                Un::Ln => "ln",
                Un::Log => "log",
                Un::Sqrt => "sqrt",
                Un::Square => "square",
                Un::Abs => "abs",
                Un::Relu => "relu",
                Un::Sigmoid => "sigmoid",
                Un::Tanh => "tanh",
                Un::Softplus => "softplus",
                Un::StopGradient => "stop_gradient",
            };
            format!("{name}({})", t(a))
        }
        E::Pow(a, k) => {
            let k = if k.fract() == 0.0 { format!("{}", *k as i64) } else { format!("{k:?}") };
            format!("pow({}, {k})", t(a))
        }
        E::Bin(op, a, b) => match op {
            Bin::Add => format!("({} + {})", t(a), t(b)),
            Bin::Sub => format!("({} - {})", t(a), t(b)),
            Bin::Mul => format!("({} * {})", t(a), t(b)),
            Bin::Div => format!("({} / {})", t(a), t(b)),
            Bin::Eq => format!("({} == {})", t(a), t(b)),
            Bin::Ne => format!("({} != {})", t(a), t(b)),
            Bin::Lt => format!("({} < {})", t(a), t(b)),
            Bin::Le => format!("({} <= {})", t(a), t(b)),
            Bin::Gt => format!("({} > {})", t(a), t(b)),
            Bin::Ge => format!("({} >= {})", t(a), t(b)),
            Bin::Maximum => format!("maximum({}, {})", t(a), t(b)),
            Bin::Minimum => format!("minimum({}, {})", t(a), t(b)),
            Bin::SigmoidXent => format!("sigmoid_cross_entropy({}, {})", t(a), t(b)),
        },
        E::MatMul(a, b) => format!("matmul({}, {})", t(a), t(b)),
        E::Transpose(a) => format!("transpose({})", t(a)),
        E::Reduce { op, e, axis, keepdims } => {
            let name = match op {
                Red::Sum => "sum",
                Red::Mean => "mean",
                Red::Max => "max",
                Red::Argmax => "argmax",
            };
            let mut s = format!("{name}({}", t(e));
            if let Some(a) = axis {
                let _ = write!(s, ", axis = {a}");
            }
            if *keepdims {
                s.push_str(", keepdims = true");
            }
            s.push(')');
            s
        }
        E::Softmax { log, e, axis } => {
            let name = if *log { "log_softmax" } else { "softmax" };
            match axis {
                Some(a) => format!("{name}({}, axis = {a})", t(e)),
                None => format!("{name}({})", t(e)),
            }
        }
        E::SoftmaxXent(a, b) => format!("softmax_cross_entropy({}, {})", t(a), t(b)),
        E::LayerNorm { e, axis, epsilon } => match axis {
            Some(k) => format!("layer_norm({}, axis = {k}, epsilon = {epsilon:?})", t(e)),
            None => format!("layer_norm({}, epsilon = {epsilon:?})", t(e)),
        },
        E::Dropout(e, rate) => format!("dropout({}, rate = {rate:?})", t(e)),
        E::ReduceAxes { op, e, axes, keepdims } => {
            let name = match op {
                Red::Sum => "sum",
                Red::Mean => "mean",
                Red::Max | Red::Argmax => "max",
            };
            let axes: Vec<String> = axes.iter().map(|a| a.to_string()).collect();
            let k = if *keepdims { ", keepdims = true" } else { "" };
            format!("{name}({}, axis = [{}]{k})", t(e), axes.join(", "))
        }
        E::Reshape { e, flatten: true, .. } => format!("flatten({})", t(e)),
        E::Reshape { e, shape, .. } => format!("reshape({}, {})", t(e), shape_text(shape)),
        E::Concat(list, axis) => {
            let items: Vec<String> = list.iter().map(t).collect();
            format!("concat([{}], axis = {axis})", items.join(", "))
        }
        E::Slice { e, axis, start, end } => format!("slice({}, axis = {axis}, start = {start}, end = {end})", t(e)),
        E::Where(c, a, b) => format!("where({}, {}, {})", t(c), t(a), t(b)),
        E::Gather(table, ids) => format!("gather({}, {})", t(table), t(ids)),
        E::OneHot(ids, depth) => format!("one_hot({}, depth = {depth})", t(ids)),
        E::SparseXent(z, y) => format!("sparse_softmax_cross_entropy({}, {})", t(z), t(y)),
        E::IndexCmp(op, a, b) => text(spec, &E::Bin(*op, a.clone(), b.clone())),
        E::Conv { x, w, stride, dilation, same } => {
            let mut s = format!("conv2d({}, {}", t(x), t(w));
            if *stride != [1, 1] {
                let _ = write!(s, ", stride = {}", pair_text(*stride));
            }
            if *same {
                s.push_str(", padding = \"same\"");
            }
            if *dilation != [1, 1] {
                let _ = write!(s, ", dilation = {}", pair_text(*dilation));
            }
            s.push(')');
            s
        }
        E::Pool { max, x, size, stride, same } => {
            let mut s = format!("{}({}, size = {}", if *max { "max_pool" } else { "avg_pool" }, t(x), pair_text(*size));
            // The stride defaults to the size.
            if stride != size {
                let _ = write!(s, ", stride = {}", pair_text(*stride));
            }
            if *same {
                s.push_str(", padding = \"same\"");
            }
            s.push(')');
            s
        }
    }
}

/// `k` for `[k, k]`, else `[a, b]`.
fn pair_text(p: [usize; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        format!("[{}, {}]", p[0], p[1])
    }
}

fn shape_text(s: &Shape) -> String {
    let dims: Vec<String> = s
        .iter()
        .map(|d| match d {
            Dim::S(k) => k.to_string(),
            Dim::Sym(i) => SYMS[*i].to_string(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The whole `model! { .. }` body for struct `name` (params start at zero: the test
/// assigns every param before each call).
pub fn model_text(name: &str, spec: &Spec) -> String {
    let mut s = format!("struct {name} {{\n");
    for i in &spec.inputs {
        let ty = if i.bound.is_some() { " as u32" } else { "" };
        let _ = writeln!(s, "    input {}: {}{ty};", i.name, shape_text(&i.shape));
    }
    for p in &spec.params {
        let frozen = if p.frozen { "#[frozen] " } else { "" };
        let _ = writeln!(s, "    {frozen}param {}: {} = zeros;", p.name, shape_text(&p.shape));
    }
    let _ = writeln!(s, "    loss l = {};", text(spec, &spec.loss));
    if let Some(m) = &spec.metric {
        let _ = writeln!(s, "    metric acc = {};", text(spec, m));
    }
    s.push_str("    optimizer sgd(learning_rate = 0.1);\n}\n");
    s
}
