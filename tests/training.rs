//! Training behaviour at the model level: every optimizer resumes exactly through a
//! checkpoint, frozen params never change, schedules drive the learning rate, and every
//! bad checkpoint is an error that changes nothing.

use modelc::model;
use modelc::ndarray::{Array2, ArrayView2};
use modelc::schedule::{Schedule, StepDecay};

macro_rules! mlp_with {
    ($name:ident, $($opt:tt)*) => {
        model! {
            struct $name {
                input x: [batch, 6];
                input y: [batch, 3];
                #[frozen] param scale: [6] = constant(0.5);
                param w1: [6, 8] = glorot_uniform;
                param b1: [8] = constant(0.01);
                param w2: [8, 3] = he_normal;
                param b2: [3] = zeros;
                let h = tanh(matmul(x * scale, w1) + b1);
                loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
                optimizer $($opt)*;
            }
        }
    };
}

mlp_with!(Sgd, sgd(learning_rate = 0.3));
mlp_with!(SgdClipDecay, sgd(learning_rate = 0.3, clip_norm = 0.5, weight_decay = 0.01));
mlp_with!(Momentum, momentum(learning_rate = 0.1, momentum = 0.9));
mlp_with!(Nesterov, momentum(learning_rate = 0.1, momentum = 0.8, nesterov = true, weight_decay = 0.001));
mlp_with!(Adam, adam(learning_rate = 0.01));
mlp_with!(AdamClip, adam(learning_rate = 0.01, beta1 = 0.8, beta2 = 0.99, epsilon = 1e-6, clip_norm = 1.0));
mlp_with!(RmsProp, rmsprop(learning_rate = 0.01, momentum = 0.5, centered = true));
mlp_with!(Adagrad, adagrad(learning_rate = 0.1, initial_accumulator_value = 0.1));

model! {
    /// Three layers, so that plain SGD's fused updates run at three places in the step.
    struct Deep {
        input x: [batch, 6];
        input y: [batch, 3];
        param w1: [6, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 8] = glorot_uniform;
        param b2: [8] = constant(0.05);
        param w3: [8, 3] = glorot_uniform;
        param b3: [3] = zeros;
        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        loss l = mean(softmax_cross_entropy(matmul(h2, w3) + b3, y));
        optimizer sgd(learning_rate = 0.5);
    }
}

