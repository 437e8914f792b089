//! The shape ops of issue 17 (item 2) against hand-computed values: `reshape` (literal,
//! symbolic, inferred `-1`; row-major like NumPy), `flatten`, reductions over several
//! axes, `concat`, `slice`, `where`/`select` and the comparisons `!= < <= > >=`; a batch
//! of 0; a reshape whose element count only the call can check (`Err(Shape)` before
//! anything runs); reversed input views; and no allocation per step for a model that
//! uses them all. Gradients are in `tests/gradients.rs` ("shape ops").
//!
//! Every case is a fixed example: the whole file runs in well under a second.

use modelc::model;
use modelc::ndarray::{arr1, arr2, s, Array2, Array3};

mod common;
use common::count;

model! {
    struct Reshapes {
        input x: [batch, 6];
        input z: [n, 4];
        input q: [2, 6];
        output lit = reshape(x * 1.0, [batch, 2, 3]);
        output inferred = reshape(x * 1.0, [-1, 3, 2]);
        output all = reshape(q, [-1]);
        output flat = flatten(reshape(x * 2.0, [batch, 3, 2]));
        // [batch, 6] -> [n, 4]: holds only when 6 batch == 4 n, checked per call.
        output cross = reshape(x + 0.0, [n, 4]) + z;
    }
}

#[test]
fn reshape_is_row_major_with_literal_symbolic_and_inferred_dimensions() {
    let x = Array2::from_shape_fn((2, 6), |(i, j)| (i * 6 + j) as f32);
    let m = Reshapes::new();
    let lit = m.lit(x.view()).unwrap();
    assert_eq!(lit.shape(), [2, 2, 3]);
    assert_eq!(lit[[1, 0, 2]], 8.0);
    assert_eq!(lit[[0, 1, 0]], 3.0);
    let inf = m.inferred(x.view()).unwrap();
    assert_eq!(inf.shape(), [2, 3, 2]);
    assert_eq!(inf[[1, 2, 1]], 11.0);
    let all = m.all(x.view()).unwrap();
    assert_eq!(all.iter().copied().collect::<Vec<_>>(), (0..12).map(|v| v as f32).collect::<Vec<_>>());
    let flat = m.flat(x.view()).unwrap();
    assert_eq!(flat, x.mapv(|v| v * 2.0));
    // A reversed (negative-stride) view reshapes its logical order, as NumPy does.
    let rev = x.slice(s![..;-1, ..]);
    assert_eq!(
        m.all(rev).unwrap().iter().copied().collect::<Vec<_>>(),
        [6., 7., 8., 9., 10., 11., 0., 1., 2., 3., 4., 5.]
    );
    assert_eq!(m.lit(rev).unwrap()[[0, 0, 0]], 6.0);
}

#[test]
fn a_reshape_whose_count_differs_at_call_time_is_a_shape_error() {
    let m = Reshapes::new();
    let x = Array2::from_shape_fn((2, 6), |(i, j)| (i * 6 + j) as f32);
    let z = Array2::<f32>::ones((3, 4));
    let ok = m.cross(x.view(), z.view()).unwrap();
    assert_eq!(ok[[2, 3]], 12.0);
    let z = Array2::<f32>::ones((2, 4));
    let err = m.cross(x.view(), z.view()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, modelc::Error::Shape { .. }), "{err:?}");
    assert!(text.contains("reshape") && text.contains("12 elements") && text.contains("has 8"), "{text}");
}

#[test]
fn a_batch_of_zero_reshapes_to_empty_arrays() {
    let m = Reshapes::new();
    let x = Array2::<f32>::zeros((0, 6));
    assert_eq!(m.lit(x.view()).unwrap().shape(), [0, 2, 3]);
    assert_eq!(m.inferred(x.view()).unwrap().shape(), [0, 3, 2]);
    assert_eq!(m.flat(x.view()).unwrap().shape(), [0, 6]);
    let z = Array2::<f32>::zeros((0, 4));
    assert_eq!(m.cross(x.view(), z.view()).unwrap().shape(), [0, 4]);
}

