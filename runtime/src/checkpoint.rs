//! safetensors checkpoints: a model's params, its optimizer's slots and its global step,
//! in one file any safetensors reader can open.
//!
//! # Layout
//!
//! A standard [safetensors](https://github.com/huggingface/safetensors) file: an 8-byte
//! little-endian header length `N`, `N` bytes of JSON header, then the tensors' bytes.
//! Every tensor is `F32`, row-major, little-endian. modelc's conventions on top:
//!
//! - **Tensor names.** A param is stored under its name in the model (`"w"`); an
//!   optimizer slot under `"optimizer/<param>/<slot>"` ([`slot_key`]), e.g.
//!   `"optimizer/w/m"` for Adam's first moment of `w`, with the slot names of
//!   [`Optimizer::slot_names`](crate::optim::Optimizer::slot_names). Frozen params have
//!   no slots. `/` cannot occur in a Rust identifier, so the two never collide.
//! - **Metadata** (the header's `__metadata__`, string to string):
//!   `{"format": "modelc", "version": "1", "model": "<struct name>", "global_step": "<u64>"}`.
//!
//! [`load`] checks all of it and reports every difference at once. `docs/checkpoints.md`
//! describes the format for readers in other languages.
//!
//! # Atomicity
//!
//! [`save`] writes a temporary file in the destination's directory, flushes it to disk
//! (`fsync`), then renames it over the destination, so a crash leaves either the old
//! checkpoint or the new one, never a torn file.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayBase, Data, Dimension};
use safetensors::tensor::{Metadata, SafeTensorError, View};
use safetensors::{Dtype, SafeTensors};

use crate::Error;

/// The `format` metadata value of every modelc checkpoint.
pub const FORMAT: &str = "modelc";
/// The `version` metadata value this runtime writes and reads.
pub const VERSION: &str = "1";

/// The key of optimizer slot `slot` of param `param`: `"optimizer/<param>/<slot>"`.
pub fn slot_key(param: &str, slot: &str) -> String {
    format!("optimizer/{param}/{slot}")
}

/// One tensor to save: a param (`"w"`) or an optimizer slot (`"optimizer/w/m"`, see
/// [`slot_key`]), as f32 scalars in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData<'a> {
    /// The tensor's key in the file.
    pub name: String,
    /// Its shape; the product of its dimensions must be `data.len()`.
    pub shape: Vec<usize>,
    /// Its values, row-major: borrowed when the source already is, else a copy (see
    /// [`TensorData::from_array`]).
    pub data: Cow<'a, [f32]>,
}

impl<'a> TensorData<'a> {
    /// The tensor `name` holding the values of `a` in row-major (logical) order, whatever
    /// `a`'s memory layout: borrowed when `a` is in standard layout, else copied.
    ///
    /// Params are public fields, so a user can assign an array in any layout
    /// (`m.w = t.reversed_axes()`, `m.w = a.slice_move(s![..;-1, ..])`); a checkpoint
    /// must hold what the array *means*, not its memory order.
    pub fn from_array<S, D>(name: impl Into<String>, a: &'a ArrayBase<S, D>) -> Self
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        let data = match a.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(a.iter().copied().collect()),
        };
        TensorData { name: name.into(), shape: a.shape().to_vec(), data }
    }

    /// Like [`from_array`](Self::from_array) for a param declared with shape `declared`:
    /// [`Error::Shape`] naming the param if the array has another shape (the same number
    /// of values in another shape would otherwise be saved scrambled under the declared
    /// one).
    pub fn param<S, D>(name: &'static str, a: &'a ArrayBase<S, D>, declared: &[usize]) -> Result<Self, Error>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        if a.shape() != declared {
            return Err(Error::Shape {
                input: name,
                expected: format!("{declared:?}"),
                found: a.shape().to_vec(),
                detail: "a param field was replaced by an array of another shape; save writes the declared shape"
                    .to_string(),
            });
        }
        Ok(Self::from_array(name, a))
    }
}

/// What a checkpoint holds once [`load`] has validated it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model the checkpoint belongs to (its struct name).
    pub model: String,
    /// The number of updates applied when it was saved.
    pub global_step: u64,
    /// Every tensor, by key: its shape and its values (row-major).
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

pub(crate) fn checkpoint_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

