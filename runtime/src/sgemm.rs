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

use std::cell::RefCell;

use crate::ndarray::{s, ArrayView1, ArrayView2, ArrayViewMut2, Zip};

/// Rows of the micro-kernel's tile (broadcast side, from `a`).
const MR: usize = 6;
/// Columns of the micro-kernel's tile (vector side, from `b`): two 8-lane vectors.
const NR: usize = 16;
/// Depth of a packed block: the `KC x NR` panel of `b` (24 KiB) stays in L1 while the
/// `MR x KC` panels of `a` stream past it from L2. Measured on M2/M3 (best of five
/// interleaved runs): 256, 384 and 512 within 1.5% of each other, 384 fastest.
const KC: usize = 384;
/// Rows of a packed block of `a` (`MC x KC` = 252 KiB stays in L2).
const MC: usize = 168;
/// Columns of a packed block of `b` (`KC x NC` = 6 MiB stays in L3).
const NC: usize = 4080;
/// Most panels of `b` for which `a` is read in place by the column kernel rather than
/// packed (see `product`). The same for the AVX-512 kernel, measured on its own (M2
/// 1.5-2% slower with a packed at 0 or 8 panels; M3 the same at 16 and 64).
const IN_PLACE_PANELS: usize = 16;
/// `KC` of the AVX-512 kernel. Measured on M3's step (interleaved in one process, best
/// of 60 rounds each): 256 11.04 ms, 384 11.01, 512 10.73, 768 10.89, 1024 11.19; M2
/// was the same for all (k <= 784). The pair of `b` panels (64 KiB at 512) then
/// streams from L2 at 128 bytes a step, which the 12 rows of FMAs a step hide.
const KC_512: usize = 512;
/// Steps packed across all panels at a time (see [`pack_runs`]).
const PACK_ROWS: usize = 8;

thread_local! {
    /// Packing scratch: the packed block of `b` followed by the packed block of `a`.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One `MR x NR` tile of accumulators.
type Tile = [[f32; NR]; MR];

/// `c = alpha * a x b + beta * c` for `f32` views of any strides.
///
/// Panics if the shapes do not agree: `a` is `m x k`, `b` is `k x n`, `c` is `m x n`.
pub fn sgemm(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: ArrayViewMut2<'_, f32>) {
    sgemm_then(alpha, a, b, beta, c, None);
}

/// An epilogue: called on finished blocks of `c` as `then(block, i0, j0)`, where the
/// block's element `(r, s)` is `c[i0 + r, j0 + s]`; it may rewrite the block in place.
pub type Then<'f> = &'f (dyn Fn(ArrayViewMut2<'_, f32>, usize, usize) + Sync);

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

/// The epilogue of a layer's product that the kernels know: `c = relu(c + bias) *
/// step(mask)`, each part optional, on `c`'s final values (`bias`: one value per column
/// of `c`; `mask`: `c`'s shape; `relu(x)` is `x` where `x > 0`, else 0, and `step(x)` 1
/// where `x > 0`, else 0, as in [`kernels`](crate::kernels)). A layer's bias add + relu is then
/// no pass over memory at all; relu's derivative from relu's output is one pass over
/// each finished block while it is in cache.
#[derive(Clone, Copy, Debug)]
pub struct Act<'a> {
    /// Added to every row of `c`.
    pub bias: Option<ArrayView1<'a, f32>>,
    /// `relu` after the bias.
    pub relu: bool,
    /// Multiplies `c` by `step(mask)`, last.
    pub mask: Option<ArrayView2<'a, f32>>,
}

impl Act<'_> {
    /// The block of `c` whose element `(0, 0)` is `c[i0, j0]`, in place: the reference
    /// the kernels' own application of it matches to the bit.
    pub(crate) fn apply(&self, block: ArrayViewMut2<'_, f32>, i0: usize, j0: usize) {
        if self.relu {
            self.apply_with::<true>(block, i0, j0);
        } else {
            self.apply_with::<false>(block, i0, j0);
        }
    }

    /// [`Act::apply`] with `relu` a constant, so that no loop tests it (a test in the
    /// loop made the mask's pass 15% slower). Rows that are contiguous, in the block and
    /// the mask, go through plain slice loops compiled for the widest vectors
    /// ([`widest`]); others through ndarray's `Zip`.
    fn apply_with<const RELU: bool>(&self, mut block: ArrayViewMut2<'_, f32>, i0: usize, j0: usize) {
        let (rows, cols) = block.dim();
        if !RELU && self.bias.is_none() && self.mask.is_none() {
            return;
        }
        let bias = self.bias.map(|b| b.slice_move(s![j0..j0 + cols]));
        let mask = self.mask.map(|m| m.slice_move(s![i0..i0 + rows, j0..j0 + cols]));
        let relu = |x: f32| if !RELU || x > 0.0 { x } else { 0.0 };
        let step = |x: f32| if x > 0.0 { 1.0 } else { 0.0 };
        let contiguous = block.strides()[1] == 1
            && bias.is_none_or(|b| b.strides()[0] == 1)
            && mask.is_none_or(|m| m.strides()[1] == 1);
        if contiguous {
            widest(
                #[inline(always)]
                || {
                    for (r, mut row) in block.rows_mut().into_iter().enumerate() {
                        // Unit strides, checked above.
                        let o = row.as_slice_mut().expect("a row with a unit stride");
                        let b = bias.as_ref().map(|b| b.as_slice().expect("a bias with a unit stride"));
                        let h = mask.as_ref().map(|m| m.row(r).to_slice().expect("a mask row with a unit stride"));
                        match (b, h) {
                            (Some(b), None) => o.iter_mut().zip(b).for_each(|(v, &b)| *v = relu(*v + b)),
                            (None, None) => o.iter_mut().for_each(|v| *v = relu(*v)),
                            (None, Some(h)) => o.iter_mut().zip(h).for_each(|(v, &h)| *v = relu(*v) * step(h)),
                            (Some(b), Some(h)) => {
                                o.iter_mut().zip(b).zip(h).for_each(|((v, &b), &h)| *v = relu(*v + b) * step(h))
                            }
                        }
                    }
                },
            );
            return;
        }
        match (bias, mask) {
            (Some(b), None) => Zip::from(&mut block).and_broadcast(&b).for_each(|v, &b| *v = relu(*v + b)),
            (None, None) => block.map_inplace(|v| *v = relu(*v)),
            (None, Some(m)) => Zip::from(&mut block).and(&m).for_each(|v, &h| *v = relu(*v) * step(h)),
            (Some(b), Some(m)) => {
                Zip::from(&mut block).and_broadcast(&b).and(&m).for_each(|v, &b, &h| *v = relu(*v + b) * step(h))
            }
        }
    }
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
    {
        let threads = rayon::current_num_threads();
        if threads > 1 && m * n * k >= PARALLEL_MIN {
            return split(alpha, a, b, beta, c, threads, epi);
        }
    }
    serial(alpha, a, b, beta, c, epi);
}

/// An epilogue with where its blocks sit: `c` may be computed transposed (`c^T = b^T
/// a^T`) or as a block of the caller's `c` starting at `(i0, j0)` (in the caller's
/// coordinates).
#[derive(Clone, Copy)]
struct Epi<'f> {
    f: EpiFn<'f>,
    transposed: bool,
    i0: usize,
    j0: usize,
}