model! {
    struct Reductions {
        input x: [batch, 2, 3];
        output s = sum(x, axis = [1, 2]);
        output m = mean(x, axis = [0, 2], keepdims = true);
        output mx = max(x, axis = [-1, 1]);
        output mx1 = max(x, axis = [2]);
        metric top = mean(max(x, axis = [1, 2]));
    }
}

#[test]
fn reductions_over_several_axes() {
    let x = Array3::from_shape_fn((2, 2, 3), |(i, j, k)| (i * 6 + j * 3 + k) as f32);
    let m = Reductions::new();
    assert_eq!(m.s(x.view()).unwrap(), arr1(&[15.0, 51.0]));
    let mean = m.m(x.view()).unwrap();
    assert_eq!(mean.shape(), [1, 2, 1]);
    // Row j of every sample: (0+1+2 + 6+7+8) / 6 = 4, (3+4+5 + 9+10+11) / 6 = 7.
    assert_eq!(mean.iter().copied().collect::<Vec<_>>(), [4.0, 7.0]);
    assert_eq!(m.mx(x.view()).unwrap(), arr1(&[5.0, 11.0]));
    assert_eq!(m.mx1(x.view()).unwrap(), arr2(&[[2.0, 5.0], [8.0, 11.0]]));
    assert_eq!(m.top(x.view()).unwrap(), 8.0);
    // Reversed strides: the same answer.
    let rev = x.slice(s![.., ..;-1, ..;-1]);
    assert_eq!(m.s(rev).unwrap(), arr1(&[15.0, 51.0]));
    assert_eq!(m.mx(rev).unwrap(), arr1(&[5.0, 11.0]));
    // A batch of 0: empty sums; a mean or max over the empty batch axis is an error.
    let empty = Array3::<f32>::zeros((0, 2, 3));
    assert_eq!(m.s(empty.view()).unwrap().len(), 0);
    assert!(matches!(m.m(empty.view()), Err(modelc::Error::EmptyReduction { .. })));
    assert!(matches!(m.top(empty.view()), Err(modelc::Error::EmptyReduction { .. })));
}

model! {
    struct Joins {
        input a: [batch, 2];
        input b: [batch, 3];
        output c = concat([a, b, a * 10.0], axis = 1);
        output first = slice(b, axis = 1, start = 1);
        output last = slice(b, axis = -1, start = -2, end = -1);
        output mid = slice(concat([a, b], axis = -1), axis = 1, start = 1, end = 4);
    }
}

#[test]
fn concat_and_slice() {
    let a = arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
    let b = arr2(&[[5.0f32, 6.0, 7.0], [8.0, 9.0, 10.0]]);
    let m = Joins::new();
    assert_eq!(
        m.c(a.view(), b.view()).unwrap(),
        arr2(&[[1.0, 2.0, 5.0, 6.0, 7.0, 10.0, 20.0], [3.0, 4.0, 8.0, 9.0, 10.0, 30.0, 40.0]])
    );
    assert_eq!(m.first(b.view()).unwrap(), arr2(&[[6.0, 7.0], [9.0, 10.0]]));
    assert_eq!(m.last(b.view()).unwrap(), arr2(&[[6.0], [9.0]]));
    assert_eq!(m.mid(a.view(), b.view()).unwrap(), arr2(&[[2.0, 5.0, 6.0], [4.0, 8.0, 9.0]]));
    let rev = b.slice(s![..;-1, ..;-1]);
    assert_eq!(m.first(rev).unwrap(), arr2(&[[9.0, 8.0], [6.0, 5.0]]));
    let (a0, b0) = (Array2::<f32>::zeros((0, 2)), Array2::<f32>::zeros((0, 3)));
    assert_eq!(m.c(a0.view(), b0.view()).unwrap().shape(), [0, 7]);
    assert_eq!(m.mid(a0.view(), b0.view()).unwrap().shape(), [0, 3]);
}

model! {
    struct Picks {
        input x: [batch, 3];
        input t: [3];
        output w = where(x > 0.0, x, 0.0);
        output sel = select(x, t, -1.0);
        output nested = where(x >= 1.0, where(x != 2.0, 10.0, 20.0), x < 0.0);
        output cmp = (x <= t) + (x == t) * 2.0;
    }
}

