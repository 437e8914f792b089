//! Language v2's workloads (issue 17, item 6): the generated `train_step` against a
//! hand-written ndarray step of the same math, f32, one thread.
//!
//! - **Fashion**: `examples/fashion_mlp.rs`'s model (784-256-128-10, layer norm with a
//!   learned gain and shift, relu, dropout 0.2 after each hidden layer,
//!   `sparse_softmax_cross_entropy` on u32 labels, Adam 0.001), batch 100 as the example.
//!   The hand-written step draws its dropout masks as the runtime does, from the same
//!   kind of generator: a `rand_chacha::ChaCha8Rng` filled 256 `u32` words at a time, one
//!   word per element, kept when `u >= round(rate * 2^32)` and scaled by `1 / (1 - rate)`
//!   (it is a generator of its own, so its masks are not the generated step's, but they
//!   cost the same and keep the same share of elements). Layer norm and its gradient are
//!   written by hand over row slices (two-pass mean and variance, the fused backward
//!   `inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))`); the products call
//!   modelc's kernel (`modelc::kernels::gemm`), as the hand-written M1-M4 steps of
//!   `train_step.rs` do.
//! - **Embedding**: `examples/embedding_bag.rs`'s model (a 60 x 16 table, `gather` of
//!   `[batch, 8]` u32 token ids, the mean over tokens, a dense 16 -> 4, Adam 0.05), batch
//!   50 as the example.
//! - **Gather 10k**: the same model with a 10,000 x 64 table and plain SGD, where the
//!   cost of `gather`'s backward (a scatter-add of the 400 rows the batch uses into the
//!   table's gradient) shows. Against two hand-written steps: one that scatter-adds the
//!   rows straight into the table (`table[id] -= lr * g`, the sparse update a hand-written
//!   step would make), and one with the same math as the generated step (a dense gradient
//!   zeroed, scatter-added, then `p -= lr * g`). The share of the generated step that is
//!   the table's gradient and update is the step against the same model with the table
//!   `#[frozen]` (no gradient for it, everything else the same).
//!
//! After criterion's measurements it prints, for each pair, the ratio generated /
//! hand-written from 25 alternating rounds (each side's fastest round, and the median of
//! the rounds' own ratios), as `train_step.rs` does. `cargo bench -p modelc-bench --bench
//! v2 -- nomatch` skips criterion and prints the ratios only.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use modelc::kernels::gemm;
use modelc::model;
use modelc::ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

model! {
    struct Fashion {
        input x: [batch, 784];
        input y: [batch] as u32;
        param w1: [784, 256] = he_normal;
        param g1: [256] = ones;
        param s1: [256] = zeros;
        param w2: [256, 128] = he_normal;
        param g2: [128] = ones;
        param s2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = dropout(relu(layer_norm(matmul(x, w1)) * g1 + s1), rate = 0.2);
        let h2 = dropout(relu(layer_norm(matmul(h1, w2)) * g2 + s2), rate = 0.2);
        let logits = matmul(h2, w3) + b3;
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        optimizer adam(learning_rate = 0.001);
    }
}

model! {
    struct Embedding {
        input tokens: [batch, 8] as u32;
        input topic: [batch] as u32;
        param embedding: [60, 16] = normal(std = 0.1);
        param w: [16, 4] = glorot_uniform;
        param b: [4] = zeros;
        let sentence = mean(gather(embedding, tokens), axis = 1);
        let logits = matmul(sentence, w) + b;
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, topic));
        optimizer adam(learning_rate = 0.05);
    }
}

model! {
    struct Gather10k {
        input tokens: [batch, 8] as u32;
        input topic: [batch] as u32;
        param embedding: [10000, 64] = normal(std = 0.1);
        param w: [64, 4] = glorot_uniform;
        param b: [4] = zeros;
        let sentence = mean(gather(embedding, tokens), axis = 1);
        let logits = matmul(sentence, w) + b;
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, topic));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    struct Gather10kFrozen {
        input tokens: [batch, 8] as u32;
        input topic: [batch] as u32;
        #[frozen] param embedding: [10000, 64] = normal(std = 0.1);
        param w: [64, 4] = glorot_uniform;
        param b: [4] = zeros;
        let sentence = mean(gather(embedding, tokens), axis = 1);
        let logits = matmul(sentence, w) + b;
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, topic));
        optimizer sgd(learning_rate = 0.1);
    }
}

