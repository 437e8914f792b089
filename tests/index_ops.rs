//! Index tensors end to end (issue 17, item 1): u32 inputs, `argmax` returning u32,
//! comparisons of indices, `one_hot`, `sparse_softmax_cross_entropy` and `gather`.
//!
//! Each index op is checked against a model that computes the same math without
//! indices (one-hot labels and `softmax_cross_entropy`, a one-hot matrix product for
//! `gather`), whose gradient rules tests/gradients.rs checks against f64 finite
//! differences: losses, gradients and trained params agree to f32 rounding. The
//! index models' own `check_gradients` (finite differences of the generated loss) and
//! an f64 reference of the sparse cross-entropy's gradient written here check them
//! directly too. Out-of-range ids are `Err(Error::Index)` with nothing changed.
//!
//! The shape ops on index tensors (`reshape`, `flatten`, `concat`, `slice`, `where`
//! between ids): their u32 values, a batch of 0, reversed views, the range check that
//! follows ids through them to the input (the whole input, or the window a slice
//! reads), and training through them against the same model fed the moved ids directly.

use modelc::model;
use modelc::ndarray::{s, Array1, Array2, ArrayView2};
use modelc::Error;

model! {
    /// Softmax regression on integer labels.
    pub struct Sparse {
        input x: [batch, 6];
        input y: [batch] as u32;
        param w: [6, 4] = glorot_uniform;
        param b: [4] = constant(0.1);
        let z = matmul(x, w) + b;
        output pred = argmax(z, axis = 1);
        output hot = one_hot(y, depth = 4);
        loss l = mean(sparse_softmax_cross_entropy(z, y));
        metric accuracy = mean(argmax(z, axis = 1) == y);
        optimizer sgd(learning_rate = 0.5);
    }
}

model! {
    /// The same model on one-hot labels (the reference).
    pub struct Dense {
        input x: [batch, 6];
        input y: [batch, 4];
        param w: [6, 4] = glorot_uniform;
        param b: [4] = constant(0.1);
        let z = matmul(x, w) + b;
        loss l = mean(softmax_cross_entropy(z, y));
        metric accuracy = mean(argmax(z, axis = 1) == argmax(y, axis = 1));
        optimizer sgd(learning_rate = 0.5);
    }
}

model! {
    /// Sparse labels with Adam (the materialized-gradient path) and a hidden layer.
    pub struct SparseAdam {
        input x: [batch, 6];
        input y: [batch] as u32;
        param w1: [6, 8] = glorot_uniform;
        param b1: [8] = zeros;
        param w2: [8, 4] = glorot_uniform;
        let z = matmul(tanh(matmul(x, w1) + b1), w2);
        loss l = mean(sparse_softmax_cross_entropy(z, y));
        optimizer adam(learning_rate = 0.01);
    }
}

model! {
    /// A bag-of-embeddings classifier: token ids, a table, the mean over tokens, dense.
    pub struct Bag {
        input ids: [batch, 5] as u32;
        input y: [batch] as u32;
        param emb: [7, 3] = normal(std = 0.5);
        param w: [3, 4] = glorot_uniform;
        let h = mean(gather(emb, ids), axis = 1);
        let z = matmul(h, w);
        output pred = argmax(z, axis = 1);
        output vectors = gather(emb, ids);
        loss l = mean(sparse_softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.3);
    }
}

model! {
    /// The same classifier with the lookup written as a one-hot product (the reference).
    pub struct BagDense {
        input hot: [batch, 5, 7];
        input y: [batch, 4];
        param emb: [7, 3] = normal(std = 0.5);
        param w: [3, 4] = glorot_uniform;
        let h = mean(hot, axis = 1);
        let z = matmul(matmul(h, emb), w);
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.3);
    }
}

model! {
    /// Comparisons between index tensors, and one_hot of an argmax.
    pub struct Compare {
        input a: [n] as u32;
        input b: [n] as u32;
        input z: [n, 3];
        output eq = a == b;
        output ne = a != b;
        output lt = a < b;
        output le = a <= b;
        output gt = a > b;
        output ge = a >= b;
        output top = one_hot(argmax(z, axis = 1), depth = 3);
        output ids = a;
    }
}

/// A small deterministic generator (the tests share no code with the runtime's RNG).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    fn below(&mut self, n: u32) -> u32 {
        (self.next() * n as f32) as u32 % n
    }
}

