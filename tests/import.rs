//! Weights from elsewhere (issue 16, item 8): `load_params` / `from_safetensors` read the
//! params of a model trained by PyTorch (or laid out as Keras does) from any safetensors
//! file, through a `NameMap`; the loaded model's fetches give PyTorch's own outputs.
//!
//! The fixtures in `tests/fixtures/` were written by `scripts/make_torch_fixture.py`
//! (PyTorch 2.15, `safetensors.torch.save_file(model.state_dict(), ..)`), with PyTorch's
//! logits and softmax for four inputs in `torch_mlp_outputs.txt`. Bad input: one `Err`
//! listing every difference, the model unchanged; no corrupted file panics (every byte of
//! the fixture flipped in turn, every truncation: about 2,000 reads, well under a second).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use modelc::ndarray::{Array1, Array2};
use modelc::{model, Error, NameMap};

model! {
    /// PyTorch's `fc2(relu(fc1(x)))` with `fc1 = nn.Linear(6, 16)`, `fc2 = nn.Linear(16, 5)`.
    pub struct TorchMlp {
        input x: [batch, 6];
        input y: [batch, 5];
        param w1: [6, 16] = glorot_uniform;
        param b1: [16] = zeros;
        param w2: [16, 5] = glorot_uniform;
        param b2: [5] = zeros;
        let z = matmul(relu(matmul(x, w1) + b1), w2) + b2;
        output logits = z;
        output probs = softmax(z);
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer adam(learning_rate = 0.01);
    }
}

