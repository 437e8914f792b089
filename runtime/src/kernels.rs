//! The kernels generated code calls: free functions over ndarray views that write into
//! caller-owned buffers (so that a generated model allocates its buffers once), plus the
//! scalar functions its fused elementwise loops inline.
//!
//! Every kernel trusts the shapes it is given: the compiler checked them. A shape that
//! does not fit is a bug in modelc, and ndarray's own assertions stop it.

use ndarray::{ArrayView2, ArrayViewD, ArrayViewMut2, ArrayViewMutD, Axis, Zip};

use crate::profile;

pub use crate::elementwise::map;
pub use crate::index::{
    compare_indices, gather, gather_sum, one_hot, scatter_add, scatter_add_acc, scatter_add_bags, scatter_add_bags_acc,
    sparse_softmax_xent, sparse_softmax_xent_grad, sparse_softmax_xent_with_grad, Cmp,
};
pub use crate::sgemm::{widest, Act};

/// `out = op(a) x op(b)`, `op` a transpose where the flag is set (no copy is made).
pub fn matmul(a: ArrayView2<'_, f32>, ta: bool, b: ArrayView2<'_, f32>, tb: bool, out: ArrayViewMut2<'_, f32>) {
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let rec = || profile::product("matmul", (a.dim().0, a.dim().1, b.dim().1), (ta, tb), false);
    profile::timed(rec, || gemm(1.0, a, b, 0.0, out));
}

/// `out = op(a) x op(b)`, then `then` over `out` block by block while each block is in
/// cache (see [`sgemm::sgemm_then`](crate::sgemm::sgemm_then)): a product fused with the elementwise work
/// on its output (bias add, activation, an activation's derivative).
pub fn matmul_then(
    a: ArrayView2<'_, f32>,
    ta: bool,
    b: ArrayView2<'_, f32>,
    tb: bool,
    out: ArrayViewMut2<'_, f32>,
    then: crate::sgemm::Then<'_>,
) {
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let rec = || profile::product("matmul_then", (a.dim().0, a.dim().1, b.dim().1), (ta, tb), false);
    profile::timed(rec, || gemm_then(1.0, a, b, 0.0, out, Some(then)));
}

/// `out = relu(op(a) x op(b) + bias) * step(mask)`, each part optional (see [`Act`]): a
/// layer's product with its bias add and relu, which the AVX-512 kernel applies in
/// registers as it writes `out`, or a back-propagated product with relu's derivative.
pub fn matmul_act(
    a: ArrayView2<'_, f32>,
    ta: bool,
    b: ArrayView2<'_, f32>,
    tb: bool,
    #[allow(unused_mut)] mut out: ArrayViewMut2<'_, f32>,
    act: Act<'_>,
) {
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let name = match (act.bias.is_some(), act.relu, act.mask.is_some()) {
        (_, _, true) => "matmul_act(mask)",
        (true, true, false) => "matmul_act(bias,relu)",
        (true, false, false) => "matmul_act(bias)",
        (false, _, false) => "matmul_act(relu)",
    };
    let rec = || profile::product(name, (a.dim().0, a.dim().1, b.dim().1), (ta, tb), false);
    profile::timed(rec, || {
        #[cfg(feature = "blas")]
        {
            let thin = a.dim().0.min(b.dim().1) <= 16;
            if !thin && blas_gemm(1.0, a, b, 0.0, out.view_mut()) {
                act.apply(out, 0, 0);
                return;
            }
        }
        crate::sgemm::sgemm_act(1.0, a, b, 0.0, out, act);
    });
}

/// [`matmul_act`] that also returns a bound of `|op(a)|`: at least the largest `|v|` of
/// its elements where the thin kernel computing the product reads them once anyway
/// (`sgemm::thin_bits`: the OR of their bits, one instruction a step of its tiles; M1's
/// forward `x w`), infinite elsewhere, and infinite where the bits OR to an infinity or
/// a NaN (a NaN or an infinity in `a`, or finite elements whose exponents OR to all ones,
/// such as values on both sides of 2). The plain-SGD guard bounds `w - lr x^T dz` from
/// it where it is finite, and stages the update otherwise (`docs/decisions.md`).
pub fn matmul_act_bound(
    a: ArrayView2<'_, f32>,
    ta: bool,
    b: ArrayView2<'_, f32>,
    tb: bool,
    out: ArrayViewMut2<'_, f32>,
    act: Act<'_>,
) -> f32 {
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let rec = || profile::product("matmul_act(bound)", (a.dim().0, a.dim().1, b.dim().1), (ta, tb), false);
    let bits = profile::timed(rec, || crate::sgemm::sgemm_act_bits(1.0, a, b, 0.0, out, act));
    match bits.map(f32::from_bits) {
        Some(v) if v.is_finite() => v,
        _ => f32::INFINITY,
    }
}

/// `out += alpha * op(a) x op(b)`: a gradient product accumulated straight into a
/// param (the fused SGD update).
pub fn gemm_acc(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    ta: bool,
    b: ArrayView2<'_, f32>,
    tb: bool,
    out: ArrayViewMut2<'_, f32>,
) {
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let rec = || profile::product("gemm_acc", (a.dim().0, a.dim().1, b.dim().1), (ta, tb), true);
    profile::timed(rec, || gemm(alpha, a, b, 1.0, out));
}

/// `out = src + alpha * op(a) x op(b)` (`src` and `out` of one shape, not overlapping):
/// the fused SGD update of a param staged out of place, for the guard of a plain-SGD
/// `train_step` to check before the param changes (`support::swap_in`). The same bits as
/// [`gemm_acc`] into `src`: a thin product reads `src` where `gemm_acc` reads the param
/// (`sgemm::thin_from`); any other is copied into `out` first and accumulated there.
///
/// (Keeping the largest `|out|` in the thin kernels' store instead of a pass over `out`
/// after, while it is in L1, measured no faster on M1's 784 x 10: 13.66 us either way.)
pub fn gemm_from(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    ta: bool,
    b: ArrayView2<'_, f32>,
    tb: bool,
    src: ArrayView2<'_, f32>,
    mut out: ArrayViewMut2<'_, f32>,
) {
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let rec = || profile::product("gemm_from", (a.dim().0, a.dim().1, b.dim().1), (ta, tb), true);
    profile::timed(rec, || {
        if !crate::sgemm::thin_from(alpha, a, b, 1.0, src, out.view_mut()) {
            out.assign(&src);
            gemm(alpha, a, b, 1.0, out);
        }
    });
}

/// `out += alpha * sum_to(a)`: a bias gradient's reduction fused with its update.
pub fn sum_to_acc(alpha: f32, a: ArrayViewD<'_, f32>, mut out: ArrayViewMutD<'_, f32>) {
    let leading_only = a.shape().ends_with(out.shape()) || (out.ndim() == 0);
    if let (true, Some(src), Some(dst)) = (leading_only, a.as_slice(), out.as_slice_mut()) {
        widest(
            #[inline(always)]
            || add_rows(alpha, src, dst),
        );
        return;
    }
    let offset = a.ndim() - out.ndim();
    let rank = out.ndim();
    let mut out_shape = [0usize; 16];
    out_shape[..rank].copy_from_slice(out.shape());
    let mut idx = [0usize; 16];
    for (i, &v) in a.indexed_iter() {
        for j in 0..rank {
            idx[j] = if out_shape[j] == 1 { 0 } else { i[j + offset] };
        }
        out[&idx[..rank]] += alpha * v;
    }
}

