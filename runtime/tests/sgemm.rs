//! `sgemm` against a naive f64 triple loop: many shapes (tiny, primes, thin, edges of
//! the block sizes), all four transpose combinations, alpha/beta including beta = 0 over
//! a NaN-filled `c`, stepped and reversed views, each with every kernel the CPU has
//! (portable, AVX2, AVX-512); and a counting allocator showing that a repeated call
//! allocates nothing (on the calling thread; with `parallel` the pool's helpers run the
//! same packed product, whose scratch grows on its first use only). With `parallel`,
//! split products against the same products on one thread, bit for bit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// The module is compiled into this test directly (so the test does not depend on how
// the runtime exports it); it reaches ndarray as `crate::ndarray`.
// (Re-exports the runtime uses are unused here.)
#[allow(dead_code, unused_imports)]
#[path = "../src/sgemm/mod.rs"]
mod sgemm;

pub(crate) use modelc_runtime::ndarray;

use ndarray::{s, Array2, ArrayView2};
use sgemm::sgemm;

// ---------------------------------------------------------------- counting allocator

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the allocator may run while the thread's locals are being torn down.
    let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches
// only a const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(|n| n.get())
}

// ---------------------------------------------------------------- helpers

/// Deterministic values in [-1, 1) (a small LCG: no rand dependency needed).
fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array2::from_shape_fn((rows, cols), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn reference(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c0: &Array2<f32>) -> Array2<f64> {
    let (m, k) = a.dim();
    let n = b.dim().1;
    Array2::from_shape_fn((m, n), |(i, j)| {
        let mut acc = 0.0f64;
        for p in 0..k {
            acc += a[[i, p]] as f64 * b[[p, j]] as f64;
        }
        let prev = if beta == 0.0 { 0.0 } else { beta as f64 * c0[[i, j]] as f64 };
        alpha as f64 * acc + prev
    })
}

fn check(got: ArrayView2<'_, f32>, want: &Array2<f64>, k: usize, what: &str) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let tol = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
    for ((i, j), &g) in got.indexed_iter() {
        let w = want[[i, j]];
        assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what}: c[{i}, {j}] = {g}, want {w} (tol {tol})");
    }
}

/// `a` and `b` of an `m x k x n` product, stored transposed where `ta` / `tb` say (the
/// views are `stores.0.t()` then), from `seed` and `seed + 1`.
fn stores(m: usize, k: usize, n: usize, ta: bool, tb: bool, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let a = if ta { filled(k, m, seed) } else { filled(m, k, seed) };
    let b = if tb { filled(n, k, seed + 1) } else { filled(k, n, seed + 1) };
    (a, b)
}

