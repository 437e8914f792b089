//! Params from any safetensors file: weights trained elsewhere (PyTorch, Keras, JAX, an
//! older modelc model), loaded into a modelc model so that it can be served in Rust.
//!
//! A generated model has `load_params(&mut self, path, &NameMap)` (params only: the
//! optimizer's slots and the global step are untouched) and
//! `from_safetensors(path, &NameMap) -> Result<Self>` (a fresh model, global step 0).
//! Both call [`read_params`], which checks the whole file before anything is written.
//!
//! # Names and layouts
//!
//! A [`NameMap`] says, for each param, which tensor of the file holds it and how the
//! file's axes are laid out. A param the map does not name is read from the tensor of its
//! own name, as it is (so `NameMap::new()` reads a file whose names are the params').
//!
//! Transposes are explicit, never guessed: PyTorch's `nn.Linear(in, out).weight` is
//! `[out, in]` (it computes `x @ W.T`), while modelc's `matmul(x, w)` param is
//! `[in, out]`, so such a weight needs [`NameMap::transposed`] (or the
//! [`NameMap::pytorch_linear`] convention, which says it for you). Keras' `Dense` kernel
//! is already `[in, out]` ([`NameMap::keras_dense`]). A square weight would load either
//! way without a shape error, which is why the map never transposes on its own; when a
//! non-square tensor arrives in the transpose of the expected shape, the error says so.
//!
//! # Dtypes
//!
//! - `F32` is read as it is.
//! - `F16` and `BF16` are widened to `f32` exactly (every such value is an `f32`).
//! - `F64` is rounded to the nearest `f32` (ties to even, Rust's `as f32`); a finite
//!   value beyond `f32`'s range is refused rather than turned into an infinity.
//! - Any other dtype (integers, booleans, 8-bit floats) is refused, naming the tensor.
//!
//! A NaN or an infinity in a param is refused too: it could only make every fetch NaN.
//!
//! # Errors
//!
//! One [`Error::Checkpoint`] lists every difference between the file and the model at
//! once: missing tensors, tensors of another shape (after the map's transpose), refused
//! dtypes and values, tensors the map does not use (unless [`NameMap::ignore_unused`]),
//! and mistakes in the map itself (a param the model does not have, a param mapped twice,
//! an axis permutation of the wrong rank). Nothing is returned, so nothing is written.
//! A file that is not safetensors at all is the same errors as `Model::load`'s
//! (`docs/checkpoints.md`); a missing file is [`Error::Io`]. No file makes it panic.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use ndarray::{Array, ArrayD, Dimension, IxDyn};
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::{checkpoint_error, describe, list_names, FORMAT};
use crate::Error;

/// How the tensors of a safetensors file map onto a model's params: which tensor holds
/// each param, and how to reorder its axes.
///
/// Built with chained calls; a param the map does not name is read from the tensor of its
/// own name, unpermuted.
///
/// ```
/// # use modelc_runtime as modelc; // the facade re-exports this module as `modelc::import`
/// use modelc::import::NameMap; // also `modelc::NameMap`
///
/// // A PyTorch `nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))`,
/// // saved with `safetensors.torch.save_file(model.state_dict(), path)`:
/// let map = NameMap::new().pytorch_linear("w1", "b1", "0").pytorch_linear("w2", "b2", "2");
///
/// // The same, spelled out: each weight is stored [out, in], so it is transposed.
/// let same = NameMap::new()
///     .map("w1", "0.weight").transposed()
///     .map("b1", "0.bias")
///     .map("w2", "2.weight").transposed()
///     .map("b2", "2.bias");
/// assert_eq!(map, same);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameMap {
    entries: Vec<Entry>,
    ignore_unused: bool,
}

/// One mapping: param `param` is tensor `tensor`, with its axes reordered by `axes`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    param: String,
    tensor: String,
    axes: Axes,
}

/// How a tensor's axes become a param's.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Axes {
    /// As stored.
    Same,
    /// All axes reversed (NumPy's `.T`; for a matrix, the transpose).
    Reversed,
    /// Param axis `i` is the tensor's axis `p[i]` (NumPy's `np.transpose(t, p)`).
    Permuted(Vec<usize>),
}

