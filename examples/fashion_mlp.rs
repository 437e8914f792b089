//! An MLP with layer normalization and dropout on Fashion-MNIST (60,000 train / 10,000
//! test images of clothes, 10 classes), trained from integer labels with
//! `sparse_softmax_cross_entropy`. Prints the test accuracy after every epoch.
//!
//! ```text
//! apt-get install dataset-fashion-mnist                   # Debian's package, IDX files
//! cargo run --release --example fashion_mlp               # 5 epochs
//! cargo run --release --example fashion_mlp -- --epochs 10 --data DIR   # another IDX folder
//! ```
//!
//! Dropout is active in `train_step` only: every fetch (`accuracy`, `predicted`) runs
//! the model in inference mode, as Keras' `evaluate` and `predict` do.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use modelc::data::Mnist;
use modelc::model;

model! {
    /// 784-256-128-10 with layer norm (learned gain and shift) and dropout after each
    /// hidden layer's activation.
    pub struct FashionMlp {
        input x: [batch, 784];
        input y: [batch] as u32;

        param w1: [784, 256] = he_normal;
        param g1: [256] = ones;
        param s1: [256] = zeros;
        param w2: [256, 128] = he_normal;
        param g2: [128] = ones;
        param s2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;

        let h1 = dropout(relu(layer_norm(matmul(x, w1)) * g1 + s1), rate = 0.2);
        let h2 = dropout(relu(layer_norm(matmul(h1, w2)) * g2 + s2), rate = 0.2);
        let logits = matmul(h2, w3) + b3;

        output predicted = argmax(logits, axis = 1);
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        metric accuracy = mean(argmax(logits, axis = 1) == y);

        optimizer adam(learning_rate = 0.001);
    }
}

const BATCH: usize = 100;
const CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut epochs, mut dir) = (5usize, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--epochs", Some(n)) => epochs = n.parse()?,
            ("--data", Some(d)) => dir = Some(d.clone()),
            _ => {
                eprintln!("usage: fashion_mlp [--epochs N] [--data DIR]");
                std::process::exit(2);
            }
        }
    }
    let data = match dir {
        Some(d) => Mnist::from_idx_dir(d)?,
        None => Mnist::fashion()?,
    };
    let steps_per_epoch = data.train.len() / BATCH;
    println!(
        "{} train, {} test; {} trainable params; {epochs} epochs of {steps_per_epoch} steps",
        data.train.len(),
        data.test.len(),
        FashionMlp::PARAMETERS
    );
    let mut model = FashionMlp::with_seed(1);
    let mut batches = data.train.sparse_batches(BATCH);
    let (test_x, test_y) = (data.test.images.view(), data.test.class_ids.view());
    let start = Instant::now();
    for epoch in 1..=epochs {
        let bar = ProgressBar::new(steps_per_epoch as u64);
        bar.set_style(ProgressStyle::with_template("epoch {prefix} {bar:40} {pos}/{len}  {msg}")?);
        bar.set_prefix(epoch.to_string());
        let mut loss = 0.0;
        for step in 0..steps_per_epoch {
            let (x, y) = batches.next().ok_or("no batch")?;
            loss += model.train_step(x, y)?;
            if step % 50 == 49 {
                bar.set_message(format!("loss {:.4}", loss / (step + 1) as f32));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let accuracy = model.accuracy(test_x, test_y)?;
        println!("epoch {epoch}: train loss {:.4}, test accuracy {accuracy:.4}", loss / steps_per_epoch as f32);
    }
    let elapsed = start.elapsed();
    let steps = (epochs * steps_per_epoch) as f64;
    println!("{steps} steps in {:.1} s: {:.0} us per step", elapsed.as_secs_f64(), elapsed.as_secs_f64() * 1e6 / steps);
    let predicted = model.predicted(data.test.images.slice(modelc::ndarray::s![..5, ..]))?;
    for (i, &p) in predicted.iter().enumerate() {
        println!("test image {i}: {} (predicted {})", CLASSES[data.test.class_ids[i] as usize], CLASSES[p as usize]);
    }
    Ok(())
}
