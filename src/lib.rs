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
//! let mut model = SoftmaxRegression::new();
//! let x = Array2::<f32>::zeros((100, 784));
//! let mut y = Array2::<f32>::zeros((100, 10));
//! y.column_mut(3).fill(1.0);
//! let first = model.train_step(x.view(), y.view())?; // the loss before the update
//! assert!((first - 10f32.ln()).abs() < 1e-5);
//! assert_eq!(model.probs(x.view())?.dim(), (100, 10));
//! println!("{}", SoftmaxRegression::explain()); // the derived gradients, as text
//! # Ok::<(), modelc::Error>(())
//! ```
//!
//! # Where to read on
//!
//! - [`model!`]: the language reference (every item, op, argument and default) and
//!   what the macro generates, with examples that run.
//! - [`Error`]: what can go wrong at run time. Every fallible generated function
//!   returns [`Result`], and a call that returns `Err` has changed nothing.
//! - [`schedule`] (learning-rate schedules), [`data`] (MNIST and its batches),
//!   [`NameMap`] (params from PyTorch or Keras safetensors files), [`checkpoint`],
//!   [`optim`], [`init`], [`kernels`] and [`sgemm`]: the runtime the generated code
//!   calls, usable on its own.
//! - [`ndarray`]: the version of ndarray the generated functions take and return, so
//!   that a program never has to match it.
//!
//! The repository's README and `docs/` (decisions, optimizers, checkpoints, data,
//! testing) say why things are as they are, with measurements.

#![warn(missing_docs)]

// The language reference is `docs/model-language.md`, shown on the `model!` page (rustdoc
// inlines this re-export and puts these docs first) and run as doctests here, where the
// paths users write (`modelc::model!`, `modelc::ndarray`) resolve.
/// Compiles a model declared in the modelc model language into specialized Rust: a
/// struct holding its params, one method per fetch, and the training functions.
///
#[doc = include_str!("../docs/model-language.md")]
pub use modelc_macros::model;
pub use modelc_runtime::import::NameMap;
pub use modelc_runtime::{checkpoint, conv, data, import, init, kernels, mpi, optim, profile, schedule, sgemm};
pub use modelc_runtime::{ndarray, Cost, Error, GradientCheck, ParamCheck, Result, ShapeMismatch, Variable};

/// What generated code names. Not a stable API: only `model!` should use it.
#[doc(hidden)]
pub mod __private {
    pub use modelc_runtime::support::*;
    pub use modelc_runtime::{checkpoint, conv, import, init, kernels, norm, optim, pool, random, shape};
}

/// The Rust snippets of the README and of `docs/`, compiled (and, unless marked
/// `no_run`, run) by `cargo test --doc -p modelc` so that none of them rots. Not API:
/// it exists only under `cfg(doctest)`. `docs/model-language.md` is on [`model!`].
#[cfg(doctest)]
pub mod doc_snippets {
    #[doc = include_str!("../README.md")]
    pub struct Readme;
    #[doc = include_str!("../docs/checkpoints.md")]
    pub struct Checkpoints;
    #[doc = include_str!("../docs/data.md")]
    pub struct Data;
    #[doc = include_str!("../docs/decisions.md")]
    pub struct Decisions;
    /// Needs MPI: its snippets are compiled (not run) by `cargo test --features mpi --doc`.
    #[cfg(feature = "mpi")]
    #[doc = include_str!("../docs/distributed.md")]
    pub struct Distributed;
    #[doc = include_str!("../docs/optimizers.md")]
    pub struct Optimizers;
    #[doc = include_str!("../docs/testing.md")]
    pub struct Testing;
}
