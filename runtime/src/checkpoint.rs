//! safetensors checkpoints (interim version; see docs/decisions.md).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::Error;

/// One tensor to save.
pub struct TensorData<'a> {
    /// Its key.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub data: &'a [f32],
}

/// A validated checkpoint.
pub struct Checkpoint {
    /// The model name stored in it.
    pub model: String,
    /// The global step stored in it.
    pub global_step: u64,
    /// Tensors by name.
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn ck_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

/// Saves atomically (temporary file, then rename).
pub fn save(path: &Path, model: &str, global_step: u64, tensors: &[TensorData<'_>]) -> Result<(), Error> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let mut views = Vec::new();
    for (t, b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), b).map_err(|e| ck_err(path, e.to_string()))?;
        views.push((t.name.clone(), view));
    }
    let metadata: HashMap<String, String> = [
        ("format".to_string(), "modelc".to_string()),
        ("version".to_string(), "1".to_string()),
        ("model".to_string(), model.to_string()),
        ("global_step".to_string(), global_step.to_string()),
    ]
    .into_iter()
    .collect();
    let out = safetensors::serialize(views, &Some(metadata)).map_err(|e| ck_err(path, e.to_string()))?;
    let tmp = path.with_extension("tmp-modelc");
    std::fs::write(&tmp, out).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Loads and validates.
pub fn load(path: &Path, model: &str, expected: &[(String, Vec<usize>)]) -> Result<Checkpoint, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| ck_err(path, format!("not a safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ck_err(path, format!("corrupt safetensors file: {e}")))?;
    let md = meta.metadata().clone().unwrap_or_default();
    if md.get("format").map(String::as_str) != Some("modelc") {
        return Err(ck_err(path, "not a modelc checkpoint (no `format: modelc` metadata)"));
    }
    let found_model = md.get("model").cloned().unwrap_or_default();
    if found_model != model {
        return Err(ck_err(path, format!("checkpoint of model `{found_model}`, expected `{model}`")));
    }
    let global_step = md.get("global_step").and_then(|s| s.parse().ok()).ok_or_else(|| ck_err(path, "missing global_step"))?;
    let mut problems = Vec::new();
    let mut tensors = HashMap::new();
    for (name, shape) in expected {
        match st.tensor(name) {
            Err(_) => problems.push(format!("missing tensor `{name}`")),
            Ok(t) if t.dtype() != Dtype::F32 => problems.push(format!("tensor `{name}` has dtype {:?}, expected F32", t.dtype())),
            Ok(t) if t.shape() != shape.as_slice() => {
                problems.push(format!("tensor `{name}` has shape {:?}, expected {:?}", t.shape(), shape))
            }
            Ok(t) => {
                let data = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                tensors.insert(name.clone(), (shape.clone(), data));
            }
        }
    }
    for name in st.names() {
        if !expected.iter().any(|(n, _)| n == name) {
            problems.push(format!("unexpected tensor `{name}`"));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(ck_err(path, problems.join("; ")));
    }
    Ok(Checkpoint { model: found_model, global_step, tensors })
}
