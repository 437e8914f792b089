//! The runtime's kernels at their edges, through the public API generated code calls.
//!
//! - Every matrix-product entry point (`kernels::{gemm, gemm_then, matmul, matmul_then,
//!   matmul_act, gemm_acc}`, `sgemm::{sgemm, sgemm_then, sgemm_act}`) against a naive f64
//!   product, for sizes that cross every blocking boundary of `sgemm.rs` (MR 6 and the
//!   AVX-512 tile's 12 rows, NR 16 and its pairs of panels, MC 168, KC 384, KC_512 512,
//!   NC 4080, the thin kernels' 16 columns, their 6-column groups, 4-row dot tiles,
//!   64-row outer tiles, 32-deep dot minimum and 2048-deep blocks, the 16 panels up to
//!   which `a` is read in place, the short-k path over rows 1024 apart, `parallel`'s
//!   2M multiply-adds), m, n, k of 0 and 1, operands in every layout (row-major,
//!   transposed, rows or columns or both reversed, transposed and reversed, stepped in
//!   both axes, a window of a bigger array, rows or columns broadcast with a zero
//!   stride; the gaps of stepped and windowed storage hold NaN, so a read there shows),
//!   the transpose flags, alpha and beta (beta = 0 over a NaN-filled `c`, which must not
//!   be read), epilogues, and an output that is a view (a window, column-major, reversed,
//!   stepped, rows 1024 apart) into a bigger buffer whose other elements are canaries
//!   that must stay bit-identical. The inputs must stay bit-identical too.
//! - The other kernels (`map`, `softmax`, `log_softmax`, `softmax_xent`,
//!   `softmax_xent_grad`, `softmax_xent_with_grad`, `sum_axes`, `max_axis`,
//!   `argmax_axis`, `broadcast_to`, `sum_to`, `sum_to_acc`, `reshape`, `transpose`)
//!   against naive loops, on shapes with 0- and 1-size axes, inputs in every layout
//!   (reversed, stepped, windowed, column-major, broadcast along an axis) and outputs in
//!   canary buffers. A kernel on an empty output must touch nothing.
//!
//! Every kernel the CPU has: the tests run with the best one (or the one
//! `MODELC_KERNEL` caps it to), and `other_kernels` runs this binary again with
//! `MODELC_KERNEL=avx2` and `=portable` (whichever are below the CPU's best), unless
//! `MODELC_KERNEL` is already set (then only that kernel runs: how CI runs it under
//! valgrind, which cannot follow a child process it was not told to).
//!
//! `MODELC_EDGE_SMALL=1` keeps only small sizes (every dimension at most 64, no products
//! above 20k multiply-adds, two of the nine entry points per pair of operand layouts),
//! for valgrind's memcheck (see `.ci/run`: about 20 s per kernel there).
//! It still reaches every kernel's paths: the thin dot (k >= 32) and outer (m >= 16)
//! forms, the AVX-512 fused packing (m >= 12), the in-place reads, every edge tile.

use modelc_runtime::kernels::{self, Act};
use modelc_runtime::sgemm;
use ndarray::{
    s, Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, ArrayViewMut2, ArrayViewMutD, IxDyn, Slice,
};

// ---------------------------------------------------------------- values and modes

fn small() -> bool {
    std::env::var_os("MODELC_EDGE_SMALL").is_some_and(|v| v != "0")
}

/// Deterministic values in [-1, 1) from a small LCG.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn filled2(r: usize, c: usize, seed: u64) -> Array2<f32> {
    Array2::from_shape_vec((r, c), values(r * c, seed)).expect("r * c values")
}

fn filled_d(shape: &[usize], seed: u64) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values(shape.iter().product(), seed)).expect("enough values")
}

/// What the memory around an output holds: a NaN with a payload no kernel computes.
fn canary() -> f32 {
    f32::from_bits(0x7fc0_1234)
}

/// The bits of every element of `buf` where `mark` is 0 are those of `before`.
fn canaries_intact<D: ndarray::Dimension>(
    what: &str,
    before: &ndarray::Array<f32, D>,
    after: &ndarray::Array<f32, D>,
    mark: &ndarray::Array<f32, D>,
) {
    for ((b, a), m) in before.iter().zip(after.iter()).zip(mark.iter()) {
        if *m == 0.0 {
            assert_eq!(b.to_bits(), a.to_bits(), "{what}: memory outside the output changed");
        }
    }
}

// ---------------------------------------------------------------- 2-d layouts

/// How an operand of a product is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum In {
    RowMajor,
    Transposed,
    RevRows,
    RevCols,
    RevBoth,
    /// Stored transposed, then its rows reversed: strides (-1, rows).
    TransRev,
    /// Every other row and every third column of a NaN-filled buffer.
    Stepped,
    /// A window of a NaN-filled buffer (rows further apart than their length).
    Window,
    /// One row broadcast down (row stride 0): the logical rows are all equal.
    BcastRows,
    /// One column broadcast across (column stride 0).
    BcastCols,
}

const INS: [In; 10] = [
    In::RowMajor,
    In::Transposed,
    In::RevRows,
    In::RevCols,
    In::RevBoth,
    In::TransRev,
    In::Stepped,
    In::Window,
    In::BcastRows,
    In::BcastCols,
];

/// `x` as the logical matrix `lay` can hold: its first row (or column) repeated for
/// the broadcasts.
fn logical(x: &Array2<f32>, lay: In) -> Array2<f32> {
    let (r, c) = x.dim();
    match lay {
        In::BcastRows if r > 0 => Array2::from_shape_fn((r, c), |(_, j)| x[[0, j]]),
        In::BcastCols if c > 0 => Array2::from_shape_fn((r, c), |(i, _)| x[[i, 0]]),
        _ => x.clone(),
    }
}

/// An operand's storage; `view()` is the logical matrix it was built from.
struct Stored {
    buf: Array2<f32>,
    lay: In,
    dim: (usize, usize),
}

