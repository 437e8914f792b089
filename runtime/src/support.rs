//! What generated code calls besides the kernels: input binding and validation, the
//! workspace cache, param/gradient access, the optimizer driver, checkpoint plumbing and
//! the finite-difference probe. Re-exported as `modelc::__private`; not a stable API.

use std::path::Path;

use ndarray::{Array, ArrayBase, Data, Dimension, ShapeBuilder};

use crate::checkpoint::Checkpoint;
use crate::init::{fill, Init};
use crate::optim::Optimizer;
use crate::{Error, ParamCheck};

/// One declared dimension of an input.
#[derive(Clone, Copy, Debug)]
pub enum DimSpec {
    /// Must equal this.
    Static(usize),
    /// The model's symbolic dimension with this index.
    Sym(usize),
}

/// Binds the symbolic dimensions of one call from its inputs, checking every input
/// against its declaration.
pub struct Binder<const K: usize> {
    names: [&'static str; K],
    bound: [Option<(usize, &'static str)>; K],
}

impl<const K: usize> Binder<K> {
    /// A binder for a model whose symbolic dimensions are `names`.
    pub fn new(names: [&'static str; K]) -> Self {
        Binder { names, bound: [None; K] }
    }

    fn expected(&self, spec: &[DimSpec]) -> String {
        let dims: Vec<String> = spec
            .iter()
            .map(|d| match *d {
                DimSpec::Static(n) => n.to_string(),
                DimSpec::Sym(i) => match self.bound[i] {
                    Some((v, _)) => format!("{} = {v}", self.names[i]),
                    None => self.names[i].to_string(),
                },
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }

    /// Checks `found` against `spec` and binds its symbolic dimensions.
    pub fn bind(&mut self, input: &'static str, spec: &[DimSpec], found: &[usize]) -> Result<(), Error> {
        let err = |this: &Self, detail: String| Error::Shape {
            input,
            expected: this.expected(spec),
            found: found.to_vec(),
            detail,
        };
        if spec.len() != found.len() {
            return Err(err(self, format!("rank {} instead of {}", found.len(), spec.len())));
        }
        for (axis, (d, &f)) in spec.iter().zip(found).enumerate() {
            match *d {
                DimSpec::Static(n) if n != f => {
                    return Err(err(self, format!("axis {axis} is {f}, expected {n}")));
                }
                DimSpec::Static(_) => {}
                DimSpec::Sym(i) => match self.bound[i] {
                    Some((v, from)) if v != f => {
                        return Err(err(
                            self,
                            format!("dimension `{}` is {f} here but {v} in input `{from}`", self.names[i]),
                        ));
                    }
                    Some(_) => {}
                    None => self.bound[i] = Some((f, input)),
                },
            }
        }
        Ok(())
    }

    /// The bound values (0 for dimensions this call does not use).
    pub fn values(&self) -> [usize; K] {
        let mut out = [0; K];
        for (o, b) in out.iter_mut().zip(&self.bound) {
            *o = b.map_or(0, |(v, _)| v);
        }
        out
    }
}

/// The workspace for these dimensions: reused if it was made for them, else (re)made.
pub fn workspace<W, const K: usize>(
    slot: &mut Option<([usize; K], W)>,
    dims: [usize; K],
    make: impl FnOnce(&[usize; K]) -> W,
) -> &mut W {
    if !matches!(slot, Some((d, _)) if *d == dims) {
        *slot = Some((dims, make(&dims)));
    }
    match slot {
        Some((_, w)) => w,
        None => unreachable!("the slot was just filled"),
    }
}

/// Checks that a (public, user-writable) param field still has its declared shape, and
/// puts it back in standard layout if the user replaced it by a non-contiguous array.
pub fn check_param<D: Dimension>(name: &'static str, a: &mut Array<f32, D>, dims: &[usize]) -> Result<(), Error> {
    if a.shape() != dims {
        return Err(Error::Shape {
            input: name,
            expected: format!("{dims:?}"),
            found: a.shape().to_vec(),
            detail: "a param field was replaced by an array of another shape".to_string(),
        });
    }
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    Ok(())
}

/// Checks a gradient's shape against its param's.
pub fn check_gradient(name: &'static str, found: &[usize], expected: &[usize]) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::GradientShape { name, expected: expected.to_vec(), found: found.to_vec() })
    }
}

/// The elements of a standard-layout array.
pub fn slice<S: Data<Elem = f32>, D: Dimension>(a: &ArrayBase<S, D>) -> &[f32] {
    a.as_slice().expect("modelc keeps params, gradients and buffers in standard layout")
}

/// The elements of a standard-layout array, mutably.
pub fn slice_mut<D: Dimension>(a: &mut Array<f32, D>) -> &mut [f32] {
    a.as_slice_mut().expect("modelc keeps params in standard layout")
}

/// A param of `shape`, filled by `init` from `(seed, name)`.
pub fn init_param<D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    init: Init,
    shape: Sh,
    seed: u64,
    name: &str,
) -> Array<f32, D> {
    let mut a = Array::zeros(shape);
    let dims = a.shape().to_vec();
    fill(init, &dims, slice_mut(&mut a), seed, name);
    a
}

/// One optimizer update of every trainable param: clip by global norm, increment the
/// step, then each param's update.
pub fn apply_updates(
    opt: &Optimizer,
    step: &mut u64,
    slots: &mut [Vec<Vec<f32>>],
    params: &mut [&mut [f32]],
    grads: &[&[f32]],
) {
    let scale = opt.clip_scale(grads);
    *step += 1;
    for ((p, g), s) in params.iter_mut().zip(grads).zip(slots.iter_mut()) {
        opt.update(p, g, s, scale, *step);
    }
}

/// The checkpoint key of an optimizer slot.
pub fn slot_name(param: &str, slot: &str) -> String {
    crate::checkpoint::slot_key(param, slot)
}

/// Moves tensor `name` of a validated checkpoint into `dst`.
pub fn take_into(ck: &mut Checkpoint, name: &str, dst: &mut [f32], path: &Path) -> Result<(), Error> {
    match ck.tensors.remove(name) {
        Some((_, data)) if data.len() == dst.len() => {
            dst.copy_from_slice(&data);
            Ok(())
        }
        Some((_, data)) => Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("tensor `{name}` has {} values, expected {}", data.len(), dst.len()),
        }),
        None => Err(Error::Checkpoint { path: path.to_path_buf(), message: format!("tensor `{name}` is missing") }),
    }
}

/// How many scalars of one param `check_gradients` probes at most.
pub const PROBES_PER_PARAM: usize = 24;

/// Central finite differences for one param, against its symbolic gradient.
pub struct GradProbe {
    name: &'static str,
    len: usize,
    orig: f32,
    probed: usize,
    max_abs: f64,
    max_rel: f64,
}

impl GradProbe {
    /// A probe for a param of `len` scalars.
    pub fn new(name: &'static str, len: usize) -> Self {
        GradProbe { name, len, orig: 0.0, probed: 0, max_abs: 0.0, max_rel: 0.0 }
    }

    /// The indices probed: all of them for a small param, else an even spread
    /// (deterministic) including the first and last.
    pub fn indices(&self) -> Vec<usize> {
        if self.len <= PROBES_PER_PARAM {
            return (0..self.len).collect();
        }
        let n = PROBES_PER_PARAM;
        let mut v: Vec<usize> = (0..n).map(|i| i * (self.len - 1) / (n - 1)).collect();
        v.dedup();
        v
    }

    /// The perturbation for a scalar whose value is `orig`: `1e-2 * max(|orig|, 1)`.
    ///
    /// The loss is an f32, so a central difference errs by about `u |L| / h` (rounding,
    /// `u = 2^-24`) plus `h^2 |L'''| / 6` (truncation). The textbook optimum is near
    /// `cbrt(3 u) ~ 5e-3` for unit-sized losses and derivatives, but a loss summed over
    /// many terms rounds by more than `u |L|`, which moves the optimum up: on
    /// tests/ui/pass/every_op_and_initializer.rs the worst absolute error is 1.4e-5 at
    /// `1e-2` and 4.4e-5 at `4.9e-3`. Checks that must be tight compare against f64
    /// finite differences of an f64 loss instead (tests/gradients.rs).
    pub fn step(&mut self, orig: f32) -> f32 {
        self.orig = orig;
        1e-2 * orig.abs().max(1.0)
    }

    /// Records one comparison: the symbolic gradient, and the loss at `orig + h` and
    /// `orig - h`.
    pub fn record(&mut self, symbolic: f32, loss_plus: f32, loss_minus: f32, h: f32) {
        let denom = f64::from(self.orig + h) - f64::from(self.orig - h);
        let numeric = (f64::from(loss_plus) - f64::from(loss_minus)) / denom;
        let s = f64::from(symbolic);
        let abs = (s - numeric).abs();
        let rel = abs / s.abs().max(numeric.abs()).max(1e-3);
        self.max_abs = self.max_abs.max(abs);
        self.max_rel = self.max_rel.max(rel);
        self.probed += 1;
    }

    /// The summary.
    pub fn finish(self) -> ParamCheck {
        ParamCheck { name: self.name, probed: self.probed, max_abs_error: self.max_abs, max_rel_error: self.max_rel }
    }
}
