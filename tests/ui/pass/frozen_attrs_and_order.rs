//! `#[frozen]` params, doc comments and attributes on items, items in any order, and a
//! `let` that refers to a later item.

use modelc::model;
use modelc::ndarray::{arr1, Array2};

model! {
    /// A two-layer net whose output bias is frozen.
    #[derive(Debug)]
    pub struct Frozen {
        /// The training objective.
        loss xent = mean(softmax_cross_entropy(logits, y));

        /// Hidden activations; `logits` is declared further down.
        let hidden = relu(matmul(x, w1) + b1);

        optimizer momentum(learning_rate = 0.1, momentum = 0.5);

        /// The class probabilities.
        #[must_use = "fetching probabilities is pure"]
        output probs = softmax(logits);

        let logits = matmul(hidden, w2) + offset;

        /// First layer weights.
        param w1: [4, 8] = glorot_uniform;
        #[doc = "First layer bias."]
        param b1: [8] = zeros;
        /// Second layer weights.
        param w2: [8, 3] = glorot_normal;
        /// A fixed offset: never updated.
        #[frozen]
        param offset: [3] = constant(0.25);

        /// Fraction of rows classified correctly.
        metric accuracy = mean(argmax(logits, axis = 1) == argmax(y, axis = 1));

        input y: [batch, 3];
        /// The features.
        input x: [batch, 4];
    }
}

fn main() {
    // Generated functions take their inputs in declaration order: here `y`, then `x`.
    let mut m = Frozen::with_seed(1);
    let mut x = Array2::<f32>::zeros((9, 4));
    let mut y = Array2::<f32>::zeros((9, 3));
    for i in 0..9 {
        x[[i, i % 4]] = 1.0 + i as f32 * 0.1;
        y[[i, i % 3]] = 1.0;
    }
    let offset = m.offset.clone();
    assert_eq!(offset, arr1(&[0.25, 0.25, 0.25]));
    let w1 = m.w1.clone();
    let first = m.train_step(y.view(), x.view()).unwrap();
    for _ in 0..10 {
        m.train_step(y.view(), x.view()).unwrap();
    }
    let last = m.xent(y.view(), x.view()).unwrap();
    assert!(last < first, "loss went from {first} to {last}");
    assert_eq!(m.offset, offset, "a frozen param is never updated");
    assert_ne!(m.w1, w1, "a trainable param is updated");
    let (_, g) = m.compute_gradients(y.view(), x.view()).unwrap();
    let _ = (&g.w1, &g.b1, &g.w2); // no field for the frozen `offset`
    let vars = m.trainable_variables();
    assert_eq!(vars.len(), 3);
    assert!(vars.iter().all(|v| v.name != "offset"));
    assert_eq!(Frozen::PARAMETERS, 4 * 8 + 8 + 8 * 3);
    let p = m.probs(x.view()).unwrap();
    assert_eq!(p.shape(), &[9, 3]);
    // The derived-looking but compact Debug: shapes, the frozen mark, no buffers.
    let debug = format!("{m:?}");
    assert!(debug.contains("offset: [3] (frozen)") && debug.len() < 400, "{debug}");
    assert!(m.accuracy(y.view(), x.view()).unwrap() >= 0.0);
}
