//! The packed product (BLIS's five loops): the blocking constants, the loops over
//! blocks of `c` along `n`, `k` and `m` ([`product`]), which pack `b` and `a` ([`pack`](super::pack))
//! and hand each pair of panels to the chosen instruction set's micro-kernel, and the
//! write-back of edge tiles ([`store`]).

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use super::avx2::{column_avx2, micro_avx2};
#[cfg(target_arch = "x86_64")]
use super::avx512::block_avx512;
use super::dispatch::{avx2_fma, caches, kernel, Direct, Kernel};
use super::epilogue::Epi;
use super::pack::{pack_a, pack_b};
use super::portable::micro_portable;
use super::thin::THIN;
use crate::ndarray::{ArrayView2, ArrayViewMut2};

/// Rows of the micro-kernel's tile (broadcast side, from `a`).
pub(super) const MR: usize = 6;
/// Columns of the micro-kernel's tile (vector side, from `b`): two 8-lane vectors.
pub(super) const NR: usize = 16;
/// Depth of a packed block: the `KC x NR` panel of `b` (24 KiB) stays in L1 while the
/// `MR x KC` panels of `a` stream past it from L2. Measured on M2/M3 (best of five
/// interleaved runs): 256, 384 and 512 within 1.5% of each other, 384 fastest.
pub(super) const KC: usize = 384;
/// Rows of a packed block of `a` (`MC x KC` = 252 KiB stays in L2).
pub(super) const MC: usize = 168;
/// Columns of a packed block of `b` (`KC x NC` = 6 MiB stays in L3).
pub(super) const NC: usize = 4080;
/// Most panels of `b` for which `a` is read in place by the column kernel rather than
/// packed (see `product`). The same for the AVX-512 kernel, measured on its own (M2
/// 1.5-2% slower with a packed at 0 or 8 panels; M3 the same at 16 and 64).
pub(super) const IN_PLACE_PANELS: usize = 16;
/// `KC` of the AVX-512 kernel on AMD CPUs. Measured on the Zen 5's M3 step (session 4,
/// interleaved in one process, best of 60 rounds each): 256 11.04 ms, 384 11.01, 512
/// 10.73, 768 10.89, 1024 11.19; M2 was the same for all (k <= 784). The pair of `b`
/// panels (64 KiB at 512) then streams from L2 at 128 bytes a step, which the 12 rows
/// of FMAs a step hide there.
pub(super) const KC_512_AMD: usize = 512;

/// Depth from which the AVX-512 kernel walks an aliased `c` a column of tiles at a time
/// on AMD CPUs (see `product`).
const ROWS_FIRST_DEEP_AMD: usize = 256;

/// `KC` of the AVX-512 kernel: [`KC_512_AMD`] on AMD CPUs, elsewhere the deepest
/// multiple of 64 (128 to 512) for which the kernel's working set, the pair of `b`
/// panels and the 12-row panel of `a` (`(2 NR + 2 MR) x KC` floats), fits in the
/// detected L1d. On the Xeon of family 6 model 207 (L1d 48 KiB: 256) the `b` panels
/// streaming from L2 at 512 cost more than the FMAs hide: M3's products 18.3-18.5 ms
/// at 256 against 18.9-19.5 at 512, M2's 0.90 against 0.92 (`cargo bench -p
/// modelc-bench --bench sgemm`, interleaved rounds, load average 2-4).
pub(super) fn kc_avx512() -> usize {
    let caches = caches();
    if caches.amd {
        return KC_512_AMD;
    }
    (caches.l1d / ((2 * NR + 2 * MR) * 4) / 64 * 64).clamp(128, 512)
}

