//! Packing: copies of blocks of `a` (`MR`-tall column panels) and `b` (`NR`-wide row
//! panels) into the contiguous layout the micro-kernels read, through the views' own
//! strides; the AVX2 register transposes for the layouts that need them live in
//! [`avx2`](super::avx2).

#[cfg(target_arch = "x86_64")]
use super::avx2::{pack_a_rows_avx2_impl, transpose_8x8};
use super::dispatch::avx2_fma;
#[cfg(target_arch = "x86_64")]
use super::dispatch::{caches, kernel, Kernel};
use super::driver::{MR, NR};
use crate::ndarray::ArrayView2;

/// Steps packed across all panels at a time (see [`pack_runs`]).
pub(super) const PACK_ROWS: usize = 8;

/// Packs `a[ic..ic + mc, pc..pc + kc]` as `MR`-tall panels, each `kc` columns of `MR`
/// contiguous values, zero-padded below the last row.
pub(super) fn pack_a(a: &ArrayView2<'_, f32>, ic: usize, mc: usize, pc: usize, kc: usize, dst: &mut [f32]) {
    let (m, k) = a.dim();
    assert!(ic + mc <= m && pc + kc <= k && dst.len() >= mc.div_ceil(MR) * MR * kc);
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    let base = a.as_ptr();
    let mut first = 0;
    if rs == 1 && cs != 1 {
        // Column-major (a transposed view, as in a weight gradient `x^T g`): each panel
        // column is MR contiguous values of one of a's columns.
        first = mc / MR;
        // SAFETY: for p < kc and panel q < mc / MR, the MR elements at
        // `base + (ic + q * MR) + (pc + p) * cs` are rows ic + q * MR.. < ic + mc <= m of
        // column pc + p < k of the live view `a` (asserted above; rs == 1).
        unsafe { pack_runs::<MR>(base.offset(ic as isize + pc as isize * cs), cs, kc, first, dst) };
    }
    for (ip, panel) in dst.chunks_exact_mut(kc * MR).take(mc.div_ceil(MR)).enumerate().skip(first) {
        let i0 = ic + ip * MR;
        let mr = MR.min(ic + mc - i0);
        // SAFETY: every (i, p) read has i0 <= i < i0 + mr <= m and pc <= p < pc + kc <= k
        // (asserted above), so `base + i * rs + p * cs` is an element of the live view `a`.
        unsafe {
            if cs == 1 && mr == MR && avx2_fma() {
                // Row-major with a full panel: 6 x 8 blocks transposed in registers.
                let row0 = base.offset(i0 as isize * rs + pc as isize);
                let done = pack_a_rows_avx2(row0, rs, kc, panel);
                for r in 0..MR {
                    let row = row0.offset(r as isize * rs);
                    for (p, d) in panel.chunks_exact_mut(MR).enumerate().skip(done) {
                        d[r] = *row.add(p);
                    }
                }
            } else if cs.unsigned_abs() <= rs.unsigned_abs() {
                // Row-major-like: walk each row along k.
                for r in 0..mr {
                    let row = base.offset((i0 + r) as isize * rs + pc as isize * cs);
                    for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                        d[r] = *row.offset(p as isize * cs);
                    }
                }
            } else {
                // Column-major-like (a transposed view): walk each column along m.
                for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                    let col = base.offset(i0 as isize * rs + (pc + p) as isize * cs);
                    for (r, dv) in d.iter_mut().enumerate().take(mr) {
                        *dv = *col.offset(r as isize * rs);
                    }
                }
            }
        }
        if mr < MR {
            for d in panel.chunks_exact_mut(MR) {
                d[mr..].fill(0.0);
            }
        }
    }
}

/// Packs the first `8 * floor(kc / 8)` columns of the `MR` rows at `row0` (rows `rs`
/// apart, columns contiguous) into `panel` (`MR` values per column), transposing 6 x 8
/// blocks in registers; returns how many columns it packed.
///
/// # Safety
/// The CPU must support AVX2 + FMA ([`avx2_fma`]); each row must be readable for `kc`
/// elements; `panel` holds `kc * MR` elements.
pub(super) unsafe fn pack_a_rows_avx2(row0: *const f32, rs: isize, kc: usize, panel: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        pack_a_rows_avx2_impl(row0, rs, kc, panel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (row0, rs, kc, panel);
        0
    }
}

/// Fills the first `panels` panels of `dst` (each `kc` steps of `W` values, one after
/// the other) from runs of `W` contiguous values: step `p` of panel `q` is the `W`
/// values at `src + q * W + p * step`. The panels are filled `PACK_ROWS` steps at a
/// time across all of them, which reads each source line in runs rather than walking
/// down one panel, a line per step (lines often 4 KiB apart): `pack_b` went from 3.9%
/// to 2.2% of M3's step in a profile.
///
/// # Safety
/// Every such run must be readable, and `dst` hold `panels * kc * W` elements.
pub(super) unsafe fn pack_runs<const W: usize>(
    src: *const f32,
    step: isize,
    kc: usize,
    panels: usize,
    dst: &mut [f32],
) {
    for p0 in (0..kc).step_by(PACK_ROWS) {
        let steps = p0..(p0 + PACK_ROWS).min(kc);
        for (q, panel) in dst.chunks_exact_mut(kc * W).take(panels).enumerate() {
            for p in steps.clone() {
                let run = &*(src.offset((q * W) as isize + p as isize * step) as *const [f32; W]);
                let d: &mut [f32; W] = (&mut panel[p * W..(p + 1) * W]).try_into().expect("W values a step");
                *d = *run;
            }
        }
    }
}

