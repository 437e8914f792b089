//! Single-precision GEMM, `c = alpha * a x b + beta * c`, that allocates nothing in
//! steady state.
//!
//! BLIS-style: `b` is packed in `kc x nc` blocks of `NR`-wide row panels, `a` in
//! `mc x kc` blocks of `MR`-tall column panels, and a register-blocked `MR x NR`
//! micro-kernel multiplies one pair of panels; the AVX2 kernel takes a whole column of
//! tiles (every panel of a block of `a` against one panel of `b`) per call, and reads
//! a row-major `a` in place instead of packing it when `b` has few panels. The AVX-512
//! kernel reads the same packing two panels of each at a time (a `2 MR x 2 NR` tile, one
//! 16-lane vector per row of a `b` panel) and reads a column-major `a` in place too. The packing
//! buffers live in thread-local scratch that grows to the largest product a thread has
//! seen and is then reused, so after the first call for given sizes nothing allocates.
//!
//! Packing reads the views through their own strides (any sign, any size), so
//! transposed and stepped views cost only what packing costs. When one side is thin
//! the product is computed as `c^T = b^T x a^T` if that wastes fewer lanes of the
//! micro-kernel, and when `b` is too narrow for packing `a` to pay off, `a` is read in
//! place instead.
//!
//! Thin products (one side of `c` at most `THIN` = 16 wide, like a 784 -> 10 layer) take
//! kernels of their own, which waste no lanes on padding and pack nothing but the thin
//! operand: when `a`'s rows are contiguous, each element of `c` is a dot product along
//! `k`, vectorized over `k` (a `2 x C` block of dots at a time, `4 x C` with AVX-512);
//! when `a`'s columns are contiguous (a transposed view, as in a weight gradient
//! `x^T g`), a `16 x C` block (up to `64 x C` with AVX-512) of `c` is accumulated from
//! `a`'s columns read in place and broadcast elements of `b`.
//!
//! With the `parallel` feature, large products are split into blocks of `c` computed
//! on rayon's threads, each with its own scratch. [`sgemm_then`] runs an epilogue
//! closure on each finished block of `c`; [`sgemm_act`] a bias add, relu and relu's
//! derivative (the generated code's usual epilogues), the first two applied by the
//! AVX-512 kernel in registers as it writes `c`.
//!
//! The micro-kernel is chosen at run time: AVX-512F (`std::arch` intrinsics) where the
//! CPU has it and `c`'s columns are contiguous, else AVX2 + FMA where the CPU has them,
//! otherwise a portable loop the compiler vectorizes for the baseline target; the thin
//! kernels likewise. `beta == 0` overwrites `c` without reading it.
//!
//! # Layout
//!
//! As the `gemm` crate and BLIS are laid out, one concern a file, so that one kernel can
//! be read and changed without the others:
//!
//! - `mod.rs`: the entry points, the split across threads and the choice between the
//!   thin and the packed product and of its orientation;
//! - `driver.rs`: the packed product's loops over blocks and its blocking constants;
//! - `pack.rs`: packing `a` and `b` into panels;
//! - `thin.rs`: the thin products' drivers;
//! - one file per instruction set with its micro-kernels: `portable.rs`, `avx2.rs` and
//!   `avx512.rs` (the last two only on x86-64);
//! - `dispatch.rs`: which instruction set runs ([`widest`], `MODELC_KERNEL`);
//! - `epilogue.rs`: the work fused onto finished blocks of `c` ([`Then`], [`Act`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dispatch;
mod driver;
mod epilogue;
mod pack;
mod portable;
mod thin;
#[cfg(feature = "parallel")]
pub(crate) mod threads;

use crate::ndarray::{ArrayView2, ArrayViewMut2};
use driver::{product, MR, NR};
use epilogue::{Epi, EpiFn};
use thin::thin;
pub use thin::{thin_bits, thin_from};

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::transpose16;
pub use dispatch::widest;
pub(crate) use dispatch::{kernel, Kernel};
#[cfg(test)]
pub(crate) use dispatch::{kernels, FORCE_KERNEL};
pub use epilogue::{Act, Then};

