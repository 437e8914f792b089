//! The AVX-512F kernels (16-lane vectors, 32 registers): the `2 MR x 2 NR` micro-kernel
//! that reads the AVX2 kernel's packing two panels of each at a time, applies a bias add
//! and relu in registers ([`ActPtrs`]) and can pack `b` as it first reads it; and the
//! thin products' dot and outer-product tiles. Every function here is
//! `#[target_feature(enable = "avx512f,avx2,fma")]` and `unsafe`: its callers check
//! [`Kernel::Avx512`](super::Kernel) first.

use super::driver::{MR, NR, PREFETCH_STEPS};
use super::epilogue::ActPtrs;
use super::thin::{outer_kernel, DotTile, OUTER_ROWS, THIN_C};

/// Rows of `b` ahead that a tile packing `b` as it reads it prefetches.
const PACK_B_AHEAD: usize = 16;

/// `c = alpha * a x b + beta * c` for one `mc x nc` block of a row-major `c` with the
/// AVX-512 kernel: `b` is the block's `nc.div_ceil(NR)` packed panels, taken two at a
/// time (a last odd one, or a partial one, alone or masked); `a` is packed
/// (`mc.div_ceil(MR)` panels of `kc x MR`) or, if not `PACKED`, the `mc x kc` block of
/// `a` read in place (element `(i, p)` at `a + i * sa.0 + p * sa.1`). With `src` (the
/// `kc x nc` block of a row-major `b` and its row stride), the panels are not packed
/// yet: each column's first tile packs them as it reads them (see [`column_avx512`]).
/// With `act`, these are `c`'s final values, and the bias add and relu are applied to
/// them as they are written.
///
/// The tiles are visited a column at a time (every tile of a pair of `b` panels, down
/// the rows: the pair stays in L1 while `a` streams from L2), or with `rows_first` a
/// row at a time (every pair for one 12-row tile of `a`, which stays in L1 while the
/// block of `b` streams from L2). Down a column, a tile's rows of `c` are `rs` apart;
/// when that is a multiple of 4 KiB they all fall in the same L1 sets, and the rows of
/// the tiles before, written or prefetched, are evicted by the next ones: along a row of
/// tiles `c` is read and written in contiguous runs. M3's weight gradients (`c` a 1024
/// x 1024 weight, `beta = 1`) 136-139 GFLOP/s a column at a time, 142-150 a row at a
/// time; on `c`s whose rows do not alias (M2's) a column at a time is faster (137-143
/// GFLOP/s against 130-135 a row at a time).
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA; `a` must hold the panels (packed) or
/// `mc` rows of `kc` (in place), `b` `nc.div_ceil(NR) * kc * NR` elements (writable
/// with `src`), and the `mc x nc` block at `c` (rows `rs` apart, columns contiguous)
/// must be writable; with `src`, `src.0 + p * src.1 + j` must be readable for `p < kc`,
/// `j < nc`, `nc % NR == 0` and `mc >= 2 MR`; `act`'s bias, if not null, must be
/// readable for `nc` elements.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block_avx512<const PACKED: bool>(
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    mc: usize,
    b: *mut f32,
    src: Option<(*const f32, isize)>,
    nc: usize,
    c: *mut f32,
    rs: isize,
    alpha: f32,
    beta: f32,
    act: Option<ActPtrs>,
    rows_first: bool,
) {
    let panels = nc.div_ceil(NR);
    if rows_first {
        for t in 0..mc.div_ceil(2 * MR) {
            let done = t * 2 * MR;
            let rows = (2 * MR).min(mc - done);
            // Where row `done` of the block starts: packed a has MR rows a panel.
            let a = if PACKED { a.wrapping_add(done / MR * kc * MR) } else { a.wrapping_offset(done as isize * sa.0) };
            let c = c.wrapping_offset(done as isize * rs);
            // The first row of tiles packs b (it has 2 MR rows: mc >= 2 MR with src).
            let src = if t == 0 { src } else { None };
            for jp in (0..panels).step_by(2) {
                let pair = jp + 1 < panels;
                let last = (nc - (jp + usize::from(pair)) * NR).min(NR);
                let mask = (((1u32 << last) - 1) & 0xFFFF) as u16;
                let (b, c) = (b.add(jp * kc * NR), c.add(jp * NR));
                let src = src.map(|(s, ldb)| (s.add(jp * NR), ldb));
                let act = act.map(|p| p.offset(jp * NR));
                if pair {
                    tile_avx512::<2, PACKED>(rows, kc, a, sa, b, src, mask, c, rs, alpha, beta, act);
                } else {
                    tile_avx512::<1, PACKED>(rows, kc, a, sa, b, src, mask, c, rs, alpha, beta, act);
                }
            }
        }
        return;
    }
    for jp in (0..panels).step_by(2) {
        let pair = jp + 1 < panels;
        // Columns of the last panel of this call that are inside `c`.
        let last = (nc - (jp + usize::from(pair)) * NR).min(NR);
        let mask = (((1u32 << last) - 1) & 0xFFFF) as u16;
        let (b, c) = (b.add(jp * kc * NR), c.add(jp * NR));
        let src = src.map(|(s, ldb)| (s.add(jp * NR), ldb));
        let act = act.map(|p| p.offset(jp * NR));
        if pair {
            column_avx512::<2, PACKED>(kc, a, sa, mc, b, src, mask, c, rs, alpha, beta, act);
        } else {
            column_avx512::<1, PACKED>(kc, a, sa, mc, b, src, mask, c, rs, alpha, beta, act);
        }
    }
}