/// Runs one product with `a` and `b` stored transposed or not, over `c` prefilled with
/// NaN when beta is 0 (so any read of `c` shows).
fn case(m: usize, k: usize, n: usize, ta: bool, tb: bool, alpha: f32, beta: f32) {
    let seed = (m * 1_000_003 + k * 1009 + n) as u64;
    let (a_store, b_store) = stores(m, k, n, ta, tb, seed);
    let a = if ta { a_store.t() } else { a_store.view() };
    let b = if tb { b_store.t() } else { b_store.view() };
    let c0 = if beta == 0.0 { Array2::from_elem((m, n), f32::NAN) } else { filled(m, n, seed + 2) };
    let want = reference(alpha, a, b, beta, &c0);
    let mut c = c0.clone();
    sgemm(alpha, a, b, beta, c.view_mut());
    check(c.view(), &want, k, &format!("{m}x{k}x{n} ta={ta} tb={tb} alpha={alpha} beta={beta}"));
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (2, 3, 4),
    (5, 1, 17),
    (6, 16, 16),
    (7, 17, 15),
    (37, 53, 29),
    (29, 37, 53),
    (100, 784, 10),
    (784, 100, 10),
    (10, 100, 784),
    (128, 256, 128),
    (1, 300, 33),
    (33, 300, 1),
    // Edges of the blocks: KC = 384, MC = 168, NR = 16, MR = 6.
    (169, 257, 17),
    (170, 769, 50),
    // Every bottom edge (m % MR = 1..5) of the column-of-tiles kernel (n > 2 NR).
    (61, 70, 48),
    (62, 70, 48),
    (63, 400, 48),
    (64, 70, 64),
    (65, 385, 80),
    (167, 513, 31),
    (173, 255, 49),
    (337, 300, 65),
    // Big enough to be split across threads with `parallel`, along rows and columns.
    (64, 600, 300),
    // The AVX-512 kernel (12 x 32 tiles, KC 512, a read in place up to 16 panels of b):
    // every bottom edge m % 12 = 1..11 (one tile of the remaining rows), an odd last
    // panel, a partial last panel of a pair and alone, depths across the KC edge, a
    // packed a (more than 16 panels).
    (13, 257, 32),
    (18, 100, 33),
    (23, 513, 47),
    (29, 256, 63),
    (35, 255, 200),
    (71, 300, 300),
    (94, 40, 258),
    (45, 70, 40),
    (128, 77, 64),
    // b packed by the AVX-512 kernel's first tiles: several depth blocks and blocks of a.
    (200, 1100, 64),
    (181, 600, 96),
    (175, 520, 273),
    // A short k with c's rows 4 KiB apart: blocks one tile tall (every kernel), with a
    // bottom edge and packed b (the fused packing needs m >= 12), and m under one tile.
    (29, 10, 1024),
    (30, 16, 2048),
    (8, 3, 1024),
    // A deeper k with c's rows 4 KiB apart: the AVX-512 kernel walks c a row of tiles at
    // a time (three rows of 12 and a bottom edge of 1), at 300 (two depth blocks) on
    // Intel CPUs only, at 200 on AMD ones too; and a row-major b whose rows are 4 KiB
    // apart too is packed in a pass of its own, not by the kernel's first tiles (on AMD
    // CPUs only with more than one block of a, m > MC = 168: at m = 37 the first tiles
    // pack it there).
    (37, 200, 1024),
    (37, 300, 1024),
    (170, 300, 1024),
    // One block of a against a transposed b on AMD CPUs: blocks of b one L2 half wide
    // (two along n), packed by 16 x 16 transposes with a k % 16 tail of 12 rows.
    (37, 300, 700),
];

// ---------------------------------------------------------------- tests

/// Runs `f` once with each kernel this CPU has (portable, AVX2, AVX-512) forced on
/// this thread, so that a machine with the best kernel tests the others too.
fn each_kernel(mut f: impl FnMut(sgemm::Kernel)) {
    for kern in sgemm::kernels() {
        sgemm::FORCE_KERNEL.with(|f| f.set(Some(kern)));
        f(kern);
    }
    sgemm::FORCE_KERNEL.with(|f| f.set(None));
}

#[test]
fn all_shapes_and_transposes_beta_zero_over_nan() {
    each_kernel(|_| {
        for &(m, k, n) in SHAPES {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                case(m, k, n, ta, tb, 1.0, 0.0);
            }
        }
    });
}

/// The thin kernels: every width 1..=16 on either side, depths with and without a
/// k % 8 tail, row counts with 16-, 8- and single-row tails, all four layouts (which
/// select the dot form, the outer-product form or the general path).
#[test]
fn thin_products_every_width() {
    each_kernel(|kern| {
        if kern == sgemm::Kernel::Portable {
            return; // no thin kernels: the shapes above cover its paths
        }
        for thin in 1..=16 {
            // Row counts: AVX-512 outer tiles of 64, 32 and 16 rows and dot tiles of 4
            // with every tail, AVX2's of 16, 8, 1 and 2.
            for &(wide, k) in &[(16, 32), (23, 35), (100, 784), (41, 100), (8, 257), (18, 4500), (127, 47), (62, 33)] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    case(wide, k, thin, ta, tb, 1.0, 0.0);
                    case(thin, k, wide, ta, tb, 1.0, 0.0);
                }
            }
        }
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            case(57, 90, 10, ta, tb, -0.5, 1.0);
            case(10, 90, 57, ta, tb, 2.0, -1.5);
        }
    });
}

/// Every kernel (the portable one has no thin kernels, direct reads or register
/// transposes) over the same shapes with alpha and beta, `c` read and scaled.
#[test]
fn every_kernel_every_shape_alpha_beta() {
    each_kernel(|_| {
        for &(m, k, n) in SHAPES {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                case(m, k, n, ta, tb, -0.5, 1.5);
            }
        }
    });
}