model! {
    /// The same network with another optimizer (and so other checkpoint slots).
    pub struct SgdMlp {
        input x: [batch, 6];
        input y: [batch, 5];
        param w1: [6, 16] = zeros;
        param b1: [16] = zeros;
        param w2: [16, 5] = zeros;
        param b2: [5] = zeros;
        let z = matmul(relu(matmul(x, w1) + b1), w2) + b2;
        output logits = z;
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh path for one test's file.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("modelc-import");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The map for the PyTorch state dict: `fc1.weight` is `[out, in]`, so transposed.
fn torch_map() -> NameMap {
    NameMap::new().pytorch_linear("w1", "b1", "fc1").pytorch_linear("w2", "b2", "fc2")
}

/// The blocks of `torch_mlp_outputs.txt`, by name.
fn torch_outputs() -> HashMap<String, Array2<f32>> {
    let text = std::fs::read_to_string(fixture("torch_mlp_outputs.txt")).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let mut blocks = HashMap::new();
    while let Some(head) = lines.next() {
        let parts: Vec<&str> = head.split_whitespace().collect();
        let (rows, cols): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        let values: Vec<f32> = (0..rows)
            .flat_map(|_| {
                lines.next().unwrap().split_whitespace().map(|v| v.parse::<f32>().unwrap()).collect::<Vec<_>>()
            })
            .collect();
        blocks.insert(parts[0].to_string(), Array2::from_shape_vec((rows, cols), values).unwrap());
    }
    blocks
}

fn assert_close(got: &Array2<f32>, want: &Array2<f32>, tol: f32, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: largest difference from PyTorch {worst:e} > {tol:e}\ngot  {got:?}\nwant {want:?}");
}

fn message(e: &Error) -> String {
    match e {
        Error::Checkpoint { message, .. } => message.clone(),
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

fn train_a_little(m: &mut TorchMlp) {
    let x = Array2::from_shape_fn((8, 6), |(i, j)| ((i * 5 + j * 3) % 7) as f32 / 3.0 - 1.0);
    let y = Array2::from_shape_fn((8, 5), |(i, j)| f32::from(u8::from(i % 5 == j)));
    for _ in 0..3 {
        m.train_step(x.view(), y.view()).unwrap();
    }
}

#[test]
fn a_pytorch_state_dict_gives_pytorchs_outputs() {
    let out = torch_outputs();
    let m = TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    assert_eq!(m.global_step(), 0);
    let x = &out["inputs"];
    assert_close(&m.logits(x.view()).unwrap(), &out["logits_f32"], 1e-5, "logits");
    assert_close(&m.probs(x.view()).unwrap(), &out["probs_f32"], 1e-5, "probs");
    assert!(m.w1.is_standard_layout() && m.w2.is_standard_layout());
}

#[test]
fn f64_f16_and_bf16_files_are_converted() {
    let out = torch_outputs();
    let f32_model = TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    let x = &out["inputs"];
    for dt in ["f64", "f16", "bf16"] {
        let m = TorchMlp::from_safetensors(fixture(&format!("torch_mlp_{dt}.safetensors")), &torch_map()).unwrap();
        // PyTorch's float32 forward of the weights as the file holds them.
        assert_close(&m.logits(x.view()).unwrap(), &out[&format!("logits_{dt}")], 1e-5, dt);
        assert_close(&m.probs(x.view()).unwrap(), &out[&format!("probs_{dt}")], 1e-5, dt);
        if dt == "f64" {
            // f32 -> f64 -> f32 is exact: the same params, bit for bit.
            assert_eq!((&m.w1, &m.b1, &m.w2, &m.b2), (&f32_model.w1, &f32_model.b1, &f32_model.w2, &f32_model.b2));
        } else {
            // Rounded: close to the f32 params (f16 keeps 11 significant bits, bf16 8), not equal.
            let rel = if dt == "f16" { 2f32.powi(-11) } else { 2f32.powi(-8) };
            assert_ne!(m.w1, f32_model.w1, "{dt}: the file holds rounded weights");
            for (a, b) in m.w1.iter().zip(&f32_model.w1) {
                assert!((a - b).abs() <= rel * b.abs() + 1e-7, "{dt}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn keras_names_and_layout_load_without_a_transpose() {
    let map = NameMap::new().keras_dense("w1", "b1", "dense").keras_dense("w2", "b2", "dense_1");
    let keras = TorchMlp::from_safetensors(fixture("keras_mlp.safetensors"), &map).unwrap();
    let torch = TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    assert_eq!((&keras.w1, &keras.b1, &keras.w2, &keras.b2), (&torch.w1, &torch.b1, &torch.w2, &torch.b2));
}

#[test]
fn a_bad_state_dict_is_one_error_listing_every_difference_and_changes_nothing() {
    let mut m = TorchMlp::with_seed(3);
    train_a_little(&mut m);
    let before = m.clone();
    let e = m.load_params(fixture("torch_mlp_bad.safetensors"), &torch_map()).unwrap_err();
    let msg = message(&e);
    for part in [
        "5 differences from the params of model `TorchMlp`",
        "tensor `fc1.weight` for param `w1` has shape [16, 7], [7, 16] transposed, expected [6, 16]",
        "tensor `fc1.bias` for param `b1` has dtype I64; params load from F32, F64 (rounded to nearest), F16 or BF16",
        "missing tensor `fc2.weight` for param `w2` ([16, 5])",
        "unused tensor `fc2.weights` (F32 [5, 16])",
        "unused tensor `fc3.weight` (F32 [2, 5])",
        "the file holds tensors `fc1.bias`, `fc1.weight`, `fc2.bias`, `fc2.weights`, `fc3.weight`",
        "`NameMap::ignore_unused()`",
    ] {
        assert!(msg.contains(part), "the error should say {part:?}:\n{msg}");
    }
    assert!(e.to_string().contains("torch_mlp_bad.safetensors"), "{e}");
    // Nothing changed: params, global step, and the optimizer state (the next step is
    // the same as the untouched copy's).
    assert_eq!((&m.w1, &m.b1, &m.w2, &m.b2), (&before.w1, &before.b1, &before.w2, &before.b2));
    assert_eq!(m.global_step(), before.global_step());
    let mut before = before;
    let (x, y) =
        (Array2::from_elem((2, 6), 0.5f32), Array2::from_shape_fn((2, 5), |(i, j)| f32::from(u8::from(i == j))));
    assert_eq!(m.train_step(x.view(), y.view()).unwrap(), before.train_step(x.view(), y.view()).unwrap());
    assert_eq!(m.w1, before.w1);
}

#[test]
fn a_transpose_is_never_guessed_and_the_error_says_which_way() {
    let no_transpose =
        NameMap::new().map("w1", "fc1.weight").map("b1", "fc1.bias").map("w2", "fc2.weight").map("b2", "fc2.bias");
    let msg = message(&TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &no_transpose).unwrap_err());
    assert!(msg.starts_with("2 differences"), "{msg}");
    assert!(
        msg.contains("tensor `fc1.weight` for param `w1` has shape [16, 6], expected [6, 16] (its transpose: a PyTorch `nn.Linear` weight is stored [out, in]; map it with `.transposed()`)"),
        "{msg}"
    );
    // The other way round: Keras' kernels through the PyTorch convention.
    let map = NameMap::new()
        .map("w1", "dense/kernel")
        .transposed()
        .map("b1", "dense/bias")
        .map("w2", "dense_1/kernel")
        .transposed()
        .map("b2", "dense_1/bias");
    let msg = message(&TorchMlp::from_safetensors(fixture("keras_mlp.safetensors"), &map).unwrap_err());
    assert!(
        msg.contains("[6, 16], [16, 6] transposed, expected [6, 16] (its transpose: drop the map's `.transposed()`)"),
        "{msg}"
    );
}

#[test]
fn mistakes_in_the_map_are_listed_with_the_files() {
    let map = NameMap::new()
        .transposed()
        .pytorch_linear("w1", "b1", "fc1")
        .map("w1", "fc1.weight")
        .map("w9", "fc2.weight")
        .map("w2", "fc2.weight")
        .permuted([0, 0])
        .map("b2", "fc2.bias");
    let msg = message(&TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &map).unwrap_err());
    for part in [
        "4 differences",
        "the map's `transposed()` or `permuted(..)` follows no `map(param, tensor)`",
        "the map maps param `w1` twice",
        "the map names param `w9`, which model `TorchMlp` does not have (it has params `w1`, `b1`, `w2`, `b2`)",
        "tensor `fc2.weight` for param `w2`: the map's axes [0, 0] are not a permutation of the tensor's 2 axes",
    ] {
        assert!(msg.contains(part), "the error should say {part:?}:\n{msg}");
    }
}

#[test]
fn load_params_keeps_the_optimizer_state_and_the_global_step() {
    let mut m = TorchMlp::with_seed(1);
    train_a_little(&mut m);
    let mut by_hand = m.clone();
    m.load_params(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    assert_eq!(m.global_step(), 3);
    let torch = TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    (by_hand.w1, by_hand.b1, by_hand.w2, by_hand.b2) =
        (torch.w1.clone(), torch.b1.clone(), torch.w2.clone(), torch.b2.clone());
    // Adam's moments were kept: the next steps are those of a model whose params were
    // assigned by hand, not those of a fresh model.
    let mut fresh = torch.clone();
    let (x, y) =
        (Array2::from_elem((2, 6), 0.25f32), Array2::from_shape_fn((2, 5), |(i, j)| f32::from(u8::from(i + 1 == j))));
    for _ in 0..2 {
        assert_eq!(m.train_step(x.view(), y.view()).unwrap(), by_hand.train_step(x.view(), y.view()).unwrap());
        fresh.train_step(x.view(), y.view()).unwrap();
    }
    assert_eq!(m.w1, by_hand.w1);
    assert_ne!(m.w1, fresh.w1, "a fresh Adam takes other steps");
}

#[test]
fn a_param_field_replaced_by_the_user_gets_its_declared_shape_back() {
    let mut m = TorchMlp::new();
    m.w1 = Array2::zeros((3, 3));
    m.b1 = Array1::from_vec((0..32).map(|v| v as f32).collect()).slice_move(modelc::ndarray::s![..;2]);
    m.load_params(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    let torch = TorchMlp::from_safetensors(fixture("torch_mlp.safetensors"), &torch_map()).unwrap();
    assert_eq!((&m.w1, &m.b1), (&torch.w1, &torch.b1));
    assert!(m.b1.is_standard_layout());
}

#[test]
fn a_modelc_checkpoint_loads_its_params_only_into_a_model_with_another_optimizer() {
    let mut adam = TorchMlp::with_seed(5);
    train_a_little(&mut adam);
    let p = scratch("adam.safetensors");
    adam.save(&p).unwrap();
    // `SgdMlp::load` refuses it (another model, other optimizer slots); its params load.
    assert!(message(&SgdMlp::load(&p).unwrap_err()).contains("checkpoint of model `TorchMlp`, expected model `SgdMlp`"));
    let sgd = SgdMlp::from_safetensors(&p, &NameMap::new()).unwrap();
    assert_eq!((&sgd.w1, &sgd.b1, &sgd.w2, &sgd.b2), (&adam.w1, &adam.b1, &adam.w2, &adam.b2));
    assert_eq!(sgd.global_step(), 0);
    // And `Model::load` of a PyTorch file points at `from_safetensors`.
    let msg = message(&TorchMlp::load(fixture("torch_mlp.safetensors")).unwrap_err());
    assert!(msg.contains("not a modelc checkpoint") && msg.contains("from_safetensors"), "{msg}");
}

/// A safetensors file written by hand (as another program would), so that the tests
/// control dtypes and values: `(name, dtype, shape, little-endian bytes)`.
fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[usize], Vec<u8>)]) {
    let mut header = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let (start, end) = (data.len(), data.len() + bytes.len());
        header
            .push(format!("\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{start},{end}]}}"));
        data.extend_from_slice(bytes);
    }
    let mut json = format!("{{{}}}", header.join(",")).into_bytes();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend(json);
    file.extend(data);
    std::fs::write(path, file).unwrap();
}

fn f32_bytes(vs: impl IntoIterator<Item = f32>) -> Vec<u8> {
    vs.into_iter().flat_map(f32::to_le_bytes).collect()
}

#[test]
fn bad_values_and_unsupported_dtypes_are_refused_by_name() {
    let p = scratch("bad_values.safetensors");
    let mut w1: Vec<f32> = vec![0.5; 96];
    w1[17] = f32::NAN;
    let b2: Vec<u8> = [0.0f64, 0.0, 0.0, 1e39, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &p,
        &[
            ("b1", "U8", &[16], vec![1; 16]),
            ("b2", "F64", &[5], b2),
            ("w1", "F32", &[6, 16], f32_bytes(w1)),
            ("w2", "F32", &[16, 5], f32_bytes(vec![f32::NEG_INFINITY; 80])),
        ],
    );
    let mut m = TorchMlp::new();
    let before = m.clone();
    let msg = message(&m.load_params(&p, &NameMap::new()).unwrap_err());
    for part in [
        "4 differences",
        "tensor `b1` has dtype U8",
        "tensor `b2` (F64) has 1e39 at index 3 (row-major), beyond f32's range",
        "tensor `w1` has a NaN or an infinity (at index 17, row-major)",
        "tensor `w2` has a NaN or an infinity (at index 0, row-major)",
    ] {
        assert!(msg.contains(part), "the error should say {part:?}:\n{msg}");
    }
    assert_eq!((&m.w1, &m.b2), (&before.w1, &before.b2));

    // The same names with good values load, F32 and F64 mixed in one file.
    let b2: Vec<u8> = [0.0f64, 0.1, 0.2, 0.3, 0.4].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &p,
        &[
            ("b1", "F32", &[16], f32_bytes(vec![0.0; 16])),
            ("b2", "F64", &[5], b2),
            ("w1", "F32", &[6, 16], f32_bytes(vec![0.5; 96])),
            ("w2", "BF16", &[16, 5], [0x80, 0x3f].repeat(80)),
        ],
    );
    m.load_params(&p, &NameMap::new()).unwrap();
    assert_eq!(m.b2.to_vec(), vec![0.0, 0.1, 0.2, 0.3, 0.4]);
    assert!(m.w2.iter().all(|&v| v == 1.0), "bf16 0x3f80 is 1.0");
}

#[test]
fn a_missing_file_is_an_io_error() {
    let e = TorchMlp::from_safetensors(scratch("nothing-here.safetensors"), &NameMap::new()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn no_corrupted_file_panics() {
    let bytes = std::fs::read(fixture("torch_mlp.safetensors")).unwrap();
    let params: [(&str, &[usize]); 4] = [("w1", &[6, 16]), ("b1", &[16]), ("w2", &[16, 5]), ("b2", &[5])];
    let map = torch_map();
    let path = Path::new("torch_mlp.safetensors");
    let check = |b: &[u8]| {
        if let Ok(values) = modelc::import::params_from_bytes(b, path, "TorchMlp", &params, &map) {
            for (v, (name, shape)) in values.iter().zip(params) {
                assert_eq!(v.len(), shape.iter().product::<usize>(), "{name}");
                assert!(v.iter().all(|x| x.is_finite()), "{name}");
            }
        }
    };
    let mut flipped = bytes.clone();
    for i in 0..bytes.len() {
        flipped[i] ^= 0xff;
        check(&flipped);
        flipped[i] = bytes[i];
    }
    for n in 0..bytes.len() {
        check(&bytes[..n]);
    }
}