/// [`panels_avx512`] over all `mc` rows: the 12-row tiles in one call, then one tile of
/// the remaining `mc % 12` rows. A remainder of 8 (M2's 128 rows) as one tile keeps 16
/// accumulators in flight; as 6 + 2 rows, the 2-row tile's 4 accumulators could not
/// cover the FMA latency. With `src`, the first tile reads the `P` panels of `b` from
/// `src` and stores them packed for the others: packing `b` as a pass of its own read it
/// from L3 and wrote the packing out, to be read back; fused, the first tile's loads
/// overlap its FMAs and the packed panels are still in cache for the next tile (M2's
/// step 1.9% faster in five of five alternating runs, M3's 1.1% in three of five).
///
/// # Safety
/// As [`panels_avx512`] for those `mc` rows.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn column_avx512<const P: usize, const PACKED: bool>(
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    mc: usize,
    b: *mut f32,
    src: Option<(*const f32, isize)>,
    mask: u16,
    c: *mut f32,
    rs: isize,
    alpha: f32,
    beta: f32,
    act: Option<ActPtrs>,
) {
    let full = mc / (2 * MR);
    let mut first = 0;
    if let Some(src) = src {
        assert!(full >= 1, "the first block of a has a full tile");
        panels_avx512::<{ 2 * MR }, P, PACKED, true>(kc, a, sa, 1, b, src, mask, c, rs, alpha, beta, act);
        first = 1;
    }
    let step = if PACKED { (2 * kc * MR) as isize } else { 2 * MR as isize * sa.0 };
    let (a0, c0) = (a.wrapping_offset(first as isize * step), c.wrapping_offset((first * 2 * MR) as isize * rs));
    let nosrc = (std::ptr::null(), 0);
    // While the other tiles run from the packing, the first of them prefetches the next
    // P panels' rows of b (past the block's last column too: a prefetch never faults),
    // so that the next column's packing tile finds them in L2 rather than memory: C1's
    // step (fc1's forward, the weight cold after the conv layers) 22.7-25.4 -> 22.9-26.0
    // ms at 1 thread, faster in 6 of 8 alternating pairs (medians 24.3 -> 23.3). On AMD
    // CPUs only: not measured on the Xeons.
    let next = match src {
        Some((s, ldb)) if super::dispatch::caches().amd => (s.wrapping_add(P * NR), ldb),
        _ => nosrc,
    };
    panels_avx512::<{ 2 * MR }, P, PACKED, false>(kc, a0, sa, full - first, b, next, mask, c0, rs, alpha, beta, act);
    let done = full * 2 * MR;
    // Where row `done` of the block starts: packed a has MR rows a panel.
    let a = if PACKED { a.wrapping_add(done / MR * kc * MR) } else { a.wrapping_offset(done as isize * sa.0) };
    let c = c.wrapping_offset(done as isize * rs);
    macro_rules! rest {
        ($($r:literal)*) => {
            match mc - done {
                $($r => panels_avx512::<$r, P, PACKED, false>(kc, a, sa, 1, b, nosrc, mask, c, rs, alpha, beta, act),)*
                _ => {}
            }
        };
    }
    rest!(1 2 3 4 5 6 7 8 9 10 11)
}

