//! Deterministic, seeded initializers: what `param w: [784, 10] = glorot_uniform;` runs.
//!
//! # Reproducibility
//!
//! The values of a param depend only on the model's seed, the param's name, its
//! initializer and its shape: each param draws from its own ChaCha8 stream (see
//! [`stream`]), keyed by the seed and a stable 64-bit FNV-1a hash of the name. Adding,
//! removing or reordering params therefore leaves the values of the others unchanged,
//! and the same `(seed, name)` gives the same bits on every platform and every Rust
//! release (ChaCha8 is portable; std's `DefaultHasher` is deliberately not used, as its
//! output may change between releases).
//!
//! Values are drawn in row-major order: element `i` of `data` is the `i`-th value the
//! distribution produces (for truncated normals, the `i`-th accepted draw). Every
//! random value is computed in `f64` and rounded once to `f32`.
//!
//! # Fans
//!
//! The variance-scaling initializers ([`Init::GlorotUniform`], [`Init::GlorotNormal`],
//! [`Init::HeNormal`]) use TensorFlow/Keras's fan conventions (see [`fans`]): a matrix
//! is `[fan_in, fan_out]`, because models compute `matmul(x, w)` with `w: [in, out]`.
//! (PyTorch's `nn.Linear` stores `[out, in]`; its fans are the same numbers.)

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// An initializer, as the `= INIT` of a `param` item names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (`zeros`).
    Zeros,
    /// All ones (`ones`).
    Ones,
    /// Every element set to one value (`constant(v)`).
    Constant(f32),
    /// Uniform on the half-open interval `[low, high)` (`uniform(low = a, high = b)`).
    ///
    /// If `low >= high` (which the macro rejects) or either bound is not finite, every
    /// element is set to `low`.
    Uniform {
        /// The lower bound, included.
        low: f32,
        /// The upper bound, excluded.
        high: f32,
    },
    /// Normal: `mean + std * z` with `z ~ N(0, 1)` (`normal(mean = m, std = s)`).
    Normal {
        /// The mean.
        mean: f32,
        /// The standard deviation of the distribution.
        std: f32,
    },
    /// TensorFlow's `truncated_normal`: `mean + std * z` where `z ~ N(0, 1)` is drawn
    /// again whenever `|z| > 2`, so every value is within two standard deviations of the
    /// mean (`truncated_normal(mean = m, std = s)`).
    ///
    /// As in TensorFlow, `std` is the standard deviation *before* truncation; the values'
    /// actual standard deviation is `0.87962566 * std`.
    TruncatedNormal {
        /// The mean.
        mean: f32,
        /// The standard deviation of the normal before truncation.
        std: f32,
    },
    /// Glorot/Xavier uniform (Keras `glorot_uniform`, PyTorch `xavier_uniform_`):
    /// `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`, so the variance is
    /// `2 / (fan_in + fan_out)`.
    GlorotUniform,
    /// Glorot/Xavier normal, as Keras (TF 2) `glorot_normal`: a normal truncated at two
    /// standard deviations whose *actual* standard deviation is
    /// `sqrt(2 / (fan_in + fan_out))`, i.e. [`Init::TruncatedNormal`] with
    /// `std = sqrt(2 / (fan_in + fan_out)) / 0.87962566`.
    ///
    /// Truncated rather than plain (PyTorch's `xavier_normal_`) so that no weight starts
    /// as an outlier; the variance is Glorot's either way.
    GlorotNormal,
    /// He/Kaiming normal, as Keras (TF 2) `he_normal`: a normal truncated at two
    /// standard deviations whose *actual* standard deviation is `sqrt(2 / fan_in)`, i.e.
    /// [`Init::TruncatedNormal`] with `std = sqrt(2 / fan_in) / 0.87962566`.
    ///
    /// PyTorch's `kaiming_normal_` draws a plain normal with the same variance. modelc
    /// truncates, like Keras, for the same reason as [`Init::GlorotNormal`] (bounded
    /// initial weights, same variance), and so that the two normal variance-scaling
    /// initializers behave alike. TF 1.x's `he_normal` truncated without the 0.8796
    /// correction, giving a variance 23% below He's `2 / fan_in`; modelc does not.
    HeNormal,
}

/// The standard deviation of a unit normal truncated to `[-2, 2]`:
/// Keras's correction factor for truncated variance-scaling initializers.
pub const TRUNCATED_NORMAL_STD: f64 = 0.879_625_661_034_239_8;

