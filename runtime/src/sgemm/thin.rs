//! Thin products (one side of `c` at most [`THIN`] = 16 wide, like a 784 -> 10 layer):
//! the dot form (`a`'s rows contiguous) and the outer-product form (`a`'s columns
//! contiguous), which pack nothing but the thin operand. The tiles' kernels are in
//! [`avx2`](super::avx2) and [`avx512`](super::avx512).

#[cfg(target_arch = "x86_64")]
use super::avx2::{dot_avx2, outer_avx2, store_stripe_avx2, transpose_8x8};
#[cfg(target_arch = "x86_64")]
use super::avx512::{dot_avx512, outer_avx512, store_stripe_avx512, transpose_thin_avx512};
use super::dispatch::{avx2_fma, kernel, Direct, Kernel};
use super::driver::{aligned, block, Out, SCRATCH};
use super::epilogue::Epi;
use crate::ndarray::{ArrayView2, ArrayViewMut2};

/// The widest side of `c` that the thin kernels take.
pub(super) const THIN: usize = 16;
/// Most columns of `c` one thin tile computes (`2 x 6` or `16 x 6` accumulators: 12 of
/// the 16 AVX2 registers).
pub(super) const THIN_C: usize = 6;
/// Most rows of a dot-form tile (AVX-512: `4 x 6` accumulators, 24 of 32 registers).
pub(super) const DOT_ROWS: usize = 4;
/// Most columns of an AVX-512 dot-form tile of 2 rows (`2 x 12` accumulators): with
/// `THIN_C < n <= DOT_C` all of `b^T` is one group, so that each row of `a` is read once
/// (with 4 x 5 tiles, M1's forward read its 313 KB `x` twice from L2).
pub(super) const DOT_C: usize = 12;
/// A dot-form tile's results, `tile[r][j]`.
pub(super) type DotTile = [[f32; DOT_C]; DOT_ROWS];
/// Most rows of an outer-form tile (AVX-512: four 16-lane vectors by 6 columns, 24 of
/// 32 registers).
pub(super) const OUTER_ROWS: usize = 64;
/// Depth of a block of the dot form, which bounds the `b^T` block (`THIN x THIN_KB`,
/// at most 128 KiB) to L2 for very deep products. Measured on M1's forward (k = 784):
/// splitting k into blocks small enough for L1 (256, 392) was slower than the whole
/// depth, since every block adds a horizontal sum and a write-back per dot.
pub(super) const THIN_KB: usize = 2048;

/// Computes the product with a thin kernel if one fits (AVX2 + FMA, one side of `c` at
/// most [`THIN`] wide, and the operand along the wide side contiguous in one direction),
/// then `epi` over all of `c`; returns false, touching nothing, otherwise.
pub(super) fn thin(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    epi: Option<Epi<'_>>,
) -> bool {
    thin_src(alpha, a, b, beta, None, c, epi)
}

/// `c = alpha * a x b + beta * src` with a thin kernel, out of place: `src` is read where
/// `thin` reads `c`, and `c` only written. `src` must have `c`'s shape and strides;
/// returns false, touching nothing, where they differ or no thin kernel fits.
///
/// The plain-SGD guard's staged update (`w - lr * g` into scratch, checked, then swapped
/// in for the param) costs, this way, what the unguarded `w += -lr * g` costs, plus a
/// read of the result in L1: computed into scratch and then combined with `w`, it took
/// a pass over both (1.2 us of M1's 35, L2-bound).
pub fn thin_from(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: ArrayView2<'_, f32>,
    c: ArrayViewMut2<'_, f32>,
) -> bool {
    if src.dim() != c.dim() || src.strides() != c.strides() {
        return false;
    }
    thin_src(alpha, a, b, beta, Some(src.as_ptr()), c, None)
}