thread_local! {
    /// Packing scratch: the packed block of `b` followed by the packed block of `a`.
    pub(super) static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of slack in [`SCRATCH`] for [`aligned`].
const SLACK: usize = 16;

/// The first `len` floats of a thread's [`SCRATCH`] from a 64-byte boundary, growing it
/// first if it is too short. The allocator aligns the buffer to 16 bytes only, where a
/// 16-lane load or store spans two cache lines, and where it starts depends on what the
/// thread allocated before: M1's thin products (their loads of the copied `b^T` are
/// half their work) took 26.3 or 30.0 us a step (median of 400) with the same code,
/// depending only on how far M3's products before them had grown the scratch; aligned,
/// 24.6 us in one of those run orders, still 30 in the other (README, "On the Intel
/// Xeon": the offset within a page seems to matter too).
pub(super) fn aligned(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len + SLACK {
        // Half again as much as asked: with `parallel` a thread runs whichever part of a
        // split product it claims first, and the parts of one product differ by a unit
        // of rows or columns, so a part that a thread had not run before (claimed
        // because the other thread was late) grew its scratch once, an allocation in a
        // steady-state step (`tests/alloc.rs` with `parallel`, seen in CI under load).
        scratch.resize((len + SLACK) * 3 / 2, 0.0);
    }
    // `align_offset` may decline (usize::MAX); then the buffer is used as it is.
    let off = Some(scratch.as_ptr().align_offset(64)).filter(|&o| o < SLACK).unwrap_or(0);
    &mut scratch[off..off + len]
}

/// One `MR x NR` tile of accumulators.
pub(super) type Tile = [[f32; NR]; MR];

/// Steps of the AVX2 kernel before the end of a panel at which it fetches the tile of
/// `c` it is about to write. Fetched when the panel starts, as BLIS kernels do, the tile
/// was evicted again by the streaming panels before the write-back (`c`'s rows are
/// often 4 KiB apart, so they share one L1 set); 64 steps (about 400 cycles) cover an
/// L3 access. M3's step went from 33.4 to 32.3 ms (best of 6 interleaved runs).
pub(super) const PREFETCH_STEPS: usize = 64;

/// Raw access to `c`: base pointer and strides of a live, mutably borrowed view, and
/// where the thin kernels read `beta * c` from: `c` itself, or (an out-of-place product,
/// [`thin_from`](super::thin::thin_from)) another matrix of `c`'s shape and strides.
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub(super) ptr: *mut f32,
    pub(super) rs: isize,
    pub(super) cs: isize,
    pub(super) src: *const f32,
}

impl Out {
    /// `c` in place.
    pub(super) fn of(c: &mut ArrayViewMut2<'_, f32>) -> Self {
        let ptr = c.as_mut_ptr();
        Out { ptr, rs: c.strides()[0], cs: c.strides()[1], src: ptr }
    }

    /// The same `c`, reading `beta * c` from `src` where given (out of place).
    pub(super) fn reading(&self, src: Option<*const f32>) -> Self {
        Out { src: src.unwrap_or(self.ptr), ..*self }
    }
}

/// Splits `0..len` into `ceil(len / max)` blocks of nearly equal size, each a multiple
/// of `unit` (except the last), and returns that block size.
pub(super) fn block(len: usize, max: usize, unit: usize) -> usize {
    let count = len.div_ceil(max);
    len.div_ceil(count).next_multiple_of(unit).min(max)
}