impl Stored {
    /// `x` must be `logical(x, lay)` for the broadcasts.
    fn new(x: &Array2<f32>, lay: In) -> Self {
        let (r, c) = x.dim();
        let nan_buf = |rr: usize, cc: usize| Array2::from_elem((rr, cc), f32::NAN);
        let buf = match lay {
            In::RowMajor => x.as_standard_layout().to_owned(),
            In::Transposed => x.t().as_standard_layout().to_owned(),
            In::RevRows => x.slice(s![..;-1, ..]).as_standard_layout().to_owned(),
            In::RevCols => x.slice(s![.., ..;-1]).as_standard_layout().to_owned(),
            In::RevBoth => x.slice(s![..;-1, ..;-1]).as_standard_layout().to_owned(),
            In::TransRev => x.slice(s![..;-1, ..]).t().as_standard_layout().to_owned(),
            In::Stepped => {
                let mut b = nan_buf(2 * r + 1, 3 * c + 1);
                b.slice_mut(s![1..2 * r + 1;2, 1..3 * c + 1;3]).assign(x);
                b
            }
            In::Window => {
                let mut b = nan_buf(r + 3, c + 5);
                b.slice_mut(s![2..r + 2, 3..c + 3]).assign(x);
                b
            }
            In::BcastRows => {
                if r > 0 {
                    x.slice(s![..1, ..]).to_owned()
                } else {
                    Array2::zeros((1, c))
                }
            }
            In::BcastCols => {
                if c > 0 {
                    x.slice(s![.., ..1]).to_owned()
                } else {
                    Array2::zeros((r, 1))
                }
            }
        };
        Stored { buf, lay, dim: (r, c) }
    }

    fn view(&self) -> ArrayView2<'_, f32> {
        let (r, c) = self.dim;
        let b = &self.buf;
        match self.lay {
            In::RowMajor => b.view(),
            In::Transposed => b.t(),
            In::RevRows => b.slice(s![..;-1, ..]),
            In::RevCols => b.slice(s![.., ..;-1]),
            In::RevBoth => b.slice(s![..;-1, ..;-1]),
            In::TransRev => b.t().slice_move(s![..;-1, ..]),
            In::Stepped => b.slice(s![1..2 * r + 1;2, 1..3 * c + 1;3]),
            In::Window => b.slice(s![2..r + 2, 3..c + 3]),
            In::BcastRows | In::BcastCols => b.broadcast((r, c)).expect("a row or a column broadcasts"),
        }
    }
}

/// How a product's output is stored: always a view into a bigger canary buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Out {
    Window,
    ColMajor,
    RevRows,
    RevCols,
    Stepped,
    /// Rows 1024 floats apart (4 KiB: the short-k path of `sgemm` walks them).
    Rows1024,
}

const OUTS: [Out; 6] = [Out::Window, Out::ColMajor, Out::RevRows, Out::RevCols, Out::Stepped, Out::Rows1024];

fn out_buf_dim(lay: Out, m: usize, n: usize) -> (usize, usize) {
    match lay {
        Out::Window | Out::RevRows | Out::RevCols => (m + 2, n + 3),
        Out::ColMajor => (n + 3, m + 2),
        Out::Stepped => (2 * m + 1, 2 * n + 3),
        Out::Rows1024 if n + 2 <= 1024 => (m + 1, 1024),
        Out::Rows1024 => (m + 2, n + 3),
    }
}

fn out_view(buf: &mut Array2<f32>, lay: Out, m: usize, n: usize) -> ArrayViewMut2<'_, f32> {
    match lay {
        Out::Window => buf.slice_mut(s![1..m + 1, 2..n + 2]),
        Out::ColMajor => buf.slice_mut(s![2..n + 2, 1..m + 1]).reversed_axes(),
        Out::RevRows => buf.slice_mut(s![1..m + 1;-1, 2..n + 2]),
        Out::RevCols => buf.slice_mut(s![1..m + 1, 2..n + 2;-1]),
        Out::Stepped => buf.slice_mut(s![1..2 * m + 1;2, 2..2 * n + 2;2]),
        Out::Rows1024 if n + 2 <= 1024 => buf.slice_mut(s![1..m + 1, 1..n + 1]),
        Out::Rows1024 => buf.slice_mut(s![1..m + 1, 2..n + 2]),
    }
}

// ---------------------------------------------------------------- products

/// The product entry points.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    Gemm,
    GemmThen,
    Matmul,
    MatmulThen,
    MatmulAct,
    GemmAcc,
    Sgemm,
    SgemmThen,
    SgemmAct,
}

const ENTRIES: [Entry; 9] = [
    Entry::Gemm,
    Entry::GemmThen,
    Entry::Matmul,
    Entry::MatmulThen,
    Entry::MatmulAct,
    Entry::GemmAcc,
    Entry::Sgemm,
    Entry::SgemmThen,
    Entry::SgemmAct,
];

/// The index-dependent epilogue of the `*_then` entries: `v * 2 + e(i, j)`.
fn then_term(i: usize, j: usize) -> f32 {
    ((i * 31 + j * 7) % 97) as f32 * 0.125 - 6.0
}

/// One size's logical operands and their exact products, cached per broadcast kind.
struct Problem {
    m: usize,
    k: usize,
    n: usize,
    a: Array2<f32>,
    b: Array2<f32>,
    c0: Array2<f32>,
    bias: Array1<f32>,
    mask: Array2<f32>,
    /// (a's broadcast kind, b's) -> (a x b, |a| x |b|) in f64.
    products: std::collections::HashMap<(u8, u8), (Array2<f64>, Array2<f64>)>,
}

fn bcast_kind(lay: In) -> u8 {
    match lay {
        In::BcastRows => 1,
        In::BcastCols => 2,
        _ => 0,
    }
}

impl Problem {
    fn new(m: usize, k: usize, n: usize) -> Self {
        let seed = (m * 1_000_003 + k * 1009 + n) as u64;
        let mut mask = filled2(m, n, seed + 4);
        // step(mask) at its edges: zeros of both signs.
        for (idx, v) in mask.iter_mut().enumerate() {
            if idx % 7 == 3 {
                *v = if idx % 2 == 0 { 0.0 } else { -0.0 };
            }
        }
        Problem {
            m,
            k,
            n,
            a: filled2(m, k, seed),
            b: filled2(k, n, seed + 1),
            c0: filled2(m, n, seed + 2),
            bias: Array1::from(values(n, seed + 3)),
            mask,
            products: Default::default(),
        }
    }

    fn product(&mut self, la: In, lb: In) -> &(Array2<f64>, Array2<f64>) {
        let key = (bcast_kind(la), bcast_kind(lb));
        let (a, b) = (logical(&self.a, la), logical(&self.b, lb));
        let (m, k, n) = (self.m, self.k, self.n);
        self.products.entry(key).or_insert_with(|| {
            let mut p = Array2::zeros((m, n));
            let mut q = Array2::zeros((m, n));
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut t) = (0.0f64, 0.0f64);
                    for l in 0..k {
                        let v = a[[i, l]] as f64 * b[[l, j]] as f64;
                        s += v;
                        t += v.abs();
                    }
                    p[[i, j]] = s;
                    q[[i, j]] = t;
                }
            }
            (p, q)
        })
    }
}

