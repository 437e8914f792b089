//! The one error type of the runtime and of all generated code.
//!
//! Every fallible call of a generated model returns `Result<_, modelc::Error>`, and a
//! call that returns `Err` has changed nothing (params, optimizer state, global step).

use std::path::PathBuf;

/// Everything that can go wrong at run time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input does not have its declared shape, or a symbolic dimension is bound to
    /// different values by different inputs of one call.
    ///
    /// `expected` is the declared shape with symbolic dimensions resolved where they are
    /// already known (e.g. `[batch = 100, 784]`); `found` is the shape given.
    #[error("input `{input}`: expected shape {expected}, found {found:?}{}", detail_suffix(.detail))]
    Shape {
        /// The name of the input in the model.
        input: &'static str,
        /// The declared shape, e.g. `[batch, 784]` or `[batch = 100, 784]`.
        expected: String,
        /// The shape that was given.
        found: Vec<usize>,
        /// Why it does not match, e.g. "dimension `batch` is 100 in input `x`".
        detail: String,
    },
    /// A gradients value does not fit the model (wrong shape in a field).
    #[error("gradient `{name}`: expected shape {expected:?}, found {found:?}")]
    GradientShape {
        /// The param whose gradient is wrong.
        name: &'static str,
        /// The param's shape.
        expected: Vec<usize>,
        /// The shape found in the gradients value.
        found: Vec<usize>,
    },
    /// A checkpoint could not be used: missing or extra tensors, wrong dtype or shape,
    /// a foreign model, or a corrupt file. The message names what differs.
    #[error("checkpoint {}: {message}", .path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A data file (e.g. MNIST IDX) is malformed or does not match what was expected.
    #[error("data {}: {message}", .path.display())]
    Data {
        /// The data file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An I/O error, with the path it happened on.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An argument is out of its domain (e.g. a batch size of 0, a negative learning rate).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
