//! safetensors checkpoints: bit-exact round trips, every kind of bad file, atomic saves,
//! and the file parsed by hand against the safetensors specification.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use modelc_runtime::checkpoint::{load, save, slot_key, TensorData};
use modelc_runtime::Error;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("modelc-checkpoint-tests").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tensors of a small model with Adam: `w: [2, 3]`, `b: [3]`, and their slots.
struct Fixture {
    w: Vec<f32>,
    b: Vec<f32>,
    wm: Vec<f32>,
    wv: Vec<f32>,
    bm: Vec<f32>,
    bv: Vec<f32>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            // Values a text format would mangle: -0.0, a NaN payload, infinities, subnormals.
            w: vec![1.5, -0.0, f32::from_bits(0x7fc0_1234), f32::INFINITY, f32::NEG_INFINITY, 1e-45],
            b: vec![0.1, 0.2, 0.3],
            wm: vec![0.01; 6],
            wv: vec![1e-8; 6],
            bm: vec![-0.5, 0.0, 0.5],
            bv: vec![2.0, 3.0, 4.0],
        }
    }

    fn tensors(&self) -> Vec<TensorData<'_>> {
        fn t<'a>(name: String, shape: &[usize], data: &'a [f32]) -> TensorData<'a> {
            TensorData { name, shape: shape.to_vec(), data: data.into() }
        }
        vec![
            t("w".into(), &[2, 3], &self.w[..]),
            t("b".into(), &[3], &self.b[..]),
            t(slot_key("w", "m"), &[2, 3], &self.wm[..]),
            t(slot_key("w", "v"), &[2, 3], &self.wv[..]),
            t(slot_key("b", "m"), &[3], &self.bm[..]),
            t(slot_key("b", "v"), &[3], &self.bv[..]),
        ]
    }
}

