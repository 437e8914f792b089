//! Learning-rate schedules: small helpers a training loop calls between steps.
//!
//! ```
//! # use modelc_runtime as modelc; // the facade re-exports this module as `modelc::schedule`
//! use modelc::schedule::{CosineDecay, Schedule, Warmup};
//!
//! let schedule = Warmup::new(CosineDecay::new(0.1, 1_000, 0.01), 100);
//! # let mut global_step = 0u64;
//! for _ in 0..1_100 {
//!     let lr = schedule.learning_rate(global_step);
//!     // model.set_learning_rate(lr); model.train_step(x, y)?; global_step = model.global_step();
//! #   assert!(lr > 0.0 && lr <= 0.1);
//! #   global_step += 1;
//! }
//! ```
//!
//! **The step** passed to [`Schedule::learning_rate`] is the number of updates applied so
//! far (`model.global_step()`), so the rate returned is the one for the next update: step
//! 0 gives the rate of the first update. This is TensorFlow's `global_step` convention and
//! PyTorch's scheduler `last_epoch` when `scheduler.step()` is called once per update.
//!
//! Rates are computed in f64 and rounded once to f32. A step count of 0 where the
//! formula divides by it (`step_size`, `decay_steps`) is taken as 1.

use crate::Error;

/// A learning rate as a function of the global step.
pub trait Schedule {
    /// The learning rate of the update that follows `step` updates.
    fn learning_rate(&self, step: u64) -> f32;
}

impl<S: Schedule + ?Sized> Schedule for &S {
    fn learning_rate(&self, step: u64) -> f32 {
        (**self).learning_rate(step)
    }
}

impl<S: Schedule + ?Sized> Schedule for Box<S> {
    fn learning_rate(&self, step: u64) -> f32 {
        (**self).learning_rate(step)
    }
}

/// The same rate at every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    /// The rate.
    pub learning_rate: f32,
}

/// The same rate `learning_rate` at every step.
pub fn constant(learning_rate: f32) -> Constant {
    Constant { learning_rate }
}

impl Schedule for Constant {
    fn learning_rate(&self, _step: u64) -> f32 {
        self.learning_rate
    }
}

/// Step decay, PyTorch's `StepLR`: `initial * gamma^floor(step / step_size)`; the rate
/// is multiplied by `gamma` every `step_size` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDecay {
    /// The rate of steps `0 .. step_size`.
    pub initial: f32,
    /// The factor applied every `step_size` steps (e.g. 0.1).
    pub gamma: f32,
    /// How many steps between decays.
    pub step_size: u64,
}

impl Schedule for StepDecay {
    fn learning_rate(&self, step: u64) -> f32 {
        let k = step / self.step_size.max(1);
        (f64::from(self.initial) * f64::from(self.gamma).powf(k as f64)) as f32
    }
}

/// Exponential decay, TensorFlow's `tf.train.exponential_decay`:
/// `initial * decay_rate^(step / decay_steps)`, with the exponent floored if `staircase`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialDecay {
    /// The rate at step 0.
    pub initial: f32,
    /// The number of steps over which the rate is multiplied by `decay_rate`.
    pub decay_steps: u64,
    /// The factor per `decay_steps` steps (e.g. 0.96).
    pub decay_rate: f32,
    /// Decay at discrete intervals (an integer exponent) rather than continuously.
    pub staircase: bool,
}

impl Schedule for ExponentialDecay {
    fn learning_rate(&self, step: u64) -> f32 {
        exponential_decay(self.initial, step, self.decay_steps, self.decay_rate, self.staircase)
    }
}

/// TensorFlow 1.x's `tf.train.exponential_decay(learning_rate, global_step, decay_steps,
/// decay_rate, staircase)`: `learning_rate * decay_rate^(global_step / decay_steps)`,
/// the exponent floored if `staircase`.
pub fn exponential_decay(
    learning_rate: f32,
    global_step: u64,
    decay_steps: u64,
    decay_rate: f32,
    staircase: bool,
) -> f32 {
    let decay_steps = decay_steps.max(1);
    let p = if staircase { (global_step / decay_steps) as f64 } else { global_step as f64 / decay_steps as f64 };
    (f64::from(learning_rate) * f64::from(decay_rate).powf(p)) as f32
}

/// Cosine decay, TensorFlow's `tf.train.cosine_decay` and PyTorch's `CosineAnnealingLR`
/// (with `eta_min = alpha * initial`, `T_max = decay_steps`):
///
/// ```text
/// s = min(step, decay_steps)
/// lr = initial * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)))
/// ```
///
/// After `decay_steps` the rate stays at `alpha * initial` (TensorFlow's behaviour;
/// PyTorch's closed form would rise again along the cosine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineDecay {
    /// The rate at step 0.
    pub initial: f32,
    /// The number of steps from `initial` down to `alpha * initial`.
    pub decay_steps: u64,
    /// The final rate as a fraction of `initial` (0 to decay to zero).
    pub alpha: f32,
}