/// `(fan_in, fan_out)` of a param of `shape`, by TensorFlow/Keras's conventions:
///
/// - rank 0 (a scalar): `(1, 1)`;
/// - rank 1 (`[n]`, e.g. a bias): `(n, n)`;
/// - rank 2 (`[in, out]`, the `w` of `matmul(x, w)`): `(in, out)`;
/// - rank > 2 (Keras's convolution kernels, `[..., in, out]`): the receptive field is
///   the product of all dimensions but the last two, and the fans are
///   `(in * receptive_field, out * receptive_field)`.
pub fn fans(shape: &[usize]) -> (f32, f32) {
    match *shape {
        [] => (1.0, 1.0),
        [n] => (n as f32, n as f32),
        [.., fan_in, fan_out] => {
            let receptive_field: usize = shape[..shape.len() - 2].iter().product();
            ((fan_in * receptive_field) as f32, (fan_out * receptive_field) as f32)
        }
    }
}

/// The 64-bit FNV-1a hash of `s`: stable across platforms and Rust releases.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The random stream of the param `name` for model seed `seed`.
///
/// A ChaCha8 generator whose 32-byte key is the seed (8 bytes, little-endian), the
/// FNV-1a hash of the name (8 bytes, little-endian) and the tag `modelc.init.v1`
/// (padded with zeros to 16 bytes). Distinct `(seed, name)` pairs therefore get
/// independent streams (barring a 64-bit hash collision between two names).
pub fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&fnv1a(name).to_le_bytes());
    let tag = b"modelc.init.v1";
    key[16..16 + tag.len()].copy_from_slice(tag);
    ChaCha8Rng::from_seed(key)
}

/// Fills `data` (row-major, of `shape`) with the initial values of the param `name` of a
/// model created with `seed`.
///
/// `data.len()` should be the product of `shape` (checked in debug builds); `shape` only
/// matters to the variance-scaling initializers, through [`fans`]. The result depends
/// only on `(init, shape, seed, name)`; see the module documentation. Never panics
/// (degenerate arguments, which the macro rejects at compile time, give constant fills
/// as documented on each variant).
pub fn fill(init: Init, shape: &[usize], data: &mut [f32], seed: u64, name: &str) {
    debug_assert_eq!(data.len(), shape.iter().product::<usize>(), "param `{name}`: data does not fit shape {shape:?}");
    let mut rng = stream(seed, name);
    let (fan_in, fan_out) = fans(shape);
    let (fan_in, fan_out) = (f64::from(fan_in), f64::from(fan_out));
    match init {
        Init::Zeros => data.fill(0.0),
        Init::Ones => data.fill(1.0),
        Init::Constant(v) => data.fill(v),
        Init::Uniform { low, high } => fill_uniform(&mut rng, data, low, high),
        Init::Normal { mean, std } => {
            let (mean, std) = (f64::from(mean), f64::from(std));
            for v in data.iter_mut() {
                let z: f64 = rng.sample(StandardNormal);
                *v = (mean + std * z) as f32;
            }
        }
        Init::TruncatedNormal { mean, std } => fill_truncated(&mut rng, data, f64::from(mean), f64::from(std)),
        Init::GlorotUniform => {
            let limit = (6.0 / (fan_in + fan_out)).sqrt() as f32;
            fill_uniform(&mut rng, data, -limit, limit);
        }
        Init::GlorotNormal => {
            let std = (2.0 / (fan_in + fan_out)).sqrt() / TRUNCATED_NORMAL_STD;
            fill_truncated(&mut rng, data, 0.0, std);
        }
        Init::HeNormal => {
            let std = (2.0 / fan_in).sqrt() / TRUNCATED_NORMAL_STD;
            fill_truncated(&mut rng, data, 0.0, std);
        }
    }
}

/// `U[low, high)`: `low + (high - low) * u` in f64 with `u` uniform on `[0, 1)`, redrawn
/// in the rare case that rounding to f32 gives `high`.
fn fill_uniform(rng: &mut ChaCha8Rng, data: &mut [f32], low: f32, high: f32) {
    if !(low < high && low.is_finite() && high.is_finite()) {
        data.fill(low);
        return;
    }
    let (lo, width) = (f64::from(low), f64::from(high) - f64::from(low));
    for v in data.iter_mut() {
        *v = loop {
            let u: f64 = rng.gen();
            let x = (lo + width * u) as f32;
            if x < high {
                break x;
            }
        };
    }
}

/// `mean + std * z`, `z ~ N(0, 1)` redrawn while `|z| > 2` (TensorFlow's
/// `truncated_normal`).
fn fill_truncated(rng: &mut ChaCha8Rng, data: &mut [f32], mean: f64, std: f64) {
    for v in data.iter_mut() {
        let z = loop {
            let z: f64 = rng.sample(StandardNormal);
            if z.abs() <= 2.0 {
                break z;
            }
        };
        *v = (mean + std * z) as f32;
    }
}