/// `dst += alpha * row` for every `dst.len()`-long row of `src` (a bias gradient's
/// reduction: M3's 256 x 1024 took 0.7% of its step at the baseline target's 4 lanes,
/// hence [`widest`]).
#[inline(always)]
fn add_rows(alpha: f32, src: &[f32], dst: &mut [f32]) {
    for chunk in src.chunks_exact(dst.len().max(1)) {
        for (d, s) in dst.iter_mut().zip(chunk) {
            *d += alpha * s;
        }
    }
}

/// `c = alpha * a x b + beta * c`: the one matrix-product kernel of modelc (generated
/// code and the benchmarks' hand-written steps both call it).
///
/// By default it is [`sgemm::sgemm`](crate::sgemm::sgemm), which works on the views' own strides (so
/// transposed views cost nothing) and packs into reusable thread-local scratch, so a call
/// allocates nothing in steady state. With the `parallel` feature, `sgemm` splits
/// products large enough to pay for it across rayon's threads. With the `blas` feature,
/// products that are not thin and whose operands BLAS can read in place (a unit stride
/// along one axis, a leading dimension at least the row length along the other; see
/// `blas_layout`) go to the system's OpenBLAS (`cblas_sgemm`; `OPENBLAS_NUM_THREADS` sets its threads).
pub fn gemm(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: ArrayViewMut2<'_, f32>) {
    gemm_then(alpha, a, b, beta, c, None);
}

/// [`gemm`] with an epilogue (see [`sgemm::sgemm_then`](crate::sgemm::sgemm_then)).
pub fn gemm_then(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    #[allow(unused_mut)] mut c: ArrayViewMut2<'_, f32>,
    then: Option<crate::sgemm::Then<'_>>,
) {
    let rec = || profile::product("gemm", (a.dim().0, a.dim().1, b.dim().1), (false, false), beta != 0.0);
    profile::timed(rec, || {
        #[cfg(feature = "blas")]
        {
            // Thin products (one side of c at most 16 wide, like M1's 784 -> 10 layer)
            // stay on sgemm's thin kernels: measured 1.5x faster than OpenBLAS on M1,
            // whose threading also costs more than it gains at that size.
            let thin = a.dim().0.min(b.dim().1) <= 16;
            if !thin && blas_gemm(alpha, a, b, beta, c.view_mut()) {
                if let Some(f) = then {
                    f(c, 0, 0);
                }
                return;
            }
        }
        crate::sgemm::sgemm_then(alpha, a, b, beta, c, then);
    });
}

/// How BLAS can read a matrix: the storage order and the leading dimension.
#[cfg(feature = "blas")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlasLayout {
    /// Element `(i, j)` at `ptr + i * ld + j`.
    RowMajor(i32),
    /// Element `(i, j)` at `ptr + i + j * ld`.
    ColMajor(i32),
}

/// The [`BlasLayout`] of `x`, if BLAS can read it: a unit stride along one axis and,
/// along the other, a stride of at least that axis's row length (BLAS's `ld >= max(1,
/// cols)`). A stride of an axis of length 1 is never followed, so it may be anything;
/// negative and zero strides elsewhere (a reversed view, a broadcast), steps in both
/// axes and leading dimensions beyond `i32` give `None`: BLAS walks forward from the
/// first element with `ld >= cols`, so it would read outside the view.
#[cfg(feature = "blas")]
fn blas_layout(dim: (usize, usize), strides: &[isize]) -> Option<BlasLayout> {
    let (r, c) = dim;
    let (s0, s1) = (strides[0], strides[1]);
    let ld = |len: usize, stride: isize, along: usize| -> Option<i32> {
        let min = along.max(1) as isize;
        if len <= 1 {
            // One row (or column): its stride is never used; the smallest valid ld.
            i32::try_from(min).ok()
        } else if stride >= min {
            i32::try_from(stride).ok()
        } else {
            None
        }
    };
    if s1 == 1 || c <= 1 {
        if let Some(ld) = ld(r, s0, c) {
            return Some(BlasLayout::RowMajor(ld));
        }
    }
    if s0 == 1 || r <= 1 {
        if let Some(ld) = ld(c, s1, r) {
            return Some(BlasLayout::ColMajor(ld));
        }
    }
    None
}

/// The `blas` feature: `cblas_sgemm` from the system's OpenBLAS, when every operand has
/// a layout BLAS can read ([`blas_layout`]) and no dimension is 0 (`sgemm` handles
/// those without reading anything); returns `false` (and does nothing) otherwise, so
/// that the caller falls back to `sgemm`, which reads any strides.
#[cfg(feature = "blas")]
fn blas_gemm(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) -> bool {
    use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT, CBLAS_TRANSPOSE};
    let (m, k) = a.dim();
    let n = b.dim().1;
    assert!(b.dim().0 == k && c.dim() == (m, n), "gemm: shapes {:?} x {:?} -> {:?}", a.dim(), b.dim(), c.dim());
    if m == 0 || n == 0 || k == 0 || !blas_kernels_fit() {
        return false;
    }
    let (Some(la), Some(lb), Some(lc)) =
        (blas_layout(a.dim(), a.strides()), blas_layout(b.dim(), b.strides()), blas_layout(c.dim(), c.strides()))
    else {
        return false;
    };
    let (Ok(mi), Ok(ni), Ok(ki)) = (i32::try_from(m), i32::try_from(n), i32::try_from(k)) else { return false };
    // c's order is BLAS's layout; an operand stored the other way is its transpose.
    let (order, row_major, ldc) = match lc {
        BlasLayout::RowMajor(ld) => (CBLAS_LAYOUT::CblasRowMajor, true, ld),
        BlasLayout::ColMajor(ld) => (CBLAS_LAYOUT::CblasColMajor, false, ld),
    };
    let op = |l: BlasLayout| match (l, row_major) {
        (BlasLayout::RowMajor(ld), true) | (BlasLayout::ColMajor(ld), false) => (CBLAS_TRANSPOSE::CblasNoTrans, ld),
        (BlasLayout::RowMajor(ld), false) | (BlasLayout::ColMajor(ld), true) => (CBLAS_TRANSPOSE::CblasTrans, ld),
    };
    let ((ta, lda), (tb, ldb)) = (op(la), op(lb));
    let cp = c.as_mut_ptr();
    // SAFETY: a, b and c are live views of shapes (m, k), (k, n), (m, n) (asserted), none
    // empty; each is laid out as `blas_layout` says: its first element at its pointer, a
    // unit stride along one axis and a stride of ld >= that axis's length along the other
    // (both non-negative), so every element BLAS reads (or, for c, writes) is one of the
    // view's own. c is a unique `ArrayViewMut2` borrow, so nothing else aliases the
    // memory written through `cp`, which carries its write provenance (`as_mut_ptr`).
    unsafe {
        cblas_sgemm(order, ta, tb, mi, ni, ki, alpha, a.as_ptr(), lda, b.as_ptr(), ldb, beta, cp, ldc);
    }
    true
}

// The system's OpenBLAS provides `cblas_sgemm` and `openblas_get_corename`.
#[cfg(feature = "blas")]
#[link(name = "openblas")]
extern "C" {
    fn openblas_get_corename() -> *const std::ffi::c_char;
}