#[test]
fn where_select_and_comparisons() {
    let x = arr2(&[[-1.0f32, 0.0, 2.0], [1.0, 3.0, -0.5]]);
    let t = arr1(&[1.0f32, 0.0, 2.0]);
    let m = Picks::new();
    assert_eq!(m.w(x.view()).unwrap(), arr2(&[[0.0, 0.0, 2.0], [1.0, 3.0, 0.0]]));
    // `cond != 0` picks `a`: only the zero picks the literal.
    assert_eq!(m.sel(x.view(), t.view()).unwrap(), arr2(&[[1.0, -1.0, 2.0], [1.0, 0.0, 2.0]]));
    assert_eq!(m.nested(x.view()).unwrap(), arr2(&[[1.0, 0.0, 20.0], [10.0, 10.0, 1.0]]));
    // x <= t: [1, 1, 1], [1, 0, 1]; x == t: [0, 1, 1], [1, 0, 0].
    assert_eq!(m.cmp(x.view(), t.view()).unwrap(), arr2(&[[1.0, 3.0, 3.0], [3.0, 0.0, 1.0]]));
    let empty = Array2::<f32>::zeros((0, 3));
    assert_eq!(m.w(empty.view()).unwrap().shape(), [0, 3]);
}

model! {
    /// Every shape op in one trained model (a reshape of a computed node is a view).
    struct Everything {
        input x: [batch, 2, 3];
        input y: [batch, 2];
        param w: [6, 4] = glorot_uniform;
        param v: [5, 2] = glorot_uniform;
        let h = relu(matmul(flatten(x), w));
        let hr = reshape(h, [batch, 2, 2]);
        let both = concat([h, slice(h, axis = 1, start = 3)], axis = 1);
        let z = matmul(where(both > 0.5, both, both * 0.1), v) + sum(hr, axis = [2]) + max(hr, axis = [1, 2], keepdims = true);
        loss l = mean(square(z - y));
        optimizer adam(learning_rate = 0.01);
    }
}

#[test]
fn a_model_using_every_shape_op_trains_and_allocates_nothing_per_step() {
    let x = Array3::from_shape_fn((8, 2, 3), |(i, j, k)| ((i * 5 + j * 3 + k) % 7) as f32 / 7.0);
    let y = Array2::from_shape_fn((8, 2), |(i, j)| ((i + j) % 3) as f32 / 3.0);
    let mut m = Everything::with_seed(3);
    let first = m.train_step(x.view(), y.view()).unwrap();
    let mut last = first;
    let n = count(|| {
        for _ in 0..50 {
            last = m.train_step(x.view(), y.view()).unwrap();
        }
    });
    assert_eq!(n, 0, "train_step allocated {n} times in 50 steps");
    assert!(last < first, "the loss went from {first} to {last}");
    let check = m.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(2e-2), "{check}");
}

model! {
    /// v1 bug found here: the simplifier broadcast the adjoint [3] of `sum(w, axis = 1)`
    /// straight to [3, 3] (along the rows) instead of through [3, 1] (the columns), so a
    /// square static param got d l / d w[i, j] = c[j] instead of c[i].
    struct SquareRowSum {
        input c: [3];
        param w: [3, 3] = zeros;
        loss l = sum(sum(w, axis = 1) * c) + sum(max(w * 1.0, axis = 0) * c);
        optimizer sgd(learning_rate = 0.1);
    }
}

#[test]
fn the_gradient_of_a_row_sum_of_a_square_param_runs_along_the_columns() {
    let mut m = SquareRowSum::new();
    m.w = arr2(&[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [8.0, 7.0, 6.0]]);
    let c = arr1(&[1.0f32, 10.0, 100.0]);
    let (_, g) = m.compute_gradients(c.view()).unwrap();
    // sum part: c[i]; max part: c[j] at each column's maximum (row 2).
    assert_eq!(g.w, arr2(&[[1.0, 1.0, 1.0], [10.0, 10.0, 10.0], [101.0, 110.0, 200.0]]));
}