/// Whether a thin kernel takes this product: AVX2 + FMA, and [`thin_oriented`]'s forms
/// for `c` (long side along its rows) or `c^T`. Returns whether `c` is taken as it is
/// (`Some(true)`, its rows the long side) or transposed.
fn thin_fits(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>, c: &ArrayViewMut2<'_, f32>) -> Option<bool> {
    if !avx2_fma() {
        return None;
    }
    let (m, n) = c.dim();
    let k = a.dim().1;
    // The oriented a (`m x k`) of `thin_oriented`: its rows or its columns contiguous.
    let form = |rows: usize, rs: isize, cs: isize| (cs == 1 && k >= 32) || (rs == 1 && rows >= 16);
    if n <= THIN && n <= m {
        form(m, a.strides()[0], a.strides()[1]).then_some(true)
    } else if m <= THIN {
        form(n, b.strides()[1], b.strides()[0]).then_some(false)
    } else {
        None
    }
}

/// The thin product (as `sgemm` computes it) that also returns a bound of `|a|`: the OR of the bits of every element of
/// `a`, sign cleared (as an `f32`, at least the largest `|a|`; infinite or NaN where the
/// elements' exponents OR to all ones, e.g. for values both in [1, 2) and in [2, 4)).
/// It runs only where that costs one instruction a step of the tiles that read `a`
/// anyway: the AVX-512 dot form of 7 to 12 columns, each row of a row-major `a` read once
/// (M1's forward `x w`, 100 x 784 by 784 x 10); elsewhere it returns `None`, touching
/// nothing, and the caller computes the product as it would have.
///
/// The plain-SGD guard bounds the update `w - lr x^T dz` from it instead of staging the
/// update and reading it back (`docs/decisions.md`).
pub fn thin_bits(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, k) = a.dim();
        let n = b.dim().1;
        let fits = avx2_fma()
            && kernel() == Kernel::Avx512
            && b.dim().0 == k
            && c.dim() == (m, n)
            && n > THIN_C
            && n <= DOT_C
            && n <= m
            && a.strides()[1] == 1
            && k >= 32;
        if !fits {
            return None;
        }
        let mut bits = 0;
        thin_dot(Direct(()), alpha, a, b, beta, None, c, Some(&mut bits));
        Some(bits & 0x7fff_ffff)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (alpha, a, b, beta, c);
        None
    }
}

/// [`thin`] reading `beta * c` from `src` (same strides as `c`) where given.
fn thin_src(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: Option<*const f32>,
    mut c: ArrayViewMut2<'_, f32>,
    epi: Option<Epi<'_>>,
) -> bool {
    let Some(along_rows) = thin_fits(&a, &b, &c) else { return false };
    #[cfg(feature = "parallel")]
    if split_thin(alpha, a, b, beta, src, c.view_mut(), epi, along_rows) {
        return true;
    }
    thin_whole(alpha, a, b, beta, src, c.view_mut(), along_rows);
    // A thin c is small: the epilogue runs over all of it at once.
    if let Some(e) = &epi {
        e.apply(c, 0, 0);
    }
    true
}

/// The thin product [`thin_fits`] found, on this thread.
fn thin_whole(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: Option<*const f32>,
    c: ArrayViewMut2<'_, f32>,
    along_rows: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let proof = Direct(());
        // Reversing c's axes swaps its strides; `src`, with the same strides, the same.
        let taken = if along_rows {
            thin_oriented(proof, alpha, a, b, beta, src, c)
        } else {
            thin_oriented(proof, alpha, b.reversed_axes(), a.reversed_axes(), beta, src, c.reversed_axes())
        };
        assert!(taken, "thin_fits chose a thin kernel");
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (alpha, a, b, beta, src, c, along_rows);
        unreachable!("no thin kernel off x86-64");
    }
}

/// Thin products of at least this many multiply-adds are split across threads
/// (`parallel`): M3's 1024 -> 10 layer, its input gradient and its weight gradient
/// (2.6M each); M1's and M2's (at most 0.8M) stay on one thread.
#[cfg(feature = "parallel")]
const THIN_PARALLEL_MIN: usize = 1 << 21;

