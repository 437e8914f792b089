//! An embedding classifier on token ids: `gather` (an embedding lookup), the mean over
//! the tokens, a dense layer, `sparse_softmax_cross_entropy` on u32 labels, and an
//! `argmax` output that returns u32 class ids.
//!
//! The data is generated here, with a purpose: a toy "topic of a sentence" task that
//! only a model that learns per-token vectors can solve. A vocabulary of 60 tokens has 4
//! topics of 10 tokens each, plus 20 filler tokens every topic uses ("the", "a", ...). A
//! sentence of 8 tokens draws each token from its topic with probability 0.4 and from
//! the fillers otherwise, so a sentence has about 3 telling tokens among 5 fillers, and
//! 1.7% have none (0.6^8: those are guesses, so the best possible accuracy is about 98.7%).
//! Token ids and labels are u32, as a tokenizer would give them.
//!
//! `cargo run --release --example embedding_bag`

use modelc::model;
use modelc::ndarray::{Array1, Array2};

const VOCAB: usize = 60;
const TOPICS: usize = 4;
const LEN: usize = 8;

model! {
    /// Bag of embeddings: the mean of the tokens' vectors, then a linear classifier.
    pub struct TopicClassifier {
        input tokens: [batch, 8] as u32;
        input topic: [batch] as u32;
        param embedding: [60, 16] = normal(std = 0.1);
        param w: [16, 4] = glorot_uniform;
        param b: [4] = zeros;
        let sentence = mean(gather(embedding, tokens), axis = 1);
        let logits = matmul(sentence, w) + b;
        output predicted_topic = argmax(logits, axis = 1);
        loss cross_entropy = mean(sparse_softmax_cross_entropy(logits, topic));
        metric accuracy = mean(argmax(logits, axis = 1) == topic);
        optimizer adam(learning_rate = 0.05);
    }
}

/// A seeded xorshift generator: the data is the same on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }
}

/// `n` sentences: token ids `[n, 8]` and their topics `[n]`.
fn sentences(n: usize, rng: &mut Rng) -> (Array2<u32>, Array1<u32>) {
    let topic = Array1::from_shape_fn(n, |_| rng.below(TOPICS) as u32);
    let tokens = Array2::from_shape_fn((n, LEN), |(i, _)| {
        let id = if rng.unit() < 0.4 { topic[i] as usize * 10 + rng.below(10) } else { 40 + rng.below(20) };
        id as u32
    });
    (tokens, topic)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> modelc::Result<()> {
    let mut rng = Rng(0x5EED);
    let (train_x, train_y) = sentences(4000, &mut rng);
    let (test_x, test_y) = sentences(1000, &mut rng);
    let mut model = TopicClassifier::with_seed(7);
    println!("{model:?}");
    let batch = 50;
    for epoch in 1..=5 {
        let mut loss = 0.0;
        for start in (0..train_x.nrows()).step_by(batch) {
            let rows = modelc::ndarray::s![start..start + batch, ..];
            loss += model.train_step(train_x.slice(rows), train_y.slice(modelc::ndarray::s![start..start + batch]))?;
        }
        let steps = (train_x.nrows() / batch) as f32;
        let accuracy = model.accuracy(test_x.view(), test_y.view())?;
        println!("epoch {epoch}: train loss {:.4}, test accuracy {accuracy:.4}", loss / steps);
    }
    let names = ["sports", "music", "cooking", "space"];
    let (x, y) = sentences(5, &mut rng);
    let predicted: Array1<u32> = model.predicted_topic(x.view())?;
    for i in 0..5 {
        println!(
            "tokens {:?}: topic {} ({}), predicted {} ({})",
            x.row(i).to_vec(),
            y[i],
            names[y[i] as usize],
            predicted[i],
            names[predicted[i] as usize]
        );
    }
    // An id outside the vocabulary is an error that names it, not a crash.
    let mut bad = x.clone();
    bad[[0, 3]] = VOCAB as u32;
    match model.predicted_topic(bad.view()) {
        Err(e) => println!("a token id of {VOCAB}: {e}"),
        Ok(_) => println!("a token id of {VOCAB} was accepted: this is a bug"),
    }
    Ok(())
}