/// One tile of `rows` (1 to `2 MR`) rows by `P` panels: [`panels_avx512`] for that row
/// count, packing `b` from `src` where given (then `rows == 2 MR`).
///
/// # Safety
/// As [`panels_avx512`] with `count == 1`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<const P: usize, const PACKED: bool>(
    rows: usize,
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    b: *mut f32,
    src: Option<(*const f32, isize)>,
    mask: u16,
    c: *mut f32,
    rs: isize,
    alpha: f32,
    beta: f32,
    act: Option<ActPtrs>,
) {
    let nosrc = (std::ptr::null(), 0);
    if let Some(src) = src {
        assert!(rows == 2 * MR, "b is packed by a full tile");
        panels_avx512::<{ 2 * MR }, P, PACKED, true>(kc, a, sa, 1, b, src, mask, c, rs, alpha, beta, act);
        return;
    }
    macro_rules! rows {
        ($($r:literal)*) => {
            match rows {
                $($r => panels_avx512::<$r, P, PACKED, false>(kc, a, sa, 1, b, nosrc, mask, c, rs, alpha, beta, act),)*
                _ => unreachable!("a tile has 1 to 2 MR rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// The AVX-512 micro-kernel: `count` tiles of `R` rows (at most two packed panels of
/// `a`, `2 MR` = 12 rows) by `P` packed panels of `b` (one 16-lane vector each, the
/// panels `kc * NR` apart): `c = alpha * a_t x b + beta * c` for the `t`-th tile at
/// `c + t * 2 MR * rs` (rows `rs` apart, columns contiguous). The last panel's columns
/// are written under `mask` (a partial panel at the right edge of `c`); `beta == 0`
/// does not read `c`. With `R = 12`, `P = 2` the tile holds 24 accumulators, and each
/// step is 24 FMAs against 2 vector loads and 12 broadcasts. `a` is packed (tile `t`
/// at `a + t * 2 kc MR`; row `r` in panel `r / MR`, lane `r % MR`) or, if not
/// `PACKED`, read in place (element `(r, p)` at `a + r * sa.0 + p * sa.1`). With
/// `PACK_B`, row `p` of the panels is read from `src.0 + p * src.1` (a row-major `b`)
/// and stored into `b`'s packing as well; without it, a non-null `src` is only
/// prefetched (into L2, `P` lines a step from `src.0 + p * src.1`) by the first tile.
/// With `act`, the values written are
/// `Act::apply`'s (bias add, relu) of `alpha * acc + beta * c`, the bias read from
/// `act.bias` at the tile's first column.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA; `a` and `b` (or, with `PACK_B`, `src`)
/// must hold what the tiles read, `b` be writable with `PACK_B`, and the tiles of `c`
/// be writable, their last panel's columns under `mask`; `act`'s bias, if not null,
/// readable for the tile's columns (under `mask`); `count == 1` unless `R == 2 MR`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panels_avx512<const R: usize, const P: usize, const PACKED: bool, const PACK_B: bool>(
    kc: usize,
    a: *const f32,
    sa: (isize, isize),
    count: usize,
    b: *mut f32,
    src: (*const f32, isize),
    mask: u16,
    c: *mut f32,
    rs: isize,
    alpha: f32,
    beta: f32,
    act: Option<ActPtrs>,
) {
    use std::arch::x86_64::*;
    let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    let zero = _mm512_setzero_ps();
    let head = kc.saturating_sub(PREFETCH_STEPS);
    // Element (r, p) of a tile: at `off[r] + p * acs`.
    let off: [isize; R] =
        std::array::from_fn(|r| if PACKED { (r / MR * kc * MR + r % MR) as isize } else { r as isize * sa.0 });
    let (tile_step, acs) = if PACKED { ((2 * kc * MR) as isize, MR as isize) } else { (2 * MR as isize * sa.0, sa.1) };
    let panel = kc * NR;
    for t in 0..count {
        let a = a.offset(t as isize * tile_step);
        let c = c.offset((t * 2 * MR) as isize * rs);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        // Without PACK_B, a `src` is the next panels' rows of b, which the call's first
        // tile prefetches into L2 for the tile that will pack them.
        let pf = !PACK_B && t == 0 && !src.0.is_null();
        macro_rules! steps {
            ($range:expr, $pf:expr) => {
                for p in $range {
                    let (ap, bp) = (a.offset(p as isize * acs), b.add(p * NR));
                    if $pf {
                        let next = src.0.wrapping_offset(p as isize * src.1) as *const i8;
                        for q in 0..P {
                            _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64 * q));
                        }
                    }
                    let bv: [__m512; P] = if PACK_B {
                        // Row p of the P panels from b itself, stored into the packing.
                        let row = src.0.offset(p as isize * src.1);
                        let ahead = row.wrapping_offset(PACK_B_AHEAD as isize * src.1) as *const i8;
                        for q in 0..P {
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * q));
                        }
                        std::array::from_fn(|q| {
                            let v = _mm512_loadu_ps(row.add(q * NR));
                            _mm512_storeu_ps(bp.add(q * panel), v);
                            v
                        })
                    } else {
                        std::array::from_fn(|q| _mm512_loadu_ps(bp.add(q * panel)))
                    };
                    for (r, row) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*ap.offset(off[r]));
                        for (v, &bq) in row.iter_mut().zip(&bv) {
                            *v = _mm512_fmadd_ps(x, bq, *v);
                        }
                    }
                }
            };
        }
        if pf {
            steps!(0..head, true);
        } else {
            steps!(0..head, false);
        }
        for r in 0..R as isize {
            // A prefetch never faults, whatever the address.
            let row = c.wrapping_offset(r * rs) as *const i8;
            for q in 0..P {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64 * q));
            }
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64 * P - 4));
        }
        if pf {
            steps!(head..kc, true);
        } else {
            steps!(head..kc, false);
        }
        for (r, row) in acc.into_iter().enumerate() {
            let p = c.offset(r as isize * rs);
            for (q, v) in row.into_iter().enumerate() {
                let (d, v) = (p.add(q * NR), _mm512_mul_ps(va, v));
                let m = if q + 1 == P { mask } else { 0xFFFF };
                let mut v = if beta == 0.0 { v } else { _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, d), v) };
                if let Some(e) = act {
                    // As `Act::apply`, lane by lane: `x + b`, then `if x > 0 { x } else
                    // { 0 }` (vmaxps gives its second operand, 0, for NaN and for -0).
                    if !e.bias.is_null() {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, e.bias.add(q * NR)));
                    }
                    if e.relu {
                        v = _mm512_max_ps(v, zero);
                    }
                }
                _mm512_mask_storeu_ps(d, m, v);
            }
        }
    }
}

