//! Nothing is lost (issue 15): a batch of 0, NaN and infinity in inputs and gradients,
//! huge finite values and gradients of the wrong shape. Every failing call is an `Err`
//! that changes nothing (params, optimizer slots, global step), and the next good step
//! is bit for bit the step a model that never saw the bad call takes.

use modelc::model;
use modelc::ndarray::{s, Array1, Array2, ArrayView2};
use modelc::Error;

model! {
    /// The tutorial model (plain SGD: the updates are fused into the gradient products).
    pub struct Tutorial {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        param b: [10] = zeros;
        let a = softmax(matmul(x, w) + b);
        output probs = a;
        loss cross_entropy = mean(-sum(y * ln(a), axis = 1));
        metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));
        optimizer sgd(learning_rate = 0.5);
    }
}

model! {
    /// An MLP with Adam, clipping and weight decay (the materialized-gradient path).
    pub struct AdamMlp {
        input x: [batch, 6];
        input y: [batch, 3];
        param w1: [6, 8] = glorot_uniform;
        param b1: [8] = zeros;
        param w2: [8, 3] = glorot_uniform;
        param b2: [3] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.01, clip_norm = 5.0, weight_decay = 1e-4);
    }
}

model! {
    /// Momentum without clipping, and a loss that sums (a batch of 0 is a loss of 0).
    pub struct SumLoss {
        input x: [n, 4];
        param w: [4, 2] = glorot_uniform;
        param c: [2] = constant(0.5);
        loss l = sum(square(tanh(matmul(x, w)) - c));
        optimizer momentum(learning_rate = 0.1);
    }
}