/// The unit of a split thin product along `c`'s long side: a multiple of every tile's
/// rows (the dot form's 2 or 4, the outer form's stripes of 64, 32, 16 and 8), so that
/// every row of a part gets the tile it gets in the whole product: the same bits.
#[cfg(feature = "parallel")]
const THIN_SPLIT_UNIT: usize = OUTER_ROWS;

/// With `parallel`: the thin product split along `c`'s long side (the rows of the
/// oriented `c`, each a dot or a column of outer products over the whole depth; never
/// along `k`), one part a thread, each with its epilogue; false where it is too small
/// (and nothing is touched). The depth blocking and the column groups depend only on
/// `k` and the thin side, the tiles' rows on the position along the long side, which
/// the parts' cuts at multiples of [`THIN_SPLIT_UNIT`] keep: the same bits as one
/// thread's whatever the thread count.
#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
fn split_thin(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: Option<*const f32>,
    c: ArrayViewMut2<'_, f32>,
    epi: Option<Epi<'_>>,
    along_rows: bool,
) -> bool {
    use crate::ndarray::{s, Axis};
    use std::sync::Mutex;
    let ((m, k), n) = (a.dim(), b.dim().1);
    #[cfg(test)]
    if super::FORCE_SERIAL.with(|f| f.get()) {
        return false;
    }
    if m * n * k < THIN_PARALLEL_MIN {
        return false;
    }
    let threads = super::threads::count();
    let len = if along_rows { m } else { n };
    let parts = threads.min(len / (2 * THIN_SPLIT_UNIT)).min(super::MAX_PARTS);
    if parts < 2 {
        return false;
    }
    let cut = |i: usize| (len * i / parts).next_multiple_of(THIN_SPLIT_UNIT).min(len);
    let axis = if along_rows { Axis(0) } else { Axis(1) };
    let step = c.strides()[axis.index()];
    let mut cs: [Option<ArrayViewMut2<'_, f32>>; super::MAX_PARTS] = std::array::from_fn(|_| None);
    let mut rest = c;
    for (i, slot) in cs.iter_mut().enumerate().take(parts) {
        let (part, more) = rest.split_at(axis, cut(i + 1) - cut(i));
        *slot = Some(part);
        rest = more;
    }
    let cs: [Mutex<Option<ArrayViewMut2<'_, f32>>>; super::MAX_PARTS] = cs.map(Mutex::new);
    // The address of `src` (a pointer is not `Sync`); each part reads its own rows of it.
    let src = src.map(|p| p as usize);
    #[cfg(test)]
    let forced = super::FORCE_KERNEL.with(|f| f.get());
    let part = |i: usize| {
        #[cfg(test)]
        super::FORCE_KERNEL.with(|f| f.set(forced));
        let mut c = cs[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each part runs once");
        let (lo, hi) = (cut(i), cut(i + 1));
        // `src` has c's strides: this part's first element is `lo` steps along `axis`.
        let src = src.map(|p| (p as *const f32).wrapping_offset(lo as isize * step));
        let (a, b, at) = if along_rows {
            (a.slice_move(s![lo..hi, ..]), b, (lo, 0))
        } else {
            (a, b.slice_move(s![.., lo..hi]), (0, lo))
        };
        thin_whole(alpha, a, b, beta, src, c.view_mut(), along_rows);
        if let Some(e) = epi {
            e.offset(at.0, at.1).apply(c, 0, 0);
        }
    };
    super::threads::run(parts, &part);
    true
}

/// Thin product with `n <= THIN`: picks the dot or the outer-product form from `a`'s
/// layout.
#[cfg(target_arch = "x86_64")]
pub(super) fn thin_oriented(
    proof: Direct,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: Option<*const f32>,
    c: ArrayViewMut2<'_, f32>,
) -> bool {
    let (m, k) = a.dim();
    if a.strides()[1] == 1 && k >= 32 {
        thin_dot(proof, alpha, a, b, beta, src, c, None);
        true
    } else if a.strides()[0] == 1 && m >= 16 {
        thin_outer(proof, alpha, a, b, beta, src, c);
        true
    } else {
        false
    }
}

/// Splits `n` columns into groups of at most [`THIN_C`], as even as possible; returns
/// the group width (the last group takes the rest).
pub(super) fn thin_groups(n: usize) -> usize {
    n.div_ceil(n.div_ceil(THIN_C))
}

/// `c = alpha * a x b + beta * c` where `a`'s rows are contiguous: every `c[i, j]` is a
/// dot product of row `i` of `a` with column `j` of `b`, which is first copied into a
/// contiguous row of scratch (`b^T`, `n x k`) unless it already is one.
///
/// With `bits`, also ORs into it the bits of every element of `a` (see [`thin_bits`]).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) fn thin_dot(
    proof: Direct,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: Option<*const f32>,
    mut c: ArrayViewMut2<'_, f32>,
    mut bits: Option<&mut u32>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let lda = a.strides()[0];
    // The first depth block reads `beta * src`, the later ones add to what it wrote.
    let inplace = Out::of(&mut c);
    let first = inplace.reading(src);
    // Rows of a tile: 2 x 6 accumulators of the 16 AVX2 registers, 4 x 6 of AVX-512's 32,
    // or, with AVX-512 and 7 to 12 columns, 2 x n (one group: `a` read once).
    let (tall, width) = match kernel() {
        Kernel::Avx512 if n > THIN_C && n <= DOT_C => (2, n),
        Kernel::Avx512 => (DOT_ROWS, thin_groups(n)),
        _ => (2, thin_groups(n)),
    };
    let mut run = |bt: *const f32, ldb: isize| {
        // Depth blocks (see THIN_KB); the later blocks add to c.
        let kb = block(k, THIN_KB, 8);
        for p0 in (0..k).step_by(kb) {
            let kl = kb.min(k - p0);
            let (beta, out) = if p0 == 0 { (beta, &first) } else { (1.0, &inplace) };
            // Columns outer: one group's rows of b^T (k x 5 or 6, about 16 KiB for
            // k = 784) stay in L1 while the rows of a stream past them from L2; with rows
            // outer, all of b^T (31 KiB) and a's rows did not fit in L1 together.
            for j0 in (0..n).step_by(width) {
                let cols = width.min(n - j0);
                for i0 in (0..m).step_by(tall) {
                    let rows = tall.min(m - i0);
                    let mut tile: DotTile = [[0.0; DOT_C]; DOT_ROWS];
                    // SAFETY: rows i0..i0 + rows of `a` (k contiguous elements each, lda
                    // apart) and rows j0..j0 + cols of `bt` (k contiguous elements, ldb
                    // apart) are inside live memory, and p0 + kl <= k; `proof` says
                    // avx2 + fma are present.
                    unsafe {
                        let ap = a.as_ptr().offset(i0 as isize * lda).add(p0);
                        let bp = bt.offset(j0 as isize * ldb).add(p0);
                        dot_tile(proof, rows, cols, kl, ap, lda, bp, ldb, &mut tile, bits.as_deref_mut());
                        // SAFETY: i0 + rows <= m, j0 + cols <= n inside the live `c`.
                        store_small(out, i0, j0, rows, cols, |r, j| tile[r][j], alpha, beta);
                    }
                }
            }
        }
    };
    if b.strides()[0] == 1 {
        // b's columns are already contiguous (b is a transposed row-major matrix).
        run(b.as_ptr(), b.strides()[1]);
        return;
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let bt = aligned(&mut scratch, n * k);
        let (rs, cs) = (b.strides()[0], b.strides()[1]);
        // Where b's rows are contiguous, blocks transposed in registers (with AVX-512 16
        // rows of every column at once, else 8 x 8 blocks); the rest gathered a column
        // of b into a row of bt at a time (strided reads, sequential writes measured
        // faster than the other way round).
        let (jd, pd) = if cs == 1 && kernel() == Kernel::Avx512 {
            // SAFETY: `kernel()` says AVX-512F is present; b is k x n (n <= THIN) with rows
            // rs apart and unit column stride, bt is n x k.
            (n, unsafe { transpose_thin_avx512(b.as_ptr(), rs, k, n, bt) })
        } else if cs == 1 {
            // SAFETY: `proof` says avx2 is present; b is k x n with rows rs apart and
            // unit column stride, bt is n x k.
            unsafe { transpose8(proof, b.as_ptr(), rs, k, n, bt) }
        } else {
            (0, 0)
        };
        for (j, dst) in bt.chunks_exact_mut(k).enumerate() {
            // SAFETY: (p, j) for p < k, j < n is an element of the live view `b`.
            let col = unsafe { b.as_ptr().offset(j as isize * cs) };
            let from = if j < jd { pd } else { 0 };
            for (p, d) in dst.iter_mut().enumerate().skip(from) {
                *d = unsafe { *col.offset(p as isize * rs) };
            }
        }
        run(bt.as_ptr(), k as isize);
    });
}

/// `bt[j * k + p] = b[p * rs + j]` for the `j < jd`, `p < pd` that whole 8 x 8 blocks
/// cover (`jd`, `pd` the multiples of 8 below `n`, `k`), which it returns.
///
/// # Safety
/// `b` must hold `k` rows of `n` contiguous elements, `rs` apart; `bt.len() >= n * k`.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn transpose8(
    _proof: Direct,
    b: *const f32,
    rs: isize,
    k: usize,
    n: usize,
    bt: &mut [f32],
) -> (usize, usize) {
    assert!(bt.len() >= n * k);
    let (jd, pd) = (n / 8 * 8, k / 8 * 8);
    let out = bt.as_mut_ptr();
    for j0 in (0..jd).step_by(8) {
        for p0 in (0..pd).step_by(8) {
            transpose_8x8(b.offset(p0 as isize * rs).add(j0), rs, out.add(j0 * k + p0), k);
        }
    }
    (jd, pd)
}