impl NameMap {
    /// The identity map: every param from the tensor of its own name, as stored. This
    /// reads a modelc checkpoint's params (its optimizer slots are skipped) or any file
    /// written with the params' names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Param `param` is the file's tensor `tensor`, as stored (chain
    /// [`transposed`](Self::transposed) or [`permuted`](Self::permuted) to reorder it).
    pub fn map(mut self, param: impl Into<String>, tensor: impl Into<String>) -> Self {
        self.entries.push(Entry { param: param.into(), tensor: tensor.into(), axes: Axes::Same });
        self
    }

    /// The last mapping's tensor is stored with its axes reversed: for a matrix, the
    /// transpose (PyTorch's `nn.Linear.weight` is `[out, in]`; modelc's `matmul(x, w)`
    /// param is `[in, out]`). Without a mapping before it, it applies to nothing and
    /// [`read_params`] reports the mistake.
    pub fn transposed(self) -> Self {
        self.with_last_axes(Axes::Reversed)
    }

    /// The last mapping's param axis `i` is the tensor's axis `axes[i]`, as NumPy's
    /// `np.transpose(tensor, axes)`: `permuted([1, 0])` is [`transposed`](Self::transposed)
    /// for a matrix. `axes` must be a permutation of `0..rank`; [`read_params`] reports it
    /// otherwise.
    pub fn permuted(self, axes: impl Into<Vec<usize>>) -> Self {
        self.with_last_axes(Axes::Permuted(axes.into()))
    }

    fn with_last_axes(mut self, axes: Axes) -> Self {
        match self.entries.last_mut() {
            Some(e) => e.axes = axes,
            // Reported by read_params as a mistake in the map (it has no param to name).
            None => self.entries.push(Entry { param: String::new(), tensor: String::new(), axes }),
        }
        self
    }

    /// PyTorch's `nn.Linear` convention for the module at `module` (a state-dict prefix
    /// such as `"fc1"`, `"0"` or `"encoder.layers.0.linear1"`): param `weight` is
    /// `"<module>.weight"` transposed (stored `[out, in]`), param `bias` is
    /// `"<module>.bias"`.
    pub fn pytorch_linear(self, weight: impl Into<String>, bias: impl Into<String>, module: &str) -> Self {
        self.map(weight, format!("{module}.weight")).transposed().map(bias, format!("{module}.bias"))
    }

    /// Keras' `Dense` convention for the layer `layer` (e.g. `"dense"`, `"dense_1"`): param
    /// `kernel` is `"<layer>/kernel"` and param `bias` is `"<layer>/bias"`, both as stored
    /// (a Dense kernel is already `[in, out]`, as modelc's).
    pub fn keras_dense(self, kernel: impl Into<String>, bias: impl Into<String>, layer: &str) -> Self {
        self.map(kernel, format!("{layer}/kernel")).map(bias, format!("{layer}/bias"))
    }

    /// Tensors of the file that no param reads are not an error (by default they are
    /// listed: a state dict with more layers than the model is usually the wrong file).
    pub fn ignore_unused(mut self) -> Self {
        self.ignore_unused = true;
        self
    }
}

/// The largest finite `f32`, as `f64`: beyond it, rounding to `f32` gives an infinity.
const F32_MAX: f64 = f32::MAX as f64;

/// Reads the params of model `model` (its struct name, for messages), declared as
/// `params` (name and shape, in declaration order), from the safetensors file at `path`
/// through `map`; returns each param's values in row-major order of its declared shape,
/// in `params`' order.
///
/// The file is checked whole first: any difference, however many, is one
/// [`Error::Checkpoint`] listing them all (see the module docs), and nothing is
/// returned. A modelc checkpoint's optimizer slots (`optimizer/...` in a file whose
/// metadata says `format: modelc`) are skipped: this loads params only.
pub fn read_params(
    path: &Path,
    model: &str,
    params: &[(&str, &[usize])],
    map: &NameMap,
) -> Result<Vec<Vec<f32>>, Error> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    params_from_bytes(&bytes, path, model, params, map)
}

