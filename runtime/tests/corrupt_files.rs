//! Corrupted, truncated and lying files for the two readers of untrusted bytes, the IDX
//! reader and the checkpoint loader: every one is an `Err`, never a panic, and never
//! costs more memory than the file can really hold. A header that claims a terabyte, or
//! a gzip bomb that inflates to hundreds of megabytes, must not be allocated: a counting
//! global allocator measures the peak of each call on its own thread.
//!
//! Every case is deterministic (a seeded RNG); `MODELC_CORRUPT_FLIPS=<n>` runs `n`
//! random multi-byte corruptions per file instead of the default 300.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use modelc_runtime::checkpoint::{load, save, TensorData};
use modelc_runtime::data::{
    read_idx_images, read_idx_images_u8, read_idx_labels, read_idx_labels_with_limit, write_idx_images,
    write_idx_labels, DEFAULT_MAX_BYTES,
};
use modelc_runtime::Error;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------
// A global allocator that tracks the bytes live on each thread and their peak.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + n as isize;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get() - n as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        shrink(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `f()`, and the most bytes it had allocated at once (on this thread) above what was
/// live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, (PEAK.with(Cell::get) - start).max(0) as usize)
}

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------
// Helpers.

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("modelc-corrupt-files").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn flips() -> usize {
    std::env::var("MODELC_CORRUPT_FLIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// Runs `read` on `bytes` written to `path`: a panic fails the test naming `what`;
/// returns the result and the peak memory of the call.
fn probe<T>(
    path: &Path,
    bytes: &[u8],
    what: &str,
    read: impl Fn(&Path) -> Result<T, Error>,
) -> (Result<T, Error>, usize) {
    std::fs::write(path, bytes).unwrap();
    match catch_unwind(AssertUnwindSafe(|| peak_of(|| read(path)))) {
        Ok(r) => r,
        Err(_) => panic!("the reader panicked on {what} ({} bytes)", bytes.len()),
    }
}

fn data_message<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Data { message, .. }) => message,
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

/// An IDX images file: big-endian magic and dims, then the body.
fn idx_images(n: u32, rows: u32, cols: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

// ---------------------------------------------------------------------------------
// IDX.

#[test]
fn idx_headers_that_claim_huge_sizes_allocate_nothing() {
    let dir = scratch("idx-huge");
    let p = dir.join("f");
    // Raw: the file's length contradicts the header before anything is read.
    for dims in [(u32::MAX, u32::MAX, u32::MAX), (1_000_000, 1_000, 1_000), (u32::MAX, 1, 1)] {
        let (r, peak) =
            probe(&p, &idx_images(dims.0, dims.1, dims.2, &[7; 100]), "a raw huge header", |p| read_idx_images(p));
        let m = data_message(r);
        assert!(m.contains("truncated data") && m.contains("found 100"), "{m}");
        assert!(peak < MIB, "{dims:?}: {peak} bytes for a 116-byte file");
    }
    // Gzip, above the limit: refused from the header alone.
    let gz = gzip(&idx_images(u32::MAX, u32::MAX, u32::MAX, &[7; 100]));
    let (r, peak) = probe(&p, &gz, "a gzip huge header", |p| read_idx_images(p));
    let m = data_message(r);
    assert!(m.contains("more than this reader's limit of 2147483648 bytes"), "{m}");
    assert!(m.contains("4294967295 x 4294967295 x 4294967295"), "{m}");
    assert!(peak < MIB, "{peak} bytes");
    // Gzip, under the limit (1.9 GiB claimed, 100 bytes present): truncated, and the
    // buffer grew only with the data that came.
    let claim = idx_images(2_000, 1_000, 1_000, &[7; 100]);
    const { assert!(2_000u64 * 1_000 * 1_000 <= DEFAULT_MAX_BYTES) };
    let (r, peak) = probe(&p, &gzip(&claim), "a gzip claim under the limit", |p| read_idx_images_u8(p));
    let m = data_message(r);
    assert!(m.contains("truncated data: the header says 2000 x 1000 x 1000 = 2000000000 bytes, found 100"), "{m}");
    assert!(peak < 4 * MIB, "{peak} bytes allocated for a claim of 2e9");
    // A custom limit.
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&1000u32.to_be_bytes());
    labels.extend_from_slice(&[1; 1000]);
    std::fs::write(&p, gzip(&labels)).unwrap();
    assert_eq!(read_idx_labels_with_limit(&p, 1000).unwrap().len(), 1000);
    let m = data_message(read_idx_labels_with_limit(&p, 999));
    assert!(m.contains("= 1000 bytes, more than this reader's limit of 999 bytes"), "{m}");
}

#[test]
fn a_gzip_bomb_is_not_inflated() {
    let dir = scratch("idx-bomb");
    let p = dir.join("bomb.gz");
    // One 28 x 28 image, then 256 MiB of zeros: about 256 KiB compressed.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&idx_images(1, 28, 28, &[0; 784])).unwrap();
    let zeros = vec![0u8; MIB];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    drop(zeros);
    assert!(bomb.len() < 2 * MIB, "{}", bomb.len());
    let (r, peak) = probe(&p, &bomb, "a gzip bomb", |p| read_idx_images(p));
    let m = data_message(r);
    assert!(m.contains("size mismatch: the header says 1 x 28 x 28 = 784 bytes, found at least"), "{m}");
    assert!(peak < 8 * MIB, "{peak} bytes allocated for a 784-byte image (the bomb inflates to 256 MiB)");

    // A bomb whose header tells the truth, but more than the caller allows.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&(256 * MIB as u32).to_be_bytes());
    enc.write_all(&labels).unwrap();
    let zeros = vec![0u8; MIB];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let (r, peak) = peak_of(|| read_idx_labels_with_limit(&p, 64 * MIB as u64));
    assert!(data_message(r).contains("more than this reader's limit of 67108864 bytes"));
    assert!(peak < MIB, "{peak}");
}

/// A small valid images file, raw and gzip.
fn small_idx() -> (Vec<u8>, Vec<u8>) {
    let dir = scratch("idx-small-source");
    let px: Vec<u8> = (0..3 * 4 * 5).map(|k| (k * 7 % 256) as u8).collect();
    write_idx_images(dir.join("img"), &px, 3, 4, 5).unwrap();
    let raw = std::fs::read(dir.join("img")).unwrap();
    let gz = gzip(&raw);
    (raw, gz)
}

#[test]
fn every_truncation_of_an_idx_file_is_an_error() {
    let dir = scratch("idx-truncated");
    let p = dir.join("f");
    let (raw, gz) = small_idx();
    let mut cases = 0;
    for (kind, full) in [("raw", &raw), ("gzip", &gz)] {
        assert!(read_idx_images(&{
            std::fs::write(&p, full).unwrap();
            p.clone()
        })
        .is_ok());
        for len in 0..full.len() {
            let (r, peak) = probe(&p, &full[..len], &format!("{kind} cut at {len}"), |p| read_idx_images(p));
            assert!(matches!(r, Err(Error::Data { .. })), "{kind} cut at {len}: {r:?}");
            assert!(peak < MIB, "{kind} cut at {len}: {peak} bytes");
            cases += 1;
        }
    }
    // Labels too.
    write_idx_labels(dir.join("lbl"), &[1, 2, 3, 4, 5, 6, 7]).unwrap();
    let lbl = std::fs::read(dir.join("lbl")).unwrap();
    for len in 0..lbl.len() {
        let (r, _) = probe(&p, &lbl[..len], &format!("labels cut at {len}"), |p| read_idx_labels(p));
        assert!(matches!(r, Err(Error::Data { .. })), "labels cut at {len}: {r:?}");
        cases += 1;
    }
    eprintln!("every_truncation_of_an_idx_file_is_an_error: {cases} cases");
}

#[test]
fn corrupted_idx_files_never_panic() {
    let dir = scratch("idx-flips");
    let p = dir.join("f");
    let (raw, gz) = small_idx();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut cases = 0;
    for (kind, full) in [("raw", &raw), ("gzip", &gz)] {
        // Every byte, with each of a few values.
        for i in 0..full.len() {
            for v in [0x00, 0xff, full[i] ^ 0x01, full[i] ^ 0x80] {
                let mut b = full.clone();
                b[i] = v;
                let (r, peak) = probe(&p, &b, &format!("{kind} byte {i} = {v:#x}"), |p| read_idx_images_u8(p));
                if let Ok(img) = &r {
                    assert_eq!(img.pixels.len(), img.n * img.rows * img.cols);
                }
                assert!(peak < MIB, "{kind} byte {i} = {v:#x}: {peak} bytes");
                cases += 1;
            }
        }
        // Random multi-byte corruptions.
        for _ in 0..flips() {
            let mut b = full.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            let (_, peak) = probe(&p, &b, &format!("{kind} random corruption"), |p| read_idx_images(p));
            assert!(peak < MIB, "{peak} bytes");
            cases += 1;
        }
    }
    // Header fields set to extreme values, raw and gzip.
    for field in 0..4 {
        for v in [0u32, 1, 0x0000_0803, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            let mut b = raw.clone();
            b[4 * field..4 * field + 4].copy_from_slice(&v.to_be_bytes());
            for (kind, bytes) in [("raw", b.clone()), ("gzip", gzip(&b))] {
                let (r, peak) = probe(&p, &bytes, &format!("{kind} field {field} = {v}"), |p| read_idx_images(p));
                let intact = field == 0 && v == 0x0000_0803;
                assert_eq!(r.is_ok(), intact, "{kind} field {field} = {v}: {r:?}");
                assert!(peak < MIB, "{kind} field {field} = {v}: {peak} bytes");
                cases += 1;
            }
        }
    }
    eprintln!("corrupted_idx_files_never_panic: {cases} cases");
}

// ---------------------------------------------------------------------------------
// Checkpoints.

fn expected() -> Vec<(String, Vec<usize>)> {
    vec![("w".into(), vec![2, 3]), ("b".into(), vec![3]), ("optimizer/w/m".into(), vec![2, 3])]
}

fn small_checkpoint(dir: &Path) -> Vec<u8> {
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [0.5, -0.5, 0.0];
    let t = |name: &str, shape: &[usize], data: &'static [f32]| TensorData {
        name: name.into(),
        shape: shape.to_vec(),
        data: data.into(),
    };
    let w: &'static [f32] = Box::leak(Box::new(w));
    let b: &'static [f32] = Box::leak(Box::new(b));
    let p = dir.join("valid.safetensors");
    save(&p, "M", 42, &[t("w", &[2, 3], w), t("b", &[3], b), t("optimizer/w/m", &[2, 3], w)]).unwrap();
    let ck = load(&p, "M", &expected()).unwrap();
    assert_eq!(ck.global_step, 42);
    std::fs::read(&p).unwrap()
}

