//! Softmax cross-entropy over narrow rows (at most 16 classes: the 10 digits, the 2 of a
//! binary head) with AVX-512F intrinsics, sixteen rows at a time, one row per lane.
//!
//! The portable row loops (`kernels::softmax_xent_with_grad` and
//! `index::sparse_softmax_xent_with_grad`) spend about 100 cycles on a 10-wide row: LLVM
//! vectorizes their loops 16 lanes wide, which such a row never fills, so each element
//! runs in the scalar remainder, and each row ends in horizontal sums. They were 9.5% of
//! the tutorial's step (M1, `perf record`, this Xeon, session 12). One masked vector per
//! row was no faster (four horizontal reductions a row; `docs/decisions.md`). Here a
//! block of 16 rows is gathered column by column (lane `r` holds row `r`), so every
//! reduction over a row is a chain of vertical operations across the columns, `exp` and
//! `ln` run 16 rows at once through the runtime's own polynomials, the losses are one
//! contiguous store, and the gradient goes back through a register transpose, a masked store a row.
//!
//! Results agree with the portable rows to rounding (the sums run in another order).
//! The maximum skips NaN logits as `f32::max` does; a NaN or an infinity poisons its
//! row's loss and gradient the same way. The kernels take whole blocks of 16 rows and
//! say how many rows they did; the callers run the portable rows on the rest.

use std::arch::x86_64::*;

use crate::kernels::{exp, ln};

/// The widest row these kernels take.
pub(crate) const MAX_COLS: usize = 16;

/// Rows per block: one per lane.
const BLOCK: usize = 16;

/// `f` of every lane, through the runtime's scalar polynomial (`exp`, `ln`), which LLVM
/// vectorizes over the 16 lanes: the bits of `exp_inplace` and of the portable rows' `ln`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lanewise(v: __m512, f: impl Fn(f32) -> f32) -> __m512 {
    let mut a = [0.0f32; BLOCK];
    // SAFETY: `a` holds 16 floats; unaligned store and load.
    unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
    for x in &mut a {
        *x = f(*x);
    }
    // SAFETY: as above.
    unsafe { _mm512_loadu_ps(a.as_ptr()) }
}

/// The offsets of a block's 16 rows, `cols` apart.
#[inline]
#[target_feature(enable = "avx512f")]
fn row_offsets(cols: usize) -> __m512i {
    _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(cols as i32),
    )
}

/// A block's logits by column (`z[j]`: column `j` of 16 rows from `base`), each row's
/// maximum (NaN skipped: `max(v, m)` returns `m` where `v` is NaN), and the shifted
/// exponentials `e[j] = exp(z[j] - max)` with their sum.
///
/// # Safety
/// `base` must point at 16 rows of `cols <= 16` readable floats, `cols` apart.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn columns(
    base: *const f32,
    cols: usize,
    at: __m512i,
) -> ([__m512; MAX_COLS], __m512, [__m512; MAX_COLS], __m512) {
    let mut z = [_mm512_setzero_ps(); MAX_COLS];
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    for (j, zj) in z.iter_mut().enumerate().take(cols) {
        // SAFETY: row r's column j is base + r * cols + j, inside the block.
        *zj = unsafe { _mm512_i32gather_ps::<4>(_mm512_add_epi32(at, _mm512_set1_epi32(j as i32)), base) };
        m = _mm512_max_ps(*zj, m);
    }
    let mut e = [_mm512_setzero_ps(); MAX_COLS];
    let mut s = _mm512_setzero_ps();
    for j in 0..cols {
        e[j] = lanewise(_mm512_sub_ps(z[j], m), exp);
        s = _mm512_add_ps(s, e[j]);
    }
    (z, m, e, s)
}

