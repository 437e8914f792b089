//! `sgemm` (runtime/src/sgemm/, modelc's kernel) against the `gemm` crate (0.19, its
//! AVX-512 kernels) and matrixmultiply (ndarray's default, through `general_mat_mul`),
//! single thread, on the products of the training benchmarks. Throughput is reported in
//! elements = floating-point operations (2 m n k), so criterion's `Gelem/s` reads as
//! GFLOP/s. `cargo bench --bench sgemm`.
//!
//! After criterion's measurements it prints, under the CPU and the load average, the
//! fastest of 15 interleaved rounds of each product, then M3's and M2's eight products
//! one after the other as their steps run them (`beta = 1` for the weight gradients,
//! which accumulate into the weight), through `sgemm` and the `gemm` crate, and their
//! sums. `cargo bench -p modelc-bench --bench sgemm -- nomatch` skips criterion;
//! `MODELC_BENCH_M3=1` prints only the steps' products (about 20 s); `MODELC_BENCH_C1=1`
//! only C1's fc1 products (3136 -> 1024, batch 50); `MODELC_BENCH_FUSE=1` fc1's backward
//! as two products against one pass over blocks of the weight's rows (docs/decisions.md).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelc::ndarray::{Array2, ArrayView2};

use modelc::sgemm;

mod common;

fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array2::from_shape_fn((rows, cols), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// (label, m, k, n, a transposed, b transposed): the forward and backward products of
/// the train_step workloads plus the square reference.
const CASES: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("m1_fwd_100x784x10", 100, 784, 10, false, false),
    ("m1_dw_784x100x10_aT", 784, 100, 10, true, false),
    ("m2_128x256x128", 128, 256, 128, false, false),
    ("m2_dx_128x128x256_bT", 128, 128, 256, false, true),
    ("m3_256x1024x1024", 256, 1024, 1024, false, false),
    ("m3_dw_1024x256x1024_aT", 1024, 256, 1024, true, false),
    ("m3_dx_256x1024x1024_bT", 256, 1024, 1024, false, true),
    ("square_1024", 1024, 1024, 1024, false, false),
];

fn view(x: &Array2<f32>, t: bool) -> ArrayView2<'_, f32> {
    if t {
        x.t()
    } else {
        x.view()
    }
}

/// The `gemm` crate (0.19 with its AVX-512 kernels, `x86-v4`; single thread) on the views' own strides.
fn gemm_crate(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, mut c: modelc::ndarray::ArrayViewMut2<'_, f32>) {
    let ((m, k), n) = (a.dim(), b.dim().1);
    let (sa, sb, sc) = (a.strides().to_vec(), b.strides().to_vec(), c.strides().to_vec());
    let cp = c.as_mut_ptr();
    // SAFETY: pointers and strides of live views of shapes (m, k), (k, n), (m, n).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            cp,
            sc[1],
            sc[0],
            false,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn bench(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("sgemm");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    for &(label, m, k, n, ta, tb) in CASES {
        let a_store = if ta { filled(k, m, 1) } else { filled(m, k, 1) };
        let b_store = if tb { filled(n, k, 2) } else { filled(k, n, 2) };
        let (a, b) = (view(&a_store, ta), view(&b_store, tb));
        let mut c = Array2::<f32>::zeros((m, n));
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(BenchmarkId::new("ours", label), |bch| {
            bch.iter(|| sgemm::sgemm(1.0, a, b, 0.0, c.view_mut()))
        });
        group.bench_function(BenchmarkId::new("gemm_crate", label), |bch| bch.iter(|| gemm_crate(a, b, c.view_mut())));
        group.bench_function(BenchmarkId::new("matrixmultiply", label), |bch| {
            bch.iter(|| modelc::ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c))
        });
    }
    group.finish();
    summary();
}

