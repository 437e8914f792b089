//! `max_pool` and `avg_pool` on NHWC images: values against a naive f64 reference (plain
//! loops with TF's padding formula written out again here) over sizes, strides and both
//! paddings; gradients at ties computed by hand (an all-equal window sends its whole
//! gradient to its first cell, never 4x), floor pooling's dropped row, avg over the valid
//! cells only; a batch of 0; reversed and strided views; a wrong image size at run time
//! (`Err`); `check_gradients` and 0 allocations per step after the first for a relu +
//! max_pool + dense model. Every case is a few ms.

use modelc::model;
use modelc::ndarray::{s, Array1, Array4, ArrayView4, Axis};

mod common;
use common::count;

model! {
    struct Pools {
        input x: [batch, 7, 6, 3];
        output m2 = max_pool(x);
        output m2same = max_pool(x, padding = "same");
        output m32 = max_pool(x, size = [3, 2], stride = [2, 1], padding = "same");
        output m3s1 = max_pool(x, size = 3, stride = 1);
        output m3s2 = max_pool(x, 3, 2);
        output mbig = max_pool(x, size = 9, padding = "same");
        output a2 = avg_pool(x);
        output a32 = avg_pool(x, size = [3, 2], stride = [2, 1], padding = "same");
        output a3s1 = avg_pool(x, size = 3, stride = 1, padding = "same");
        output abig = avg_pool(x, size = [7, 6]);
    }
}

