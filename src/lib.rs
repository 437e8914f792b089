//! modelc placeholder
pub use modelc_macros::model;
pub use modelc_runtime::{ndarray, Error, Variable};