/// The two kinds of epilogue.
#[derive(Clone, Copy)]
enum EpiFn<'f> {
    Then(Then<'f>),
    Act(Act<'f>),
}

impl Epi<'_> {
    /// Calls the epilogue on `block`, which starts at `(i, j)` of the `c` this `Epi`
    /// was handed with.
    fn apply(&self, block: ArrayViewMut2<'_, f32>, i: usize, j: usize) {
        let (block, i, j) = if self.transposed {
            (block.reversed_axes(), self.i0 + j, self.j0 + i)
        } else {
            (block, self.i0 + i, self.j0 + j)
        };
        match &self.f {
            EpiFn::Then(f) => f(block, i, j),
            EpiFn::Act(act) => act.apply(block, i, j),
        }
    }

    /// Where the AVX-512 kernel finds the [`Act`] for a block of `c` starting at column
    /// `j` (not transposed), if it can apply it itself: a bias add and relu, the bias
    /// contiguous. A mask is applied to each finished block instead: read in the
    /// kernel's write-back, its rows (as far apart as c's, often 4 KiB, and at the same
    /// offset within a page) fell in the same L1 sets as c's and evicted them. M3's
    /// `dz2 w2^T` took 2.1-4.4% longer than the product alone that way, 1.3-1.6% as a
    /// pass over the finished block (alternating runs, against the hand-written step's
    /// product and its own pass).
    fn kernel_act(&self, j: usize) -> Option<ActPtrs> {
        let EpiFn::Act(act) = &self.f else { return None };
        if self.transposed || act.mask.is_some() {
            return None;
        }
        let bias = match &act.bias {
            Some(b) => b.as_slice()?[self.j0 + j..].as_ptr(),
            None => std::ptr::null(),
        };
        Some(ActPtrs { bias, relu: act.relu })
    }

    /// The same epilogue for the transposed product (the offsets stay in the
    /// coordinates of the `c` the caller handed in).
    fn transposed(self) -> Self {
        Epi { transposed: !self.transposed, ..self }
    }

    /// The same epilogue for the block of `c` at `(i, j)`.
    #[cfg(feature = "parallel")]
    fn offset(self, i: usize, j: usize) -> Self {
        if self.transposed {
            Epi { i0: self.i0 + j, j0: self.j0 + i, ..self }
        } else {
            Epi { i0: self.i0 + i, j0: self.j0 + j, ..self }
        }
    }
}