/// `sgemm_then`: the epilogue runs exactly once on every element, with its true
/// indices, whichever path computes the product (thin kernels, the packed product either
/// way round, the portable kernel, a split across threads with `parallel`).
#[test]
fn epilogue_sees_every_element_once_with_its_indices() {
    let run = |m: usize, k: usize, n: usize, ta: bool, tb: bool| {
        let seed = (m * 7 + k * 13 + n) as u64;
        let (a_store, b_store) = stores(m, k, n, ta, tb, seed);
        let a = if ta { a_store.t() } else { a_store.view() };
        let b = if tb { b_store.t() } else { b_store.view() };
        let c0 = filled(m, n, seed + 2);
        let want = reference(0.5, a, b, 1.5, &c0).mapv(|v| v * 2.0)
            + Array2::from_shape_fn((m, n), |(i, j)| (i * 1000 + j) as f64);
        let mut c = c0.clone();
        let then = |mut blk: ndarray::ArrayViewMut2<'_, f32>, i0: usize, j0: usize| {
            for ((r, s), v) in blk.indexed_iter_mut() {
                *v = *v * 2.0 + ((i0 + r) * 1000 + j0 + s) as f32;
            }
        };
        sgemm::sgemm_then(0.5, a, b, 1.5, c.view_mut(), Some(&then));
        let got = c.mapv(|v| v as f64);
        for ((i, j), &g) in got.indexed_iter() {
            let w = want[[i, j]];
            assert!(
                (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                "{m}x{k}x{n} ta={ta} tb={tb}: c[{i}, {j}] = {g}, want {w}"
            );
        }
    };
    each_kernel(|_| {
        for &(m, k, n) in &[
            (100, 784, 10),
            (784, 100, 10),
            (10, 90, 300),
            (37, 53, 29),
            (169, 257, 17),
            (337, 300, 65),
            (64, 600, 300),
            (5, 0, 4),
            (71, 300, 300),
            (175, 520, 273),
            (29, 10, 1024),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                run(m, k, n, ta, tb);
            }
        }
    });
}

/// `sgemm_act` against the plain product followed by the act in scalar code, to the
/// bit, on every path: the AVX-512 kernel's registers (one and several blocks along k,
/// every bottom edge, partial panels, the short-k row walk, the fused packing, a read
/// in place), the transposed orientation, thin products, the other kernels' block
/// passes, and a `c` and a mask that are windows of bigger arrays.
#[test]
fn act_equals_the_product_then_the_act_to_the_bit() {
    let run = |m: usize, k: usize, n: usize, ta: bool, tb: bool, alpha: f32, beta: f32, parts: (bool, bool, bool)| {
        let (with_bias, relu, with_mask) = parts;
        let seed = (m * 31 + k * 7 + n) as u64;
        let (a_store, b_store) = stores(m, k, n, ta, tb, seed);
        let a = if ta { a_store.t() } else { a_store.view() };
        let b = if tb { b_store.t() } else { b_store.view() };
        // The edge cases of relu and step: a NaN and a -0 in the bias, and zeros of both
        // signs and NaNs in the mask.
        let mut bias = filled(1, n, seed + 2).into_shape_with_order(n).unwrap();
        bias[0] = f32::NAN;
        if n > 1 {
            bias[1] = -0.0;
        }
        let mut mask_store = filled(m, n + 3, seed + 3);
        for ((_, j), h) in mask_store.indexed_iter_mut() {
            *h = [0.0, -0.0, f32::NAN].get(j % 9).copied().unwrap_or(*h);
        }
        let mask = mask_store.slice(s![.., 1..n + 1]);
        let c0 = filled(m, n, seed + 4);
        let mut want = c0.clone();
        sgemm(alpha, a, b, beta, want.view_mut());
        for ((i, j), v) in want.indexed_iter_mut() {
            let mut x = *v;
            if with_bias {
                x += bias[j];
            }
            if relu {
                x = if x > 0.0 { x } else { 0.0 };
            }
            if with_mask {
                x *= if mask[[i, j]] > 0.0 { 1.0 } else { 0.0 };
            }
            *v = x;
        }
        let mut big = filled(m, n + 5, seed + 5);
        let mut got = big.slice_mut(s![.., 2..n + 2]);
        got.assign(&c0);
        let act = sgemm::Act { bias: with_bias.then(|| bias.view()), relu, mask: with_mask.then_some(mask) };
        sgemm::sgemm_act(alpha, a, b, beta, got.view_mut(), act);
        for ((i, j), w) in want.indexed_iter() {
            let g = got[[i, j]];
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{m}x{k}x{n} ta={ta} tb={tb} alpha={alpha} beta={beta} {parts:?}: c[{i}, {j}] = {g}, want {w}"
            );
        }
    };
    let parts =
        [(true, true, false), (true, false, false), (false, true, false), (false, false, true), (true, true, true)];
    each_kernel(|_| {
        for &(m, k, n) in &[
            (256, 10, 1024),
            (29, 10, 1024),
            (100, 784, 10),
            (10, 90, 300),
            (128, 256, 128),
            (37, 53, 29),
            (175, 520, 273),
            (200, 1100, 64),
            (23, 513, 47),
            (13, 257, 32),
            (5, 3, 7),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for &p in &parts {
                    run(m, k, n, ta, tb, 1.0, 0.0, p);
                }
                run(m, k, n, ta, tb, -0.5, 1.5, (true, true, true));
            }
        }
    });
}

