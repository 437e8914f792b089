//! TensorFlow's "Deep MNIST for experts" convolutional network on Fashion-MNIST (60,000
//! train / 10,000 test 28x28 images of clothes, 10 classes), trained from integer labels
//! with `sparse_softmax_cross_entropy`. Prints the test accuracy and the milliseconds per
//! training step after every epoch.
//!
//! ```text
//! apt-get install dataset-fashion-mnist                     # Debian's package, IDX files
//! cargo run --release --example fashion_cnn                 # Deep MNIST, 10 epochs
//! cargo run --release --example fashion_cnn -- --small      # LeNet-sized, 3 epochs, under a minute
//! cargo run --release --example fashion_cnn -- --epochs 5 --lr 0.0005 --data DIR
//! ```
//!
//! The architecture is the tutorial's exactly: conv 5x5x32 "same" + relu, 2x2 max pool,
//! conv 5x5x64 "same" + relu, 2x2 max pool, flatten (3136), dense 1024 + relu, dropout
//! 0.5, dense 10. The optimizer is Adam at 1e-3 rather than the tutorial's 1e-4: it gets
//! to the tutorial's accuracy in far fewer epochs (README, "Fashion-MNIST CNN", says what
//! was tried). `--small` is the C2 benchmark's LeNet-small (conv 3x3x16 valid, pool, conv
//! 3x3x32 valid, pool, dense 10).
//!
//! The images are shuffled once per epoch (a fixed-seed permutation) and copied into one
//! batch buffer, so a step reads a `[batch, 28, 28, 1]` NHWC view and allocates nothing.
//! Dropout acts in `train_step` only; `accuracy` runs the model in inference mode.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use modelc::data::{Dataset, Mnist};
use modelc::model;
use modelc::ndarray::{s, Array1, Array4, ArrayView2, ArrayView4};

model! {
    /// Deep MNIST: two conv + relu + max_pool stages, a 1024-wide hidden layer with
    /// dropout, 10 logits.
    pub struct DeepMnist {
        input x: [batch, 28, 28, 1];
        input y: [batch] as u32;

        param k1: [5, 5, 1, 32] = he_normal;
        param b1: [32] = zeros;
        param k2: [5, 5, 32, 64] = he_normal;
        param b2: [64] = zeros;
        param w3: [3136, 1024] = he_normal;
        param b3: [1024] = zeros;
        param w4: [1024, 10] = glorot_uniform;
        param b4: [10] = zeros;

        let h1 = max_pool(relu(conv2d(x, k1, padding = "same") + b1));
        let h2 = max_pool(relu(conv2d(h1, k2, padding = "same") + b2));
        let h3 = dropout(relu(matmul(flatten(h2), w3) + b3), rate = 0.5);
        let logits = matmul(h3, w4) + b4;

        output predicted = argmax(logits, axis = 1);
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        metric accuracy = mean(argmax(logits, axis = 1) == y);

        optimizer adam(learning_rate = 0.001);
    }
}

model! {
    /// LeNet-small (the C2 benchmark's shape): 3x3 valid convs of 16 and 32 channels,
    /// each followed by relu and a 2x2 max pool, then one dense layer of 10.
    pub struct LeNetSmall {
        input x: [batch, 28, 28, 1];
        input y: [batch] as u32;

        param k1: [3, 3, 1, 16] = he_normal;
        param b1: [16] = zeros;
        param k2: [3, 3, 16, 32] = he_normal;
        param b2: [32] = zeros;
        param w3: [800, 10] = glorot_uniform;
        param b3: [10] = zeros;

        let h1 = max_pool(relu(conv2d(x, k1) + b1));
        let h2 = max_pool(relu(conv2d(h1, k2) + b2));
        let logits = matmul(flatten(h2), w3) + b3;

        output predicted = argmax(logits, axis = 1);
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, y));
        metric accuracy = mean(argmax(logits, axis = 1) == y);

        optimizer adam(learning_rate = 0.001);
    }
}

const CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
/// Test images per `accuracy` call: bounds the inference workspace (C1's second conv
/// output alone is 50 MB for 1,000 images) whatever the test set's size.
const EVAL_CHUNK: usize = 1000;

/// What the two models have in common, so that one training loop serves both.
trait Net {
    const NAME: &'static str;
    const PARAMETERS: usize;
    const BATCH: usize;
    const EPOCHS: usize;
    fn train(&mut self, x: ArrayView4<f32>, y: modelc::ndarray::ArrayView1<u32>) -> Result<f32, modelc::Error>;
    fn test_accuracy(&self, x: ArrayView4<f32>, y: modelc::ndarray::ArrayView1<u32>) -> Result<f32, modelc::Error>;
    fn classify(&self, x: ArrayView4<f32>) -> Result<Array1<u32>, modelc::Error>;
    fn set_rate(&mut self, lr: f32);
}

macro_rules! net {
    ($ty:ident, $name:literal, $batch:literal, $epochs:literal) => {
        impl Net for $ty {
            const NAME: &'static str = $name;
            const PARAMETERS: usize = $ty::PARAMETERS;
            const BATCH: usize = $batch;
            const EPOCHS: usize = $epochs;
            fn train(&mut self, x: ArrayView4<f32>, y: modelc::ndarray::ArrayView1<u32>) -> Result<f32, modelc::Error> {
                self.train_step(x, y)
            }
            fn test_accuracy(
                &self,
                x: ArrayView4<f32>,
                y: modelc::ndarray::ArrayView1<u32>,
            ) -> Result<f32, modelc::Error> {
                self.accuracy(x, y)
            }
            fn classify(&self, x: ArrayView4<f32>) -> Result<Array1<u32>, modelc::Error> {
                self.predicted(x)
            }
            fn set_rate(&mut self, lr: f32) {
                self.set_learning_rate(lr);
            }
        }
    };
}
// Deep MNIST's batch is the tutorial's (50); LeNet-small's is C2's (64).
net!(DeepMnist, "Deep MNIST", 50, 10);
net!(LeNetSmall, "LeNet-small", 64, 3);

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

struct Args {
    small: bool,
    epochs: Option<usize>,
    lr: Option<f32>,
    dir: Option<String>,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut args = Args { small: false, epochs: None, lr: None, dir: None };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--small" => args.small = true,
            "--epochs" | "--lr" | "--data" => {
                let Some(v) = it.next() else { usage() };
                match a.as_str() {
                    "--epochs" => args.epochs = Some(v.parse()?),
                    "--lr" => args.lr = Some(v.parse()?),
                    _ => args.dir = Some(v.clone()),
                }
            }
            _ => usage(),
        }
    }
    let data = match &args.dir {
        Some(d) => Mnist::from_idx_dir(d)?,
        None => Mnist::fashion()?,
    };
    if args.small {
        train(LeNetSmall::with_seed(1), &data.train, &data.test, &args)
    } else {
        train(DeepMnist::with_seed(1), &data.train, &data.test, &args)
    }
}

fn usage() -> ! {
    eprintln!("usage: fashion_cnn [--small] [--epochs N] [--lr RATE] [--data DIR]");
    std::process::exit(2);
}

/// 28x28 grey images, one channel, NHWC: the rows of `images` (`[n, 784]`) seen as
/// `[n, 28, 28, 1]` (a standard-layout view: nothing is copied).
fn nhwc(images: ArrayView2<f32>) -> Result<ArrayView4<f32>, modelc::ndarray::ShapeError> {
    let n = images.nrows();
    images.into_shape_with_order((n, 28, 28, 1))
}