/// The AVX-512 dot tile for fixed `R x C`, 16 lanes along `k`, the `k % 16` tail under
/// a mask.
///
/// # Safety
/// As [`dot_tile`](super::thin::dot_tile), and the CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
// Index loops over the fixed register tile read clearest here.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn dot_avx512<const R: usize, const C: usize, const B: bool>(
    k: usize,
    a: *const f32,
    lda: isize,
    bt: *const f32,
    ldb: isize,
    tile: &mut DotTile,
    bits: &mut u32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    // With `B`, the OR of the bits of every element of `a` the tile loads (one
    // `vpternlogd` per step of 2 rows: the bound of the plain-SGD guard, see
    // `thin_bits`). A masked load's zeros add nothing.
    let mut or = _mm512_setzero_si512();
    let rows: [*const f32; R] = std::array::from_fn(|r| a.offset(r as isize * lda));
    let cols: [*const f32; C] = std::array::from_fn(|j| bt.offset(j as isize * ldb));
    // `load(ptr, p)` is 16 elements from `ptr + p`.
    macro_rules! step {
        ($p:expr, $load:expr) => {
            let av: [__m512; R] = std::array::from_fn(|r| $load(rows[r], $p));
            if B {
                // 0xFE: or | x | y.
                or = _mm512_ternarylogic_epi32::<0xFE>(or, _mm512_castps_si512(av[0]), _mm512_castps_si512(av[R - 1]));
                for r in 1..R - 1 {
                    or = _mm512_or_si512(or, _mm512_castps_si512(av[r]));
                }
            }
            for j in 0..C {
                let bv = $load(cols[j], $p);
                for r in 0..R {
                    acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
                }
            }
        };
    }
    let k16 = k / 16 * 16;
    for p in (0..k16).step_by(16) {
        step!(p, |x: *const f32, p| _mm512_loadu_ps(x.add(p)));
    }
    if k16 < k {
        // A masked load reads nothing past the end.
        let mask = ((1u32 << (k - k16)) - 1) as u16;
        step!(k16, |x: *const f32, p| _mm512_maskz_loadu_ps(mask, x.add(p)));
    }
    if B {
        *bits |= _mm512_reduce_or_epi32(or) as u32;
    }
    for r in 0..R {
        for j in 0..C {
            // The lanes summed by halving with EVEX shuffles. std's
            // `_mm512_reduce_add_ps` goes through instructions that reach only the
            // first 16 registers, and LLVM then kept the accumulators that did not fit
            // there on the stack throughout the loop (1.5x slower).
            let v = acc[r][j];
            let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v));
            let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
            let v = _mm512_add_ps(v, _mm512_permute_ps::<0b01_00_11_10>(v));
            let v = _mm512_add_ps(v, _mm512_permute_ps::<0b10_11_00_01>(v));
            tile[r][j] = _mm512_cvtss_f32(v);
        }
    }
}