/// `rows x cols` dot products of length `k`: row `r` of `a` (at `a + r * lda`) with row
/// `j` of `bt` (at `bt + j * ldb`), into `tile[r][j]`; with AVX-512 when `rows > 2` or
/// `cols > THIN_C`. With `bits`, also ORs into it the bits of every element of those
/// rows of `a` (in the AVX-512 tiles of `cols > THIN_C`, the only ones [`thin_bits`]
/// asks it of, one instruction a step; elsewhere by a second read of the rows).
///
/// # Safety
/// Those rows must be readable for `k` elements each; `rows <= 2` and `cols <= THIN_C`,
/// or, on a CPU with AVX-512F, `rows <= DOT_ROWS` and `cols <= THIN_C` or `rows <= 2`
/// and `cols <= DOT_C`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn dot_tile(
    _proof: Direct,
    rows: usize,
    cols: usize,
    k: usize,
    a: *const f32,
    lda: isize,
    bt: *const f32,
    ldb: isize,
    tile: &mut DotTile,
    bits: Option<&mut u32>,
) {
    macro_rules! go {
        (dot_avx2: $($r:literal, $c:literal);*) => {
            match (rows, cols) {
                $(($r, $c) => dot_avx2::<$r, $c>(k, a, lda, bt, ldb, tile),)*
                _ => unreachable!("thin tile {rows} x {cols}"),
            }
        };
        (dot_avx512, $b:literal, $bits:ident: $($r:literal, $c:literal);*) => {
            match (rows, cols) {
                $(($r, $c) => dot_avx512::<$r, $c, $b>(k, a, lda, bt, ldb, tile, &mut *$bits),)*
                _ => unreachable!("thin tile {rows} x {cols}"),
            }
        };
    }
    let unused = &mut 0;
    if cols > THIN_C {
        match bits {
            Some(bits) => {
                go!(dot_avx512, true, bits: 1, 7; 1, 8; 1, 9; 1, 10; 1, 11; 1, 12; 2, 7; 2, 8; 2, 9; 2, 10; 2, 11; 2, 12)
            }
            None => {
                go!(dot_avx512, false, unused: 1, 7; 1, 8; 1, 9; 1, 10; 1, 11; 1, 12; 2, 7; 2, 8; 2, 9; 2, 10; 2, 11; 2, 12)
            }
        }
        return;
    }
    if rows <= 2 {
        go!(dot_avx2: 1, 1; 1, 2; 1, 3; 1, 4; 1, 5; 1, 6; 2, 1; 2, 2; 2, 3; 2, 4; 2, 5; 2, 6)
    } else {
        go!(dot_avx512, false, unused: 3, 1; 3, 2; 3, 3; 3, 4; 3, 5; 3, 6; 4, 1; 4, 2; 4, 3; 4, 4; 4, 5; 4, 6)
    }
    if let Some(bits) = bits {
        for r in 0..rows {
            // SAFETY: the caller's contract: row r of `a` holds k readable elements.
            let row = std::slice::from_raw_parts(a.offset(r as isize * lda), k);
            *bits |= row.iter().fold(0, |o, v| o | v.to_bits());
        }
    }
}