#[test]
fn alpha_and_beta() {
    each_kernel(|_| {
        for &(m, k, n) in &[(37, 53, 29), (100, 784, 10), (169, 257, 17), (7, 3, 40), (65, 70, 48), (64, 385, 64)] {
            for &(alpha, beta) in &[(1.0, 1.0), (-0.5, 1.0), (2.0, -1.5), (0.25, 0.0), (1.0, 0.5)] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    case(m, k, n, ta, tb, alpha, beta);
                }
            }
        }
    });
}

#[test]
fn alpha_zero_and_k_zero_scale_c() {
    let a = filled(5, 0, 1);
    let b = filled(0, 4, 2);
    let mut c = Array2::from_elem((5, 4), f32::NAN);
    sgemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
    assert!(c.iter().all(|&v| v == 0.0));
    let mut c = filled(5, 4, 3);
    let c0 = c.clone();
    sgemm(1.0, a.view(), b.view(), 2.0, c.view_mut());
    assert_eq!(c, &c0 * 2.0);
    let a = filled(5, 3, 4);
    let b = filled(3, 4, 5);
    let mut c = c0.clone();
    sgemm(0.0, a.view(), b.view(), 1.0, c.view_mut());
    assert_eq!(c, c0);
    // Empty outputs are fine.
    let mut e = Array2::<f32>::zeros((0, 4));
    sgemm(1.0, filled(0, 3, 6).view(), b.view(), 0.0, e.view_mut());
}

#[test]
fn stepped_and_reversed_views() {
    let big_a = filled(120, 90, 11);
    let big_b = filled(100, 80, 12);
    // a: 40 x 30 with steps (3, 3); b: 30 x 27 reversed rows, step 3 in columns.
    let a = big_a.slice(s![..;3, 1..;3]);
    let b = big_b.slice(s![..90;-3, 2..;3]);
    let (m, k) = a.dim();
    assert_eq!(b.dim().0, k);
    let n = b.dim().1;
    for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.5, 2.0)] {
        // c: a stepped window of a bigger array, and a transposed one.
        let mut big_c = if beta == 0.0 {
            Array2::from_elem((2 * m + 1, 2 * n + 3), f32::NAN)
        } else {
            filled(2 * m + 1, 2 * n + 3, 13)
        };
        let c0 = big_c.slice(s![1..;2, ..;2]).slice(s![..m, ..n]).to_owned();
        let want = reference(alpha, a, b, beta, &c0);
        {
            let c = big_c.slice_mut(s![1..;2, ..;2]);
            let c = c.slice_move(s![..m, ..n]);
            sgemm(alpha, a, b, beta, c);
        }
        check(big_c.slice(s![1..;2, ..;2]).slice(s![..m, ..n]), &want, k, "stepped c");

        let mut ct_store = if beta == 0.0 { Array2::from_elem((n, m), f32::NAN) } else { c0.t().to_owned() };
        sgemm(alpha, a, b, beta, ct_store.view_mut().reversed_axes());
        check(ct_store.t(), &want, k, "transposed c");

        // Transposed stepped operands: (b^T a^T)^T.
        let want_t = reference(alpha, b.t(), a.t(), beta, &c0.t().to_owned());
        let mut ct = c0.t().to_owned();
        if beta == 0.0 {
            ct.fill(f32::NAN);
        }
        sgemm(alpha, b.t(), a.t(), beta, ct.view_mut());
        check(ct.view(), &want_t, k, "stepped transposed operands");
    }
}

