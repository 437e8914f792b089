//! Serving latency: the MLP's `probs` fetch on one request (batch 1) and on a batch of
//! 100, from one thread, and 4 threads answering batch-1 requests through one
//! `Arc<Model>` (time per request, all threads together).
//!
//! `cargo bench --bench serve`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use modelc::model;
use modelc::ndarray::Array2;

model! {
    struct Mlp {
        input x: [batch, 784];
        input y: [batch, 10];
        param w1: [784, 256] = he_normal;
        param b1: [256] = zeros;
        param w2: [256, 128] = he_normal;
        param b2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        let logits = matmul(h2, w3) + b3;
        output probs = softmax(logits);
        loss cross_entropy = mean(softmax_cross_entropy(logits, y));
        optimizer adam(learning_rate = 0.001);
    }
}

fn input(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, 784), |(i, j)| ((i * 31 + j * 7) % 97) as f32 / 97.0)
}

fn bench(c: &mut Criterion) {
    #[allow(unused_mut)]
    let mut m = Mlp::with_seed(1);
    let one = input(1);
    let hundred = input(100);
    c.bench_function("mlp probs, batch 1", |b| b.iter(|| m.probs(std::hint::black_box(one.view())).unwrap()));
    c.bench_function("mlp probs, batch 100", |b| b.iter(|| m.probs(std::hint::black_box(hundred.view())).unwrap()));
    let shared = Arc::new(Mlp::with_seed(1));
    c.bench_function("mlp probs, batch 1, 4 threads (per request)", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(4);
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let (m, x) = (Arc::clone(&shared), one.clone());
                    s.spawn(move || {
                        for _ in 0..per {
                            std::hint::black_box(m.probs(x.view()).unwrap());
                        }
                    });
                }
            });
            // Criterion wants the time of `iters` requests; 4 * per were answered.
            start.elapsed().mul_f64(iters as f64 / (4 * per).max(1) as f64)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