pub(super) fn product(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    epi: Option<Epi<'_>>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    // The AVX-512 kernel writes rows of a row-major c; any other c goes through the
    // AVX2 kernel's paths.
    let kern = match kernel() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if c.strides()[1] != 1 => Kernel::Avx2Fma,
        best => best,
    };
    #[cfg(target_arch = "x86_64")]
    let wide = kern == Kernel::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    // Rows of c a multiple of 4 KiB apart share their L1 sets: a column of tiles down
    // such a c evicts its own rows before they are written (see `block_avx512`), so the
    // AVX-512 kernel walks it a row of tiles at a time. On AMD CPUs only where k is
    // shallow (writing c is then most of the work): on the Zen 5 (L2 1 MiB a core) the
    // row walk's smaller blocks of b cost more than the aliasing where k is deep, M3's
    // eight products 13.36-13.40 -> 12.74-12.96 ms with the column walk wherever k >= 256,
    // while C1 fc1's weight gradient (k = 50, c 3136 x 1024) needs the row walk (176 ->
    // 133-136 GFLOP/s without it; `cargo bench -p modelc-bench --bench sgemm`, session 16).
    let c_aliased = c.strides()[0] % 1024 == 0;
    let rows_first = wide && c_aliased && !(caches().amd && k >= ROWS_FIRST_DEEP_AMD);
    // The AVX-512 kernel's tile is two panels of a by two of b (see `panels_avx512`).
    let (kc_max, nc_max, tile_rows) = if wide {
        let kc = block(k, kc_avx512(), 1);
        // A row of tiles at a time reads the whole block of packed b for each tile of
        // a: the block stays within half the L2.
        // So does a single block of a (m <= MC) against a column-major b on AMD CPUs:
        // each packed panel is read once, by the column of tiles right after the pass
        // that packed it, which found it in L2 rather than L3 (C1 fc1's input gradient,
        // 50 x 1024 x 3136, b the transposed weight: 6.4 MiB packed at NC, 512 KiB at
        // 256 columns; 104-126 -> 131-141 GFLOP/s alone, session 16). A row-major b
        // lost (its 4 KiB rows then read in 1 KiB runs: 126 -> 109).
        let in_l2 = rows_first || (caches().amd && m <= MC && b.strides()[0] == 1 && b.strides()[1] != 1);
        let nc = if in_l2 { (caches().l2 / 2 / (4 * kc) / (2 * NR) * (2 * NR)).clamp(2 * NR, NC) } else { NC };
        (kc, block(n, nc, 2 * NR), 2 * MR)
    } else {
        (block(k, KC, 1), block(n, NC, NR), MR)
    };
    // The kernel walks a block of c one column of tiles at a time, down its rows. When
    // c's rows are a multiple of 4 KiB apart, every row of that column falls in the same
    // two L1 sets; with a short k, writing c is nearly all of the work, and those writes
    // evict each other (M3's 256 x 10 x 1024 input gradient took 94 us, 28 us with rows
    // 1000 floats apart). Blocks one tile tall walk c along its rows instead: 39 us.
    // Where the rows do not alias, or k is deep, the taller blocks are faster (256 x 10
    // x 1000: 28 against 36 us; M2's 128 x 10 x 128: 1.7 against 2.0 us).
    let aliased = k <= THIN && c_aliased && c.strides()[1] == 1;
    let mc_max = if aliased { tile_rows } else { block(m, MC, tile_rows) };
    let b_len = kc_max * nc_max.next_multiple_of(NR);
    let a_len = kc_max * mc_max.next_multiple_of(MR);
    // When b is at most two panels wide, a block of packed a would be used at most twice:
    // the AVX2 kernel then reads a in place.
    let direct_kernel = match kern {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma if n <= 2 * NR => Some(Direct(())),
        _ => None,
    };
    let direct = direct_kernel.is_some();
    // A row-major a is read in place by the column kernel, not packed, when b has few
    // panels: each block of a is then read only a few times, and packing it cost more
    // than reading 6 rows at a time (M2, at most 16 panels: 1.587 -> 1.564 ms; M3's 64
    // panels: 2% slower in place). Rows a multiple of 4 KiB apart would share one L1
    // set, so they are packed.
    // The AVX-512 kernel reads a column-major a (a transposed view, as in a weight
    // gradient `x^T g`) in place too: a tile's 12 values of a step are then contiguous.
    let (rs_a, cs_a) = (a.strides()[0], a.strides()[1]);
    let unit_step = |unit: isize, step: isize| unit == 1 && step % 1024 != 0;
    let a_in_place = !direct
        && avx2_fma()
        && (unit_step(cs_a, rs_a) || (wide && unit_step(rs_a, cs_a)))
        && n <= IN_PLACE_PANELS * NR
        && c.strides()[1] == 1;
    // The AVX-512 kernel packs a row-major b itself, in the first tile of each column
    // of the first block of a (which has at least one full tile); but not when b's rows
    // are a multiple of 4 KiB apart: each step of that tile then reads a new page, and
    // the packing pass is cheaper (M3's 256 x 1024 x 1024 forward 113-126 GFLOP/s fused
    // against 129-135 packed first, M2's rows 1 KiB apart 144 fused against 134).
    // On AMD CPUs a single block of a (m <= MC) fuses it all the same: the packing tile
    // prefetches b's rows ahead (`PACK_B_AHEAD`), and the pass it saves is one over b
    // alone, each packed element then used by at most MC rows. C1's step (fc1's forward,
    // 50 x 3136 x 1024, the weight cold in cache after the conv layers) 23.9-25.5 ->
    // 22.3-23.6 ms at 1 thread (session 16, three alternating runs).
    let row_major_b = b.strides()[1] == 1 && (b.strides()[0] % 1024 != 0 || (caches().amd && m <= MC));
    let fuse_pack = wide && row_major_b && n % NR == 0 && m >= 2 * MR;
    let out = Out::of(&mut c);
    // The edge tiles' accumulators: every kernel overwrites all of it, so it is zeroed
    // once per call, not once per tile.
    let mut tile = [[0.0f32; NR]; MR];
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        // b_len is a multiple of 16 (nc_max rounded up to NR): apack is aligned too.
        let (bpack, apack) = aligned(&mut scratch, a_len + b_len).split_at_mut(b_len);
        let apack = &mut apack[..a_len];
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                let beta = if pc == 0 { beta } else { 1.0 };
                if !fuse_pack {
                    pack_b(&b, pc, kc, jc, nc, bpack);
                }
                for ic in (0..m).step_by(mc_max) {
                    let mc = mc_max.min(m - ic);
                    if !direct && !a_in_place {
                        pack_a(&a, ic, mc, pc, kc, apack);
                    }
                    // The last block along k writes c's final values: the AVX-512 kernel
                    // applies an `Act` to them in registers.
                    let act = match &epi {
                        Some(e) if wide && pc + kc == k => e.kernel_act(jc),
                        _ => None,
                    };
                    #[cfg(target_arch = "x86_64")]
                    if wide {
                        let panels = nc.div_ceil(NR);
                        assert!(
                            bpack.len() >= panels * kc * NR && (a_in_place || apack.len() >= mc.div_ceil(MR) * kc * MR)
                        );
                        // SAFETY: avx512f, avx2 and fma were detected (`Avx512`); bpack
                        // holds the block's panels (asserted; with `src`, the first block
                        // of a packs them from the live row-major `b`, whose rows pc..pc +
                        // kc and columns jc..jc + nc it reads, nc % NR == 0, and mc >= 12
                        // since m >= 12); apack holds mc.div_ceil(MR) packed panels
                        // (asserted), or the rows ic..ic + mc, columns pc..pc + kc read in
                        // place are inside the live view `a`; rows ic..ic + mc and columns
                        // jc..jc + nc are inside `c`, which `out` points into (unit column
                        // stride) and which stays mutably borrowed (unaliased) for this
                        // whole call; `act`'s bias, if any, points into the live bias (one
                        // value per column of the caller's c, asserted by `sgemm_act`) at
                        // this block's first column (`Epi::kernel_act`).
                        unsafe {
                            let at = out.ptr.offset(ic as isize * out.rs + jc as isize);
                            let src = (fuse_pack && ic == 0).then(|| {
                                let ldb = b.strides()[0];
                                (b.as_ptr().offset(pc as isize * ldb + jc as isize), ldb)
                            });
                            let bp = bpack.as_mut_ptr();
                            if a_in_place {
                                let sa = (rs_a, cs_a);
                                let ap = a.as_ptr().offset(ic as isize * sa.0 + pc as isize * sa.1);
                                block_avx512::<false>(
                                    kc, ap, sa, mc, bp, src, nc, at, out.rs, alpha, beta, act, rows_first,
                                );
                            } else {
                                let ap = apack.as_ptr();
                                block_avx512::<true>(
                                    kc,
                                    ap,
                                    (0, 0),
                                    mc,
                                    bp,
                                    src,
                                    nc,
                                    at,
                                    out.rs,
                                    alpha,
                                    beta,
                                    act,
                                    rows_first,
                                );
                            }
                        }
                    }
                    for (jp, bpanel) in
                        bpack.chunks_exact(kc * NR).take(if wide { 0 } else { nc.div_ceil(NR) }).enumerate()
                    {
                        let j0 = jc + jp * NR;
                        let nr = NR.min(n - j0);
                        // A row-major c against packed (or in-place) a: one kernel call
                        // for the whole column of tiles.
                        #[cfg(target_arch = "x86_64")]
                        if matches!(kern, Kernel::Avx2Fma) && !direct && nr == NR && out.cs == 1 {
                            // SAFETY: avx2 and fma were detected (`Avx2Fma`); apack holds
                            // mc.div_ceil(MR) packed panels of kc * MR (asserted), or the
                            // rows ic..ic + mc, columns pc..pc + kc read in place are inside
                            // the live row-major `a`; bpanel holds kc * NR; rows ic..ic + mc
                            // and columns j0..j0 + NR are inside `c` (ic + mc <= m,
                            // j0 + NR <= n), which `out` points into and which stays
                            // mutably borrowed (unaliased) for this whole call.
                            unsafe {
                                let at = out.ptr.offset(ic as isize * out.rs + j0 as isize);
                                if a_in_place {
                                    let sa = (a.strides()[0], a.strides()[1]);
                                    let ap = a.as_ptr().offset(ic as isize * sa.0 + pc as isize * sa.1);
                                    column_avx2::<false>(kc, ap, sa, mc, bpanel, at, out.rs, alpha, beta);
                                } else {
                                    assert!(apack.len() >= mc.div_ceil(MR) * kc * MR);
                                    column_avx2::<true>(
                                        kc,
                                        apack.as_ptr(),
                                        (0, 0),
                                        mc,
                                        bpanel,
                                        at,
                                        out.rs,
                                        alpha,
                                        beta,
                                    );
                                }
                            }
                            continue;
                        }
                        for ip in 0..mc.div_ceil(MR) {
                            let i0 = ic + ip * MR;
                            let mr = MR.min(m - i0);
                            // A full tile of a row-major c is written straight from the
                            // registers; an edge tile or other strides go through `tile`.
                            let sink = if mr == MR && nr == NR && out.cs == 1 {
                                // SAFETY: (i0, j0) is inside `c`; see `store` below.
                                let at = unsafe { out.ptr.offset(i0 as isize * out.rs + j0 as isize) };
                                Sink::Out { at, rs: out.rs, alpha, beta }
                            } else {
                                Sink::Tile(&mut tile)
                            };
                            let direct_tile = sink.is_out();
                            match direct_kernel {
                                Some(kd) if mr == MR => micro_direct(kd, &a, i0, pc, kc, bpanel, sink),
                                _ => {
                                    let apanel = if direct || a_in_place {
                                        // The bottom edge of an unpacked a: pack just it.
                                        pack_a(&a, i0, mr, pc, kc, apack);
                                        &apack[..kc * MR]
                                    } else {
                                        &apack[ip * kc * MR..(ip + 1) * kc * MR]
                                    };
                                    micro(kern, kc, apanel, bpanel, sink);
                                }
                            }
                            if !direct_tile {
                                // SAFETY: i0 + mr <= m and j0 + nr <= n, so every element
                                // written is inside `c`, which `out` points into and which
                                // stays mutably borrowed (unaliased) for this whole call.
                                unsafe { store(&out, i0, j0, mr, nr, &tile, alpha, beta) };
                            }
                        }
                    }
                    if let (Some(e), None) = (&epi, act) {
                        if pc + kc == k {
                            // This block of c (mc x nc, in L2) is final.
                            e.apply(c.slice_mut(crate::ndarray::s![ic..ic + mc, jc..jc + nc]), ic, jc);
                        }
                    }
                }
            }
        }
    });
}