/// Whether OpenBLAS runs kernels for the vectors this CPU has (read once). OpenBLAS picks
/// its kernels from the CPU's model when it loads, and one older than the CPU does not
/// know the model: Debian 12's 0.3.21 on the Intel Xeon of family 6 model 207 took its
/// SSE3 "Prescott" kernels, 32 GFLOP/s on M3's products against sgemm's 140 (issue 19).
/// Where the CPU has AVX2 + FMA but OpenBLAS's core is none of those with AVX2 or
/// AVX-512 kernels, the products stay on `sgemm`; `OPENBLAS_CORETYPE=Haswell` (AVX2) or
/// `SkylakeX` (AVX-512) makes OpenBLAS take its fast kernels (`OPENBLAS_VERBOSE=2`
/// prints its choice).
#[cfg(feature = "blas")]
fn blas_kernels_fit() -> bool {
    static FIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FIT.get_or_init(|| {
        // SAFETY: OpenBLAS returns a pointer to a static, NUL-terminated name.
        let core = unsafe { std::ffi::CStr::from_ptr(openblas_get_corename()) }.to_string_lossy().into_owned();
        core_fits(&core, crate::sgemm::kernel() != crate::sgemm::Kernel::Portable)
    })
}

/// Whether OpenBLAS's core `core` (its name for the kernels it chose) is one with AVX2 or
/// AVX-512 kernels, or the CPU has neither (`has_avx2` false), so that nothing is lost.
#[cfg(feature = "blas")]
fn core_fits(core: &str, has_avx2: bool) -> bool {
    const VECTOR_CORES: [&str; 6] = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", "excavator"];
    let core = core.to_ascii_lowercase();
    !has_avx2 || VECTOR_CORES.iter().any(|c| core.starts_with(c))
}

/// `out = a^T`.
pub fn transpose(a: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
    out.assign(&a.t());
}

/// Rows of a standard-layout matrix viewed through `IxDyn`, when the kernel reduces or
/// normalizes over its last axis: the fast path of the row-wise kernels (plain slices,
/// no per-lane `IxDyn` views).
pub(crate) fn rows_of<'a>(a: &'a ArrayViewD<'_, f32>, axis: usize) -> Option<std::slice::ChunksExact<'a, f32>> {
    let cols = *a.shape().last()?;
    if axis + 1 != a.ndim() || cols == 0 {
        return None;
    }
    a.as_slice().map(|s| s.chunks_exact(cols))
}

pub(crate) fn rows_of_mut<'a>(
    a: &'a mut ArrayViewMutD<'_, f32>,
    axis: usize,
) -> Option<std::slice::ChunksExactMut<'a, f32>> {
    let cols = *a.shape().last()?;
    if axis + 1 != a.ndim() || cols == 0 {
        return None;
    }
    a.as_slice_mut().map(|s| s.chunks_exact_mut(cols))
}

/// `ln(sum(exp(row - max))) + max` and the maximum.
#[inline]
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    let m = row_max(row);
    let s: f32 = row.iter().map(|&v| exp(v - m)).sum();
    m + ln(s)
}

/// Drops the reduced axis of `out` if it was kept (`keepdims`).
fn reduced<'a, T>(out: ArrayViewMutD<'a, T>, input_rank: usize, axis: usize) -> ArrayViewMutD<'a, T> {
    if out.ndim() == input_rank {
        out.index_axis_move(Axis(axis), 0)
    } else {
        out
    }
}

/// `out = sum(a, axes)`; `out` has the reduced axes removed or kept as 1.
pub fn sum_axes(a: ArrayViewD<'_, f32>, axes: &[usize], mut out: ArrayViewMutD<'_, f32>) {
    if axes.len() == a.ndim() {
        out.fill(a.sum());
        return;
    }
    if axes.len() == 1 {
        let axis = axes[0];
        let mut out = reduced(out, a.ndim(), axis);
        if axis == 0 {
            out.fill(0.0);
            for row in a.axis_iter(Axis(0)) {
                out += &row;
            }
        } else if let (Some(rows), Some(o)) = (rows_of(&a, axis), out.as_slice_mut()) {
            for (r, o) in rows.zip(o) {
                *o = r.iter().sum();
            }
        } else if let (Some(src), Some(o)) = (a.as_slice(), out.as_slice_mut()) {
            // A middle axis of a standard-layout `a` (`[p, n, q]` -> `[p, q]`, the mean
            // over tokens of `[batch, tokens, d]`): add whole rows of `q`, in order of the
            // axis. Per lane through `Zip` (IxDyn, a strided lane each) this took 21% of
            // the embedding example's step.
            let n = a.shape()[axis];
            let q: usize = a.shape()[axis + 1..].iter().product();
            o.fill(0.0);
            if n > 0 && q > 0 {
                for (block, orow) in src.chunks_exact(n * q).zip(o.chunks_exact_mut(q)) {
                    for row in block.chunks_exact(q) {
                        for (o, &v) in orow.iter_mut().zip(row) {
                            *o += v;
                        }
                    }
                }
            }
        } else {
            Zip::from(&mut out).and(a.lanes(Axis(axis))).for_each(|o, lane| *o = lane.sum());
        }
        return;
    }
    // Several (not all) axes (`sum(x, axis = [1, 2])`): one pass, allocating nothing.
    crate::shape::reduce_axes(a, axes, 0.0, |s, v| s + v, out);
}

/// `out = max(a, axis)`.
pub fn max_axis(a: ArrayViewD<'_, f32>, axis: usize, out: ArrayViewMutD<'_, f32>) {
    let mut out = reduced(out, a.ndim(), axis);
    Zip::from(&mut out)
        .and(a.lanes(Axis(axis)))
        .for_each(|o, lane| *o = lane.fold(f32::NEG_INFINITY, |m, &v| if v > m || v.is_nan() { v } else { m }));
}

/// `out = argmax(a, axis)` as u32 indices (the first maximum wins, as in NumPy; a NaN
/// first in its lane wins too).
pub fn argmax_axis(a: ArrayViewD<'_, f32>, axis: usize, out: ArrayViewMutD<'_, u32>) {
    let mut out = reduced(out, a.ndim(), axis);
    if let (Some(rows), Some(o)) = (rows_of(&a, axis), out.as_slice_mut()) {
        for (r, o) in rows.zip(o) {
            let mut best = 0;
            for (i, &v) in r.iter().enumerate() {
                if v > r[best] || (i == 0 && v.is_nan()) {
                    best = i;
                }
            }
            *o = best as u32;
        }
        return;
    }
    Zip::from(&mut out).and(a.lanes(Axis(axis))).for_each(|o, lane| {
        let mut best = 0;
        let mut best_v = f32::NEG_INFINITY;
        for (i, &v) in lane.iter().enumerate() {
            if v > best_v || (i == 0 && v.is_nan()) {
                best = i;
                best_v = v;
            }
        }
        *o = best as u32;
    });
}