/// [`read_params`] on the bytes of a file (`path` names it in errors): for weights
/// embedded with `include_bytes!` or fetched by the caller.
pub fn params_from_bytes(
    bytes: &[u8],
    path: &Path,
    model: &str,
    params: &[(&str, &[usize])],
    map: &NameMap,
) -> Result<Vec<Vec<f32>>, Error> {
    let (header_len, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| checkpoint_error(path, describe(&e, bytes.len())))?;
    // read_metadata has checked that the offsets tile the rest of the file exactly, and
    // that each tensor's bytes fit its shape and dtype.
    let buffer = bytes.get(8 + header_len..).unwrap_or_default();
    let is_modelc = header.metadata().as_ref().and_then(|m| m.get("format")).is_some_and(|f| f == FORMAT);

    let mut diffs = Vec::new();
    let sources = sources(map, model, params, &mut diffs);

    let mut used = BTreeSet::new();
    let mut values = Vec::with_capacity(params.len());
    let mut any_missing = false;
    for (&(param, shape), (tensor, axes)) in params.iter().zip(&sources) {
        let Some(info) = header.info(tensor) else {
            any_missing = true;
            let what = if tensor == param { String::new() } else { format!(" for param `{param}`") };
            diffs.push(format!("missing tensor `{tensor}`{what} ({shape:?})"));
            continue;
        };
        used.insert(tensor.as_str());
        let (start, end) = info.data_offsets;
        let data = buffer.get(start..end).unwrap_or_default();
        match read_one(param, tensor, info, data, axes, shape) {
            Ok(v) => values.push(v),
            Err(mut d) => diffs.append(&mut d),
        }
    }
    let mut unused: Vec<&str> = Vec::new();
    let infos = header.tensors();
    let mut names: Vec<&str> = infos.keys().map(String::as_str).collect();
    names.sort_unstable();
    for name in &names {
        let slot = is_modelc && name.starts_with("optimizer/");
        if !slot && !used.contains(name) {
            unused.push(name);
        }
    }
    if !map.ignore_unused {
        for name in &unused {
            let what = header.info(name).map(|i| format!(" ({:?} {:?})", i.dtype, i.shape)).unwrap_or_default();
            diffs.push(format!("unused tensor `{name}`{what}"));
        }
    }
    if diffs.is_empty() {
        return Ok(values);
    }
    let mut hints = Vec::new();
    if any_missing {
        hints.push(format!("the file holds {}", list_names(&names)));
    }
    if !map.ignore_unused && !unused.is_empty() {
        hints.push("`NameMap::ignore_unused()` loads a file with more tensors than the model".to_string());
    }
    let n = diffs.len();
    let s = if n == 1 { "" } else { "s" };
    let hints = if hints.is_empty() { String::new() } else { format!(" ({})", hints.join("; ")) };
    Err(checkpoint_error(
        path,
        format!("{n} difference{s} from the params of model `{model}`: {}{hints}", diffs.join("; ")),
    ))
}

/// The tensor and axis order of each param (in `params`' order), and the map's mistakes.
fn sources<'m>(
    map: &'m NameMap,
    model: &str,
    params: &[(&str, &[usize])],
    diffs: &mut Vec<String>,
) -> Vec<(String, &'m Axes)> {
    static SAME: Axes = Axes::Same;
    let mut out: Vec<(String, &Axes)> = params.iter().map(|&(p, _)| (p.to_string(), &SAME)).collect();
    let mut mapped = BTreeSet::new();
    for e in &map.entries {
        if e.param.is_empty() {
            diffs.push("the map's `transposed()` or `permuted(..)` follows no `map(param, tensor)`".to_string());
            continue;
        }
        let Some(i) = params.iter().position(|&(p, _)| p == e.param) else {
            let names: Vec<&str> = params.iter().map(|&(p, _)| p).collect();
            let known =
                if names.is_empty() { "no params".to_string() } else { format!("params `{}`", names.join("`, `")) };
            diffs.push(format!(
                "the map names param `{}`, which model `{model}` does not have (it has {known})",
                e.param
            ));
            continue;
        };
        if !mapped.insert(e.param.as_str()) {
            diffs.push(format!("the map maps param `{}` twice", e.param));
            continue;
        }
        out[i] = (e.tensor.clone(), &e.axes);
    }
    out
}