outer_kernel!(
    /// The AVX-512 outer-product tile: `V` vectors (16 rows each) by `C` columns.
    ///
    /// # Safety
    /// As [`outer_avx2`](super::avx2::outer_avx2) with `16 V` rows, and the CPU must support AVX-512F.
    outer_avx512, "avx512f,avx2,fma", 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
    _mm512_storeu_ps
);

/// Writes a stripe of an outer-product tile (`rows` of a row-major `c` from `i0`, a
/// multiple of 16; `cols[j][r]` = c[i0 + r, j]) back as `alpha * v + beta * c` (or
/// `beta * src` out of place): each 16 rows transposed in registers (16 column vectors
/// into 16 row vectors, four rounds of shuffles), then each row one masked store of its
/// `n` lanes. The AVX2 version (`store_stripe_avx2`: 8 x 8 transposes into a buffer,
/// then a slice pass over it) took 6.8% of M1's step (`perf`, this Xeon); the same
/// arithmetic (`alpha * v` and `beta * c` rounded, then added: no FMA), so the same bits.
///
/// # Safety
/// The CPU must support AVX-512F; `out` must be a live, unaliased, row-major view with
/// rows `n` apart that holds rows `i0..i0 + rows`, and `out.src` either `out.ptr` or a
/// live matrix of the same layout that `out` does not overlap.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn store_stripe_avx512(
    out: &super::driver::Out,
    i0: usize,
    rows: usize,
    n: usize,
    cols: &[[f32; OUTER_ROWS]; super::thin::THIN + THIN_C],
    alpha: f32,
    beta: f32,
) {
    use std::arch::x86_64::*;
    assert!(rows.is_multiple_of(16) && rows <= OUTER_ROWS && n <= super::thin::THIN);
    let k: __mmask16 = ((1u32 << n) - 1) as __mmask16;
    let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    let in_place = std::ptr::eq(out.src, out.ptr);
    for r0 in (0..rows).step_by(16) {
        // Column j's 16 rows from r0; the columns past n hold what earlier tiles left
        // (never NaN-checked, never stored: their lanes are masked off below).
        let mut v = [_mm512_setzero_ps(); 16];
        for (j, v) in v.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(cols[j].as_ptr().add(r0));
        }
        let t = transpose16(v);
        // `beta * c` read for all 16 rows before any is written: a row's masked load right
        // after the masked store of the row before (40 bytes apart for n = 10, inside the
        // store's 64-byte footprint) waited for that store, which made the in-place form
        // (`gemm_acc`) 5 us slower on M1's update than this.
        let mut s = [_mm512_setzero_ps(); 16];
        if beta != 0.0 {
            for (r, s) in s.iter_mut().enumerate() {
                let at = (i0 + r0 + r) as isize * out.rs;
                let from = if in_place { out.ptr.offset(at).cast_const() } else { out.src.offset(at) };
                *s = _mm512_maskz_loadu_ps(k, from);
            }
        }
        for (r, (&t, &s)) in t.iter().zip(&s).enumerate() {
            let d = out.ptr.offset((i0 + r0 + r) as isize * out.rs);
            let x = _mm512_mul_ps(va, t);
            let x = if beta == 0.0 { x } else { _mm512_add_ps(x, _mm512_mul_ps(vb, s)) };
            _mm512_mask_storeu_ps(d, k, x);
        }
    }
}