/// A deterministic weight pattern in [-0.05, 0.05) (the values do not matter for speed).
fn pattern(rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| ((r * 31 + c * 17) % 97) as f32 / 970.0 - 0.05)
}

/// One param with its Adam slots and gradient buffer.
struct AdamParam<D: modelc::ndarray::Dimension> {
    p: modelc::ndarray::Array<f32, D>,
    g: modelc::ndarray::Array<f32, D>,
    m: modelc::ndarray::Array<f32, D>,
    v: modelc::ndarray::Array<f32, D>,
}

impl<D: modelc::ndarray::Dimension> AdamParam<D> {
    fn new(p: modelc::ndarray::Array<f32, D>) -> Self {
        let z = modelc::ndarray::Array::zeros(p.raw_dim());
        AdamParam { g: z.clone(), m: z.clone(), v: z, p }
    }

    /// The runtime's Adam rule (`runtime/src/optim.rs`): `m = b1 m + (1 - b1) g`,
    /// `v = b2 v + (1 - b2) g^2`, `p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`,
    /// one pass over the four arrays.
    fn adam(&mut self, lr: f32, t: i32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 / (1.0 - b1.powi(t)), 1.0 / (1.0 - b2.powi(t)));
        let (p, g, m, v) = (
            self.p.as_slice_mut().unwrap(),
            self.g.as_slice().unwrap(),
            self.m.as_slice_mut().unwrap(),
            self.v.as_slice_mut().unwrap(),
        );
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m * c1) / ((*v * c2).sqrt() + eps);
        }
    }
}

/// The dropout mask as the runtime draws it (see the module documentation).
fn dropout_mask(rng: &mut ChaCha8Rng, rate: f32, out: &mut [f32]) {
    let t = (f64::from(rate) * 4_294_967_296.0).round() as u64;
    let scale = 1.0 / (1.0 - rate);
    let mut words = [0u32; 256];
    for chunk in out.chunks_mut(256) {
        let w = &mut words[..chunk.len()];
        rng.fill(w);
        for (o, &u) in chunk.iter_mut().zip(w.iter()) {
            *o = if u64::from(u) >= t { scale } else { 0.0 };
        }
    }
}

/// A hidden layer of the hand-written Fashion step: layer norm, gain and shift, relu,
/// dropout, with what its backward pass needs.
struct HandLayer {
    w: AdamParam<modelc::ndarray::Ix2>,
    gain: AdamParam<modelc::ndarray::Ix1>,
    shift: AdamParam<modelc::ndarray::Ix1>,
    /// The product, then (in place) the normalized `xhat`.
    xhat: Array2<f32>,
    /// `1 / sqrt(var + eps)` per row.
    inv: Array1<f32>,
    /// The dropout mask (0 or `1 / (1 - rate)`).
    mask: Array2<f32>,
    /// The layer's output `relu(xhat * gain + shift) * mask`.
    h: Array2<f32>,
    /// The adjoint of the product (`dz`), and of the output (`dh`).
    dz: Array2<f32>,
    dh: Array2<f32>,
}

impl HandLayer {
    fn new(inputs: usize, width: usize, batch: usize) -> Self {
        let z = || Array2::zeros((batch, width));
        HandLayer {
            w: AdamParam::new(pattern(inputs, width)),
            gain: AdamParam::new(Array1::ones(width)),
            shift: AdamParam::new(Array1::zeros(width)),
            xhat: z(),
            inv: Array1::zeros(batch),
            mask: z(),
            h: z(),
            dz: z(),
            dh: z(),
        }
    }

