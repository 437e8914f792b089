//! Small value types that generated models return.

use std::fmt;

/// A variable of a model, as `trainable_variables()` lists it (TensorFlow's
/// `tf.trainable_variables()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The param's name in the model.
    pub name: &'static str,
    /// Its (static) shape.
    pub shape: Vec<usize>,
    /// Whether the optimizer updates it (`false` for `#[frozen]` params).
    pub trainable: bool,
}

impl Variable {
    /// The number of scalars it holds.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it holds no scalar (a shape with a zero dimension).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The comparison of one param's symbolic gradient with central finite differences.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamCheck {
    /// The param's name.
    pub name: &'static str,
    /// How many of its scalars were probed.
    pub probed: usize,
    /// The largest `|symbolic - numeric|` over the probed scalars.
    pub max_abs_error: f64,
    /// The largest `|symbolic - numeric| / max(1e-3, |symbolic|, |numeric|)`.
    pub max_rel_error: f64,
}

/// The result of `check_gradients`: symbolic gradients against central finite
/// differences (computed in f64 from f32 evaluations of the loss).
#[derive(Debug, Clone, PartialEq)]
pub struct GradientCheck {
    /// The loss at the current params.
    pub loss: f32,
    /// One entry per trainable param, in declaration order.
    pub params: Vec<ParamCheck>,
}

impl GradientCheck {
    /// The worst relative error over all params.
    pub fn max_rel_error(&self) -> f64 {
        self.params.iter().map(|p| p.max_rel_error).fold(0.0, f64::max)
    }

    /// The worst absolute error over all params.
    pub fn max_abs_error(&self) -> f64 {
        self.params.iter().map(|p| p.max_abs_error).fold(0.0, f64::max)
    }

    /// Whether every probed scalar agrees within `tolerance` (relative or absolute).
    pub fn passes(&self, tolerance: f64) -> bool {
        self.params.iter().all(|p| p.max_rel_error <= tolerance || p.max_abs_error <= tolerance)
    }
}

impl fmt::Display for GradientCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gradient check at loss {}", self.loss)?;
        for p in &self.params {
            writeln!(
                f,
                "  {:<16} probed {:>5}  max abs err {:.3e}  max rel err {:.3e}",
                p.name, p.probed, p.max_abs_error, p.max_rel_error
            )?;
        }
        Ok(())
    }
}

/// What a model costs for one batch size, as `Model::cost(batch)` reports it.
///
/// Every count **saturates** at `u64::MAX`: symbolic dimensions are arbitrary `usize`
/// values, and `Model::cost(usize::MAX)` (or any size whose FLOPs or bytes do not fit
/// in 64 bits) reports `u64::MAX` for what overflows instead of panicking in a debug
/// build or wrapping around in a release build. A value of `u64::MAX` therefore means
/// "at least this much"; every count below it is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point operations of each fetch function, by name.
    pub fetches: Vec<(&'static str, u64)>,
    /// Floating-point operations of one `train_step` (forward, backward and update);
    /// 0 for a model without an optimizer.
    pub train_step: u64,
    /// Bytes of the intermediate buffers the model keeps for this batch size.
    pub workspace_bytes: u64,
    /// Bytes of the params and optimizer slots.
    pub state_bytes: u64,
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, flops) in &self.fetches {
            writeln!(f, "{name:<20} {flops:>14} FLOP")?;
        }
        writeln!(f, "{:<20} {:>14} FLOP", "train_step", self.train_step)?;
        writeln!(f, "{:<20} {:>14} bytes", "workspace", self.workspace_bytes)?;
        write!(f, "{:<20} {:>14} bytes", "state", self.state_bytes)
    }
}
