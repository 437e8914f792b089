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
                        if (src[k].cs == 0 || cols <= 1) && (r == 0 || src[k].rs != 0) {
                            fill[k][..cols.min(CHUNK)].fill(*irow[k]);
                        }
                    }
                    for c0 in (0..cols).step_by(CHUNK) {
                        let len = CHUNK.min(cols - c0);
                        let dst = std::slice::from_raw_parts_mut(orow.add(c0), len);
                        let chunk: [&[f32]; N] = std::array::from_fn(|k| {
                            if src[k].cs == 1 && cols > 1 {
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

/// The inner loop over one chunk: every slice of `ins` is `dst.len()` long.
#[inline(always)]
fn run<const N: usize, F: Fn(f32, [f32; N]) -> f32>(dst: &mut [f32], ins: [&[f32]; N], f: &F) {
    let len = dst.len();
    let ins: [&[f32]; N] = ins.map(|s| &s[..len]);
    for (i, d) in dst.iter_mut().enumerate() {
        *d = f(*d, std::array::from_fn(|k| ins[k][i]));
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
