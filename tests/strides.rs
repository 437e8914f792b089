//! Generated models given input views of every layout a user can build: reversed rows
//! or columns (negative strides), a broadcast row (zero stride), a stepped view, a
//! transpose (`.t()` of an array built transposed), a window of a bigger array (a
//! non-contiguous slice). Every fetch, `compute_gradients` and `train_step` must give
//! the numbers a contiguous copy of the same values gives.
//!
//! Bit-identical where the same kernel runs the same loop: views whose rows have a unit
//! column stride (a window, stepped rows, reversed rows) take the very paths of the
//! contiguous copy (`sgemm`'s kernels read any row stride, `kernels::map` copies any
//! block it cannot read in place), so the results are the same bits. With `blas` the
//! non-thin products of a contiguous or windowed `x` go to OpenBLAS while a reversed or
//! stepped one goes to `sgemm` (BLAS cannot read it), so only the window is required to
//! be the same bits there. The other layouts (reversed or stepped columns, a transpose, a
//! broadcast) may take another path of `sgemm` (a different summation order): within
//! 1e-5 of the copy, and so do all layouts of the labels `y`: the fused loss kernel's
//! fast path takes contiguous rows only, and its fallback sums in another order. Run
//! with default features, `--features blas` and `--features
//! parallel` (see `.ci/run`).

use modelc::model;
use modelc::ndarray::{s, Array2, ArrayView2};

model! {
    /// The README's tutorial model.
    pub struct SoftmaxRegression {
        input x: [batch, 784];
        input y: [batch, 10];

        param w: [784, 10] = glorot_uniform;
        param b: [10] = zeros;

        let a = softmax(matmul(x, w) + b);

        output probs = a;
        loss cross_entropy = mean(-sum(y * ln(a), axis = 1));
        metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));

        optimizer sgd(learning_rate = 0.5);
    }
}

model! {
    /// Two relu layers and a softmax output layer.
    pub struct Mlp {
        input x: [batch, 40];
        input y: [batch, 5];

        param w1: [40, 48] = glorot_uniform;
        param b1: [48] = constant(0.05);
        param w2: [48, 24] = glorot_uniform;
        param b2: [24] = constant(0.05);
        param w3: [24, 5] = glorot_uniform;
        param b3: [5] = zeros;

        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        let z = matmul(h2, w3) + b3;

        output logits = z;
        loss xent = mean(softmax_cross_entropy(z, y));
        metric accuracy = mean(argmax(z, axis = 1) == argmax(y, axis = 1));

        optimizer sgd(learning_rate = 0.1);
    }
}