/// One product: `entry` on operands stored as `la`, `lb` (passed transposed with the
/// flag where `ta` / `tb`), into an output stored as `lo`, checked against the naive
/// product, with its canaries and inputs unchanged.
#[allow(clippy::too_many_arguments)]
fn run_product(
    p: &mut Problem,
    entry: Entry,
    la: In,
    lb: In,
    lo: Out,
    ta: bool,
    tb: bool,
    ab: (f32, f32),
    act_lay: usize,
) {
    let (m, k, n) = (p.m, p.k, p.n);
    let what = format!("{m}x{k}x{n} {entry:?} a {la:?} b {lb:?} c {lo:?} ta {ta} tb {tb} alpha/beta {ab:?}");
    let (alpha, beta) = match entry {
        Entry::Matmul | Entry::MatmulThen | Entry::MatmulAct => (1.0, 0.0),
        Entry::GemmAcc => (ab.0, 1.0),
        _ => ab,
    };
    let (a_log, b_log) = (logical(&p.a, la), logical(&p.b, lb));
    let (sa, sb) = (Stored::new(&a_log, la), Stored::new(&b_log, lb));
    let (a, b) = (sa.view(), sb.view());
    assert_eq!((a.dim(), b.dim()), ((m, k), (k, n)), "{what}: layouts keep shapes");
    let (a_before, b_before) = (sa.buf.clone(), sb.buf.clone());
    // The act's bias and mask in a layout of their own.
    let bias_store = match act_lay % 3 {
        0 => Stored::new(&p.bias.clone().insert_axis(ndarray::Axis(0)), In::RowMajor),
        1 => Stored::new(&p.bias.clone().insert_axis(ndarray::Axis(0)), In::Stepped),
        _ => Stored::new(&p.bias.clone().insert_axis(ndarray::Axis(0)), In::RevCols),
    };
    let mask_store = Stored::new(&p.mask, [In::RowMajor, In::Transposed, In::Stepped, In::RevRows][act_lay % 4]);
    let bias: ArrayView1<'_, f32> = bias_store.view().index_axis_move(ndarray::Axis(0), 0);
    let mask = mask_store.view();
    let (with_bias, relu, with_mask) =
        [(true, true, false), (true, false, true), (false, true, true), (true, true, true)][act_lay % 4];
    let act = Act { bias: with_bias.then_some(bias), relu, mask: with_mask.then_some(mask) };

    let (br, bc) = out_buf_dim(lo, m, n);
    let mut buf = Array2::from_elem((br, bc), canary());
    let mut mark = Array2::<f32>::zeros((br, bc));
    out_view(&mut mark, lo, m, n).fill(1.0);
    {
        let mut c = out_view(&mut buf, lo, m, n);
        if beta == 0.0 {
            c.fill(f32::NAN);
        } else {
            c.assign(&p.c0);
        }
    }
    let before = buf.clone();
    let then = |mut blk: ArrayViewMut2<'_, f32>, i0: usize, j0: usize| {
        for ((r, q), v) in blk.indexed_iter_mut() {
            *v = *v * 2.0 + then_term(i0 + r, j0 + q);
        }
    };
    let then: &(dyn Fn(ArrayViewMut2<'_, f32>, usize, usize) + Sync) = &then;
    {
        let c = out_view(&mut buf, lo, m, n);
        let fa = if ta { a.reversed_axes() } else { a };
        let fb = if tb { b.reversed_axes() } else { b };
        match entry {
            Entry::Gemm => kernels::gemm(alpha, a, b, beta, c),
            Entry::GemmThen => kernels::gemm_then(alpha, a, b, beta, c, Some(then)),
            Entry::Matmul => kernels::matmul(fa, ta, fb, tb, c),
            Entry::MatmulThen => kernels::matmul_then(fa, ta, fb, tb, c, then),
            Entry::MatmulAct => kernels::matmul_act(fa, ta, fb, tb, c, act),
            Entry::GemmAcc => kernels::gemm_acc(alpha, fa, ta, fb, tb, c),
            Entry::Sgemm => sgemm::sgemm(alpha, a, b, beta, c),
            Entry::SgemmThen => sgemm::sgemm_then(alpha, a, b, beta, c, Some(then)),
            Entry::SgemmAct => sgemm::sgemm_act(alpha, a, b, beta, c, act),
        }
    }
    canaries_intact(&what, &before, &buf, &mark);
    assert!(sa.buf.iter().zip(&a_before).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: a changed");
    assert!(sb.buf.iter().zip(&b_before).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: b changed");
    let (c0, bias_log, mask_log) = (p.c0.clone(), p.bias.clone(), p.mask.clone());
    let (prod, absprod) = p.product(la, lb);
    let got = out_view(&mut buf, lo, m, n);
    let eps = f32::EPSILON as f64;
    for ((i, j), &g) in got.indexed_iter() {
        let base = alpha as f64 * prod[[i, j]] + if beta == 0.0 { 0.0 } else { beta as f64 * c0[[i, j]] as f64 };
        let scale = (alpha as f64).abs() * absprod[[i, j]] + (beta as f64 * c0[[i, j]] as f64).abs();
        let mut tol = 8.0 * eps * ((k + 1) as f64).sqrt() * scale + 1e-30;
        let want = match entry {
            Entry::GemmThen | Entry::MatmulThen | Entry::SgemmThen => {
                let e = then_term(i, j) as f64;
                tol = 2.0 * tol + 2.0 * eps * (2.0 * base.abs() + e.abs());
                base * 2.0 + e
            }
            Entry::MatmulAct | Entry::SgemmAct => {
                let mut x = base;
                if with_bias {
                    x += bias_log[j] as f64;
                    tol += 2.0 * eps * x.abs().max(bias_log[j].abs() as f64);
                }
                if relu {
                    x = x.max(0.0);
                }
                if with_mask && mask_log[[i, j]] <= 0.0 {
                    x = 0.0;
                }
                x
            }
            _ => base,
        };
        assert!((g as f64 - want).abs() <= tol, "{what}: c[{i}, {j}] = {g}, want {want} (tol {tol:e})");
    }
}

/// Sizes of the full sweep: every entry point with every pair of operand layouts.
const SMALL_SIZES: &[(usize, usize, usize)] = &[
    (0, 0, 0),
    (0, 5, 3),
    (4, 5, 0),
    (3, 0, 4),
    (1, 1, 1),
    (1, 7, 1),
    (1, 40, 17),
    (17, 40, 1),
    (2, 3, 4),
    (5, 1, 17),
    (6, 16, 16),
    (7, 17, 15),
    // Thin: dot form (k >= 32) with 1..6-wide groups and 4-row tiles, outer form (m >= 16).
    (13, 33, 7),
    (23, 35, 16),
    (16, 32, 3),
    (9, 40, 13),
    // The packed paths: every bottom edge of 6 and of 12, a partial panel, a pair.
    (12, 20, 32),
    (13, 19, 33),
    (19, 8, 47),
    (25, 36, 20),
    (31, 5, 64),
    (29, 10, 40),
];

/// Larger sizes, each crossing a blocking boundary, with fewer layouts each.
const LARGE_SIZES: &[(usize, usize, usize)] = &[
    (37, 53, 29),
    (61, 70, 48),
    (66, 100, 70),
    (100, 784, 10),
    (10, 90, 300),
    // MC = 168 and KC = 384.
    (170, 390, 50),
    (169, 385, 17),
    // KC_512 = 512, in place up to 16 panels (n <= 256) and packed beyond.
    (25, 520, 70),
    (40, 100, 260),
    // The thin dot's 2048-deep blocks.
    (20, 4200, 5),
    (5, 2100, 30),
    // NC = 4080: n > 4080, thin (m <= 16 and the outer form from m >= 16) and packed.
    (3, 40, 4100),
    (4100, 50, 3),
    (20, 24, 4100),
    // Short k over rows 1024 apart (`aliased`), with a bottom edge.
    (29, 10, 1000),
    // Split across threads with `parallel` (>= 2M multiply-adds), along rows and columns.
    (64, 600, 300),
    (300, 600, 64),
];

/// Every entry point, every pair of operand layouts, every output layout, on small
/// sizes (and their 0- and 1-size edges); with `MODELC_EDGE_SMALL`, two entry points per
/// pair of layouts (all nine over the pairs).
#[test]
fn products_small_every_layout() {
    let abs = [(1.0f32, 0.0f32), (-0.5, 1.5), (2.0, 1.0), (0.75, 0.0)];
    for &(m, k, n) in SMALL_SIZES {
        let mut p = Problem::new(m, k, n);
        for (ia, &la) in INS.iter().enumerate() {
            for (ib, &lb) in INS.iter().enumerate() {
                for (ie, &e) in ENTRIES.iter().enumerate() {
                    // Small mode (valgrind): two entry points per pair of layouts, each
                    // entry point in turn.
                    if small() && (ia + ib + ie) % ENTRIES.len() >= 2 {
                        continue;
                    }
                    let r = ia * 7 + ib * 3 + ie;
                    let lo = OUTS[r % OUTS.len()];
                    let (ta, tb) = ((ia + ie) % 2 == 1, (ib + ie / 2) % 2 == 1);
                    run_product(&mut p, e, la, lb, lo, ta, tb, abs[r % abs.len()], r);
                }
            }
        }
    }
}

/// Sizes across the blocking boundaries: on the mid sizes every pair of layouts (each
/// entry point in turn), on the largest the main layouts with every entry point.
#[test]
fn products_across_blocks() {
    if small() {
        return;
    }
    let abs = [(1.0f32, 0.0f32), (-0.5, 1.5), (0.5, 1.0)];
    let main = [In::RowMajor, In::Transposed, In::RevRows, In::Stepped, In::BcastRows];
    for &(m, k, n) in LARGE_SIZES {
        let mut p = Problem::new(m, k, n);
        // Every pair of layouts where the product and c are small enough to be quick.
        let full = m * k * n <= 3_000_000 && m * n <= 10_000;
        let (a_lays, b_lays): (&[In], &[In]) = if full { (&INS, &INS) } else { (&main, &main) };
        for (ia, &la) in a_lays.iter().enumerate() {
            for (ib, &lb) in b_lays.iter().enumerate() {
                let r = ia * 7 + ib * 3;
                // One entry point per pair on the mid sizes, every one in turn; two on the
                // largest.
                let picks = if full { 1 } else { 2 };
                for q in 0..picks {
                    let e = ENTRIES[(ia * b_lays.len() + ib + q * 4) % ENTRIES.len()];
                    let lo = OUTS[(r + q) % OUTS.len()];
                    let (ta, tb) = ((ia + q) % 2 == 1, (ib + r) % 2 == 1);
                    run_product(&mut p, e, la, lb, lo, ta, tb, abs[(r + q) % abs.len()], r + q);
                }
            }
        }
    }
}

/// The regression of issue 15's defect 2 on its own: a reversed input (`x.slice(s![..;
/// -1, ..])`), with `blas` read from outside the array through a leading dimension
/// made positive; and zero strides, which `blas` took as a leading dimension of the row
/// length. Both must give the contiguous copy's numbers on every path.
#[test]
fn reversed_and_broadcast_inputs_match_a_contiguous_copy() {
    for &(m, k, n) in &[(40, 30, 50), (64, 100, 64), (33, 17, 70)] {
        let x = filled2(m, k, 1);
        let w = filled2(k, n, 2);
        let rev = x.slice(s![..;-1, ..]);
        let rev_copy = rev.to_owned();
        let row = filled2(1, k, 3);
        let bcast = row.broadcast((m, k)).expect("a row broadcasts");
        let bcast_copy = bcast.to_owned();
        for (view, copy) in [(rev, &rev_copy), (bcast, &bcast_copy)] {
            let mut got = Array2::<f32>::zeros((m, n));
            let mut want = Array2::<f32>::zeros((m, n));
            kernels::matmul(view, false, w.view(), false, got.view_mut());
            sgemm::sgemm(1.0, copy.view(), w.view(), 0.0, want.view_mut());
            for (g, t) in got.iter().zip(&want) {
                assert!((g - t).abs() <= 1e-4 * (1.0 + t.abs()), "{m}x{k}x{n}: {g} vs {t}");
            }
        }
    }
}

// ---------------------------------------------------------------- n-d layouts

/// How an input of the other kernels is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DIn {
    Standard,
    /// Every axis reversed.
    Reversed,
    /// Every other element along every axis of a NaN-filled buffer.
    Stepped,
    /// A window of a NaN-filled buffer one bigger on both sides of every axis.
    Window,
    /// Column-major (axes reversed, stored, reversed back).
    FOrder,
    /// Axis 0 broadcast (stride 0): the logical values do not depend on it.
    Bcast0,
}

const DINS: [DIn; 6] = [DIn::Standard, DIn::Reversed, DIn::Stepped, DIn::Window, DIn::FOrder, DIn::Bcast0];

fn logical_d(x: &ArrayD<f32>, lay: DIn) -> ArrayD<f32> {
    if lay == DIn::Bcast0 && x.ndim() > 0 && x.shape()[0] > 0 {
        let first = x.index_axis(ndarray::Axis(0), 0).to_owned();
        let mut out = x.clone();
        for mut sub in out.outer_iter_mut() {
            sub.assign(&first);
        }
        out
    } else {
        x.clone()
    }
}

struct StoredD {
    buf: ArrayD<f32>,
    lay: DIn,
    shape: Vec<usize>,
}

impl StoredD {
    fn new(x: &ArrayD<f32>, lay: DIn) -> Self {
        let shape = x.shape().to_vec();
        let nan = |dims: Vec<usize>| ArrayD::from_elem(IxDyn(&dims), f32::NAN);
        let buf = match lay {
            DIn::Standard => x.as_standard_layout().to_owned(),
            DIn::Reversed => x.slice_each_axis(|_| Slice::new(0, None, -1)).as_standard_layout().to_owned(),
            DIn::Stepped => {
                let mut b = nan(shape.iter().map(|d| 2 * d + 1).collect());
                b.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize), 2)).assign(x);
                b
            }
            DIn::Window => {
                let mut b = nan(shape.iter().map(|d| d + 2).collect());
                b.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize - 1), 1)).assign(x);
                b
            }
            DIn::FOrder => x.t().as_standard_layout().to_owned(),
            DIn::Bcast0 if x.ndim() > 0 => {
                let mut dims = shape.clone();
                dims[0] = 1;
                if shape[0] > 0 {
                    x.slice_axis(ndarray::Axis(0), Slice::new(0, Some(1), 1)).to_owned()
                } else {
                    ArrayD::zeros(IxDyn(&dims))
                }
            }
            DIn::Bcast0 => x.clone(),
        };
        StoredD { buf, lay, shape }
    }

    fn view(&self) -> ArrayViewD<'_, f32> {
        let b = &self.buf;
        match self.lay {
            DIn::Standard => b.view(),
            DIn::Reversed => b.slice_each_axis(|_| Slice::new(0, None, -1)),
            DIn::Stepped => b.slice_each_axis(|ax| Slice::new(1, Some(ax.len as isize), 2)),
            DIn::Window => b.slice_each_axis(|ax| Slice::new(1, Some(ax.len as isize - 1), 1)),
            DIn::FOrder => b.t(),
            DIn::Bcast0 => b.broadcast(IxDyn(&self.shape)).expect("axis 0 broadcasts"),
        }
    }
}

