//! Deterministic, seeded initializers (interim version; see docs/decisions.md).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// An initializer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// One value.
    Constant(f32),
    /// U(low, high).
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// N(mean, std).
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// N(mean, std) resampled beyond two standard deviations (TensorFlow).
    TruncatedNormal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Glorot/Xavier uniform.
    GlorotUniform,
    /// Glorot/Xavier normal.
    GlorotNormal,
    /// He/Kaiming normal.
    HeNormal,
}

/// (fan_in, fan_out) of a shape: [in, out] for matrices.
pub fn fans(shape: &[usize]) -> (f32, f32) {
    match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f32, shape[0] as f32),
        n => {
            let rf: usize = shape[..n - 2].iter().product();
            ((shape[n - 2] * rf) as f32, (shape[n - 1] * rf) as f32)
        }
    }
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn truncated(rng: &mut ChaCha8Rng, mean: f32, std: f32) -> f32 {
    let n = Normal::new(0.0f32, 1.0).expect("unit normal");
    loop {
        let v = n.sample(rng);
        if v.abs() <= 2.0 {
            return mean + std * v;
        }
    }
}

/// Fills `data` (row-major, of `shape`) for the param `name` from `seed`.
pub fn fill(init: Init, shape: &[usize], data: &mut [f32], seed: u64, name: &str) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name));
    let (fan_in, fan_out) = fans(shape);
    match init {
        Init::Zeros => data.fill(0.0),
        Init::Ones => data.fill(1.0),
        Init::Constant(v) => data.fill(v),
        Init::Uniform { low, high } => {
            let u = Uniform::new(low, high);
            data.iter_mut().for_each(|v| *v = u.sample(&mut rng));
        }
        Init::Normal { mean, std } => {
            let n = Normal::new(mean, std).unwrap_or_else(|_| Normal::new(mean, 0.0).expect("zero std"));
            data.iter_mut().for_each(|v| *v = n.sample(&mut rng));
        }
        Init::TruncatedNormal { mean, std } => data.iter_mut().for_each(|v| *v = truncated(&mut rng, mean, std)),
        Init::GlorotUniform => {
            let l = (6.0 / (fan_in + fan_out)).sqrt();
            let u = Uniform::new_inclusive(-l, l);
            data.iter_mut().for_each(|v| *v = u.sample(&mut rng));
        }
        Init::GlorotNormal => {
            let std = (2.0 / (fan_in + fan_out)).sqrt() / 0.879_625_7;
            data.iter_mut().for_each(|v| *v = truncated(&mut rng, 0.0, std));
        }
        Init::HeNormal => {
            let std = (2.0 / fan_in).sqrt() / 0.879_625_7;
            data.iter_mut().for_each(|v| *v = truncated(&mut rng, 0.0, std));
        }
    }
}
