//! `dropout(a, rate = r)`: identity in every fetch and in `check_gradients`; in
//! `train_step` / `compute_gradients` a mask from the model's own random stream (seeded by
//! `with_seed`, saved in checkpoints), the same mask in the forward and backward passes.
//!
//! The mask is recovered from `compute_gradients` of `Probe`, whose loss is
//! `sum(dropout(x * w))` with `w = 1`: the gradient of `w[j]` is `sum_b x[b, j] mask[b, j]`,
//! so with a batch of one row of ones it is the mask itself. Each case is fast (a few ms);
//! the statistics test draws 200,000 elements.

use modelc::model;
use modelc::ndarray::{Array1, Array2};

model! {
    /// The mask made visible: `d l / d w = x * mask` (see the header).
    struct Probe {
        input x: [batch, 4000];
        param w: [4000] = ones;
        output o = dropout(x * w, rate = 0.3);
        loss l = sum(dropout(x * w, rate = 0.3));
        optimizer sgd(learning_rate = 0.001);
    }
}

model! {
    /// A small classifier with dropout after its hidden layer; Adam (the exact,
    /// materialized-gradient path) with optimizer slots to save.
    struct Net {
        input x: [batch, 6];
        input y: [batch, 3];
        param w1: [6, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 3] = glorot_uniform;
        param b2: [3] = zeros;
        let h = dropout(relu(matmul(x, w1) + b1), rate = 0.5);
        output logits = matmul(h, w2) + b2;
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.01);
    }
}

model! {
    /// The same with plain SGD: the fused `train_step` (updates inside the gradient
    /// products, a finiteness guard).
    struct NetSgd {
        input x: [batch, 6];
        input y: [batch, 3];
        param w1: [6, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 3] = glorot_uniform;
        param b2: [3] = zeros;
        let h = dropout(relu(matmul(x, w1) + b1), rate = 0.25);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer sgd(learning_rate = 0.2);
    }
}

model! {
    /// `rate = 0` is the identity: this model is `Plain` exactly.
    struct RateZero {
        input x: [batch, 6];
        input y: [batch, 3];
        param w1: [6, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 3] = glorot_uniform;
        param b2: [3] = zeros;
        let h = dropout(relu(matmul(x, w1) + b1), rate = 0);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.01);
    }
}

model! {
    struct Plain {
        input x: [batch, 6];
        input y: [batch, 3];
        param w1: [6, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 3] = glorot_uniform;
        param b2: [3] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.01);
    }
}

fn data(step: usize, n: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((n, 6), |(i, j)| (((i + 7 * step) * 6 + j) as f32 * 0.7311).sin());
    let y = Array2::from_shape_fn((n, 3), |(i, j)| f32::from((i + step) % 3 == j));
    (x, y)
}

fn net_params(m: &Net) -> Vec<u32> {
    [m.w1.as_slice(), m.b1.as_slice(), m.w2.as_slice(), m.b2.as_slice()]
        .into_iter()
        .flat_map(|s| s.unwrap().iter().map(|v| v.to_bits()))
        .collect()
}

fn sgd_params(m: &NetSgd) -> Vec<u32> {
    [m.w1.as_slice(), m.b1.as_slice(), m.w2.as_slice(), m.b2.as_slice()]
        .into_iter()
        .flat_map(|s| s.unwrap().iter().map(|v| v.to_bits()))
        .collect()
}

fn mask(m: &mut Probe, x: &Array2<f32>) -> (f32, Array1<f32>) {
    let (l, g) = m.compute_gradients(x.view()).unwrap();
    (l, g.w)
}

#[test]
fn the_mask_keeps_one_minus_rate_and_scales_by_its_inverse() {
    let mut m = Probe::with_seed(3);
    let x = Array2::<f32>::ones((1, 4000));
    let scale = 1.0f32 / (1.0 - 0.3f32);
    let (mut dropped, mut total) = (0usize, 0usize);
    let mut previous: Option<Array1<f32>> = None;
    for _ in 0..50 {
        let (loss, g) = mask(&mut m, &x);
        for &v in &g {
            assert!(v == 0.0 || v == scale, "a mask value {v} is neither 0 nor 1 / (1 - rate)");
        }
        dropped += g.iter().filter(|&&v| v == 0.0).count();
        total += g.len();
        // The forward pass used the mask the gradient shows: the loss is its sum.
        let s: f32 = g.sum();
        assert!((loss - s).abs() <= 1e-3 * s, "loss {loss} but the mask sums to {s}");
        // Each call draws a fresh mask.
        assert_ne!(previous.as_ref(), Some(&g));
        previous = Some(g);
    }
    // 200,000 Bernoulli(0.3) draws: sd 0.001; 0.006 is six of them.
    let rate = dropped as f64 / total as f64;
    assert!((rate - 0.3).abs() < 0.006, "dropped fraction {rate}, expected 0.3");
}

#[test]
fn fetches_and_the_loss_called_on_its_own_skip_dropout() {
    let m = Probe::new();
    let x = Array2::from_shape_fn((2, 4000), |(i, j)| (i * 4000 + j) as f32 * 1e-3);
    assert_eq!(m.o(x.view()).unwrap(), x);
    let l = m.l(x.view()).unwrap();
    let s: f32 = x.sum();
    assert!((l - s).abs() <= 1e-5 * s, "{l} vs {s}");
    assert!(Probe::explain().contains("dropout"), "{}", Probe::explain());
}