/// Where a micro-kernel leaves its `MR x NR` result.
pub(super) enum Sink<'t> {
    /// Into a tile of accumulators, for `store` to write back.
    Tile(&'t mut Tile),
    /// Straight into a full tile of a row-major `c` at `at` (rows `rs` apart):
    /// `c = alpha * acc + beta * c`, reading `c` only if `beta != 0`.
    Out { at: *mut f32, rs: isize, alpha: f32, beta: f32 },
}

impl Sink<'_> {
    pub(super) fn is_out(&self) -> bool {
        matches!(self, Sink::Out { .. })
    }
}

/// `acc = a[i0..i0 + MR, pc..pc + kc] x b_panel`, reading `a` in place (any strides).
#[inline]
pub(super) fn micro_direct(
    _proof: Direct,
    a: &ArrayView2<'_, f32>,
    i0: usize,
    pc: usize,
    kc: usize,
    b: &[f32],
    acc: Sink<'_>,
) {
    let (m, k) = a.dim();
    assert!(i0 + MR <= m && pc + kc <= k && b.len() >= kc * NR);
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    // SAFETY: `Direct` exists only once avx2 and fma were detected; the rows i0..i0 + MR
    // and columns pc..pc + kc read are inside the live view `a` (asserted above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let base = a.as_ptr().offset(i0 as isize * rs + pc as isize * cs);
        micro_avx2::<false>(kc, base, (rs, cs), b, acc)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (rs, cs, acc);
}