/// `out = a` broadcast (NumPy rules) to `out`'s shape.
///
/// Standard-layout `a` and `out` (workspace buffers) are copied block by block: ndarray's
/// `assign` walks an IxDyn broadcast element by element, and the gradient of a `mean`
/// over tokens (`[batch, 1, d]` to `[batch, tokens, d]`) took 18% of the embedding
/// example's step that way (51% through `elementwise::map`, which splits a rank-3
/// broadcast into one call per leading index).
pub fn broadcast_to(a: ArrayViewD<'_, f32>, mut out: ArrayViewMutD<'_, f32>) {
    const MAX_RANK: usize = 8;
    let rank = out.ndim();
    if a.ndim() <= rank && rank <= MAX_RANK && !out.is_empty() {
        // `a`'s shape aligned to `out`'s (NumPy: missing leading axes are 1).
        let mut shape = [1usize; MAX_RANK];
        shape[rank - a.ndim()..rank].copy_from_slice(a.shape());
        let fits = shape[..rank].iter().zip(out.shape()).all(|(&s, &d)| s == d || s == 1);
        let dims: [usize; MAX_RANK] = std::array::from_fn(|i| out.shape().get(i).copied().unwrap_or(1));
        if let (true, Some(src), Some(dst)) = (fits, a.as_slice(), out.as_slice_mut()) {
            broadcast_block(src, &shape[..rank], dst, &dims[..rank]);
            return;
        }
    }
    out.assign(&a);
}