/// `c = alpha * a x b + beta * c` where `a`'s columns are contiguous (`a` is a
/// transposed view): a `16 x C` block of `c` (with AVX-512 up to `64 x C`) accumulates,
/// for each `p`, column `p` of `a` (two vectors, or up to four of 16 lanes, read in
/// place) times the broadcast `b[p, j0..j0 + C]`.
#[cfg(target_arch = "x86_64")]
pub(super) fn thin_outer(
    proof: Direct,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    src: Option<*const f32>,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let lda = a.strides()[1];
    let (brs, bcs) = (b.strides()[0], b.strides()[1]);
    let out = Out::of(&mut c).reading(src);
    let width = thin_groups(n);
    // The stripe's columns (`cols[j][r]` = c[i0 + r, j]), every group's tile written
    // into its columns, and the stripe's rows for the write-back. Every kernel
    // overwrites what is then read, so both are zeroed once per call, not once per tile
    // (a memset per tile was 2.5% of M1's step).
    let mut cols = [[0.0f32; OUTER_ROWS]; THIN + THIN_C];
    let mut rows_buf = [0.0f32; OUTER_ROWS * THIN + 8];
    let wide = kernel() == Kernel::Avx512;
    // A row-major c without gaps (a weight, as in M1's `w -= lr x^T g`): the stripe is
    // one contiguous run of c, written back with vector code after a transpose.
    let contiguous = out.cs == 1 && out.rs == n as isize;
    let mut i0 = 0;
    while i0 < m {
        // 16 rows a tile (with AVX-512: 64, then 32, then 16), then one of 8, then single
        // rows (the vectors' lanes are rows).
        let rows = match m - i0 {
            64.. if wide => 64,
            32.. if wide => 32,
            16.. => 16,
            8.. => 8,
            _ => 1,
        };
        for j0 in (0..n).step_by(width) {
            let w = width.min(n - j0);
            let tile: &mut [[f32; OUTER_ROWS]; THIN_C] =
                (&mut cols[j0..j0 + THIN_C]).try_into().expect("THIN_C columns");
            // SAFETY: column p of `a` has rows i0..i0 + rows at `ap + p * lda` (unit row
            // stride), and b[p, j0 + j] is at `bp + p * brs + j * bcs`, all inside the
            // live views for p < k, j < cols; `proof` says avx2 + fma are present.
            unsafe {
                let ap = a.as_ptr().add(i0);
                let bp = b.as_ptr().offset(j0 as isize * bcs);
                if rows == 1 {
                    for (j, t) in tile.iter_mut().enumerate().take(w) {
                        let mut s = 0.0;
                        for p in 0..k as isize {
                            s += *ap.offset(p * lda) * *bp.offset(p * brs + j as isize * bcs);
                        }
                        t[0] = s;
                    }
                } else {
                    outer_tile(proof, wide, rows, w, k, ap, lda, bp, brs, bcs, tile);
                }
                if rows == 1 || !contiguous {
                    // SAFETY: i0 + rows <= m, j0 + w <= n inside the live `c`.
                    store_small(&out, i0, j0, rows, w, |r, j| tile[j][r], alpha, beta);
                }
            }
        }
        if rows > 1 && contiguous {
            // SAFETY: rows i0..i0 + rows of the live, unaliased `c` are the `rows * n`
            // elements from `out.ptr + i0 * n` (contiguous); `proof` as above, and
            // `wide` says AVX-512F is present.
            unsafe {
                if wide && rows.is_multiple_of(16) {
                    store_stripe_avx512(&out, i0, rows, n, &cols, alpha, beta);
                } else {
                    store_stripe_avx2(&out, i0, rows, n, &cols, &mut rows_buf, alpha, beta);
                }
            }
        }
        i0 += rows;
    }
}

