//! Pooling: the kernels at the Deep MNIST first pool's shape (`[50, 28, 28, 32]`, 2x2
//! stride 2, 5 MB in), a plain max over the window in one pass for scale, and the train
//! step of bias + relu + max_pool + dense with the relu + max_pool rewrite
//! (`max_pool(relu(a)) -> relu(max_pool(a))`) against the same model written with
//! `maximum(.., 0)`, which the rewrite does not match.
//!
//! `cargo bench -p modelc-bench --bench pool`
//!
//! Measured on the 2-core dev machine at a load average of 11-13 (four other agents
//! building), so absolute times are 2-5x what a quiet core gives; medians of one run each:
//!
//! | | before the offset table and `widest` | after |
//! |---|---|---|
//! | plain max (one pass) | 0.83 ms | 0.65-0.77 ms |
//! | `max_pool_argmax` | 2.2 ms | 2.2 ms; 3.5 ms with NaN propagation (kept) |
//! | `pool_pick` | 1.87 ms | 0.81-1.16 ms |
//! | `max_pool_grad` | 2.5 ms | 1.34-1.53 ms |
//! | `avg_pool` / `avg_pool_grad` | 1.12 / 2.36 ms | 0.98-1.19 / 1.33-1.59 ms |
//! | train step, rewritten / not | 18.0 / 17.7 ms | 9.9-12.6 / 11.4-19.6 ms |
//!
//! The argmax is the slow one: 3-5x the plain max. A variant computing the maximum in
//! one pass and the first cell equal to it in a second was slower here (5.8 ms).

use criterion::{criterion_group, criterion_main, Criterion};
use modelc::__private::pool::{self, Window};
use modelc::model;
use modelc::ndarray::{Array1, Array4, ArrayView4, ArrayViewMut4};

model! {
    struct Fused {
        input x: [batch, 28, 28, 32];
        input y: [batch] as u32;
        param b: [32] = constant(value = 0.1);
        param w: [6272, 10] = glorot_uniform;
        let h = max_pool(relu(x + b));
        loss l = mean(sparse_softmax_cross_entropy(matmul(flatten(h), w), y));
        optimizer sgd(learning_rate = 0.01);
    }
}

model! {
    struct Unfused {
        input x: [batch, 28, 28, 32];
        input y: [batch] as u32;
        param b: [32] = constant(value = 0.1);
        param w: [6272, 10] = glorot_uniform;
        let h = max_pool(maximum(x + b, 0.0));
        loss l = mean(sparse_softmax_cross_entropy(matmul(flatten(h), w), y));
        optimizer sgd(learning_rate = 0.01);
    }
}

const N: usize = 50;
const WIN: Window = Window { kh: 2, kw: 2, sh: 2, sw: 2, top: 0, left: 0 };

/// A plain 2x2/2 max over contiguous NHWC, channels innermost: one pass, no argmax.
fn plain_max(x: ArrayView4<f32>, mut out: ArrayViewMut4<f32>) {
    let (n, h, w, c) = x.dim();
    let (xs, os) = (x.as_slice().expect("contiguous"), out.as_slice_mut().expect("contiguous"));
    let (oh, ow) = (h / 2, w / 2);
    for b in 0..n {
        for i in 0..oh {
            for j in 0..ow {
                let o = &mut os[((b * oh + i) * ow + j) * c..][..c];
                let r = |di: usize, dj: usize| &xs[((b * h + 2 * i + di) * w + 2 * j + dj) * c..][..c];
                let (a, bb, cc, d) = (r(0, 0), r(0, 1), r(1, 0), r(1, 1));
                for k in 0..c {
                    o[k] = a[k].max(bb[k]).max(cc[k].max(d[k]));
                }
            }
        }
    }
}

fn image() -> Array4<f32> {
    // Zero background with bright strokes, as MNIST after a conv: many tied windows.
    Array4::from_shape_fn(
        (N, 28, 28, 32),
        |(b, i, j, c)| if (i + j + b) % 5 < 2 { ((i * j + c) % 7) as f32 * 0.1 } else { 0.0 },
    )
}

fn bench(c: &mut Criterion) {
    let x = image();
    let mut idx = Array4::<u32>::zeros((N, 14, 14, 32));
    let mut out = Array4::<f32>::zeros((N, 14, 14, 32));
    let mut dx = Array4::<f32>::zeros((N, 28, 28, 32));
    let g = Array4::from_elem((N, 14, 14, 32), 0.5f32);
    let mut group = c.benchmark_group("pool [50, 28, 28, 32] 2x2/2");
    group.sample_size(30);
    group.bench_function("plain max (one pass, no argmax)", |b| b.iter(|| plain_max(x.view(), out.view_mut())));
    group.bench_function("max_pool_argmax", |b| b.iter(|| pool::max_pool_argmax(x.view(), WIN, idx.view_mut())));
    pool::max_pool_argmax(x.view(), WIN, idx.view_mut());
    group.bench_function("pool_pick", |b| b.iter(|| pool::pool_pick(x.view(), idx.view(), WIN, out.view_mut())));
    group.bench_function("max_pool_grad", |b| b.iter(|| pool::max_pool_grad(g.view(), idx.view(), WIN, dx.view_mut())));
    group.bench_function("avg_pool", |b| b.iter(|| pool::avg_pool(x.view(), WIN, out.view_mut())));
    group.bench_function("avg_pool_grad", |b| b.iter(|| pool::avg_pool_grad(g.view(), WIN, dx.view_mut())));
    group.finish();

    let y = Array1::from_shape_fn(N, |i| (i % 10) as u32);
    let (mut f, mut u) = (Fused::with_seed(1), Unfused::with_seed(1));
    let mut group = c.benchmark_group("train step, bias + relu + max_pool + dense, batch 50");
    group.sample_size(20);
    group.bench_function("relu + max_pool rewritten", |b| b.iter(|| f.train_step(x.view(), y.view()).unwrap()));
    group.bench_function("maximum(.., 0) + max_pool (not rewritten)", |b| {
        b.iter(|| u.train_step(x.view(), y.view()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