/// M3's eight products in the order of its step (batch 256, plain SGD: the weight
/// gradients accumulated into the weight, `beta = 1`): (label, m, k, n, a transposed, b
/// transposed, beta).
const M3_STEP: &[(&str, usize, usize, usize, bool, bool, f32)] = &[
    ("fwd1 256x784x1024", 256, 784, 1024, false, false, 0.0),
    ("fwd2 256x1024x1024", 256, 1024, 1024, false, false, 0.0),
    ("fwd3 256x1024x10", 256, 1024, 10, false, false, 0.0),
    ("dw3 1024x256x10 aT +=", 1024, 256, 10, true, false, 1.0),
    ("dx3 256x10x1024 bT", 256, 10, 1024, false, true, 0.0),
    ("dw2 1024x256x1024 aT +=", 1024, 256, 1024, true, false, 1.0),
    ("dx2 256x1024x1024 bT", 256, 1024, 1024, false, true, 0.0),
    ("dw1 784x256x1024 aT +=", 784, 256, 1024, true, false, 1.0),
];

/// C1's dense layer fc1 (3136 -> 1024, batch 50) as its step runs it: forward, input
/// gradient, weight gradient with the SGD update.
const C1_FC1: &[(&str, usize, usize, usize, bool, bool, f32)] = &[
    ("fwd 50x3136x1024", 50, 3136, 1024, false, false, 0.0),
    ("dx 50x1024x3136 bT", 50, 1024, 3136, false, true, 0.0),
    ("dw 3136x50x1024 aT +=", 3136, 50, 1024, true, false, 1.0),
];

/// M2's eight products likewise (batch 128).
const M2_STEP: &[(&str, usize, usize, usize, bool, bool, f32)] = &[
    ("fwd1 128x784x256", 128, 784, 256, false, false, 0.0),
    ("fwd2 128x256x128", 128, 256, 128, false, false, 0.0),
    ("fwd3 128x128x10", 128, 128, 10, false, false, 0.0),
    ("dw3 128x128x10 aT +=", 128, 128, 10, true, false, 1.0),
    ("dx3 128x10x128 bT", 128, 10, 128, false, true, 0.0),
    ("dw2 256x128x128 aT +=", 256, 128, 128, true, false, 1.0),
    ("dx2 128x128x256 bT", 128, 128, 256, false, true, 0.0),
    ("dw1 784x128x256 aT +=", 784, 128, 256, true, false, 1.0),
];

/// Best-of-rounds GFLOP/s of the three kernels, interleaved (robust on a noisy shared
/// machine), and the core's FMA peak for scale; then M3's products (`sgemm` and the
/// `gemm` crate), each the fastest of 15 interleaved rounds, and their sum in ms.
/// `MODELC_BENCH_M3=1` prints only the latter (`cargo bench -p modelc-bench --bench
/// sgemm -- nomatch` skips criterion's measurements).
fn summary() {
    if std::env::var_os("MODELC_BENCH_FUSE").is_some() {
        fused_backward();
        return;
    }
    if std::env::var_os("MODELC_BENCH_C1").is_some() {
        // `MODELC_BENCH_C1=1`: C1's fc1 products only (about 5 s).
        println!("\n{}", common::cpu());
        step("C1 fc1", C1_FC1, 30);
        println!("{}", common::load());
        return;
    }
    let (peak, width) = common::fma_peak();
    println!("\n{}", common::cpu());
    println!("{}", common::load());
    println!("one core's {width} FMA peak: {peak:.1} GFLOP/s");
    if std::env::var_os("MODELC_BENCH_M3").is_none() {
        println!("GFLOP/s, fastest of 15 interleaved rounds");
        println!("{:<28} {:>8} {:>11} {:>15}", "product", "sgemm", "gemm crate", "matrixmultiply");
        for &(label, m, k, n, ta, tb) in CASES {
            let a_store = if ta { filled(k, m, 1) } else { filled(m, k, 1) };
            let b_store = if tb { filled(n, k, 2) } else { filled(k, n, 2) };
            let (a, b) = (view(&a_store, ta), view(&b_store, tb));
            let mut c = Array2::<f32>::zeros((m, n));
            let flops = (2 * m * n * k) as f64;
            let calls = ((2e8 / flops) as usize).max(1);
            let mut best = [f64::MAX; 3];
            for _ in 0..15 {
                for (i, t) in best.iter_mut().enumerate() {
                    let start = Instant::now();
                    for _ in 0..calls {
                        match i {
                            0 => sgemm::sgemm(1.0, a, b, 0.0, c.view_mut()),
                            1 => gemm_crate(a, b, c.view_mut()),
                            _ => modelc::ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c),
                        }
                    }
                    *t = t.min(start.elapsed().as_secs_f64() / calls as f64);
                }
            }
            let g = |t: f64| flops / t / 1e9;
            println!("{label:<28} {:>8.1} {:>11.1} {:>15.1}", g(best[0]), g(best[1]), g(best[2]));
        }
    }
    step("M3", M3_STEP, 15);
    step("M2", M2_STEP, 100);
    println!("{}", common::load());
}