/// An f32 tensor as safetensors' [`View`]: converted to little-endian bytes one tensor at
/// a time, while the file's buffer is written.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Distinguishes the temporary files of concurrent saves within one process.
static SAVE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Saves `tensors`, the name of the `model` and its `global_step` to `path`, atomically:
/// a temporary file in the same directory, `fsync`, then a rename over `path` (which is
/// replaced if it exists).
///
/// Errors: [`Error::InvalidArgument`] if a tensor's shape does not fit its data, two
/// tensors share a name, or a name is empty or `__metadata__`; [`Error::Io`] if the file
/// cannot be written (the temporary file is removed, and an existing checkpoint at
/// `path` is left untouched).
pub fn save(path: &Path, model: &str, global_step: u64, tensors: &[TensorData<'_>]) -> Result<(), Error> {
    let bytes = to_bytes(path, model, global_step, tensors)?;
    write_atomically(path, &bytes)
}

/// The bytes [`save`] writes, in memory: what `modelc::mpi::World::broadcast_params`
/// sends from rank 0 (so a broadcast carries exactly what a checkpoint holds). `path`
/// only names the destination in errors. Errors as for [`save`], without the I/O.
pub fn to_bytes(path: &Path, model: &str, global_step: u64, tensors: &[TensorData<'_>]) -> Result<Vec<u8>, Error> {
    let mut names = BTreeSet::new();
    for t in tensors {
        let len = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if len != Some(t.data.len()) {
            return Err(Error::InvalidArgument(format!(
                "checkpoint tensor `{}`: shape {:?} does not fit {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        if t.name.is_empty() || t.name == "__metadata__" {
            return Err(Error::InvalidArgument(format!("checkpoint tensor name `{}` is reserved", t.name)));
        }
        if !names.insert(t.name.as_str()) {
            return Err(Error::InvalidArgument(format!("checkpoint tensor `{}` appears twice", t.name)));
        }
    }
    let metadata: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("version", VERSION.to_string()),
        ("model", model.to_string()),
        ("global_step", global_step.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let views = tensors.iter().map(|t| (t.name.as_str(), F32View { shape: &t.shape, data: &t.data }));
    safetensors::serialize(views, &Some(metadata)).map_err(|e| checkpoint_error(path, format!("cannot serialize: {e}")))
}

/// Writes `bytes` to a fresh temporary file next to `path`, syncs it, and renames it
/// over `path`; then syncs the directory (best effort) so that the rename is durable.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("checkpoint path {} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let n = SAVE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);

    let write = || -> Result<(), Error> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Not every platform or file system can sync a
    // directory; the checkpoint is complete either way.
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the checkpoint at `path` and validates it against the model `model`, whose
/// tensors are `expected` (key and shape, all f32).
///
/// Checks, in order: the file is a safetensors file (else "not a safetensors file" or
/// "truncated or corrupt"); its metadata says `format: modelc` and `version: 1` (else
/// "not a modelc checkpoint", naming the tensors it holds); the metadata names `model`
/// (else an error naming both models); the global step is a `u64`; then every tensor:
/// the error lists *every* difference at once: missing tensors, unexpected tensors,
/// wrong dtypes and wrong shapes (expected vs found).
///
/// Never panics on a bad file: a missing or unreadable file is [`Error::Io`], anything
/// else wrong is [`Error::Checkpoint`].
pub fn load(path: &Path, model: &str, expected: &[(String, Vec<usize>)]) -> Result<Checkpoint, Error> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path, model, expected)
}

/// [`load`] from bytes in memory ([`to_bytes`]' output): the same checks and errors,
/// naming `path` as their origin (a file, or e.g. "rank 0's broadcast").
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    model: &str,
    expected: &[(String, Vec<usize>)],
) -> Result<Checkpoint, Error> {
    let (header_len, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| checkpoint_error(path, describe(&e, bytes.len())))?;
    // read_metadata has checked that the offsets tile the rest of the file exactly.
    let buffer = bytes.get(8 + header_len..).unwrap_or_default();

    let infos = header.tensors();
    let mut found_names: Vec<&str> = infos.keys().map(String::as_str).collect();
    found_names.sort_unstable();
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| meta.get(key).map(String::as_str);

    if get("format") != Some(FORMAT) {
        return Err(checkpoint_error(
            path,
            format!(
                "not a modelc checkpoint: its metadata has no `format: {FORMAT}` (a safetensors file written by \
                 another program? `Model::from_safetensors(path, &NameMap)` reads params from any safetensors \
                 file); it holds {}",
                list_names(&found_names)
            ),
        ));
    }
    if get("version") != Some(VERSION) {
        return Err(checkpoint_error(
            path,
            format!(
                "modelc checkpoint format version {:?}; this runtime reads version {VERSION}",
                get("version").unwrap_or("(none)")
            ),
        ));
    }
    match get("model") {
        Some(m) if m == model => {}
        Some(m) => return Err(checkpoint_error(path, format!("checkpoint of model `{m}`, expected model `{model}`"))),
        None => return Err(checkpoint_error(path, format!("metadata names no model, expected model `{model}`"))),
    }
    let global_step = match get("global_step").map(str::parse::<u64>) {
        Some(Ok(s)) => s,
        _ => {
            return Err(checkpoint_error(
                path,
                format!(
                    "metadata `global_step` is {:?}, not an unsigned integer",
                    get("global_step").unwrap_or("(none)")
                ),
            ))
        }
    };

    let diffs = differences(&header, expected, &found_names);
    if !diffs.is_empty() {
        let slots_differ = diffs.iter().any(|d| d.contains("`optimizer/"));
        let hint =
            if slots_differ { " (the optimizer slots differ: was it saved with another optimizer?)" } else { "" };
        let n = diffs.len();
        let s = if n == 1 { "" } else { "s" };
        return Err(checkpoint_error(
            path,
            format!("{n} difference{s} from model `{model}`{hint}: {}", diffs.join("; ")),
        ));
    }

    let mut tensors = HashMap::with_capacity(expected.len());
    for (name, shape) in expected {
        let Some(info) = header.info(name) else { continue };
        let (start, end) = info.data_offsets;
        let Some(raw) = buffer.get(start..end) else {
            return Err(checkpoint_error(path, format!("tensor `{name}`: data offsets {start}..{end} out of bounds")));
        };
        let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(name.clone(), (shape.clone(), values));
    }
    Ok(Checkpoint { model: model.to_string(), global_step, tensors })
}

/// Every difference between the file's tensors and `expected`: missing and mismatched
/// tensors in `expected`'s order, then unexpected ones by name.
fn differences(header: &Metadata, expected: &[(String, Vec<usize>)], found_names: &[&str]) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, shape) in expected {
        match header.info(name) {
            None => diffs.push(format!("missing tensor `{name}` (F32 {shape:?})")),
            Some(info) => {
                if info.dtype != Dtype::F32 {
                    diffs.push(format!("tensor `{name}` has dtype {:?}, expected F32", info.dtype));
                }
                if info.shape != *shape {
                    diffs.push(format!("tensor `{name}` has shape {:?}, expected {shape:?}", info.shape));
                }
            }
        }
    }
    for name in found_names {
        if !expected.iter().any(|(n, _)| n == name) {
            let what = header.info(name).map(|i| format!(" ({:?} {:?})", i.dtype, i.shape)).unwrap_or_default();
            diffs.push(format!("unexpected tensor `{name}`{what}"));
        }
    }
    diffs
}

/// "tensors `a`, `b`" (at most ten names), or "no tensors".
pub(crate) fn list_names(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    if names.is_empty() {
        return "no tensors".to_string();
    }
    let shown: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
    let more = if names.len() > SHOWN { format!(" and {} more", names.len() - SHOWN) } else { String::new() };
    let s = if names.len() == 1 { "" } else { "s" };
    format!("tensor{s} {}{more}", shown.join(", "))
}

/// A reader's explanation of why safetensors rejected the file.
pub(crate) fn describe(e: &SafeTensorError, file_len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("not a safetensors file: {file_len} bytes is too short for the 8-byte header length")
        }
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            format!("not a safetensors file (or truncated): its header length does not fit the file's {file_len} bytes")
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::JsonError(_) => "not a safetensors file: its header is not the expected JSON".to_string(),
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "truncated or corrupt: the header's tensors do not cover exactly the file's data ({file_len} bytes in all)"
        ),
        SafeTensorError::InvalidOffset(name) => format!("corrupt: invalid data offsets for tensor `{name}`"),
        SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow => {
            "corrupt: a tensor's shape and dtype do not match its data offsets".to_string()
        }
        other => format!("unreadable safetensors file: {other}"),
    }
}