/// How an output of the other kernels is stored, in a canary buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DOut {
    Window,
    Stepped,
    Reversed,
    FOrder,
}

const DOUTS: [DOut; 4] = [DOut::Window, DOut::Stepped, DOut::Reversed, DOut::FOrder];

fn dout_buf_shape(lay: DOut, shape: &[usize]) -> Vec<usize> {
    match lay {
        DOut::Window | DOut::Reversed => shape.iter().map(|d| d + 2).collect(),
        DOut::Stepped => shape.iter().map(|d| 2 * d + 1).collect(),
        DOut::FOrder => shape.iter().rev().map(|d| d + 2).collect(),
    }
}

fn dout_view(buf: &mut ArrayD<f32>, lay: DOut) -> ArrayViewMutD<'_, f32> {
    match lay {
        DOut::Window => buf.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize - 1), 1)),
        DOut::Stepped => buf.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize), 2)),
        DOut::Reversed => buf.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize - 1), -1)),
        DOut::FOrder => buf.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize - 1), 1)).reversed_axes(),
    }
}

/// A kernel call under test: the input views, then the output views.
type DynKernel<'k> = dyn FnMut(&[ArrayViewD<'_, f32>], Vec<ArrayViewMutD<'_, f32>>) + 'k;

/// Runs `kernel` on inputs `ins` (logical values, stored as `lays`) into outputs of
/// shapes `outs` (stored as `lo`, prefilled with `init`), checks canaries and inputs,
/// and returns the outputs' values as standard arrays.
fn run_d(
    what: &str,
    ins: &[ArrayD<f32>],
    lays: &[DIn],
    outs: &[(Vec<usize>, ArrayD<f32>)],
    lo: DOut,
    kernel: &mut DynKernel<'_>,
) -> Vec<ArrayD<f32>> {
    let stored: Vec<StoredD> = ins.iter().zip(lays).map(|(x, &l)| StoredD::new(x, l)).collect();
    let views: Vec<ArrayViewD<'_, f32>> = stored.iter().map(StoredD::view).collect();
    for (v, x) in views.iter().zip(ins) {
        assert_eq!(v.shape(), x.shape(), "{what}: layouts keep shapes");
    }
    let in_before: Vec<ArrayD<f32>> = stored.iter().map(|s| s.buf.clone()).collect();
    let mut bufs: Vec<ArrayD<f32>> = Vec::new();
    let mut marks: Vec<ArrayD<f32>> = Vec::new();
    for (shape, init) in outs {
        let dims = dout_buf_shape(lo, shape);
        let mut b = ArrayD::from_elem(IxDyn(&dims), canary());
        dout_view(&mut b, lo).assign(init);
        let mut mk = ArrayD::<f32>::zeros(IxDyn(&dims));
        dout_view(&mut mk, lo).fill(1.0);
        bufs.push(b);
        marks.push(mk);
    }
    let before = bufs.clone();
    {
        let outs: Vec<ArrayViewMutD<'_, f32>> = bufs.iter_mut().map(|b| dout_view(b, lo)).collect();
        kernel(&views, outs);
    }
    for ((b, a), mk) in before.iter().zip(&bufs).zip(&marks) {
        canaries_intact(what, b, a, mk);
    }
    for (s, b) in stored.iter().zip(&in_before) {
        assert!(s.buf.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: an input changed");
    }
    bufs.iter_mut().map(|b| dout_view(b, lo).to_owned()).collect()
}

fn close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f64>, abs: f64, rel: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for ((i, &g), &w) in got.indexed_iter().zip(want.iter()) {
        let ok = (g as f64 - w).abs() <= abs + rel * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: at {:?}: {g}, want {w}", ndarray::Dimension::slice(&i));
    }
}