/// Dispatches the `rows x cols` outer-product tile to its fixed-size kernel: AVX-512 if
/// `wide`, AVX2 otherwise.
///
/// # Safety
/// As [`outer_avx2`] (and the CPU must support AVX-512F if `wide`); `rows` is 8 or 16,
/// or with `wide` 16, 32 or 64; `cols <= THIN_C`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn outer_tile(
    _proof: Direct,
    wide: bool,
    rows: usize,
    cols: usize,
    k: usize,
    a: *const f32,
    lda: isize,
    b: *const f32,
    brs: isize,
    bcs: isize,
    tile: &mut [[f32; OUTER_ROWS]; THIN_C],
) {
    macro_rules! go {
        ($kern:ident, $lanes:literal: $($v:literal, $c:literal);*) => {
            match (rows / $lanes, cols) {
                $(($v, $c) => $kern::<$v, $c>(k, a, lda, b, brs, bcs, tile),)*
                _ => unreachable!("thin tile {rows} x {cols}"),
            }
        };
    }
    if wide && rows >= 16 {
        go!(outer_avx512, 16: 1, 1; 1, 2; 1, 3; 1, 4; 1, 5; 1, 6; 2, 1; 2, 2; 2, 3; 2, 4; 2, 5; 2, 6;
            4, 1; 4, 2; 4, 3; 4, 4; 4, 5; 4, 6)
    } else {
        go!(outer_avx2, 8: 1, 1; 1, 2; 1, 3; 1, 4; 1, 5; 1, 6; 2, 1; 2, 2; 2, 3; 2, 4; 2, 5; 2, 6)
    }
}

