//! The IDX file format of MNIST (and Fashion-MNIST): reading, raw or gzip-compressed,
//! and writing, raw.
//!
//! An IDX file is a big-endian header followed by the data, row-major:
//!
//! | offset | bytes | images file                | labels file              |
//! |--------|-------|----------------------------|--------------------------|
//! | 0      | 4     | magic `0x00000803`         | magic `0x00000801`       |
//! | 4      | 4     | `n`, the number of images  | `n`, the number of labels|
//! | 8      | 4     | `rows`                     | (labels start here)      |
//! | 12     | 4     | `cols`                     |                          |
//! | 16     | ...   | `n * rows * cols` pixels   |                          |
//!
//! The magic is two zero bytes, the element type (`0x08`: unsigned byte, the only
//! type MNIST uses and the only one read here) and the number of dimensions. Every
//! size is checked against the file's length, so a truncated download or a file with
//! trailing bytes is an [`Error::Data`] naming both sizes, never a panic or a short
//! read. Whether a file is gzip-compressed is decided by its first two bytes (`1f 8b`),
//! not by its name, because mirrors rename files freely.
//!
//! # Bounded memory
//!
//! A gzip stream can claim anything: a file of a few kilobytes inflates to gigabytes
//! (a "gzip bomb"), and a header can declare `u32::MAX^3` bytes. The reader therefore
//! reads the header first and never reads (nor allocates) more than the header declares
//! plus one byte, and refuses a declared size above a limit: [`DEFAULT_MAX_BYTES`]
//! (2 GiB, 40 times full MNIST) for the plain readers, any value with the `_with_limit`
//! variants. Trailing data after the declared size is an error, counted up to 1 MiB
//! without being kept. A raw file is checked against its length on disk before its
//! body is read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use ndarray::Array2;

use crate::Error;

/// The magic of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The largest data (the bytes after the header) the plain readers accept: 2 GiB.
/// [`read_idx_images_with_limit`], [`read_idx_images_u8_with_limit`] and
/// [`read_idx_labels_with_limit`] take another limit.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// How many bytes past the declared size are counted (not kept) for the error message.
const EXTRA_COUNTED: u64 = 1 << 20;

/// The raw content of an IDX images file: `n` images of `rows x cols` bytes each,
/// row-major, `pixels.len() == n * rows * cols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// The number of images.
    pub n: usize,
    /// The height of one image.
    pub rows: usize,
    /// The width of one image.
    pub cols: usize,
    /// The pixels, 0 (background) to 255 (ink), image after image.
    pub pixels: Vec<u8>,
}

/// Reads an IDX images file (raw or gzip) as an `[n, rows * cols]` matrix of pixels
/// scaled to `[0, 1]` by dividing each byte by 255, as TensorFlow's MNIST tutorial
/// reader does.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::Data`] if it is not a valid IDX
/// images file (bad magic, truncated, trailing bytes, corrupt gzip) or declares more
/// than [`DEFAULT_MAX_BYTES`] of pixels.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Array2<f32>, Error> {
    read_idx_images_with_limit(path, DEFAULT_MAX_BYTES)
}

/// [`read_idx_images`] accepting up to `max_bytes` of pixels (the f32 matrix takes four
/// times as much memory).
///
/// # Errors
///
/// As [`read_idx_images`], with `max_bytes` as the limit.
pub fn read_idx_images_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<Array2<f32>, Error> {
    let path = path.as_ref();
    let (dims, body) = read(path, IMAGES_MAGIC, max_bytes)?;
    let scaled: Vec<f32> = body.iter().map(|&p| f32::from(p) / 255.0).collect();
    Array2::from_shape_vec((dims[0], dims[1] * dims[2]), scaled)
        .map_err(|e| data_err(path, format!("cannot shape the pixels: {e}")))
}

/// Reads an IDX images file (raw or gzip) as its raw bytes and dimensions.
///
/// # Errors
///
/// As [`read_idx_images`].
pub fn read_idx_images_u8(path: impl AsRef<Path>) -> Result<IdxImages, Error> {
    read_idx_images_u8_with_limit(path, DEFAULT_MAX_BYTES)
}

/// [`read_idx_images_u8`] accepting up to `max_bytes` of pixels.
///
/// # Errors
///
/// As [`read_idx_images`], with `max_bytes` as the limit.
pub fn read_idx_images_u8_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<IdxImages, Error> {
    let (dims, pixels) = read(path.as_ref(), IMAGES_MAGIC, max_bytes)?;
    Ok(IdxImages { n: dims[0], rows: dims[1], cols: dims[2], pixels })
}

/// Reads an IDX labels file (raw or gzip): one byte per example.
///
/// The values are not checked here (IDX does not say how many classes there are);
/// [`Dataset`](super::Dataset) checks that they are below 10 when it one-hot encodes
/// them.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::Data`] if it is not a valid IDX
/// labels file (bad magic, truncated, trailing bytes, corrupt gzip) or declares more
/// than [`DEFAULT_MAX_BYTES`] labels.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, Error> {
    read_idx_labels_with_limit(path, DEFAULT_MAX_BYTES)
}

/// [`read_idx_labels`] accepting up to `max_bytes` labels.
///
/// # Errors
///
/// As [`read_idx_labels`], with `max_bytes` as the limit.
pub fn read_idx_labels_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<Vec<u8>, Error> {
    read(path.as_ref(), LABELS_MAGIC, max_bytes).map(|(_, body)| body)
}