fn exact(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for ((i, g), w) in got.indexed_iter().zip(want.iter()) {
        assert!(g.to_bits() == w.to_bits(), "{what}: at {:?}: {g}, want {w}", ndarray::Dimension::slice(&i));
    }
}

/// Shapes for the row-wise and elementwise kernels: 0- and 1-size axes, rows longer
/// than `map`'s 256-element blocks and than half of one, rank 3.
fn shapes_d() -> Vec<Vec<usize>> {
    let mut v: Vec<Vec<usize>> = vec![
        vec![0],
        vec![1],
        vec![7],
        vec![0, 0],
        vec![0, 5],
        vec![5, 0],
        vec![1, 1],
        vec![1, 9],
        vec![9, 1],
        vec![4, 10],
        vec![3, 0, 2],
        vec![2, 3, 4],
        vec![1, 4, 1],
    ];
    if !small() {
        v.extend([vec![3, 300], vec![300, 3], vec![40, 129], vec![2, 5, 130]]);
    }
    v
}

/// `map` against its closure element by element, to the bit: the output in every
/// layout, one input in every layout of the output's shape, the other broadcast (the
/// same shape, the last axis, a column, a scalar).
#[test]
fn map_every_layout_and_empty_outputs() {
    let f = |o: f32, [a, b]: [f32; 2]| o * 0.5 + a * b - 0.25;
    for shape in shapes_d() {
        let rank = shape.len();
        let mut bshapes: Vec<Vec<usize>> = vec![shape.clone(), vec![]];
        if rank >= 1 {
            bshapes.push(vec![shape[rank - 1]]);
        }
        if rank >= 2 {
            let mut col = shape.clone();
            col[rank - 1] = 1;
            bshapes.push(col);
        }
        let o0 = filled_d(&shape, 1);
        for (il, &la) in DINS.iter().enumerate() {
            for (ib, bs) in bshapes.iter().enumerate() {
                let a = logical_d(&filled_d(&shape, 2), la);
                let b = filled_d(bs, 3);
                let lb = DINS[(il + ib) % DINS.len()];
                let b = logical_d(&b, lb);
                for &lo in &DOUTS {
                    let what = format!("map {shape:?} a {la:?} b {bs:?} {lb:?} out {lo:?}");
                    let got = run_d(
                        &what,
                        &[a.clone(), b.clone()],
                        &[la, lb],
                        &[(shape.clone(), o0.clone())],
                        lo,
                        &mut |v, outs| {
                            let out = outs.into_iter().next().expect("one output");
                            kernels::map(out, [v[0].clone(), v[1].clone()], f);
                        },
                    );
                    let bb = b.broadcast(IxDyn(&shape)).expect("b broadcasts");
                    let want = ArrayD::from_shape_fn(IxDyn(&shape), |i| f(o0[&i], [a[&i], bb[&i]]));
                    exact(&what, &got[0], &want);
                }
            }
        }
    }
}