/// `c = alpha * a x b + beta * c` for `f32` views of any strides.
///
/// Panics if the shapes do not agree: `a` is `m x k`, `b` is `k x n`, `c` is `m x n`.
pub fn sgemm(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: ArrayViewMut2<'_, f32>) {
    sgemm_then(alpha, a, b, beta, c, None);
}

/// [`sgemm`], then `then` over every element of `c`, block by block while each block is
/// still in cache (the blocks cover `c` exactly once, in no particular order). This is
/// how generated code fuses elementwise work into a product (see [`sgemm_act`] for the
/// bias add and activation the kernels apply themselves).
pub fn sgemm_then(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    then: Option<Then<'_>>,
) {
    let epi = then.map(|f| Epi { f: EpiFn::Then(f), transposed: false, i0: 0, j0: 0 });
    sgemm_epi(alpha, a, b, beta, c, epi);
}

/// [`sgemm`], then `act` on every element of `c`. The AVX-512 kernel applies a bias
/// add and relu in registers as it writes `c`'s final values (a row-major `c` and a
/// contiguous `bias`); a mask, and every other path, is applied to each finished block
/// of `c`, as [`sgemm_then`] does (see `Epi::kernel_act` for why the mask is).
///
/// Panics if the shapes do not agree (`bias` must have `c`'s columns, `mask` `c`'s shape).
pub fn sgemm_act(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    act: Act<'_>,
) {
    let (m, n) = c.dim();
    assert!(
        act.bias.is_none_or(|v| v.len() == n),
        "sgemm_act: bias of {:?} for c of {:?}",
        act.bias.map(|v| v.len()),
        (m, n)
    );
    assert!(
        act.mask.is_none_or(|v| v.dim() == (m, n)),
        "sgemm_act: mask of {:?} for c of {:?}",
        act.mask.map(|v| v.dim()),
        (m, n)
    );
    sgemm_epi(alpha, a, b, beta, c, Some(Epi { f: EpiFn::Act(act), transposed: false, i0: 0, j0: 0 }));
}

/// [`sgemm_act`] that also returns the OR of the bits of every element of `a`, sign
/// cleared, where the thin kernel that computes it reads `a` once anyway
/// ([`thin_bits`]); `None` where the product takes another kernel (computed all the
/// same).
pub fn sgemm_act_bits(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    act: Act<'_>,
) -> Option<u32> {
    let n = c.dim().1;
    if act.bias.is_some_and(|v| v.len() != n) || act.mask.is_some_and(|v| v.dim() != c.dim()) {
        sgemm_act(alpha, a, b, beta, c, act);
        return None;
    }
    match thin_bits(alpha, a, b, beta, c.view_mut()) {
        Some(bits) => {
            // As `serial` does after a thin product: the epilogue over all of c at once.
            Epi { f: EpiFn::Act(act), transposed: false, i0: 0, j0: 0 }.apply(c, 0, 0);
            Some(bits)
        }
        None => {
            sgemm_act(alpha, a, b, beta, c, act);
            None
        }
    }
}

fn sgemm_epi(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    epi: Option<Epi<'_>>,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert!(k == k2 && c.dim() == (m, n), "sgemm: shapes {:?} x {:?} -> {:?}", a.dim(), b.dim(), c.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        if beta == 0.0 {
            c.fill(0.0);
        } else if beta != 1.0 {
            c.map_inplace(|v| *v *= beta);
        }
        if let Some(e) = &epi {
            e.apply(c, 0, 0);
        }
        return;
    }
    #[cfg(feature = "parallel")]
    let (c, epi) = match parallel(alpha, a, b, beta, c, epi) {
        None => return,
        Some(back) => back,
    };
    serial(alpha, a, b, beta, c, epi);
}

