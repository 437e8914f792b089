//! `layer_norm(a, axis = -1, epsilon = 1e-5)`: values against an f64 reference (plain
//! loops, no runtime code), over the last axis and over axis 0, with a custom epsilon; a
//! batch of 0; transposed, reversed and strided input views; a constant row (variance
//! 0: epsilon keeps it finite); rows with a large mean (the two-pass statistics keep
//! their digits). Its gradient is checked in tests/gradients.rs. Every case is a few ms.
//!
//! Training programs save each row's statistics in the forward pass for the backward
//! one (`runtime/src/norm.rs`): the models here train through that path (over the last
//! axis with SGD, over axis 0 with Adam, whose gradients are materialized), their
//! gradients pass `check_gradients`, and a step allocates nothing after its first call.

use modelc::model;
use modelc::ndarray::{s, Array2, ArrayView2, Axis};

mod common;
use common::count;

model! {
    struct Norms {
        input x: [batch, 37];
        output last = layer_norm(x);
        output first = layer_norm(x, axis = 0, epsilon = 0.01);
        output scaled = layer_norm(x, epsilon = 1e-3) * 2 + 1;
    }
}

model! {
    /// Layer norm inside a trained model (the contract's `layer_norm(h) * g + b`).
    struct Trained {
        input x: [batch, 5];
        input y: [batch, 2];
        param w: [5, 8] = glorot_uniform;
        param g: [8] = ones;
        param b: [8] = zeros;
        param v: [8, 2] = glorot_uniform;
        let h = tanh(layer_norm(matmul(x, w)) * g + b);
        loss l = mean(softmax_cross_entropy(matmul(h, v), y));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    /// Layer norm over the batch axis (strided lanes), with Adam.
    struct Columns {
        input x: [batch, 5];
        input y: [batch, 2];
        param w: [5, 6] = glorot_uniform;
        param v: [6, 2] = glorot_uniform;
        let h = relu(layer_norm(matmul(x, w), axis = 0) + 0.1);
        loss l = mean(softmax_cross_entropy(matmul(h, v), y));
        optimizer adam(learning_rate = 0.01);
    }
}

/// f64 layer norm of `x` along `axis` (0 or 1).
fn reference(x: ArrayView2<f32>, axis: usize, eps: f64) -> Array2<f64> {
    let x = x.mapv(f64::from);
    let mut out = x.clone();
    for (lane, mut o) in x.lanes(Axis(axis)).into_iter().zip(out.lanes_mut(Axis(axis))) {
        let n = lane.len() as f64;
        let mean = lane.iter().sum::<f64>() / n;
        let var = lane.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        for (o, v) in o.iter_mut().zip(lane) {
            *o = (v - mean) / (var + eps).sqrt();
        }
    }
    out
}

fn close(got: &Array2<f32>, want: &Array2<f64>, tol: f64) {
    assert_eq!(got.dim(), want.dim());
    for ((i, j), &w) in want.indexed_iter() {
        let g = f64::from(got[[i, j]]);
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "[{i}, {j}]: {g} vs {w}");
    }
}

fn input(n: usize, offset: f32) -> Array2<f32> {
    Array2::from_shape_fn((n, 37), |(i, j)| offset + ((i * 37 + j) as f32 * 0.618).sin() * (1.0 + i as f32))
}

#[test]
fn values_match_an_f64_reference() {
    let m = Norms::new();
    for n in [1, 2, 9, 64] {
        let x = input(n, 0.0);
        close(&m.last(x.view()).unwrap(), &reference(x.view(), 1, 1e-5), 2e-6);
        if n > 1 {
            close(&m.first(x.view()).unwrap(), &reference(x.view(), 0, 0.01), 2e-6);
        }
        let want = reference(x.view(), 1, 1e-3).mapv(|v| v * 2.0 + 1.0);
        close(&m.scaled(x.view()).unwrap(), &want, 4e-6);
    }
}