impl CosineDecay {
    /// Cosine decay from `initial` to `alpha * initial` over `decay_steps` steps.
    pub fn new(initial: f32, decay_steps: u64, alpha: f32) -> Self {
        CosineDecay { initial, decay_steps, alpha }
    }

    /// Cosine decay from `initial` to `min_learning_rate` over `decay_steps` steps
    /// (PyTorch's `eta_min`). `initial` must not be 0 unless `min_learning_rate` is.
    pub fn to_min(initial: f32, decay_steps: u64, min_learning_rate: f32) -> Self {
        let alpha = if initial == 0.0 { 0.0 } else { min_learning_rate / initial };
        CosineDecay { initial, decay_steps, alpha }
    }
}

impl Schedule for CosineDecay {
    fn learning_rate(&self, step: u64) -> f32 {
        cosine_decay(self.initial, step, self.decay_steps, self.alpha)
    }
}

/// TensorFlow 1.x's `tf.train.cosine_decay(learning_rate, global_step, decay_steps,
/// alpha)`; see [`CosineDecay`].
pub fn cosine_decay(learning_rate: f32, global_step: u64, decay_steps: u64, alpha: f32) -> f32 {
    let decay_steps = decay_steps.max(1);
    let s = global_step.min(decay_steps) as f64 / decay_steps as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * s).cos());
    let alpha = f64::from(alpha);
    (f64::from(learning_rate) * (alpha + (1.0 - alpha) * cosine)) as f32
}

/// Piecewise constant, TensorFlow's `tf.train.piecewise_constant`: `values[0]` while
/// `step <= boundaries[0]`, `values[1]` while `boundaries[0] < step <= boundaries[1]`,
/// and so on; `values[n]` after the last boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct PiecewiseConstant {
    boundaries: Vec<u64>,
    values: Vec<f32>,
}

impl PiecewiseConstant {
    /// A piecewise constant schedule. `values` must have one more element than
    /// `boundaries`, which must be increasing; else [`Error::InvalidArgument`].
    pub fn new(boundaries: Vec<u64>, values: Vec<f32>) -> Result<Self, Error> {
        if values.len() != boundaries.len() + 1 {
            return Err(Error::InvalidArgument(format!(
                "piecewise constant schedule: {} boundaries need {} values, found {}",
                boundaries.len(),
                boundaries.len() + 1,
                values.len()
            )));
        }
        if boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidArgument(format!(
                "piecewise constant schedule: boundaries must be increasing, found {boundaries:?}"
            )));
        }
        Ok(PiecewiseConstant { boundaries, values })
    }
}

impl Schedule for PiecewiseConstant {
    fn learning_rate(&self, step: u64) -> f32 {
        // The number of boundaries strictly below `step`.
        let i = self.boundaries.partition_point(|&b| b < step);
        self.values[i]
    }
}

/// Linear warm-up before any other schedule.
///
/// For `step < warmup_steps` the rate ramps linearly up to the wrapped schedule's first
/// rate: `schedule(0) * (step + 1) / warmup_steps`, so the first update already moves
/// (`schedule(0) / warmup_steps`) and update `warmup_steps` (step `warmup_steps - 1`) uses
/// the full rate. From then on the wrapped schedule runs with its step counted from the
/// end of the warm-up: `schedule(step - warmup_steps)`, as Keras's `CosineDecay(...,
/// warmup_steps)` does, so that its `decay_steps` are those after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup<S> {
    /// The schedule that follows the warm-up.
    pub schedule: S,
    /// The number of warm-up steps (0 for none).
    pub warmup_steps: u64,
}

impl<S: Schedule> Warmup<S> {
    /// `schedule` preceded by `warmup_steps` steps of linear warm-up.
    pub fn new(schedule: S, warmup_steps: u64) -> Self {
        Warmup { schedule, warmup_steps }
    }
}

impl<S: Schedule> Schedule for Warmup<S> {
    fn learning_rate(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            let target = f64::from(self.schedule.learning_rate(0));
            (target * (step + 1) as f64 / self.warmup_steps as f64) as f32
        } else {
            self.schedule.learning_rate(step - self.warmup_steps)
        }
    }
}

/// A schedule from a closure `Fn(step) -> learning rate`, e.g. PyTorch's `LambdaLR`.
#[derive(Debug, Clone, Copy)]
pub struct FromFn<F>(pub F);

/// A schedule from a closure: `from_fn(|step| 0.1 / (1.0 + step as f32 / 1000.0))`.
pub fn from_fn<F: Fn(u64) -> f32>(f: F) -> FromFn<F> {
    FromFn(f)
}

impl<F: Fn(u64) -> f32> Schedule for FromFn<F> {
    fn learning_rate(&self, step: u64) -> f32 {
        (self.0)(step)
    }
}