/// Deterministic values in [-1, 1).
fn filled(r: usize, c: usize, seed: u64) -> Array2<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array2::from_shape_fn((r, c), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// One-hot labels.
fn labels(r: usize, c: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((r, c), |(i, j)| f32::from(u8::from((i * 7 + seed) % c == j)))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Lay {
    RevRows,
    RevCols,
    Stepped,
    SteppedRows,
    Window,
    Transposed,
    Broadcast,
}

const LAYS: [Lay; 7] =
    [Lay::RevRows, Lay::RevCols, Lay::Stepped, Lay::SteppedRows, Lay::Window, Lay::Transposed, Lay::Broadcast];

/// Whether `lay` must give the contiguous copy's bits (see the header).
fn bitwise(lay: Lay) -> bool {
    if cfg!(feature = "blas") {
        lay == Lay::Window
    } else {
        matches!(lay, Lay::Window | Lay::RevRows | Lay::SteppedRows)
    }
}

/// The storage of a view of `x` (for `Broadcast`, of its first row) in `lay`, and a
/// function that makes the view from it.
struct Stored {
    buf: Array2<f32>,
    lay: Lay,
    dim: (usize, usize),
}

impl Stored {
    fn new(x: &Array2<f32>, lay: Lay) -> Self {
        let (r, c) = x.dim();
        let buf = match lay {
            Lay::RevRows => x.slice(s![..;-1, ..]).to_owned(),
            Lay::RevCols => x.slice(s![.., ..;-1]).to_owned(),
            Lay::Stepped => {
                let mut b = Array2::from_elem((2 * r, 3 * c), f32::NAN);
                b.slice_mut(s![..;2, ..;3]).assign(x);
                b
            }
            Lay::SteppedRows => {
                let mut b = Array2::from_elem((3 * r, c), f32::NAN);
                b.slice_mut(s![..;3, ..]).assign(x);
                b
            }
            Lay::Window => {
                let mut b = Array2::from_elem((r + 2, c + 7), f32::NAN);
                b.slice_mut(s![1..r + 1, 3..c + 3]).assign(x);
                b
            }
            Lay::Transposed => x.t().as_standard_layout().to_owned(),
            Lay::Broadcast => x.slice(s![..1, ..]).to_owned(),
        };
        Stored { buf, lay, dim: (r, c) }
    }

    fn view(&self) -> ArrayView2<'_, f32> {
        let (r, c) = self.dim;
        let b = &self.buf;
        match self.lay {
            Lay::RevRows => b.slice(s![..;-1, ..]),
            Lay::RevCols => b.slice(s![.., ..;-1]),
            Lay::Stepped => b.slice(s![..;2, ..;3]),
            Lay::SteppedRows => b.slice(s![..;3, ..]),
            Lay::Window => b.slice(s![1..r + 1, 3..c + 3]),
            Lay::Transposed => b.t(),
            Lay::Broadcast => b.broadcast((r, c)).expect("a row broadcasts"),
        }
    }
}

/// `got` equals `want` to the bit, or within 1e-5 (relative to 1 + |want|).
fn same(what: &str, bits: bool, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if bits {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: {g} vs {w} (must be the same bits)");
        } else {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }
}

fn flat<D: modelc::ndarray::Dimension>(a: &modelc::ndarray::Array<f32, D>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// A comparison: `(what, x view, y view, x copy, y copy, same bits?)`.
type Check<'c> = dyn FnMut(&str, ArrayView2<'_, f32>, ArrayView2<'_, f32>, &Array2<f32>, &Array2<f32>, bool) + 'c;

/// Runs `check` for every layout of `x` (with `y` contiguous) and of `y` (with `x`
/// contiguous), against the contiguous copies.
fn each_layout(x: &Array2<f32>, y: &Array2<f32>, check: &mut Check<'_>) {
    for lay in LAYS {
        // x in `lay` (a broadcast x: every row the first), y contiguous.
        let xl = if lay == Lay::Broadcast {
            x.slice(s![..1, ..]).broadcast(x.dim()).expect("broadcasts").to_owned()
        } else {
            x.clone()
        };
        let sx = Stored::new(&xl, lay);
        check(&format!("x {lay:?}"), sx.view(), y.view(), &xl, y, bitwise(lay));
        // y in `lay`, x contiguous: y meets the row-wise loss kernels, whose fast path
        // takes contiguous rows only (`kernels::softmax_xent_with_grad`; other layouts
        // go through its two-pass fallback, which sums in another order): within 1e-5.
        let yl = if lay == Lay::Broadcast {
            y.slice(s![..1, ..]).broadcast(y.dim()).expect("broadcasts").to_owned()
        } else {
            y.clone()
        };
        let sy = Stored::new(&yl, lay);
        check(&format!("y {lay:?}"), x.view(), sy.view(), x, &yl, false);
    }
}

#[test]
fn softmax_regression_fetches_gradients_and_steps_on_every_layout() {
    let (x, y) = (filled(37, 784, 1).mapv(|v| v.abs()), labels(37, 10, 2));
    each_layout(&x, &y, &mut |what, xv, yv, xc, yc, bits| {
        let mut m = SoftmaxRegression::with_seed(5);
        let mut r = SoftmaxRegression::with_seed(5);
        // A step first, so that w and b are not all zero-like in the comparisons.
        m.train_step(xc.view(), yc.view()).expect("a step");
        r.train_step(xc.view(), yc.view()).expect("a step");
        same(
            &format!("{what} probs"),
            bits,
            &flat(&m.probs(xv).expect("probs")),
            &flat(&r.probs(xc.view()).expect("probs")),
        );
        let (lm, lr) = (m.cross_entropy(xv, yv).expect("loss"), r.cross_entropy(xc.view(), yc.view()).expect("loss"));
        same(&format!("{what} loss"), bits, &[lm], &[lr]);
        let (am, ar) = (m.accuracy(xv, yv).expect("accuracy"), r.accuracy(xc.view(), yc.view()).expect("accuracy"));
        assert_eq!(am, ar, "{what} accuracy");
        let (gm_loss, gm) = m.compute_gradients(xv, yv).expect("gradients");
        let (gr_loss, gr) = r.compute_gradients(xc.view(), yc.view()).expect("gradients");
        same(&format!("{what} gradient loss"), bits, &[gm_loss], &[gr_loss]);
        same(&format!("{what} d w"), bits, &flat(&gm.w), &flat(&gr.w));
        same(&format!("{what} d b"), bits, &flat(&gm.b), &flat(&gr.b));
        for step in 0..3 {
            let (sm, sr) = (m.train_step(xv, yv).expect("step"), r.train_step(xc.view(), yc.view()).expect("step"));
            same(&format!("{what} step {step} loss"), bits, &[sm], &[sr]);
            same(&format!("{what} step {step} w"), bits, &flat(&m.w), &flat(&r.w));
            same(&format!("{what} step {step} b"), bits, &flat(&m.b), &flat(&r.b));
        }
    });
}

#[test]
fn mlp_fetches_gradients_and_steps_on_every_layout() {
    // A batch of 70: products past the thin kernels' 16 rows, with bottom edges.
    let (x, y) = (filled(70, 40, 3), labels(70, 5, 4));
    each_layout(&x, &y, &mut |what, xv, yv, xc, yc, bits| {
        let mut m = Mlp::with_seed(9);
        let mut r = Mlp::with_seed(9);
        same(
            &format!("{what} logits"),
            bits,
            &flat(&m.logits(xv).expect("logits")),
            &flat(&r.logits(xc.view()).expect("logits")),
        );
        let (lm, lr) = (m.xent(xv, yv).expect("loss"), r.xent(xc.view(), yc.view()).expect("loss"));
        same(&format!("{what} loss"), bits, &[lm], &[lr]);
        assert_eq!(
            m.accuracy(xv, yv).expect("accuracy"),
            r.accuracy(xc.view(), yc.view()).expect("accuracy"),
            "{what}"
        );
        let (gm_loss, gm) = m.compute_gradients(xv, yv).expect("gradients");
        let (gr_loss, gr) = r.compute_gradients(xc.view(), yc.view()).expect("gradients");
        same(&format!("{what} gradient loss"), bits, &[gm_loss], &[gr_loss]);
        for (name, a, b) in [
            ("w1", flat(&gm.w1), flat(&gr.w1)),
            ("b1", flat(&gm.b1), flat(&gr.b1)),
            ("w2", flat(&gm.w2), flat(&gr.w2)),
            ("b2", flat(&gm.b2), flat(&gr.b2)),
            ("w3", flat(&gm.w3), flat(&gr.w3)),
            ("b3", flat(&gm.b3), flat(&gr.b3)),
        ] {
            same(&format!("{what} d {name}"), bits, &a, &b);
        }
        for step in 0..3 {
            let (sm, sr) = (m.train_step(xv, yv).expect("step"), r.train_step(xc.view(), yc.view()).expect("step"));
            same(&format!("{what} step {step} loss"), bits, &[sm], &[sr]);
            for (name, a, b) in [
                ("w1", flat(&m.w1), flat(&r.w1)),
                ("b1", flat(&m.b1), flat(&r.b1)),
                ("w2", flat(&m.w2), flat(&r.w2)),
                ("w3", flat(&m.w3), flat(&r.w3)),
                ("b3", flat(&m.b3), flat(&r.b3)),
            ] {
                same(&format!("{what} step {step} {name}"), bits, &a, &b);
            }
        }
    });
}