/// [`broadcast_to`] of standard-layout slices: `src` of `shape` (each axis 1 or `dims`'s,
/// at most `MAX_RANK` of them) into `dst` of `dims`. The trailing axes the two shapes
/// share are copied as whole blocks; the leading ones are walked by an odometer whose
/// source stride is 0 on a broadcast axis (a recursion over the leading axes compared
/// the shapes and called `memcmp` once per block: 8% of the embedding step).
fn broadcast_block(src: &[f32], shape: &[usize], dst: &mut [f32], dims: &[usize]) {
    if let [v] = src {
        // A scalar (the tutorial's `1 / batch` spread over the batch): one fill, not a
        // block copy per element.
        dst.fill(*v);
        return;
    }
    let mut k = dims.len();
    while k > 0 && shape[k - 1] == dims[k - 1] {
        k -= 1;
    }
    let inner: usize = dims[k..].iter().product();
    let mut stride = [0usize; 8];
    let mut acc = inner;
    for i in (0..k).rev() {
        stride[i] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    let (mut idx, mut off) = ([0usize; 8], 0usize);
    for block in dst.chunks_exact_mut(inner) {
        block.copy_from_slice(&src[off..off + inner]);
        let mut i = k;
        while i > 0 {
            i -= 1;
            idx[i] += 1;
            off += stride[i];
            if idx[i] < dims[i] {
                break;
            }
            off -= stride[i] * dims[i];
            idx[i] = 0;
        }
    }
}

/// `out = a` summed down to `out`'s shape (the adjoint of broadcasting).
pub fn sum_to(a: ArrayViewD<'_, f32>, mut out: ArrayViewMutD<'_, f32>) {
    if out.len() == a.len() {
        reshape(a, out);
        return;
    }
    if out.len() == 1 {
        out.fill(a.sum());
        return;
    }
    // Leading axes summed away ([n, k] -> [k], [n, k] -> [1, k]): add rows.
    let lead = out.shape().iter().take_while(|&&d| d == 1).count();
    let core = &out.shape()[lead..];
    let leading_only = core.len() <= a.ndim() && a.shape()[a.ndim() - core.len()..] == *core;
    if leading_only {
        let inner = out.len();
        if let (Some(src), Some(dst)) = (a.as_slice(), out.as_slice_mut()) {
            dst.fill(0.0);
            for chunk in src.chunks_exact(inner) {
                for (d, s) in dst.iter_mut().zip(chunk) {
                    *d += s;
                }
            }
            return;
        }
    }
    // General case: accumulate every element into its broadcast source.
    out.fill(0.0);
    let offset = a.ndim() - out.ndim();
    let rank = out.ndim();
    let mut out_shape = [0usize; 16];
    out_shape[..rank].copy_from_slice(out.shape());
    let mut idx = [0usize; 16];
    for (i, &v) in a.indexed_iter() {
        for j in 0..rank {
            idx[j] = if out_shape[j] == 1 { 0 } else { i[j + offset] };
        }
        out[&idx[..rank]] += v;
    }
}

/// `out = a` with the same elements in `out`'s shape (only unit axes differ).
pub fn reshape<T: Copy>(a: ArrayViewD<'_, T>, mut out: ArrayViewMutD<'_, T>) {
    match (a.as_slice(), out.as_slice_mut()) {
        (Some(src), Some(dst)) => dst.copy_from_slice(src),
        _ => {
            for (o, &v) in out.iter_mut().zip(a.iter()) {
                *o = v;
            }
        }
    }
}

/// `out = softmax(a)` along `axis`, computed stably (the maximum is subtracted first).
pub fn softmax(a: ArrayViewD<'_, f32>, axis: usize, mut out: ArrayViewMutD<'_, f32>) {
    if let (Some(rows), Some(outs)) = (rows_of(&a, axis), rows_of_mut(&mut out, axis)) {
        // Shift every row by its maximum, exponentiate the whole buffer in one vector
        // pass, then normalize each row.
        for (r, o) in rows.zip(outs) {
            let m = row_max(r);
            for (o, &v) in o.iter_mut().zip(r) {
                *o = v - m;
            }
        }
        let Some(all) = out.as_slice_mut() else { unreachable!("rows_of_mut found it contiguous") };
        exp_inplace(all);
        let cols = a.shape()[axis];
        for o in all.chunks_exact_mut(cols) {
            let inv = 1.0 / o.iter().sum::<f32>();
            o.iter_mut().for_each(|v| *v *= inv);
        }
        return;
    }
    Zip::from(a.lanes(Axis(axis))).and(out.lanes_mut(Axis(axis))).for_each(|a, mut o| {
        let m = a.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut s = 0.0;
        Zip::from(&mut o).and(&a).for_each(|o, &v| {
            let e = exp(v - m);
            *o = e;
            s += e;
        });
        let inv = 1.0 / s;
        o.map_inplace(|v| *v *= inv);
    });
}

/// `out = log_softmax(a)` along `axis`: `a - max - ln(sum(exp(a - max)))`, finite for
/// any finite logits.
pub fn log_softmax(a: ArrayViewD<'_, f32>, axis: usize, mut out: ArrayViewMutD<'_, f32>) {
    if let (Some(rows), Some(outs)) = (rows_of(&a, axis), rows_of_mut(&mut out, axis)) {
        for (r, o) in rows.zip(outs) {
            let lse = log_sum_exp(r);
            for (o, &v) in o.iter_mut().zip(r) {
                *o = v - lse;
            }
        }
        return;
    }
    Zip::from(a.lanes(Axis(axis))).and(out.lanes_mut(Axis(axis))).for_each(|a, mut o| {
        let m = a.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let s: f32 = a.iter().map(|&v| exp(v - m)).sum();
        let lse = m + ln(s);
        Zip::from(&mut o).and(&a).for_each(|o, &v| *o = v - lse);
    });
}

/// `out = softmax_cross_entropy(z, y) = -sum(y * log_softmax(z), -1)`, fused and stable.
pub fn softmax_xent(z: ArrayViewD<'_, f32>, y: ArrayViewD<'_, f32>, mut out: ArrayViewMutD<'_, f32>) {
    let axis = z.ndim() - 1;
    if let (Some(zr), Some(yr), Some(o)) = (rows_of(&z, axis), rows_of(&y, axis), out.as_slice_mut()) {
        for ((z, y), o) in zr.zip(yr).zip(o) {
            let lse = log_sum_exp(z);
            *o = z.iter().zip(y).map(|(&zv, &yv)| yv * (lse - zv)).sum();
        }
        return;
    }
    let last = Axis(axis);
    Zip::from(&mut out).and(z.lanes(last)).and(y.lanes(last)).for_each(|o, z, y| {
        let m = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let s: f32 = z.iter().map(|&v| exp(v - m)).sum();
        let lse = m + ln(s);
        *o = Zip::from(&z).and(&y).fold(0.0, |acc, &zv, &yv| acc + yv * (lse - zv));
    });
}

/// `out = (softmax(z) * sum(y, -1) - y) * g[..., None]`: the gradient of
/// [`softmax_xent`] w.r.t. the logits, in one pass per row.
pub fn softmax_xent_grad(
    z: ArrayViewD<'_, f32>,
    y: ArrayViewD<'_, f32>,
    g: ArrayViewD<'_, f32>,
    mut out: ArrayViewMutD<'_, f32>,
) {
    let axis = z.ndim() - 1;
    if let (Some(zr), Some(yr), Some(g), Some(outs)) =
        (rows_of(&z, axis), rows_of(&y, axis), g.as_slice(), rows_of_mut(&mut out, axis))
    {
        for (((z, y), &g), o) in zr.zip(yr).zip(g).zip(outs) {
            let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut s = 0.0;
            for (o, &v) in o.iter_mut().zip(z) {
                *o = exp(v - m);
                s += *o;
            }
            let scale = y.iter().sum::<f32>() / s;
            for (o, &yv) in o.iter_mut().zip(y) {
                *o = (*o * scale - yv) * g;
            }
        }
        return;
    }
    let last = Axis(axis);
    Zip::from(out.lanes_mut(last)).and(z.lanes(last)).and(y.lanes(last)).and(&g).for_each(|mut o, z, y, &g| {
        let m = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut s = 0.0;
        Zip::from(&mut o).and(&z).for_each(|o, &v| {
            let e = exp(v - m);
            *o = e;
            s += e;
        });
        let sy: f32 = y.sum();
        let scale = sy / s;
        Zip::from(&mut o).and(&y).for_each(|o, &yv| *o = (*o * scale - yv) * g);
    });
}

/// [`softmax_xent`] and [`softmax_xent_grad`] in one pass per row: the loss of each row
/// into `loss` and `(softmax(z) * sum(y) - y) * g` into `grad`, computing the
/// exponentials once.
pub fn softmax_xent_with_grad(
    z: ArrayViewD<'_, f32>,
    y: ArrayViewD<'_, f32>,
    g: ArrayViewD<'_, f32>,
    mut loss: ArrayViewMutD<'_, f32>,
    mut grad: ArrayViewMutD<'_, f32>,
) {
    let axis = z.ndim() - 1;
    let cols = z.shape()[axis];
    if let (true, Some(zs), Some(ys), Some(gs), Some(ls), Some(os)) = (
        cols > 0 && y.shape() == z.shape(),
        z.as_slice(),
        y.as_slice(),
        g.as_slice(),
        loss.as_slice_mut(),
        grad.as_slice_mut(),
    ) {
        if gs.len() == ls.len() && ls.len() * cols == zs.len() && os.len() == zs.len() {
            // Whole blocks of 16 narrow rows on AVX-512 (`narrow`), the rest here.
            #[cfg(target_arch = "x86_64")]
            let done = crate::narrow::softmax_xent_with_grad(zs, ys, gs, ls, os, cols);
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            let at = done * cols;
            xent_rows(&zs[at..], &ys[at..], &gs[done..], &mut ls[done..], &mut os[at..], cols);
            return;
        }
    }
    softmax_xent(z.view(), y.view(), loss.view_mut());
    softmax_xent_grad(z, y, g, grad);
}

/// [`softmax_xent_with_grad`]'s rows over contiguous slices, `cols > 0` floats a row.
/// Shifted logits into `grad` (each row's max kept in its loss slot meanwhile), one
/// vector pass of exponentials over the whole buffer, then per row: the loss and the
/// gradient. The row reductions run 4 lanes wide, so a 10-wide row is not a chain of
/// dependent adds, and the max is found once (M1's step: 52.8 -> 51.6 us, best of 6
/// interleaved runs).
fn xent_rows(z: &[f32], y: &[f32], g: &[f32], loss: &mut [f32], grad: &mut [f32], cols: usize) {
    for ((z, o), l) in z.chunks_exact(cols).zip(grad.chunks_exact_mut(cols)).zip(loss.iter_mut()) {
        let m = row_max(z);
        for (o, &v) in o.iter_mut().zip(z) {
            *o = v - m;
        }
        *l = m;
    }
    exp_inplace(grad);
    for ((((z, y), &g), l), o) in
        z.chunks_exact(cols).zip(y.chunks_exact(cols)).zip(g).zip(loss).zip(grad.chunks_exact_mut(cols))
    {
        let s = row_sum(o);
        let lse = *l + ln(s);
        // sum(y * (lse - z)) = lse * sum(y) - sum(y * z)
        let (sy, syz) = row_sums_y_yz(y, z);
        *l = lse * sy - syz;
        let scale = sy / s;
        for (o, &yv) in o.iter_mut().zip(y) {
            *o = (*o * scale - yv) * g;
        }
    }
}

/// The largest element of a row (NaNs ignored, as `f32::max` does; -inf if empty),
/// over 4 independent lanes.
#[inline]
pub(crate) fn row_max(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (m, &x) in m.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    chunks.remainder().iter().fold(m[0].max(m[1]).max(m[2].max(m[3])), |m, &x| m.max(x))
}

/// The sum of a row, over 4 independent lanes.
#[inline]
pub(crate) fn row_sum(v: &[f32]) -> f32 {
    let mut s = [0.0f32; 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (s, &x) in s.iter_mut().zip(c) {
            *s += x;
        }
    }
    chunks.remainder().iter().fold((s[0] + s[1]) + (s[2] + s[3]), |s, &x| s + x)
}

/// `(sum(y), sum(y * z))` of two rows of equal length, over 4 independent lanes.
#[inline]
fn row_sums_y_yz(y: &[f32], z: &[f32]) -> (f32, f32) {
    let (mut sy, mut syz) = ([0.0f32; 4], [0.0f32; 4]);
    let (mut yc, mut zc) = (y.chunks_exact(4), z.chunks_exact(4));
    for (yc, zc) in (&mut yc).zip(&mut zc) {
        for i in 0..4 {
            sy[i] += yc[i];
            syz[i] += yc[i] * zc[i];
        }
    }
    let (mut a, mut b) = ((sy[0] + sy[1]) + (sy[2] + sy[3]), (syz[0] + syz[1]) + (syz[2] + syz[3]));
    for (&yv, &zv) in yc.remainder().iter().zip(zc.remainder()) {
        a += yv;
        b += yv * zv;
    }
    (a, b)
}

/// `max(x, 0)`.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// 1 where `x > 0`, else 0.
#[inline(always)]
pub fn step(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// -1, 0 or 1.
#[inline(always)]
pub fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `x * x`.
#[inline(always)]
pub fn square(x: f32) -> f32 {
    x * x
}

/// `1 / (1 + e^-x)`, without overflow for large `|x|`: `1 / (1 + e)` for `x >= 0` and
/// `e / (1 + e)` below, with `e = exp(-|x|)` ([`exp`]); no branch, so that it
/// vectorizes. Within 3 ulp of the exact value where that is a normal number (see the
/// test); 0 below -87.3.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 {
        s
    } else {
        e * s
    }
}

