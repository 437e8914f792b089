//! Bad input at run time for a CNN (issue 18, "Bad input"): a small model with `conv2d`,
//! `max_pool` and `avg_pool` (and Adam, so that there are optimizer slots to keep), and
//! every call it has (each fetch, `train_step`, `compute_gradients`) given
//!
//! - images of a wrong height, width or channel count, labels of another batch, labels out
//!   of range: an `Err` naming the input, and nothing changed (params, every Adam slot
//!   and the global step, compared through a checkpoint's bytes);
//! - a batch of 0: empty outputs, a clear `EmptyReduction` for the mean loss and the
//!   metric, nothing changed; with a summed loss (`SumCnn`), a loss of 0, zero gradients
//!   and a step that moves nothing;
//! - the same images through reversed (negative-stride), every-other (stride 2),
//!   channels-first-in-memory and broadcast (stride 0) views: bit for bit the answers of
//!   a contiguous copy, and the same training state after a step;
//! - a NaN in an image: an `Err` that changes nothing (or finite params), never a panic.
//!
//! tests/conv.rs and tests/pool.rs cover each op's values on such views; this file covers
//! the calls of a model that chains them. A few ms a case.

use modelc::model;
use modelc::ndarray::{s, Array, Array1, Array4, ArrayView1, ArrayView4};
use modelc::Error;

model! {
    /// conv same + relu, max_pool "same" (9x8 -> 5x4), conv valid 2x2 (-> 4x3), avg_pool
    /// 2x2 stride 1 "same" (partial windows at the bottom and right), a dense layer.
    struct Cnn {
        input x: [batch, 9, 8, 2];
        input y: [batch] as u32;
        param k1: [3, 3, 2, 4] = glorot_uniform;
        param b1: [4] = constant(0.1);
        param k2: [2, 2, 4, 3] = glorot_uniform;
        param v: [36, 3] = glorot_uniform;
        let h1 = max_pool(relu(conv2d(x, k1, padding = "same") + b1), padding = "same");
        let h2 = avg_pool(conv2d(h1, k2), size = 2, stride = 1, padding = "same");
        let z = matmul(flatten(h2), v);
        output logits = z;
        output pooled = h1;
        loss l = mean(sparse_softmax_cross_entropy(z, y));
        metric accuracy = mean(argmax(z, axis = 1) == y);
        optimizer adam(learning_rate = 0.01);
    }
}