fn data(step: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((16, 6), |(i, j)| ((i * 5 + j * 3 + step) % 11) as f32 / 11.0 - 0.4);
    let y = Array2::from_shape_fn((16, 3), |(i, j)| f32::from(u8::from((i + step) % 3 == j)));
    (x, y)
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("modelc-training-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

macro_rules! resume_test {
    ($test:ident, $name:ident) => {
        #[test]
        fn $test() {
            // 10 uninterrupted steps...
            let mut a = $name::with_seed(11);
            let mut losses_a = Vec::new();
            for s in 0..10 {
                let (x, y) = data(s);
                losses_a.push(a.train_step(x.view(), y.view()).unwrap());
            }
            // ...equal 5 steps, save, load, 5 steps, to the bit.
            let mut b = $name::with_seed(11);
            let mut losses_b = Vec::new();
            for s in 0..5 {
                let (x, y) = data(s);
                losses_b.push(b.train_step(x.view(), y.view()).unwrap());
            }
            let path = tmp(concat!(stringify!($name), ".safetensors"));
            b.save(&path).unwrap();
            drop(b);
            let mut b = $name::load(&path).unwrap();
            assert_eq!(b.global_step(), 5);
            for s in 5..10 {
                let (x, y) = data(s);
                losses_b.push(b.train_step(x.view(), y.view()).unwrap());
            }
            assert_eq!(losses_a, losses_b);
            assert_eq!(a.w1, b.w1);
            assert_eq!(a.b1, b.b1);
            assert_eq!(a.w2, b.w2);
            assert_eq!(a.b2, b.b2);
            assert!(losses_a[9] < losses_a[0], "{losses_a:?}");
            // The frozen param never changed.
            assert!(a.scale.iter().all(|&v| v == 0.5));
            let _ = std::fs::remove_file(&path);
        }
    };
}

resume_test!(sgd_resumes_exactly, Sgd);
resume_test!(sgd_with_clipping_and_decay_resumes_exactly, SgdClipDecay);
resume_test!(momentum_resumes_exactly, Momentum);
resume_test!(nesterov_resumes_exactly, Nesterov);
resume_test!(adam_resumes_exactly, Adam);
resume_test!(adam_with_clipping_resumes_exactly, AdamClip);
resume_test!(rmsprop_resumes_exactly, RmsProp);
resume_test!(adagrad_resumes_exactly, Adagrad);

#[test]
fn frozen_params_are_not_trainable_and_have_no_gradient() {
    let m = Adam::new();
    let names: Vec<&str> = m.trainable_variables().iter().map(|v| v.name).collect();
    assert_eq!(names, ["w1", "b1", "w2", "b2"]);
    assert_eq!(m.variables().len(), 5);
    assert_eq!(Adam::PARAMETERS, 6 * 8 + 8 + 8 * 3 + 3);
    // The gradients struct has no `scale` field: this compiles only if so.
    let AdamGradients { w1: _, b1: _, w2: _, b2: _ } = AdamGradients::zeros();
}

#[test]
fn a_schedule_drives_the_learning_rate() {
    let mut m = Momentum::new();
    let schedule = StepDecay { initial: 0.1, gamma: 0.5, step_size: 3 };
    for s in 0..7 {
        m.set_learning_rate(schedule.learning_rate(m.global_step()));
        let (x, y) = data(s);
        m.train_step(x.view(), y.view()).unwrap();
    }
    assert_eq!(m.learning_rate(), 0.025);
}

#[test]
fn bad_checkpoints_are_errors() {
    let (x, y) = data(0);
    let mut adam = Adam::new();
    adam.train_step(x.view(), y.view()).unwrap();
    let path = tmp("adam-for-errors.safetensors");
    adam.save(&path).unwrap();

    // Another model's checkpoint (different name).
    let err = Sgd::load(&path).err().unwrap().to_string();
    assert!(err.contains("Adam") && err.contains("Sgd"), "{err}");
    // A missing file.
    assert!(Adam::load(tmp("nope.safetensors")).is_err());
    // A truncated file.
    let bytes = std::fs::read(&path).unwrap();
    let cut = tmp("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Adam::load(&cut).is_err());
    // Garbage.
    let junk = tmp("junk.safetensors");
    std::fs::write(&junk, b"definitely not a checkpoint").unwrap();
    assert!(matches!(Adam::load(&junk), Err(modelc::Error::Checkpoint { .. }) | Err(modelc::Error::Io { .. })));
    // The loaded model equals the saved one.
    let back = Adam::load(&path).unwrap();
    assert_eq!(back.w1, adam.w1);
    assert_eq!(back.global_step(), 1);
    for p in [path, cut, junk] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_wrong_input_changes_nothing_for_any_optimizer() {
    let (x, y) = data(0);
    let mut m = RmsProp::new();
    m.train_step(x.view(), y.view()).unwrap();
    let before = (m.w1.clone(), m.global_step());
    let bad: ArrayView2<f32> = x.slice(modelc::ndarray::s![.., ..5]);
    assert!(m.train_step(bad, y.view()).is_err());
    assert_eq!(before, (m.w1.clone(), m.global_step()));
}

/// Plain SGD's `train_step` fuses each update into its gradient's product and runs it
/// as soon as nothing else reads the param: the same training as computing every
/// gradient first and applying them after, step after step (up to the products'
/// rounding; an update run before the last read of its param would differ by far more).
#[test]
fn sgd_train_step_equals_compute_then_apply() {
    let mut fused = Deep::with_seed(3);
    let mut split = fused.clone();
    for s in 0..5 {
        let (x, y) = data(s);
        let la = fused.train_step(x.view(), y.view()).unwrap();
        let (lb, g) = split.compute_gradients(x.view(), y.view()).unwrap();
        split.apply_gradients(&g).unwrap();
        assert!((la - lb).abs() <= 1e-5 * lb.abs(), "step {s}: loss {la} against {lb}");
        let pairs = [(&fused.w1, &split.w1), (&fused.w2, &split.w2), (&fused.w3, &split.w3)];
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "step {s}: w{}: {u} against {v}", i + 1);
            }
        }
        for (i, (a, b)) in
            [(&fused.b1, &split.b1), (&fused.b2, &split.b2), (&fused.b3, &split.b3)].into_iter().enumerate()
        {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "step {s}: b{}: {u} against {v}", i + 1);
            }
        }
    }
}