    /// `h = dropout(relu(layer_norm(x w) * gain + shift))`.
    fn forward(&mut self, x: ArrayView2<f32>, rng: &mut ChaCha8Rng) {
        gemm(1.0, x, self.w.p.view(), 0.0, self.xhat.view_mut());
        dropout_mask(rng, 0.2, self.mask.as_slice_mut().unwrap());
        let (gain, shift) = (self.gain.p.as_slice().unwrap(), self.shift.p.as_slice().unwrap());
        let n = gain.len() as f32;
        for (((mut z, inv), mask), mut h) in
            self.xhat.rows_mut().into_iter().zip(self.inv.iter_mut()).zip(self.mask.rows()).zip(self.h.rows_mut())
        {
            let z = z.as_slice_mut().unwrap();
            let mean = z.iter().sum::<f32>() / n;
            let var = z.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
            *inv = 1.0 / (var + 1e-5).sqrt();
            let (mask, h) = (mask.as_slice().unwrap(), h.as_slice_mut().unwrap());
            for ((((z, h), &m), &g), &s) in z.iter_mut().zip(h.iter_mut()).zip(mask).zip(gain).zip(shift) {
                *z = (*z - mean) * *inv;
                *h = (*z * g + s).max(0.0) * m;
            }
        }
    }

    /// From `dh` (set by the layer above): the gain's and shift's gradients and `dz`.
    fn backward(&mut self) {
        let gain = self.gain.p.as_slice().unwrap();
        let (gg, gs) = (self.gain.g.as_slice_mut().unwrap(), self.shift.g.as_slice_mut().unwrap());
        gg.fill(0.0);
        gs.fill(0.0);
        let n = gain.len() as f32;
        for ((((xhat, &inv), mask), h), mut dh) in self
            .xhat
            .rows()
            .into_iter()
            .zip(self.inv.iter())
            .zip(self.mask.rows())
            .zip(self.h.rows())
            .zip(self.dh.rows_mut())
        {
            let (xhat, mask, h, dh) =
                (xhat.as_slice().unwrap(), mask.as_slice().unwrap(), h.as_slice().unwrap(), dh.as_slice_mut().unwrap());
            // dh -> d(xhat * gain + shift) (dropout's mask, relu's derivative), the gain's
            // and shift's gradients, and dxhat = da * gain, in place; with its two means.
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for (((((d, &x), &m), &h), &g), (gg, gs)) in
                dh.iter_mut().zip(xhat).zip(mask).zip(h).zip(gain).zip(gg.iter_mut().zip(gs.iter_mut()))
            {
                let da = if h > 0.0 { *d * m } else { 0.0 };
                *gg += da * x;
                *gs += da;
                *d = da * g;
                s1 += *d;
                s2 += *d * x;
            }
            let (m1, m2) = (s1 / n, s2 / n);
            for (d, &x) in dh.iter_mut().zip(xhat) {
                *d = inv * (*d - m1 - x * m2);
            }
        }
        std::mem::swap(&mut self.dz, &mut self.dh);
    }

    fn adam(&mut self, lr: f32, t: i32) {
        self.w.adam(lr, t);
        self.gain.adam(lr, t);
        self.shift.adam(lr, t);
    }
}

/// The hand-written Fashion step (see the module documentation).
struct HandFashion {
    l1: HandLayer,
    l2: HandLayer,
    w3: AdamParam<modelc::ndarray::Ix2>,
    b3: AdamParam<modelc::ndarray::Ix1>,
    logits: Array2<f32>,
    rng: ChaCha8Rng,
    t: i32,
}

impl HandFashion {
    fn new(batch: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        rng.set_stream(0x6472_6f70_6f75_7421);
        HandFashion {
            l1: HandLayer::new(784, 256, batch),
            l2: HandLayer::new(256, 128, batch),
            w3: AdamParam::new(pattern(128, 10)),
            b3: AdamParam::new(Array1::zeros(10)),
            logits: Array2::zeros((batch, 10)),
            rng,
            t: 0,
        }
    }

