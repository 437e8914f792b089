//! `runtime::conv` (conv2d and its two gradients, by each `Strategy`: the tiled im2col
//! onto sgemm and the direct AVX-512 kernels) on the
//! convolutions of issue 18's C1 (Deep MNIST, batch 50) and C2 (LeNet-small, batch 64)
//! steps, single thread. Throughput is in elements = FLOPs (`2 n oh ow co kh kw ci` per
//! pass), so criterion's `Gelem/s` reads as GFLOP/s per pass and the slowest pass shows.
//! `cargo bench -p modelc-bench --bench conv` (a minute or two); figures in docs/conv.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelc::conv::{conv2d_grad_filter_with, conv2d_grad_input_with, conv2d_with, Geometry, Strategy};
use modelc::ndarray::{Array, Array4};

/// (label, n, h, w, ci, kh, kw, co, same).
type Case = (&'static str, usize, usize, usize, usize, usize, usize, usize, bool);

const CASES: &[Case] = &[
    ("c1_conv1_50x28x28x1_5x5x32_same", 50, 28, 28, 1, 5, 5, 32, true),
    ("c1_conv2_50x14x14x32_5x5x64_same", 50, 14, 14, 32, 5, 5, 64, true),
    ("c2_conv1_64x28x28x1_3x3x16_valid", 64, 28, 28, 1, 3, 3, 16, false),
    ("c2_conv2_64x13x13x16_3x3x32_valid", 64, 13, 13, 16, 3, 3, 32, false),
];

fn filled(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array::from_shape_fn(shape, |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    for &(label, n, h, w, ci, kh, kw, co, same) in CASES {
        let (oh, ow, pad) = if same { (h, w, [(kh - 1) / 2, (kw - 1) / 2]) } else { (h - kh + 1, w - kw + 1, [0, 0]) };
        let geo = Geometry { stride: [1, 1], dilation: [1, 1], pad };
        let (x, k, g) = (filled((n, h, w, ci), 1), filled((kh, kw, ci, co), 2), filled((n, oh, ow, co), 3));
        let (mut y, mut dx, mut dw) =
            (Array4::zeros((n, oh, ow, co)), Array4::zeros((n, h, w, ci)), Array4::zeros((kh, kw, ci, co)));
        let mut scratch = Vec::new();
        group.throughput(Throughput::Elements((2 * n * oh * ow * co * kh * kw * ci) as u64));
        for (name, strategy) in [("im2col", Strategy::Im2col), ("direct", Strategy::Direct)] {
            group.bench_function(BenchmarkId::new(format!("forward/{name}"), label), |b| {
                b.iter(|| conv2d_with(strategy, x.view(), k.view(), geo, y.view_mut(), &mut scratch))
            });
            group.bench_function(BenchmarkId::new(format!("grad_input/{name}"), label), |b| {
                b.iter(|| conv2d_grad_input_with(strategy, g.view(), k.view(), geo, dx.view_mut(), &mut scratch))
            });
            group.bench_function(BenchmarkId::new(format!("grad_filter/{name}"), label), |b| {
                b.iter(|| conv2d_grad_filter_with(strategy, x.view(), g.view(), geo, dw.view_mut(), &mut scratch))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