/// Writes a block's 16 rows of `cols` floats from `base`, given by column (`d[j]` lane `r`
/// is row `r`'s element `j`): transposed in registers, then one masked store a row (the
/// first version scattered each column).
///
/// # Safety
/// `base` must point at 16 rows of `cols <= 16` writable floats, `cols` apart.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_rows(base: *mut f32, cols: usize, d: [__m512; MAX_COLS]) {
    let k = ((1u32 << cols) - 1) as __mmask16;
    for (r, row) in crate::sgemm::transpose16(d).iter().enumerate() {
        // SAFETY: row r's cols floats from base + r * cols are inside the block.
        unsafe { _mm512_mask_storeu_ps(base.add(r * cols), k, *row) };
    }
}

/// The whole blocks of 16 rows that the AVX-512 rows take, where they fit: rows of 1 to
/// 16 `cols`, `z` and `grad` of `loss.len()` rows, `g` of one float a row, and a CPU with
/// AVX-512F (the labels' length is the caller's to check).
fn whole_blocks(z: &[f32], g: &[f32], loss: &[f32], grad: &[f32], cols: usize) -> Option<usize> {
    let rows = loss.len();
    let fits = (1..=MAX_COLS).contains(&cols)
        && z.len() == rows * cols
        && grad.len() == z.len()
        && g.len() == rows
        && crate::sgemm::kernel() == crate::sgemm::Kernel::Avx512;
    fits.then_some(rows / BLOCK)
}

/// [`softmax_xent_with_grad`](crate::kernels::softmax_xent_with_grad) over the whole
/// blocks of 16 rows of `cols` floats: per row, the loss `lse * sum(y) - sum(y * z)`
/// into `loss` and `(softmax(z) * sum(y) - y) * g` into `grad`. Returns the rows done
/// (a multiple of 16; 0 where the CPU has no AVX-512F or `cols` is not 1 to 16).
pub(crate) fn softmax_xent_with_grad(
    z: &[f32],
    y: &[f32],
    g: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    cols: usize,
) -> usize {
    let Some(blocks) = whole_blocks(z, g, loss, grad, cols).filter(|_| y.len() == z.len()) else {
        return 0;
    };
    // SAFETY: AVX-512F was detected; `blocks` whole blocks of 16 rows of `cols` floats
    // lie inside `z`, `y` and `grad`, and 16 floats a block inside `g` and `loss`.
    unsafe { dense_blocks(z, y, g, loss, grad, cols, blocks) };
    blocks * BLOCK
}

/// # Safety
/// The CPU must have AVX-512F; the slices must hold `blocks` blocks (as the caller says).
#[target_feature(enable = "avx512f")]
unsafe fn dense_blocks(
    z: &[f32],
    y: &[f32],
    g: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    cols: usize,
    blocks: usize,
) {
    let at = row_offsets(cols);
    for b in 0..blocks {
        let (r0, base) = (b * BLOCK, b * BLOCK * cols);
        // SAFETY: block b's 16 rows (16 cols floats from `base`) lie inside `z`, `y`
        // and `grad`, its 16 floats from r0 inside `g` and `loss` (the caller's promise).
        unsafe {
            let (zc, m, e, s) = columns(z.as_ptr().add(base), cols, at);
            let lse = _mm512_add_ps(m, lanewise(s, ln));
            let (mut sy, mut syz) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut yc = [_mm512_setzero_ps(); MAX_COLS];
            for j in 0..cols {
                yc[j] =
                    _mm512_i32gather_ps::<4>(_mm512_add_epi32(at, _mm512_set1_epi32(j as i32)), y.as_ptr().add(base));
                sy = _mm512_add_ps(sy, yc[j]);
                syz = _mm512_add_ps(syz, _mm512_mul_ps(yc[j], zc[j]));
            }
            // sum(y * (lse - z)) = lse * sum(y) - sum(y * z), as the portable rows.
            _mm512_storeu_ps(loss.as_mut_ptr().add(r0), _mm512_sub_ps(_mm512_mul_ps(lse, sy), syz));
            let scale = _mm512_div_ps(sy, s);
            let gv = _mm512_loadu_ps(g.as_ptr().add(r0));
            let mut d = [_mm512_setzero_ps(); MAX_COLS];
            for j in 0..cols {
                d[j] = _mm512_mul_ps(_mm512_sub_ps(_mm512_mul_ps(e[j], scale), yc[j]), gv);
            }
            store_rows(grad.as_mut_ptr().add(base), cols, d);
        }
    }
}

