//! The AVX2 + FMA kernels (8-lane vectors, 16 registers): the `MR x NR` micro-kernel
//! over a column of tiles ([`panels_avx2`]), the register transposes that packing and
//! the thin products' write-back use, and the thin products' dot and outer-product tiles.
//! Every function here is `#[target_feature(enable = "avx2,fma")]` and `unsafe`: its
//! callers check [`Kernel`](super::Kernel) first.

use super::driver::{Out, Sink, MR, NR, PREFETCH_STEPS};
use super::thin::{outer_kernel, DotTile, OUTER_ROWS, THIN, THIN_C};

/// One `MR x NR` tile into `acc`: [`panels_avx2`] over one panel of `a`, packed or (if
/// not `PACKED`) read in place with strides `sa`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` as [`panels_avx2`] for one panel, `b` holds
/// `kc * NR` elements.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn micro_avx2<const PACKED: bool>(
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    b: &[f32],
    acc: Sink<'_>,
) {
    assert!(b.len() >= kc * NR);
    match acc {
        Sink::Tile(t) => {
            panels_avx2::<MR, PACKED>(kc, a, sa, 1, b.as_ptr(), t.as_mut_ptr().cast(), NR as isize, 1.0, 0.0)
        }
        Sink::Out { at, rs, alpha, beta } => panels_avx2::<MR, PACKED>(kc, a, sa, 1, b.as_ptr(), at, rs, alpha, beta),
    }
}

/// `c = alpha * a x b + beta * c` for the `mc` rows of `c` at `c` (rows `rs` apart,
/// `NR` contiguous columns), `b` one packed panel, `a` packed (`mc.div_ceil(MR)`
/// panels of `kc x MR`) or, if not `PACKED`, the `mc x kc` block of a row-major `a`
/// read in place (rows `lda` apart): the full tiles in one pass of [`panels_avx2`],
/// then the bottom edge with a kernel of just its rows.
///
/// # Safety
/// As [`panels_avx2`] for those `mc` rows.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn column_avx2<const PACKED: bool>(
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    mc: usize,
    b: &[f32],
    c: *mut f32,
    rs: isize,
    alpha: f32,
    beta: f32,
) {
    assert!(b.len() >= kc * NR);
    let full = mc / MR;
    let b = b.as_ptr();
    panels_avx2::<MR, PACKED>(kc, a, sa, full, b, c, rs, alpha, beta);
    let edge = if PACKED { a.wrapping_add(full * kc * MR) } else { a.wrapping_offset((full * MR) as isize * sa.0) };
    let c = c.wrapping_offset((full * MR) as isize * rs);
    match mc % MR {
        1 => panels_avx2::<1, PACKED>(kc, edge, sa, 1, b, c, rs, alpha, beta),
        2 => panels_avx2::<2, PACKED>(kc, edge, sa, 1, b, c, rs, alpha, beta),
        3 => panels_avx2::<3, PACKED>(kc, edge, sa, 1, b, c, rs, alpha, beta),
        4 => panels_avx2::<4, PACKED>(kc, edge, sa, 1, b, c, rs, alpha, beta),
        5 => panels_avx2::<5, PACKED>(kc, edge, sa, 1, b, c, rs, alpha, beta),
        _ => {}
    }
}