/// `bt[j * k + p] = b[p * rs + j]` for every `j < n` and the `p < pd` that whole blocks
/// of 16 rows cover (`pd`, the multiple of 16 below `k`, is returned): 16 rows of `b`
/// (one masked load of `n` lanes each) transposed in registers into 16 elements of each
/// row of `bt`. The thin dot form's copy of `b^T` (M1's forward: `w`, 784 x 10) took
/// 9.5% of M1's step with 8 x 8 AVX2 transposes for the first 8 columns and a strided
/// gather of the other two.
///
/// # Safety
/// The CPU must support AVX-512F; `b` must hold `k` rows of `n <= 16` contiguous
/// elements, `rs` apart.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn transpose_thin_avx512(b: *const f32, rs: isize, k: usize, n: usize, bt: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    assert!(n <= 16 && bt.len() >= n * k);
    let kn: __mmask16 = ((1u32 << n) - 1) as __mmask16;
    let pd = k / 16 * 16;
    let out = bt.as_mut_ptr();
    for p0 in (0..pd).step_by(16) {
        let mut v = [_mm512_setzero_ps(); 16];
        for (r, v) in v.iter_mut().enumerate() {
            // SAFETY: row p0 + r < k of `b`, its n elements (the caller's promise).
            *v = unsafe { _mm512_maskz_loadu_ps(kn, b.offset((p0 + r) as isize * rs)) };
        }
        for (j, t) in transpose16(v).iter().enumerate().take(n) {
            // SAFETY: bt[j * k + p0 .. + 16] with j < n, p0 + 16 <= k: inside `bt`.
            unsafe { _mm512_storeu_ps(out.add(j * k + p0), *t) };
        }
    }
    pd
}

/// Lines ahead of the rows being packed that [`pack_b_columns_avx512`] prefetches in each
/// column of `b`.
const PACK_PREFETCH_LINES: usize = 8;