/// `acc = a_panel x b_panel` over depth `kc`: `a` holds `kc` columns of `MR`, `b`
/// holds `kc` rows of `NR`.
#[inline]
pub(super) fn micro(kern: Kernel, kc: usize, a: &[f32], b: &[f32], acc: Sink<'_>) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    match kern {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` and `Avx512` are only chosen after detecting avx2 and fma on
        // this CPU.
        Kernel::Avx2Fma | Kernel::Avx512 => unsafe { micro_avx2::<true>(kc, a.as_ptr(), (0, 0), b, acc) },
        Kernel::Portable => match acc {
            Sink::Tile(t) => micro_portable(kc, a, b, t),
            Sink::Out { at, rs, alpha, beta } => {
                let mut t = [[0.0f32; NR]; MR];
                micro_portable(kc, a, b, &mut t);
                for (r, trow) in t.iter().enumerate() {
                    // SAFETY: `Sink::Out` points at MR rows of NR writable elements, rs
                    // apart (see `product`).
                    let row = unsafe { std::slice::from_raw_parts_mut(at.offset(r as isize * rs), NR) };
                    for (d, &v) in row.iter_mut().zip(trow) {
                        *d = if beta == 0.0 { alpha * v } else { alpha * v + beta * *d };
                    }
                }
            }
        },
    }
}