    fn step(&mut self, x: ArrayView2<f32>, y: ArrayView1<u32>) -> f32 {
        let batch = x.nrows();
        self.l1.forward(x, &mut self.rng);
        self.l2.forward(self.l1.h.view(), &mut self.rng);
        gemm(1.0, self.l2.h.view(), self.w3.p.view(), 0.0, self.logits.view_mut());
        // Bias, sparse softmax cross-entropy and its gradient in one pass per row; the
        // logits become their gradient, the bias's gradient their column sums.
        let inv = 1.0 / batch as f32;
        let mut loss = 0.0;
        let b3 = self.b3.p.as_slice().unwrap();
        let gb = self.b3.g.as_slice_mut().unwrap();
        gb.fill(0.0);
        for (mut z, &label) in self.logits.rows_mut().into_iter().zip(y.iter()) {
            let z = z.as_slice_mut().unwrap();
            let mut m = f32::NEG_INFINITY;
            for (z, &b) in z.iter_mut().zip(b3) {
                *z += b;
                m = m.max(*z);
            }
            let mut s = 0.0;
            let zy = z[label as usize];
            for z in z.iter_mut() {
                *z = (*z - m).exp();
                s += *z;
            }
            loss += m + s.ln() - zy;
            let r = inv / s;
            for (j, (z, gb)) in z.iter_mut().zip(gb.iter_mut()).enumerate() {
                *z = *z * r - if j == label as usize { inv } else { 0.0 };
                *gb += *z;
            }
        }
        // Backward: weight gradients, then each layer's input gradient.
        gemm(1.0, self.l2.h.t(), self.logits.view(), 0.0, self.w3.g.view_mut());
        gemm(1.0, self.logits.view(), self.w3.p.t(), 0.0, self.l2.dh.view_mut());
        self.l2.backward();
        gemm(1.0, self.l1.h.t(), self.l2.dz.view(), 0.0, self.l2.w.g.view_mut());
        gemm(1.0, self.l2.dz.view(), self.l2.w.p.t(), 0.0, self.l1.dh.view_mut());
        self.l1.backward();
        gemm(1.0, x.t(), self.l1.dz.view(), 0.0, self.l1.w.g.view_mut());
        self.t += 1;
        let lr = 0.001;
        self.l1.adam(lr, self.t);
        self.l2.adam(lr, self.t);
        self.w3.adam(lr, self.t);
        self.b3.adam(lr, self.t);
        loss * inv
    }
}

/// The hand-written bag-of-embeddings step: `table` (rows x d), `w` (d x classes), `b`.
struct HandEmbedding {
    table: AdamParam<modelc::ndarray::Ix2>,
    w: AdamParam<modelc::ndarray::Ix2>,
    b: AdamParam<modelc::ndarray::Ix1>,
    sentence: Array2<f32>,
    logits: Array2<f32>,
    dsentence: Array2<f32>,
    lr: f32,
    t: i32,
}

/// How the hand-written embedding step updates its params.
#[derive(Clone, Copy, PartialEq)]
enum Update {
    /// Adam on every param (the table's gradient materialized).
    Adam,
    /// SGD, with the table's update scatter-added straight into the rows used.
    SparseSgd,
    /// SGD with the generated step's math: the table's dense gradient zeroed,
    /// scatter-added, then `p -= lr * g`.
    DenseSgd,
}

impl HandEmbedding {
    fn new(rows: usize, d: usize, classes: usize, batch: usize, lr: f32) -> Self {
        HandEmbedding {
            table: AdamParam::new(pattern(rows, d)),
            w: AdamParam::new(pattern(d, classes)),
            b: AdamParam::new(Array1::zeros(classes)),
            sentence: Array2::zeros((batch, d)),
            logits: Array2::zeros((batch, classes)),
            dsentence: Array2::zeros((batch, d)),
            lr,
            t: 0,
        }
    }