/// Packs the first `16 * floor(kc / 16)` rows of an `NR`-wide panel of a column-major
/// `b` (column `j` at `col0 + j * cs`, contiguous along k) with 16 x 16 register
/// transposes, each a whole 64-byte run of every column into 16 rows of the panel, and
/// returns how many rows it packed. The AVX2 version's 8 x 8 transposes read half a line
/// of each column at a time; with columns 4 KiB apart (C1 fc1's input gradient, `b` the
/// transposed 3136 x 1024 weight) the 16 columns' lines share one L1 set, and the
/// second half was often read again from L2; and no hardware prefetcher follows 16
/// streams a page apart, so each column is prefetched `PACK_PREFETCH_LINES` ahead.
///
/// # Safety
/// The CPU must support AVX-512F; the `NR` columns must be readable for `kc` elements;
/// `panel` holds `kc * NR` elements.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn pack_b_columns_avx512(col0: *const f32, cs: isize, kc: usize, panel: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    assert!(panel.len() >= kc * NR && NR == 16);
    let full = kc / 16 * 16;
    let out = panel.as_mut_ptr();
    for p0 in (0..full).step_by(16) {
        let mut v = [_mm512_setzero_ps(); 16];
        for (j, v) in v.iter_mut().enumerate() {
            let col = col0.offset(j as isize * cs);
            // A prefetch never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(p0 + 16 * PACK_PREFETCH_LINES) as *const i8);
            // SAFETY: rows p0..p0 + 16 <= kc of column j < NR (the caller's promise).
            *v = unsafe { _mm512_loadu_ps(col.add(p0)) };
        }
        for (r, t) in transpose16(v).iter().enumerate() {
            // SAFETY: panel rows p0 + r < kc, NR values each: inside `panel` (asserted).
            unsafe { _mm512_storeu_ps(out.add((p0 + r) * NR), *t) };
        }
    }
    full
}

/// The 16 x 16 transpose of `v` (`out[r]` lane `j` = `v[j]` lane `r`): pairs interleaved
/// by element, by pair, then 128-bit quarters exchanged twice.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(v: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let mut a = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    let mut b = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        for h in 0..2 {
            let (x, y) = (_mm512_castps_pd(a[4 * i + h]), _mm512_castps_pd(a[4 * i + 2 + h]));
            b[4 * i + h] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
            b[4 * i + 2 + h] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
        }
    }
    let mut c = [_mm512_setzero_ps(); 16];
    for i in 0..2 {
        for h in 0..4 {
            c[8 * i + h] = _mm512_shuffle_f32x4::<0b10_00_10_00>(b[8 * i + h], b[8 * i + 4 + h]);
            c[8 * i + 4 + h] = _mm512_shuffle_f32x4::<0b11_01_11_01>(b[8 * i + h], b[8 * i + 4 + h]);
        }
    }
    let mut d = [_mm512_setzero_ps(); 16];
    for h in 0..8 {
        d[h] = _mm512_shuffle_f32x4::<0b10_00_10_00>(c[h], c[8 + h]);
        d[8 + h] = _mm512_shuffle_f32x4::<0b11_01_11_01>(c[h], c[8 + h]);
    }
    // Where each row landed: the second round leaves rows 1 and 2 of every four swapped.
    const ROW_AT: [usize; 16] = [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15];
    let mut out = [_mm512_setzero_ps(); 16];
    for (r, o) in out.iter_mut().enumerate() {
        *o = d[ROW_AT[r]];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::arch::x86_64::*;

    /// `transpose16` puts `v[j]` lane `r` at `out[r]` lane `j`, for every (r, j).
    #[test]
    fn transpose16_transposes() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        let src: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut got = [0.0f32; 256];
        // SAFETY: AVX-512F detected; 16 rows of 16 floats read and written.
        unsafe {
            let mut v = [_mm512_setzero_ps(); 16];
            for (j, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(src.as_ptr().add(16 * j));
            }
            let t = super::transpose16(v);
            for (r, t) in t.iter().enumerate() {
                _mm512_storeu_ps(got.as_mut_ptr().add(16 * r), *t);
            }
        }
        for r in 0..16 {
            for j in 0..16 {
                assert_eq!(got[16 * r + j], src[16 * j + r], "row {r} lane {j}");
            }
        }
    }
}
