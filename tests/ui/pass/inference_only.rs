//! A model with no optimizer and no loss: inference only, with params that the user
//! assigns.
//!

use modelc::model;
use modelc::ndarray::{arr1, arr2};

model! {
    /// A fixed linear scorer.
    pub struct Scorer {
        input x: [n, 2];
        param w: [2, 1] = ones;
        param b: [1] = zeros;
        output score = sigmoid(matmul(x, w) + b);
        output best = argmax(sum(x, axis = 1), axis = 0);
        metric mean_score = mean(matmul(x, w) + b);
    }
}

fn main() {
    let mut m = Scorer::new();
    m.b.assign(&arr1(&[1.0]));
    let x = arr2(&[[1.0f32, 2.0], [0.0, -1.0], [3.0, 3.0]]);
    let s = m.score(x.view()).unwrap();
    assert_eq!(s.shape(), &[3, 1]);
    let expected = 1.0 / (1.0 + (-4.0f32).exp());
    assert!((s[[0, 0]] - expected).abs() < 1e-6);
    assert_eq!(m.best(x.view()).unwrap().into_scalar(), 2u32);
    assert!((m.mean_score(x.view()).unwrap() - (4.0 + 0.0 + 7.0) / 3.0).abs() < 1e-5);
    assert_eq!(m.global_step(), 0);
    assert_eq!(Scorer::PARAMETERS, 3);
    assert!(!Scorer::explain().is_empty());
}