/// The part of an [`Act`] the AVX-512 kernel applies itself, for the block of `c` it
/// writes: `bias` at the block's first column (null where absent) and `relu`. A mask is
/// applied to the finished block instead (see [`Epi::kernel_act`]).
#[derive(Clone, Copy)]
struct ActPtrs {
    bias: *const f32,
    relu: bool,
}

impl ActPtrs {
    /// The same for the part of the block `cols` columns right.
    fn offset(self, cols: usize) -> Self {
        let bias = if self.bias.is_null() { self.bias } else { self.bias.wrapping_add(cols) };
        ActPtrs { bias, ..self }
    }
}

/// Products of at least this many multiply-adds are split across threads (`parallel`
/// feature). Measured on M1-M3 (2 cores): below about 2M the fork and join and the
/// second packing of the shared operand cost more than the second core gains.
#[cfg(feature = "parallel")]
const PARALLEL_MIN: usize = 1 << 21;

/// Splits `c` into `parts` blocks of whole micro-tiles, along its longer side, and
/// computes them with `rayon::join` (each thread packs into its own scratch).
#[cfg(feature = "parallel")]
fn split(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    parts: usize,
    epi: Option<Epi<'_>>,
) {
    use crate::ndarray::Axis;
    let (m, n) = c.dim();
    let left = parts / 2;
    if parts < 2 {
        return serial(alpha, a, b, beta, c, epi);
    }
    if n >= m {
        let at = (n * left / parts).next_multiple_of(NR).min(n);
        let (cl, cr) = c.split_at(Axis(1), at);
        let (bl, br) = b.split_at(Axis(1), at);
        let er = epi.map(|e| e.offset(0, at));
        rayon::join(|| split(alpha, a, bl, beta, cl, left, epi), || split(alpha, a, br, beta, cr, parts - left, er));
    } else {
        let at = (m * left / parts).next_multiple_of(MR).min(m);
        let (cl, cr) = c.split_at(Axis(0), at);
        let (al, ar) = a.split_at(Axis(0), at);
        let er = epi.map(|e| e.offset(at, 0));
        rayon::join(|| split(alpha, al, b, beta, cl, left, epi), || split(alpha, ar, b, beta, cr, parts - left, er));
    }
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
    let (m, k) = a.dim();
    let n = b.dim().1;
    if m == 0 || n == 0 {
        return;
    }
    if thin(alpha, a, b, beta, c.view_mut()) {
        // A thin c is small: the epilogue runs over all of it at once.
        if let Some(e) = &epi {
            e.apply(c, 0, 0);
        }
        return;
    }
    // Lanes the micro-kernel computes, either way round; the transposed product
    // `c^T = b^T x a^T` swaps the roles of m and n.
    // Rough cycles either way round: kernel lanes (16 FMA lanes a cycle), a cycle per
    // packed element (a is read in place when b is at most two panels wide), and a
    // penalty for writing c across its rows.
    let direct_ok = !matches!(kernel(), Kernel::Portable);
    let cost = |m: usize, n: usize, unit_cols: bool| {
        let lanes = (m.div_ceil(MR) * MR * n.div_ceil(NR) * NR * k) as f64 / 16.0;
        let pack_a = if direct_ok && n <= 2 * NR { 0.0 } else { (m * k) as f64 };
        (lanes + pack_a + (k * n) as f64) * if unit_cols { 1.0 } else { 1.1 }
    };
    if cost(n, m, c.strides()[0] == 1) < cost(m, n, c.strides()[1] == 1) {
        let ct = c.reversed_axes();
        product(alpha, b.reversed_axes(), a.reversed_axes(), beta, ct, epi.map(Epi::transposed));
    } else {
        product(alpha, a, b, beta, c, epi);
    }
}

/// The micro-kernels this build carries, each a superset of the one before: the
/// AVX-512 build still runs the AVX2 kernels where its own do not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The kernel products run with: the best this CPU has, at most the one the
/// `MODELC_KERNEL` environment variable names (in tests, at most the one
/// [`FORCE_KERNEL`] names). The runtime's other vector kernels follow it too.
pub(crate) fn kernel() -> Kernel {
    let best = detected();
    #[cfg(test)]
    if let Some(forced) = FORCE_KERNEL.with(|f| f.get()) {
        return forced.min(best);
    }
    best
}