#[test]
fn a_large_mean_and_a_constant_row_stay_accurate_and_finite() {
    let m = Norms::new();
    // Mean 1e4, spread ~1..10: one-pass E[x^2] - E[x]^2 in f32 would lose every digit.
    let x = input(6, 1.0e4);
    // f32 holds 1e4 + d with an absolute error of 5e-4, so d (~1) carries 5e-4 relative.
    close(&m.last(x.view()).unwrap(), &reference(x.view(), 1, 1e-5), 2e-3);
    let c = Array2::from_elem((3, 37), 4.5f32);
    let out = m.last(c.view()).unwrap();
    assert!(out.iter().all(|&v| v == 0.0), "{out}");
    // A batch of one row normalized over the batch axis: every value is its own mean.
    let one = input(1, 0.0);
    assert!(m.first(one.view()).unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn a_batch_of_zero_gives_empty_outputs() {
    let m = Norms::new();
    let x = Array2::<f32>::zeros((0, 37));
    assert_eq!(m.last(x.view()).unwrap().dim(), (0, 37));
    assert_eq!(m.first(x.view()).unwrap().dim(), (0, 37));
    let mut t = Trained::new();
    let (x, y) = (Array2::<f32>::zeros((0, 5)), Array2::<f32>::zeros((0, 2)));
    // A mean over a batch of 0 is the documented `Err`, not a NaN or a panic.
    assert!(t.train_step(x.view(), y.view()).is_err());
}

#[test]
fn views_in_any_layout_give_the_same_values() {
    let m = Norms::new();
    let x = input(12, 0.5);
    let want = m.last(x.view()).unwrap();
    // Strided lanes are summed in another order than contiguous rows: equal to rounding.
    let near = |got: Array2<f32>, what: &str| {
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}: {g} vs {w}");
        }
    };
    let t = x.t().to_owned();
    near(m.last(t.t()).unwrap(), "transposed");
    let wide =
        Array2::from_shape_fn((24, 74), |(i, j)| if i % 2 == 0 && j % 2 == 0 { x[[i / 2, j / 2]] } else { f32::NAN });
    near(m.last(wide.slice(s![..;2, ..;2])).unwrap(), "strided");
    let mut rev = x.clone();
    rev.invert_axis(Axis(1));
    // A reversed view of `rev` is `x` again (negative strides).
    near(m.last(rev.slice(s![.., ..;-1])).unwrap(), "reversed");
    let wrong = Array2::<f32>::zeros((3, 36));
    assert!(m.last(wrong.view()).is_err());
}

#[test]
fn a_model_with_layer_norm_trains() {
    let mut t = Trained::with_seed(1);
    let x = Array2::from_shape_fn((16, 5), |(i, j)| ((i * 5 + j) as f32 * 0.37).cos());
    let y = Array2::from_shape_fn((16, 2), |(i, j)| f32::from(i % 2 == j));
    let first = t.train_step(x.view(), y.view()).unwrap();
    let mut last = first;
    for _ in 0..200 {
        last = t.train_step(x.view(), y.view()).unwrap();
    }
    assert!(last < 0.8 * first, "{first} -> {last}");
    let check = t.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
    assert!(Trained::explain().contains("layer_norm_grad("), "{}", Trained::explain());
    assert!(Trained::graph_dot().contains("layer_norm"));
}

fn batch(n: usize, seed: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((n, 5), |(i, j)| (((i + seed) * 5 + j) as f32 * 0.731).sin() * 2.0 + 0.5);
    let y = Array2::from_shape_fn((n, 2), |(i, j)| if (i + seed) % 2 == j { 1.0 } else { 0.0 });
    (x, y)
}

#[test]
fn saved_statistics_give_finite_difference_gradients_and_a_step_allocates_nothing() {
    let (mut t, mut c) = (Trained::with_seed(3), Columns::with_seed(3));
    let (x, y) = batch(16, 0);
    let check = t.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
    let check = c.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
    // The first calls allocate the workspaces (the statistics' buffers with them).
    t.train_step(x.view(), y.view()).unwrap();
    c.train_step(x.view(), y.view()).unwrap();
    t.compute_gradients(x.view(), y.view()).unwrap();
    let (x2, y2) = batch(16, 1);
    let n = count(|| {
        for _ in 0..3 {
            t.train_step(x2.view(), y2.view()).unwrap();
            c.train_step(x2.view(), y2.view()).unwrap();
        }
    });
    assert_eq!(n, 0, "train_step allocated {n} times after its first call");
}