/// A `c` that is a window of a 1024-wide array (rows 4 KiB apart) but narrower than 256:
/// the AVX-512 kernel walks it a row of tiles at a time and reads a row-major `a` in
/// place (at most 16 panels of `b`), with a bottom edge and an odd last panel, partial
/// (200 columns) or whole (208: a row-major `b`, its rows 832 bytes apart, is then
/// packed by the first row of tiles); also `a` transposed (read in place too) and `b`
/// transposed; beta 0 over NaN and beta 1.5; every kernel.
#[test]
fn window_of_a_wide_c() {
    let (m, k) = (37, 300);
    each_kernel(|kern| {
        for (n, ta, tb) in
            [(200, false, false), (208, false, false), (200, true, false), (208, true, false), (200, false, true)]
        {
            for (alpha, beta) in [(1.0f32, 0.0f32), (-0.5, 1.5)] {
                let (a_store, b_store) = stores(m, k, n, ta, tb, 21);
                let a = if ta { a_store.t() } else { a_store.view() };
                let b = if tb { b_store.t() } else { b_store.view() };
                let mut big_c = if beta == 0.0 { Array2::from_elem((m, 1024), f32::NAN) } else { filled(m, 1024, 22) };
                let before = big_c.clone();
                let c0 = big_c.slice(s![.., 3..3 + n]).to_owned();
                let want = reference(alpha, a, b, beta, &c0);
                sgemm(alpha, a, b, beta, big_c.slice_mut(s![.., 3..3 + n]));
                check(
                    big_c.slice(s![.., 3..3 + n]),
                    &want,
                    k,
                    &format!("{kern:?} window n={n} ta={ta} tb={tb} beta={beta}"),
                );
                for ((i, j), v) in big_c.indexed_iter() {
                    if !(3..3 + n).contains(&j) {
                        assert_eq!(
                            v.to_bits(),
                            before[[i, j]].to_bits(),
                            "{kern:?}: c[{i}, {j}] outside the window written"
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn large_against_reference() {
    // Several blocks along every dimension (NC is not exceeded: that would be slow in a
    // debug-ish test profile), transposed a.
    case(400, 600, 300, true, false, 1.0, 0.0);
    case(400, 600, 300, false, true, 0.5, 1.0);
}

/// With `parallel`, a product split across the threads gives the same bits as the same
/// product on one thread (`FORCE_SERIAL`), with every kernel, both orientations, the
/// epilogues and beta = 0 or 1: the split goes along `c`'s rows or columns at multiples
/// of the AVX-512 tile, never along `k`, and every part computes the tiles the whole
/// product would (see `parallel` in sgemm/mod.rs). Shapes: M2's and M3's products
/// scaled to about 2-12M multiply-adds (the split starts at 2M), edges that are not
/// multiples of the tile, and a `c` whose cheaper orientation is the transposed one.
#[cfg(feature = "parallel")]
#[test]
fn split_products_match_one_thread_bit_for_bit() {
    let shapes = [
        // (m, k, n, a transposed, b transposed, c stored transposed)
        (64, 600, 300, false, false, false),
        (128, 784, 64, false, false, false),
        (300, 128, 64, true, false, false),
        (64, 300, 300, false, true, false),
        (157, 333, 101, false, false, false),
        (101, 333, 157, true, true, false),
        (40, 1100, 260, false, false, true),
        (260, 520, 40, true, false, true),
        (17, 4000, 90, false, false, false),
        // c's rows 4 KiB apart (each part walked a row of tiles at a time), b's too.
        (40, 300, 1024, false, false, false),
        (100, 64, 1024, true, false, false),
        // One block of a against a transposed b: blocks of half the L2 along n (AMD).
        (40, 520, 700, false, true, false),
        // Thin products (one side at most 16) split along c's long side: the dot form
        // (a's rows contiguous), the outer form (a's columns), each also as c^T, with
        // edges that are not multiples of the 64-row unit.
        (256, 1024, 10, false, false, false),
        (300, 700, 10, false, false, false),
        (1000, 256, 10, true, false, false),
        (1000, 256, 13, true, false, true),
        (10, 256, 1000, false, false, false),
        (10, 256, 1000, false, true, false),
    ];
    let mut split = 0;
    each_kernel(|kern| {
        for &(m, k, n, ta, tb, ct) in &shapes {
            let (a_store, b_store) = stores(m, k, n, ta, tb, (m + k + n) as u64);
            let a = if ta { a_store.t() } else { a_store.view() };
            let b = if tb { b_store.t() } else { b_store.view() };
            let bias = filled(1, n, 7).into_shape_with_order(n).expect("a row");
            let mask = filled(m, n, 8);
            for (alpha, beta) in [(1.0, 0.0), (-0.3, 0.7)] {
                for act in 0..3 {
                    let run = |serial: bool| {
                        sgemm::FORCE_SERIAL.with(|f| f.set(serial));
                        let mut store = if ct { filled(n, m, 9) } else { filled(m, n, 9) };
                        let c = if ct { store.view_mut().reversed_axes() } else { store.view_mut() };
                        let act = match act {
                            0 => None,
                            1 => Some(sgemm::Act { bias: Some(bias.view()), relu: true, mask: None }),
                            _ => Some(sgemm::Act { bias: None, relu: false, mask: Some(mask.view()) }),
                        };
                        match act {
                            None => sgemm(alpha, a, b, beta, c),
                            Some(act) => sgemm::sgemm_act(alpha, a, b, beta, c, act),
                        }
                        sgemm::FORCE_SERIAL.with(|f| f.set(false));
                        store
                    };
                    let (one, all) = (run(true), run(false));
                    let what =
                        format!("{kern:?} {m}x{k}x{n} ta={ta} tb={tb} ct={ct} alpha={alpha} beta={beta} act={act}");
                    for (x, y) in one.iter().zip(&all) {
                        assert_eq!(x.to_bits(), y.to_bits(), "{what}: {x} on one thread, {y} split");
                    }
                    split += 1;
                }
                // The out-of-place thin product (the SGD guard's staged update).
                let src = if ct { filled(n, m, 10).reversed_axes() } else { filled(m, n, 10) };
                let run = |serial: bool| {
                    sgemm::FORCE_SERIAL.with(|f| f.set(serial));
                    let mut out = src.clone();
                    out.fill(0.0);
                    let taken = sgemm::thin_from(alpha, a, b, 1.0, src.view(), out.view_mut());
                    sgemm::FORCE_SERIAL.with(|f| f.set(false));
                    taken.then_some(out)
                };
                if let (Some(one), Some(all)) = (run(true), run(false)) {
                    for (x, y) in one.iter().zip(&all) {
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "thin_from {kern:?} {m}x{k}x{n}: {x} one thread, {y} split"
                        );
                    }
                    split += 1;
                }
            }
        }
    });
    assert!(split > 0);
}

#[test]
fn second_call_allocates_nothing() {
    let shapes = [(100, 784, 10), (784, 100, 10), (128, 256, 128), (300, 520, 200), (37, 53, 29)];
    let inputs: Vec<_> = shapes
        .iter()
        .map(|&(m, k, n)| (filled(m, k, 1), filled(k, n, 2), filled(n, k, 3), Array2::<f32>::zeros((m, n))))
        .collect();
    let mut inputs = inputs;
    // First round: scratch grows to the largest product.
    for (a, b, bt, c) in inputs.iter_mut() {
        sgemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
        sgemm(0.5, a.view(), bt.t(), 1.0, c.view_mut());
    }
    let before = allocs();
    for _ in 0..3 {
        for (a, b, bt, c) in inputs.iter_mut() {
            sgemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
            sgemm(0.5, a.view(), bt.t(), 1.0, c.view_mut());
            let ct = c.view_mut().reversed_axes();
            sgemm(1.0, b.t(), a.t(), 0.0, ct);
        }
    }
    assert_eq!(allocs() - before, 0, "steady-state sgemm allocated");
}