model! {
    /// The same layers with a summed loss and plain SGD: a batch of 0 is a loss of 0.
    struct SumCnn {
        input x: [batch, 9, 8, 2];
        input c: [batch, 3];
        param k1: [3, 3, 2, 4] = glorot_uniform;
        param b1: [4] = constant(0.1);
        param k2: [2, 2, 4, 3] = glorot_uniform;
        param v: [36, 3] = glorot_uniform;
        let h1 = max_pool(relu(conv2d(x, k1, padding = "same") + b1), padding = "same");
        let h2 = avg_pool(conv2d(h1, k2), size = 2, stride = 1, padding = "same");
        loss l = sum(c * matmul(flatten(h2), v));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn images(n: usize, h: usize, w: usize, c: usize) -> Array4<f32> {
    Array::from_shape_fn((n, h, w, c), |(b, i, j, k)| ((b * 97 + i * 13 + j * 5 + k * 3) as f32 * 0.61).sin())
}

fn labels(n: usize) -> Array1<u32> {
    Array1::from_shape_fn(n, |i| (i % 3) as u32)
}

/// A model that has trained a few steps, so that Adam's slots and the global step are
/// not their initial values.
fn trained() -> Cnn {
    let mut m = Cnn::with_seed(5);
    let (x, y) = (images(4, 9, 8, 2), labels(4));
    for _ in 0..3 {
        m.train_step(x.view(), y.view()).expect("a good step");
    }
    m
}

/// Everything a step may change: every tensor of a checkpoint (params and Adam's slots,
/// in name order) and the global step.
fn state(m: &Cnn) -> Vec<u8> {
    let dir =
        std::env::temp_dir().join(format!("modelc-cnn-input-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("state.safetensors");
    m.save(&path).expect("save");
    let bytes = std::fs::read(&path).expect("read back");
    std::fs::remove_file(&path).expect("remove");
    // Skip the JSON header (its metadata map has no fixed order).
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut out = bytes[8 + header..].to_vec();
    out.extend(m.global_step().to_le_bytes());
    out
}

/// Every call on `(x, y)`: each must be an `Err` that `ok` accepts, and none may change
/// the model.
fn all_refused(m: &mut Cnn, x: ArrayView4<f32>, y: ArrayView1<u32>, what: &str, ok: impl Fn(&Error) -> bool) {
    let before = state(m);
    let errs = [
        ("logits", m.logits(x).err()),
        ("pooled", m.pooled(x).err()),
        ("l", m.l(x, y).err()),
        ("accuracy", m.accuracy(x, y).err()),
        ("compute_gradients", m.compute_gradients(x, y).err()),
        ("train_step", m.train_step(x, y).err()),
    ];
    for (call, e) in errs {
        match e {
            Some(e) if ok(&e) => {}
            other => panic!("{what}: {call} gave {other:?}"),
        }
    }
    assert!(before == state(m), "{what}: a refused call changed the model");
}

fn shape_error_on(input: &'static str, found: Vec<usize>) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Shape { input: i, found: f, .. } if *i == input && *f == found)
}

#[test]
fn wrong_image_sizes_and_channel_counts_are_shape_errors_that_change_nothing() {
    let mut m = trained();
    let y = labels(2);
    for (h, w, c) in [(8, 8, 2), (10, 8, 2), (9, 7, 2), (9, 9, 2), (9, 8, 1), (9, 8, 3), (8, 9, 2), (1, 1, 2)] {
        let x = images(2, h, w, c);
        all_refused(&mut m, x.view(), y.view(), &format!("{h}x{w}x{c}"), shape_error_on("x", vec![2, h, w, c]));
    }
    // Only the calls that take `y`: the fetches of x alone run.
    let x = images(2, 9, 8, 2);
    for ny in [1, 3] {
        let before = state(&m);
        let y = labels(ny);
        assert!(matches!(m.l(x.view(), y.view()), Err(Error::Shape { .. })), "labels of {ny}");
        assert!(matches!(m.accuracy(x.view(), y.view()), Err(Error::Shape { .. })), "labels of {ny}");
        assert!(matches!(m.compute_gradients(x.view(), y.view()), Err(Error::Shape { .. })), "labels of {ny}");
        let e = m.train_step(x.view(), y.view()).expect_err("labels of another batch");
        assert!(matches!(&e, Error::Shape { detail, .. } if detail.contains("batch")), "{e}");
        assert!(before == state(&m), "labels of {ny}: a refused step changed the model");
    }
}

#[test]
fn labels_out_of_range_are_index_errors_that_change_nothing() {
    let mut m = trained();
    let x = images(3, 9, 8, 2);
    let y = Array1::from(vec![0u32, 3, 1]);
    let before = state(&m);
    for e in [
        m.l(x.view(), y.view()).err(),
        m.compute_gradients(x.view(), y.view()).err(),
        m.train_step(x.view(), y.view()).err(),
    ] {
        assert!(matches!(e, Some(Error::Index { input: "y", index: 3, .. })), "{e:?}");
    }
    assert!(before == state(&m));
}

#[test]
fn a_batch_of_zero_gives_empty_outputs_or_an_empty_reduction_error() {
    let mut m = trained();
    let (x, y) = (Array4::<f32>::zeros((0, 9, 8, 2)), Array1::<u32>::zeros(0));
    let before = state(&m);
    assert_eq!(m.logits(x.view()).expect("an empty batch of logits").dim(), (0, 3));
    assert_eq!(m.pooled(x.view()).expect("an empty batch of pooled images").dim(), (0, 5, 4, 4));
    let empty = |e: &Error| matches!(e, Error::EmptyReduction { .. });
    for (call, e) in [
        ("l", m.l(x.view(), y.view()).err()),
        ("accuracy", m.accuracy(x.view(), y.view()).err()),
        ("compute_gradients", m.compute_gradients(x.view(), y.view()).err()),
        ("train_step", m.train_step(x.view(), y.view()).err()),
    ] {
        assert!(e.as_ref().is_some_and(empty), "{call}: {e:?}");
    }
    assert!(before == state(&m), "a batch of 0 changed the model");
    // A batch of 0 with a wrong image size is still a shape error.
    let bad = Array4::<f32>::zeros((0, 9, 8, 3));
    all_refused(&mut m, bad.view(), y.view(), "0x9x8x3", shape_error_on("x", vec![0, 9, 8, 3]));
}

/// A row-major copy of `v`'s values (`to_owned` would keep a view's memory order).
fn row_major<D: modelc::ndarray::Dimension>(v: modelc::ndarray::ArrayView<f32, D>) -> Array<f32, D> {
    Array::from_shape_vec(v.raw_dim(), v.iter().copied().collect()).expect("as many values as the shape holds")
}

/// Every call's answer on `x`, and the state after one step from `seed`'s model.
#[allow(clippy::type_complexity)]
fn answers(x: ArrayView4<f32>, y: ArrayView1<u32>) -> (Vec<u32>, Vec<u32>, u32, u32, u32, Vec<u32>, Vec<u8>) {
    let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut m = trained();
    let logits = m.logits(x).expect("logits");
    let pooled = m.pooled(x).expect("pooled");
    let l = m.l(x, y).expect("loss");
    let acc = m.accuracy(x, y).expect("accuracy");
    let (gl, g) = m.compute_gradients(x, y).expect("gradients");
    let grads: Vec<u32> = g.k1.iter().chain(&g.b1).chain(&g.k2).chain(&g.v).map(|v| v.to_bits()).collect();
    m.train_step(x, y).expect("a step");
    (
        bits(&logits.iter().copied().collect::<Vec<_>>()),
        bits(&pooled.iter().copied().collect::<Vec<_>>()),
        l.to_bits(),
        acc.to_bits(),
        gl.to_bits(),
        grads,
        state(&m),
    )
}

#[test]
fn reversed_strided_permuted_and_broadcast_views_give_the_contiguous_answers() {
    let x = images(3, 9, 8, 2);
    let y = labels(3);
    let want = answers(x.view(), y.view());

    // Each view below holds x's values in another memory layout (checked: none is
    // standard, or the case would test nothing).
    let check = |v: ArrayView4<f32>, y: ArrayView1<u32>, what: &str| {
        assert!(!v.is_standard_layout(), "{what}: the view is contiguous");
        assert!(answers(v, y) == want, "{what}: another answer than the contiguous copy's");
    };
    // Height and channels stored flipped, read back through negative strides.
    let flipped = row_major(x.slice(s![.., ..;-1, .., ..;-1]));
    check(flipped.slice(s![.., ..;-1, .., ..;-1]), y.view(), "reversed height and channels");
    // The whole batch stored flipped (labels too), read back through a negative stride.
    let back = row_major(x.slice(s![..;-1, .., .., ..]));
    let yback = Array1::from_iter(y.slice(s![..;-1]).iter().copied());
    check(back.slice(s![..;-1, .., .., ..]), yback.slice(s![..;-1]), "reversed batch");
    // Every other image and column of a larger array (NaN in the skipped cells).
    let mut big = Array4::<f32>::from_elem((6, 9, 16, 2), f32::NAN);
    big.slice_mut(s![..;2, .., ..;2, ..]).assign(&x);
    let ybig = Array1::from_shape_fn(6, |i| if i % 2 == 0 { y[i / 2] } else { 99 });
    check(big.slice(s![..;2, .., ..;2, ..]), ybig.slice(s![..;2]), "every other image and column");
    // Channels outermost in memory (NCHW), viewed as NHWC.
    let nchw = row_major(x.view().permuted_axes([0, 3, 1, 2]));
    check(nchw.view().permuted_axes([0, 2, 3, 1]), y.view(), "channels first");
    // Column-major.
    let fortran = row_major(x.t());
    check(fortran.t(), y.view(), "column-major");

    // One image broadcast over the batch (stride 0) against three copies of it.
    let one = images(1, 9, 8, 2);
    let copies = Array4::from_shape_fn((3, 9, 8, 2), |(_, i, j, k)| one[[0, i, j, k]]);
    let same = Array1::from_elem(3, 1u32);
    let broadcast = one.broadcast((3, 9, 8, 2)).expect("a batch of 1 broadcasts");
    assert!(answers(broadcast, same.view()) == answers(copies.view(), same.view()), "broadcast");
}

#[test]
fn a_nan_in_an_image_is_refused_and_changes_nothing() {
    let y = labels(2);
    for (b, i, j, c) in [(0, 0, 0, 0), (1, 8, 7, 1), (0, 4, 3, 1)] {
        let mut m = trained();
        let mut x = images(2, 9, 8, 2);
        x[[b, i, j, c]] = f32::NAN;
        let before = state(&m);
        let e = m.train_step(x.view(), y.view()).expect_err("a NaN image poisons the gradients");
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
        assert!(before == state(&m), "NaN at {:?}: a refused step changed the model", (b, i, j, c));
        // The fetches run (their values may hold NaN), without a panic.
        let _ = m.logits(x.view()).expect("a fetch does not check values");
        let _ = m.compute_gradients(x.view(), y.view()).expect("gradients of a NaN input are NaN, not an error");
    }
}

#[test]
fn a_batch_of_zero_with_a_summed_loss_is_a_loss_of_zero_and_zero_gradients() {
    let mut m = SumCnn::with_seed(2);
    let (x, c) = (Array4::<f32>::zeros((0, 9, 8, 2)), modelc::ndarray::Array2::<f32>::zeros((0, 3)));
    let params = (m.k1.clone(), m.b1.clone(), m.k2.clone(), m.v.clone());
    assert_eq!(m.l(x.view(), c.view()).expect("a sum over nothing"), 0.0);
    let (l, g) = m.compute_gradients(x.view(), c.view()).expect("gradients over nothing");
    assert_eq!(l, 0.0);
    assert_eq!((g.k1.dim(), g.b1.dim(), g.k2.dim(), g.v.dim()), ((3, 3, 2, 4), 4, (2, 2, 4, 3), (36, 3)));
    assert!(g.k1.iter().chain(&g.b1).chain(&g.k2).chain(&g.v).all(|&v| v == 0.0), "a gradient over no image is 0");
    assert_eq!(m.train_step(x.view(), c.view()).expect("a step over nothing"), 0.0);
    assert_eq!((m.k1.clone(), m.b1.clone(), m.k2.clone(), m.v.clone()), params, "a zero gradient moves nothing");
    assert_eq!(m.global_step(), 1);
    // And the next real step trains as usual.
    let (x, c) = (images(2, 9, 8, 2), modelc::ndarray::Array2::from_elem((2, 3), 1.0f32));
    assert!(m.train_step(x.view(), c.view()).expect("a real step").is_finite());
    assert_ne!(m.v, params.3);
}