/// `c[i0.., j0..] = alpha * tile + beta * c` over the `mr x nr` corner of `tile`;
/// `beta == 0` does not read `c`.
///
/// # Safety
/// `out` must point to a live `m x n` view with its strides, not aliased elsewhere,
/// and `i0 + mr <= m`, `j0 + nr <= n`.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store(out: &Out, i0: usize, j0: usize, mr: usize, nr: usize, tile: &Tile, alpha: f32, beta: f32) {
    if out.rs == 1 && out.cs != 1 {
        // Column-major-like c (e.g. the transposed product): write down its columns.
        for j in 0..nr {
            let col = out.ptr.offset(i0 as isize + (j0 + j) as isize * out.cs);
            for (i, trow) in tile.iter().enumerate().take(mr) {
                let d = col.add(i);
                *d = if beta == 0.0 { alpha * trow[j] } else { alpha * trow[j] + beta * *d };
            }
        }
        return;
    }
    for (i, trow) in tile.iter().enumerate().take(mr) {
        let row = out.ptr.offset((i0 + i) as isize * out.rs + j0 as isize * out.cs);
        if out.cs == 1 && nr == NR {
            let dst = std::slice::from_raw_parts_mut(row, NR);
            if beta == 0.0 {
                for (d, t) in dst.iter_mut().zip(trow) {
                    *d = alpha * t;
                }
            } else {
                for (d, t) in dst.iter_mut().zip(trow) {
                    *d = alpha * t + beta * *d;
                }
            }
        } else {
            for (j, t) in trow.iter().enumerate().take(nr) {
                let d = row.offset(j as isize * out.cs);
                *d = if beta == 0.0 { alpha * t } else { alpha * t + beta * *d };
            }
        }
    }
}