fn expected() -> Vec<(String, Vec<usize>)> {
    vec![
        ("w".into(), vec![2, 3]),
        ("b".into(), vec![3]),
        ("optimizer/w/m".into(), vec![2, 3]),
        ("optimizer/w/v".into(), vec![2, 3]),
        ("optimizer/b/m".into(), vec![3]),
        ("optimizer/b/v".into(), vec![3]),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The message of an `Error::Checkpoint`, or a panic describing what came instead.
fn checkpoint_message(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Checkpoint { message, .. }) => message,
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

fn save_fixture(path: &Path) {
    let f = Fixture::new();
    save(path, "Mlp", 1234, &f.tensors()).unwrap();
}

/// Writes a safetensors file with the safetensors crate itself.
fn write_raw(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], metadata: Option<HashMap<String, String>>) {
    let views: Vec<(&str, TensorView<'_>)> =
        tensors.iter().map(|(n, dt, shape, data)| (*n, TensorView::new(*dt, shape.clone(), data).unwrap())).collect();
    let bytes = safetensors::serialize(views, &metadata).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn modelc_metadata(model: &str) -> HashMap<String, String> {
    [("format", "modelc"), ("version", "1"), ("model", model), ("global_step", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = scratch("round_trip");
    let path = dir.join("model.safetensors");
    let f = Fixture::new();
    save(&path, "Mlp", 1234, &f.tensors()).unwrap();
    let ck = load(&path, "Mlp", &expected()).unwrap();
    assert_eq!(ck.model, "Mlp");
    assert_eq!(ck.global_step, 1234);
    assert_eq!(ck.tensors.len(), 6);
    for t in f.tensors() {
        let (shape, data) = &ck.tensors[&t.name];
        assert_eq!(shape, &t.shape, "{}", t.name);
        assert_eq!(bits(data), bits(&t.data), "{}", t.name);
    }
}

#[test]
fn scalars_empty_tensors_and_large_steps_round_trip() {
    let dir = scratch("scalars");
    let path = dir.join("s.safetensors");
    let (s, e) = ([42.0f32], [0.0f32; 0]);
    let tensors = [
        TensorData { name: "scale".into(), shape: vec![], data: s[..].into() },
        TensorData { name: "empty".into(), shape: vec![0, 4], data: e[..].into() },
    ];
    save(&path, "M", u64::MAX, &tensors).unwrap();
    let ck = load(&path, "M", &[("scale".into(), vec![]), ("empty".into(), vec![0, 4])]).unwrap();
    assert_eq!(ck.global_step, u64::MAX);
    assert_eq!(ck.tensors["scale"], (vec![], vec![42.0]));
    assert_eq!(ck.tensors["empty"], (vec![0, 4], vec![]));
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = scratch("missing");
    match load(&dir.join("nope.safetensors"), "Mlp", &expected()) {
        Err(Error::Io { path, source }) => {
            assert!(path.ends_with("nope.safetensors"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_files_are_rejected() {
    let dir = scratch("truncated");
    let path = dir.join("model.safetensors");
    save_fixture(&path);
    let full = std::fs::read(&path).unwrap();
    let cut_path = dir.join("cut.safetensors");
    for len in [0, 1, 7, 8, 9, 16, 100, full.len() / 2, full.len() - 4, full.len() - 1] {
        std::fs::write(&cut_path, &full[..len]).unwrap();
        let msg = checkpoint_message(load(&cut_path, "Mlp", &expected()));
        assert!(msg.contains("not a safetensors file") || msg.contains("truncated"), "length {len}: {msg}");
    }
    // Extra bytes after the data are as wrong as missing ones.
    let mut long = full.clone();
    long.extend_from_slice(&[0; 4]);
    std::fs::write(&cut_path, &long).unwrap();
    assert!(checkpoint_message(load(&cut_path, "Mlp", &expected())).contains("truncated or corrupt"));
}

#[test]
fn random_bytes_are_rejected() {
    let dir = scratch("random");
    let path = dir.join("noise.safetensors");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for len in [3usize, 8, 64, 4096] {
        let noise: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        std::fs::write(&path, &noise).unwrap();
        let msg = checkpoint_message(load(&path, "Mlp", &expected()));
        assert!(msg.contains("not a safetensors file"), "{msg}");
    }
    // A plausible header length followed by garbage.
    let mut plausible = 16u64.to_le_bytes().to_vec();
    plausible.extend((0..64).map(|_| rng.gen::<u8>()));
    std::fs::write(&path, &plausible).unwrap();
    assert!(checkpoint_message(load(&path, "Mlp", &expected())).contains("not a safetensors file"));
}

#[test]
fn corrupting_any_byte_never_panics() {
    let dir = scratch("corrupt");
    let path = dir.join("model.safetensors");
    save_fixture(&path);
    let good = std::fs::read(&path).unwrap();
    let bad_path = dir.join("bad.safetensors");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= rng.gen_range(1..=255u8);
        std::fs::write(&bad_path, &bad).unwrap();
        // Ok (a flipped data byte, a harmless header byte) or a checkpoint error; no panic.
        if let Err(e) = load(&bad_path, "Mlp", &expected()) {
            assert!(matches!(e, Error::Checkpoint { .. }), "byte {i}: {e:?}");
        }
    }
}

#[test]
fn foreign_safetensors_file_is_named_as_such() {
    let dir = scratch("foreign");
    let path = dir.join("bert.safetensors");
    let data = f32_bytes(&[1.0; 4]);
    write_raw(&path, &[("embeddings.weight", Dtype::F32, vec![2, 2], data.clone())], None);
    let msg = checkpoint_message(load(&path, "Mlp", &expected()));
    assert!(msg.contains("not a modelc checkpoint"), "{msg}");
    assert!(msg.contains("`embeddings.weight`"), "{msg}");

    // Another program's metadata, even with our tensor names.
    let meta = [("format".to_string(), "pt".to_string())].into_iter().collect();
    write_raw(&path, &[("w", Dtype::F32, vec![2, 2], data)], Some(meta));
    assert!(checkpoint_message(load(&path, "Mlp", &expected())).contains("not a modelc checkpoint"));
}

#[test]
fn other_format_version_is_rejected() {
    let dir = scratch("version");
    let path = dir.join("v2.safetensors");
    let mut meta = modelc_metadata("Mlp");
    meta.insert("version".into(), "2".into());
    write_raw(&path, &[("b", Dtype::F32, vec![3], f32_bytes(&[0.0; 3]))], Some(meta));
    let msg = checkpoint_message(load(&path, "Mlp", &[("b".into(), vec![3])]));
    assert!(msg.contains("version \"2\"") && msg.contains("reads version 1"), "{msg}");
}

#[test]
fn wrong_model_names_both_models() {
    let dir = scratch("wrong_model");
    let path = dir.join("model.safetensors");
    save_fixture(&path);
    let msg = checkpoint_message(load(&path, "ConvNet", &expected()));
    assert_eq!(msg, "checkpoint of model `Mlp`, expected model `ConvNet`");
}

#[test]
fn bad_global_step_is_rejected() {
    let dir = scratch("global_step");
    let path = dir.join("model.safetensors");
    let mut meta = modelc_metadata("Mlp");
    meta.insert("global_step".into(), "-3".into());
    write_raw(&path, &[("b", Dtype::F32, vec![3], f32_bytes(&[0.0; 3]))], Some(meta));
    let msg = checkpoint_message(load(&path, "Mlp", &[("b".into(), vec![3])]));
    assert!(msg.contains("global_step") && msg.contains("-3"), "{msg}");
}

#[test]
fn wrong_shape_says_expected_and_found() {
    let dir = scratch("wrong_shape");
    let path = dir.join("model.safetensors");
    save_fixture(&path);
    let mut exp = expected();
    exp[0].1 = vec![3, 2];
    let msg = checkpoint_message(load(&path, "Mlp", &exp));
    assert_eq!(msg, "1 difference from model `Mlp`: tensor `w` has shape [2, 3], expected [3, 2]");
}

#[test]
fn wrong_dtype_is_reported() {
    let dir = scratch("wrong_dtype");
    let path = dir.join("model.safetensors");
    let f64s: Vec<u8> = [1.0f64, 2.0, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    write_raw(&path, &[("b", Dtype::F64, vec![3], f64s)], Some(modelc_metadata("Mlp")));
    let msg = checkpoint_message(load(&path, "Mlp", &[("b".into(), vec![3])]));
    assert_eq!(msg, "1 difference from model `Mlp`: tensor `b` has dtype F64, expected F32");
}

#[test]
fn missing_slot_is_reported_with_a_hint() {
    let dir = scratch("missing_slot");
    let path = dir.join("model.safetensors");
    let f = Fixture::new();
    let tensors: Vec<_> = f.tensors().into_iter().filter(|t| t.name != "optimizer/w/v").collect();
    save(&path, "Mlp", 1, &tensors).unwrap();
    let msg = checkpoint_message(load(&path, "Mlp", &expected()));
    assert!(msg.starts_with("1 difference from model `Mlp` (the optimizer slots differ"), "{msg}");
    assert!(msg.ends_with("missing tensor `optimizer/w/v` (F32 [2, 3])"), "{msg}");
}

#[test]
fn extra_tensor_is_reported() {
    let dir = scratch("extra");
    let path = dir.join("model.safetensors");
    let f = Fixture::new();
    let extra = [0.0f32; 4];
    let mut tensors = f.tensors();
    tensors.push(TensorData { name: "w2".into(), shape: vec![4], data: extra[..].into() });
    save(&path, "Mlp", 1, &tensors).unwrap();
    let msg = checkpoint_message(load(&path, "Mlp", &expected()));
    assert_eq!(msg, "1 difference from model `Mlp`: unexpected tensor `w2` (F32 [4])");
}

#[test]
fn every_difference_is_listed_at_once() {
    let dir = scratch("all_differences");
    let path = dir.join("model.safetensors");
    let data_w = f32_bytes(&[0.0; 6]);
    let data_b = f32_bytes(&[0.0; 4]);
    let data_x: Vec<u8> = [0.0f64; 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    write_raw(
        &path,
        &[
            ("w", Dtype::F32, vec![3, 2], data_w),                  // wrong shape
            ("b", Dtype::F32, vec![4], data_b),                     // wrong shape
            ("extra", Dtype::F64, vec![2], data_x),                 // unexpected
            ("optimizer/w/m", Dtype::F64, vec![2, 3], vec![0; 48]), // wrong dtype
        ],
        Some(modelc_metadata("Mlp")),
    );
    let exp = vec![
        ("w".to_string(), vec![2, 3]),
        ("b".to_string(), vec![3]),
        ("optimizer/w/m".to_string(), vec![2, 3]),
        ("optimizer/w/v".to_string(), vec![2, 3]),
    ];
    let msg = checkpoint_message(load(&path, "Mlp", &exp));
    for part in [
        "5 differences from model `Mlp`",
        "tensor `w` has shape [3, 2], expected [2, 3]",
        "tensor `b` has shape [4], expected [3]",
        "tensor `optimizer/w/m` has dtype F64, expected F32",
        "missing tensor `optimizer/w/v` (F32 [2, 3])",
        "unexpected tensor `extra` (F64 [2])",
    ] {
        assert!(msg.contains(part), "missing {part:?} in {msg}");
    }
}

#[test]
fn save_is_atomic_and_replaces() {
    let dir = scratch("atomic");
    let path = dir.join("model.safetensors");
    save_fixture(&path);
    let listing = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(listing(&dir), ["model.safetensors"]);

    // Saving over an existing checkpoint replaces it.
    let b = [9.0f32; 3];
    save(&path, "Other", 5, &[TensorData { name: "b".into(), shape: vec![3], data: b[..].into() }]).unwrap();
    assert_eq!(listing(&dir), ["model.safetensors"]);
    let ck = load(&path, "Other", &[("b".into(), vec![3])]).unwrap();
    assert_eq!((ck.global_step, &ck.tensors["b"].1), (5, &b.to_vec()));

    // A path through `..` lands in the same directory.
    let rel = Path::new(env!("CARGO_TARGET_TMPDIR")).join("modelc-checkpoint-tests/atomic/../atomic/rel.safetensors");
    save(&rel, "Other", 6, &[TensorData { name: "b".into(), shape: vec![3], data: b[..].into() }]).unwrap();
    assert_eq!(listing(&dir), ["model.safetensors", "rel.safetensors"]);
}

#[test]
fn failed_save_leaves_no_temporary_file_and_the_old_checkpoint() {
    let dir = scratch("failed_save");
    // The destination is a directory: the rename fails after the temporary file exists.
    let target = dir.join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let b = [1.0f32; 3];
    let r = save(&target, "M", 1, &[TensorData { name: "b".into(), shape: vec![3], data: b[..].into() }]);
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["taken"]);
    // A missing directory.
    let r = save(&dir.join("no/such/dir/m.safetensors"), "M", 1, &[]);
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
}

#[test]
fn save_rejects_inconsistent_tensors() {
    let dir = scratch("invalid_save");
    let path = dir.join("m.safetensors");
    let v = [0.0f32; 5];
    let bad_shape = save(&path, "M", 0, &[TensorData { name: "w".into(), shape: vec![2, 3], data: v[..].into() }]);
    assert!(matches!(bad_shape, Err(Error::InvalidArgument(ref m)) if m.contains("[2, 3] does not fit 5")));
    let t = || TensorData { name: "w".into(), shape: vec![5], data: v[..].into() };
    assert!(matches!(save(&path, "M", 0, &[t(), t()]), Err(Error::InvalidArgument(_))));
    let reserved = TensorData { name: "__metadata__".into(), ..t() };
    assert!(matches!(save(&path, "M", 0, &[reserved]), Err(Error::InvalidArgument(_))));
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------------
// The file against the safetensors specification, parsed by hand (no safetensors code):
// an 8-byte little-endian header length N; N bytes of UTF-8 JSON, an object mapping each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
// "__metadata__" object of strings; then the byte buffer, which the offsets (relative to
// its start) tile contiguously and exactly.

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    String(String),
    Number(String),
    Literal(&'static str),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_u64(&self) -> u64 {
        match self {
            Json::Number(n) => n.parse().unwrap(),
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Json::String(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

/// A small strict JSON parser (enough for safetensors headers).
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && b" \t\r\n".contains(&self.s[self.i]) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(self.s[self.i] as char, c as char, "at byte {}", self.i);
        self.i += 1;
    }

    fn peek(&mut self) -> u8 {
        self.ws();
        self.s[self.i]
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.eat(b'{');
                let mut fields = Vec::new();
                if self.peek() == b'}' {
                    self.eat(b'}');
                    return Json::Object(fields);
                }
                loop {
                    let Json::String(k) = self.value() else { panic!("object key is not a string") };
                    self.eat(b':');
                    fields.push((k, self.value()));
                    if self.peek() == b',' {
                        self.eat(b',');
                    } else {
                        self.eat(b'}');
                        return Json::Object(fields);
                    }
                }
            }
            b'[' => {
                self.eat(b'[');
                let mut items = Vec::new();
                if self.peek() == b']' {
                    self.eat(b']');
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    if self.peek() == b',' {
                        self.eat(b',');
                    } else {
                        self.eat(b']');
                        return Json::Array(items);
                    }
                }
            }
            b'"' => {
                self.eat(b'"');
                let mut out = String::new();
                loop {
                    match self.s[self.i] {
                        b'"' => break,
                        b'\\' => {
                            let esc = self.s[self.i + 1];
                            out.push(match esc {
                                b'"' => '"',
                                b'\\' => '\\',
                                b'/' => '/',
                                b'n' => '\n',
                                b't' => '\t',
                                other => panic!("unexpected escape \\{}", other as char),
                            });
                            self.i += 2;
                        }
                        _ => {
                            let rest = std::str::from_utf8(&self.s[self.i..]).unwrap();
                            let c = rest.chars().next().unwrap();
                            out.push(c);
                            self.i += c.len_utf8();
                        }
                    }
                }
                self.i += 1;
                Json::String(out)
            }
            b'0'..=b'9' | b'-' => {
                let start = self.i;
                while self.i < self.s.len() && b"0123456789-+.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                Json::Number(String::from_utf8(self.s[start..self.i].to_vec()).unwrap())
            }
            _ => {
                for lit in ["true", "false", "null"] {
                    if self.s[self.i..].starts_with(lit.as_bytes()) {
                        self.i += lit.len();
                        return Json::Literal(lit);
                    }
                }
                panic!("unexpected byte at {}", self.i)
            }
        }
    }
}

#[test]
fn the_file_follows_the_safetensors_spec() {
    let dir = scratch("spec");
    let path = dir.join("model.safetensors");
    let f = Fixture::new();
    save(&path, "Mlp", 1234, &f.tensors()).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(8 + n <= bytes.len());
    let header = std::str::from_utf8(&bytes[8..8 + n]).expect("the header is UTF-8");
    assert!(header.starts_with('{'), "the header starts with `{{`");
    let mut parser = Parser { s: header.as_bytes(), i: 0 };
    let json = parser.value();
    parser.ws();
    assert_eq!(parser.i, header.len(), "nothing but padding spaces after the JSON");
    let buffer = &bytes[8 + n..];

    let meta = json.get("__metadata__").expect("a __metadata__ entry");
    assert_eq!(meta.get("format").unwrap().as_str(), "modelc");
    assert_eq!(meta.get("version").unwrap().as_str(), "1");
    assert_eq!(meta.get("model").unwrap().as_str(), "Mlp");
    assert_eq!(meta.get("global_step").unwrap().as_str(), "1234");

    let Json::Object(fields) = &json else { panic!("the header is an object") };
    let mut spans = Vec::new();
    let mut seen = 0;
    for t in f.tensors() {
        let entry = json.get(&t.name).unwrap_or_else(|| panic!("no header entry for {}", t.name));
        assert_eq!(entry.get("dtype").unwrap().as_str(), "F32");
        let Json::Array(shape) = entry.get("shape").unwrap() else { panic!("shape is an array") };
        let shape: Vec<usize> = shape.iter().map(|d| d.as_u64() as usize).collect();
        assert_eq!(shape, t.shape);
        let Json::Array(offsets) = entry.get("data_offsets").unwrap() else { panic!("data_offsets is an array") };
        let (begin, end) = (offsets[0].as_u64() as usize, offsets[1].as_u64() as usize);
        assert_eq!(offsets.len(), 2);
        assert!(begin <= end && end <= buffer.len(), "{}: offsets within the buffer", t.name);
        assert_eq!(end - begin, 4 * t.data.len(), "{}: 4 bytes per f32", t.name);
        let values: Vec<u32> =
            buffer[begin..end].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(values, bits(&t.data), "{}: little-endian f32 values", t.name);
        spans.push((begin, end));
        seen += 1;
    }
    assert_eq!(fields.len(), seen + 1, "only the tensors and __metadata__ in the header");
    // The offsets tile the buffer: contiguous, from 0 to its end.
    spans.sort();
    assert_eq!(spans[0].0, 0);
    for w in spans.windows(2) {
        assert_eq!(w[0].1, w[1].0, "contiguous offsets");
    }
    assert_eq!(spans.last().unwrap().1, buffer.len());
}

#[test]
fn tensors_from_arrays_in_any_layout_hold_their_logical_values() {
    use ndarray::{s, Array2};
    use std::borrow::Cow;
    let logical = Array2::from_shape_fn((3, 4), |(i, j)| (4 * i + j) as f32);
    let expect: Vec<f32> = (0..12).map(|k| k as f32).collect();
    // Standard layout: borrowed, no copy.
    let t = TensorData::from_array("w", &logical);
    assert!(matches!(t.data, Cow::Borrowed(_)));
    assert_eq!((t.shape.as_slice(), &t.data[..]), (&[3, 4][..], &expect[..]));
    // Transposed (column-major), reversed (negative strides), stepped (a view).
    let transposed = Array2::from_shape_fn((4, 3), |(j, i)| (4 * i + j) as f32).reversed_axes();
    let reversed = Array2::from_shape_fn((3, 4), |(i, j)| (4 * (2 - i) + 3 - j) as f32).slice_move(s![..;-1, ..;-1]);
    let wide = Array2::from_shape_fn((3, 8), |(i, j)| if j % 2 == 0 { (4 * i + j / 2) as f32 } else { -1.0 });
    let stepped = wide.slice(s![.., ..;2]);
    for (what, t) in [
        ("transposed", TensorData::from_array("w", &transposed)),
        ("reversed", TensorData::from_array("w", &reversed)),
        ("stepped", TensorData::from_array("w", &stepped)),
    ] {
        assert!(matches!(t.data, Cow::Owned(_)), "{what}");
        assert_eq!((t.shape.as_slice(), &t.data[..]), (&[3, 4][..], &expect[..]), "{what}");
    }
    // A param of another shape is refused, naming both shapes.
    let err = TensorData::param("w", &transposed, &[4, 3]).unwrap_err();
    assert!(matches!(err, Error::Shape { input: "w", ref found, .. } if found == &[3, 4]), "{err}");
    assert!(TensorData::param("w", &transposed, &[3, 4]).is_ok());
}