#[test]
fn check_gradients_runs_in_inference_mode_and_draws_nothing() {
    let (x, y) = data(0, 8);
    let mut a = Net::with_seed(1);
    let mut b = Net::with_seed(1);
    let check = a.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
    // The inference-mode loss is the fetch's.
    assert_eq!(check.loss, a.l(x.view(), y.view()).unwrap());
    // And the stream did not move: the next training step is the same as without it.
    a.train_step(x.view(), y.view()).unwrap();
    b.train_step(x.view(), y.view()).unwrap();
    assert_eq!(net_params(&a), net_params(&b));
}

fn run(m: &mut Net, steps: std::ops::Range<usize>) {
    for s in steps {
        let (x, y) = data(s, 8);
        m.train_step(x.view(), y.view()).unwrap();
    }
}

#[test]
fn the_same_seed_gives_the_same_params_and_another_seed_others() {
    let (mut a, mut b, mut c) = (Net::with_seed(5), Net::with_seed(5), Net::with_seed(6));
    run(&mut a, 0..20);
    run(&mut b, 0..20);
    run(&mut c, 0..20);
    assert_eq!(net_params(&a), net_params(&b));
    assert_ne!(net_params(&a), net_params(&c));
    // Dropout did something: without it (rate 0, the same model otherwise) the params differ.
    let mut p = Plain::with_seed(5);
    for s in 0..20 {
        let (x, y) = data(s, 8);
        p.train_step(x.view(), y.view()).unwrap();
    }
    assert_ne!(p.w1.as_slice().unwrap(), a.w1.as_slice().unwrap());
}

#[test]
fn rate_zero_is_the_identity() {
    let (mut z, mut p) = (RateZero::with_seed(2), Plain::with_seed(2));
    for s in 0..10 {
        let (x, y) = data(s, 8);
        assert_eq!(z.train_step(x.view(), y.view()).unwrap(), p.train_step(x.view(), y.view()).unwrap());
    }
    assert_eq!(z.w1, p.w1);
    assert_eq!(z.b2, p.b2);
    assert!(!RateZero::explain().contains("dropout"));
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("modelc-dropout-{}-{name}.safetensors", std::process::id()))
}

#[test]
fn a_run_resumed_from_a_checkpoint_is_bit_identical() {
    let mut straight = Net::with_seed(9);
    run(&mut straight, 0..30);

    let mut first = Net::with_seed(9);
    run(&mut first, 0..12);
    let path = temp("adam");
    first.save(&path).unwrap();
    let mut resumed = Net::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    run(&mut resumed, 12..30);
    assert_eq!(net_params(&resumed), net_params(&straight));
    assert_eq!(resumed.global_step(), 30);

    // Without the stream in the checkpoint the run would differ: a fresh stream.
    let mut fresh = Net::with_seed(9);
    run(&mut fresh, 0..12);
    let mut restarted = Net::with_seed(9);
    restarted.w1.assign(&fresh.w1);
    restarted.b1.assign(&fresh.b1);
    restarted.w2.assign(&fresh.w2);
    restarted.b2.assign(&fresh.b2);
    run(&mut restarted, 12..30);
    assert_ne!(net_params(&restarted), net_params(&straight));
}

#[test]
fn the_fused_sgd_step_resumes_bit_identically_too() {
    let go = |m: &mut NetSgd, steps: std::ops::Range<usize>| {
        for s in steps {
            let (x, y) = data(s, 8);
            m.train_step(x.view(), y.view()).unwrap();
        }
    };
    let mut straight = NetSgd::with_seed(4);
    go(&mut straight, 0..25);
    let mut first = NetSgd::with_seed(4);
    go(&mut first, 0..10);
    let path = temp("sgd");
    first.save(&path).unwrap();
    let mut resumed = NetSgd::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    go(&mut resumed, 10..25);
    assert_eq!(sgd_params(&resumed), sgd_params(&straight));
    // A clone carries the stream's position.
    let mut twin = straight.clone();
    go(&mut straight, 25..27);
    go(&mut twin, 25..27);
    assert_eq!(sgd_params(&twin), sgd_params(&straight));
}

#[test]
fn a_failed_step_changes_nothing_not_even_the_stream() {
    let (x, y) = data(0, 8);
    let mut bad = x.clone();
    bad[[3, 2]] = f32::NAN;
    for fused in [false, true] {
        if fused {
            let (mut a, mut b) = (NetSgd::with_seed(1), NetSgd::with_seed(1));
            assert!(a.train_step(bad.view(), y.view()).is_err());
            assert_eq!(sgd_params(&a), sgd_params(&b));
            a.train_step(x.view(), y.view()).unwrap();
            b.train_step(x.view(), y.view()).unwrap();
            assert_eq!(sgd_params(&a), sgd_params(&b));
        } else {
            let (mut a, mut b) = (Net::with_seed(1), Net::with_seed(1));
            assert!(a.train_step(bad.view(), y.view()).is_err());
            assert_eq!(net_params(&a), net_params(&b));
            a.train_step(x.view(), y.view()).unwrap();
            b.train_step(x.view(), y.view()).unwrap();
            assert_eq!(net_params(&a), net_params(&b));
        }
    }
}

#[test]
fn a_batch_of_zero_and_bad_shapes_are_no_panic() {
    let mut m = Probe::new();
    let empty = Array2::<f32>::zeros((0, 4000));
    assert_eq!(m.compute_gradients(empty.view()).unwrap().0, 0.0);
    assert_eq!(m.o(empty.view()).unwrap().dim(), (0, 4000));
    let wrong = Array2::<f32>::zeros((2, 3));
    assert!(m.train_step(wrong.view()).is_err());
    // A transposed (non-contiguous) view of the right shape works.
    let t = Array2::<f32>::ones((4000, 2));
    assert_eq!(m.o(t.t()).unwrap(), Array2::<f32>::ones((2, 4000)));
}
