//! # modelc: a compile-time model compiler
//!
//! Write a model and its loss once, declaratively, inside [`model!`]. At compile time
//! the macro parses it, checks every shape, differentiates the loss symbolically in
//! reverse mode, simplifies the result, and emits plain Rust over a small ndarray
//! runtime: one function per fetchable tensor, `compute_gradients`, `apply_gradients`
//! and `train_step`. No tape, no interpreter.
//!
//! ```
//! use modelc::model;
//! use modelc::ndarray::Array2;
//!
//! model! {
//!     /// Multinomial logistic regression: the TensorFlow 1.x MNIST tutorial model.
//!     pub struct SoftmaxRegression {
//!         input x: [batch, 784];
//!         input y: [batch, 10];
//!         param w: [784, 10] = zeros;
//!         param b: [10] = zeros;
//!         let a = softmax(matmul(x, w) + b);
//!         output probs = a;
//!         loss cross_entropy = mean(-sum(y * ln(a), axis = 1));
//!         metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));
//!         optimizer sgd(learning_rate = 0.5);
//!     }
//! }
//!
//! let mut m = SoftmaxRegression::new();
//! let x = Array2::<f32>::zeros((100, 784));
//! let mut y = Array2::<f32>::zeros((100, 10));
//! y.column_mut(3).fill(1.0);
//! let first = m.train_step(x.view(), y.view()).unwrap();
//! assert!((first - 10f32.ln()).abs() < 1e-5);
//! ```
//!
//! The language is described in `docs/model-language.md`; the generated API in the
//! README.

#![warn(missing_docs)]

pub use modelc_macros::model;
pub use modelc_runtime::import::NameMap;
pub use modelc_runtime::{checkpoint, conv, data, import, init, kernels, optim, schedule, sgemm};
pub use modelc_runtime::{ndarray, Cost, Error, GradientCheck, ParamCheck, Result, ShapeMismatch, Variable};

/// What generated code names. Not a stable API: only `model!` should use it.
#[doc(hidden)]
pub mod __private {
    pub use modelc_runtime::support::*;
    pub use modelc_runtime::{checkpoint, conv, import, init, kernels, norm, optim, random, shape};
}
