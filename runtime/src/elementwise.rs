//! The loop of the generated code's fused elementwise groups: `out = f(out, ins...)`
//! element by element, each input broadcast to `out`'s shape, in plain slice loops that
//! LLVM vectorizes for the widest vectors the CPU has ([`widest`]).
//!
//! ndarray's `Zip` would do the same work, but its loop stays a call that LLVM does not
//! inline into a `#[target_feature]` function, so it runs at the baseline target's 4
//! lanes (see `docs/decisions.md`, "Generated elementwise loops run in the runtime's
//! `kernels::map`"). Here every row of `out` whose inputs each have a unit or zero
//! stride along the last axis is cut into chunks where every input is a slice (an input
//! broadcast along that axis is one value copied into a small buffer), and the chunk's
//! loop is inlined with `f` into the widest build. Anything else (a transposed input,
//! an output with a stride along its last axis) runs the same `f` through a strided
//! loop at the baseline target; both give the same bits.

use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::sgemm::widest;

/// Elements of a row per chunk: the longest run an input broadcast along the last axis
/// stands for, copied into a buffer of this many values.
const CHUNK: usize = 256;

/// One operand reduced to rows: `rows` rows of `cols` elements, element `(r, c)` at
/// `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
struct Rows {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `out[i] = f(out[i], [ins[0][i], ..])` for every index `i` of `out`, each input
/// broadcast to `out`'s shape (NumPy's rules, as ndarray's `broadcast`). `f` is called
/// once per element, in no particular order; mark it `#[inline(always)]` so that it is
/// compiled into the vector loop.
///
/// Allocates nothing for ranks up to 4 (ndarray keeps such shapes inline).
///
/// Panics if an input does not broadcast to `out`'s shape (the compiler checked them).
#[inline]
pub fn map<const N: usize, F: Fn(f32, [f32; N]) -> f32>(
    mut out: ArrayViewMutD<'_, f32>,
    ins: [ArrayViewD<'_, f32>; N],
    f: F,
) {
    let shape = out.raw_dim();
    let views: [ArrayViewD<'_, f32>; N] =
        std::array::from_fn(|k| ins[k].broadcast(shape.clone()).expect("an input that broadcasts to the output"));
    let Some((rows, cols, o, src)) = as_rows(&mut out, &views) else {
        // Leading axes that do not merge into one (a rank above 2 with a broadcast or a
        // permuted axis): element by element, by index.
        for (idx, v) in out.indexed_iter_mut() {
            *v = f(*v, std::array::from_fn(|k| views[k][&idx]));
        }
        return;
    };
    let wide = (cols <= 1 || o.cs == 1) && src.iter().all(|s| cols <= 1 || s.cs == 0 || s.cs == 1);
    let out_ptr = o.ptr as *mut f32;
    if cols == 0 || rows == 0 {
        return;
    }
    if !wide {
        for r in 0..rows as isize {
            for c in 0..cols as isize {
                // SAFETY: r < rows and c < cols, so each pointer is the element (r, c) of
                // its live view (`as_rows`); `out` is borrowed mutably for this call, the
                // inputs shared, so no input aliases it.
                unsafe {
                    let d = out_ptr.offset(r * o.rs + c * o.cs);
                    *d = f(*d, std::array::from_fn(|k| *src[k].ptr.offset(r * src[k].rs + c * src[k].cs)));
                }
            }
        }
        return;
    }
    if o.cs == 1 && (rows == 1 || o.rs == cols as isize) && cols <= CHUNK / 2 {
        short_rows(rows, cols, out_ptr, &src, f);
        return;
    }
    widest(
        #[inline(always)]
        || {
            // Inputs broadcast along the last axis: their row's one value, CHUNK times.
            let mut fill = [[0.0f32; CHUNK]; N];
            for r in 0..rows as isize {
                // SAFETY: as above: row r < rows of each live view; the column of an input
                // with a zero stride is its element (r, 0), the others' and out's are
                // contiguous (`wide`), so each chunk below is `len` elements of its row.
                unsafe {
                    let orow = out_ptr.offset(r * o.rs);
                    let irow: [*const f32; N] = std::array::from_fn(|k| src[k].ptr.offset(r * src[k].rs));
                    for k in 0..N {
                        // (Once for an input that is one value for every row.)
                        if src[k].cs == 0 && (r == 0 || src[k].rs != 0) {
                            fill[k][..cols.min(CHUNK)].fill(*irow[k]);
                        }
                    }
                    for c0 in (0..cols).step_by(CHUNK) {
                        let len = CHUNK.min(cols - c0);
                        let dst = std::slice::from_raw_parts_mut(orow.add(c0), len);
                        let chunk: [&[f32]; N] = std::array::from_fn(|k| {
                            if src[k].cs == 1 {
                                std::slice::from_raw_parts(irow[k].add(c0), len)
                            } else {
                                &fill[k][..len]
                            }
                        });
                        run(dst, chunk, &f);
                    }
                }
            }
        },
    );
}

/// [`map`]'s wide loop for rows of at most `CHUNK / 2` into a contiguous `out`: blocks
/// of whole rows, `CHUNK / cols` at a time, as one run each, so that a row of 10 costs
/// no loop set-up of its own (`Zip` at the baseline's 4 lanes was faster on `[100, 10]`
/// row by row). An input contiguous across rows is read in place; any other is copied
/// into a block-sized buffer, once for all blocks if it is the same for every row (a
/// bias), else per block.
///
/// # Safety (of the caller's data)
/// `out` holds `rows x cols` contiguous elements at `out_ptr`, borrowed mutably; each
/// input's element `(r, c)` is at `ptr + r * rs + c * cs`, `cs` 0 or 1, inside a live
/// view that does not alias `out`.
#[inline(always)]
fn short_rows<const N: usize, F: Fn(f32, [f32; N]) -> f32>(
    rows: usize,
    cols: usize,
    out_ptr: *mut f32,
    src: &[Rows; N],
    f: F,
) {
    widest(
        #[inline(always)]
        || {
            let per = CHUNK / cols;
            let mut buf = [[0.0f32; CHUNK]; N];
            for r0 in (0..rows).step_by(per) {
                let n = per.min(rows - r0);
                let len = n * cols;
                // SAFETY: rows r0..r0 + n < rows of each operand (see above); `out`'s are
                // contiguous, as are an input's when `rs == cols` and `cs == 1`.
                unsafe {
                    let dst = std::slice::from_raw_parts_mut(out_ptr.add(r0 * cols), len);
                    for (k, s) in src.iter().enumerate() {
                        let in_place = s.cs == 1 && (rows == 1 || s.rs == cols as isize);
                        if in_place || (s.rs == 0 && r0 > 0) {
                            continue;
                        }
                        for r in 0..n {
                            let row = s.ptr.offset((r0 + r) as isize * s.rs);
                            for c in 0..cols {
                                buf[k][r * cols + c] = *row.offset(c as isize * s.cs);
                            }
                        }
                    }
                    let block: [&[f32]; N] = std::array::from_fn(|k| {
                        let s = &src[k];
                        if s.cs == 1 && (rows == 1 || s.rs == cols as isize) {
                            std::slice::from_raw_parts(s.ptr.offset(r0 as isize * s.rs), len)
                        } else {
                            &buf[k][..len]
                        }
                    });
                    run(dst, block, &f);
                }
            }
        },
    );
}

/// Elements the inner loop takes at a time: one AVX-512 vector.
const LANES: usize = 16;

/// The inner loop over one chunk: every slice of `ins` is `dst.len()` long. It runs in
/// blocks of [`LANES`] of fixed length, which LLVM compiles to straight vector code, and
/// the last partial block through a padded copy: a plain loop's vector body takes 64
/// elements at a time, so rows shorter than that (`[n, 10]`, `[n, 32]`) ran in its scalar
/// remainder, slower than `Zip` at 4 lanes.
#[inline(always)]
fn run<const N: usize, F: Fn(f32, [f32; N]) -> f32>(dst: &mut [f32], ins: [&[f32]; N], f: &F) {
    let len = dst.len();
    let ins: [&[f32]; N] = ins.map(|s| &s[..len]);
    let full = len / LANES * LANES;
    for b in (0..full).step_by(LANES) {
        let d: &mut [f32; LANES] = (&mut dst[b..b + LANES]).try_into().expect("a block of LANES");
        let x: [&[f32; LANES]; N] = std::array::from_fn(|k| ins[k][b..b + LANES].try_into().expect("a block of LANES"));
        for i in 0..LANES {
            d[i] = f(d[i], std::array::from_fn(|k| x[k][i]));
        }
    }
    let tail = len - full;
    if tail > 0 {
        // The padding lanes are computed (from zeros) and dropped.
        let mut d = [0.0f32; LANES];
        let mut x = [[0.0f32; LANES]; N];
        for i in 0..tail {
            d[i] = dst[full + i];
            for k in 0..N {
                x[k][i] = ins[k][full + i];
            }
        }
        for i in 0..LANES {
            d[i] = f(d[i], std::array::from_fn(|k| x[k][i]));
        }
        dst[full..].copy_from_slice(&d[..tail]);
    }
}

/// `out` and `ins` (broadcast to `out`'s shape) as rows, when every operand's axes
/// merge into two: `(rows, cols, out, ins)`. Axes of length 1 are dropped first (a
/// column `[n, 1]` is one row of `n`), and rows that follow each other in every operand
/// (contiguous, or one value for all) are merged into one row, as `Zip` does, so that
/// short rows (`[n, 10]`) cost no loop set-up each.
fn as_rows<const N: usize>(
    out: &mut ArrayViewMutD<'_, f32>,
    ins: &[ArrayViewD<'_, f32>; N],
) -> Option<(usize, usize, Rows, [Rows; N])> {
    // `out`'s pointer with its write provenance, before `shape` borrows it.
    let out_ptr = out.as_mut_ptr();
    let shape = out.shape();
    // The axes longer than 1, innermost first.
    let mut long = (0..shape.len()).rev().filter(|&a| shape[a] > 1);
    let Some(last) = long.next() else {
        // One element.
        let one = |ptr: *const f32| Rows { ptr, rs: 0, cs: 0 };
        return Some((1, 1, one(out_ptr), std::array::from_fn(|k| one(ins[k].as_ptr()))));
    };
    let cols = shape[last];
    let rows: usize = shape.iter().product::<usize>() / cols;
    let reduce = |ptr: *const f32, strides: &[isize]| -> Option<Rows> {
        // The leading long axes must step like one axis.
        let mut rs = None::<isize>;
        let mut next = 0isize;
        for a in long.clone() {
            match rs {
                None => rs = Some(strides[a]),
                Some(_) if strides[a] != next => return None,
                Some(_) => {}
            }
            next = strides[a] * shape[a] as isize;
        }
        Some(Rows { ptr, rs: rs.unwrap_or(0), cs: strides[last] })
    };
    let o = reduce(out_ptr, out.strides())?;
    let mut src = [Rows { ptr: std::ptr::null(), rs: 0, cs: 0 }; N];
    for (s, v) in src.iter_mut().zip(ins) {
        *s = reduce(v.as_ptr(), v.strides())?;
    }
    let follows = |r: &Rows| rows == 1 || r.rs == cols as isize * r.cs;
    if follows(&o) && src.iter().all(follows) {
        return Some((1, rows * cols, o, src));
    }
    Some((rows, cols, o, src))
}
