//! Issue 15, defect 6, through generated code: `save` of a param the user replaced by an
//! array that is not in standard layout (transposed, reversed), and `cost()` of huge
//! symbolic dimensions (saturating, never an overflow panic in a debug build).

use modelc::model;
use modelc::ndarray::{s, Array1, Array2};

model! {
    /// A small model with Adam, so that `save` writes slots too.
    pub struct Small {
        input x: [batch, 3];
        input y: [batch, 2];

        param w: [3, 2] = glorot_uniform;
        param b: [2] = zeros;

        let z = matmul(x, w) + b;

        output logits = z;
        loss l = mean(softmax_cross_entropy(z, y));

        optimizer adam(learning_rate = 0.01);
    }
}

/// A fresh path for one test's checkpoint.
fn path(test: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("modelc-save-and-cost");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{test}.safetensors"))
}

/// `[[0, 1], [2, 3], [4, 5]]`, row-major.
fn logical() -> Array2<f32> {
    Array2::from_shape_fn((3, 2), |(i, j)| (2 * i + j) as f32)
}

fn train_a_little(m: &mut Small) {
    let x = Array2::from_shape_fn((4, 3), |(i, j)| (i + j) as f32 / 4.0);
    let y = Array2::from_shape_fn((4, 2), |(i, j)| f32::from(u8::from(i % 2 == j)));
    for _ in 0..3 {
        m.train_step(x.view(), y.view()).unwrap();
    }
}

/// Saves `m`, loads it back, and checks that the loaded params hold the logical values of
/// `m`'s (whatever their layout) and that the file is the one a standard-layout copy gives.
fn round_trip(m: &Small, test: &str) {
    let p = path(test);
    m.save(&p).expect("save accepts a param in any layout");
    let back = Small::load(&p).unwrap();
    assert_eq!(back.w, m.w, "{test}: the loaded w is the logical value of the saved one");
    assert_eq!(back.b, m.b, "{test}");
    assert!(back.w.is_standard_layout());
    assert_eq!(back.global_step(), m.global_step());

    let mut standard = m.clone();
    standard.w = m.w.as_standard_layout().into_owned();
    standard.b = m.b.as_standard_layout().into_owned();
    let q = path(&format!("{test}-standard"));
    standard.save(&q).unwrap();
    // The tensors' bytes (after the 8-byte length and the JSON header, whose metadata
    // order varies) are those a standard-layout copy gives.
    let data = |f: &std::path::Path| {
        let bytes = std::fs::read(f).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        bytes[8 + n..].to_vec()
    };
    assert_eq!(data(&p), data(&q), "{test}: same tensor bytes as a standard copy");
}

#[test]
fn save_writes_a_transposed_param_by_its_values() {
    let mut m = Small::new();
    train_a_little(&mut m);
    // Column-major: the transpose of a [2, 3] array, as `a.t().to_owned()`-like code gives.
    let t = Array2::from_shape_fn((2, 3), |(j, i)| (2 * i + j) as f32).reversed_axes();
    assert!(!t.is_standard_layout());
    assert_eq!(t, logical());
    m.w = t;
    round_trip(&m, "transposed");
}

#[test]
fn save_writes_reversed_and_strided_params_by_their_values() {
    let mut m = Small::new();
    train_a_little(&mut m);
    // Negative strides on both axes: an owned array whose memory runs backwards.
    let rev = Array2::from_shape_fn((3, 2), |(i, j)| (2 * (2 - i) + (1 - j)) as f32).slice_move(s![..;-1, ..;-1]);
    assert!(!rev.is_standard_layout());
    assert_eq!(rev, logical());
    m.w = rev;
    // A stepped bias: every other element of a longer array.
    let stepped = Array1::from_vec(vec![7.0, -1.0, 8.0, -1.0]).slice_move(s![..;2]);
    assert!(!stepped.is_standard_layout());
    m.b = stepped;
    round_trip(&m, "reversed");
}

#[test]
fn save_rejects_a_param_of_another_shape() {
    let mut m = Small::new();
    // Six values like the declared [3, 2], but shaped [2, 3]: saving it under [3, 2]
    // would silently scramble the param.
    m.w = Array2::zeros((2, 3));
    let p = path("wrong-shape");
    let _ = std::fs::remove_file(&p);
    let err = m.save(&p).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`w`") && text.contains("[3, 2]") && text.contains("[2, 3]"), "{text}");
    assert!(!p.exists(), "nothing is written");
}

#[test]
fn cost_saturates_instead_of_overflowing() {
    // In a debug build the unchecked `u64` arithmetic of the generated cost functions
    // panicked here ("attempt to multiply with overflow").
    let c = Small::cost(usize::MAX);
    assert_eq!(c.fetches.len(), 2);
    for (name, flops) in &c.fetches {
        assert_eq!(*flops, u64::MAX, "{name}");
    }
    assert_eq!(c.train_step, u64::MAX);
    assert_eq!(c.workspace_bytes, u64::MAX);
    // The state does not depend on the batch: 8 params and 2 Adam slots each, in f32.
    assert_eq!(c.state_bytes, 4 * 8 * 3);

    // Large but representable sizes are exact, and the costs grow with the batch.
    let (a, b) = (Small::cost(1 << 20), Small::cost(1 << 21));
    assert!(a.train_step < b.train_step && b.train_step < u64::MAX);
    assert!(a.workspace_bytes < b.workspace_bytes && b.workspace_bytes < u64::MAX);
    for ((name, fa), (_, fb)) in a.fetches.iter().zip(&b.fetches) {
        assert!(fa < fb && *fb < u64::MAX, "{name}: {fa} then {fb}");
    }
    assert_eq!(Small::cost(0).state_bytes, c.state_bytes);
}

#[test]
fn generated_load_rejects_every_truncation_and_survives_corruption() {
    let mut m = Small::new();
    train_a_little(&mut m);
    let p = path("valid");
    m.save(&p).unwrap();
    let full = std::fs::read(&p).unwrap();
    let q = path("corrupt");
    for len in 0..full.len() {
        std::fs::write(&q, &full[..len]).unwrap();
        assert!(matches!(Small::load(&q), Err(modelc::Error::Checkpoint { .. })), "cut at {len}");
    }
    // Every byte flipped: an error, or (inside the tensors' values) a model that loads.
    for i in 0..full.len() {
        let mut b = full.clone();
        b[i] ^= 0x55;
        std::fs::write(&q, &b).unwrap();
        if let Ok(back) = Small::load(&q) {
            assert!(i >= full.len() - 4 * 24, "byte {i} of the header changed and still loaded");
            assert_eq!(back.w.shape(), &[3, 2]);
        }
    }
    assert_eq!(Small::load(&p).unwrap().w, m.w);
}
