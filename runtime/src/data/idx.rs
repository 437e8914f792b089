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

use std::io::Read;
use std::path::Path;

use ndarray::Array2;

use crate::Error;

/// The magic of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

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
/// images file (bad magic, truncated, trailing bytes, corrupt gzip).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Array2<f32>, Error> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    let (dims, body) = parse(path, &bytes, IMAGES_MAGIC)?;
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
    let path = path.as_ref();
    let mut bytes = read_maybe_gzip(path)?;
    let (dims, body_len) = parse(path, &bytes, IMAGES_MAGIC).map(|(d, b)| (d, b.len()))?;
    bytes.drain(..bytes.len() - body_len);
    Ok(IdxImages { n: dims[0], rows: dims[1], cols: dims[2], pixels: bytes })
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
/// labels file (bad magic, truncated, trailing bytes, corrupt gzip).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, Error> {
    let path = path.as_ref();
    let mut bytes = read_maybe_gzip(path)?;
    let body_len = parse(path, &bytes, LABELS_MAGIC)?.1.len();
    bytes.drain(..bytes.len() - body_len);
    Ok(bytes)
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

/// The whole file, decompressed if it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| data_err(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

/// Checks the header against `magic` and the body's length against the dimensions;
/// returns the dimensions and the body.
fn parse<'b>(path: &Path, bytes: &'b [u8], magic: u32) -> Result<(Vec<usize>, &'b [u8]), Error> {
    let ndim = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndim;
    let what = if magic == IMAGES_MAGIC {
        "an IDX images file ([n, rows, cols] of u8)"
    } else {
        "an IDX labels file ([n] of u8)"
    };
    if bytes.len() < 4 {
        return Err(data_err(
            path,
            format!("truncated header: {} bytes, expected {what} with a {header_len}-byte header", bytes.len()),
        ));
    }
    let found = be_u32(&bytes[0..4]);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this is an images file)",
            LABELS_MAGIC => " (this is a labels file)",
            _ if bytes[..2] == GZIP_MAGIC => " (gzip inside gzip?)",
            _ => "",
        };
        return Err(data_err(path, format!("bad magic number 0x{found:08x}, expected 0x{magic:08x} for {what}{hint}")));
    }
    if bytes.len() < header_len {
        return Err(data_err(path, format!("truncated header: {} bytes, expected {header_len}", bytes.len())));
    }
    let dims: Vec<usize> = bytes[4..header_len].chunks_exact(4).map(|c| be_u32(c) as usize).collect();
    let body = &bytes[header_len..];
    // u32 dimensions multiplied in u128 cannot overflow.
    let expected: u128 = dims.iter().map(|&d| d as u128).product();
    let dims_text = dims.iter().map(usize::to_string).collect::<Vec<_>>().join(" x ");
    if (body.len() as u128) < expected {
        return Err(data_err(
            path,
            format!("truncated data: the header says {dims_text} = {expected} bytes, found {}", body.len()),
        ));
    }
    if (body.len() as u128) > expected {
        return Err(data_err(
            path,
            format!(
                "size mismatch: the header says {dims_text} = {expected} bytes, found {} ({} extra)",
                body.len(),
                body.len() as u128 - expected
            ),
        ));
    }
    Ok((dims, body))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), message: message.into() }
}
