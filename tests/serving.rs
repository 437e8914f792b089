//! Serving (issue 16, item 1): fetches take `&self`, so one model behind an `Arc`
//! answers many threads at once, bit-identical to one thread; each thread's bad input is
//! its own `Err`. The generated structs are `Clone + Send + Sync` (this file does not
//! compile otherwise).

use std::sync::Arc;

use modelc::model;
use modelc::ndarray::{Array2, Axis, ShapeBuilder};

model! {
    pub struct Mlp {
        input x: [batch, 20];
        input y: [batch, 4];
        param w1: [20, 32] = glorot_uniform;
        param b1: [32] = constant(0.1);
        param w2: [32, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = relu(matmul(x, w1) + b1);
        let z = matmul(h, w2) + b2;
        output probs = softmax(z);
        loss l = mean(softmax_cross_entropy(z, y));
        metric accuracy = mean(argmax(z, axis = 1) == argmax(y, axis = 1));
        optimizer adam(learning_rate = 0.01);
    }
}

const fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
const _: () = assert_clone_send_sync::<Mlp>();
const _: () = assert_clone_send_sync::<MlpGradients>();

fn data(n: usize, seed: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((n, 20), |(i, j)| (((i + seed) * 31 + j * 17) % 23) as f32 / 11.0 - 1.0);
    let y = Array2::from_shape_fn((n, 4), |(i, j)| f32::from(u8::from((i * 7 + seed) % 4 == j)));
    (x, y)
}

fn trained() -> Mlp {
    let mut m = Mlp::with_seed(7);
    let (x, y) = data(64, 0);
    for _ in 0..20 {
        m.train_step(x.view(), y.view()).unwrap();
    }
    m
}

#[test]
fn four_threads_share_one_model_bit_for_bit() {
    let m = Arc::new(trained());
    // What one thread gets, for batches of 1 (a request) and 16.
    let inputs: Vec<(Array2<f32>, Array2<f32>)> = (0..8).map(|s| data(if s % 2 == 0 { 1 } else { 16 }, s)).collect();
    let expected: Vec<(Vec<u32>, u32, u32)> = inputs
        .iter()
        .map(|(x, y)| {
            let p = m.probs(x.view()).unwrap();
            (
                p.iter().map(|v| v.to_bits()).collect(),
                m.l(x.view(), y.view()).unwrap().to_bits(),
                m.accuracy(x.view(), y.view()).unwrap().to_bits(),
            )
        })
        .collect();
    let inputs = Arc::new(inputs);
    let expected = Arc::new(expected);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (m, inputs, expected) = (Arc::clone(&m), Arc::clone(&inputs), Arc::clone(&expected));
            std::thread::spawn(move || {
                for round in 0..200 {
                    let k = (round * 3 + t) % inputs.len();
                    let (x, y) = &inputs[k];
                    let p = m.probs(x.view()).unwrap();
                    let got: Vec<u32> = p.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, expected[k].0, "thread {t} round {round}");
                    assert_eq!(m.l(x.view(), y.view()).unwrap().to_bits(), expected[k].1);
                    assert_eq!(m.accuracy(x.view(), y.view()).unwrap().to_bits(), expected[k].2);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn each_threads_bad_input_is_its_own_error() {
    let m = Arc::new(trained());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for round in 0..100 {
                    if (round + t) % 2 == 0 {
                        let bad = Array2::<f32>::zeros((3, 19 + 2 * t));
                        let err = m.probs(bad.view()).unwrap_err().to_string();
                        assert!(err.contains("input `x`") && err.contains(&format!("{}", 19 + 2 * t)), "{err}");
                    } else {
                        let (x, _) = data(5, t);
                        let p = m.probs(x.view()).unwrap();
                        for row in p.axis_iter(Axis(0)) {
                            assert!((row.sum() - 1.0).abs() < 1e-5);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_param_replaced_by_a_transposed_array_is_read_through_its_strides() {
    let m = trained();
    let (x, _) = data(9, 3);
    let standard = m.probs(x.view()).unwrap();
    let mut t = m.clone();
    // Same values, column-major memory.
    let mut f = Array2::zeros((20, 32).f());
    f.assign(&m.w1);
    t.w1 = f;
    assert!(!t.w1.is_standard_layout());
    assert_eq!(t.w1, m.w1);
    let strided = t.probs(x.view()).unwrap();
    let diff = (&standard - &strided).iter().fold(0.0f32, |a, v| a.max(v.abs()));
    assert!(diff < 1e-6, "{diff}");
    // A param of another shape is an error, not a panic.
    t.w2 = Array2::zeros((4, 32));
    assert!(t.probs(x.view()).is_err());
}

#[test]
fn a_clone_serves_the_same_answers() {
    let m = trained();
    let c = m.clone();
    let (x, _) = data(16, 1);
    assert_eq!(m.probs(x.view()).unwrap(), c.probs(x.view()).unwrap());
}
