//! `sgemm` (runtime/src/sgemm.rs, modelc's kernel) against the `gemm` crate and
//! matrixmultiply (ndarray's default, through `general_mat_mul`), single thread, on the products of the training benchmarks. Throughput is reported in
//! elements = floating-point operations (2 m n k), so criterion's `Gelem/s` reads as
//! GFLOP/s. `cargo bench --bench sgemm`.

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

/// Best-of-rounds GFLOP/s of the three kernels, interleaved (robust on a noisy shared
/// machine), and the core's FMA peak for scale.
fn summary() {
    let (peak, width) = common::fma_peak();
    println!("\n{}", common::cpu());
    println!("GFLOP/s, fastest of 15 interleaved rounds (one core's {width} FMA peak: {peak:.1})");
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

criterion_group!(benches, bench);
criterion_main!(benches);