/// Writes an uncompressed IDX images file of `n` images of `rows x cols` bytes.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if `pixels.len() != n * rows * cols` or a dimension does
/// not fit the format's 32 bits; [`Error::Io`] if the file cannot be written.
pub fn write_idx_images(
    path: impl AsRef<Path>,
    pixels: &[u8],
    n: usize,
    rows: usize,
    cols: usize,
) -> Result<(), Error> {
    let path = path.as_ref();
    let expected = n.checked_mul(rows).and_then(|x| x.checked_mul(cols));
    if expected != Some(pixels.len()) {
        return Err(Error::InvalidArgument(format!(
            "write_idx_images {}: {} pixel bytes given for {n} x {rows} x {cols} images",
            path.display(),
            pixels.len()
        )));
    }
    write_idx(path, IMAGES_MAGIC, &[n, rows, cols], pixels)
}

/// Writes an uncompressed IDX labels file, one byte per example.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if there are more than `u32::MAX` labels; [`Error::Io`]
/// if the file cannot be written.
pub fn write_idx_labels(path: impl AsRef<Path>, labels: &[u8]) -> Result<(), Error> {
    write_idx(path.as_ref(), LABELS_MAGIC, &[labels.len()], labels)
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], body: &[u8]) -> Result<(), Error> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + body.len());
    out.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| {
            Error::InvalidArgument(format!("write IDX {}: dimension {d} does not fit in 32 bits", path.display()))
        })?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(body);
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// Reads the file at `path` (raw, or gzip if it starts with the gzip magic) as an IDX
/// file with `magic`: its dimensions and its body, checked against each other, reading
/// at most the declared size plus one byte (see the module's "Bounded memory").
fn read(path: &Path, magic: u32, max_bytes: u64) -> Result<(Vec<usize>, Vec<u8>), Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut buffered = BufReader::new(file);
    let gzip = buffered.fill_buf().map_err(|e| Error::io(path, e))?.starts_with(&GZIP_MAGIC);
    // Errors while inflating are the file's content, not the disk's.
    let read_err =
        |e: std::io::Error| if gzip { data_err(path, format!("corrupt gzip data: {e}")) } else { Error::io(path, e) };
    let mut src: Box<dyn Read> =
        if gzip { Box::new(flate2::bufread::MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };

    let ndim = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndim;
    let what = if magic == IMAGES_MAGIC {
        "an IDX images file ([n, rows, cols] of u8)"
    } else {
        "an IDX labels file ([n] of u8)"
    };
    let mut header = Vec::with_capacity(header_len);
    (&mut src).take(header_len as u64).read_to_end(&mut header).map_err(read_err)?;
    if header.len() < 4 {
        return Err(data_err(
            path,
            format!("truncated header: {} bytes, expected {what} with a {header_len}-byte header", header.len()),
        ));
    }
    let found = be_u32(&header[0..4]);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this is an images file)",
            LABELS_MAGIC => " (this is a labels file)",
            _ if header[..2] == GZIP_MAGIC => " (gzip inside gzip?)",
            _ => "",
        };
        return Err(data_err(path, format!("bad magic number 0x{found:08x}, expected 0x{magic:08x} for {what}{hint}")));
    }
    if header.len() < header_len {
        return Err(data_err(path, format!("truncated header: {} bytes, expected {header_len}", header.len())));
    }
    let dims: Vec<usize> = header[4..].chunks_exact(4).map(|c| be_u32(c) as usize).collect();
    // u32 dimensions multiplied in u128 cannot overflow.
    let expected: u128 = dims.iter().map(|&d| d as u128).product();
    let dims_text = dims.iter().map(usize::to_string).collect::<Vec<_>>().join(" x ");
    let truncated = |found: u128| {
        data_err(path, format!("truncated data: the header says {dims_text} = {expected} bytes, found {found}"))
    };
    let trailing = |found: String, extra: String| {
        data_err(
            path,
            format!("size mismatch: the header says {dims_text} = {expected} bytes, found {found} ({extra} extra)"),
        )
    };
    if !gzip {
        // A raw file's length is known: compare before reading anything more.
        let body_len = u128::from(file_len.saturating_sub(header_len as u64));
        if body_len < expected {
            return Err(truncated(body_len));
        }
        if body_len > expected {
            return Err(trailing(body_len.to_string(), (body_len - expected).to_string()));
        }
    }
    if expected > u128::from(max_bytes) {
        return Err(data_err(
            path,
            format!(
                "the header says {dims_text} = {expected} bytes, more than this reader's limit of {max_bytes} \
                 bytes (a corrupt header or a gzip bomb? read_idx_*_with_limit takes a higher limit)"
            ),
        ));
    }
    // expected <= max_bytes <= u64::MAX. Reserve what the file can really hold: a raw
    // body has been checked against the file's length; deflate inflates at most 1032
    // times, so a gzip stream cannot make the header's claim true beyond that.
    let expected = expected as u64;
    let possible = if gzip { file_len.saturating_mul(1032) } else { expected };
    let mut body = Vec::with_capacity(usize::try_from(expected.min(possible)).unwrap_or(0));
    (&mut src).take(expected + 1).read_to_end(&mut body).map_err(read_err)?;
    let got = body.len() as u64;
    if got < expected {
        return Err(truncated(u128::from(got)));
    }
    if got > expected {
        let more = std::io::copy(&mut (&mut src).take(EXTRA_COUNTED), &mut std::io::sink()).map_err(read_err)?;
        let extra = 1 + more;
        let extra_text = if more == EXTRA_COUNTED { format!("at least {extra}") } else { extra.to_string() };
        let found_text = if more == EXTRA_COUNTED {
            format!("at least {}", expected + extra)
        } else {
            (expected + extra).to_string()
        };
        return Err(trailing(found_text, extra_text));
    }
    Ok((dims, body))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), message: message.into() }
}