/// A step's products ([`M3_STEP`], [`M2_STEP`]) one after the other as a step runs them (each finds the
/// previous one's operands in cache, as in the step), 15 rounds; the fastest time of
/// each product through `sgemm` and through the `gemm` crate (`beta` as the step's:
/// the gemm crate's `alpha` is its `beta`), in GFLOP/s, and the sums in ms.
fn step(name: &str, products: &[(&'static str, usize, usize, usize, bool, bool, f32)], rounds: usize) {
    struct Case {
        label: &'static str,
        a: Array2<f32>,
        b: Array2<f32>,
        c: Array2<f32>,
        ta: bool,
        tb: bool,
        beta: f32,
        flops: f64,
    }
    let mut cases: Vec<Case> = products
        .iter()
        .map(|&(label, m, k, n, ta, tb, beta)| Case {
            label,
            a: if ta { filled(k, m, 1) } else { filled(m, k, 1) },
            b: if tb { filled(n, k, 2) } else { filled(k, n, 2) },
            c: filled(m, n, 3),
            ta,
            tb,
            beta,
            flops: (2 * m * n * k) as f64,
        })
        .collect();
    let sides = 2;
    let mut best = vec![vec![f64::MAX; sides]; cases.len()];
    for _ in 0..rounds {
        for side in 0..sides {
            for (case, t) in cases.iter_mut().zip(best.iter_mut()) {
                let (a, b) = (view(&case.a, case.ta), view(&case.b, case.tb));
                // The weight gradients' alpha is -lr; the others' 1.
                let alpha = if case.beta == 0.0 { 1.0 } else { -1e-3 };
                let start = Instant::now();
                if side == 0 {
                    sgemm::sgemm(alpha, a, b, case.beta, case.c.view_mut());
                } else {
                    gemm_crate_acc(alpha, a, b, case.beta, case.c.view_mut());
                }
                t[side] = t[side].min(start.elapsed().as_secs_f64());
            }
        }
    }
    println!("{name}'s products as its step runs them, fastest of {rounds} rounds each, GFLOP/s");
    println!("{:<28} {:>11} {:>11}", "product", "sgemm", "gemm crate");
    for (case, t) in cases.iter().zip(&best) {
        println!(
            "{:<28} {}",
            case.label,
            t.iter().map(|t| format!("{:>11.1}", case.flops / t / 1e9)).collect::<String>()
        );
    }
    let flops: f64 = cases.iter().map(|c| c.flops).sum();
    let sums: Vec<f64> = (0..sides).map(|s| best.iter().map(|t| t[s]).sum::<f64>()).collect();
    println!("{:<28} {}", "sum, ms", sums.iter().map(|t| format!("{:>11.2}", t * 1e3)).collect::<String>());
    println!(
        "{:<28} {}",
        "sum, GFLOP/s",
        sums.iter().map(|t| format!("{:>11.1}", flops / t / 1e9)).collect::<String>()
    );
}

/// [`gemm_crate`] with the step's `alpha` and `beta`.
fn gemm_crate_acc(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: modelc::ndarray::ArrayViewMut2<'_, f32>,
) {
    let ((m, k), n) = (a.dim(), b.dim().1);
    let (sa, sb, sc) = (a.strides().to_vec(), b.strides().to_vec(), c.strides().to_vec());
    let cp = c.as_mut_ptr();
    // SAFETY: pointers and strides of live views of shapes (m, k), (k, n), (m, n).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            cp,
            sc[1],
            sc[0],
            beta != 0.0,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// `MODELC_BENCH_FUSE=1`: C1 fc1's backward (`dx = dz w^T`, `w -= lr x^T dz`) as the step
/// runs it (two products, the update in place) against one pass over blocks of `rows`
/// rows of `w`, each used for its columns of `dx` while it is in L2, then updated into
/// a staged copy (`w_new = w - lr x^T dz`, as the guard's staged path). Fastest of 30
/// interleaved rounds, ms.
fn fused_backward() {
    use modelc::ndarray::s;
    let (b, k, n) = (50, 3136, 1024);
    let x = filled(b, k, 1);
    let dz = filled(b, n, 2);
    let mut w = filled(k, n, 3);
    let mut w_new = filled(k, n, 4);
    let mut dx = Array2::<f32>::zeros((b, k));
    let lr = 1e-6;
    let variants: &[usize] = &[0, 1, 128, 256, 1128, 1256, 1512];
    let mut best = vec![f64::MAX; variants.len()];
    for _ in 0..30 {
        for (v, t) in variants.iter().zip(best.iter_mut()) {
            let start = Instant::now();
            match *v {
                0 => {
                    sgemm::sgemm(1.0, dz.view(), w.t(), 0.0, dx.view_mut());
                    sgemm::sgemm(-lr, x.t(), dz.view(), 1.0, w.view_mut());
                }
                1 => {
                    // Staged, unfused: dx, then w_new = w; w_new -= lr x^T dz.
                    sgemm::sgemm(1.0, dz.view(), w.t(), 0.0, dx.view_mut());
                    w_new.assign(&w);
                    sgemm::sgemm(-lr, x.t(), dz.view(), 1.0, w_new.view_mut());
                }
                rows if rows > 1000 => {
                    let rows = rows - 1000;
                    for r0 in (0..k).step_by(rows) {
                        let r1 = (r0 + rows).min(k);
                        let wb = w.slice(s![r0..r1, ..]);
                        sgemm::sgemm(1.0, dz.view(), wb.t(), 0.0, dx.slice_mut(s![.., r0..r1]));
                        sgemm::sgemm(-lr, x.slice(s![.., r0..r1]).t(), dz.view(), 1.0, w.slice_mut(s![r0..r1, ..]));
                    }
                }
                rows => {
                    for r0 in (0..k).step_by(rows) {
                        let r1 = (r0 + rows).min(k);
                        let wb = w.slice(s![r0..r1, ..]);
                        sgemm::sgemm(1.0, dz.view(), wb.t(), 0.0, dx.slice_mut(s![.., r0..r1]));
                        let mut nb = w_new.slice_mut(s![r0..r1, ..]);
                        nb.assign(&wb);
                        sgemm::sgemm(-lr, x.slice(s![.., r0..r1]).t(), dz.view(), 1.0, nb);
                    }
                }
            }
            *t = t.min(start.elapsed().as_secs_f64());
        }
    }
    println!("\n{}", common::cpu());
    println!("C1 fc1 backward, fastest of 30 interleaved rounds, ms");
    for (v, t) in variants.iter().zip(&best) {
        let label = match *v {
            0 => "dx, then w in place".to_string(),
            1 => "dx, then staged w_new".to_string(),
            r if r > 1000 => format!("fused, blocks of {} rows, in place", r - 1000),
            r => format!("fused, blocks of {r} rows, staged"),
        };
        println!("{label:<36} {:>8.3}", t * 1e3);
    }
    println!("{}", common::load());
}