model! {
    /// The gradient through one pooling op: `d sum(pool(x * w)) / d w` is, per cell, the
    /// sum over the batch of `x` times how often the cell was chosen (max) or its share
    /// of the windows' counts (avg).
    struct MaxFloor {
        input x: [batch, 5, 5, 1];
        param w: [5, 5, 1] = ones;
        loss l = sum(max_pool(x * w));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    struct MaxOverlap {
        input x: [batch, 5, 5, 1];
        param w: [5, 5, 1] = ones;
        loss l = sum(max_pool(x * w, size = 3, stride = 1));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    struct AvgSame {
        input x: [batch, 5, 5, 1];
        param w: [5, 5, 1] = ones;
        loss l = sum(avg_pool(x * w, size = 2, padding = "same"));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    /// relu + max_pool + a dense layer on u32 labels: the shape of a CNN's tail.
    struct Net {
        input x: [batch, 8, 8, 2];
        input y: [batch] as u32;
        param scale: [2] = ones;
        param bias: [2] = constant(value = 0.1);
        param w: [32, 3] = glorot_uniform;
        let h = max_pool(relu(x * scale + bias));
        let z = matmul(flatten(h), w);
        loss l = mean(sparse_softmax_cross_entropy(z, y));
        metric accuracy = mean(argmax(z, axis = 1) == y);
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    /// `Net` with relu written as `maximum(.., 0)`, which the relu + max_pool rewrite does
    /// not match: the reference for the rewrite's exactness.
    struct NetUnfused {
        input x: [batch, 8, 8, 2];
        input y: [batch] as u32;
        param scale: [2] = ones;
        param bias: [2] = constant(value = 0.1);
        param w: [32, 3] = glorot_uniform;
        let h = max_pool(maximum(x * scale + bias, 0.0));
        let z = matmul(flatten(h), w);
        loss l = mean(sparse_softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

/// TF's output size and padding before the image along one axis.
fn geometry(n: usize, k: usize, s: usize, same: bool) -> (usize, usize) {
    if same {
        let out = n.div_ceil(s);
        let total = ((out - 1) * s + k).saturating_sub(n);
        (out, total / 2)
    } else {
        ((n - k) / s + 1, 0)
    }
}

/// f64 pooling of `x` (max or mean over each window's valid cells).
fn reference(x: ArrayView4<f32>, k: [usize; 2], st: [usize; 2], same: bool, max: bool) -> Array4<f64> {
    let (n, h, w, c) = x.dim();
    let (oh, top) = geometry(h, k[0], st[0], same);
    let (ow, left) = geometry(w, k[1], st[1], same);
    Array4::from_shape_fn((n, oh, ow, c), |(b, oi, oj, ch)| {
        let mut vals = Vec::new();
        for r in 0..k[0] {
            for q in 0..k[1] {
                let (i, j) = ((oi * st[0] + r) as i64 - top as i64, (oj * st[1] + q) as i64 - left as i64);
                if (0..h as i64).contains(&i) && (0..w as i64).contains(&j) {
                    vals.push(f64::from(x[[b, i as usize, j as usize, ch]]));
                }
            }
        }
        assert!(!vals.is_empty(), "every window holds a valid cell");
        if max {
            vals.iter().copied().fold(f64::MIN, f64::max)
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64
        }
    })
}

fn close(got: &Array4<f32>, want: &Array4<f64>, what: &str) {
    assert_eq!(got.dim(), want.dim(), "{what}");
    for (idx, &w) in want.indexed_iter() {
        let g = f64::from(got[idx]);
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what} {idx:?}: {g} vs {w}");
    }
}

/// Distinct values (no ties), negative and positive (a zero pad cell would win a max).
fn image(n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 7, 6, 3), |(b, i, j, c)| (((b * 126 + i * 18 + j * 3 + c) as f32) * 0.7137).sin() * 3.0)
}

fn check_all(m: &Pools, x: ArrayView4<f32>, what: &str) {
    let r = |k, st, same, max| reference(x, k, st, same, max);
    close(&m.m2(x).unwrap(), &r([2, 2], [2, 2], false, true), &format!("{what} m2"));
    close(&m.m2same(x).unwrap(), &r([2, 2], [2, 2], true, true), &format!("{what} m2same"));
    close(&m.m32(x).unwrap(), &r([3, 2], [2, 1], true, true), &format!("{what} m32"));
    close(&m.m3s1(x).unwrap(), &r([3, 3], [1, 1], false, true), &format!("{what} m3s1"));
    close(&m.m3s2(x).unwrap(), &r([3, 3], [2, 2], false, true), &format!("{what} m3s2"));
    close(&m.mbig(x).unwrap(), &r([9, 9], [9, 9], true, true), &format!("{what} mbig"));
    close(&m.a2(x).unwrap(), &r([2, 2], [2, 2], false, false), &format!("{what} a2"));
    close(&m.a32(x).unwrap(), &r([3, 2], [2, 1], true, false), &format!("{what} a32"));
    close(&m.a3s1(x).unwrap(), &r([3, 3], [1, 1], true, false), &format!("{what} a3s1"));
    close(&m.abig(x).unwrap(), &r([7, 6], [7, 6], false, false), &format!("{what} abig"));
}

#[test]
fn values_match_a_naive_reference() {
    let m = Pools::new();
    for n in [1, 3] {
        check_all(&m, image(n).view(), &format!("batch {n}"));
    }
    assert_eq!(m.m2(image(1).view()).unwrap().dim(), (1, 3, 3, 3));
    assert_eq!(m.m2same(image(1).view()).unwrap().dim(), (1, 4, 3, 3));
    assert_eq!(m.m32(image(1).view()).unwrap().dim(), (1, 4, 6, 3));
    assert_eq!(m.mbig(image(1).view()).unwrap().dim(), (1, 1, 1, 3));
}

/// A row-major copy of `v`'s values.
fn row_major(v: ArrayView4<f32>) -> Array4<f32> {
    Array4::from_shape_vec(v.dim(), v.iter().copied().collect()).expect("as many values as the shape holds")
}

#[test]
fn reversed_and_strided_views_give_the_contiguous_answer() {
    let m = Pools::new();
    let x = image(2);
    // A row-major copy of `x` with height and channels flipped (`to_owned()` or
    // `invert_axis` would keep negative strides, which the flip back would undo, giving a
    // plain row-major view); reversing it again is `x`, through negative strides.
    let rev = row_major(x.slice(s![.., ..;-1, .., ..;-1]));
    let view = rev.slice(s![.., ..;-1, .., ..;-1]);
    assert!(!view.is_standard_layout());
    check_all(&m, view, "reversed");
    let wide =
        Array4::from_shape_fn((2, 7, 12, 3), |(b, i, j, c)| if j % 2 == 0 { x[[b, i, j / 2, c]] } else { f32::NAN });
    check_all(&m, wide.slice(s![.., .., ..;2, ..]), "strided");
    // Channels outermost in memory, then viewed as NHWC.
    let nchw = row_major(x.view().permuted_axes([0, 3, 1, 2]));
    let view = nchw.view().permuted_axes([0, 2, 3, 1]);
    assert!(!view.is_standard_layout());
    check_all(&m, view, "permuted");
}

#[test]
fn a_batch_of_zero_and_a_wrong_image_size() {
    let m = Pools::new();
    let empty = Array4::<f32>::zeros((0, 7, 6, 3));
    assert_eq!(m.m32(empty.view()).unwrap().dim(), (0, 4, 6, 3));
    assert_eq!(m.a3s1(empty.view()).unwrap().dim(), (0, 7, 6, 3));
    for bad in [(2, 6, 6, 3), (2, 7, 7, 3), (2, 7, 6, 1)] {
        let x = Array4::<f32>::zeros(bad);
        let e = m.m2(x.view()).expect_err("a wrong image size is an error");
        assert!(e.to_string().contains('x'), "{e}");
        assert!(m.a2(x.view()).is_err());
    }
    let mut net = Net::with_seed(1);
    let before = net.w.clone();
    let (x, y) = (Array4::<f32>::zeros((2, 8, 7, 2)), Array1::<u32>::zeros(2));
    assert!(net.train_step(x.view(), y.view()).is_err());
    assert_eq!(net.w, before, "a refused step changes nothing");
}

#[test]
fn ties_send_the_whole_gradient_to_the_first_cell() {
    // Two images, every cell 0.1 (the relu'd bias over a zero background).
    let x = Array4::from_elem((2, 5, 5, 1), 0.1f32);
    // d max_floor / d w: 2x2 windows at rows/cols 0..4 (floor: row and column 4 are
    // dropped); each window's first cell gets 0.1 per image. A mask would give every
    // covered cell 0.2.
    let (l, g) = grads(&x, 0);
    assert!((l - 4.0 * 2.0 * 0.1).abs() < 1e-6, "{l}");
    let mut want = Array4::<f32>::zeros((1, 5, 5, 1));
    for i in [0, 2] {
        for j in [0, 2] {
            want[[0, i, j, 0]] = 0.2;
        }
    }
    assert_eq!(g, want, "max_pool 2x2 valid at ties");
    // Overlapping 3x3 stride 1 windows (3x3 of them): each picks its own top-left
    // cell, so cells (0..3, 0..3) get one window each.
    let (_, g) = grads(&x, 1);
    let mut want = Array4::<f32>::zeros((1, 5, 5, 1));
    want.slice_mut(s![.., 0..3, 0..3, ..]).fill(0.2);
    assert_eq!(g, want, "max_pool 3x3 stride 1 at ties");
}

#[test]
fn gradients_match_hand_computed_values_away_from_ties() {
    // x[i, j] = 5 * i + j: each window's maximum is its bottom-right valid cell.
    let x = Array4::from_shape_fn((1, 5, 5, 1), |(_, i, j, _)| (5 * i + j) as f32);
    let (_, g) = grads(&x, 0);
    let mut want = Array4::<f32>::zeros((1, 5, 5, 1));
    for (i, j) in [(1, 1), (1, 3), (3, 1), (3, 3)] {
        want[[0, i, j, 0]] = x[[0, i, j, 0]];
    }
    assert_eq!(g, want);
    // Overlapping windows accumulate: 3x3 stride 1 over 5x5 has 3x3 windows, whose
    // maxima are the cells (2..5, 2..5), each chosen once.
    let (_, g) = grads(&x, 1);
    let mut want = Array4::<f32>::zeros((1, 5, 5, 1));
    for i in 2..5 {
        for j in 2..5 {
            want[[0, i, j, 0]] = x[[0, i, j, 0]];
        }
    }
    assert_eq!(g, want);
    // 3x3 stride 1 on a constant image but one: a larger centre cell wins every window
    // that holds it (all 9), a tie elsewhere goes to the first cell.
    let mut c = Array4::from_elem((1, 5, 5, 1), 1f32);
    c[[0, 2, 2, 0]] = 2.0;
    let (_, g) = grads(&c, 1);
    assert_eq!(g[[0, 2, 2, 0]], 18.0, "{g}");
    assert_eq!(g.sum(), 18.0, "{g}");
    // avg 2x2 "same" over 5x5: 3x3 windows; the last row and column of windows hold
    // 2 or 1 valid cells, so a cell there gets x / 2 or x / 1 (TF counts valid cells).
    let (_, g) = grads(&Array4::from_elem((1, 5, 5, 1), 1f32), 2);
    let want = Array4::from_shape_fn((1, 5, 5, 1), |(_, i, j, _)| {
        let share = |k: usize| if k == 4 { 1.0 } else { 0.5 };
        share(i) * share(j)
    });
    assert_eq!(g, want);
}

/// The loss and `d loss / d w` (as an image of one) of `MaxFloor` (0), `MaxOverlap` (1)
/// or `AvgSame` (2).
fn grads(x: &Array4<f32>, which: usize) -> (f32, Array4<f32>) {
    let (l, w) = match which {
        0 => MaxFloor::new().compute_gradients(x.view()).map(|(l, g)| (l, g.w)),
        1 => MaxOverlap::new().compute_gradients(x.view()).map(|(l, g)| (l, g.w)),
        _ => AvgSame::new().compute_gradients(x.view()).map(|(l, g)| (l, g.w)),
    }
    .unwrap();
    (l, w.insert_axis(Axis(0)))
}

fn net_data(n: usize) -> (Array4<f32>, Array1<u32>) {
    // Zero background with a bright square whose position is the label: whole windows
    // tie after relu, as on MNIST.
    let mut x = Array4::<f32>::zeros((n, 8, 8, 2));
    let y = Array1::from_shape_fn(n, |b| (b % 3) as u32);
    for b in 0..n {
        let at = 2 * (b % 3);
        x.slice_mut(s![b, at..at + 2, at..at + 3, ..]).fill(1.0 + (b % 5) as f32 * 0.1);
    }
    (x, y)
}

#[test]
fn a_pooling_model_trains_checks_its_gradients_and_allocates_nothing() {
    let mut net = Net::with_seed(2);
    let (x, y) = net_data(12);
    let first = net.train_step(x.view(), y.view()).unwrap();
    let n = count(|| {
        for _ in 0..5 {
            net.train_step(x.view(), y.view()).unwrap();
        }
    });
    assert_eq!(n, 0, "relu + max_pool + dense train_step allocated {n} times in 5 steps");
    let mut last = first;
    for _ in 0..100 {
        last = net.train_step(x.view(), y.view()).unwrap();
    }
    assert!(last < 0.5 * first, "{first} -> {last}");
    assert_eq!(net.accuracy(x.view(), y.view()).unwrap(), 1.0);
    let check = net.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
    let explain = Net::explain();
    assert!(explain.contains("max_pool(relu("), "{explain}");
    assert!(explain.contains("max_pool_grad("), "{explain}");
    assert!(explain.contains("max_pool(relu(a)) -> relu(max_pool(a))"), "{explain}");
    // relu's mask on the pooled output `h`, before the scatter; the bias gradient sums
    // that pooled gradient, not the scattered image (`ops/pool.rs`, `sum_of_scatter`).
    assert!(explain.contains("[batch, 4, 4, 2]) * step(h)"), "{explain}");
    assert!(explain.contains("max_pool_grad(t5, t2, size = 2"), "{explain}");
    assert!(explain.contains("d l / d bias = sum_to(t5, [2])"), "{explain}");
    assert!(explain.contains("sum_to(max_pool_grad(g, argmax)) over the image -> sum_to(g)"), "{explain}");
    assert!(!NetUnfused::explain().contains("max_pool(relu(a))"), "{}", NetUnfused::explain());
    assert!(Net::graph_dot().contains("max_pool_argmax 2x2/2 valid"), "{}", Net::graph_dot());
}

#[test]
fn cost_counts_one_flop_per_window_cell() {
    let c = Pools::cost(2);
    let of = |name: &str| c.fetches.iter().find(|f| f.0 == name).map(|f| f.1);
    // 2 images x 3x3 outputs x 3 channels, 4 cells each (the pick is a copy).
    assert_eq!(of("m2"), Some(2 * 3 * 3 * 3 * 4));
    assert_eq!(of("a3s1"), Some(2 * 7 * 6 * 3 * 9));
    assert_eq!(of("m32"), Some(2 * 4 * 6 * 3 * 6));
}

#[test]
fn the_relu_pool_rewrite_changes_no_value_and_no_gradient() {
    let (mut a, mut b) = (Net::with_seed(4), NetUnfused::with_seed(4));
    assert_eq!(a.w, b.w);
    // Tied windows of positive values, tied windows of negative values (all zero after
    // relu: the gradient is 0 whichever cell is chosen), and mixed windows.
    let (mut x, y) = net_data(9);
    for (k, v) in x.iter_mut().enumerate() {
        if k % 7 == 3 {
            *v = -((k % 5) as f32) * 0.3;
        }
    }
    a.bias.assign(&modelc::ndarray::arr1(&[0.1, -0.2]));
    b.bias.assign(&a.bias);
    let (la, ga) = a.compute_gradients(x.view(), y.view()).unwrap();
    let (lb, gb) = b.compute_gradients(x.view(), y.view()).unwrap();
    assert_eq!(la, lb);
    assert_eq!(ga.w, gb.w);
    assert_eq!(ga.scale, gb.scale);
    assert_eq!(ga.bias, gb.bias);
    assert!(ga.bias.iter().all(|&v| v != 0.0), "{}", ga.bias);
}