fn load_m(p: &Path) -> Result<modelc_runtime::checkpoint::Checkpoint, Error> {
    load(p, "M", &expected())
}

#[test]
fn every_truncation_of_a_checkpoint_is_an_error() {
    let dir = scratch("ck-truncated");
    let full = small_checkpoint(&dir);
    let p = dir.join("f");
    for len in 0..full.len() {
        let (r, peak) = probe(&p, &full[..len], &format!("checkpoint cut at {len}"), load_m);
        assert!(matches!(r, Err(Error::Checkpoint { .. })), "cut at {len}: {r:?}");
        assert!(peak < MIB, "cut at {len}: {peak} bytes");
    }
    eprintln!("every_truncation_of_a_checkpoint_is_an_error: {} cases", full.len());
}

#[test]
fn corrupted_checkpoints_never_panic() {
    let dir = scratch("ck-flips");
    let full = small_checkpoint(&dir);
    let p = dir.join("f");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut cases = 0;
    for i in 0..full.len() {
        for v in [0x00, 0xff, full[i] ^ 0x01, b'9', b'"', b'}'] {
            let mut b = full.clone();
            b[i] = v;
            let (r, peak) = probe(&p, &b, &format!("byte {i} = {v:#x}"), load_m);
            if let Ok(ck) = &r {
                // Only a change inside the tensors' values (or a no-op) can load.
                assert_eq!(ck.tensors.len(), 3, "byte {i}");
            }
            assert!(peak < MIB, "byte {i} = {v:#x}: {peak} bytes");
            cases += 1;
        }
    }
    for _ in 0..flips() {
        let mut b = full.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
        }
        let (_, peak) = probe(&p, &b, "a random corruption", load_m);
        assert!(peak < MIB, "{peak} bytes");
        cases += 1;
    }
    eprintln!("corrupted_checkpoints_never_panic: {cases} cases");
}

