//! `layer_norm` in a training step: the forward and backward kernels the generated
//! code calls, with the backward recomputing each row's statistics (`layer_norm` +
//! `layer_norm_grad`, what training programs ran before) against the forward saving them
//! for the backward (`layer_norm_saving` + `layer_norm_grad_saved`, what they run now;
//! see runtime/src/norm.rs). Also each backward kernel alone. Single thread, shapes of
//! a hidden layer's activations ([batch, width]). `cargo bench -p modelc-bench --bench
//! norm`; short measurements (the kernels take micro- to milliseconds).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelc::ndarray::{Array2, ArrayD, IxDyn};

// The kernels generated code calls (not public API: `__private` is what `model!` names).
use modelc::__private::norm;

fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array2::from_shape_fn((rows, cols), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

const SHAPES: &[(usize, usize)] = &[(128, 64), (128, 256), (256, 1024)];

fn layer_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer_norm");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(30);
    for &(rows, cols) in SHAPES {
        let (x, g) = (filled(rows, cols, 1), filled(rows, cols, 2));
        let (x, g) = (x.view().into_dyn(), g.view().into_dyn());
        let mut y = ArrayD::<f32>::zeros(IxDyn(&[rows, cols]));
        let mut dx = ArrayD::<f32>::zeros(IxDyn(&[rows, cols]));
        let mut stats = ArrayD::<f32>::zeros(IxDyn(&[rows, 2]));
        let label = format!("{rows}x{cols}");
        group.throughput(Throughput::Elements((rows * cols) as u64));
        group.bench_function(BenchmarkId::new("step_recompute", &label), |b| {
            b.iter(|| {
                norm::layer_norm(x.clone(), 1, 1e-5, y.view_mut());
                norm::layer_norm_grad(x.clone(), g.clone(), 1, 1e-5, dx.view_mut());
            })
        });
        group.bench_function(BenchmarkId::new("step_saved", &label), |b| {
            b.iter(|| {
                norm::layer_norm_saving(x.clone(), 1, 1e-5, y.view_mut(), stats.view_mut());
                norm::layer_norm_grad_saved(x.clone(), g.clone(), stats.view(), 1, dx.view_mut());
            })
        });
        group.bench_function(BenchmarkId::new("backward_recompute", &label), |b| {
            b.iter(|| norm::layer_norm_grad(x.clone(), g.clone(), 1, 1e-5, dx.view_mut()))
        });
        norm::layer_norm_saving(x.clone(), 1, 1e-5, y.view_mut(), stats.view_mut());
        group.bench_function(BenchmarkId::new("backward_saved", &label), |b| {
            b.iter(|| norm::layer_norm_grad_saved(x.clone(), g.clone(), stats.view(), 1, dx.view_mut()))
        });
    }
    group.finish();
}

criterion_group!(benches, layer_norm);
criterion_main!(benches);