/// Defines an outer-product tile kernel for one vector width: `V` vectors of `$lanes`
/// rows by `C` columns; for each `p`, `V` vectors of column `p` of `a` times the
/// broadcast `b[p, j]` of each column. The AVX2 and AVX-512 instances differ only in
/// their intrinsics.
macro_rules! outer_kernel {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal,
     $zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        // Index loops over the fixed register tile read clearest here.
        #[allow(clippy::needless_range_loop)]
        pub(super) unsafe fn $name<const V: usize, const C: usize>(
            k: usize,
            a: *const f32,
            lda: isize,
            b: *const f32,
            brs: isize,
            bcs: isize,
            tile: &mut [[f32; OUTER_ROWS]; THIN_C],
        ) {
            use std::arch::x86_64::*;
            let mut acc = [[$zero(); V]; C];
            for p in 0..k as isize {
                let col = a.offset(p * lda);
                let mut av = [$zero(); V];
                for (v, x) in av.iter_mut().enumerate() {
                    *x = $load(col.add($lanes * v));
                }
                let brow = b.offset(p * brs);
                for (j, accj) in acc.iter_mut().enumerate() {
                    let x = $set1(*brow.offset(j as isize * bcs));
                    for v in 0..V {
                        accj[v] = $fma(av[v], x, accj[v]);
                    }
                }
            }
            for (j, accj) in acc.iter().enumerate() {
                for (v, x) in accj.iter().enumerate() {
                    $store(tile[j].as_mut_ptr().add($lanes * v), *x);
                }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use outer_kernel;

/// `c[i0 + r, j0 + j] = alpha * value(r, j) + beta * c[..]` for `r < rows`, `j < cols`;
/// `beta == 0` does not read `c`.
///
/// # Safety
/// `out` must point to a live view, not aliased elsewhere, that holds those elements,
/// and `out.src` to `out.ptr` or to a live matrix of `out`'s layout that `out` does not
/// overlap (read where `beta != 0`).
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_small(
    out: &Out,
    i0: usize,
    j0: usize,
    rows: usize,
    cols: usize,
    value: impl Fn(usize, usize) -> f32,
    alpha: f32,
    beta: f32,
) {
    // The four cases separately, so that each inner loop is branch-free with a known
    // column step.
    let cs = out.cs;
    for r in 0..rows {
        let at = (i0 + r) as isize * out.rs + j0 as isize * cs;
        let (row, from) = (out.ptr.offset(at), out.src.offset(at));
        match (cs == 1, beta == 0.0) {
            (true, true) => (0..cols).for_each(|j| *row.add(j) = alpha * value(r, j)),
            (true, false) => (0..cols).for_each(|j| *row.add(j) = alpha * value(r, j) + beta * *from.add(j)),
            (false, true) => (0..cols).for_each(|j| *row.offset(j as isize * cs) = alpha * value(r, j)),
            (false, false) => (0..cols).for_each(|j| {
                let o = j as isize * cs;
                *row.offset(o) = alpha * value(r, j) + beta * *from.offset(o);
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndarray::Array2;

    fn matrix(m: usize, n: usize, seed: u32) -> Array2<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        Array2::from_shape_fn((m, n), |_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    /// `thin_bits` gives the bits `thin` gives, and the OR of `|a|`'s bits, on every tile
    /// shape it takes (1 and 2 rows, 7 to 12 columns, depths with and without a masked
    /// tail); `None`, touching nothing, where it does not fit.
    #[test]
    fn thin_bits_is_thin_plus_the_or_of_a() {
        if kernel() != Kernel::Avx512 {
            eprintln!("skipped: thin_bits needs AVX-512F, which this CPU lacks");
            return;
        }
        for (m, k, n) in [(100, 784, 10), (13, 37, 7), (12, 64, 12), (31, 33, 11), (8, 200, 8)] {
            let mut a = matrix(m, k, (m * k) as u32);
            a[[m - 1, k - 1]] = 1.75;
            a[[m / 2, k / 3]] = -1.5;
            let b = matrix(k, n, 7);
            let mut want = Array2::zeros((m, n));
            assert!(thin(1.0, a.view(), b.view(), 0.0, want.view_mut(), None));
            let mut got = Array2::from_elem((m, n), f32::NAN);
            let bits = thin_bits(1.0, a.view(), b.view(), 0.0, got.view_mut()).expect("fits");
            let or = a.iter().fold(0u32, |o, v| o | v.to_bits()) & 0x7fff_ffff;
            assert_eq!(bits, or, "{m} x {k} x {n}");
            assert!(f32::from_bits(bits) >= 1.75);
            let same = got.iter().zip(want.iter()).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{m} x {k} x {n}");
        }
        // Too few columns, more columns than rows, a transposed `a`: not taken.
        let a = matrix(20, 64, 3);
        for n in [6, 13] {
            let b = matrix(64, n, 4);
            let mut c = Array2::from_elem((20, n), 9.0);
            assert_eq!(thin_bits(1.0, a.view(), b.view(), 0.0, c.view_mut()), None);
            assert!(c.iter().all(|&v| v == 9.0));
        }
        let (at, b) = (matrix(64, 20, 5), matrix(64, 10, 6));
        let mut c = Array2::zeros((20, 10));
        assert_eq!(thin_bits(1.0, at.t(), b.view(), 0.0, c.view_mut()), None);
        let (a, b) = (matrix(8, 64, 5), matrix(64, 10, 6));
        let mut c = Array2::zeros((8, 10));
        assert_eq!(thin_bits(1.0, a.view(), b.view(), 0.0, c.view_mut()), None);
    }
}