/// `tanh(x)`, branch-free so that it vectorizes (Cephes' `tanhf`): `x + x^3 P(x^2)` for
/// `|x| < 0.625`, else `1 - 2 / (e^{2|x|} + 1)` ([`exp`]), with the sign of `x`. Within
/// 3 ulp of the exact value (see the test).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let p = (((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z - 3.333_328e-1;
    let small = a + a * (z * p);
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let t = if a < 0.625 { small } else { large };
    t.copysign(x)
}

/// `ln(1 + e^x)`, computed as `max(x, 0) + ln(1 + e^-|x|)` ([`ln_1p`], [`exp`]).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + ln_1p(exp(-x.abs()))
}

/// `sigmoid_cross_entropy(x, z) = max(x, 0) - x z + ln(1 + e^-|x|)` (TensorFlow's form).
#[inline(always)]
pub fn sigmoid_xent(x: f32, z: f32) -> f32 {
    x.max(0.0) - x * z + ln_1p(exp(-x.abs()))
}

/// The natural logarithm, branch-free so that it vectorizes (Cephes' `logf`: the
/// exponent and mantissa from the bits, a degree-9 polynomial on the mantissa, the
/// exponent's `ln 2` added in two parts). Within 1 ulp where tested (see the test);
/// subnormals are scaled first; `ln(0) = -inf`, negative inputs and NaN give NaN,
/// `ln(inf) = inf`, as `f32::ln`.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    // Subnormals: scaled by 2^23 into the normal range, the exponent corrected below.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits();
    // x = m 2^e with m in [0.5, 1).
    let e = ((bits >> 23) & 0xff) as i32 - 126 - if tiny { 23 } else { 0 };
    let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    // m in [sqrt(1/2), sqrt(2)) after moving one factor 2 between m and e.
    let low = m < std::f32::consts::FRAC_1_SQRT_2;
    let e = (e - i32::from(low)) as f32;
    let m = if low { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let p = ((((((((7.037_683_6e-2 * m - 1.151_461e-1) * m + 1.167_699_9e-1) * m - 1.242_014_1e-1) * m
        + 1.424_932_3e-1)
        * m
        - 1.666_805_8e-1)
        * m
        + 2.000_071_4e-1)
        * m
        - 2.499_999_4e-1)
        * m
        + 3.333_333e-1)
        * m
        * z;
    let y = p + -2.121_944_4e-4 * e - 0.5 * z;
    let r = m + y + 0.693_359_4 * e;
    if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        r
    }
}

/// `ln(1 + x)`, accurate for small `x`: `ln(w) * x / (w - 1)` with `w = 1 + x`, which
/// cancels the rounding of `w` (Goldberg's trick), and `x` where `w` rounds to 1.
#[inline(always)]
pub fn ln_1p(x: f32) -> f32 {
    let w = 1.0 + x;
    let d = w - 1.0;
    let r = ln(w) * (x / d);
    if d == 0.0 {
        x
    } else if w == f32::INFINITY {
        w
    } else {
        r
    }
}

/// `v = exp(v)` for every element, vectorized where the CPU allows.
///
/// A polynomial `exp` ([`exp`]: Cody-Waite range reduction and Cephes' degree-5
/// minimax polynomial, within 3 ulp of the exact value; inputs below -87.34 give 0 where
/// `expf` would give a subnormal, above 88.72 infinity), which [`widest`] vectorizes 16
/// lanes wide with AVX-512, 8 with AVX2 and 4 for the baseline: measured 5-10 times
/// faster than calling libm's `expf` per element, which dominated the tutorial's
/// softmax.
pub fn exp_inplace(v: &mut [f32]) {
    widest(
        #[inline(always)]
        || v.iter_mut().for_each(|x| *x = exp(*x)),
    );
}

