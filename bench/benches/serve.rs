//! Serving latency: the MLP's `probs` fetch on one request (batch 1) and on a batch of
//! 100, from one thread, and 4 threads answering batch-1 requests through one
//! `Arc<Model>` (time per request, all threads together); and the batch-1 fetch, through
//! the `&self` path, against two hand-written forwards of the same params: ndarray's
//! `dot` as a user writes it (allocating each intermediate), and buffers allocated once
//! with modelc's own product (`kernels::gemm`), both returning the probabilities as an
//! owned array as the fetch does. After criterion it prints their ratios from
//! interleaved rounds, under a line naming the CPU.
//!
//! `cargo bench --bench serve` (`-- nomatch`: the ratios only)

use std::sync::Arc;

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use modelc::kernels::gemm;
use modelc::model;
use modelc::ndarray::{Array1, Array2, ArrayView2, Axis};

mod common;

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

/// `softmax` over each row, in place (the max subtracted first, as the fetch does).
fn softmax_rows(z: &mut Array2<f32>) {
    for mut row in z.rows_mut() {
        let m = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
}

/// The forward a user writes with ndarray: `dot`, broadcasting adds, `mapv` (every
/// intermediate a new array).
fn hand_dot(m: &Mlp, x: ArrayView2<f32>) -> Array2<f32> {
    let h1 = (x.dot(&m.w1) + &m.b1).mapv(|v| v.max(0.0));
    let h2 = (h1.dot(&m.w2) + &m.b2).mapv(|v| v.max(0.0));
    let mut z = h2.dot(&m.w3) + &m.b3;
    softmax_rows(&mut z);
    z
}

/// The best hand-written forward: buffers allocated once for the batch size, modelc's
/// product, bias + relu in one pass; the result copied out as the fetch returns it.
struct HandForward {
    h1: Array2<f32>,
    h2: Array2<f32>,
    z: Array2<f32>,
}

impl HandForward {
    fn new(batch: usize) -> Self {
        HandForward { h1: Array2::zeros((batch, 256)), h2: Array2::zeros((batch, 128)), z: Array2::zeros((batch, 10)) }
    }

    fn probs(&mut self, m: &Mlp, x: ArrayView2<f32>) -> Array2<f32> {
        fn layer(x: ArrayView2<f32>, w: &Array2<f32>, b: &Array1<f32>, out: &mut Array2<f32>, relu: bool) {
            gemm(1.0, x, w.view(), 0.0, out.view_mut());
            for mut row in out.axis_iter_mut(Axis(0)) {
                row.zip_mut_with(b, |v, &b| *v = if relu { (*v + b).max(0.0) } else { *v + b });
            }
        }
        layer(x, &m.w1, &m.b1, &mut self.h1, true);
        layer(self.h1.view(), &m.w2, &m.b2, &mut self.h2, true);
        layer(self.h2.view(), &m.w3, &m.b3, &mut self.z, false);
        let mut z = self.z.clone();
        softmax_rows(&mut z);
        z
    }
}

/// The batch-1 fetch against the hand-written forwards: each keeps its fastest of 25
/// alternating rounds of 2000 calls, and the median of the rounds' own ratios is
/// printed too (see train_step.rs, `ratio`).
fn ratios(m: &Mlp, x: ArrayView2<f32>) {
    let mut hand = HandForward::new(x.nrows());
    let want = m.probs(x).expect("the fetch");
    for (name, got) in [("ndarray dot", hand_dot(m, x)), ("buffers + modelc's gemm", hand.probs(m, x))] {
        let err = (&want - &got).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
        assert!(err < 1e-5, "{name}: probabilities {err} from the fetch's");
    }
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..2000 {
            f();
        }
        start.elapsed().as_secs_f64() / 2000.0
    };
    let mut fetch = || {
        std::hint::black_box(m.probs(std::hint::black_box(x)).expect("the fetch"));
    };
    let mut dot = || {
        std::hint::black_box(hand_dot(m, std::hint::black_box(x)));
    };
    let mut buffers = || {
        std::hint::black_box(hand.probs(m, std::hint::black_box(x)));
    };
    let mut best = [f64::MAX; 3];
    let mut ratios = [Vec::new(), Vec::new()];
    for _ in 0..25 {
        let t = [time(&mut fetch), time(&mut dot), time(&mut buffers)];
        for (b, t) in best.iter_mut().zip(t) {
            *b = b.min(t);
        }
        ratios[0].push(t[0] / t[1]);
        ratios[1].push(t[0] / t[2]);
    }
    let (peak, width) = common::fma_peak();
    println!("\n{}; one core's {width} FMA peak {peak:.1} GFLOP/s", common::cpu());
    println!("mlp probs, batch 1, through &self: {:.2} us (fastest of 25 alternating rounds)", best[0] * 1e6);
    for (i, name) in ["ndarray dot", "buffers + modelc's gemm"].into_iter().enumerate() {
        ratios[i].sort_by(f64::total_cmp);
        println!(
            "    / hand-written, {name}: {:.2} us -> {:.3} (median ratio of a round's pair {:.3})",
            best[i + 1] * 1e6,
            best[0] / best[i + 1],
            ratios[i][ratios[i].len() / 2]
        );
    }
}

fn bench(c: &mut Criterion) {
    #[allow(unused_mut)]
    let mut m = Mlp::with_seed(1);
    let one = input(1);
    let hundred = input(100);
    let mut hand = HandForward::new(1);
    c.bench_function("mlp probs, batch 1, hand-written (ndarray dot)", |b| {
        b.iter(|| hand_dot(&m, std::hint::black_box(one.view())))
    });
    c.bench_function("mlp probs, batch 1, hand-written (buffers + modelc's gemm)", |b| {
        b.iter(|| hand.probs(&m, std::hint::black_box(one.view())))
    });
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
    ratios(&m, one.view());
}

criterion_group!(benches, bench);
criterion_main!(benches);