/// One param's values from its tensor, or every difference of that tensor.
fn read_one(
    param: &str,
    tensor: &str,
    info: &TensorInfo,
    data: &[u8],
    axes: &Axes,
    expected: &[usize],
) -> Result<Vec<f32>, Vec<String>> {
    let rank = info.shape.len();
    let name =
        if tensor == param { format!("tensor `{tensor}`") } else { format!("tensor `{tensor}` for param `{param}`") };
    let mut diffs = Vec::new();
    let perm: Option<Vec<usize>> = match axes {
        Axes::Same => None,
        Axes::Reversed => Some((0..rank).rev().collect()),
        Axes::Permuted(p) => {
            let mut sorted = p.clone();
            sorted.sort_unstable();
            if !sorted.iter().copied().eq(0..rank) {
                diffs.push(format!("{name}: the map's axes {p:?} are not a permutation of the tensor's {rank} axes"));
                return Err(diffs);
            }
            Some(p.clone())
        }
    };
    let shape: Vec<usize> = match &perm {
        None => info.shape.clone(),
        Some(p) => p.iter().map(|&a| info.shape[a]).collect(),
    };
    if shape != expected {
        let stored = match axes {
            Axes::Same => format!("has shape {:?}", info.shape),
            Axes::Reversed => format!("has shape {:?}, {shape:?} transposed", info.shape),
            Axes::Permuted(p) => format!("has shape {:?}, {shape:?} permuted by {p:?}", info.shape),
        };
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        let hint = if rank >= 2 && reversed == expected && shape != reversed {
            match axes {
                Axes::Same => {
                    " (its transpose: a PyTorch `nn.Linear` weight is stored [out, in]; map it with `.transposed()`)"
                }
                _ => " (its transpose: drop the map's `.transposed()`)",
            }
        } else {
            ""
        };
        diffs.push(format!("{name} {stored}, expected {expected:?}{hint}"));
    }
    let decoded = decode(info.dtype, data);
    let values = match decoded {
        Ok(v) => v,
        Err(why) => {
            diffs.push(format!("{name} {why}"));
            return Err(diffs);
        }
    };
    if !diffs.is_empty() {
        return Err(diffs);
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(vec![format!("{name} has a NaN or an infinity (at index {i}, row-major)")]);
    }
    match perm {
        None => Ok(values),
        Some(p) => match ArrayD::from_shape_vec(IxDyn(&info.shape), values) {
            Ok(a) => Ok(a.permuted_axes(IxDyn(&p)).iter().copied().collect()),
            Err(e) => Err(vec![format!("{name}: its data does not fit shape {:?} ({e})", info.shape)]),
        },
    }
}