/// The regression of issue 15's defect 1 (runtime side): `map` into an empty output
/// wrote one element through its pointer. Here that pointer is a canary's address (an
/// empty window of a bigger buffer); for an owned empty array it dangles.
#[test]
fn map_on_an_empty_output_touches_nothing() {
    for shape in [vec![0], vec![0, 1], vec![1, 0], vec![0, 0], vec![1, 0, 1]] {
        let dims: Vec<usize> = shape.iter().map(|d| d + 2).collect();
        let mut buf = ArrayD::from_elem(IxDyn(&dims), canary());
        let x = ArrayD::<f32>::zeros(IxDyn(&shape));
        let out = buf.slice_each_axis_mut(|ax| Slice::new(1, Some(ax.len as isize - 1), 1));
        kernels::map(out, [x.view()], |_, [a]| a + 1.0);
        assert!(buf.iter().all(|v| v.to_bits() == canary().to_bits()), "map on {shape:?} wrote outside its output");
        let mut owned = ArrayD::<f32>::zeros(IxDyn(&shape));
        kernels::map(owned.view_mut(), [x.view()], |_, [a]| a + 1.0);
    }
}

fn softmax_ref(x: &ArrayD<f32>, axis: usize, log: bool) -> ArrayD<f64> {
    let mut out = x.mapv(|v| v as f64);
    for mut lane in out.lanes_mut(ndarray::Axis(axis)) {
        let m = lane.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let s: f64 = lane.iter().map(|&v| (v - m).exp()).sum();
        lane.mapv_inplace(|v| if log { v - m - s.ln() } else { (v - m).exp() / s });
    }
    out
}

/// `softmax` and `log_softmax` along every axis, every layout in and out.
#[test]
fn softmax_and_log_softmax_every_layout() {
    for shape in shapes_d() {
        for axis in 0..shape.len() {
            let x = filled_d(&shape, 5).mapv(|v| v * 8.0);
            for (il, &la) in DINS.iter().enumerate() {
                // A broadcast along the softmax's own axis is a constant row: fine too.
                let x = logical_d(&x, la);
                for log in [false, true] {
                    let lo = DOUTS[(il + usize::from(log) + axis) % DOUTS.len()];
                    let what = format!("softmax log={log} {shape:?} axis {axis} in {la:?} out {lo:?}");
                    let init = ArrayD::from_elem(IxDyn(&shape), f32::NAN);
                    let got =
                        run_d(&what, std::slice::from_ref(&x), &[la], &[(shape.clone(), init)], lo, &mut |v, outs| {
                            let out = outs.into_iter().next().expect("one output");
                            if log {
                                kernels::log_softmax(v[0].clone(), axis, out);
                            } else {
                                kernels::softmax(v[0].clone(), axis, out);
                            }
                        });
                    close(&what, &got[0], &softmax_ref(&x, axis, log), 1e-6, 2e-5);
                }
            }
        }
    }
}