/// `e^x`, as a polynomial that vectorizes (no branches, no calls; see [`exp_inplace`]
/// for its accuracy and range): the generated code's `exp`, where libm's `expf` is a
/// call per element.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two, the first part exact in few bits (Cody-Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    let c = x.clamp(LO, HI);
    // floor(t) and then n as an integer through the bits of t + 1.5 * 2^23, where the
    // float's unit is 1 (exact: |t| < 130), rather than `f32::floor` (a call without
    // SSE4.1) and `as i32` (saturating): plain float and integer operations, which
    // vectorize for every target.
    const ROUND: f32 = 12_582_912.0;
    let t = c * LOG2E + 0.5;
    let nearest = (t + ROUND) - ROUND;
    let n = if nearest > t { nearest - 1.0 } else { nearest };
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    // 2^n through the exponent bits, as 2^h * 2^(n - h) with h = n / 2 so that both
    // factors are normal for every n in [-126, 128] (the range after the clamp).
    let n = (n + ROUND).to_bits() as i32 - ROUND.to_bits() as i32;
    let h = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = e * pow2(h) * pow2(n - h);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "blas")]
    #[test]
    fn blas_is_skipped_where_openblas_runs_old_kernels() {
        use super::core_fits;
        // Debian 12's OpenBLAS on the Xeon of family 6 model 207 (issue 19).
        assert!(!core_fits("Prescott", true));
        assert!(!core_fits("Sandybridge", true));
        for core in ["Haswell", "SkylakeX", "Zen", "Cooperlake", "SapphireRapids"] {
            assert!(core_fits(core, true), "{core}");
        }
        // Without AVX2 sgemm has nothing faster to offer.
        assert!(core_fits("Prescott", false));
    }

    use super::*;
    use ndarray::{array, Array1, Array2, ArrayD, IxDyn};

    #[test]
    fn broadcast_to_and_sum_over_a_middle_axis_match_ndarray() {
        let cases: [(&[usize], &[usize]); 7] = [
            (&[5, 1, 4], &[5, 3, 4]),
            (&[1, 3, 1], &[5, 3, 4]),
            (&[5, 1, 1], &[5, 3, 4]),
            (&[4], &[5, 3, 4]),
            (&[], &[2, 3]),
            (&[3, 1], &[2, 3, 6]),
            (&[2, 3], &[2, 3]),
        ];
        for (from, to) in cases {
            let n: usize = from.iter().product();
            let a = ArrayD::from_shape_vec(IxDyn(from), (0..n).map(|v| v as f32 + 0.5).collect()).unwrap();
            let mut out = ArrayD::<f32>::zeros(IxDyn(to));
            broadcast_to(a.view(), out.view_mut());
            assert_eq!(out, a.broadcast(IxDyn(to)).unwrap().to_owned(), "{from:?} -> {to:?}");
        }
        let a = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| (i[0] * 20 + i[1] * 5 + i[2]) as f32);
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[3, 5]));
        sum_axes(a.view(), &[1], out.view_mut());
        assert_eq!(out, a.sum_axis(ndarray::Axis(1)));
    }

    #[test]
    fn gemm_matches_a_naive_product_on_transposed_views() {
        let a = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f32 * 0.5 - 2.0);
        let b = Array2::from_shape_fn((4, 3), |(i, j)| (i + 2 * j) as f32 * 0.25 - 1.0);
        let mut c = Array2::from_elem((5, 4), 1.0f32);
        gemm(2.0, a.view(), b.t(), 0.5, c.view_mut());
        for i in 0..5 {
            for j in 0..4 {
                let dot: f32 = (0..3).map(|k| a[[i, k]] * b[[j, k]]).sum();
                assert!((c[[i, j]] - (2.0 * dot + 0.5)).abs() < 1e-5);
            }
        }
        let mut d = Array2::<f32>::zeros((3, 3));
        matmul(a.view(), true, a.view(), false, d.view_mut());
        assert!((d[[1, 2]] - (0..5).map(|k| a[[k, 1]] * a[[k, 2]]).sum::<f32>()).abs() < 1e-4);
    }

    /// The vector `exp` against f64 over its whole range (and past both ends), in ulps
    /// of the f32 result; NaN stays NaN.
    #[test]
    fn exp_inplace_is_within_a_few_ulp() {
        // Every variant this CPU runs: the portable `f32::exp` and each vector build.
        let variants = crate::sgemm::kernels();
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 4.5e-4).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, -87.3, -87.34, 88.7, 88.72, -88.0, -103.0, 89.0, 1e4, -1e4]);
        for kern in variants {
            crate::sgemm::FORCE_KERNEL.with(|f| f.set(Some(kern)));
            let name = format!("{kern:?}");
            let mut ys = xs.clone();
            exp_inplace(&mut ys);
            let mut worst = 0.0f64;
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp();
                if want < f32::MIN_POSITIVE as f64 {
                    assert!(y == 0.0 || (y as f64 - want).abs() <= f32::MIN_POSITIVE as f64, "{name}: exp({x}) = {y}");
                } else if want > f32::MAX as f64 {
                    assert_eq!(y, f32::INFINITY, "{name}: exp({x})");
                } else {
                    let ulp = (want as f32).abs() as f64 * f32::EPSILON as f64;
                    worst = worst.max((y as f64 - want).abs() / ulp);
                }
            }
            assert!(worst <= 3.0, "{name}: worst error {worst} ulp");
            let mut nan = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            exp_inplace(&mut nan);
            assert!(nan[0].is_nan(), "{name}");
            assert_eq!(&nan[1..], &[f32::INFINITY, 0.0], "{name}");
        }
        crate::sgemm::FORCE_KERNEL.with(|f| f.set(None));
    }

    /// Worst error of `f` against `exact` in ulps of the exact f32 value, over `xs`
    /// where the exact value is a normal f32.
    fn worst_ulp(xs: &[f32], f: impl Fn(f32) -> f32, exact: impl Fn(f64) -> f64) -> f64 {
        let mut worst = 0.0f64;
        for &x in xs {
            let (y, want) = (f(x), exact(x as f64));
            if want.abs() >= f32::MIN_POSITIVE as f64 {
                let ulp = (want as f32).abs() as f64 * f32::EPSILON as f64;
                worst = worst.max((y as f64 - want).abs() / ulp);
            }
        }
        worst
    }

    /// The vectorizable `tanh` and `sigmoid` against f64 over their whole range, with
    /// the signed zeros, infinities and NaN.
    #[test]
    fn tanh_and_sigmoid_are_within_a_few_ulp() {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).collect();
        xs.extend((-300..=300).map(|i| i as f32 * 0.37));
        xs.extend([1e-30, -1e-30, 1e-8, -1e-8, 0.624_999_9, 0.625, -0.625, 87.0, -87.0, 100.0, -100.0]);
        let t = worst_ulp(&xs, tanh, f64::tanh);
        assert!(t <= 2.0, "tanh: worst error {t} ulp");
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let s = worst_ulp(&xs, sigmoid, sig);
        assert!(s <= 2.0, "sigmoid: worst error {s} ulp");
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!((sigmoid(f32::INFINITY), sigmoid(f32::NEG_INFINITY), sigmoid(0.0)), (1.0, 0.0, 0.5));
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan() && exp(f32::NAN).is_nan());
    }

    /// The vectorizable `ln`, `ln_1p` and `softplus` against f64 over their whole range,
    /// subnormals included, with their special values.
    #[test]
    fn ln_ln_1p_and_softplus_are_within_a_few_ulp() {
        // Every 2^16th f32 from the smallest subnormal to the largest finite value.
        let xs: Vec<f32> = (1..0x7f80_0000u32).step_by(1 << 16).map(f32::from_bits).chain([1.0, 2.0, 0.5]).collect();
        let l = worst_ulp(&xs, ln, f64::ln);
        assert!(l <= 1.0, "ln: worst error {l} ulp");
        let small: Vec<f32> = (-99_000..=200_000).map(|i| i as f32 * 1e-5).chain(xs.iter().copied()).collect();
        let l1 = worst_ulp(&small, ln_1p, f64::ln_1p);
        assert!(l1 <= 2.0, "ln_1p: worst error {l1} ulp");
        let wide: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-4).collect();
        let sp = worst_ulp(&wide, softplus, |x| x.max(0.0) + (-x.abs()).exp().ln_1p());
        assert!(sp <= 2.0, "softplus: worst error {sp} ulp");
        assert_eq!((ln(0.0), ln(-0.0), ln(f32::INFINITY)), (f32::NEG_INFINITY, f32::NEG_INFINITY, f32::INFINITY));
        assert_eq!(ln(1.0).to_bits(), 0.0f32.to_bits());
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan() && ln(f32::NEG_INFINITY).is_nan());
        assert_eq!((ln_1p(0.0), ln_1p(-1.0), ln_1p(f32::INFINITY)), (0.0, f32::NEG_INFINITY, f32::INFINITY));
        assert_eq!(ln_1p(1e-30), 1e-30);
        assert!(ln_1p(-2.0).is_nan() && ln_1p(f32::NAN).is_nan());
        assert_eq!((softplus(-200.0), softplus(200.0)), (0.0, 200.0));
    }

    /// `map` against the same closure applied element by element, on every kernel this
    /// CPU runs and every layout the fast and the strided loops take: same shapes, a
    /// bias row, a column and a scalar broadcast, a transposed input, a stepped output, a
    /// rank-3 broadcast that does not merge, rows longer than a block (with a stepped
    /// bias), short rows in
    /// several blocks (in place, padded, a bias, a column), columns `[n, 1]`, a scalar
    /// output.
    #[test]
    fn map_gives_the_elementwise_bits_on_every_layout() {
        let f = |o: f32, [a, b, c]: [f32; 3]| tanh(a * b + c) + sigmoid(o - c) * exp(b);
        let filled = |shape: &[usize], s: usize| {
            ArrayD::from_shape_fn(IxDyn(shape), |i| {
                let k = ndarray::Dimension::slice(&i).iter().fold(s, |acc, &v| acc * 31 + v);
                ((k % 97) as f32 - 48.0) * 0.0625
            })
        };
        let bias = filled(&[300], 1);
        let col = filled(&[7, 1], 2);
        let t = filled(&[300, 7], 3);
        let full = filled(&[7, 300], 4);
        let three = filled(&[3, 1, 5], 5);
        let three_b = filled(&[4, 5], 6);
        let scalar = filled(&[], 7);
        // Short rows, several blocks of them: rows 300 apart, a row-major block, a column.
        let wide_rows = filled(&[40, 300], 9);
        let short = filled(&[40, 10], 10);
        let col40 = filled(&[40, 1], 11);
        let padded = wide_rows.slice(ndarray::s![.., ..10]).into_dyn();
        let bias10 = bias.slice(ndarray::s![..10]).into_dyn();
        // A bias with a stride, over rows longer than a block.
        let bias_wide = filled(&[600], 12);
        let bias_stepped = bias_wide.slice(ndarray::s![..;2]).into_dyn();
        let cases: Vec<(Vec<usize>, [ArrayViewD<'_, f32>; 3])> = vec![
            (vec![7, 300], [full.view(), full.view(), full.view()]),
            (vec![7, 300], [full.view(), bias.view(), col.view()]),
            (vec![7, 300], [full.view(), col.view(), scalar.view()]),
            (vec![7, 300], [bias_stepped.clone(), full.view(), scalar.view()]),
            (vec![7, 300], [scalar.view(), t.view().reversed_axes(), bias.view()]),
            (vec![3, 4, 5], [three.view(), three_b.view(), scalar.view()]),
            (vec![5], [scalar.view(), scalar.view(), bias.slice(ndarray::s![..5]).into_dyn()]),
            (vec![7, 1], [col.view(), scalar.view(), col.view()]),
            (vec![40, 10], [padded.clone(), bias10.clone(), col40.view()]),
            (vec![40, 10], [short.view(), scalar.view(), bias10.clone()]),
            (vec![40, 10], [short.view(), short.view(), short.view()]),
            (vec![1, 7, 1], [col.view(), col.view(), scalar.view()]),
            (vec![], [scalar.view(), scalar.view(), scalar.view()]),
        ];
        for kern in crate::sgemm::kernels() {
            crate::sgemm::FORCE_KERNEL.with(|k| k.set(Some(kern)));
            for (shape, ins) in &cases {
                for stepped in [false, true] {
                    let mut wide = shape.clone();
                    if let Some(last) = wide.last_mut() {
                        *last *= if stepped { 2 } else { 1 };
                    }
                    let mut buf = filled(&wide, 8);
                    let mut out = buf.view_mut();
                    if stepped && !shape.is_empty() {
                        out.slice_axis_inplace(ndarray::Axis(shape.len() - 1), ndarray::Slice::new(0, None, 2));
                    }
                    let want = ArrayD::from_shape_fn(out.raw_dim(), |i| {
                        let get = |v: &ArrayViewD<'_, f32>| v.broadcast(out.raw_dim()).unwrap()[&i];
                        f(out[&i], [get(&ins[0]), get(&ins[1]), get(&ins[2])])
                    });
                    map(out.view_mut(), ins.clone(), f);
                    assert_eq!(out.shape(), want.shape());
                    for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                        assert_eq!(got.to_bits(), want.to_bits(), "{kern:?} {shape:?} stepped {stepped}: element {i}");
                    }
                }
            }
        }
        crate::sgemm::FORCE_KERNEL.with(|k| k.set(None));
    }

    #[test]
    fn sum_to_handles_leading_and_unit_axes() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
        let mut out = Array1::<f32>::zeros(4);
        sum_to(a.view().into_dyn(), out.view_mut().into_dyn());
        assert_eq!(out, array![12.0, 15.0, 18.0, 21.0]);
        let mut col = Array2::<f32>::zeros((3, 1));
        sum_to(a.view().into_dyn(), col.view_mut().into_dyn());
        assert_eq!(col, array![[6.0], [22.0], [38.0]]);
        let mut all = ArrayD::<f32>::zeros(IxDyn(&[]));
        sum_to(a.view().into_dyn(), all.view_mut());
        assert_eq!(all[[]], 66.0);
    }

    /// The fused bias update `out += alpha * sum_to(a)`: leading axes summed (rows wide
    /// enough for whole vectors and a tail), a unit axis kept, a scalar.
    #[test]
    fn sum_to_acc_adds_the_scaled_reduction() {
        let a = Array2::from_shape_fn((5, 37), |(i, j)| (i * 37 + j) as f32 * 0.25);
        let mut out = Array1::from_elem(37, 1.0f32);
        sum_to_acc(-0.5, a.view().into_dyn(), out.view_mut().into_dyn());
        for (j, &v) in out.iter().enumerate() {
            let want = 1.0 - 0.5 * (0..5).map(|i| (i * 37 + j) as f32 * 0.25).sum::<f32>();
            assert!((v - want).abs() <= 1e-4 * want.abs().max(1.0), "out[{j}] = {v}, want {want}");
        }
        let mut col = Array2::from_elem((5, 1), 2.0f32);
        sum_to_acc(2.0, a.view().into_dyn(), col.view_mut().into_dyn());
        for (i, &v) in col.iter().enumerate() {
            let want = 2.0 + 2.0 * (0..37).map(|j| (i * 37 + j) as f32 * 0.25).sum::<f32>();
            assert!((v - want).abs() <= 1e-4 * want.abs(), "col[{i}] = {v}, want {want}");
        }
        let mut all = ArrayD::<f32>::zeros(IxDyn(&[]));
        sum_to_acc(1.0, a.view().into_dyn(), all.view_mut());
        assert!((all[[]] - a.sum()).abs() <= 1e-2, "{} vs {}", all[[]], a.sum());
    }

    #[test]
    fn softmax_rows_sum_to_one_and_xent_is_stable() {
        let z = array![[1e4f32, 0.0, -1e4], [1.0, 2.0, 3.0]].into_dyn();
        let y = array![[0.0f32, 1.0, 0.0], [0.0, 0.0, 1.0]].into_dyn();
        let mut p = ArrayD::<f32>::zeros(z.raw_dim());
        softmax(z.view(), 1, p.view_mut());
        for row in p.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
        }
        let mut l = ArrayD::<f32>::zeros(IxDyn(&[2]));
        softmax_xent(z.view(), y.view(), l.view_mut());
        assert!((l[[0]] - 1e4).abs() < 1.0, "{l}");
        assert!((l[[1]] - 0.407_606).abs() < 1e-5, "{l}");
    }

    #[test]
    fn fused_softmax_xent_matches_the_separate_loss_and_gradient() {
        // Row widths around the 4-lane reductions' remainders, soft and one-hot labels,
        // logits from tiny to 1e4 (where the loss is a difference of large numbers).
        for cols in 1..=13usize {
            for scale in [1e-3f32, 1.0, 30.0, 1e4] {
                let rows = 7;
                let z = ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| {
                    let (r, c) = (i[0] as f32, i[1] as f32);
                    scale * ((r * 1.7 + c * 2.3).sin())
                });
                let y = ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| {
                    if i[0] % 2 == 0 {
                        f32::from(u8::from(i[1] == i[0] % cols))
                    } else {
                        (1 + (i[0] + i[1]) % 3) as f32 / (2 * cols) as f32
                    }
                });
                let g = ArrayD::from_shape_fn(IxDyn(&[rows]), |i| 0.5 + i[0] as f32);
                let (mut l1, mut d1) = (ArrayD::<f32>::zeros(IxDyn(&[rows])), ArrayD::<f32>::zeros(z.raw_dim()));
                softmax_xent_with_grad(z.view(), y.view(), g.view(), l1.view_mut(), d1.view_mut());
                let (mut l2, mut d2) = (ArrayD::<f32>::zeros(IxDyn(&[rows])), ArrayD::<f32>::zeros(z.raw_dim()));
                softmax_xent(z.view(), y.view(), l2.view_mut());
                softmax_xent_grad(z.view(), y.view(), g.view(), d2.view_mut());
                for (a, b) in l1.iter().zip(&l2) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "loss {a} vs {b} (cols {cols}, scale {scale})");
                }
                for (a, b) in d1.iter().zip(&d2) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "grad {a} vs {b} (cols {cols}, scale {scale})");
                }
            }
        }
    }

    #[test]
    fn scalar_functions_are_stable() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0);
        assert!((sigmoid_xent(0.0, 1.0) - std::f32::consts::LN_2).abs() < 1e-7);
    }
}