/// SplitMix64: a few lines of fixed-seed randomness for the shuffle (the example's only
/// dependency beyond modelc is the progress bar).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn train<M: Net>(mut model: M, train: &Dataset, test: &Dataset, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if train.images.ncols() != 784 || test.images.ncols() != 784 {
        return Err(format!("expected 28x28 images, got {} pixels each", train.images.ncols()).into());
    }
    if train.len() < M::BATCH {
        return Err(format!("{} training images, fewer than one batch of {}", train.len(), M::BATCH).into());
    }
    let epochs = args.epochs.unwrap_or(M::EPOCHS);
    if let Some(lr) = args.lr {
        model.set_rate(lr);
    }
    let steps_per_epoch = train.len() / M::BATCH;
    println!(
        "{}: {} train, {} test; {} trainable params; batch {}, {epochs} epochs of {steps_per_epoch} steps",
        M::NAME,
        train.len(),
        test.len(),
        M::PARAMETERS,
        M::BATCH,
    );
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut seed = 42u64;
    let mut bx = Array4::<f32>::zeros((M::BATCH, 28, 28, 1));
    let mut by = Array1::<u32>::zeros(M::BATCH);
    let (mut stepping, start) = (Duration::ZERO, Instant::now());
    for epoch in 1..=epochs {
        // Fisher-Yates with a fixed seed: every run sees the same batches.
        for i in (1..order.len()).rev() {
            order.swap(i, (splitmix(&mut seed) % (i as u64 + 1)) as usize);
        }
        let bar = ProgressBar::new(steps_per_epoch as u64);
        bar.set_style(ProgressStyle::with_template("epoch {prefix} {bar:40} {pos}/{len} {elapsed_precise}  {msg}")?);
        bar.set_prefix(epoch.to_string());
        let (mut loss, mut epoch_time) = (0.0, Duration::ZERO);
        for (step, rows) in order.chunks_exact(M::BATCH).enumerate() {
            for (b, &r) in rows.iter().enumerate() {
                bx.slice_mut(s![b, .., .., 0])
                    .as_slice_mut()
                    .ok_or("batch buffer not contiguous")?
                    .copy_from_slice(train.images.row(r).as_slice().ok_or("images not contiguous")?);
                by[b] = train.class_ids[r];
            }
            let t = Instant::now();
            loss += model.train(bx.view(), by.view())?;
            epoch_time += t.elapsed();
            if step % 50 == 49 {
                bar.set_message(format!("loss {:.4}", loss / (step + 1) as f32));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        stepping += epoch_time;
        let accuracy = accuracy(&model, test)?;
        println!(
            "epoch {epoch}: train loss {:.4}, test accuracy {accuracy:.4}, {:.2} ms per step, {:.0} s so far",
            loss / steps_per_epoch as f32,
            epoch_time.as_secs_f64() * 1e3 / steps_per_epoch as f64,
            start.elapsed().as_secs_f64()
        );
    }
    let steps = (epochs * steps_per_epoch) as f64;
    println!(
        "{steps} steps in {:.1} s ({:.1} s with evaluation): {:.2} ms per step",
        stepping.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        stepping.as_secs_f64() * 1e3 / steps
    );
    let first = nhwc(test.images.slice(s![..5.min(test.len()), ..]))?;
    for (i, &p) in model.classify(first)?.iter().enumerate() {
        println!("test image {i}: {} (predicted {})", CLASSES[test.class_ids[i] as usize], CLASSES[p as usize]);
    }
    Ok(())
}

/// The test accuracy, [`EVAL_CHUNK`] images at a time (weighted by each chunk's size).
fn accuracy<M: Net>(model: &M, test: &Dataset) -> Result<f32, Box<dyn std::error::Error>> {
    let mut correct = 0.0f64;
    for start in (0..test.len()).step_by(EVAL_CHUNK) {
        let end = (start + EVAL_CHUNK).min(test.len());
        let x = nhwc(test.images.slice(s![start..end, ..]))?;
        let a = model.test_accuracy(x, test.class_ids.slice(s![start..end]))?;
        correct += f64::from(a) * (end - start) as f64;
    }
    Ok((correct / test.len().max(1) as f64) as f32)
}
