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

/// The workspaces of one fetch, shared by every thread that calls it on one model
/// (fetches take `&self`, so an `Arc<Model>` serves many threads at once).
///
/// A call takes an idle workspace made for its dimensions (or makes one: the only
/// allocation, once per concurrent caller and set of dimensions) and puts it back when
/// done; the lock is held only to take and to put, never while computing. At most
/// [`Pool::MAX_IDLE`] idle workspaces are kept. Cloning a pool gives an empty one (a
/// clone of a model rebuilds its workspaces on first use).
pub struct Pool<W, const K: usize> {
    idle: std::sync::Mutex<Vec<([usize; K], W)>>,
}

impl<W, const K: usize> Pool<W, K> {
    /// Idle workspaces kept at most (more concurrent callers than this still work; the
    /// extra workspaces are dropped when they are put back).
    pub const MAX_IDLE: usize = 64;

    /// An empty pool.
    pub const fn new() -> Self {
        Pool { idle: std::sync::Mutex::new(Vec::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<([usize; K], W)>> {
        // A panic elsewhere while the lock was held cannot leave the list inconsistent
        // (push and swap_remove only), so a poisoned lock is used as it is.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle workspace made for `dims`, or a new one from `make`.
    pub fn take(&self, dims: [usize; K], make: impl FnOnce(&[usize; K]) -> W) -> W {
        let found = {
            let mut idle = self.lock();
            idle.iter().rposition(|(d, _)| *d == dims).map(|i| idle.swap_remove(i).1)
        };
        found.unwrap_or_else(|| make(&dims))
    }

    /// Gives a workspace made for `dims` back.
    pub fn put(&self, dims: [usize; K], w: W) {
        let mut idle = self.lock();
        if idle.len() < Self::MAX_IDLE {
            idle.push((dims, w));
        }
    }

    /// Idle workspaces now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }
}

impl<W, const K: usize> Default for Pool<W, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W, const K: usize> Clone for Pool<W, K> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<W, const K: usize> std::fmt::Debug for Pool<W, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool {{ idle: {} }}", self.idle())
    }
}

/// Checks that a (public, user-writable) param field still has its declared shape (for
/// the `&self` fetches: the kernels read params of any layout through their strides).
pub fn check_param_shape<S: Data<Elem = f32>, D: Dimension>(
    name: &'static str,
    a: &ArrayBase<S, D>,
    dims: &[usize],
) -> Result<(), Error> {
    if a.shape() != dims {
        return Err(Error::Shape {
            input: name,
            expected: format!("{dims:?}"),
            found: a.shape().to_vec(),
            detail: "a param field was replaced by an array of another shape".to_string(),
        });
    }
    Ok(())
}

/// A param's or gradient's shape, printed as `[784, 10]` in the generated `Debug`.
pub struct DebugShape<'a>(pub &'a [usize]);

impl std::fmt::Debug for DebugShape<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The generated models' compact `Debug`: the params' names and shapes (frozen ones
/// marked), the optimizer and the global step, never the values.
pub fn debug_model(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    params: &[(&str, &[usize], bool)],
    optimizer: Option<&Optimizer>,
    global_step: u64,
) -> std::fmt::Result {
    let mut d = f.debug_struct(name);
    for &(n, shape, trainable) in params {
        if trainable {
            d.field(n, &DebugShape(shape));
        } else {
            d.field(n, &format_args!("{:?} (frozen)", shape));
        }
    }
    match optimizer {
        Some(o) => d.field("optimizer", o),
        None => d.field("optimizer", &format_args!("None")),
    };
    d.field("global_step", &global_step).finish()
}

/// Checks that a (public, user-writable) param field still has its declared shape, and
/// puts it back in standard layout if the user replaced it by a non-contiguous array.
pub fn check_param<D: Dimension>(name: &'static str, a: &mut Array<f32, D>, dims: &[usize]) -> Result<(), Error> {
    check_param_shape(name, a, dims)?;
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    Ok(())
}

/// Checks every field of a gradients value against its param's shape: `(name, found,
/// expected)` for each trainable param. One `Err` lists every mismatch.
pub fn check_gradient_shapes(fields: &[(&'static str, &[usize], &[usize])]) -> Result<(), Error> {
    let mismatches: Vec<crate::ShapeMismatch> = fields
        .iter()
        .filter(|(_, found, expected)| found != expected)
        .map(|&(name, found, expected)| crate::ShapeMismatch {
            name,
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
        .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::GradientShape { mismatches })
    }
}

/// `Err(Error::EmptyReduction)` if a reduction of `fetch` runs over a dimension that is
/// 0 in this call: `counts` holds `(dimension, value, op)` for each symbolic dimension a
/// `mean` divides by or a `max`/`argmax` reduces over.
pub fn check_counts(fetch: &'static str, counts: &[(&'static str, usize, &'static str)]) -> Result<(), Error> {
    let Some(&(_, _, op)) = counts.iter().find(|c| c.1 == 0) else {
        return Ok(());
    };
    let zero: Vec<String> = counts.iter().filter(|c| c.1 == 0 && c.2 == op).map(|c| format!("`{}`", c.0)).collect();
    Err(Error::EmptyReduction { fetch, op, dims: zero.join(" and ") })
}

/// `Err(Error::Index)` naming the first id of `ids` (in logical order) that is not below
/// `bound`. One pass over the input, before anything runs: a call with a bad id changes
/// nothing. The fast path scans a contiguous input as a slice (the max of a chunk first,
/// the position only when a chunk has a bad id).
pub fn check_indices<D: Dimension>(
    input: &'static str,
    ids: ndarray::ArrayView<'_, u32, D>,
    bound: usize,
    what: &'static str,
) -> Result<(), Error> {
    let bound32 = u32::try_from(bound).unwrap_or(u32::MAX);
    let bad_at = |flat: usize, index: u32| {
        let mut position = vec![0; ids.ndim()];
        let mut rest = flat;
        for (p, &n) in position.iter_mut().zip(ids.shape()).rev() {
            if n > 0 {
                *p = rest % n;
                rest /= n;
            }
        }
        Err(Error::Index { input, index, position, bound, what })
    };
    let fits = |v: u32| bound > u32::MAX as usize || v < bound32;
    if let Some(s) = ids.as_slice() {
        for (c, chunk) in s.chunks(256).enumerate() {
            if chunk.iter().fold(0u32, |m, &v| m.max(v)) < bound32 || bound > u32::MAX as usize {
                continue;
            }
            if let Some(k) = chunk.iter().position(|&v| !fits(v)) {
                return bad_at(c * 256 + k, chunk[k]);
            }
        }
        return Ok(());
    }
    match ids.iter().position(|&v| !fits(v)) {
        Some(k) => bad_at(k, ids.iter().nth(k).copied().unwrap_or(0)),
        None => Ok(()),
    }
}

/// The largest `|v|` of a view, or `f32::INFINITY` if it holds a NaN or an infinity;
/// 0 for an empty view. Contiguous views (in any memory order) run in one vectorized
/// pass ([`widest`](crate::sgemm::widest)).
pub fn max_abs<D: Dimension>(v: ndarray::ArrayView<'_, f32, D>) -> f32 {
    match v.as_slice_memory_order() {
        Some(s) => max_abs_slice(s),
        None => from_abs_bits(v.iter().fold(0u32, |m, x| m.max(x.to_bits() & ABS))),
    }
}

/// The bits of `|x|`: for non-negative floats the order of the bits as integers is the
/// order of the values, and NaN and the infinities are above every finite value.
const ABS: u32 = 0x7fff_ffff;

fn from_abs_bits(m: u32) -> f32 {
    if m >= f32::INFINITY.to_bits() {
        f32::INFINITY
    } else {
        f32::from_bits(m)
    }
}

/// [`max_abs`] of a slice: the largest `bits & 0x7fff_ffff` as an integer (one integer
/// max per element, which vectorizes without any NaN handling), in 64 independent lanes
/// so that no lane waits on the one before; NaN and infinity come out above every finite
/// value. One pass over `x` of the tutorial (78,400 floats) takes about as long as
/// reading it.
///
/// With `parallel`, a slice of at least 2^17 floats (`MAX_ABS_PARALLEL_MIN`) is cut
/// into one part a thread (sgemm's pool): the largest of the parts' largest bits is the
/// same integer whatever the cut, so the same result for any thread count.
pub fn max_abs_slice(s: &[f32]) -> f32 {
    #[cfg(feature = "parallel")]
    {
        use std::sync::atomic::{AtomicU32, Ordering};
        let threads = crate::sgemm::threads::count();
        if s.len() >= MAX_ABS_PARALLEL_MIN && threads >= 2 {
            let parts = threads.min(64);
            let most = AtomicU32::new(0);
            let len = s.len().div_ceil(parts);
            crate::sgemm::threads::run(parts, &|i| {
                let part = s.get(i * len..((i + 1) * len).min(s.len())).unwrap_or(&[]);
                most.fetch_max(max_abs_bits(part), Ordering::Relaxed);
            });
            return from_abs_bits(most.into_inner());
        }
    }
    from_abs_bits(max_abs_bits(s))
}

/// Slices of at least this many floats are searched on all threads by [`max_abs_slice`]
/// with `parallel`: M3's guard reads its 256 x 1024 operands (262,144 floats each, about
/// 0.25 ms for the four on one thread); M2's largest, `x`, is 100,352.
#[cfg(feature = "parallel")]
const MAX_ABS_PARALLEL_MIN: usize = 1 << 17;

/// The largest `bits & 0x7fff_ffff` of a slice (see [`max_abs_slice`]).
fn max_abs_bits(s: &[f32]) -> u32 {
    const L: usize = 64;
    crate::sgemm::widest(
        #[inline(always)]
        || {
            let mut m = [0u32; L];
            let mut chunks = s.chunks_exact(L);
            for c in &mut chunks {
                for i in 0..L {
                    m[i] = m[i].max(c[i].to_bits() & ABS);
                }
            }
            for (i, &x) in chunks.remainder().iter().enumerate() {
                m[i] = m[i].max(x.to_bits() & ABS);
            }
            m.iter().fold(0, |a, &b| a.max(b))
        },
    )
}

/// The plain-SGD update `p -= lr * g` of a fused `train_step`, applied after its guard
/// (`sgd_guard`): one vectorized slice loop ([`widest`](crate::sgemm::widest)) where both
/// are contiguous in the same order, which they are for a param (the prologue puts params
/// in standard layout) and its gradient's buffer. `kernels::map` computed the same
/// `p - lr * g` (the same bits) through its general broadcasting loop, and took 8% of M1's
/// step for the 7,840 floats of the tutorial's `w` (issue 15: the guard's cost on M1).
/// Any other pair (a broadcast or strided gradient view) goes through `kernels::map`.
pub fn sgd_apply<D: Dimension>(mut p: ndarray::ArrayViewMut<'_, f32, D>, g: ndarray::ArrayView<'_, f32, D>, lr: f32) {
    let same = p.shape() == g.shape() && p.strides() == g.strides();
    if let (true, Some(ps), Some(gs)) = (same, p.as_slice_memory_order_mut(), g.as_slice_memory_order()) {
        sgd_apply_slice(ps, gs, lr);
        return;
    }
    crate::kernels::map(p.into_dyn(), [g.into_dyn()], |v, [d]| v - lr * d);
}

/// [`sgd_apply`] of two slices of one length (a shorter `g` updates a prefix of `p`).
pub fn sgd_apply_slice(p: &mut [f32], g: &[f32], lr: f32) {
    crate::sgemm::widest(
        #[inline(always)]
        || {
            for (v, &d) in p.iter_mut().zip(g) {
                *v -= lr * d;
            }
        },
    )
}

/// Makes `staged` (a param's new values, computed out of place by
/// [`kernels::gemm_from`](crate::kernels::gemm_from) and checked by [`sgd_guard`]) the
/// param `p`, and hands `p`'s old buffer back in `staged` for the next step: a swap of
/// two allocations, no copy and no allocation. Where the lengths differ or `p` is not in
/// standard layout (the prologue puts it there), the values are copied instead.
pub fn swap_in<D: Dimension>(p: &mut Array<f32, D>, staged: &mut Vec<f32>) {
    if staged.len() != p.len() || !p.is_standard_layout() {
        for (v, &s) in p.iter_mut().zip(staged.iter()) {
            *v = s;
        }
        return;
    }
    // Cannot fail: the length is the shape's element count, in standard layout.
    if let Ok(new) = Array::from_shape_vec(p.raw_dim(), std::mem::take(staged)) {
        let (old, _) = std::mem::replace(p, new).into_raw_vec_and_offset();
        *staged = old;
    }
}

/// Updates whose exact magnitude is below this cannot make a finite param of any
/// magnitude non-finite: near `f32::MAX` one ulp is 2^104, so a change below half of it
/// rounds back to the param instead of overflowing.
pub const SAFE_UPDATE: f64 = 1.2676506002282294e30; // 2^100

/// The guard of a plain-SGD `train_step` whose updates are fused into the gradient
/// products (`w += -lr op(a) op(b)`): before anything is written, each update's operands
/// are checked. `bounds` holds, per param, `(name, count, [max |operand|; 2])` (a second
/// factor of 1 where there is one operand; the staged new param and a factor of 0,
/// count 1, where the update was computed out of place, leaving only its finiteness to
/// check), where
/// `count` is the number of products summed into one element (the contraction length of
/// a product, the number of elements a bias gradient sums). Its update is at most
/// `|lr| * count * Π max |operand|` in magnitude.
///
/// Returns `Err(NonFinite)` naming the first param with a NaN or infinite operand (a
/// non-finite factor of a product or a sum makes some element of that gradient
/// non-finite, whatever the other factor: NaN * 0 and inf * 0 are NaN); `Ok(false)` when
/// every update is finite and below [`SAFE_UPDATE`], so the fused updates cannot
/// overflow; `Ok(true)` when some finite update might (operands of 1e20 and beyond): the
/// caller then takes the exact, unfused path, which checks the gradients themselves.
/// An update with an empty operand is 0 (or empty) and is not checked.
pub fn sgd_guard(lr: f32, bounds: &[(&'static str, f64, [f32; 2])]) -> Result<bool, Error> {
    if !lr.is_finite() {
        return Err(Error::InvalidArgument(format!("the learning rate is {lr}")));
    }
    let mut risky = false;
    for &(param, count, maxes) in bounds {
        if count == 0.0 {
            continue;
        }
        if maxes.iter().any(|m| !m.is_finite()) {
            let detail = if maxes[1] == 0.0 {
                "its update has a NaN or an infinity (its gradient is not finite, or the step overflowed)"
            } else {
                "its gradient has a NaN or an infinity (an operand of its product is not finite)"
            };
            return Err(Error::NonFinite { param, detail: detail.into() });
        }
        let bound = maxes.iter().fold(f64::from(lr.abs()) * count, |b, &m| b * f64::from(m));
        risky |= bound >= SAFE_UPDATE;
    }
    Ok(risky)
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
/// step, then each param's update. `names` are the params' names, for errors.
///
/// Nothing is written unless every gradient is finite: a NaN or an infinity gives
/// `Err(NonFinite)` naming the first such param, with params, slots and step unchanged.
/// With `clip_norm` the check is the clip's own f64 sum of squares (finite exactly when
/// every gradient is); without, one vectorized pass over the gradients. When the
/// largest gradient or the learning rate is so large that an optimizer's arithmetic
/// might overflow (beyond 2^40; e.g. Adam squares the gradient), the update runs on a
/// copy of the state, which is kept only if every param and slot stays finite.
pub fn apply_updates(
    opt: &Optimizer,
    step: &mut u64,
    slots: &mut [Vec<Vec<f32>>],
    params: &mut [&mut [f32]],
    grads: &[&[f32]],
    names: &[&'static str],
) -> Result<(), Error> {
    apply_updates_scaled(opt, step, slots, params, grads, names, 1.0, None)
}

/// [`apply_updates`] of the gradients `grads` times `grad_scale` (`World::allreduce_apply`:
/// the ranks' sums and 1/N, so that no pass scales them first; each product is the one
/// a scaling pass would have stored, so the update is the same bits). `checked`: the
/// largest `|grad_scale * g|` when the caller has already checked that every gradient is
/// finite (while the values were in cache), which saves the check's pass; `None` checks
/// here.
#[allow(clippy::too_many_arguments)]
pub fn apply_updates_scaled(
    opt: &Optimizer,
    step: &mut u64,
    slots: &mut [Vec<Vec<f32>>],
    params: &mut [&mut [f32]],
    grads: &[&[f32]],
    names: &[&'static str],
    grad_scale: f32,
    checked: Option<f64>,
) -> Result<(), Error> {
    let non_finite = |i: usize| Error::NonFinite {
        param: names.get(i).copied().unwrap_or("?"),
        detail: "its gradient has a NaN or an infinity".into(),
    };
    let (scale, largest) = if opt.clip_norm.is_some() {
        let norm = crate::optim::global_norm_f64(grads) * f64::from(grad_scale);
        if !norm.is_finite() {
            let bad = grads.iter().position(|g| !max_abs_slice(g).is_finite()).unwrap_or(0);
            return Err(non_finite(bad));
        }
        // With grad_scale 1 this is the clip's own scale, as before.
        let clip = opt.clip_scale_for(norm);
        (if grad_scale == 1.0 { clip } else { clip * grad_scale }, norm)
    } else if let Some(largest) = checked {
        (grad_scale, largest)
    } else {
        let mut largest = 0.0f64;
        for (i, g) in grads.iter().enumerate() {
            let m = max_abs_slice(g);
            if !m.is_finite() {
                return Err(non_finite(i));
            }
            largest = largest.max(f64::from(m));
        }
        (grad_scale, largest * f64::from(grad_scale))
    };
    const RISKY: f64 = (1u64 << 40) as f64;
    if largest < RISKY && f64::from(opt.learning_rate.abs()) < RISKY && opt.learning_rate.is_finite() {
        *step += 1;
        for ((p, g), s) in params.iter_mut().zip(grads).zip(slots.iter_mut()) {
            opt.update(p, g, s, scale, *step);
        }
        return Ok(());
    }
    // Rare: gradients or a learning rate this large. Update copies, then keep them only
    // if everything stayed finite.
    let mut new_params: Vec<Vec<f32>> = params.iter().map(|p| p.to_vec()).collect();
    let mut new_slots: Vec<Vec<Vec<f32>>> = slots.to_vec();
    for ((p, g), s) in new_params.iter_mut().zip(grads).zip(new_slots.iter_mut()) {
        opt.update(p, g, s, scale, *step + 1);
    }
    for (i, (p, s)) in new_params.iter().zip(&new_slots).enumerate() {
        if !max_abs_slice(p).is_finite() || s.iter().any(|s| !max_abs_slice(s).is_finite()) {
            return Err(Error::NonFinite {
                param: names.get(i).copied().unwrap_or("?"),
                detail: format!(
                    "its update overflows f32 (largest gradient {largest:e}, learning rate {})",
                    opt.learning_rate
                ),
            });
        }
    }
    for (p, n) in params.iter_mut().zip(&new_params) {
        p.copy_from_slice(n);
    }
    for (s, n) in slots.iter_mut().zip(new_slots) {
        *s = n;
    }
    *step += 1;
    Ok(())
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
    /// finite differences of an f64 loss instead (gradients/tests/gradients.rs).
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `max_abs_slice` (with `parallel`, split across the threads above a size) finds the
    /// largest |v|, and any NaN or infinity, wherever it is: in either part or at a cut.
    #[test]
    fn max_abs_slice_finds_the_largest_anywhere() {
        let len = (1 << 17) + 37;
        let base: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        assert_eq!(max_abs_slice(&base), 0.5);
        for at in [0, len / 2 - 1, len / 2, len / 2 + 1, len - 38, len - 1] {
            for (v, want) in [(-3.5, 3.5), (7.25, 7.25), (f32::NAN, f32::INFINITY), (f32::NEG_INFINITY, f32::INFINITY)]
            {
                let mut s = base.clone();
                s[at] = v;
                assert_eq!(max_abs_slice(&s).to_bits(), want.to_bits(), "{v} at {at}");
                assert_eq!(max_abs_slice(&s[..at + 1]).to_bits(), want.to_bits(), "{v} at the end of {}", at + 1);
            }
        }
    }

    #[test]
    fn sgd_apply_gives_the_same_bits_on_every_layout() {
        let g = Array2::from_shape_fn((5, 7), |(i, j)| (i * 7 + j) as f32 * 0.37 - 3.0);
        let p0 = Array2::from_shape_fn((5, 7), |(i, j)| (i as f32 - j as f32) * 0.11);
        let want: Vec<u32> = p0.iter().zip(&g).map(|(p, g)| (p - 0.3 * g).to_bits()).collect();
        let mut fast = p0.clone();
        sgd_apply(fast.view_mut(), g.view(), 0.3);
        // The gradient as a transposed copy's view (other strides): the `map` fallback.
        let gt = g.t().to_owned();
        let mut slow = p0.clone();
        sgd_apply(slow.view_mut(), gt.t(), 0.3);
        for a in [&fast, &slow] {
            assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        }
        sgd_apply_slice(&mut [], &[], 1.0);
    }

    #[test]
    fn swap_in_swaps_the_buffers_and_copies_into_a_non_standard_param() {
        let mut p = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
        let mut staged: Vec<f32> = (0..12).map(|v| -(v as f32)).collect();
        let (pp, sp) = (p.as_ptr(), staged.as_ptr());
        swap_in(&mut p, &mut staged);
        assert_eq!(p, Array2::from_shape_fn((3, 4), |(i, j)| -((i * 4 + j) as f32)));
        assert_eq!(staged, (0..12).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!((p.as_ptr(), staged.as_ptr()), (sp, pp), "no copy");
        // A param not in standard layout (a user's transposed array): copied, in order.
        let mut t = Array2::<f32>::zeros((4, 3)).reversed_axes();
        swap_in(&mut t, &mut staged);
        assert_eq!(t, Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32));
    }
}