/// The AVX2 + FMA micro-kernel over `count` consecutive panels of `a` (packed: each
/// `kc x MR`, the next starting `kc * MR` after; or, if not `PACKED`, `MR` rows of a
/// row-major `a`, rows `lda` apart) against one packed panel of `b`:
/// `c = alpha * a_t x b + beta * c` for the `t`-th tile of `c`, `R` rows (the first `R`
/// of the panel's `MR`, for a bottom edge) by `NR` contiguous columns at
/// `c + t * MR * rs`, rows `rs` apart; `beta == 0` does not read `c`. Looping over the
/// panels here rather than calling a kernel per tile keeps the accumulators in
/// registers from the last step to the write-back, with no call or spill between
/// tiles: M2's step went from 1.681 to 1.625 ms, M3's from 32.6 to 31.4 ms (best of
/// five interleaved runs); the `R`-row edge kernel saved another 1% on M2 (128 rows).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` must hold `count * kc * MR` readable
/// elements (packed) or `count * MR` rows of `kc` (in place), `b` `kc * NR`, and the
/// `count` tiles of `c` must be writable; `R <= MR`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panels_avx2<const R: usize, const PACKED: bool>(
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    count: usize,
    b: *const f32,
    c: *mut f32,
    rs: isize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::x86_64::*;
    let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
    let head = kc.saturating_sub(PREFETCH_STEPS);
    // Element (r, p) of panel t: packed, `MR` values per step; in place, row r of a
    // row-major `a` (rows `lda` apart).
    let (step, ars, acs) = if PACKED { ((kc * MR) as isize, 1, MR as isize) } else { (MR as isize * sa.0, sa.0, sa.1) };
    for t in 0..count {
        let a = a.offset(t as isize * step);
        let c = c.offset((t * MR) as isize * rs);
        let z = _mm256_setzero_ps();
        let mut acc = [[z; 2]; R];
        macro_rules! steps {
            ($range:expr) => {
                for p in $range {
                    let (ap, bp) = (a.offset(p as isize * acs), b.add(p * NR));
                    let b0 = _mm256_loadu_ps(bp);
                    let b1 = _mm256_loadu_ps(bp.add(8));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*ap.offset(r as isize * ars));
                        row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                        row[1] = _mm256_fmadd_ps(x, b1, row[1]);
                    }
                }
            };
        }
        steps!(0..head);
        for r in 0..R as isize {
            // A prefetch never faults, whatever the address.
            let row = c.wrapping_offset(r * rs) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(4 * NR - 4));
        }
        steps!(head..kc);
        for (r, [lo, hi]) in acc.into_iter().enumerate() {
            let p = c.offset(r as isize * rs);
            let (lo, hi) = (_mm256_mul_ps(va, lo), _mm256_mul_ps(va, hi));
            if beta == 0.0 {
                _mm256_storeu_ps(p, lo);
                _mm256_storeu_ps(p.add(8), hi);
            } else {
                _mm256_storeu_ps(p, _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), lo));
                _mm256_storeu_ps(p.add(8), _mm256_fmadd_ps(vb, _mm256_loadu_ps(p.add(8)), hi));
            }
        }
    }
}

/// See [`pack_a_rows_avx2`](super::pack::pack_a_rows_avx2).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_a_rows_avx2_impl(row0: *const f32, rs: isize, kc: usize, panel: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    assert!(panel.len() >= kc * MR);
    let blocks = kc / 8;
    let dst = panel.as_mut_ptr();
    for blk in 0..blocks {
        let p0 = blk * 8;
        let ld = |r: isize| _mm256_loadu_ps(row0.offset(r * rs).add(p0));
        let (r0, r1, r2, r3, r4, r5) = (ld(0), ld(1), ld(2), ld(3), ld(4), ld(5));
        // Rows 0-3: the classic 4 x 8 step of an 8 x 8 transpose; s[q] holds, in its low
        // half, rows 0-3 of column q and, in its high half, rows 0-3 of column q + 4.
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let s = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ];
        // Rows 4-5: pairs (r4[q], r5[q]); u[0] holds columns 0, 1 | 4, 5 and u[1]
        // columns 2, 3 | 6, 7, two lanes each.
        let u = [_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5)];
        for q in 0..8 {
            let d = dst.add((p0 + q) * MR);
            let (top, pair) = if q < 4 {
                (_mm256_castps256_ps128(s[q]), _mm256_castps256_ps128(u[q / 2]))
            } else {
                (_mm256_extractf128_ps::<1>(s[q - 4]), _mm256_extractf128_ps::<1>(u[(q - 4) / 2]))
            };
            _mm_storeu_ps(d, top);
            if q % 2 == 0 {
                _mm_storel_pd(d.add(4) as *mut f64, _mm_castps_pd(pair));
            } else {
                _mm_storeh_pd(d.add(4) as *mut f64, _mm_castps_pd(pair));
            }
        }
    }
    blocks * 8
}

/// `dst[q * ds + r] = src[r * ss + q]` for `r, q < 8`: one 8 x 8 block transposed in
/// registers (the classic unpack / shuffle / permute sequence).
///
/// # Safety
/// The CPU must support AVX2 ([`avx2_fma`](super::dispatch::avx2_fma)); the 8 rows of 8 contiguous elements at
/// `src` (`ss` apart) must be readable and those at `dst` (`ds` apart) writable.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn transpose_8x8(src: *const f32, ss: isize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    let ld = |r: isize| _mm256_loadu_ps(src.offset(r * ss));
    let (r0, r1, r2, r3, r4, r5, r6, r7) = (ld(0), ld(1), ld(2), ld(3), ld(4), ld(5), ld(6), ld(7));
    let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
    let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
    let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
    let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let cols = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (q, v) in cols.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(q * ds), v);
    }
}