/// A tensor's little-endian bytes as `f32`s, or why its dtype or a value is refused.
fn decode(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, String> {
    match dtype {
        Dtype::F32 => Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        Dtype::F16 => Ok(data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
        Dtype::BF16 => Ok(data.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
        Dtype::F64 => data
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                // Round to nearest; a finite value that rounds to an infinity is refused
                // (non-finite values are refused by the caller, with their index).
                if v.is_finite() && v.abs() > F32_MAX && (v as f32).is_infinite() {
                    Err(format!("(F64) has {v:e} at index {i} (row-major), beyond f32's range"))
                } else {
                    Ok(v as f32)
                }
            })
            .collect(),
        other => Err(format!(
            "has dtype {other:?}; params load from F32, F64 (rounded to nearest), F16 or BF16 (widened exactly)"
        )),
    }
}

/// An IEEE 754 half-precision value, widened exactly.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man * 2^-24, exact in f32 (where it is normal).
        (0, _) => {
            let v = man as f32 / 16_777_216.0;
            return if sign != 0 { -v } else { v };
        }
        // Infinity or NaN (the payload is kept in the top of f32's mantissa).
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// A bfloat16 value (the top half of an `f32`), widened exactly.
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// A param array of the declared shape from the values [`read_params`] returned (the
/// dimensionality `D` is the param field's). Not expected to fail after `read_params`;
/// an `Err`, not a panic, if it does.
pub fn into_param<D: Dimension>(
    values: Option<Vec<f32>>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Array<f32, D>, Error> {
    let values = values.ok_or_else(|| checkpoint_error(path, format!("no values were read for param `{name}`")))?;
    ArrayD::from_shape_vec(IxDyn(shape), values).ok().and_then(|a| a.into_dimensionality::<D>().ok()).ok_or_else(|| {
        checkpoint_error(path, format!("the values read for param `{name}` do not fit its shape {shape:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of a half-precision bit pattern by its definition, in f64:
    /// (-1)^s * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 when e = 0.
    fn f16_reference(h: u16) -> f64 {
        let s = if h >> 15 == 1 { -1.0 } else { 1.0 };
        let e = i32::from((h >> 10) & 0x1f);
        let m = f64::from(h & 0x3ff);
        match e {
            0 => s * m / 1024.0 * 2f64.powi(-14),
            0x1f if m == 0.0 => s * f64::INFINITY,
            0x1f => f64::NAN,
            _ => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
        }
    }

    #[test]
    fn every_f16_widens_exactly() {
        for h in 0..=u16::MAX {
            let got = f16_to_f32(h);
            let want = f16_reference(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(f64::from(got), want, "{h:#06x}");
                assert_eq!(got.is_sign_negative(), h >> 15 == 1, "{h:#06x}: the sign (also of zero)");
            }
        }
    }

    #[test]
    fn every_bf16_widens_exactly() {
        for b in 0..=u16::MAX {
            let got = bf16_to_f32(b);
            // bf16 is f32 with the low 16 mantissa bits dropped: sign, 8-bit exponent, 7-bit mantissa.
            let s = if b >> 15 == 1 { -1.0 } else { 1.0 };
            let e = i32::from((b >> 7) & 0xff);
            let m = f64::from(b & 0x7f);
            let want = match e {
                0 => s * m / 128.0 * 2f64.powi(-126),
                0xff if m == 0.0 => s * f64::INFINITY,
                0xff => f64::NAN,
                _ => s * (1.0 + m / 128.0) * 2f64.powi(e - 127),
            };
            if want.is_nan() {
                assert!(got.is_nan(), "{b:#06x}");
            } else {
                assert_eq!(f64::from(got), want, "{b:#06x}");
            }
        }
    }

    #[test]
    fn f64_rounds_to_nearest_and_refuses_overflow() {
        let bytes = |vs: &[f64]| vs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        // 1 + 2^-24 is halfway between 1 and 1 + 2^-23: ties to even gives 1.
        let tie = 1.0 + 2f64.powi(-24);
        let above = 1.0 + 2f64.powi(-24) + 2f64.powi(-40);
        assert_eq!(decode(Dtype::F64, &bytes(&[tie, above, 0.1])).unwrap(), vec![1.0, 1.0 + f32::EPSILON, 0.1f32]);
        // Just past f32::MAX but rounding to it is fine; 1e39 is refused.
        assert_eq!(decode(Dtype::F64, &bytes(&[F32_MAX * (1.0 + 2f64.powi(-30))])).unwrap(), vec![f32::MAX]);
        let e = decode(Dtype::F64, &bytes(&[0.0, -1e39])).unwrap_err();
        assert!(e.contains("-1e39 at index 1") && e.contains("beyond f32's range"), "{e}");
    }

    #[test]
    fn permuted_axes_follow_numpy() {
        // A [2, 3, 4] tensor 0..24 permuted by [2, 0, 1]: out[i][j][k] = t[j][k][i].
        let info = TensorInfo { dtype: Dtype::F32, shape: vec![2, 3, 4], data_offsets: (0, 96) };
        let data: Vec<u8> = (0..24).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let out = read_one("p", "t", &info, &data, &Axes::Permuted(vec![2, 0, 1]), &[4, 2, 3]).unwrap();
        let want: Vec<f32> =
            (0..4).flat_map(|i| (0..2).flat_map(move |j| (0..3).map(move |k| (j * 12 + k * 4 + i) as f32))).collect();
        assert_eq!(out, want);
        let e = read_one("p", "t", &info, &data, &Axes::Permuted(vec![0, 0, 1]), &[2, 2, 3]).unwrap_err();
        assert!(e[0].contains("not a permutation"), "{e:?}");
    }
}
