//! Optimizers' update rules (interim version; see docs/decisions.md).

/// The rule and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// Plain gradient descent.
    Sgd,
    /// Momentum (PyTorch form).
    Momentum {
        /// Velocity decay.
        momentum: f32,
        /// Nesterov's variant.
        nesterov: bool,
    },
    /// Adam (PyTorch form).
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator guard.
        epsilon: f32,
    },
    /// RMSProp (PyTorch form).
    RmsProp {
        /// Squared-gradient decay.
        rho: f32,
        /// Denominator guard.
        epsilon: f32,
        /// Momentum.
        momentum: f32,
        /// Centered variant.
        centered: bool,
    },
    /// Adagrad (PyTorch form).
    Adagrad {
        /// Initial accumulator.
        initial_accumulator_value: f32,
        /// Denominator guard.
        epsilon: f32,
    },
}

/// An optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Optimizer {
    /// The rule.
    pub kind: OptimizerKind,
    /// The learning rate.
    pub learning_rate: f32,
    /// Clip gradients by global norm.
    pub clip_norm: Option<f32>,
    /// L2 decay added to gradients.
    pub weight_decay: f32,
}

/// The global L2 norm of all gradients.
pub fn global_norm(grads: &[&[f32]]) -> f32 {
    grads.iter().flat_map(|g| g.iter()).map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt() as f32
}

impl Optimizer {
    /// Names of the per-param slots.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Sgd => &[],
            OptimizerKind::Momentum { .. } => &["velocity"],
            OptimizerKind::Adam { .. } => &["m", "v"],
            OptimizerKind::RmsProp { momentum, centered, .. } => match (momentum > 0.0, centered) {
                (false, false) => &["square_avg"],
                (true, false) => &["square_avg", "momentum_buffer"],
                (false, true) => &["square_avg", "grad_avg"],
                (true, true) => &["square_avg", "momentum_buffer", "grad_avg"],
            },
            OptimizerKind::Adagrad { .. } => &["sum"],
        }
    }

    /// Fresh slots.
    pub fn new_slots(&self, len: usize) -> Vec<Vec<f32>> {
        let init = match self.kind {
            OptimizerKind::Adagrad { initial_accumulator_value, .. } => initial_accumulator_value,
            _ => 0.0,
        };
        self.slot_names().iter().enumerate().map(|(i, _)| vec![if i == 0 { init } else { 0.0 }; len]).collect()
    }

    /// The clipping factor.
    pub fn clip_scale(&self, grads: &[&[f32]]) -> f32 {
        match self.clip_norm {
            Some(c) => {
                let n = global_norm(grads);
                if n > c {
                    c / n
                } else {
                    1.0
                }
            }
            None => 1.0,
        }
    }

    /// One update of one param.
    pub fn update(&self, param: &mut [f32], grad: &[f32], slots: &mut [Vec<f32>], grad_scale: f32, step: u64) {
        let lr = self.learning_rate;
        let wd = self.weight_decay;
        let g = |i: usize, p: f32| grad[i] * grad_scale + wd * p;
        match self.kind {
            OptimizerKind::Sgd => {
                for (i, p) in param.iter_mut().enumerate() {
                    *p -= lr * g(i, *p);
                }
            }
            OptimizerKind::Momentum { momentum, nesterov } => {
                let v = &mut slots[0];
                for (i, p) in param.iter_mut().enumerate() {
                    let gi = g(i, *p);
                    v[i] = momentum * v[i] + gi;
                    let d = if nesterov { gi + momentum * v[i] } else { v[i] };
                    *p -= lr * d;
                }
            }
            OptimizerKind::Adam { beta1, beta2, epsilon } => {
                let (m, rest) = slots.split_at_mut(1);
                let (m, v) = (&mut m[0], &mut rest[0]);
                let t = step as i32;
                let bc1 = 1.0 - beta1.powi(t);
                let bc2 = 1.0 - beta2.powi(t);
                for (i, p) in param.iter_mut().enumerate() {
                    let gi = g(i, *p);
                    m[i] = beta1 * m[i] + (1.0 - beta1) * gi;
                    v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi;
                    *p -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + epsilon);
                }
            }
            OptimizerKind::RmsProp { rho, epsilon, momentum, centered } => {
                for i in 0..param.len() {
                    let gi = g(i, param[i]);
                    slots[0][i] = rho * slots[0][i] + (1.0 - rho) * gi * gi;
                    let mut avg = slots[0][i];
                    if centered {
                        let k = slots.len() - 1;
                        slots[k][i] = rho * slots[k][i] + (1.0 - rho) * gi;
                        avg -= slots[k][i] * slots[k][i];
                    }
                    let d = gi / (avg.sqrt() + epsilon);
                    if momentum > 0.0 {
                        slots[1][i] = momentum * slots[1][i] + d;
                        param[i] -= lr * slots[1][i];
                    } else {
                        param[i] -= lr * d;
                    }
                }
            }
            OptimizerKind::Adagrad { epsilon, .. } => {
                let s = &mut slots[0];
                for (i, p) in param.iter_mut().enumerate() {
                    let gi = g(i, *p);
                    s[i] += gi * gi;
                    *p -= lr * gi / (s[i].sqrt() + epsilon);
                }
            }
        }
    }
}