/// The AVX2 dot tile for fixed `R x C` (the accumulators stay in registers).
///
/// # Safety
/// As [`dot_tile`](super::thin::dot_tile), and the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
// Index loops over the fixed register tile read clearest here.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn dot_avx2<const R: usize, const C: usize>(
    k: usize,
    a: *const f32,
    lda: isize,
    bt: *const f32,
    ldb: isize,
    tile: &mut DotTile,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let k8 = k / 8 * 8;
    let mut p = 0;
    while p < k8 {
        let mut av = [_mm256_setzero_ps(); R];
        for (r, v) in av.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(a.offset(r as isize * lda).add(p));
        }
        for j in 0..C {
            let bv = _mm256_loadu_ps(bt.offset(j as isize * ldb).add(p));
            for r in 0..R {
                acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
            }
        }
        p += 8;
    }
    for r in 0..R {
        for j in 0..C {
            // Horizontal sum of the 8 lanes, then the k % 8 tail.
            let v = acc[r][j];
            let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
            let mut s = _mm_cvtss_f32(s1);
            for q in k8..k {
                s += *a.offset(r as isize * lda).add(q) * *bt.offset(j as isize * ldb).add(q);
            }
            tile[r][j] = s;
        }
    }
}

/// Writes a stripe of the outer form's `c` (`rows`, a multiple of 8 up to `OUTER_ROWS`, of a contiguous
/// row-major `c`, `n` <= `THIN` wide) from its columns: `c[i0 + r, j] = alpha *
/// cols[j][r] + beta * c[..]`. The 8 x 8 blocks of `cols` are transposed into `buf`
/// with rows `n` apart (a block's 8 lanes may run into the next row's first columns,
/// which the blocks of lower columns, written after, overwrite), then the stripe is one
/// contiguous vector pass. Writing an element at a time down the columns
/// (`store_small`) took 8% of M1's step.
///
/// # Safety
/// The CPU must support AVX2 + FMA; `out` must be a live, unaliased, row-major view
/// with rows `n` apart that holds rows `i0..i0 + rows`, and `out.src` either `out.ptr`
/// or a live matrix of the same layout that `out` does not overlap.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_stripe_avx2(
    out: &Out,
    i0: usize,
    rows: usize,
    n: usize,
    cols: &[[f32; OUTER_ROWS]; THIN + THIN_C],
    buf: &mut [f32; OUTER_ROWS * THIN + 8],
    alpha: f32,
    beta: f32,
) {
    assert!(rows.is_multiple_of(8) && rows <= OUTER_ROWS && n <= THIN);
    for j0 in (0..n).step_by(8).rev() {
        for r0 in (0..rows).step_by(8) {
            // Block (rows r0.., columns j0..): source row q is column j0 + q, lane r.
            transpose_8x8(cols[j0].as_ptr().add(r0), OUTER_ROWS as isize, buf.as_mut_ptr().add(r0 * n + j0), n);
        }
    }
    let dst = std::slice::from_raw_parts_mut(out.ptr.offset(i0 as isize * out.rs), rows * n);
    if beta == 0.0 {
        dst.iter_mut().zip(buf.iter()).for_each(|(d, &v)| *d = alpha * v);
    } else if std::ptr::eq(out.src, out.ptr) {
        dst.iter_mut().zip(buf.iter()).for_each(|(d, &v)| *d = alpha * v + beta * *d);
    } else {
        // Out of place (`thin_from`): `src` is another matrix of the same layout.
        let src = std::slice::from_raw_parts(out.src.offset(i0 as isize * out.rs), rows * n);
        dst.iter_mut().zip(buf.iter()).zip(src).for_each(|((d, &v), &s)| *d = alpha * v + beta * s);
    }
}

outer_kernel!(
    /// The AVX2 outer-product tile: `V` vectors (8 rows each) by `C` columns.
    ///
    /// # Safety
    /// `a + p * lda` must be readable for `8 V` elements and `b + p * brs + j * bcs` for
    /// one, for every `p < k`, `j < C`; the CPU must support AVX2 and FMA.
    outer_avx2, "avx2,fma", 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
);