/// Products of at least this many multiply-adds are split across threads (`parallel`
/// feature). Measured on M1-M3 (2 cores, rayon then): below about 2M the fork and join
/// and the second packing of the shared operand cost more than the second core gains.
#[cfg(feature = "parallel")]
const PARALLEL_MIN: usize = 1 << 21;

#[cfg(all(test, feature = "parallel"))]
thread_local! {
    /// Tests set this to compute every product on the calling thread alone, the
    /// reference the split products must match to the bit.
    pub(crate) static FORCE_SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The `parallel` feature: computes a large packed product as one block of `c` per
/// thread ([`threads`]) and returns `None`, or hands `c` and `epi` back (`Some`) for the
/// caller to compute on this thread alone.
///
/// The result is the same bits as one thread's, whatever the thread count: the
/// orientation (`c` or `c^T`), the kernel and the blocking along `k` are chosen once for
/// the whole product, as [`serial`] would; `c` is split along its longer side only,
/// never along `k`, at multiples of the AVX-512 tile (12 rows, 32 columns) so that every
/// tile, edge tiles included, is the one the whole product computes; and each part
/// calls the packed product directly rather than choosing again for its own shape (a
/// part narrow enough for the AVX2 kernel's direct path, or thin, would round
/// differently). Thin products (one side at most 16) are not split here: their kernels'
/// tiles depend on the shape, and `thin.rs` (`split_thin`) splits them along their long
/// side instead.
#[cfg(feature = "parallel")]
fn parallel<'c, 'e>(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'c, f32>,
    epi: Option<Epi<'e>>,
) -> Option<(ArrayViewMut2<'c, f32>, Option<Epi<'e>>)> {
    let ((m, k), n) = (a.dim(), b.dim().1);
    #[cfg(test)]
    if FORCE_SERIAL.with(|f| f.get()) {
        return Some((c, epi));
    }
    // The size first: the pool starts (and allocates its threads) at the first product
    // it splits, not at the first product.
    if m * n * k < PARALLEL_MIN || m.min(n) <= thin::THIN {
        return Some((c, epi));
    }
    let threads = threads::count();
    if threads < 2 {
        return Some((c, epi));
    }
    let transposed = transposed_is_cheaper(&a, &b, &c);
    let (m, n) = if transposed { (n, m) } else { (m, n) };
    let (along_n, len, unit) = if n >= m { (true, n, SPLIT_COLS) } else { (false, m, SPLIT_ROWS) };
    // PARTS_PER_THREAD parts a thread, of at least two units each (a part at most 2 NR
    // wide would take the AVX2 kernel's direct path).
    let parts = (PARTS_PER_THREAD * threads).min(len / (2 * unit)).min(MAX_PARTS);
    if parts < 2 {
        return Some((c, epi));
    }
    let split = Split { parts, along_n, len, unit };
    if transposed {
        split.run(alpha, b.reversed_axes(), a.reversed_axes(), beta, c.reversed_axes(), epi.map(Epi::transposed));
    } else {
        split.run(alpha, a, b, beta, c, epi);
    }
    None
}

/// The split unit along `c`'s rows and columns: the AVX-512 kernel's tile.
#[cfg(feature = "parallel")]
const SPLIT_ROWS: usize = 2 * MR;
#[cfg(feature = "parallel")]
const SPLIT_COLS: usize = 2 * NR;

/// How [`parallel`] cuts `c`: into `parts` blocks along its columns (`along_n`) or rows,
/// of `len`, at multiples of `unit`.
#[cfg(feature = "parallel")]
#[derive(Clone, Copy)]
struct Split {
    parts: usize,
    along_n: bool,
    len: usize,
    unit: usize,
}

#[cfg(feature = "parallel")]
impl Split {
    /// Where part `i` starts (part `parts` is the end).
    fn cut(self, i: usize) -> usize {
        (self.len * i / self.parts).next_multiple_of(self.unit).min(self.len)
    }

    /// The packed product, one part a thread.
    fn run(
        self,
        alpha: f32,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        beta: f32,
        c: ArrayViewMut2<'_, f32>,
        epi: Option<Epi<'_>>,
    ) {
        use crate::ndarray::{s, Axis};
        use std::sync::Mutex;
        let axis = if self.along_n { Axis(1) } else { Axis(0) };
        let mut cs: [Option<ArrayViewMut2<'_, f32>>; MAX_PARTS] = std::array::from_fn(|_| None);
        let mut rest = c;
        for (i, slot) in cs.iter_mut().enumerate().take(self.parts) {
            let (part, more) = rest.split_at(axis, self.cut(i + 1) - self.cut(i));
            *slot = Some(part);
            rest = more;
        }
        let cs: [Mutex<Option<ArrayViewMut2<'_, f32>>>; MAX_PARTS] = cs.map(Mutex::new);
        #[cfg(test)]
        let forced = FORCE_KERNEL.with(|f| f.get());
        let part = |i: usize| {
            #[cfg(test)]
            FORCE_KERNEL.with(|f| f.set(forced));
            let c = cs[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each part runs once");
            let (lo, hi) = (self.cut(i), self.cut(i + 1));
            if self.along_n {
                product(alpha, a, b.slice_move(s![.., lo..hi]), beta, c, epi.map(|e| e.offset(0, lo)));
            } else {
                product(alpha, a.slice_move(s![lo..hi, ..]), b, beta, c, epi.map(|e| e.offset(lo, 0)));
            }
        };
        threads::run(self.parts, &part);
    }
}

/// Parts of a split product per thread. Parts are claimed by whichever thread is free
/// (`threads::run`), so with more parts than threads a helper whose core is busy with
/// another process would hold up a smaller part; but each part packs the shared operand
/// again. On the 2-core Xeon at a load average of 4-5 from other processes, 2 parts a
/// thread never reached the best rounds of 1 (M3 15.8-19.2 ms against 9.8-19.3, M2
/// 1.03 against 0.82-0.99 ms, three alternating runs each), so 1.
#[cfg(feature = "parallel")]
const PARTS_PER_THREAD: usize = 1;

/// Most parts a product is split into (threads beyond it idle).
#[cfg(feature = "parallel")]
const MAX_PARTS: usize = 64;

/// Whether the packed product costs less computed as `c^T = b^T x a^T`. Rough cycles
/// either way round: kernel lanes (16 FMA lanes a cycle), a cycle per packed element
/// (`a` is read in place when `b` is at most two panels wide), and a penalty for writing
/// `c` across its rows.
fn transposed_is_cheaper(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>, c: &ArrayViewMut2<'_, f32>) -> bool {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let direct_ok = !matches!(kernel(), Kernel::Portable);
    let cost = |m: usize, n: usize, unit_cols: bool| {
        let lanes = (m.div_ceil(MR) * MR * n.div_ceil(NR) * NR * k) as f64 / 16.0;
        let pack_a = if direct_ok && n <= 2 * NR { 0.0 } else { (m * k) as f64 };
        (lanes + pack_a + (k * n) as f64) * if unit_cols { 1.0 } else { 1.1 }
    };
    cost(n, m, c.strides()[0] == 1) < cost(m, n, c.strides()[1] == 1)
}

/// One thread's product: a thin kernel if one fits, otherwise the packed product in the
/// cheaper orientation.
fn serial(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    epi: Option<Epi<'_>>,
) {
    let (m, n) = (a.dim().0, b.dim().1);
    if m == 0 || n == 0 {
        return;
    }
    if thin(alpha, a, b, beta, c.view_mut(), epi) {
        return;
    }
    if transposed_is_cheaper(&a, &b, &c) {
        let ct = c.reversed_axes();
        product(alpha, b.reversed_axes(), a.reversed_axes(), beta, ct, epi.map(Epi::transposed));
    } else {
        product(alpha, a, b, beta, c, epi);
    }
}
