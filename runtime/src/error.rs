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
    /// A gradients value does not fit the model: one or more fields have another shape
    /// than their param. Every mismatching field is listed, in declaration order.
    #[error("gradients do not fit the model: {}", mismatch_list(.mismatches))]
    GradientShape {
        /// Every field whose shape differs from its param's.
        mismatches: Vec<ShapeMismatch>,
    },
    /// A gradient has a NaN or an infinity (or an update would overflow `f32`), so the
    /// update was not applied: params, optimizer slots and global step are unchanged.
    ///
    /// A NaN in an input shows up here too, through the gradients it poisons.
    #[error("param `{param}`: {detail}; nothing was updated")]
    NonFinite {
        /// The first param (in declaration order) whose update is not finite.
        param: &'static str,
        /// What is not finite, e.g. "its gradient has a NaN or an infinity".
        detail: String,
    },
    /// A loss, metric or output reduces over a dimension that is 0 in this call: a mean
    /// (it would divide by 0), a `max` or an `argmax` (nothing to pick) over an empty
    /// batch has no value. Nothing changed. A sum over nothing is 0, and is no error.
    #[error("`{fetch}` takes a {op} over {dims}, which is 0 in this call; a {op} over nothing has no value")]
    EmptyReduction {
        /// The fetch, or the loss of a training function.
        fetch: &'static str,
        /// `mean`, `max` or `argmax`.
        op: &'static str,
        /// The dimensions reduced over that are 0, e.g. "`batch`".
        dims: String,
    },
    /// An index input holds an id that is out of range for the op that reads it (a class
    /// label not below the number of classes, a token id not below the table's rows).
    /// Found before anything runs: nothing changed.
    #[error(
        "input `{input}`: index {index} at position {position:?} is out of range: {what} takes indices below {bound}"
    )]
    Index {
        /// The name of the index input.
        input: &'static str,
        /// The offending id (the first one, in the input's logical order).
        index: u32,
        /// Its position in the input, e.g. `[3]` or `[2, 5]`.
        position: Vec<usize>,
        /// The bound the id must be below.
        bound: usize,
        /// What reads it, e.g. "`gather` into `emb` (its rows)".
        what: &'static str,
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
    /// Data-parallel training (`modelc::mpi`): a step failed on at least one rank (a bad
    /// batch, a non-finite gradient, gradients that do not fit the model), so no rank
    /// applied it. Every rank returns this same value for that step.
    #[error("rank {rank} failed ({failed} of {ranks} ranks failed; no rank applied this step): {message}")]
    Distributed {
        /// The lowest rank that failed; `message` is its error.
        rank: usize,
        /// How many ranks failed.
        failed: usize,
        /// The number of ranks in the job.
        ranks: usize,
        /// What went wrong on `rank` (its error's message).
        message: String,
    },
    /// An argument is out of its domain (e.g. a batch size of 0, a negative learning rate).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// One field of a gradients value whose shape is not its param's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The param (and field) name.
    pub name: &'static str,
    /// The param's shape.
    pub expected: Vec<usize>,
    /// The field's shape.
    pub found: Vec<usize>,
}

fn mismatch_list(m: &[ShapeMismatch]) -> String {
    let items: Vec<String> =
        m.iter().map(|m| format!("`{}` expected shape {:?}, found {:?}", m.name, m.expected, m.found)).collect();
    items.join("; ")
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// `Result<T, modelc::Error>`: what every fallible call of a generated model returns.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