/// A safetensors file with this JSON header and `data` after it.
fn with_header(json: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (json.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn checkpoint_headers_that_claim_huge_sizes_allocate_nothing() {
    let dir = scratch("ck-huge");
    let p = dir.join("f");
    let meta = r#""__metadata__":{"format":"modelc","version":"1","model":"M","global_step":"1"}"#;
    let huge = [
        // The 8-byte header length itself.
        [u64::MAX.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
        [(1u64 << 40).to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
        // 1e12 elements claimed, 24 bytes present.
        with_header(
            &format!(r#"{{{meta},"w":{{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}}}"#),
            &[0; 24],
        ),
        // A shape whose element count overflows u64, and offsets that do too.
        with_header(
            &format!(r#"{{{meta},"w":{{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,24]}}}}"#),
            &[0; 24],
        ),
        with_header(
            &format!(r#"{{{meta},"w":{{"dtype":"F32","shape":[2,3],"data_offsets":[18446744073709551615,24]}}}}"#),
            &[0; 24],
        ),
        with_header(
            &format!(r#"{{{meta},"w":{{"dtype":"F32","shape":[2,3],"data_offsets":[0,18446744073709551615]}}}}"#),
            &[0; 24],
        ),
        // A global step beyond u64.
        with_header(
            r#"{"__metadata__":{"format":"modelc","version":"1","model":"M","global_step":"99999999999999999999999"}}"#,
            &[],
        ),
    ];
    for (k, bytes) in huge.iter().enumerate() {
        // Expected shapes as claimed, so that nothing but the file's own checks stand
        // between the claim and an allocation.
        let claimed = vec![("w".to_string(), vec![1_000_000, 1_000_000])];
        for expected in [expected(), claimed] {
            let (r, peak) = probe(&p, bytes, &format!("huge header {k}"), |p| load(p, "M", &expected));
            assert!(matches!(r, Err(Error::Checkpoint { .. })), "huge header {k}: {r:?}");
            assert!(peak < MIB, "huge header {k}: {peak} bytes");
        }
    }
}