/// `softmax_xent`, `softmax_xent_grad` and the fused `softmax_xent_with_grad`, every
/// layout of the logits, labels and upstream gradient, every layout out.
#[test]
fn softmax_xent_every_layout() {
    let mut shapes = vec![vec![0, 4], vec![3, 0], vec![1, 1], vec![1, 10], vec![6, 1], vec![7, 10], vec![2, 3, 5]];
    if !small() {
        shapes.push(vec![33, 130]);
    }
    for shape in shapes {
        let rank = shape.len();
        let rows = shape[..rank - 1].to_vec();
        let z0 = filled_d(&shape, 7).mapv(|v| v * 6.0);
        let y0 = filled_d(&shape, 8).mapv(|v| v.abs());
        let g0 = filled_d(&rows, 9);
        for (i, &lz) in DINS.iter().enumerate() {
            let ly = DINS[(i + 1) % DINS.len()];
            let lg = DINS[(i + 2) % DINS.len()];
            let (z, y, g) = (logical_d(&z0, lz), logical_d(&y0, ly), logical_d(&g0, lg));
            let p = softmax_ref(&z, rank - 1, false);
            let lsm = softmax_ref(&z, rank - 1, true);
            let last = ndarray::Axis(rank - 1);
            let yf = y.mapv(|v| v as f64);
            let loss_want: ArrayD<f64> = (&yf * &lsm).sum_axis(last).mapv(|v| -v);
            let sy = yf.sum_axis(last).insert_axis(last);
            let gf = g.mapv(|v| v as f64).insert_axis(last);
            let grad_want: ArrayD<f64> = (&p * &sy - &yf) * &gf;
            for &lo in &DOUTS {
                let what = format!("softmax_xent {shape:?} z {lz:?} y {ly:?} g {lg:?} out {lo:?}");
                let nan = |s: &[usize]| ArrayD::from_elem(IxDyn(s), f32::NAN);
                let got = run_d(
                    &what,
                    &[z.clone(), y.clone()],
                    &[lz, ly],
                    &[(rows.clone(), nan(&rows))],
                    lo,
                    &mut |v, outs| {
                        kernels::softmax_xent(v[0].clone(), v[1].clone(), outs.into_iter().next().expect("one output"));
                    },
                );
                close(&what, &got[0], &loss_want, 1e-5, 1e-5);
                let ins = [z.clone(), y.clone(), g.clone()];
                let got = run_d(&what, &ins, &[lz, ly, lg], &[(shape.clone(), nan(&shape))], lo, &mut |v, outs| {
                    let out = outs.into_iter().next().expect("one output");
                    kernels::softmax_xent_grad(v[0].clone(), v[1].clone(), v[2].clone(), out);
                });
                close(&format!("{what} grad"), &got[0], &grad_want, 1e-6, 1e-5);
                let outs = [(rows.clone(), nan(&rows)), (shape.clone(), nan(&shape))];
                let got = run_d(&what, &ins, &[lz, ly, lg], &outs, lo, &mut |v, outs| {
                    let mut outs = outs.into_iter();
                    let (l, d) = (outs.next().expect("loss"), outs.next().expect("grad"));
                    kernels::softmax_xent_with_grad(v[0].clone(), v[1].clone(), v[2].clone(), l, d);
                });
                close(&format!("{what} fused loss"), &got[0], &loss_want, 1e-5, 1e-5);
                close(&format!("{what} fused grad"), &got[1], &grad_want, 1e-6, 1e-5);
            }
        }
    }
}

/// Every reduction: `sum_axes` (one axis, several, all; reduced axes dropped or kept),
/// `max_axis`, `argmax_axis`; every layout in and out.
#[test]
fn reductions_every_layout() {
    for shape in shapes_d() {
        let rank = shape.len();
        let mut axis_sets: Vec<Vec<usize>> = (0..rank).map(|a| vec![a]).collect();
        if rank >= 2 {
            axis_sets.push((0..rank).collect());
        }
        if rank == 3 {
            axis_sets.push(vec![0, 2]);
        }
        for (il, &la) in DINS.iter().enumerate() {
            let x = logical_d(&filled_d(&shape, 11), la);
            for (ia, axes) in axis_sets.iter().enumerate() {
                for keep in [false, true] {
                    let lo = DOUTS[(il + ia + usize::from(keep)) % DOUTS.len()];
                    let out_shape: Vec<usize> = if keep {
                        shape.iter().enumerate().map(|(a, &d)| if axes.contains(&a) { 1 } else { d }).collect()
                    } else {
                        shape.iter().enumerate().filter(|(a, _)| !axes.contains(a)).map(|(_, &d)| d).collect()
                    };
                    let what = format!("reduce {shape:?} axes {axes:?} keep {keep} in {la:?} out {lo:?}");
                    let nan = ArrayD::from_elem(IxDyn(&out_shape), f32::NAN);
                    let mut want = x.mapv(|v| v as f64);
                    let mut absw = x.mapv(|v| v.abs() as f64);
                    for &a in axes.iter().rev() {
                        want = want.sum_axis(ndarray::Axis(a));
                        absw = absw.sum_axis(ndarray::Axis(a));
                    }
                    let want = want.into_shape_with_order(IxDyn(&out_shape)).expect("same count");
                    // Sequential f32 sums: within count * eps of the sum of magnitudes.
                    let count = x.len() / want.len().max(1);
                    let tol = count as f64 * f32::EPSILON as f64 * absw.iter().fold(1.0f64, |m, &v| m.max(v));
                    let got = run_d(
                        &what,
                        std::slice::from_ref(&x),
                        &[la],
                        &[(out_shape.clone(), nan.clone())],
                        lo,
                        &mut |v, outs| {
                            kernels::sum_axes(v[0].clone(), axes, outs.into_iter().next().expect("one output"));
                        },
                    );
                    close(&what, &got[0], &want, tol, 1e-6);
                    if axes.len() == 1 {
                        let axis = axes[0];
                        if shape[axis] == 0 {
                            continue;
                        }
                        let lanes = x.lanes(ndarray::Axis(axis));
                        let maxes: Vec<f32> =
                            lanes.into_iter().map(|l| l.fold(f32::NEG_INFINITY, |m, &v| m.max(v))).collect();
                        let args: Vec<f32> = x
                            .lanes(ndarray::Axis(axis))
                            .into_iter()
                            .map(|l| {
                                let mut best = 0;
                                for (i, &v) in l.iter().enumerate() {
                                    if v > l[best] {
                                        best = i;
                                    }
                                }
                                best as f32
                            })
                            .collect();
                        let want_max = ArrayD::from_shape_vec(IxDyn(&out_shape), maxes).expect("one per lane");
                        let want_arg = ArrayD::from_shape_vec(IxDyn(&out_shape), args).expect("one per lane");
                        let got = run_d(
                            &what,
                            std::slice::from_ref(&x),
                            &[la],
                            &[(out_shape.clone(), nan.clone())],
                            lo,
                            &mut |v, outs| {
                                kernels::max_axis(v[0].clone(), axis, outs.into_iter().next().expect("one output"));
                            },
                        );
                        exact(&format!("{what} max"), &got[0], &want_max);
                        let got = run_d(
                            &what,
                            std::slice::from_ref(&x),
                            &[la],
                            &[(out_shape.clone(), nan)],
                            lo,
                            &mut |v, outs| {
                                // The indices are u32; the harness compares f32 outputs.
                                let mut o = outs.into_iter().next().expect("one output");
                                let mut idx = ndarray::ArrayD::<u32>::zeros(o.raw_dim());
                                kernels::argmax_axis(v[0].clone(), axis, idx.view_mut());
                                o.zip_mut_with(&idx, |o, &i| *o = i as f32);
                            },
                        );
                        exact(&format!("{what} argmax"), &got[0], &want_arg);
                    }
                }
            }
        }
    }
}