model! {
    /// Plain SGD whose gradients are not products (the fused `p -= lr g` update).
    pub struct Elementwise {
        input x: [n, 3];
        param w: [3] = constant(0.5);
        loss l = mean(sqrt(square(x * w) + 1.0));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn data(n: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let x = Array2::from_shape_fn((n, 784), |_| next());
    let mut y = Array2::zeros((n, 10));
    for i in 0..n {
        y[[i, (next() * 10.0) as usize % 10]] = 1.0;
    }
    (x, y)
}

fn state(m: &Tutorial) -> (Vec<u32>, Vec<u32>, u64) {
    let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    (bits(m.w.as_slice().unwrap()), bits(m.b.as_slice().unwrap()), m.global_step())
}

#[test]
fn a_batch_of_zero_gives_empty_outputs_or_a_clear_error() {
    let (x, y) = data(0, 1);
    assert_eq!(x.shape(), &[0, 784]);
    let mut m = Tutorial::new();
    let (gx, gy) = data(8, 2);
    m.train_step(gx.view(), gy.view()).unwrap();
    let before = state(&m);

    let probs = m.probs(x.view()).unwrap();
    assert_eq!(probs.shape(), &[0, 10]);
    // Used to segfault: the metric's elementwise loop wrote through the dangling pointer
    // of an empty buffer.
    for err in [
        m.accuracy(x.view(), y.view()).unwrap_err(),
        m.cross_entropy(x.view(), y.view()).unwrap_err(),
        m.train_step(x.view(), y.view()).unwrap_err(),
        m.compute_gradients(x.view(), y.view()).unwrap_err(),
    ] {
        assert!(matches!(err, Error::EmptyReduction { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("`batch`") && msg.contains("is 0"), "{msg}");
    }
    assert_eq!(before, state(&m));
    // And the model still works.
    assert!(m.train_step(gx.view(), gy.view()).unwrap().is_finite());
}

#[test]
fn a_batch_of_zero_with_a_summed_loss_is_a_loss_of_zero() {
    let mut m = SumLoss::with_seed(3);
    let x = Array2::<f32>::zeros((0, 4));
    let w = m.w.clone();
    assert_eq!(m.l(x.view()).unwrap(), 0.0);
    let (loss, g) = m.compute_gradients(x.view()).unwrap();
    assert_eq!(loss, 0.0);
    assert!(g.w.iter().all(|&v| v == 0.0), "{:?}", g.w);
    assert_eq!(m.train_step(x.view()).unwrap(), 0.0);
    assert_eq!(m.w, w);
    assert_eq!(m.global_step(), 1);
}

#[test]
fn a_nan_input_is_caught_through_the_gradients_and_changes_nothing() {
    let (x, y) = data(16, 5);
    let mut m = Tutorial::new();
    m.train_step(x.view(), y.view()).unwrap();
    let mut twin = m.clone();
    let before = state(&m);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut xb = x.clone();
        xb[[3, 100]] = bad;
        let err = m.train_step(xb.view(), y.view()).unwrap_err();
        match &err {
            Error::NonFinite { param, .. } => assert_eq!(*param, "w", "{err}"),
            other => panic!("{bad}: {other:?}"),
        }
        assert!(err.to_string().contains("nothing was updated"), "{err}");
        assert_eq!(before, state(&m), "{bad}");
    }
    // The next good step is bit for bit the step of a model that never saw the bad ones.
    let (x2, y2) = data(16, 6);
    let a = m.train_step(x2.view(), y2.view()).unwrap();
    let b = twin.train_step(x2.view(), y2.view()).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(state(&m), state(&twin));
}

#[test]
fn a_nan_is_caught_on_both_guard_paths() {
    // Batch 8: w's update is bounded from its operands (x and dz are smaller than twice w);
    // batch 100: from the forward product's OR of x's bits, which the NaN makes no bound,
    // so the update is staged and checked itself (x is 78,400 floats).
    for n in [8, 100] {
        let (x, y) = data(n, 21);
        let mut m = Tutorial::new();
        m.train_step(x.view(), y.view()).unwrap();
        let mut twin = m.clone();
        let before = state(&m);
        let mut xb = x.clone();
        xb[[n - 1, 700]] = f32::NAN;
        assert!(matches!(m.train_step(xb.view(), y.view()), Err(Error::NonFinite { param: "w", .. })), "batch {n}");
        assert_eq!(before, state(&m), "batch {n}");
        let a = m.train_step(x.view(), y.view()).unwrap();
        let b = twin.train_step(x.view(), y.view()).unwrap();
        assert_eq!((a.to_bits(), state(&m)), (b.to_bits(), state(&twin)), "batch {n}");
    }
}

/// The plain-SGD guard's three ways to bound `w += -lr x^T dz` before writing it: from
/// the operands' largest `|v|` (batch 8), from the forward product's OR of `x`'s bits
/// (batch 100, `x` in [0, 1)), and by staging the update and checking it (batch 100, `x`
/// on both sides of 2, where the OR is no bound). Each trains like compute_gradients +
/// apply_gradients, and each refuses a NaN, changing nothing.
#[test]
fn every_guard_path_trains_like_compute_then_apply_and_refuses_a_nan() {
    for (n, scale) in [(8, 1.0), (100, 1.0), (100, 3.0)] {
        let (mut x, y) = data(n, 31);
        x *= scale;
        let (mut a, diff) = fused_against_split(x.view(), y.view());
        assert!(diff < 1e-5 * scale, "batch {n} x {scale}: {diff}");
        let before = state(&a);
        let mut xb = x.clone();
        xb[[n / 2, 400]] = f32::NAN;
        assert!(
            matches!(a.train_step(xb.view(), y.view()), Err(Error::NonFinite { param: "w", .. })),
            "batch {n} x {scale}"
        );
        assert_eq!(before, state(&a), "batch {n} x {scale}");
    }
}

#[test]
fn huge_finite_inputs_take_the_exact_path() {
    // x of 1e30: the fused update's bound is far beyond 2^100, so the step runs through
    // materialized gradients, which are checked before anything changes.
    let (mut x, y) = data(4, 7);
    x *= 1e30;
    let mut m = Tutorial::new();
    let before = state(&m);
    match m.train_step(x.view(), y.view()) {
        Err(Error::NonFinite { param, .. }) => {
            assert!(param == "w" || param == "b");
            assert_eq!(before, state(&m));
        }
        Ok(loss) => {
            // Then every param is finite.
            assert!(loss.is_finite() || loss.is_nan());
            assert!(m.w.iter().chain(m.b.iter()).all(|v| v.is_finite()));
            assert_eq!(m.global_step(), 1);
        }
        Err(other) => panic!("{other:?}"),
    }
    // Moderately large inputs stay on the fused path and train.
    let (mut x, y) = data(4, 8);
    x *= 1e3;
    let mut m = Tutorial::new();
    assert!(m.train_step(x.view(), y.view()).unwrap().is_finite());
    assert!(m.w.iter().all(|v| v.is_finite()));
}

#[test]
fn the_exact_path_gives_the_fused_paths_bits_for_sane_inputs() {
    // compute_gradients + apply_gradients against the fused train_step: not the same
    // rounding (the fused step accumulates into w), so to a tolerance.
    let (x, y) = data(32, 9);
    let (_, diff) = fused_against_split(x.view(), y.view());
    assert!(diff < 1e-5, "{diff}");
}

/// Three fused `train_step`s against three compute_gradients + apply_gradients from the
/// same start: the fused model and the largest difference of their `w`.
fn fused_against_split(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> (Tutorial, f32) {
    let mut a = Tutorial::new();
    let mut b = Tutorial::new();
    for _ in 0..3 {
        a.train_step(x, y).unwrap();
        let (_, g) = b.compute_gradients(x, y).unwrap();
        b.apply_gradients(&g).unwrap();
    }
    let diff = (&a.w - &b.w).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (a, diff)
}

fn adam_data(n: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((n, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
    let y = Array2::from_shape_fn((n, 3), |(i, j)| f32::from(u8::from(i % 3 == j)));
    (x, y)
}

fn adam_state(m: &AdamMlp) -> Vec<u8> {
    // The whole checkpoint: params, every optimizer slot and the global step.
    let dir =
        std::env::temp_dir().join(format!("modelc-soundness-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.safetensors");
    m.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // The tensors' bytes (in name order, so deterministic; the JSON header's metadata is
    // a map whose order is not) and the global step.
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut out = bytes[8 + header..].to_vec();
    out.extend(m.global_step().to_le_bytes());
    out
}

#[test]
fn adam_with_clipping_refuses_a_non_finite_gradient_and_keeps_every_slot() {
    let (x, y) = adam_data(12);
    let mut m = AdamMlp::with_seed(4);
    for _ in 0..3 {
        m.train_step(x.view(), y.view()).unwrap();
    }
    let mut twin = m.clone();
    let before = adam_state(&m);
    let mut xb = x.clone();
    xb[[2, 1]] = f32::NAN;
    let err = m.train_step(xb.view(), y.view()).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
    assert_eq!(before, adam_state(&m));
    // apply_gradients with an infinity in one field: the same, naming that param.
    let (_, mut g) = m.compute_gradients(x.view(), y.view()).unwrap();
    g.b2[1] = f32::INFINITY;
    match m.apply_gradients(&g).unwrap_err() {
        Error::NonFinite { param, .. } => assert_eq!(param, "b2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(before, adam_state(&m));
    let a = m.train_step(x.view(), y.view()).unwrap();
    let b = twin.train_step(x.view(), y.view()).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(adam_state(&m), adam_state(&twin));
}

#[test]
fn momentum_without_clipping_refuses_a_nan_gradient() {
    let mut m = SumLoss::with_seed(1);
    let x = Array2::from_shape_fn((5, 4), |(i, j)| (i + j) as f32 * 0.1);
    m.train_step(x.view()).unwrap();
    let w = m.w.clone();
    let step = m.global_step();
    let (_, mut g) = m.compute_gradients(x.view()).unwrap();
    g.w[[1, 1]] = f32::NAN;
    assert!(matches!(m.apply_gradients(&g), Err(Error::NonFinite { param: "w", .. })));
    assert_eq!((m.w.clone(), m.global_step()), (w, step));
    // A gradient so large that the update overflows: refused, nothing changed.
    g.w.fill(3e38);
    m.set_learning_rate(100.0);
    let err = m.apply_gradients(&g).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
    assert!(err.to_string().contains("overflows"), "{err}");
    assert_eq!(m.global_step(), step);
}

#[test]
fn plain_sgd_elementwise_update_is_guarded_too() {
    let mut m = Elementwise::new();
    let mut x = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f32 * 0.2);
    m.train_step(x.view()).unwrap();
    let w: Array1<f32> = m.w.clone();
    x[[0, 0]] = f32::NAN;
    assert!(matches!(m.train_step(x.view()), Err(Error::NonFinite { param: "w", .. })));
    assert_eq!(m.w, w);
    assert_eq!(m.global_step(), 1);
}

#[test]
fn apply_gradients_reports_every_wrong_field_at_once() {
    let mut m = AdamMlp::new();
    let before = adam_state(&m);
    let mut g = AdamMlpGradients::zeros();
    g.w1 = Array2::zeros((8, 6));
    g.b2 = Array1::zeros(4);
    let err = m.apply_gradients(&g).unwrap_err();
    let Error::GradientShape { mismatches } = &err else { panic!("{err:?}") };
    let names: Vec<&str> = mismatches.iter().map(|m| m.name).collect();
    assert_eq!(names, ["w1", "b2"]);
    let msg = err.to_string();
    assert!(msg.contains("`w1` expected shape [6, 8], found [8, 6]") && msg.contains("`b2`"), "{msg}");
    assert_eq!(before, adam_state(&m));
    // compute_gradients_into checks its buffers the same way, before running anything.
    let (x, y) = adam_data(3);
    assert!(matches!(m.compute_gradients_into(x.view(), y.view(), &mut g), Err(Error::GradientShape { .. })));
}

#[test]
fn strided_and_empty_views_do_not_crash() {
    // A reversed, stepped view of x and an empty slice of it.
    let (x, y) = data(10, 11);
    let m = Tutorial::new();
    let rev = x.slice(s![..;-2, ..]);
    let yr = y.slice(s![..;-2, ..]);
    let a = m.cross_entropy(rev, yr).unwrap();
    let b = m.cross_entropy(rev.to_owned().view(), yr.to_owned().view()).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    let empty = x.slice(s![3..3, ..]);
    assert_eq!(m.probs(empty).unwrap().shape(), &[0, 10]);
}

model! {
    /// An embedding table under plain SGD: its update is the fused scatter-add of the
    /// rows the batch uses (`kernels::scatter_add_acc`), behind the same guard.
    struct EmbedSgd {
        input tokens: [batch, 3] as u32;
        input label: [batch] as u32;
        param table: [7, 4] = normal(std = 0.5);
        param w: [4, 3] = glorot_uniform;
        let h = mean(gather(table, tokens), axis = 1);
        loss l = mean(sparse_softmax_cross_entropy(matmul(h, w), label));
        optimizer sgd(learning_rate = 0.5);
    }
}

/// Ids with repeats inside a sentence and across the batch, and rows no batch uses.
fn embed_data(step: u32) -> (Array2<u32>, Array1<u32>) {
    let tokens = Array2::from_shape_fn((5, 3), |(i, j)| (i as u32 * 2 + j as u32 * j as u32 + step) % 5);
    let label = Array1::from_shape_fn(5, |i| (i as u32 + step) % 3);
    (tokens, label)
}

fn embed_state(m: &EmbedSgd) -> (Vec<u32>, Vec<u32>, u64) {
    let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect();
    (bits(&m.table), bits(&m.w), m.global_step())
}

#[test]
fn the_fused_scatter_update_trains_like_compute_then_apply() {
    // The fused step adds a repeated id's rows into the table one at a time, where
    // apply_gradients adds their sum: the same terms, rounded in another order.
    let mut fused = EmbedSgd::with_seed(5);
    let mut split = fused.clone();
    for step in 0..6 {
        let (t, y) = embed_data(step);
        let la = fused.train_step(t.view(), y.view()).unwrap();
        let (lb, g) = split.compute_gradients(t.view(), y.view()).unwrap();
        split.apply_gradients(&g).unwrap();
        assert!((la - lb).abs() <= 1e-6 * (1.0 + lb.abs()), "step {step}: loss {la} against {lb}");
        for (a, b) in [(&fused.table, &split.table), (&fused.w, &split.w)] {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= 1e-6 * (1.0 + v.abs()), "step {step}: {u} against {v}");
            }
        }
    }
    // The rows 5 and 6 are never used: their values are the initial ones, bit for bit.
    let init = EmbedSgd::with_seed(5);
    for r in 5..7 {
        assert_eq!(fused.table.row(r), init.table.row(r));
    }
    assert!(fused.table.row(0) != init.table.row(0));
}

#[test]
fn the_fused_scatter_update_is_guarded() {
    // A NaN in a row the batch uses poisons the rows it scatters into: refused, nothing
    // changed; the next good step is the step of a model that never saw the bad one.
    let (t, y) = embed_data(0);
    let mut m = EmbedSgd::with_seed(5);
    let twin = m.clone();
    let good = m.table[[t[[0, 0]] as usize, 1]];
    m.table[[t[[0, 0]] as usize, 1]] = f32::NAN;
    let before = embed_state(&m);
    assert!(matches!(m.train_step(t.view(), y.view()), Err(Error::NonFinite { .. })));
    assert_eq!(before, embed_state(&m));
    m.table[[t[[0, 0]] as usize, 1]] = good;
    let mut twin = twin;
    let a = m.train_step(t.view(), y.view()).unwrap();
    let b = twin.train_step(t.view(), y.view()).unwrap();
    assert_eq!((a.to_bits(), embed_state(&m)), (b.to_bits(), embed_state(&twin)));
    // An id out of range is an index error before anything changes.
    let mut bad = t.clone();
    bad[[2, 1]] = 7;
    let before = embed_state(&m);
    assert!(matches!(m.train_step(bad.view(), y.view()), Err(Error::Index { .. })));
    assert_eq!(before, embed_state(&m));
    // Huge finite rows (a bound beyond 2^100) take the exact path: trained or refused,
    // never a non-finite param.
    let mut huge = EmbedSgd::with_seed(5);
    huge.table.mapv_inplace(|v| v * 1e36);
    huge.w.mapv_inplace(|v| v * 1e36);
    match huge.train_step(t.view(), y.view()) {
        Ok(_) => assert!(huge.table.iter().chain(huge.w.iter()).all(|v| v.is_finite())),
        Err(Error::NonFinite { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
}