/// Packs `b[pc..pc + kc, jc..jc + nc]` as `NR`-wide panels, each `kc` rows of `NR`
/// contiguous values, zero-padded right of the last column.
pub(super) fn pack_b(b: &ArrayView2<'_, f32>, pc: usize, kc: usize, jc: usize, nc: usize, dst: &mut [f32]) {
    let (k, n) = b.dim();
    assert!(pc + kc <= k && jc + nc <= n && dst.len() >= nc.div_ceil(NR) * NR * kc);
    let (rs, cs) = (b.strides()[0], b.strides()[1]);
    let base = b.as_ptr();
    let mut first = 0;
    if cs == 1 {
        // Row-major: each panel row is NR contiguous values of one of b's rows.
        first = nc / NR;
        // SAFETY: for p < kc and panel q < nc / NR, the NR elements at
        // `base + (pc + p) * rs + (jc + q * NR)` are columns jc + q * NR.. < jc + nc <= n
        // of row pc + p < k of the live view `b` (asserted above; cs == 1).
        unsafe { pack_runs::<NR>(base.offset(pc as isize * rs + jc as isize), rs, kc, first, dst) };
    }
    for (jp, panel) in dst.chunks_exact_mut(kc * NR).take(nc.div_ceil(NR)).enumerate().skip(first) {
        let j0 = jc + jp * NR;
        let nr = NR.min(jc + nc - j0);
        // SAFETY: every (p, j) read has pc <= p < pc + kc <= k and j0 <= j < j0 + nr <= n
        // (asserted above), so `base + p * rs + j * cs` is an element of the live view `b`;
        // with cs == 1 the nr elements from a row start are that row's j0..j0 + nr.
        unsafe {
            if cs == 1 {
                // The last, partial panel of a row-major b.
                for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                    let row = base.offset((pc + p) as isize * rs + j0 as isize);
                    d[..nr].copy_from_slice(std::slice::from_raw_parts(row, nr));
                }
            } else if rs == 1 && nr == NR && avx2_fma() {
                // Column-major (a transposed view): 8 x 8 blocks transposed in registers,
                // the last kc % 8 rows gathered.
                let col0 = base.offset(pc as isize + j0 as isize * cs);
                let full = pack_b_columns_wide(col0, cs, kc, panel);
                for (p, d) in panel.chunks_exact_mut(NR).enumerate().skip(full) {
                    for (jj, dv) in d.iter_mut().enumerate() {
                        *dv = *col0.offset(p as isize + jj as isize * cs);
                    }
                }
            } else if cs.unsigned_abs() <= rs.unsigned_abs() {
                for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                    let row = base.offset((pc + p) as isize * rs + j0 as isize * cs);
                    for (jj, dv) in d.iter_mut().enumerate().take(nr) {
                        *dv = *row.offset(jj as isize * cs);
                    }
                }
            } else {
                // Column-major-like (a transposed view): walk each column along k.
                for jj in 0..nr {
                    let col = base.offset(pc as isize * rs + (j0 + jj) as isize * cs);
                    for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                        d[jj] = *col.offset(p as isize * rs);
                    }
                }
            }
        }
        if nr < NR {
            for d in panel.chunks_exact_mut(NR) {
                d[nr..].fill(0.0);
            }
        }
    }
}

/// [`pack_b_columns`], with 16 x 16 transposes where the AVX-512 kernel runs on an AMD
/// CPU ([`pack_b_columns_avx512`](super::avx512::pack_b_columns_avx512); not measured on
/// the Intel Xeons, which keep the 8 x 8 ones), the last `kc % 16` rows' first multiple
/// of 8 with the 8 x 8 ones; returns how many rows it packed.
///
/// # Safety
/// As [`pack_b_columns`].
unsafe fn pack_b_columns_wide(col0: *const f32, cs: isize, kc: usize, panel: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if kernel() == Kernel::Avx512 && caches().amd {
        // SAFETY: `Avx512` is only chosen where avx512f, avx2 and fma were detected; the
        // columns and the panel as the caller promised.
        let done = super::avx512::pack_b_columns_avx512(col0, cs, kc, panel);
        if done == kc {
            return done;
        }
        let more = pack_b_columns(col0.add(done), cs, kc - done, &mut panel[done * NR..]);
        return done + more;
    }
    pack_b_columns(col0, cs, kc, panel)
}

/// Packs the first `8 * floor(kc / 8)` rows of an `NR`-wide panel of a column-major `b`
/// (column `j` at `col0 + j * cs`, contiguous along k) with 8 x 8 register transposes;
/// returns how many rows it packed.
///
/// # Safety
/// The CPU must support AVX2 + FMA ([`avx2_fma`]); the `NR` columns must be readable
/// for `kc` elements; `panel` holds `kc * NR` elements.
pub(super) unsafe fn pack_b_columns(col0: *const f32, cs: isize, kc: usize, panel: &mut [f32]) -> usize {
    assert!(panel.len() >= kc * NR);
    #[cfg(target_arch = "x86_64")]
    {
        let full = kc / 8 * 8;
        for p0 in (0..full).step_by(8) {
            for half in 0..NR / 8 {
                // Rows p0..p0 + 8 of columns 8 half.. of the panel.
                let src = col0.offset(p0 as isize + (8 * half) as isize * cs);
                transpose_8x8(src, cs, panel.as_mut_ptr().add(p0 * NR + 8 * half), NR);
            }
        }
        full
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (col0, cs);
        0
    }
}