/// `broadcast_to`, `sum_to`, `sum_to_acc` and `reshape` between a shape and its
/// broadcast sources (leading axes, kept unit axes, a column, a scalar), `transpose`;
/// every layout in and out.
#[test]
fn broadcasts_and_their_adjoints_every_layout() {
    let mut pairs: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![0, 4], vec![4]),
        (vec![4, 0], vec![1, 0]),
        (vec![0, 3], vec![1, 1]),
        (vec![5, 4], vec![4]),
        (vec![5, 4], vec![1, 4]),
        (vec![5, 4], vec![5, 1]),
        (vec![5, 4], vec![]),
        (vec![5, 4], vec![1]),
        (vec![1, 1], vec![]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![2, 3, 4], vec![1, 3, 4]),
        (vec![2, 3, 4], vec![2, 1, 4]),
    ];
    if !small() {
        pairs.push((vec![300, 33], vec![33]));
        pairs.push((vec![33, 300], vec![33, 1]));
    }
    for (big, src) in pairs {
        for (il, &la) in DINS.iter().enumerate() {
            let lo = DOUTS[il % DOUTS.len()];
            let what = format!("{src:?} <-> {big:?} in {la:?} out {lo:?}");
            // broadcast_to: src -> big.
            let a = logical_d(&filled_d(&src, 13), la);
            let nan_big = ArrayD::from_elem(IxDyn(&big), f32::NAN);
            let got = run_d(&what, std::slice::from_ref(&a), &[la], &[(big.clone(), nan_big)], lo, &mut |v, outs| {
                kernels::broadcast_to(v[0].clone(), outs.into_iter().next().expect("one output"));
            });
            exact(&format!("{what} broadcast_to"), &got[0], &a.broadcast(IxDyn(&big)).expect("broadcasts").to_owned());
            // sum_to and sum_to_acc: big -> src.
            let x = logical_d(&filled_d(&big, 14), la);
            let mut want = ArrayD::<f64>::zeros(IxDyn(&src));
            let offset = big.len() - src.len();
            for (i, &v) in x.indexed_iter() {
                let idx: Vec<usize> = (0..src.len()).map(|j| if src[j] == 1 { 0 } else { i[j + offset] }).collect();
                want[IxDyn(&idx)] += v as f64;
            }
            let nan_src = ArrayD::from_elem(IxDyn(&src), f32::NAN);
            let got = run_d(&what, std::slice::from_ref(&x), &[la], &[(src.clone(), nan_src)], lo, &mut |v, outs| {
                kernels::sum_to(v[0].clone(), outs.into_iter().next().expect("one output"));
            });
            let tol = 1e-6 * x.len().max(1) as f64;
            close(&format!("{what} sum_to"), &got[0], &want, tol, 1e-6);
            let init = filled_d(&src, 15);
            let acc_want = init.mapv(|v| v as f64) + want.mapv(|v| -0.5 * v);
            let got = run_d(&what, std::slice::from_ref(&x), &[la], &[(src.clone(), init)], lo, &mut |v, outs| {
                kernels::sum_to_acc(-0.5, v[0].clone(), outs.into_iter().next().expect("one output"));
            });
            close(&format!("{what} sum_to_acc"), &got[0], &acc_want, tol, 1e-6);
            // reshape: the same elements with unit axes added.
            if src.iter().product::<usize>() == a.len() {
                let mut with_unit = src.clone();
                with_unit.insert(0, 1);
                let nan_u = ArrayD::from_elem(IxDyn(&with_unit), f32::NAN);
                let got =
                    run_d(&what, std::slice::from_ref(&a), &[la], &[(with_unit.clone(), nan_u)], lo, &mut |v, outs| {
                        kernels::reshape(v[0].clone(), outs.into_iter().next().expect("one output"));
                    });
                exact(
                    &format!("{what} reshape"),
                    &got[0],
                    &a.clone().into_shape_with_order(IxDyn(&with_unit)).expect("same count"),
                );
            }
        }
    }
    for &(m, n) in &[(0, 3), (3, 0), (1, 1), (5, 7), (40, 3)] {
        for &la in &INS {
            let x = logical(&filled2(m, n, 16), la);
            let sx = Stored::new(&x, la);
            for &lo in &OUTS {
                let (br, bc) = out_buf_dim(lo, n, m);
                let mut buf = Array2::from_elem((br, bc), canary());
                let mut mark = Array2::<f32>::zeros((br, bc));
                out_view(&mut mark, lo, n, m).fill(1.0);
                let before = buf.clone();
                kernels::transpose(sx.view(), out_view(&mut buf, lo, n, m));
                let what = format!("transpose {m}x{n} in {la:?} out {lo:?}");
                canaries_intact(&what, &before, &buf, &mark);
                assert_eq!(out_view(&mut buf, lo, n, m).to_owned(), x.t(), "{what}");
            }
        }
    }
}

// ---------------------------------------------------------------- every kernel

/// The kernels below this CPU's best, as `MODELC_KERNEL` names them.
fn lower_kernels() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            return vec!["avx2", "portable"];
        }
        if avx2 {
            return vec!["portable"];
        }
    }
    vec![]
}

/// Runs this test binary again (every test but this one) with each lower kernel.
#[test]
fn other_kernels() {
    if std::env::var_os("MODELC_KERNEL").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    for kern in lower_kernels() {
        let out = std::process::Command::new(&exe)
            .args(["--skip", "other_kernels", "--quiet"])
            .env("MODELC_KERNEL", kern)
            .output()
            .expect("the test binary runs");
        assert!(
            out.status.success(),
            "MODELC_KERNEL={kern}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