    fn step(&mut self, tokens: ArrayView2<u32>, y: ArrayView1<u32>, update: Update) -> f32 {
        let (batch, len) = tokens.dim();
        let per = 1.0 / len as f32;
        // The mean of each sentence's rows (ids are in range: the generated step checks
        // them in its prologue, and this data is made in range).
        for (mut s, ids) in self.sentence.rows_mut().into_iter().zip(tokens.rows()) {
            let s = s.as_slice_mut().unwrap();
            s.fill(0.0);
            for &id in ids {
                let row = self.table.p.row(id as usize);
                for (s, &e) in s.iter_mut().zip(row.as_slice().unwrap()) {
                    *s += e;
                }
            }
            s.iter_mut().for_each(|s| *s *= per);
        }
        gemm(1.0, self.sentence.view(), self.w.p.view(), 0.0, self.logits.view_mut());
        let inv = 1.0 / batch as f32;
        let mut loss = 0.0;
        let b = self.b.p.as_slice().unwrap();
        let gb = self.b.g.as_slice_mut().unwrap();
        gb.fill(0.0);
        for (mut z, &label) in self.logits.rows_mut().into_iter().zip(y.iter()) {
            let z = z.as_slice_mut().unwrap();
            let mut m = f32::NEG_INFINITY;
            for (z, &b) in z.iter_mut().zip(b) {
                *z += b;
                m = m.max(*z);
            }
            let zy = z[label as usize];
            let mut s = 0.0;
            for z in z.iter_mut() {
                *z = (*z - m).exp();
                s += *z;
            }
            loss += m + s.ln() - zy;
            let r = inv / s;
            for (j, (z, gb)) in z.iter_mut().zip(gb.iter_mut()).enumerate() {
                *z = *z * r - if j == label as usize { inv } else { 0.0 };
                *gb += *z;
            }
        }
        gemm(1.0, self.sentence.t(), self.logits.view(), 0.0, self.w.g.view_mut());
        // d(sentence) = dlogits w^T, scaled by the mean's 1 / len for the rows.
        gemm(per, self.logits.view(), self.w.p.t(), 0.0, self.dsentence.view_mut());
        let lr = self.lr;
        match update {
            Update::SparseSgd => {
                for (ds, ids) in self.dsentence.rows().into_iter().zip(tokens.rows()) {
                    let ds = ds.as_slice().unwrap();
                    for &id in ids {
                        let mut row = self.table.p.row_mut(id as usize);
                        for (e, &d) in row.as_slice_mut().unwrap().iter_mut().zip(ds) {
                            *e -= lr * d;
                        }
                    }
                }
            }
            Update::Adam | Update::DenseSgd => {
                self.table.g.fill(0.0);
                for (ds, ids) in self.dsentence.rows().into_iter().zip(tokens.rows()) {
                    let ds = ds.as_slice().unwrap();
                    for &id in ids {
                        let mut row = self.table.g.row_mut(id as usize);
                        for (g, &d) in row.as_slice_mut().unwrap().iter_mut().zip(ds) {
                            *g += d;
                        }
                    }
                }
            }
        }
        match update {
            Update::Adam => {
                self.t += 1;
                for p in [&mut self.table, &mut self.w] {
                    p.adam(lr, self.t);
                }
                self.b.adam(lr, self.t);
            }
            Update::SparseSgd | Update::DenseSgd => {
                if update == Update::DenseSgd {
                    let (p, g) = (self.table.p.as_slice_mut().unwrap(), self.table.g.as_slice().unwrap());
                    p.iter_mut().zip(g).for_each(|(p, &g)| *p -= lr * g);
                }
                self.w.p.zip_mut_with(&self.w.g, |p, &g| *p -= lr * g);
                self.b.p.zip_mut_with(&self.b.g, |p, &g| *p -= lr * g);
            }
        }
        loss * inv
    }
}

/// Prints generated / hand-written for one pair from 25 alternating rounds of `calls`
/// calls each: each side's fastest round (the mean time per call), and the median of
/// the rounds' own ratios (each generated round against the hand-written round right
/// after it, which a burst of noise slows alike). `train_step.rs`'s `ratio` without the
/// FLOP rate.
fn ratio(name: &str, calls: usize, mut generated: impl FnMut(), mut hand: impl FnMut()) -> [f64; 2] {
    let round = |step: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..calls {
            step();
        }
        start.elapsed().as_secs_f64() / calls as f64
    };
    let mut best = [f64::MAX; 2];
    let mut ratios = Vec::with_capacity(25);
    for _ in 0..25 {
        let mut t = [0.0; 2];
        for (i, step) in [&mut generated as &mut dyn FnMut(), &mut hand].into_iter().enumerate() {
            t[i] = round(step);
            best[i] = best[i].min(t[i]);
        }
        ratios.push(t[0] / t[1]);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name}: generated {:.1} us / hand-written {:.1} us = {:.3} (fastest of 25 alternating rounds each; \
         median ratio of a round's pair {:.3})",
        best[0] * 1e6,
        best[1] * 1e6,
        best[0] / best[1],
        ratios[ratios.len() / 2],
    );
    best
}

fn fashion_data(batch: usize) -> (Array2<f32>, Array1<u32>) {
    let x = Array2::from_shape_fn((batch, 784), |(i, j)| ((i * 7 + j * 3) % 255) as f32 / 255.0);
    let y = Array1::from_shape_fn(batch, |i| ((i * 7 + 3) % 10) as u32);
    (x, y)
}