fn data(n: usize, seed: u64) -> (Array2<f32>, Array1<u32>, Array2<f32>) {
    let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let x = Array2::from_shape_fn((n, 6), |_| g.next() * 2.0 - 1.0);
    // The class of a row is its largest of four fixed linear scores: learnable.
    let score = |i: usize, c: usize| (0..6).map(|k| x[[i, k]] * (((k * 4 + c) * 7919 % 13) as f32 - 6.0)).sum::<f32>();
    let y = Array1::from_shape_fn(n, |i| (0..4).max_by(|&a, &b| score(i, a).total_cmp(&score(i, b))).unwrap() as u32);
    let hot = Array2::from_shape_fn((n, 4), |(i, c)| if y[i] as usize == c { 1.0 } else { 0.0 });
    (x, y, hot)
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn sparse_labels_train_like_one_hot_labels() {
    let (mut s, mut d) = (Sparse::with_seed(3), Dense::with_seed(3));
    assert_eq!(s.w, d.w);
    for step in 0..200 {
        let (x, y, hot) = data(32, step);
        let ls = s.train_step(x.view(), y.view()).unwrap();
        let ld = d.train_step(x.view(), hot.view()).unwrap();
        assert!((ls - ld).abs() <= 1e-5 * (1.0 + ld.abs()), "step {step}: {ls} vs {ld}");
    }
    assert!(close(s.w.as_slice().unwrap(), d.w.as_slice().unwrap(), 1e-4), "{}\n{}", s.w, d.w);
    assert!(close(s.b.as_slice().unwrap(), d.b.as_slice().unwrap(), 1e-4));
    let (x, y, hot) = data(500, 999);
    let (acc_s, acc_d) = (s.accuracy(x.view(), y.view()).unwrap(), d.accuracy(x.view(), hot.view()).unwrap());
    assert_eq!(acc_s, acc_d);
    assert!(acc_s > 0.8, "the labels are a linear function of x: {acc_s}");
}

#[test]
fn sparse_gradients_match_the_dense_model_and_an_f64_reference() {
    let (mut s, mut d) = (Sparse::with_seed(5), Dense::with_seed(5));
    let (x, y, hot) = data(9, 1);
    let (ls, gs) = s.compute_gradients(x.view(), y.view()).unwrap();
    let (ld, gd) = d.compute_gradients(x.view(), hot.view()).unwrap();
    assert!((ls - ld).abs() < 1e-6, "{ls} vs {ld}");
    assert!(close(gs.w.as_slice().unwrap(), gd.w.as_slice().unwrap(), 1e-5));
    assert!(close(gs.b.as_slice().unwrap(), gd.b.as_slice().unwrap(), 1e-5));

    // f64: dL/db_c = mean_i (softmax(z_i)_c - [y_i == c]).
    let mut db = [0f64; 4];
    for i in 0..9 {
        let z: Vec<f64> = (0..4)
            .map(|c| (0..6).map(|k| x[[i, k]] as f64 * s.w[[k, c]] as f64).sum::<f64>() + s.b[c] as f64)
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let t: f64 = e.iter().sum();
        for (c, (d, e)) in db.iter_mut().zip(&e).enumerate() {
            *d += (e / t - if y[i] as usize == c { 1.0 } else { 0.0 }) / 9.0;
        }
    }
    for (c, d) in db.iter().enumerate() {
        assert!((gs.b[c] as f64 - d).abs() < 1e-6, "b[{c}]: {} vs {d}", gs.b[c]);
    }
    let check = s.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
}

#[test]
fn sparse_labels_with_adam_and_a_hidden_layer_learn() {
    let mut m = SparseAdam::with_seed(1);
    let (x, y, _) = data(64, 4);
    let first = m.train_step(x.view(), y.view()).unwrap();
    let mut last = first;
    for _ in 0..300 {
        last = m.train_step(x.view(), y.view()).unwrap();
    }
    assert!(last < first * 0.7, "{first} -> {last}");
    let check = m.check_gradients(x.view(), y.view()).unwrap();
    assert!(check.passes(1e-2), "{check}");
}

fn token_data(n: usize, seed: u64) -> (Array2<u32>, Array1<u32>) {
    let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ids = Array2::from_shape_fn((n, 5), |_| g.below(7));
    // The class is a function of the tokens: the most frequent token's id mod 4.
    let y = Array1::from_shape_fn(n, |i| {
        let mut count = [0; 7];
        for t in ids.row(i) {
            count[*t as usize] += 1;
        }
        (0..7).max_by_key(|&t| (count[t], t)).unwrap() as u32 % 4
    });
    (ids, y)
}

fn one_hot3(ids: ArrayView2<u32>) -> modelc::ndarray::Array3<f32> {
    modelc::ndarray::Array3::from_shape_fn(
        (ids.nrows(), 5, 7),
        |(i, t, v)| if ids[[i, t]] as usize == v { 1.0 } else { 0.0 },
    )
}

#[test]
fn gather_trains_like_a_one_hot_product_and_its_gradient_is_a_scatter_add() {
    let (mut m, mut r) = (Bag::with_seed(2), BagDense::with_seed(2));
    assert_eq!(m.emb, r.emb);
    for step in 0..100 {
        let (ids, y) = token_data(16, step);
        let hot = one_hot3(ids.view());
        let yh = Array2::from_shape_fn((16, 4), |(i, c)| if y[i] as usize == c { 1.0 } else { 0.0 });
        if step == 0 {
            let (_, g) = m.compute_gradients(ids.view(), y.view()).unwrap();
            let (_, gr) = r.compute_gradients(hot.view(), yh.view()).unwrap();
            assert!(close(g.emb.as_slice().unwrap(), gr.emb.as_slice().unwrap(), 1e-5), "{}\n{}", g.emb, gr.emb);
            let check = m.check_gradients(ids.view(), y.view()).unwrap();
            assert!(check.passes(1e-2), "{check}");
        }
        let l = m.train_step(ids.view(), y.view()).unwrap();
        let lr = r.train_step(hot.view(), yh.view()).unwrap();
        assert!((l - lr).abs() <= 1e-5 * (1.0 + lr.abs()), "step {step}: {l} vs {lr}");
    }
    assert!(close(m.emb.as_slice().unwrap(), r.emb.as_slice().unwrap(), 1e-4));
    let (ids, _) = token_data(3, 77);
    let v = m.vectors(ids.view()).unwrap();
    assert_eq!(v.shape(), &[3, 5, 3]);
    for i in 0..3 {
        for t in 0..5 {
            assert_eq!(v.slice(s![i, t, ..]), m.emb.row(ids[[i, t]] as usize));
        }
    }
    let pred: Array1<u32> = m.pred(ids.view()).unwrap();
    assert!(pred.iter().all(|&p| p < 4));
}

#[test]
fn argmax_outputs_u32_and_indices_compare() {
    let m = Compare::new();
    let a = Array1::from(vec![0u32, 1, 2, 3]);
    let b = Array1::from(vec![0u32, 2, 1, 3]);
    let z =
        Array2::from_shape_vec((4, 3), vec![1.0, 0.0, 0.0, 0.0, 5.0, 1.0, -1.0, -2.0, -0.5, 2.0, 2.0, 1.0]).unwrap();
    assert_eq!(m.eq(a.view(), b.view()).unwrap().to_vec(), vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(m.ne(a.view(), b.view()).unwrap().to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    assert_eq!(m.lt(a.view(), b.view()).unwrap().to_vec(), vec![0.0, 1.0, 0.0, 0.0]);
    assert_eq!(m.le(a.view(), b.view()).unwrap().to_vec(), vec![1.0, 1.0, 0.0, 1.0]);
    assert_eq!(m.gt(a.view(), b.view()).unwrap().to_vec(), vec![0.0, 0.0, 1.0, 0.0]);
    assert_eq!(m.ge(a.view(), b.view()).unwrap().to_vec(), vec![1.0, 0.0, 1.0, 1.0]);
    // The first maximum wins (row 3 ties at 0 and 1).
    let top = m.top(z.view()).unwrap();
    assert_eq!(top, Array2::from_shape_vec((4, 3), vec![1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 0., 0.]).unwrap());
    let ids: Array1<u32> = m.ids(a.view()).unwrap();
    assert_eq!(ids, a);
    // A reversed view gives what a contiguous copy gives.
    let rev = a.slice(s![..;-1]);
    assert_eq!(m.eq(rev, b.view()).unwrap().to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    assert_eq!(m.ids(rev).unwrap().to_vec(), vec![3, 2, 1, 0]);
}

#[test]
fn one_hot_of_labels() {
    let m = Sparse::new();
    let y = Array1::from(vec![3u32, 0, 2]);
    let h = m.hot(y.view()).unwrap();
    assert_eq!(h, Array2::from_shape_vec((3, 4), vec![0., 0., 0., 1., 1., 0., 0., 0., 0., 0., 1., 0.]).unwrap());
    // Strided (every other label) and reversed label views.
    let y = Array1::from(vec![1u32, 9, 2, 9, 3]);
    let h = m.hot(y.slice(s![..;2])).unwrap();
    assert_eq!(
        h.rows().into_iter().map(|r| r.iter().position(|&v| v == 1.0).unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn out_of_range_ids_are_an_error_and_change_nothing() {
    let mut m = Sparse::with_seed(1);
    let (x, mut y, _) = data(6, 2);
    y[4] = 4;
    let before = (m.w.clone(), m.b.clone(), m.global_step());
    let err = m.train_step(x.view(), y.view()).unwrap_err();
    match &err {
        Error::Index { input, index, position, bound, .. } => {
            assert_eq!((*input, *index, position.as_slice(), *bound), ("y", 4, &[4usize][..], 4));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("input `y`: index 4 at position [4]") && text.contains("below 4"), "{text}");
    assert!(matches!(m.compute_gradients(x.view(), y.view()), Err(Error::Index { .. })));
    assert!(matches!(m.l(x.view(), y.view()), Err(Error::Index { .. })));
    assert!(matches!(m.hot(y.view()), Err(Error::Index { .. })));
    assert_eq!((m.w.clone(), m.b.clone(), m.global_step()), before);

    let mut e = Bag::new();
    let (mut ids, y) = token_data(4, 3);
    ids[[2, 3]] = 7;
    let before = e.emb.clone();
    match e.train_step(ids.view(), y.view()).unwrap_err() {
        Error::Index { input, index, position, bound, what } => {
            assert_eq!((input, index, position, bound), ("ids", 7, vec![2, 3], 7));
            assert!(what.contains("gather") && what.contains("emb"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(e.pred(ids.view()), Err(Error::Index { .. })));
    assert_eq!(e.emb, before);
    // A bad id in a reversed view is found at its logical position.
    let rev = ids.slice(s![..;-1, ..]);
    match e.vectors(rev).unwrap_err() {
        Error::Index { position, .. } => assert_eq!(position, vec![1, 3]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_batch_of_zero_is_empty_or_a_clear_error() {
    let mut m = Sparse::new();
    let (x, y) = (Array2::<f32>::zeros((0, 6)), Array1::<u32>::zeros(0));
    assert_eq!(m.pred(x.view()).unwrap().len(), 0);
    assert_eq!(m.hot(y.view()).unwrap().shape(), &[0, 4]);
    assert!(matches!(m.l(x.view(), y.view()), Err(Error::EmptyReduction { .. })));
    assert!(matches!(m.train_step(x.view(), y.view()), Err(Error::EmptyReduction { .. })));
    let e = Bag::new();
    assert_eq!(e.vectors(Array2::<u32>::zeros((0, 5)).view()).unwrap().shape(), &[0, 5, 3]);
}

#[test]
fn wrong_label_shapes_are_shape_errors() {
    let mut m = Sparse::new();
    let (x, y, _) = data(6, 2);
    let short = y.slice(s![..5]);
    assert!(matches!(m.train_step(x.view(), short), Err(Error::Shape { .. })));
}

model! {
    /// The shape ops on token ids: each output is u32; the loss gathers through them.
    pub struct IdShapes {
        input ids: [batch, 4] as u32;
        input alt: [batch, 4] as u32;
        input x: [batch, 4];
        param emb: [5, 2] = normal(std = 1.0);
        output grid = reshape(ids, [batch, 2, 2]);
        output flat = flatten(reshape(ids, [batch, 2, 2]));
        output joined = concat([ids, alt], axis = 1);
        output tail = slice(ids, axis = 1, start = 2);
        output picked = where(x > 0.0, ids, alt);
        output looked = gather(emb, reshape(ids, [batch, 2, 2]));
        // ids[:, 0..2] ++ alt[:, 2..4], then per element the one `x` picks: a [batch, 4]
        // of ids, gathered, against a target.
        let moved = where(x > 0.0, concat([slice(ids, axis = 1, end = 2), slice(alt, axis = 1, start = 2)], axis = 1), alt);
        loss l = mean(square(gather(emb, reshape(moved, [batch, 2, 2])) - 0.5));
        optimizer sgd(learning_rate = 0.2);
    }
}

model! {
    /// [`IdShapes`]' loss fed the moved ids directly (the reference).
    pub struct IdDirect {
        input moved: [batch, 4] as u32;
        param emb: [5, 2] = normal(std = 1.0);
        loss l = mean(square(gather(emb, reshape(moved, [batch, 2, 2])) - 0.5));
        optimizer sgd(learning_rate = 0.2);
    }
}

model! {
    /// A gather of a window of the ids (a slice of a slice): only columns 1 and 2 must be
    /// below the table's rows.
    pub struct IdWindow {
        input ids: [batch, 4] as u32;
        param emb: [5, 2] = normal(std = 1.0);
        output head = gather(emb, slice(slice(ids, axis = 1, start = 1), axis = 1, end = 2));
    }
}

fn id_data(n: usize, seed: u64) -> (Array2<u32>, Array2<u32>, Array2<f32>) {
    let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ids = Array2::from_shape_fn((n, 4), |_| g.below(5));
    let alt = Array2::from_shape_fn((n, 4), |_| g.below(5));
    let x = Array2::from_shape_fn((n, 4), |_| g.next() - 0.5);
    (ids, alt, x)
}

/// `where(x > 0, concat([ids[:, ..2], alt[:, 2..]]), alt)` on the host.
fn moved(ids: ArrayView2<u32>, alt: ArrayView2<u32>, x: ArrayView2<f32>) -> Array2<u32> {
    Array2::from_shape_fn(ids.dim(), |(i, j)| {
        let joined = if j < 2 { ids[[i, j]] } else { alt[[i, j]] };
        if x[[i, j]] > 0.0 {
            joined
        } else {
            alt[[i, j]]
        }
    })
}

#[test]
fn shape_ops_move_ids_and_keep_them_u32() {
    let m = IdShapes::with_seed(4);
    let (ids, alt, x) = id_data(3, 1);
    let grid: modelc::ndarray::Array3<u32> = m.grid(ids.view()).unwrap();
    assert_eq!(grid.shape(), &[3, 2, 2]);
    assert_eq!(grid.iter().copied().collect::<Vec<_>>(), ids.iter().copied().collect::<Vec<_>>());
    let flat: Array2<u32> = m.flat(ids.view()).unwrap();
    assert_eq!(flat, ids);
    let joined = m.joined(ids.view(), alt.view()).unwrap();
    assert_eq!(joined.slice(s![.., ..4]), ids);
    assert_eq!(joined.slice(s![.., 4..]), alt);
    assert_eq!(m.tail(ids.view()).unwrap(), ids.slice(s![.., 2..]));
    let picked = m.picked(ids.view(), alt.view(), x.view()).unwrap();
    let want = Array2::from_shape_fn((3, 4), |(i, j)| if x[[i, j]] > 0.0 { ids[[i, j]] } else { alt[[i, j]] });
    assert_eq!(picked, want);
    let looked = m.looked(ids.view()).unwrap();
    for ((i, a, b, k), &v) in looked.indexed_iter() {
        assert_eq!(v, m.emb[[ids[[i, a * 2 + b]] as usize, k]]);
    }
    // Reversed views give what contiguous copies give.
    let (ri, ra, rx) = (ids.slice(s![..;-1, ..;-1]), alt.slice(s![..;-1, ..]), x.slice(s![..;-1, ..]));
    let (ci, ca, cx) = (ri.to_owned(), ra.to_owned(), rx.to_owned());
    assert_eq!(m.grid(ri).unwrap(), m.grid(ci.view()).unwrap());
    assert_eq!(m.joined(ri, ra).unwrap(), m.joined(ci.view(), ca.view()).unwrap());
    assert_eq!(m.tail(ri).unwrap(), m.tail(ci.view()).unwrap());
    assert_eq!(m.picked(ri, ra, rx).unwrap(), m.picked(ci.view(), ca.view(), cx.view()).unwrap());
    assert_eq!(m.l(ri, ra, rx).unwrap(), m.l(ci.view(), ca.view(), cx.view()).unwrap());
    // A batch of 0: empty outputs of the right shapes.
    let (e, f) = (Array2::<u32>::zeros((0, 4)), Array2::<f32>::zeros((0, 4)));
    assert_eq!(m.grid(e.view()).unwrap().shape(), &[0, 2, 2]);
    assert_eq!(m.joined(e.view(), e.view()).unwrap().shape(), &[0, 8]);
    assert_eq!(m.tail(e.view()).unwrap().shape(), &[0, 2]);
    assert_eq!(m.picked(e.view(), e.view(), f.view()).unwrap().shape(), &[0, 4]);
    assert_eq!(m.looked(e.view()).unwrap().shape(), &[0, 2, 2, 2]);
}

#[test]
fn training_through_moved_ids_matches_feeding_them_directly() {
    let (mut m, mut r) = (IdShapes::with_seed(6), IdDirect::with_seed(6));
    assert_eq!(m.emb, r.emb);
    for step in 0..20 {
        let (ids, alt, x) = id_data(8, 10 + step);
        let direct = moved(ids.view(), alt.view(), x.view());
        if step == 0 {
            let (_, g) = m.compute_gradients(ids.view(), alt.view(), x.view()).unwrap();
            let (_, gr) = r.compute_gradients(direct.view()).unwrap();
            assert_eq!(g.emb, gr.emb);
            let check = m.check_gradients(ids.view(), alt.view(), x.view()).unwrap();
            assert!(check.passes(1e-2), "{check}");
        }
        let l = m.train_step(ids.view(), alt.view(), x.view()).unwrap();
        let lr = r.train_step(direct.view()).unwrap();
        assert_eq!(l, lr, "step {step}");
    }
    assert_eq!(m.emb, r.emb);
}

#[test]
fn an_out_of_range_id_is_found_through_shape_ops_before_anything_changes() {
    let mut m = IdShapes::with_seed(3);
    let (ids, mut alt, x) = id_data(4, 2);
    // Through reshape(where(.., concat(.., slice(alt)), alt)): alt is read whole (its
    // own branch), so its bound covers every element.
    alt[[1, 0]] = 5;
    let before = (m.emb.clone(), m.global_step());
    match m.train_step(ids.view(), alt.view(), x.view()).unwrap_err() {
        Error::Index { input, index, position, bound, what } => {
            assert_eq!((input, index, position, bound), ("alt", 5, vec![1, 0], 5));
            assert!(what.contains("gather") && what.contains("emb"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(m.compute_gradients(ids.view(), alt.view(), x.view()), Err(Error::Index { .. })));
    assert!(matches!(m.l(ids.view(), alt.view(), x.view()), Err(Error::Index { .. })));
    assert_eq!((m.emb.clone(), m.global_step()), before);
    // Through a reshape of an input: found at its position in the input.
    let mut bad = ids.clone();
    bad[[3, 2]] = 9;
    match m.looked(bad.view()).unwrap_err() {
        Error::Index { input, index, position, .. } => assert_eq!((input, index, position), ("ids", 9, vec![3, 2])),
        other => panic!("{other:?}"),
    }
    // ...also in a reversed view (row 3 is logical row 0 there).
    match m.looked(bad.slice(s![..;-1, ..])).unwrap_err() {
        Error::Index { position, .. } => assert_eq!(position, vec![0, 2]),
        other => panic!("{other:?}"),
    }
    // Outputs that read no index op need no bound: `grid` moves the bad id as it is.
    assert_eq!(m.grid(bad.view()).unwrap()[[3, 1, 0]], 9);
}

#[test]
fn a_slice_of_ids_puts_the_bound_on_the_window_it_reads() {
    let m = IdWindow::with_seed(1);
    let (mut ids, _, _) = id_data(3, 5);
    // Columns 0 and 3 are never read: out of range there is fine.
    ids[[0, 0]] = 50;
    ids[[2, 3]] = 60;
    let head = m.head(ids.view()).unwrap();
    assert_eq!(head.shape(), &[3, 2, 2]);
    for i in 0..3 {
        for t in 0..2 {
            assert_eq!(head.slice(s![i, t, ..]), m.emb.row(ids[[i, t + 1]] as usize));
        }
    }
    // Column 2 is: the error names its position in the input, not in the window.
    ids[[2, 2]] = 7;
    match m.head(ids.view()).unwrap_err() {
        Error::Index { input, index, position, bound, .. } => {
            assert_eq!((input, index, position, bound), ("ids", 7, vec![2, 2], 5));
        }
        other => panic!("{other:?}"),
    }
    match m.head(ids.slice(s![..;-1, ..])).unwrap_err() {
        Error::Index { position, .. } => assert_eq!(position, vec![0, 2]),
        other => panic!("{other:?}"),
    }
}