/// Runs `f` compiled for the widest vectors this CPU has and the runtime uses: AVX-512,
/// AVX2 + FMA, or the build's target (the choice of [`sgemm`](crate::sgemm)'s kernel, which
/// `MODELC_KERNEL` caps).
///
/// The runtime is compiled for the user's target, the baseline x86-64 (SSE2) unless
/// they set `target-cpu`. `f` is inlined into a copy of this function per instruction
/// set, where LLVM vectorizes its loops for that set: plain loops over slices, as in
/// `kernels::exp_inplace`, `kernels::map` (the generated elementwise loops), the bias
/// update's row sums, the optimizers' updates and [`Act`]'s block pass. Calls that LLVM
/// does not inline stay compiled for the baseline; ndarray's `Zip::for_each` is one (see
/// `docs/decisions.md`, "Generated elementwise loops"). The results are the same bits on every path: each
/// element is computed by the same operations, and without fast-math LLVM neither
/// contracts `a * b + c` into an FMA nor reorders a sum.
#[inline]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen where avx512f, avx2 and fma were detected.
        Kernel::Avx512 => unsafe { with_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` is only chosen where avx2 and fma were detected.
        Kernel::Avx2Fma => unsafe { with_avx2(f) },
        Kernel::Portable => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The best kernel this CPU has, capped by `MODELC_KERNEL` (`portable`, `avx2` or
/// `avx512`; any other value, or none, leaves the CPU's best), read once.
fn detected() -> Kernel {
    static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        let cpu = cpu_kernel();
        let cap = match std::env::var("MODELC_KERNEL").as_deref() {
            Ok("portable") => Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Ok("avx2") => Kernel::Avx2Fma,
            _ => cpu,
        };
        cap.min(cpu)
    })
}

fn cpu_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            return Kernel::Avx2Fma;
        }
    }
    Kernel::Portable
}

/// Every kernel this CPU runs, from the portable one up (what `tests/sgemm.rs`, which
/// compiles this file as a module of its own, loops over).
#[cfg(test)]
#[allow(dead_code)]
pub(crate) fn kernels() -> Vec<Kernel> {
    let best = detected();
    let all = [
        Kernel::Portable,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512,
    ];
    all.into_iter().filter(|&k| k <= best).collect()
}

#[cfg(test)]
thread_local! {
    /// Tests set this to run at most the named kernel (and skip the paths of the better
    /// ones) on a CPU that has them, so that every kernel is tested on a machine with
    /// the best.
    pub(crate) static FORCE_KERNEL: std::cell::Cell<Option<Kernel>> = const { std::cell::Cell::new(None) };
}

/// Raw access to `c`: base pointer and strides of a live, mutably borrowed view.
struct Out {
    ptr: *mut f32,
    rs: isize,
    cs: isize,
}

/// Splits `0..len` into `ceil(len / max)` blocks of nearly equal size, each a multiple
/// of `unit` (except the last), and returns that block size.
fn block(len: usize, max: usize, unit: usize) -> usize {
    let count = len.div_ceil(max);
    len.div_ceil(count).next_multiple_of(unit).min(max)
}

fn product(
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
    // The AVX-512 kernel's tile is two panels of a by two of b (see `panels_avx512`).
    let (kc_max, nc_max, tile_rows) = if wide {
        (block(k, KC_512, 1), block(n, NC, 2 * NR), 2 * MR)
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
    let aliased = k <= THIN && c.strides()[0] % 1024 == 0 && c.strides()[1] == 1;
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
    // of the first block of a (which has at least one full tile).
    let fuse_pack = wide && b.strides()[1] == 1 && n % NR == 0 && m >= 2 * MR;
    let out = Out { ptr: c.as_mut_ptr(), rs: c.strides()[0], cs: c.strides()[1] };
    // The edge tiles' accumulators: every kernel overwrites all of it, so it is zeroed
    // once per call, not once per tile.
    let mut tile = [[0.0f32; NR]; MR];
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < a_len + b_len {
            scratch.resize(a_len + b_len, 0.0);
        }
        let (bpack, apack) = scratch.split_at_mut(b_len);
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
                                block_avx512::<false>(kc, ap, sa, mc, bp, src, nc, at, out.rs, alpha, beta, act);
                            } else {
                                let ap = apack.as_ptr();
                                block_avx512::<true>(kc, ap, (0, 0), mc, bp, src, nc, at, out.rs, alpha, beta, act);
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
enum Sink<'t> {
    /// Into a tile of accumulators, for `store` to write back.
    Tile(&'t mut Tile),
    /// Straight into a full tile of a row-major `c` at `at` (rows `rs` apart):
    /// `c = alpha * acc + beta * c`, reading `c` only if `beta != 0`.
    Out { at: *mut f32, rs: isize, alpha: f32, beta: f32 },
}

impl Sink<'_> {
    fn is_out(&self) -> bool {
        matches!(self, Sink::Out { .. })
    }
}

/// Proof that the AVX2 + FMA kernel may run (only built after detecting both).
#[derive(Clone, Copy)]
struct Direct(());

/// `acc = a[i0..i0 + MR, pc..pc + kc] x b_panel`, reading `a` in place (any strides).
#[inline]
fn micro_direct(_proof: Direct, a: &ArrayView2<'_, f32>, i0: usize, pc: usize, kc: usize, b: &[f32], acc: Sink<'_>) {
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
fn micro(kern: Kernel, kc: usize, a: &[f32], b: &[f32], acc: Sink<'_>) {
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

fn micro_portable(kc: usize, a: &[f32], b: &[f32], acc: &mut Tile) {
    let mut t = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for i in 0..MR {
            let av = ap[i];
            for j in 0..NR {
                t[i][j] += av * bp[j];
            }
        }
    }
    *acc = t;
}

/// One `MR x NR` tile into `acc`: [`panels_avx2`] over one panel of `a`, packed or (if
/// not `PACKED`) read in place with strides `sa`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` as [`panels_avx2`] for one panel, `b` holds
/// `kc * NR` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2<const PACKED: bool>(kc: usize, a: *const f32, sa: (isize, isize), b: &[f32], acc: Sink<'_>) {
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn column_avx2<const PACKED: bool>(
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

/// Steps of the AVX2 kernel before the end of a panel at which it fetches the tile of
/// `c` it is about to write. Fetched when the panel starts, as BLIS kernels do, the tile
/// was evicted again by the streaming panels before the write-back (`c`'s rows are
/// often 4 KiB apart, so they share one L1 set); 64 steps (about 400 cycles) cover an
/// L3 access. M3's step went from 33.4 to 32.3 ms (best of 6 interleaved runs).
const PREFETCH_STEPS: usize = 64;

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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_avx2<const R: usize, const PACKED: bool>(
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
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA; `a` must hold the panels (packed) or
/// `mc` rows of `kc` (in place), `b` `nc.div_ceil(NR) * kc * NR` elements (writable
/// with `src`), and the `mc x nc` block at `c` (rows `rs` apart, columns contiguous)
/// must be writable; with `src`, `src.0 + p * src.1 + j` must be readable for `p < kc`,
/// `j < nc`, `nc % NR == 0` and `mc >= 2 MR`; `act`'s bias, if not null, must be
/// readable for `nc` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512<const PACKED: bool>(
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
) {
    let panels = nc.div_ceil(NR);
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn column_avx512<const P: usize, const PACKED: bool>(
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
    panels_avx512::<{ 2 * MR }, P, PACKED, false>(kc, a0, sa, full - first, b, nosrc, mask, c0, rs, alpha, beta, act);
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
/// and stored into `b`'s packing as well. With `act`, the values written are
/// `Act::apply`'s (bias add, relu) of `alpha * acc + beta * c`, the bias read from
/// `act.bias` at the tile's first column.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA; `a` and `b` (or, with `PACK_B`, `src`)
/// must hold what the tiles read, `b` be writable with `PACK_B`, and the tiles of `c`
/// be writable, their last panel's columns under `mask`; `act`'s bias, if not null,
/// readable for the tile's columns (under `mask`); `count == 1` unless `R == 2 MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_avx512<const R: usize, const P: usize, const PACKED: bool, const PACK_B: bool>(
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
        macro_rules! steps {
            ($range:expr) => {
                for p in $range {
                    let (ap, bp) = (a.offset(p as isize * acs), b.add(p * NR));
                    let bv: [__m512; P] = if PACK_B {
                        // Row p of the P panels from b itself, stored into the packing.
                        let row = src.0.offset(p as isize * src.1);
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
        steps!(0..head);
        for r in 0..R as isize {
            // A prefetch never faults, whatever the address.
            let row = c.wrapping_offset(r * rs) as *const i8;
            for q in 0..P {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64 * q));
            }
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64 * P - 4));
        }
        steps!(head..kc);
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

/// `c[i0.., j0..] = alpha * tile + beta * c` over the `mr x nr` corner of `tile`;
/// `beta == 0` does not read `c`.
///
/// # Safety
/// `out` must point to a live `m x n` view with its strides, not aliased elsewhere,
/// and `i0 + mr <= m`, `j0 + nr <= n`.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn store(out: &Out, i0: usize, j0: usize, mr: usize, nr: usize, tile: &Tile, alpha: f32, beta: f32) {
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

/// Packs `a[ic..ic + mc, pc..pc + kc]` as `MR`-tall panels, each `kc` columns of `MR`
/// contiguous values, zero-padded below the last row.
fn pack_a(a: &ArrayView2<'_, f32>, ic: usize, mc: usize, pc: usize, kc: usize, dst: &mut [f32]) {
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

/// Whether the AVX2 + FMA kernels run on this CPU.
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return kernel() >= Kernel::Avx2Fma;
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Packs the first `8 * floor(kc / 8)` columns of the `MR` rows at `row0` (rows `rs`
/// apart, columns contiguous) into `panel` (`MR` values per column), transposing 6 x 8
/// blocks in registers; returns how many columns it packed.
///
/// # Safety
/// The CPU must support AVX2 + FMA ([`avx2_fma`]); each row must be readable for `kc`
/// elements; `panel` holds `kc * MR` elements.
unsafe fn pack_a_rows_avx2(row0: *const f32, rs: isize, kc: usize, panel: &mut [f32]) -> usize {
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

/// See [`pack_a_rows_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a_rows_avx2_impl(row0: *const f32, rs: isize, kc: usize, panel: &mut [f32]) -> usize {
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

/// Fills the first `panels` panels of `dst` (each `kc` steps of `W` values, one after
/// the other) from runs of `W` contiguous values: step `p` of panel `q` is the `W`
/// values at `src + q * W + p * step`. The panels are filled `PACK_ROWS` steps at a
/// time across all of them, which reads each source line in runs rather than walking
/// down one panel, a line per step (lines often 4 KiB apart): `pack_b` went from 3.9%
/// to 2.2% of M3's step in a profile.
///
/// # Safety
/// Every such run must be readable, and `dst` hold `panels * kc * W` elements.
unsafe fn pack_runs<const W: usize>(src: *const f32, step: isize, kc: usize, panels: usize, dst: &mut [f32]) {
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
fn pack_b(b: &ArrayView2<'_, f32>, pc: usize, kc: usize, jc: usize, nc: usize, dst: &mut [f32]) {
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
                let full = pack_b_columns(col0, cs, kc, panel);
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

// ---------------------------------------------------------------- thin products

/// The widest side of `c` that the thin kernels take.
const THIN: usize = 16;
/// Most columns of `c` one thin tile computes (`2 x 6` or `16 x 6` accumulators: 12 of
/// the 16 AVX2 registers).
const THIN_C: usize = 6;
/// Most rows of a dot-form tile (AVX-512: `4 x 6` accumulators, 24 of 32 registers).
const DOT_ROWS: usize = 4;
/// Most rows of an outer-form tile (AVX-512: four 16-lane vectors by 6 columns, 24 of
/// 32 registers).
const OUTER_ROWS: usize = 64;
/// Depth of a block of the dot form, which bounds the `b^T` block (`THIN x THIN_KB`,
/// at most 128 KiB) to L2 for very deep products. Measured on M1's forward (k = 784):
/// splitting k into blocks small enough for L1 (256, 392) was slower than the whole
/// depth, since every block adds a horizontal sum and a write-back per dot.
const THIN_KB: usize = 2048;

/// Computes the product with a thin kernel if one fits (AVX2 + FMA, one side of `c` at
/// most [`THIN`] wide, and the operand along the wide side contiguous in one direction);
/// returns false, touching nothing, otherwise.
fn thin(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: ArrayViewMut2<'_, f32>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !avx2_fma() {
            return false;
        }
        let proof = Direct(());
        let (m, n) = c.dim();
        if n <= THIN && n <= m {
            thin_oriented(proof, alpha, a, b, beta, c)
        } else if m <= THIN {
            thin_oriented(proof, alpha, b.reversed_axes(), a.reversed_axes(), beta, c.reversed_axes())
        } else {
            false
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (alpha, a, b, beta, c);
        false
    }
}

/// Thin product with `n <= THIN`: picks the dot or the outer-product form from `a`'s
/// layout.
#[cfg(target_arch = "x86_64")]
fn thin_oriented(
    proof: Direct,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
) -> bool {
    let (m, k) = a.dim();
    if a.strides()[1] == 1 && k >= 32 {
        thin_dot(proof, alpha, a, b, beta, c);
        true
    } else if a.strides()[0] == 1 && m >= 16 {
        thin_outer(proof, alpha, a, b, beta, c);
        true
    } else {
        false
    }
}

/// Splits `n` columns into groups of at most [`THIN_C`], as even as possible; returns
/// the group width (the last group takes the rest).
fn thin_groups(n: usize) -> usize {
    n.div_ceil(n.div_ceil(THIN_C))
}

/// `c = alpha * a x b + beta * c` where `a`'s rows are contiguous: every `c[i, j]` is a
/// dot product of row `i` of `a` with column `j` of `b`, which is first copied into a
/// contiguous row of scratch (`b^T`, `n x k`) unless it already is one.
#[cfg(target_arch = "x86_64")]
fn thin_dot(
    proof: Direct,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let lda = a.strides()[0];
    let out = Out { ptr: c.as_mut_ptr(), rs: c.strides()[0], cs: c.strides()[1] };
    // Rows of a tile: 2 x 6 accumulators of the 16 AVX2 registers, 4 x 6 of AVX-512's 32.
    let tall = if kernel() == Kernel::Avx512 { DOT_ROWS } else { 2 };
    let run = |bt: *const f32, ldb: isize| {
        let width = thin_groups(n);
        // Depth blocks (see THIN_KB); the later blocks add to c.
        let kb = block(k, THIN_KB, 8);
        for p0 in (0..k).step_by(kb) {
            let kl = kb.min(k - p0);
            let beta = if p0 == 0 { beta } else { 1.0 };
            // Columns outer: one group's rows of b^T (k x 5 or 6, about 16 KiB for
            // k = 784) stay in L1 while the rows of a stream past them from L2; with rows
            // outer, all of b^T (31 KiB) and a's rows did not fit in L1 together.
            for j0 in (0..n).step_by(width) {
                let cols = width.min(n - j0);
                for i0 in (0..m).step_by(tall) {
                    let rows = tall.min(m - i0);
                    let mut tile = [[0.0f32; THIN_C]; DOT_ROWS];
                    // SAFETY: rows i0..i0 + rows of `a` (k contiguous elements each, lda
                    // apart) and rows j0..j0 + cols of `bt` (k contiguous elements, ldb
                    // apart) are inside live memory, and p0 + kl <= k; `proof` says
                    // avx2 + fma are present.
                    unsafe {
                        let ap = a.as_ptr().offset(i0 as isize * lda).add(p0);
                        let bp = bt.offset(j0 as isize * ldb).add(p0);
                        dot_tile(proof, rows, cols, kl, ap, lda, bp, ldb, &mut tile);
                        // SAFETY: i0 + rows <= m, j0 + cols <= n inside the live `c`.
                        store_small(&out, i0, j0, rows, cols, |r, j| tile[r][j], alpha, beta);
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
        if scratch.len() < n * k {
            scratch.resize(n * k, 0.0);
        }
        let bt = &mut scratch[..n * k];
        let (rs, cs) = (b.strides()[0], b.strides()[1]);
        // 8 x 8 blocks transposed in registers where b's rows are contiguous; the rest
        // gathered a column of b into a row of bt at a time (strided reads, sequential
        // writes measured faster than the other way round).
        let (jd, pd) = if cs == 1 {
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
unsafe fn transpose8(_proof: Direct, b: *const f32, rs: isize, k: usize, n: usize, bt: &mut [f32]) -> (usize, usize) {
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

/// Packs the first `8 * floor(kc / 8)` rows of an `NR`-wide panel of a column-major `b`
/// (column `j` at `col0 + j * cs`, contiguous along k) with 8 x 8 register transposes;
/// returns how many rows it packed.
///
/// # Safety
/// The CPU must support AVX2 + FMA ([`avx2_fma`]); the `NR` columns must be readable
/// for `kc` elements; `panel` holds `kc * NR` elements.
unsafe fn pack_b_columns(col0: *const f32, cs: isize, kc: usize, panel: &mut [f32]) -> usize {
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

/// `dst[q * ds + r] = src[r * ss + q]` for `r, q < 8`: one 8 x 8 block transposed in
/// registers (the classic unpack / shuffle / permute sequence).
///
/// # Safety
/// The CPU must support AVX2 ([`avx2_fma`]); the 8 rows of 8 contiguous elements at
/// `src` (`ss` apart) must be readable and those at `dst` (`ds` apart) writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transpose_8x8(src: *const f32, ss: isize, dst: *mut f32, ds: usize) {
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

/// `rows x cols` dot products of length `k`: row `r` of `a` (at `a + r * lda`) with row
/// `j` of `bt` (at `bt + j * ldb`), into `tile[r][j]`; with AVX-512 when `rows > 2`.
///
/// # Safety
/// Those rows must be readable for `k` elements each; `rows <= 2`, or `rows <=
/// DOT_ROWS` on a CPU with AVX-512F; `cols <= THIN_C`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn dot_tile(
    _proof: Direct,
    rows: usize,
    cols: usize,
    k: usize,
    a: *const f32,
    lda: isize,
    bt: *const f32,
    ldb: isize,
    tile: &mut [[f32; THIN_C]; DOT_ROWS],
) {
    macro_rules! go {
        ($kern:ident: $($r:literal, $c:literal);*) => {
            match (rows, cols) {
                $(($r, $c) => $kern::<$r, $c>(k, a, lda, bt, ldb, tile),)*
                _ => unreachable!("thin tile {rows} x {cols}"),
            }
        };
    }
    if rows <= 2 {
        go!(dot_avx2: 1, 1; 1, 2; 1, 3; 1, 4; 1, 5; 1, 6; 2, 1; 2, 2; 2, 3; 2, 4; 2, 5; 2, 6)
    } else {
        go!(dot_avx512: 3, 1; 3, 2; 3, 3; 3, 4; 3, 5; 3, 6; 4, 1; 4, 2; 4, 3; 4, 4; 4, 5; 4, 6)
    }
}

/// The AVX2 dot tile for fixed `R x C` (the accumulators stay in registers).
///
/// # Safety
/// As [`dot_tile`], and the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
// Index loops over the fixed register tile read clearest here.
#[allow(clippy::needless_range_loop)]
unsafe fn dot_avx2<const R: usize, const C: usize>(
    k: usize,
    a: *const f32,
    lda: isize,
    bt: *const f32,
    ldb: isize,
    tile: &mut [[f32; THIN_C]; DOT_ROWS],
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

/// The AVX-512 dot tile for fixed `R x C`, 16 lanes along `k`, the `k % 16` tail under
/// a mask.
///
/// # Safety
/// As [`dot_tile`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
// Index loops over the fixed register tile read clearest here.
#[allow(clippy::needless_range_loop)]
unsafe fn dot_avx512<const R: usize, const C: usize>(
    k: usize,
    a: *const f32,
    lda: isize,
    bt: *const f32,
    ldb: isize,
    tile: &mut [[f32; THIN_C]; DOT_ROWS],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let rows: [*const f32; R] = std::array::from_fn(|r| a.offset(r as isize * lda));
    let cols: [*const f32; C] = std::array::from_fn(|j| bt.offset(j as isize * ldb));
    // `load(ptr, p)` is 16 elements from `ptr + p`.
    macro_rules! step {
        ($p:expr, $load:expr) => {
            let av: [__m512; R] = std::array::from_fn(|r| $load(rows[r], $p));
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

/// `c = alpha * a x b + beta * c` where `a`'s columns are contiguous (`a` is a
/// transposed view): a `16 x C` block of `c` (with AVX-512 up to `64 x C`) accumulates,
/// for each `p`, column `p` of `a` (two vectors, or up to four of 16 lanes, read in
/// place) times the broadcast `b[p, j0..j0 + C]`.
#[cfg(target_arch = "x86_64")]
fn thin_outer(
    proof: Direct,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let lda = a.strides()[1];
    let (brs, bcs) = (b.strides()[0], b.strides()[1]);
    let out = Out { ptr: c.as_mut_ptr(), rs: c.strides()[0], cs: c.strides()[1] };
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
            // elements from `out.ptr + i0 * n` (contiguous); `proof` as above.
            unsafe { store_stripe_avx2(&out, i0, rows, n, &cols, &mut rows_buf, alpha, beta) };
        }
        i0 += rows;
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
/// with rows `n` apart that holds rows `i0..i0 + rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_stripe_avx2(
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
    } else {
        dst.iter_mut().zip(buf.iter()).for_each(|(d, &v)| *d = alpha * v + beta * *d);
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
unsafe fn outer_tile(
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
        unsafe fn $name<const V: usize, const C: usize>(
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

outer_kernel!(
    /// The AVX2 outer-product tile: `V` vectors (8 rows each) by `C` columns.
    ///
    /// # Safety
    /// `a + p * lda` must be readable for `8 V` elements and `b + p * brs + j * bcs` for
    /// one, for every `p < k`, `j < C`; the CPU must support AVX2 and FMA.
    outer_avx2, "avx2,fma", 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
);

outer_kernel!(
    /// The AVX-512 outer-product tile: `V` vectors (16 rows each) by `C` columns.
    ///
    /// # Safety
    /// As [`outer_avx2`] with `16 V` rows, and the CPU must support AVX-512F.
    outer_avx512, "avx512f,avx2,fma", 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
    _mm512_storeu_ps
);

/// `c[i0 + r, j0 + j] = alpha * value(r, j) + beta * c[..]` for `r < rows`, `j < cols`;
/// `beta == 0` does not read `c`.
///
/// # Safety
/// `out` must point to a live view, not aliased elsewhere, that holds those elements.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn store_small(
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
        let row = out.ptr.offset((i0 + r) as isize * out.rs + j0 as isize * cs);
        match (cs == 1, beta == 0.0) {
            (true, true) => (0..cols).for_each(|j| *row.add(j) = alpha * value(r, j)),
            (true, false) => (0..cols).for_each(|j| *row.add(j) = alpha * value(r, j) + beta * *row.add(j)),
            (false, true) => (0..cols).for_each(|j| *row.offset(j as isize * cs) = alpha * value(r, j)),
            (false, false) => (0..cols).for_each(|j| {
                let d = row.offset(j as isize * cs);
                *d = alpha * value(r, j) + beta * *d;
            }),
        }
    }
}