/// `batch` sentences of 8 ids below `rows`, spread over the table, and their labels.
fn token_data(batch: usize, rows: usize) -> (Array2<u32>, Array1<u32>) {
    let tokens = Array2::from_shape_fn((batch, 8), |(i, j)| ((i * 8 + j) as u64 * 2_654_435_761 % rows as u64) as u32);
    let y = Array1::from_shape_fn(batch, |i| (i % 4) as u32);
    (tokens, y)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("v2");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).sample_size(30);

    let (x, y) = fashion_data(100);
    let mut fashion = Fashion::with_seed(7);
    group.bench_function(BenchmarkId::new("Fashion", "generated"), |b| {
        b.iter(|| fashion.train_step(x.view(), y.view()).unwrap())
    });
    let mut hf = HandFashion::new(100);
    group.bench_function(BenchmarkId::new("Fashion", "hand-written"), |b| b.iter(|| hf.step(x.view(), y.view())));

    let (tokens, topic) = token_data(50, 60);
    let mut emb = Embedding::with_seed(7);
    group.bench_function(BenchmarkId::new("Embedding", "generated"), |b| {
        b.iter(|| emb.train_step(tokens.view(), topic.view()).unwrap())
    });
    let mut he = HandEmbedding::new(60, 16, 4, 50, 0.05);
    group.bench_function(BenchmarkId::new("Embedding", "hand-written"), |b| {
        b.iter(|| he.step(tokens.view(), topic.view(), Update::Adam))
    });

    let (tok10k, topic10k) = token_data(50, 10_000);
    let mut g10k = Gather10k::with_seed(7);
    group.bench_function(BenchmarkId::new("Gather 10k", "generated"), |b| {
        b.iter(|| g10k.train_step(tok10k.view(), topic10k.view()).unwrap())
    });
    let mut g10k_frozen = Gather10kFrozen::with_seed(7);
    group.bench_function(BenchmarkId::new("Gather 10k", "generated, table frozen"), |b| {
        b.iter(|| g10k_frozen.train_step(tok10k.view(), topic10k.view()).unwrap())
    });
    let mut hs = HandEmbedding::new(10_000, 64, 4, 50, 0.1);
    group.bench_function(BenchmarkId::new("Gather 10k", "hand-written, sparse update"), |b| {
        b.iter(|| hs.step(tok10k.view(), topic10k.view(), Update::SparseSgd))
    });
    let mut hd = HandEmbedding::new(10_000, 64, 4, 50, 0.1);
    group.bench_function(BenchmarkId::new("Gather 10k", "hand-written, dense gradient"), |b| {
        b.iter(|| hd.step(tok10k.view(), topic10k.view(), Update::DenseSgd))
    });
    group.finish();

    println!();
    ratio(
        "Fashion",
        20,
        || {
            black_box(fashion.train_step(x.view(), y.view()).unwrap());
        },
        || {
            black_box(hf.step(x.view(), y.view()));
        },
    );
    ratio(
        "Embedding",
        500,
        || {
            black_box(emb.train_step(tokens.view(), topic.view()).unwrap());
        },
        || {
            black_box(he.step(tokens.view(), topic.view(), Update::Adam));
        },
    );
    let g10k_step = |m: &mut Gather10k| black_box(m.train_step(tok10k.view(), topic10k.view()).unwrap());
    let [full, _] = ratio(
        "Gather 10k, against the sparse hand-written update",
        50,
        || {
            g10k_step(&mut g10k);
        },
        || {
            black_box(hs.step(tok10k.view(), topic10k.view(), Update::SparseSgd));
        },
    );
    ratio(
        "Gather 10k, against the dense hand-written gradient",
        50,
        || {
            g10k_step(&mut g10k);
        },
        || {
            black_box(hd.step(tok10k.view(), topic10k.view(), Update::DenseSgd));
        },
    );
    let [_, frozen] = ratio(
        "Gather 10k, against the same model with the table frozen",
        50,
        || {
            g10k_step(&mut g10k);
        },
        || {
            black_box(g10k_frozen.train_step(tok10k.view(), topic10k.view()).unwrap());
        },
    );
    println!(
        "Gather 10k: the table's gradient and update are {:.1} us of the generated step's {:.1} us ({:.0}%)",
        (full - frozen) * 1e6,
        full * 1e6,
        100.0 * (full - frozen) / full
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