/// [`sparse_softmax_xent_with_grad`](crate::kernels) over the whole blocks of 16 rows of
/// `cols` floats: per row, `lse - z[y]` into `loss` (NaN for an id past the row) and
/// `(softmax(z) - one_hot(y)) * g` into `grad` (no one-hot term for such an id). Returns
/// the rows done, as [`softmax_xent_with_grad`].
pub(crate) fn sparse_softmax_xent_with_grad(
    z: &[f32],
    y: &[u32],
    g: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    cols: usize,
) -> usize {
    let Some(blocks) = whole_blocks(z, g, loss, grad, cols).filter(|_| y.len() == loss.len()) else {
        return 0;
    };
    // SAFETY: as in `softmax_xent_with_grad`; `y` holds 16 ids a block.
    unsafe { sparse_blocks(z, y, g, loss, grad, cols, blocks) };
    blocks * BLOCK
}

/// # Safety
/// The CPU must have AVX-512F; the slices must hold `blocks` blocks (as the caller says).
#[target_feature(enable = "avx512f")]
unsafe fn sparse_blocks(
    z: &[f32],
    y: &[u32],
    g: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    cols: usize,
    blocks: usize,
) {
    let at = row_offsets(cols);
    for b in 0..blocks {
        let (r0, base) = (b * BLOCK, b * BLOCK * cols);
        // SAFETY: as in `dense_blocks`; `z[r * cols + id]` is gathered only where
        // `id < cols` (masked), inside row r.
        unsafe {
            let (_, m, e, s) = columns(z.as_ptr().add(base), cols, at);
            let ids = _mm512_loadu_si512(y.as_ptr().add(r0).cast());
            let valid = _mm512_cmplt_epu32_mask(ids, _mm512_set1_epi32(cols as i32));
            let zy = _mm512_mask_i32gather_ps::<4>(
                _mm512_set1_ps(f32::NAN),
                valid,
                _mm512_add_epi32(at, ids),
                z.as_ptr().add(base),
            );
            // (m + ln(s)) - z[y], as the portable rows; NaN where the id is past the row.
            let lse = _mm512_add_ps(m, lanewise(s, ln));
            _mm512_storeu_ps(loss.as_mut_ptr().add(r0), _mm512_sub_ps(lse, zy));
            let gv = _mm512_loadu_ps(g.as_ptr().add(r0));
            let scale = _mm512_div_ps(gv, s);
            let mut d = [_mm512_setzero_ps(); MAX_COLS];
            for (j, &ej) in e.iter().enumerate().take(cols) {
                let hot = _mm512_mask_cmpeq_epi32_mask(valid, ids, _mm512_set1_epi32(j as i32));
                let v = _mm512_mul_ps(ej, scale);
                d[j] = _mm512_mask_sub_ps(v, hot, v, gv);
            }
            store_rows(grad.as_mut_ptr().add(base), cols, d);
        }
    }
}
#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};

    use crate::sgemm::{Kernel, FORCE_KERNEL};

    /// Runs `f` with the kernel forced to `k`, then lifts the force.
    fn with<R>(k: Kernel, f: impl FnOnce() -> R) -> R {
        FORCE_KERNEL.with(|c| c.set(Some(k)));
        let r = f();
        FORCE_KERNEL.with(|c| c.set(None));
        r
    }

    /// Equal to rounding: both non-finite (an overflowing row can give inf one way and
    /// NaN, inf - inf, the other), or within a few ulp of the row's scale (the sums are
    /// reduced in another order).
    fn close(a: f32, b: f32, scale: f32) -> bool {
        (!a.is_finite() && !b.is_finite()) || a == b || (a - b).abs() <= 4e-7 * scale.max(1.0)
    }

    /// Rows of every width 1..=17 (17 falls back to the portable rows), 37 of them (two
    /// blocks of 16 and five rows left to the portable loops): random logits,
    /// then rows with a NaN, an infinity, all NaN, huge logits; dense labels that are
    /// distributions and that are not; sparse ids in range and past it.
    #[test]
    fn the_narrow_rows_give_the_portable_rows_numbers() {
        if !crate::sgemm::kernels().contains(&Kernel::Avx512) {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let mut s = 0x9e37_79b9u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        let mut checked = 0;
        for cols in 1..=17usize {
            let rows = 37;
            let mut z = Array2::from_shape_fn((rows, cols), |_| next() * 60.0 - 30.0);
            z[[1, 0]] = f32::NAN;
            z[[2, cols - 1]] = f32::INFINITY;
            z.row_mut(3).fill(f32::NAN);
            z.row_mut(4).mapv_inplace(|v| v * 1e37);
            z[[5, 0]] = f32::NEG_INFINITY;
            let mut y = Array2::from_shape_fn((rows, cols), |_| next());
            y.row_mut(6).mapv_inplace(|v| v * 3.0 - 1.0);
            let ids = Array1::from_shape_fn(rows, |r| {
                if r == 7 {
                    cols as u32 + 3
                } else {
                    (next() * cols as f32) as u32 % cols as u32
                }
            });
            let g = Array1::from_shape_fn(rows, |_| next() * 2.0 - 0.5);
            let dense = |k: Kernel| {
                with(k, || {
                    let (mut l, mut d) = (Array1::<f32>::zeros(rows), Array2::<f32>::zeros((rows, cols)));
                    crate::kernels::softmax_xent_with_grad(
                        z.view().into_dyn(),
                        y.view().into_dyn(),
                        g.view().into_dyn(),
                        l.view_mut().into_dyn(),
                        d.view_mut().into_dyn(),
                    );
                    (l, d)
                })
            };
            let sparse = |k: Kernel| {
                with(k, || {
                    let (mut l, mut d) = (Array1::<f32>::zeros(rows), Array2::<f32>::zeros((rows, cols)));
                    crate::index::sparse_softmax_xent_with_grad(
                        z.view().into_dyn(),
                        ids.view().into_dyn(),
                        g.view().into_dyn(),
                        l.view_mut().into_dyn(),
                        d.view_mut().into_dyn(),
                    );
                    (l, d)
                })
            };
            for (name, (l0, d0), (l1, d1)) in [
                ("dense", dense(Kernel::Portable), dense(Kernel::Avx512)),
                ("sparse", sparse(Kernel::Portable), sparse(Kernel::Avx512)),
            ] {
                for r in 0..rows {
                    // The size of the terms each result sums (their rounding, not the
                    // result's, bounds the difference): the loss's `lse * sum(y)` and
                    // `sum(y z)`, the gradient's `softmax * sum(y) * g` and `y g`.
                    let zmax = z.row(r).iter().filter(|v| v.is_finite()).fold(1.0f32, |m, v| m.max(v.abs()));
                    let ysum = if name == "dense" { y.row(r).iter().map(|v| v.abs()).sum::<f32>() } else { 1.0 };
                    let lscale = 2.0 * (zmax + cols as f32) * (ysum + 1.0);
                    let gscale = 2.0 * (ysum + 1.0) * (g[r].abs() + 1.0);
                    assert!(close(l0[r], l1[r], lscale), "{name} cols {cols} row {r}: loss {} vs {}", l0[r], l1[r]);
                    for c in 0..cols {
                        let (a, b) = (d0[[r, c]], d1[[r, c]]);
                        assert!(close(a, b, gscale), "{name} cols {cols} row {r} col {c}: grad {a} vs {b}");
                    }
                    if r >= 8 {
                        // An ordinary row: finite both ways.
                        assert!(l0[r].is_finite() && l1[r].is_finite(), "{name} cols {cols} row {r}");
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 17 * 37 * 2);
    }
}
